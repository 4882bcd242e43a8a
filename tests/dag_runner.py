"""Run DAGs with `dag.test()` in this process and print what happened as JSON.

Used by tests/test_dags.py in a subprocess, so that each test gets its own AIRFLOW_HOME
(Airflow reads its configuration once, at import). Usage:
    python dag_runner.py DAG_ID [DAG_ID ...]
prints {"import_errors": {...}, "runs": {dag_id: {"state": ..., "tasks": {task: state},
"dbt_env": {task: the `env` it rendered}}}} (the last for Cosmos's dbt tasks).
"""

from __future__ import annotations

import json
import sys


def task_states(dag_run) -> dict[str, str]:
    states = {}
    for ti in dag_run.get_task_instances():
        name = (
            ti.task_id
            if ti.map_index < 0
            else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
        )
        states[name] = str(ti.state)
    return states


def rendered_dbt_env(dag_run) -> dict[str, object]:
    """The `env` each Cosmos task rendered (its templated field), as Airflow stored it."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    rendered = {}
    for ti in dag_run.get_task_instances():
        if ti.task_id.startswith("dbt_build."):
            fields = RenderedTaskInstanceFields.get_templated_fields(ti) or {}
            rendered[ti.task_id] = fields.get("env")
    return rendered


def main(dag_ids: list[str]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    result = {
        "import_errors": {k: v[-2000:] for k, v in bag.import_errors.items()},
        "dags": sorted(bag.dag_ids),
        "runs": {},
    }
    for dag_id in dag_ids:
        run = bag.get_dag(dag_id).test()
        result["runs"][dag_id] = {
            "state": str(run.state),
            "tasks": task_states(run),
            "dbt_env": rendered_dbt_env(run),
        }
    print("DAG_RUNNER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
