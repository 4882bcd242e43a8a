"""Draw up to `controls_per_case` controls per referred patient, without replacement.

Cases are taken in the seeded `case_order`; each takes its candidates (already matched on
the trial's criteria, int_control_candidates) nearest first by `distance`, ties in seeded
`control_order`, skipping anyone already drawn for an earlier case. A greedy draw is
inherently sequential, which is why this one step is Python rather than SQL.

Draws never cross practices (controls come from the case's practice), so the draw of one
practice does not depend on any other: an incremental build draws only for the practices in
the build scope, and a distributed engine draws for each practice in parallel. On DuckDB
the engine sorts the candidates practice by practice; Python walks them once, as plain
tuples streamed in chunks, and forgets a practice's draws when the next begins, so its
memory is one practice's, whatever the size of the network. On Spark each practice's
candidates go to `draw_practice` (applyInPandas), which sorts them in the same ORDER and
walks them with the same `draw_controls`: one definition of the match.
"""

ORDER = "practice_id, case_order, case_patient_id, distance, control_order, control_patient_id"
CHUNK_ROWS = 100_000
COLUMNS = ["practice_id", "case_patient_id", "index_date", "control_patient_id", "control_number"]
SPARK_SCHEMA = (
    "practice_id string, case_patient_id string, index_date date, "
    "control_patient_id string, control_number bigint"
)


def draw_controls(candidates, controls_per_case):
    """Greedy matching over candidate rows already sorted by practice, case, then control
    order."""
    drawn, per_case, rows, current = set(), {}, [], None
    for practice, case, index_date, control in candidates:
        if practice != current:  # draws never cross practices: start afresh
            drawn, per_case, current = set(), {}, practice
        taken = per_case.get((practice, case), 0)
        if taken >= controls_per_case or (practice, control) in drawn:
            continue
        drawn.add((practice, control))
        per_case[(practice, case)] = taken + 1
        rows.append((practice, case, index_date, control, taken + 1))
    return rows


def streamed(session, relation):
    """DuckDB: the relation's rows, fetched a chunk at a time rather than all at once."""
    result = session.execute(relation.sql_query())
    while chunk := result.fetchmany(CHUNK_ROWS):
        yield from chunk


def draw_practice(candidates, controls_per_case):
    """The draw for one practice's candidates (a pandas frame in any order): sorted by ORDER,
    then `draw_controls`. What Spark runs on each practice's group, in parallel."""
    import pandas as pd

    ordered = candidates.sort_values([key.strip() for key in ORDER.split(",")], kind="stable")
    tuples = ordered[["practice_id", "case_patient_id", "index_date", "control_patient_id"]]
    return pd.DataFrame(
        draw_controls(tuples.itertuples(index=False, name=None), controls_per_case), columns=COLUMNS
    )


def spark_draw(candidates, controls_per_case):
    """Spark: one pandas group per practice (controls never cross practices)."""
    return candidates.groupBy("practice_id").applyInPandas(
        lambda practice: draw_practice(practice, controls_per_case), schema=SPARK_SCHEMA
    )


def model(dbt, session):
    import pandas as pd

    # dbt gives Python models `table` whatever dbt_project.yml says; the strategy and schema
    # check still come from there (dbt_project.yml).
    dbt.config(materialized="incremental")
    controls_per_case = int(dbt.config.get("controls_per_case"))
    candidates = dbt.ref("int_control_candidates")
    build_scope = dbt.ref("stg_audit__build_scope")
    if dbt.is_incremental:
        candidates = candidates.join(build_scope, "practice_id")
    if hasattr(candidates, "groupBy"):  # a Spark DataFrame (dbt-spark, dbt-databricks)
        return spark_draw(candidates, controls_per_case)
    ordered = candidates.order(ORDER).project(
        "practice_id, case_patient_id, index_date, control_patient_id"
    )
    matched = pd.DataFrame(
        draw_controls(streamed(session, ordered), controls_per_case), columns=COLUMNS
    )
    return matched.astype(
        {
            "practice_id": "str",
            "case_patient_id": "str",
            "index_date": "datetime64[s]",
            "control_patient_id": "str",
            "control_number": "int64",
        }
    )
