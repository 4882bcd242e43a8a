"""The same dbt project on Apache Spark (local mode): every mart equals DuckDB's.

`sprx run --engine spark` ingests with DuckDB as always, writes the raw, audit and codelists
tables as Parquet to the lake folder, builds every model and test with dbt-spark in this
process (one Spark session, `local[2]`, for every build of this module), copies the marts
back, runs the quality gate and publishes. The published marts must equal those of the same
extract built on DuckDB (tests/engine_compare.py: EXCEPT ALL both ways, doubles to 1e-9
relative), on the hand-worked tiny extract and on a generated one of a few thousand patients.
The Spark builds also hold the hand-worked values of tests/test_linkage.py and
tests/test_results.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import BuiltWarehouse, run_pipeline
from engine_compare import compare_marts
from test_linkage import EXPECTED_OUTCOMES, OUTCOME_COLUMNS
from tiny_extract import write_tiny_extract

from sprx_pipeline import scope
from sprx_pipeline.codelists import load_codelist
from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.synthetic import generate

pytestmark = pytest.mark.slow

MARTS = [
    "dq_practice_feedback",
    "dq_source_system_summary",
    "sp_covariate_balance",
    "sp_effect_estimates",
    "sp_matched_controls",
    "sp_matching_summary",
    "sp_measures",
    "sp_outcome_rates",
    "sp_outcome_summary",
    "sp_patient_outcomes",
    "sp_referrals",
    "sp_uptake_monthly",
]
GENERATED_PATIENTS, GENERATED_PRACTICES, GENERATED_SEED = 3_000, 3, 5

# A process that uses Spark as a build does, then exits with its logging left as pytest leaves
# it: a handler at INFO whose stream is closed before the interpreter's teardown.
QUIET_EXIT = """
import atexit, logging, sys, tempfile
from pathlib import Path
captured = tempfile.TemporaryFile("w+")
logging.basicConfig(level=logging.INFO, stream=captured)
from sprx_pipeline import spark
from sprx_pipeline.config import WarehousePaths
with spark.spark_environment(WarehousePaths.at(Path(sys.argv[1]))):
    from pyspark.sql import SparkSession
    session = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
    assert session.getOrCreate().range(3).count() == 3
    import pyspark.pandas  # as dbt-spark's Python-model code does
spark.stop_spark_at_exit()
atexit.register(captured.close)  # runs before sprx's stop: the stream is gone by then
"""


@pytest.fixture(scope="module", autouse=True)
def small_shuffles():
    """Two shuffle partitions, for these small extracts (the setting's default is 4)."""
    saved = os.environ.get("SPRX_SPARK_SHUFFLE_PARTITIONS")
    os.environ["SPRX_SPARK_SHUFFLE_PARTITIONS"] = "2"
    yield
    if saved is None:
        os.environ.pop("SPRX_SPARK_SHUFFLE_PARTITIONS")
    else:
        os.environ["SPRX_SPARK_SHUFFLE_PARTITIONS"] = saved


@pytest.fixture(scope="module")
def spark_tiny(tmp_path_factory) -> BuiltWarehouse:
    """The tiny extract built on Spark (the module's first build starts the session)."""
    root = tmp_path_factory.mktemp("spark-tiny")
    landing = write_tiny_extract(root / "landing")
    started = time.perf_counter()
    report = run_pipeline(landing, root / "warehouse" / "sprx.duckdb", engine="spark")
    print(f"tiny extract on Spark: {time.perf_counter() - started:.0f} s")
    return BuiltWarehouse(landing, WarehousePaths.at(root / "warehouse" / "sprx.duckdb"), report)


@pytest.fixture(scope="module")
def generated_pair(tmp_path_factory) -> tuple[WarehousePaths, WarehousePaths]:
    """A generated extract of a few thousand patients, built on DuckDB and on Spark."""
    root = tmp_path_factory.mktemp("spark-generated")
    generate(
        root / "landing",
        patients=GENERATED_PATIENTS,
        practices=GENERATED_PRACTICES,
        seed=GENERATED_SEED,
    )
    built = {}
    for engine in ("duckdb", "spark"):
        started = time.perf_counter()
        run_pipeline(root / "landing", root / engine / "sprx.duckdb", engine=engine)
        print(f"generated extract on {engine}: {time.perf_counter() - started:.0f} s")
        built[engine] = WarehousePaths.at(root / engine / "sprx.duckdb")
    return built["duckdb"], built["spark"]


def test_every_mart_of_the_tiny_extract_on_spark_equals_duckdbs(tiny, spark_tiny):
    compared, differences = compare_marts(tiny.paths.published, spark_tiny.paths.published)
    assert compared == MARTS
    assert differences == {}


def test_every_mart_of_a_generated_extract_on_spark_equals_duckdbs(generated_pair):
    on_duckdb, on_spark = generated_pair
    compared, differences = compare_marts(on_duckdb.published, on_spark.published)
    assert compared == MARTS
    assert differences == {}
    with duckdb.connect(str(on_spark.published), read_only=True) as con:
        # Not vacuous: matching drew controls, and the effect estimate has a value.
        (controls,) = con.execute("select count(*) from marts.sp_matched_controls").fetchone()
        (ratio,) = con.execute(
            "select ratio from marts.sp_effect_estimates where subgroup = "
            "'all' and measure = 'consultations' and estimate = 'effect'"
        ).fetchone()
    assert controls >= 10 and 0 < ratio < 10


def test_the_spark_build_holds_the_hand_worked_outcomes_matches_and_effect(spark_tiny):
    rows = spark_tiny.query(f"select {OUTCOME_COLUMNS} from marts.sp_patient_outcomes order by 1")
    assert rows == EXPECTED_OUTCOMES
    # EDGE draws CTRL1 then CTRL5 (tests/tiny_extract.py); CTRL5, a case a year later, CTRL2.
    assert spark_tiny.query(
        "select case_patient_id, control_patient_id, control_number "
        "from marts.sp_matched_controls order by 1, 3"
    ) == [("CTRL5", "CTRL2", 1), ("EDGE", "CTRL1", 1), ("EDGE", "CTRL5", 2)]
    # The Mantel-Haenszel effect of tests/test_results.py, worked out there.
    assert spark_tiny.query(
        "select ratio, log_se, ci_lower, ci_upper from marts.sp_effect_estimates "
        "where subgroup = 'all' and measure = 'consultations' "
        "and estimate = 'effect'"
    ) == [(2.3836, 0.401507, 1.0851, 5.2359)]


def test_the_spark_build_read_the_lake_and_recorded_a_full_build(spark_tiny):
    paths = spark_tiny.paths
    with duckdb.connect() as con:
        lake_patients = con.execute(
            "select count(*) from read_parquet(?)", [f"{paths.lake}/raw/patients/*.parquet"]
        ).fetchone()
    assert lake_patients == (14,)  # the tiny extract's 14 patients
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute("select full_rebuild, reason from audit.build_scopes").fetchall() == [
            (True, "the spark engine builds in full; incremental builds are DuckDB's")
        ]
        # The work file holds the marts Spark built, not stale DuckDB intermediate tables.
        assert con.execute(
            "select count(*) from duckdb_tables() where schema_name = 'intermediate'"
        ).fetchone() == (0,)
    assert spark_tiny.report.gate is not None and not spark_tiny.report.gate.failed


def test_a_duckdb_build_after_a_spark_build_rebuilds_in_full(spark_tiny, tmp_path):
    # The Spark build's fingerprint names its engine, so DuckDB does not build incrementally
    # on intermediate tables that did not make the marts in the work file.
    shutil.copytree(spark_tiny.paths.published.parent, tmp_path / "warehouse", symlinks=True)
    paths = WarehousePaths.at(tmp_path / "warehouse" / "sprx.duckdb")
    codelist = load_codelist(paths.codelist_cache, "social-prescribing")
    duckdb_fingerprint = scope.fingerprint(codelist.sha256, {"sp_codelist": codelist.name})
    with duckdb.connect(str(paths.work)) as con:
        planned = scope.plan(con, duckdb_fingerprint)
    assert planned.full_rebuild and planned.reason.startswith(
        "dbt project, codelist, dbt vars or engine changed since build"
    )


def test_a_process_that_used_spark_exits_without_warnings_or_logging_errors(tmp_path):
    # py4j logs each connection it closes; left to the interpreter's teardown that went to a
    # closed stream ("--- Logging error --- ... I/O operation on closed file"), and
    # pandas-on-Spark warned that PYARROW_IGNORE_TIMEZONE was not set.
    done = subprocess.run(
        [sys.executable, "-c", QUIET_EXIT, str(tmp_path / "sprx.duckdb")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("Logging error", "I/O operation on closed file", "PYARROW_IGNORE_TIMEZONE"):
        assert noise not in done.stderr, done.stderr[-3000:]
