"""The Airflow DAGs, run for real with `dag.test()` on a migrated SQLite metadata database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import run_pipeline
from deliveries import write_delivery
from tiny_extract import write_tiny_extract

from sprx_pipeline.config import PROJECT_ROOT

pytestmark = pytest.mark.slow
DAG_IDS = ["sprx_codelists", "sprx_extracts", "sprx_warehouse"]
MARTS = [
    "sp_referrals",
    "sp_patient_outcomes",
    "sp_matched_controls",
    "sp_uptake_monthly",
    "sp_outcome_summary",
    "dq_practice_feedback",
]


def airflow_env(home: Path, landing: Path, warehouse: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Cosmos lists the dbt models (`dbt ls`) while the DAG file is imported: on a busy
        # 2-core machine that can pass Airflow's default import timeout of 30 s.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        "SPRX_LANDING_DIR": str(landing),
        "SPRX_WAREHOUSE_PATH": str(warehouse),
    }


def airflow(env: dict[str, str], *args: str) -> None:
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow_bin, *args], env=env, check=True, capture_output=True, timeout=300)


def run_dags(env: dict[str, str], *dag_ids: str) -> dict:
    """Run DAGs in order with dag.test() in a fresh process; return states per task."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dag_runner.py")), *dag_ids],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("DAG_RUNNER_RESULT ")]
    assert lines, f"dag runner failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("DAG_RUNNER_RESULT "))


@pytest.fixture
def deployment(tmp_path):
    """An AIRFLOW_HOME with a migrated metadata database and the writer pool."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse" / "sprx.duckdb"
    env = airflow_env(tmp_path / "airflow", landing, warehouse)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "sprx_duckdb", "1", "one DuckDB writer")
    return env, landing, warehouse


def marts(warehouse: Path) -> dict[str, list]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            t: sorted(map(repr, con.execute(f"select * from marts.{t}").fetchall())) for t in MARTS
        }


def test_three_dags_in_sequence_publish_the_same_marts_as_sprx_run(deployment, tmp_path):
    env, landing, warehouse = deployment
    write_tiny_extract(landing)
    result = run_dags(env, *DAG_IDS)
    assert result["import_errors"] == {}
    assert set(DAG_IDS) <= set(result["dags"])
    for dag_id in DAG_IDS:
        assert result["runs"][dag_id]["state"] == "success", result["runs"][dag_id]
    tasks = result["runs"]["sprx_extracts"]["tasks"]
    assert tasks["apply_delivery[2019-06-30_tpp_001]"] == "success"
    assert tasks["apply_delivery[2020-01-31_emis_001]"] == "success"
    warehouse_tasks = result["runs"]["sprx_warehouse"]["tasks"]
    # one `dbt build` task per model (47) and one per test with two parents (3)
    assert sum(name.startswith("dbt_build.") for name in warehouse_tasks) == 50
    assert warehouse_tasks["check_loaded"] == warehouse_tasks["quality_gate"] == "success"
    assert warehouse_tasks["publish"] == "success"
    # Every dbt task was passed the build it ran for, not left to look it up.
    with duckdb.connect(str(warehouse.with_name("sprx.work.duckdb")), read_only=True) as con:
        (build_id,) = con.execute("select build_id from audit.builds").fetchone()
    passed = result["runs"]["sprx_warehouse"]["dbt_env"]
    assert len(passed) == 50
    for rendered in passed.values():
        assert json.loads(rendered["SPRX_BUILD"]) == {"id": build_id, "full_rebuild": True}

    cli_warehouse = tmp_path / "cli" / "sprx.duckdb"
    run_pipeline(landing, cli_warehouse)
    assert marts(warehouse) == marts(cli_warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from marts.sp_patient_outcomes").fetchone() == (8,)


def test_a_refused_delivery_fails_only_its_own_mapped_task(deployment):
    env, landing, warehouse = deployment
    write_tiny_extract(landing)
    broken = write_delivery(
        landing,
        "2020-01-31_vision_001",
        "2020-01-31",
        "Vision",
        ["P009"],
        {"practices": [("P009", "Midlands")]},
    )
    (broken / "patients.csv").write_text("patient_id,practice_id\n")  # no longer matches its hash
    result = run_dags(env, "sprx_extracts")
    run = result["runs"]["sprx_extracts"]
    assert run["tasks"]["apply_delivery[2020-01-31_vision_001]"] == "failed"
    assert run["tasks"]["apply_delivery[2019-06-30_tpp_001]"] == "success"
    assert run["tasks"]["apply_delivery[2020-01-31_emis_001]"] == "success"
    assert run["tasks"]["announce_applied"] == "success"
    assert run["tasks"]["report"] == "failed"
    assert run["state"] == "failed"
    with duckdb.connect(str(warehouse.with_name("sprx.work.duckdb")), read_only=True) as con:
        assert con.execute(
            "select delivery_id, status from audit.deliveries order by 1"
        ).fetchall() == [
            ("2019-06-30_tpp_001", "applied"),
            ("2020-01-31_emis_001", "applied"),
            ("2020-01-31_vision_001", "refused"),
        ]
        reason = con.execute(
            "select reason from audit.deliveries where status = 'refused'"
        ).fetchone()[0]
        assert "patients.csv: sha256_mismatch" in reason


def test_the_warehouse_dag_builds_on_spark_in_one_task_when_the_setting_says_so(tmp_path):
    # SPRX_ENGINE=spark: one `spark_build` task (one Spark session for the whole dbt build)
    # between the gates, in place of Cosmos's task per model. Only the DAG's shape is checked
    # here; tests/test_spark.py runs the same pipeline function on Spark.
    env = {
        **airflow_env(tmp_path / "airflow", tmp_path / "landing", tmp_path / "sprx.duckdb"),
        "SPRX_ENGINE": "spark",
    }
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag; bag = DagBag(); "
        "dag = bag.dags['sprx_warehouse']; print('DAG_SHAPE ' + json.dumps({"
        "'errors': list(bag.import_errors), 'tasks': {t.task_id: sorted(t.downstream_task_ids) "
        "for t in dag.tasks}}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("DAG_SHAPE ")]
    assert lines, completed.stderr[-3000:]
    shape = json.loads(lines[-1].removeprefix("DAG_SHAPE "))
    assert shape["errors"] == []
    assert shape["tasks"] == {
        "start_build": ["check_loaded", "close_build", "publish", "quality_gate", "spark_build"],
        "check_loaded": ["spark_build"],
        "spark_build": ["quality_gate"],
        "quality_gate": ["publish"],
        "publish": ["close_build"],
        "close_build": [],
    }
