"""Build the warehouse on Apache Spark: the same dbt project, its `spark` target.

DuckDB stays the system of record: it checks and loads every delivery, keeps the audit
tables, and the quality gate and publish read its work file. A Spark build
1. writes the work file's `raw`, `audit` and `codelists` tables as Parquet to the lake
   folder beside the warehouse (`<stem>.lake/<schema>/<table>/`), which the project's
   `on-run-start` hook registers as Spark tables (macros/register_lake_sources.sql);
2. runs `dbt build --target spark` in this process, so one Spark session (dbt-spark's
   `session` method, `SPRX_SPARK_MASTER`, default `local[2]`) serves the whole build, and
   the Python matching model runs in it (a `session` submission method registered here:
   dbt-spark submits Python models to Databricks clusters only);
3. copies the marts Spark built back into the work file's `marts` schema, replacing the
   previous build's, so the gate and publish see what a DuckDB build would have left.

Every Spark build is a full build: incremental builds are DuckDB's (the per-practice delete
and insert needs row-level deletes, which plain Parquet tables lack). The Spark catalog is
the session's own (in-memory): nothing but the Parquet files outlives a build. The session
lasts until the process exits, and is stopped then (`stop_spark`), before the interpreter's
teardown.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .build import BuildError
from .config import WarehousePaths
from .warehouse import connect

log = logging.getLogger(__name__)

LAKE_SCHEMAS = ("raw", "audit", "codelists")
SPARK_CONF_DIR = Path(__file__).with_name("spark_conf")  # Spark's log settings: errors only
DEFAULT_MASTER = "local[2]"


class SparkUnavailable(BuildError):
    """The Spark engine's packages or Java are missing."""


def require_spark() -> None:
    """Fail early, saying what to install, when dbt-spark, PySpark or Java is missing."""
    try:
        import dbt.adapters.spark  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkUnavailable(
            f"the spark engine needs dbt-spark and PySpark ({exc}): "
            "pip install -c requirements.lock '.[spark]'"
        ) from None
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None
    if not (java and java.is_file()) and shutil.which("java") is None:
        raise SparkUnavailable(
            "the spark engine needs Java 17 (set JAVA_HOME or put java on "
            "PATH; Debian: apt-get install openjdk-17-jre-headless)"
        )


# --- 1. the lake ---------------------------------------------------------------------------


def write_lake(paths: WarehousePaths) -> dict[str, int]:
    """Write every raw, audit and codelists table of the work file as Parquet to the lake,
    one folder per table (replaced whole); return the rows written per table."""
    written: dict[str, int] = {}
    with connect(paths.work) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = current_database() and schema_name in (?, ?, ?) "
            "order by all",
            list(LAKE_SCHEMAS),
        ).fetchall()
        for schema, table in tables:
            folder = paths.lake / schema / table
            fresh = folder.with_name(f".{table}.writing")
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
            target = str(fresh / "part-0.parquet").replace("'", "''")
            con.execute(
                f"copy (select * from {schema}.\"{table}\") to '{target}' "
                "(format parquet, compression zstd)"
            )
            shutil.rmtree(folder, ignore_errors=True)
            fresh.rename(folder)
            (written[f"{schema}.{table}"],) = con.execute(
                f'select count(*) from {schema}."{table}"'
            ).fetchone()
    return written


# --- 2. dbt on Spark, in this process ------------------------------------------------------


class SessionPythonJob:
    """dbt-spark's Python-model submission for `method: session`: run the compiled model in
    this process against the build's Spark session (what a Databricks job cluster does with
    it there). The compiled code defines `model`, calls it and saves the result as a table."""

    def __init__(self, parsed_model: dict[str, Any], credentials: Any) -> None:
        self.name = parsed_model.get("alias") or parsed_model.get("name", "python model")

    def submit(self, compiled_code: str) -> None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        # A module name that cannot be imported: cloudpickle then ships the model's functions
        # (draw_practice, draw_controls) to the Python workers by value.
        scope = {"spark": spark, "__name__": f"sprx_dbt_model_{self.name}"}
        exec(compile(compiled_code, f"<dbt Python model {self.name}>", "exec"), scope)


def enable_session_python_models() -> None:
    """Add the `session` submission method to dbt-spark's adapter (once per process)."""
    from dbt.adapters.spark.impl import SparkAdapter

    current = SparkAdapter.python_submission_helpers
    if getattr(current.fget, "sprx_session", False):
        return
    original = current.fget

    def helpers(self: Any) -> dict[str, Any]:
        return {**original(self), "session": SessionPythonJob}

    helpers.sprx_session = True  # type: ignore[attr-defined]
    SparkAdapter.python_submission_helpers = property(helpers)


@contextmanager
def spark_environment(paths: WarehousePaths, extra: dict[str, str] | None = None) -> Iterator[None]:
    """The variables the `spark` target reads, and `extra` (a build's SPRX_BUILD), set for the
    length of one dbt invocation.

    PYSPARK_PYTHON makes Spark's Python workers (applyInPandas) this interpreter, with the
    same packages, rather than whatever `python3` is on PATH; SPARK_CONF_DIR holds the log
    settings the JVM reads when the session starts. PYARROW_IGNORE_TIMEZONE is what
    pandas-on-Spark needs in the driver and in every Python worker, which inherit the JVM's
    environment, so it must be set before the session starts: dbt-spark's Python-model code
    imports `pyspark.pandas`, which otherwise warns that it was not set and sets it itself,
    for the rest of the process and too late for the workers. (It also changes how pyarrow
    converts zone-aware timestamps, so it is set for the Spark build only, not the process.)"""
    settings = {
        "SPRX_LAKE_DIR": str(paths.lake),
        "SPRX_SPARK_WAREHOUSE_DIR": str(paths.lake / "spark-warehouse"),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_CONF_DIR": str(SPARK_CONF_DIR),
        "PYARROW_IGNORE_TIMEZONE": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **(extra or {}),
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def clear_orphaned_tables(paths: WarehousePaths) -> None:
    """Before this process's first Spark session: delete the table files an earlier process
    left in the Spark warehouse folder. Its catalog (in-memory) died with it, and Spark
    refuses to create a managed table over a folder that exists. Within one process the
    session's catalog knows every table there, and dbt drops and recreates them itself.
    (The folder is fixed when the session starts: a second warehouse built in the same
    process keeps Spark's table files beside the first, as scratch.)"""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is None:
        shutil.rmtree(paths.lake / "spark-warehouse", ignore_errors=True)


def run_dbt(
    args: list[str], paths: WarehousePaths, extra_env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Run dbt against the `spark` target in this process, with `extra_env` set while it
    runs; its exit code and results.

    In-process, not a child like DuckDB's dbt: the Spark session (about 15 s to start)
    then outlives one invocation, so a second build in this process reuses it."""
    import json

    from dbt.cli.main import dbtRunner

    require_spark()
    enable_session_python_models()
    clear_orphaned_tables(paths)
    results_file = paths.dbt_dir / "target" / "run_results.json"
    results_file.unlink(missing_ok=True)
    with spark_environment(paths, extra_env):
        outcome = dbtRunner().invoke([*args, "--target", "spark"])
    stop_spark_at_exit()
    returncode = 0 if outcome.success else (1 if outcome.exception is None else 2)
    if outcome.exception is not None and not results_file.is_file():
        raise BuildError(
            f"dbt on Spark stopped before running any node: {outcome.exception}"
        ) from outcome.exception
    results = json.loads(results_file.read_text())["results"] if results_file.is_file() else []
    return returncode, results


@functools.cache
def stop_spark_at_exit() -> None:
    """Stop the session when the process exits (`stop_spark`); registered once, after the
    first build has started the session, so that it runs before anything pyspark or py4j
    registered when the session started."""
    atexit.register(stop_spark)


def stop_spark() -> None:
    """Stop this process's Spark session and close its py4j gateway, quietly, while the
    interpreter is still whole.

    Left to the interpreter's teardown, py4j closes each of its connections from a finalizer
    (`ClientServerConnection.__del__`) and logs every close at INFO. By then the stream of a
    handler that takes those records may be closed (pytest's captured output is), and logging
    prints "--- Logging error --- ValueError: I/O operation on closed file." with a stack for
    each connection. So py4j's logger is held to warnings first (the
    closes are routine; a real failure still shows), then the session and the gateway, with
    its callback server, are stopped here."""
    from py4j.protocol import Py4JError
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        if SparkSession._instantiatedSession is not None:
            SparkSession._instantiatedSession.stop()
        elif SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()
    except Py4JError as exc:
        log.warning("the Spark session did not stop cleanly (has its JVM died?): %s", exc)
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None


# --- 3. the marts back into the work file ----------------------------------------------------


def spark_session():
    """The Spark session of this process's dbt builds."""
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


def import_marts(paths: WarehousePaths) -> dict[str, int]:
    """Replace the work file's marts with the tables Spark built in its `marts` schema (via
    Arrow, column order and types as Spark made them); drop the work file's intermediate
    tables, which a DuckDB build left and which no longer match the marts."""
    spark = spark_session()
    names = sorted(t.name for t in spark.catalog.listTables("marts") if not t.isTemporary)
    if not names:
        raise BuildError("the Spark build left no tables in schema marts")
    copied: dict[str, int] = {}
    with connect(paths.work) as con:
        con.execute("begin")
        con.execute("drop schema if exists intermediate cascade")
        con.execute("drop schema if exists marts cascade")
        con.execute("create schema marts")
        for name in names:
            arrow_table = spark.table(f"marts.`{name}`").toArrow()
            con.register("spark_mart", arrow_table)
            con.execute(f'create table marts."{name}" as select * from spark_mart')
            con.unregister("spark_mart")
            copied[name] = arrow_table.num_rows
        con.execute("commit")
    return copied


def build(
    paths: WarehousePaths,
    args: list[str],
    progress: Any = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, list[dict[str, Any]], dict[str, float]]:
    """The Spark build: lake, dbt on Spark (with `extra_env`, the build's SPRX_BUILD), marts
    back; exit code, results, seconds per step."""
    say = progress or (lambda message: None)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    written = write_lake(paths)
    seconds["lake"] = time.perf_counter() - started
    say(
        f"wrote {len(written)} tables ({sum(written.values()):,} rows) as Parquet to {paths.lake} "
        f"({seconds['lake']:.1f} s)"
    )
    started = time.perf_counter()
    returncode, results = run_dbt(args, paths, extra_env)
    seconds["dbt"] = time.perf_counter() - started
    if returncode == 0:
        started = time.perf_counter()
        copied = import_marts(paths)
        seconds["marts"] = time.perf_counter() - started
        say(
            f"copied {len(copied)} marts ({sum(copied.values()):,} rows) from Spark into "
            f"{paths.work.name} ({seconds['marts']:.1f} s)"
        )
    return returncode, results, seconds
