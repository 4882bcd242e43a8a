"""A real Airflow deployment, not dag.test(): PostgreSQL metadata database, scheduler,
dag-processor and api-server as separate processes, driven through the REST API.

The extracts DAG is triggered by hand; the warehouse DAG must then start by itself from the
`sprx_extracts` asset, build with Cosmos, pass the quality gate and publish.
"""

from __future__ import annotations

import shutil
import time

import duckdb
import pytest
from airflow_harness import AirflowDeployment
from tiny_extract import write_tiny_extract

from sprx_pipeline.config import PROJECT_ROOT

pytestmark = pytest.mark.slow  # PostgreSQL comes from `make setup` (Debian's postgresql-15)


def test_scheduled_extracts_trigger_the_warehouse_build_through_the_asset(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"
    env = {
        "SPRX_LANDING_DIR": str(landing),
        "SPRX_WAREHOUSE_PATH": str(warehouse),
        # Created paused, so that only the DAGs this test unpauses can run.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }
    started = time.monotonic()
    with AirflowDeployment(
        PROJECT_ROOT / "dags",
        tmp_path / "airflow",
        env,
        pools={"sprx_duckdb": 1},
        startup_timeout=240,
    ) as airflow:
        for dag_id in ("sprx_warehouse", "sprx_extracts"):
            airflow.wait_for_dag(dag_id, timeout=240)
            airflow.unpause(dag_id)
        # Unpausing starts the latest missed schedule at once; the landing area is still empty.
        caught_up = airflow.wait_for_new_run("sprx_extracts", run_type="scheduled", timeout=120)
        assert airflow.wait_for_run("sprx_extracts", caught_up["dag_run_id"]) == "success"
        assert airflow.dag_runs("sprx_warehouse") == []  # nothing applied, no asset event

        write_tiny_extract(landing)  # deliveries arrive; an operator triggers a pull
        run_id = airflow.trigger("sprx_extracts")
        assert airflow.wait_for_run("sprx_extracts", run_id, timeout=300) == "success"
        applied = {
            ti["rendered_map_index"]: ti["state"]
            for ti in airflow.task_instances("sprx_extracts", run_id)
            if ti["task_id"] == "apply_delivery"
        }
        assert applied == {"2019-06-30_tpp_001": "success", "2020-01-31_emis_001": "success"}

        build = airflow.wait_for_new_run("sprx_warehouse", run_type="asset_triggered", timeout=120)
        # A hang guard, not a speed target: 50 dbt tasks run one at a time through the
        # one-slot pool, about 20 s each on a 2-core machine shared with other test runs.
        state = airflow.wait_for_run("sprx_warehouse", build["dag_run_id"], timeout=1800)
        assert state == "success"
        tasks = {
            ti["task_id"]: ti["state"]
            for ti in airflow.task_instances("sprx_warehouse", build["dag_run_id"])
        }
        assert tasks["check_loaded"] == tasks["quality_gate"] == tasks["publish"] == "success"
        assert len([t for t in tasks if t.startswith("dbt_build.")]) == 50  # 47 models, 3 tests
    assert airflow.leftover_processes() == []
    print(f"\nreal-scheduler test: {time.monotonic() - started:.0f} s from start to clean stop")

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from marts.sp_patient_outcomes").fetchone() == (8,)
        assert con.execute("select status from audit.builds").fetchall() == [("success",)]
    shutil.rmtree(tmp_path / "airflow", ignore_errors=True)
