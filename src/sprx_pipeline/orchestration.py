"""What the Airflow DAGs share: assets, the writer pool, task defaults and Cosmos settings.

The DAG files in `dags/` stay thin: they wire tasks that call `sprx_pipeline.pipeline`.
Everything here is configuration, read from the environment (see `config`), so the DAGs,
the CLI and docker-compose agree on one set of variables.

DuckDB allows one writing process per file, so every task that opens the work warehouse
runs in the pool `sprx_duckdb` of one slot (create it with
`airflow pools set sprx_duckdb 1 "one DuckDB writer"`). The pool serialises Airflow's tasks;
the file lock in `warehouse.writer_lock` also keeps a `sprx run` from the shell out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset

from . import config, scope
from .build import BuildError
from .codelists import CodelistError, CodelistFetchError
from .config import WarehousePaths
from .contract import ContractError
from .ingest import IngestError
from .quality import QualityGateError
from .warehouse import WarehouseBusy

WRITER_POOL = "sprx_duckdb"
OWNER = "sprx-data-team"
START_DATE = datetime(2026, 1, 1)
TAGS = ["sprx", "social-prescribing"]
WAIT_FOR_LOCK_SECONDS = 900.0

# Asset events: the codelists DAG and the extracts DAG produce, the warehouse DAG consumes.
CODELISTS_ASSET = Asset(name="sprx_codelists", uri="file:///sprx/codelists/verified")
EXTRACTS_ASSET = Asset(name="sprx_extracts", uri="file:///sprx/warehouse/raw")
WAREHOUSE_ASSET = Asset(name="sprx_warehouse", uri="file:///sprx/warehouse/published")

# Tasks that touch files retry with growing pauses; refusals fail at once (AirflowFailException).
FILE_TASK_ARGS: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}
DEFAULT_ARGS: dict[str, Any] = {"owner": OWNER, "retries": 0}

# What the warehouse DAG's `start_build` task hands on, as XComs: the build id, for the
# tasks that take it as an argument, and the build as dbt is told it (SPRX_BUILD), for Cosmos.
BUILD_ID = "build_id"
BUILD = "sprx_build"


@contextmanager
def refusals_fail_at_once() -> Iterator[None]:
    """Turn a refusal (bad data, drifted codelist, failed gate) into a failure that is not
    retried: retrying cannot fix data. Unreachable sources and busy files still retry."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except (CodelistFetchError, WarehouseBusy):
        raise
    except (CodelistError, ContractError, IngestError, QualityGateError, BuildError) as exc:
        raise AirflowFailException(str(exc)) from None


def _absolute(path: Path) -> Path:
    """Relative settings are relative to the project root, wherever Airflow runs from."""
    return path if path.is_absolute() else config.PROJECT_ROOT / path


def landing_dir() -> Path:
    return _absolute(config.default_landing())


def warehouse_paths() -> WarehousePaths:
    return WarehousePaths.at(_absolute(config.default_warehouse()))


def codelist_source() -> str:
    return config.default_codelist_source()


def engine() -> str:
    """What dbt builds on (SPRX_ENGINE): `duckdb` (Cosmos, a task per model) or `spark`."""
    return config.default_engine()


def dbt_executable() -> Path:
    """The dbt installed beside this interpreter (Airflow's PATH may not include the venv)."""
    return Path(sys.executable).with_name("dbt")


def started_build(build_id: str, build: str) -> dict[str, str]:
    """The XComs of a build `pipeline.start_build` opened (see BUILD_ID)."""
    return {BUILD_ID: build_id, BUILD: build}


# The vars Cosmos lists the models with (`dbt ls`, when the DAG file is parsed): no build.
_FIXED_DBT_VARS = {"sp_codelist": config.SP_CODELIST}


def cosmos_dbt_env(paths: WarehousePaths, build_task_id: str) -> dict[str, str]:
    """The environment every Cosmos task runs dbt with: the work file, the threads, and the
    build (SPRX_BUILD), pulled when the task runs from the XCom of the task that opened it.
    `env` is a templated field of Cosmos's operators; Airflow renders it as text, which is
    why the build is JSON text. Without that XCom it renders `None`, and dbt stops with a
    message naming it (macros/build_scope.sql). The render-time `dbt ls` gets the template
    unrendered, and never reads it: dbt reads the build only while executing."""
    pulled = f"{{{{ ti.xcom_pull(task_ids='{build_task_id}', key='{BUILD}') }}}}"
    return {
        "SPRX_DUCKDB_PATH": str(paths.work),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SPRX_DBT_THREADS": os.environ.get("SPRX_DBT_THREADS", "4"),
        scope.BUILD_ENV: pulled,
    }


def cosmos_task_group_args(paths: WarehousePaths, build_task_id: str) -> dict[str, Any]:
    """Arguments for a Cosmos `DbtTaskGroup`: one task per model, running the model and then
    its tests (`dbt build --select model`), so a model whose tests fail stops its dependants.

    dbt runs as a subprocess (dbt-duckdb would otherwise keep the file attached in the task
    process), in the writer pool, against the work file; models are listed with `dbt ls`
    and cached by Cosmos between parses. Tests with several parents (relationships) get a
    task of their own after all their parents, not after the first. Each task gets the
    build's scope in SPRX_BUILD from `build_task_id`'s XCom (`cosmos_dbt_env`); the vars
    are the same for every build, so they no longer stop dbt from parsing partially.
    """
    from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    return {
        "project_config": ProjectConfig(
            dbt_project_path=config.DBT_PROJECT_DIR,
            env_vars=cosmos_dbt_env(paths, build_task_id),
            install_dbt_deps=False,
            dbt_vars=_FIXED_DBT_VARS,
        ),
        "profile_config": ProfileConfig(
            profile_name="sprx",
            target_name="warehouse",
            profiles_yml_filepath=config.DBT_PROJECT_DIR / "profiles.yml",
        ),
        "execution_config": ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=dbt_executable(),
        ),
        "render_config": RenderConfig(
            load_method=LoadMode.DBT_LS,
            test_behavior=TestBehavior.BUILD,
            dbt_executable_path=dbt_executable(),
            emit_datasets=False,
            invocation_mode=InvocationMode.SUBPROCESS,
            should_detach_multiple_parents_tests=True,
        ),
        # A failing model or test is a data or code problem: retrying cannot fix it.
        "operator_args": {
            "pool": WRITER_POOL,
            "install_deps": False,
            "retries": 0,
        },
    }
