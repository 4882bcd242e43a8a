"""The team server's secrets and accounts (src/sprx_pipeline/server.py): a `.env` with a fresh
value for every credential, and Airflow's passwords file written from it, refusing gaps."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys

import pytest

from sprx_pipeline import server
from sprx_pipeline.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "src" / "sprx_pipeline" / "server.py"
CREDENTIALS = [
    "POSTGRES_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "SPRX_AIRFLOW_USERS",
    "SPRX_AIRFLOW_PASSWORDS",
]


def env_values(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_users_are_airflows_name_role_pairs_with_known_roles():
    assert server.parse_users("admin:admin, alice:user,bob:VIEWER") == {
        "admin": "admin",
        "alice": "user",
        "bob": "viewer",
    }
    with pytest.raises(server.AccountsError, match="role one of viewer, user, op, admin"):
        server.parse_users("admin:admin,carol:editor")
    with pytest.raises(server.AccountsError, match="'bob' is listed twice"):
        server.parse_users("bob:viewer,bob:admin")
    with pytest.raises(server.AccountsError, match="no users"):
        server.parse_users(" , ")


def test_every_user_needs_a_long_enough_password_and_one_user_must_be_admin():
    with pytest.raises(server.AccountsError, match="'bob' has 5 characters"):
        server.parse_passwords("bob:short")
    users = server.parse_users("admin:admin,bob:viewer")
    with pytest.raises(server.AccountsError, match="no password for bob"):
        server.check_accounts(users, {"admin": "a" * 12})
    with pytest.raises(server.AccountsError, match="passwords for eve, who are not"):
        server.check_accounts(users, {"admin": "a" * 12, "bob": "b" * 12, "eve": "e" * 12})
    with pytest.raises(server.AccountsError, match="no user has the admin role"):
        server.check_accounts({"bob": "viewer"}, {"bob": "b" * 12})


def test_the_env_file_has_a_fresh_value_for_every_credential():
    first, second = (
        env_values(server.env_file("admin:admin,alice:user,bob:viewer")) for _ in range(2)
    )
    assert [k for k in first if k in CREDENTIALS] == CREDENTIALS
    assert first["SPRX_AIRFLOW_USERS"] == "admin:admin,alice:user,bob:viewer"
    passwords = server.parse_passwords(first["SPRX_AIRFLOW_PASSWORDS"])
    assert sorted(passwords) == ["admin", "alice", "bob"]
    assert all(len(p) == 24 for p in passwords.values())  # 12 random bytes, in hex
    assert len(base64.urlsafe_b64decode(first["AIRFLOW_FERNET_KEY"])) == 32
    for key in (
        "POSTGRES_PASSWORD",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_FERNET_KEY",
        "SPRX_AIRFLOW_PASSWORDS",
    ):
        assert first[key] != second[key], key
    assert first["SPRX_BIND_ADDRESS"] == "127.0.0.1"


def test_the_env_command_runs_with_plain_python_and_no_package(tmp_path):
    """A server has Python but not this package: the script needs the standard library only."""
    done = subprocess.run(
        ["/usr/bin/python3", "-I", str(SCRIPT), "env", "--users", "admin:admin,bob:viewer"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(env_values(done.stdout)) == sorted(
        [*CREDENTIALS, "SPRX_BIND_ADDRESS", "SPRX_API_PORT"]
    )


def test_the_passwords_file_is_written_from_the_environment_and_private(tmp_path):
    target = tmp_path / "airflow" / "passwords.json"
    env = {
        server.USERS_VAR: "admin:admin,bob:viewer",
        server.PASSWORDS_VAR: "admin:correct-horse-1,bob:battery-staple-2",
        server.PASSWORDS_FILE_VAR: str(target),
    }
    assert server.write_passwords_file(env) == target
    assert json.loads(target.read_text()) == {"admin": "correct-horse-1", "bob": "battery-staple-2"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_passwords_command_refuses_a_user_without_a_password(tmp_path):
    target = tmp_path / "passwords.json"
    env = {
        "PATH": "/usr/bin:/bin",
        server.USERS_VAR: "admin:admin,bob:viewer",
        server.PASSWORDS_VAR: "admin:correct-horse-1",
        server.PASSWORDS_FILE_VAR: str(target),
    }
    done = subprocess.run(
        [sys.executable, "-m", "sprx_pipeline.server", "passwords"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no password for bob in SPRX_AIRFLOW_PASSWORDS" in done.stderr
    assert not target.exists()
