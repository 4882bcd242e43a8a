"""docker-compose.yml cannot run here (no Docker engine), so hold it to what can be checked:
every file, variable and command it names exists, and it matches the real-scheduler test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from sprx_pipeline import orchestration
from sprx_pipeline.config import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
HARNESS = (Path(__file__).with_name("airflow_harness.py")).read_text()
AIRFLOW_SERVICES = ["airflow-init", "airflow-api-server", "airflow-scheduler",
                    "airflow-dag-processor"]


def airflow_commands() -> list[list[str]]:
    """Each `airflow ...` command the compose services run, as argument lists."""
    commands = []
    for name in AIRFLOW_SERVICES:
        command = COMPOSE["services"][name]["command"]
        text = command[-1] if command[0] == "bash" else " ".join(command)
        commands += [part.split() for part in text.split("&&")]
    return [[arg.strip("'") for arg in c[1:]] for c in commands if c[0] == "airflow"]


def test_the_image_is_the_official_airflow_image_of_the_pinned_version():
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.M)
    assert base == f"apache/airflow:{version('apache-airflow')}-python3.11"


def test_every_file_the_dockerfile_copies_exists():
    sources = [src for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, flags=re.M)
               for src in line.split()[:-1]]
    assert sources and all((PROJECT_ROOT / src).exists() for src in sources), sources


def test_container_paths_match_where_the_dockerfile_puts_things():
    env = COMPOSE["x-airflow-common"]["environment"]
    assert f"COPY --chown=airflow:root dags {env['AIRFLOW__CORE__DAGS_FOLDER']}" in DOCKERFILE
    assert env["SPRX_PROJECT_ROOT"] == "/opt/sprx"
    mounts = {m.split(":")[1]: m for m in COMPOSE["x-airflow-common"]["volumes"]}
    assert Path(env["SPRX_WAREHOUSE_PATH"]).parent.as_posix() in mounts
    assert mounts[env["SPRX_LANDING_DIR"]].endswith(":ro")
    dashboard = COMPOSE["services"]["dashboard"]
    assert dashboard["volumes"] == ["warehouse:/data/warehouse:ro"]
    assert env["SPRX_WAREHOUSE_PATH"] in dashboard["command"]


def test_every_sprx_variable_is_one_the_code_reads_and_every_one_is_set():
    env = COMPOSE["x-airflow-common"]["environment"]
    named = {k for k in env if k.startswith("SPRX_")}
    source = "".join(p.read_text() for p in (PROJECT_ROOT / "src" / "sprx_pipeline").glob("*.py"))
    read = set(re.findall(r"\"(SPRX_[A-Z_]+)\"", source)) - {"SPRX_DUCKDB_PATH"}
    assert named - read == set()
    # optional: pins default to the source's; SPRX_KILL_AT is for the crash tests only; the
    # published storage version and the Data Docs assets have defaults that suit the image
    assert read - named == {"SPRX_CODELIST_PINS", "SPRX_KILL_AT", "SPRX_PUBLISH_STORAGE_VERSION",
                            "SPRX_DATA_DOCS_ASSETS"}


def test_settings_match_the_real_scheduler_test():
    env = COMPOSE["x-airflow-common"]["environment"]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES"):
        assert key in env and f'"{key}"' in HARNESS, key
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert COMPOSE["services"]["postgres"]["image"] == "postgres:15"
    commands = airflow_commands()
    assert ["pools", "set", orchestration.WRITER_POOL, "1", "one", "DuckDB", "writer"] in commands
    assert {c[0] for c in commands} == {"db", "pools", "api-server", "scheduler",
                                        "dag-processor"}
    for component in ("scheduler", "dag-processor", "api-server"):
        assert f'"{component}"' in HARNESS


@pytest.mark.parametrize("command", [c[:2] if c[0] in ("db", "pools") else c[:1]
                                     for c in airflow_commands()], ids=" ".join)
def test_every_airflow_command_exists_in_the_pinned_airflow(command, tmp_path):
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, *command, "--help"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "AIRFLOW_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
