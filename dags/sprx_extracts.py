"""
### sprx_extracts: apply new GP extract deliveries

Twice a week (Monday and Thursday, 06:00 UTC, as RSC refreshes its extracts), finds the
delivery folders in `SPRX_LANDING_DIR` that the warehouse has not applied, and applies each in
contract order (`extracted_at`, then delivery id) as **its own mapped task**, named by its
delivery id. Both steps run in the one-slot `sprx_duckdb` pool: finding reads the work file,
which DuckDB will not open while another task writes it.

* A refused delivery (broken manifest, wrong hash or row count, wrong columns, a reused id, out
  of order) **fails its own task** with the reason, recorded in `audit.deliveries`; the other
  deliveries still apply. Rows that break a rule are quarantined, not dropped.
* When at least one delivery was applied, `announce_applied` updates the `sprx_extracts` asset,
  which triggers `sprx_warehouse`. `report` then fails the run if any delivery was refused, so
  the run's colour says whether the landing area needs attention.

Settings: `SPRX_LANDING_DIR`, `SPRX_WAREHOUSE_PATH`.
"""

from __future__ import annotations

from airflow.sdk import TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from sprx_pipeline import orchestration as orch
from sprx_pipeline import pipeline


@dag(
    dag_id="sprx_extracts",
    schedule="0 6 * * 1,4",
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.DEFAULT_ARGS,
    tags=[*orch.TAGS, "extracts"],
    doc_md=__doc__,
)
def sprx_extracts():
    @task(pool=orch.WRITER_POOL, **orch.FILE_TASK_ARGS)
    def find_new_deliveries() -> list[str]:
        """Delivery folders not yet applied (or refused as they are now), in contract order.
        It only reads, but DuckDB refuses a reader while a writer holds the file: so it waits
        for the pool (Airflow's writers) and the file lock (a `sprx run` from a shell)."""
        return pipeline.pending_deliveries(
            orch.warehouse_paths(), orch.landing_dir(), orch.WAIT_FOR_LOCK_SECONDS
        )

    @task(pool=orch.WRITER_POOL, map_index_template="{{ delivery_id }}", **orch.FILE_TASK_ARGS)
    def apply_delivery(delivery: str) -> dict:
        """Check and apply one delivery; fail with the reason if it is refused."""
        get_current_context()["delivery_id"] = delivery
        with orch.refusals_fail_at_once():
            outcome = pipeline.apply_delivery(
                orch.warehouse_paths(), orch.landing_dir(), delivery, orch.WAIT_FOR_LOCK_SECONDS
            )
        if outcome.status == "refused":
            raise AirflowFailException(f"delivery {delivery} refused: {outcome.reason}")
        return {
            "delivery_id": outcome.delivery_id,
            "status": outcome.status,
            "quarantined": outcome.quarantined,
        }

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[orch.EXTRACTS_ASSET])
    def announce_applied(outcomes: list[dict]) -> list[str]:
        """Update the extracts asset when something was applied."""
        applied = [o["delivery_id"] for o in outcomes if o and o["status"] == "applied"]
        if not applied:
            raise AirflowSkipException("no delivery was applied: nothing for the warehouse")
        return applied

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report(pending: list[str], outcomes: list[dict]) -> None:
        """Fail the run, after announcing, when any delivery was refused."""
        done = {o["delivery_id"] for o in outcomes if o}
        refused = [d for d in pending if d not in done]
        if refused:
            raise AirflowFailException(
                f"{len(refused)} delivery(ies) not applied: "
                f"{', '.join(refused)}; see audit.deliveries"
            )

    pending = find_new_deliveries()
    outcomes = apply_delivery.expand(delivery=pending)
    announce_applied(outcomes) >> report(pending, outcomes)


sprx_extracts()
