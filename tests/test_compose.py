"""docker-compose.yml and the Dockerfile read as a reviewer would, without an engine: every
file, variable and command they name exists, they match the real-scheduler test, the image
gets every folder the package reads, and no credential has a default.
tests/test_compose_stack.py starts the stack for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from sprx_pipeline import build, config, orchestration, server, suites
from sprx_pipeline.config import PROJECT_ROOT

COMPOSE_TEXT = (PROJECT_ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
HARNESS = (Path(__file__).with_name("airflow_harness.py")).read_text()
AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
]


def airflow_commands() -> list[list[str]]:
    """Each `airflow ...` command the compose services run, as argument lists."""
    commands = []
    for name in AIRFLOW_SERVICES:
        command = COMPOSE["services"][name]["command"]
        text = command[-1] if command[0] == "bash" else " ".join(command)
        commands += [part.split() for part in text.split("&&")]
    commands = [c[1:] if c[0] == "exec" else c for c in commands]
    return [[arg.strip("'") for arg in c[1:]] for c in commands if c[0] == "airflow"]


def test_the_image_is_the_official_airflow_image_of_the_pinned_version():
    (default,) = re.findall(r"^ARG AIRFLOW_IMAGE=(\S+)", DOCKERFILE, flags=re.M)
    assert default == f"apache/airflow:{version('apache-airflow')}-python3.11"
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.M) == ["${AIRFLOW_IMAGE}"]


def copied_to_opt_sprx() -> set[str]:
    """The repository paths the Dockerfile copies to the same place under /opt/sprx."""
    copies = re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, flags=re.M)
    return {
        src
        for line in copies
        for src in line.split()[:-1]
        if line.split()[-1] in (f"/opt/sprx/{src}", "/opt/sprx/")
    }


def test_the_image_gets_every_folder_the_package_reads_at_run_time():
    read = {
        config.DBT_PROJECT_DIR,
        config.DEFAULT_CODELIST_DIR,
        build.EXPECTATIONS_DIR,
        suites.EXPECTATIONS_DIR,
        PROJECT_ROOT / "dags",
        PROJECT_ROOT / "src",
    }
    assert {p.relative_to(PROJECT_ROOT).as_posix() for p in read} == {
        "dbt_project",
        "codelists",
        "expectations",
        "dags",
        "src",
    }
    assert {p.relative_to(PROJECT_ROOT).as_posix() for p in read} <= copied_to_opt_sprx()


def test_the_docker_build_context_keeps_every_tracked_file_of_those_folders():
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "dbt_project", "codelists", "expectations", "dags", "src"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(tracked) > 50
    ignored = [f for f in tracked if any(dockerignored(f, p) for p in patterns)]
    assert ignored == []
    assert dockerignored("dbt_project/target/manifest.json", "dbt_project/target")
    assert dockerignored("src/sprx_pipeline/__pycache__/x.pyc", "**/__pycache__")
    assert not dockerignored("dbt_project/tests/generic/x.sql", "tests")


def dockerignored(path: str, pattern: str) -> bool:
    """Docker's rule: a pattern matches the path from the context's root, or a folder in it;
    `*` stays within one folder, `**` spans any number."""
    regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def test_every_credential_comes_from_env_with_no_default():
    used = set(re.findall(r"\$\{(\w+)(:[?-])?", COMPOSE_TEXT))
    credentials = {
        "POSTGRES_PASSWORD",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_FERNET_KEY",
        "SPRX_AIRFLOW_USERS",
        "SPRX_AIRFLOW_PASSWORDS",
    }
    assert {name for name, how in used if name in credentials} == credentials
    assert {how for name, how in used if name in credentials} == {":?"}  # required, always
    env = COMPOSE["x-airflow-common"]["environment"]
    secret_keys = [
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    ]
    assert all(env[k].startswith("${") and ":?" in env[k] for k in secret_keys)
    assert "${POSTGRES_PASSWORD:?" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert COMPOSE["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    api = COMPOSE["services"]["airflow-api-server"]
    assert api["environment"]["SPRX_AIRFLOW_PASSWORDS"].startswith("${SPRX_AIRFLOW_PASSWORDS:?")
    assert "SPRX_AIRFLOW_PASSWORDS" not in env  # only the api-server checks passwords
    assert "python -m sprx_pipeline.server passwords && exec airflow api-server" in api["command"]
    assert set(credentials) - {"SPRX_AIRFLOW_USERS", "SPRX_AIRFLOW_PASSWORDS"} <= {
        line.split("=")[0] for line in server.env_file("a:admin").splitlines()
    }


def test_the_api_binds_to_loopback_unless_configured_and_the_dashboard_has_no_network():
    assert COMPOSE["services"]["airflow-api-server"]["ports"] == [
        "${SPRX_BIND_ADDRESS:-127.0.0.1}:${SPRX_API_PORT:-8080}:8080"
    ]
    assert [s for s, spec in COMPOSE["services"].items() if "ports" in spec] == [
        "airflow-api-server"
    ]
    dashboard = COMPOSE["services"]["dashboard"]
    assert dashboard["network_mode"] == "none" and "environment" not in dashboard


def test_every_file_the_dockerfile_copies_exists():
    sources = [
        src
        for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, flags=re.M)
        for src in line.split()[:-1]
    ]
    assert sources and all((PROJECT_ROOT / src).exists() for src in sources), sources


def test_container_paths_match_where_the_dockerfile_puts_things():
    env = COMPOSE["x-airflow-common"]["environment"]
    assert f"COPY --chown=airflow:root dags {env['AIRFLOW__CORE__DAGS_FOLDER']}" in DOCKERFILE
    assert env["SPRX_PROJECT_ROOT"] == "/opt/sprx"
    mounts = {
        re.sub(r"\$\{[^}]*\}", "HOST", m).split(":")[1]: m
        for m in COMPOSE["x-airflow-common"]["volumes"]
    }
    assert Path(env["SPRX_WAREHOUSE_PATH"]).parent.as_posix() in mounts
    assert mounts[env["SPRX_LANDING_DIR"]].endswith(":ro")
    dashboard = COMPOSE["services"]["dashboard"]
    assert dashboard["volumes"] == ["warehouse:/data/warehouse:ro"]
    assert env["SPRX_WAREHOUSE_PATH"] in dashboard["command"]


def test_every_sprx_variable_is_one_the_code_reads_and_every_one_is_set():
    env = {
        **COMPOSE["x-airflow-common"]["environment"],
        **COMPOSE["services"]["airflow-api-server"]["environment"],
    }
    named = {k for k in env if k.startswith("SPRX_")}
    source = "".join(p.read_text() for p in (PROJECT_ROOT / "src" / "sprx_pipeline").glob("*.py"))
    # the pipeline sets these two for each dbt run (the work file, the build): never a deployment
    read = set(re.findall(r"\"(SPRX_[A-Z_]+)\"", source)) - {"SPRX_DUCKDB_PATH", "SPRX_BUILD"}
    assert named - read == set()
    # optional: pins default to the source's; SPRX_KILL_AT is for the crash tests only; the
    # published storage version and the Data Docs assets have defaults that suit the image;
    # the Spark engine's folders matter only with SPRX_ENGINE=spark
    assert read - named == {
        "SPRX_CODELIST_PINS",
        "SPRX_KILL_AT",
        "SPRX_PUBLISH_STORAGE_VERSION",
        "SPRX_DATA_DOCS_ASSETS",
        "SPRX_LAKE_DIR",
        "SPRX_SPARK_WAREHOUSE_DIR",
    }


def test_settings_match_the_real_scheduler_test():
    env = COMPOSE["x-airflow-common"]["environment"]
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
    ):
        assert key in env and f'"{key}"' in HARNESS, key
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert COMPOSE["services"]["postgres"]["image"] == "postgres:15"
    commands = airflow_commands()
    assert ["pools", "set", orchestration.WRITER_POOL, "1", "one", "DuckDB", "writer"] in commands
    assert {c[0] for c in commands} == {"db", "pools", "api-server", "scheduler", "dag-processor"}
    for component in ("scheduler", "dag-processor", "api-server"):
        assert f'"{component}"' in HARNESS


@pytest.mark.parametrize(
    "command",
    [c[:2] if c[0] in ("db", "pools") else c[:1] for c in airflow_commands()],
    ids=" ".join,
)
def test_every_airflow_command_exists_in_the_pinned_airflow(command, tmp_path):
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [airflow, *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
