"""
### sprx_codelists: pull and verify the social prescribing codelists

Fetches every list pinned in the codelist manifest from `SPRX_CODELIST_SOURCE` (a folder, or
an HTTP(S) base URL serving OpenCodelists-shaped CSV), checks each against its pinned version
and SHA-256 and every code against the SNOMED CT check digit, keeps the verified copies for
builds, and records the pull in `audit.codelist_pulls`.

* A drifted or malformed list **fails the task at once** with the reason; the lists of the
  last good pull stay in force. An unreachable source is retried with backoff.
* Success updates the `sprx_codelists` asset, which triggers `sprx_warehouse`.

Settings: `SPRX_CODELIST_SOURCE`, `SPRX_CODELIST_PINS`, `SPRX_WAREHOUSE_PATH`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from sprx_pipeline import config, pipeline
from sprx_pipeline import orchestration as orch


@dag(
    dag_id="sprx_codelists",
    schedule="@weekly",
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.DEFAULT_ARGS,
    tags=[*orch.TAGS, "codelists"],
    doc_md=__doc__,
)
def sprx_codelists():
    @task(pool=orch.WRITER_POOL, outlets=[orch.CODELISTS_ASSET], **orch.FILE_TASK_ARGS)
    def pull_and_verify() -> list[dict[str, str]]:
        """Fetch, verify and keep every pinned codelist."""
        with orch.refusals_fail_at_once():
            pulled = pipeline.pull_codelists(
                orch.warehouse_paths(),
                orch.codelist_source(),
                config.default_codelist_pins(),
                orch.WAIT_FOR_LOCK_SECONDS,
            )
        return [{"codelist": c.name, "version": c.version, "sha256": c.sha256} for c in pulled]

    pull_and_verify()


sprx_codelists()
