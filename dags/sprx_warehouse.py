"""
### sprx_warehouse: build, check and publish the warehouse

Runs whenever the `sprx_codelists` or `sprx_extracts` asset is updated:

1. `start_build` makes the last verified codelist active, opens a row in `audit.builds` and
   records the build's scope (the practices with new deliveries, or all of them), and hands
   on the build id and the build as dbt is told it, SPRX_BUILD (XComs);
2. `check_loaded` runs the Great Expectations checkpoint `sprx_loaded` over the loaded
   tables and fails, building nothing, if a check at error level fails;
3. `dbt_build` (astronomer-cosmos) runs one task per dbt model, `dbt build` of the model and
   its tests, with SPRX_BUILD from `start_build` in its environment (templated `env`),
   so a model whose tests fail stops everything built on it: staging →
   intermediate linkage steps → marts; tests with two parents run after both. With
   `SPRX_ENGINE=spark` it is one task, `spark_build`, instead: the whole `dbt build` on
   Spark in one session (`SPRX_SPARK_MASTER`), the marts copied back to the work file;
4. `quality_gate` runs the checkpoint `sprx_publish` over the marts and the row accounting
   of every delivery, and fails, publishing nothing, if a check at error level fails;
5. `publish` replaces the read-only published warehouse atomically and updates the
   `sprx_warehouse` asset, for dashboards;
6. `close_build` (a teardown) marks a build that did not publish as failed.

Every check is recorded in `audit.quality_checks`; the Great Expectations Data Docs are
beside the warehouse, in `<name>.quality/gx/uncommitted/data_docs/local_site/index.html`.

Every task that opens DuckDB runs in the one-slot `sprx_duckdb` pool: DuckDB accepts one
writer per file.

Settings: `SPRX_WAREHOUSE_PATH`, `SPRX_CODELIST_SOURCE`, `SPRX_DBT_THREADS`, `SPRX_ENGINE`
(`duckdb` or `spark`), `SPRX_SPARK_MASTER`.
"""

from __future__ import annotations

from airflow.sdk import dag, task
from cosmos import DbtTaskGroup

from sprx_pipeline import config, pipeline
from sprx_pipeline import orchestration as orch


@dag(
    dag_id="sprx_warehouse",
    schedule=(orch.CODELISTS_ASSET | orch.EXTRACTS_ASSET),
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.DEFAULT_ARGS,
    tags=[*orch.TAGS, "warehouse", "dbt"],
    doc_md=__doc__,
)
def sprx_warehouse():
    paths = orch.warehouse_paths()
    engine = orch.engine()

    @task(pool=orch.WRITER_POOL, multiple_outputs=True, **orch.FILE_TASK_ARGS)
    def start_build() -> dict[str, str]:
        """Activate the verified codelist and record the build and its scope."""
        with orch.refusals_fail_at_once():
            pipeline.ensure_codelists(
                paths,
                orch.codelist_source(),
                config.default_codelist_pins(),
                orch.WAIT_FOR_LOCK_SECONDS,
            )
            build_id, build = pipeline.start_build(
                paths, wait_seconds=orch.WAIT_FOR_LOCK_SECONDS, engine=engine
            )
        return orch.started_build(build_id, build)

    @task(pool=orch.WRITER_POOL, **orch.FILE_TASK_ARGS)
    def check_loaded(build_id: str) -> str:
        """Great Expectations over the loaded tables; nothing is built past a failure."""
        with orch.refusals_fail_at_once():
            report = pipeline.quality_gate(
                paths, "loaded", build_id, scoped=True, wait_seconds=orch.WAIT_FOR_LOCK_SECONDS
            )
        return report.summary()

    @task(pool=orch.WRITER_POOL, retries=0)
    def spark_build(build_id: str) -> str:
        """`dbt build` every model and test on Spark, then copy the marts back."""
        with orch.refusals_fail_at_once():
            report = pipeline.run_opened_build(paths, build_id, "spark", orch.WAIT_FOR_LOCK_SECONDS)
        return f"{report.passed} dbt nodes built on Spark in {report.dbt_seconds:.0f} s"

    @task(pool=orch.WRITER_POOL, **orch.FILE_TASK_ARGS)
    def quality_gate(build_id: str) -> str:
        """Great Expectations over the marts, and row accounting; nothing is published past
        a failure. (dbt's own tests ran with each model in `dbt_build`.)"""
        with orch.refusals_fail_at_once():
            report = pipeline.quality_gate(
                paths, "marts", build_id, scoped=True, wait_seconds=orch.WAIT_FOR_LOCK_SECONDS
            )
        return report.summary()

    @task(pool=orch.WRITER_POOL, outlets=[orch.WAREHOUSE_ASSET], **orch.FILE_TASK_ARGS)
    def publish(build_id: str) -> str:
        """Replace the published warehouse atomically."""
        return str(pipeline.publish_warehouse(paths, build_id, orch.WAIT_FOR_LOCK_SECONDS))

    @task(pool=orch.WRITER_POOL, **orch.FILE_TASK_ARGS)
    def close_build(build_id: str) -> str:
        """Mark the build failed unless it was published."""
        return pipeline.close_build(paths, build_id, orch.WAIT_FOR_LOCK_SECONDS)

    started = start_build()
    build_id = started[orch.BUILD_ID]
    if engine == "spark":
        dbt_build = spark_build(build_id)
    else:
        dbt_build = DbtTaskGroup(
            group_id="dbt_build", **orch.cosmos_task_group_args(paths, started.operator.task_id)
        )
    gate = quality_gate(build_id)
    (
        check_loaded(build_id)
        >> dbt_build
        >> gate
        >> publish(build_id)
        >> close_build(build_id).as_teardown(setups=started)
    )


sprx_warehouse()
