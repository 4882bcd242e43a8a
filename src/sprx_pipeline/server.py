"""The team server's secrets and accounts (docker-compose.yml): no default secret anywhere.

Two commands, standard library only, so the first runs on a server that has Python but not
this package:

* ``python3 src/sprx_pipeline/server.py env --users admin:admin,alice:user,bob:viewer > .env``
  writes a `.env` with a fresh random value for every credential compose asks for: the
  PostgreSQL password, Airflow's JWT secret, API secret key and Fernet key, and one password
  per named user. Compose refuses to start while any of them is missing (``${VAR:?}``).
* ``python -m sprx_pipeline.server passwords`` (the api-server container runs it before
  ``airflow api-server``) writes Airflow's simple-auth-manager passwords file from
  ``SPRX_AIRFLOW_PASSWORDS``. Every user in ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` must
  have a password there: Airflow would otherwise make one up and print it in its log.

Roles are Airflow's simple auth manager's: ``viewer`` reads everything (DAGs, runs, task logs,
assets) and changes nothing; ``user`` also triggers, clears and pauses DAG runs; ``op`` also
edits pools, connections and variables; ``admin`` may do anything.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path

ROLES = ("viewer", "user", "op", "admin")
USERS_VAR = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
PASSWORDS_VAR = "SPRX_AIRFLOW_PASSWORDS"
PASSWORDS_FILE_VAR = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
MIN_PASSWORD_LENGTH = 12


class AccountsError(ValueError):
    """The accounts in the environment are incomplete or malformed."""


def parse_users(text: str) -> dict[str, str]:
    """`name:role,...` (Airflow's own format) as {name: role}, refusing unknown roles."""
    users: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, role = item.partition(":")
        if not sep or not name or role.lower() not in ROLES:
            raise AccountsError(
                f"user {item!r}: write name:role with role one of {', '.join(ROLES)}"
            )
        if name in users:
            raise AccountsError(f"user {name!r} is listed twice")
        users[name] = role.lower()
    if not users:
        raise AccountsError("no users: list them as name:role,... (e.g. admin:admin,ana:user)")
    return users


def parse_passwords(text: str) -> dict[str, str]:
    """`name:password,...` as {name: password}; passwords cannot hold ',' or ':'."""
    passwords: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, password = item.partition(":")
        if not sep or not name or ":" in password:
            raise AccountsError(
                "passwords: write name:password,... (no ',' or ':' inside a password)"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountsError(
                f"the password of {name!r} has {len(password)} characters; "
                f"use at least {MIN_PASSWORD_LENGTH}"
            )
        passwords[name] = password
    return passwords


def check_accounts(users: dict[str, str], passwords: dict[str, str]) -> None:
    """Every user has a password and every password a user; at least one admin."""
    missing = sorted(set(users) - set(passwords))
    extra = sorted(set(passwords) - set(users))
    if missing:
        raise AccountsError(
            f"no password for {', '.join(missing)} in {PASSWORDS_VAR}: add "
            "name:password for each (Airflow would print a made-up one)"
        )
    if extra:
        raise AccountsError(
            f"{PASSWORDS_VAR} has passwords for {', '.join(extra)}, who are not in {USERS_VAR}"
        )
    if "admin" not in users.values():
        raise AccountsError("no user has the admin role: one admin is needed to manage Airflow")


def write_passwords_file(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """Write the simple auth manager's passwords file (mode 0600) from the environment."""
    for var in (USERS_VAR, PASSWORDS_VAR, PASSWORDS_FILE_VAR):
        if not environ.get(var):
            raise AccountsError(f"{var} is not set: it comes from .env through docker-compose.yml")
    users = parse_users(environ[USERS_VAR])
    passwords = parse_passwords(environ[PASSWORDS_VAR])
    check_accounts(users, passwords)
    path = Path(environ[PASSWORDS_FILE_VAR])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(passwords, handle)
        handle.write("\n")
    return path


def fernet_key() -> str:
    """A Fernet key as Airflow wants it: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def env_file(users_text: str) -> str:
    """The text of a `.env` with a fresh random value for every credential."""
    users = parse_users(users_text)
    passwords = {name: secrets.token_hex(12) for name in users}
    check_accounts(users, passwords)
    lines = [
        "# sprx-pipeline team server: made by `python3 src/sprx_pipeline/server.py env`.",
        "# Secrets: keep this file mode 0600, out of version control and backups you share.",
        f"POSTGRES_PASSWORD={secrets.token_hex(24)}",
        f"AIRFLOW_JWT_SECRET={secrets.token_hex(32)}",
        f"AIRFLOW_API_SECRET_KEY={secrets.token_hex(32)}",
        f"AIRFLOW_FERNET_KEY={fernet_key()}",
        "# name:role (roles: viewer, user, op, admin) and name:password, comma-separated.",
        f"SPRX_AIRFLOW_USERS={','.join(f'{n}:{r}' for n, r in users.items())}",
        f"{PASSWORDS_VAR}={','.join(f'{n}:{p}' for n, p in passwords.items())}",
        "# Where the UI and REST API listen on the server (loopback unless you change it).",
        "SPRX_BIND_ADDRESS=127.0.0.1",
        "SPRX_API_PORT=8080",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sprx_pipeline.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make_env = commands.add_parser("env", help="print a .env with fresh random credentials")
    make_env.add_argument(
        "--users",
        required=True,
        metavar="NAME:ROLE,...",
        help="the named accounts, e.g. admin:admin,alice:user,bob:viewer",
    )
    commands.add_parser(
        "passwords", help=f"write ${PASSWORDS_FILE_VAR} from ${PASSWORDS_VAR} (the api-server does)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "env":
            sys.stdout.write(env_file(args.users))
        else:
            path = write_passwords_file()
            print(
                f"wrote the passwords of {len(parse_users(os.environ[USERS_VAR]))} users to {path}",
                file=sys.stderr,
            )
    except AccountsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
