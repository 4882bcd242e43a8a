"""`sp_patient_outcomes` in plain pandas: what an analyst would write without the warehouse.

The benchmark runs it beside the dbt build on the same data, and a test checks that it gives
exactly the published table on the hand-worked tiny extract, so the comparison is between
two implementations of one definition (docs/methods.md), not of two different answers:

- registered: registrations clipped at death and the practice's latest extract date,
  overlapping or touching ones merged into spans;
- index date: first referral-category SP code while registered in the study period;
- pre window [index - 365, index - 1] and post window [index + 1, index + 365], follow-up
  censored at the end of the span holding the index date; the index day is in neither;
- events (consultations by mode, A&E attendances, emergency admissions) count only on
  registered days.

It reads the same inputs as the dbt project (the work warehouse's `raw`, `audit` and
`codelists` tables) into DataFrames, then uses merges and groupbys only: no SQL, no loops
over rows.

>>> import duckdb                                                   # doctest: +SKIP
>>> with duckdb.connect("sprx.work.duckdb", read_only=True) as con:  # doctest: +SKIP
...     outcomes = patient_outcomes(load_inputs(con))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

KEY = ["practice_id", "patient_id"]
MEASURES = ("consultations", "ae_attendances", "emergency_admissions")
MODES = ("face_to_face", "telephone", "video", "home_visit", "other")
AGE_BANDS = [
    (18, "0-17"),
    (30, "18-29"),
    (40, "30-39"),
    (50, "40-49"),
    (60, "50-59"),
    (70, "60-69"),
    (80, "70-79"),
]


@dataclass(frozen=True)
class Study:
    """The dbt vars the outcomes depend on, with the project's defaults."""

    study_start: date = date(2015, 2, 1)
    study_end: date = date(2020, 1, 31)
    window_days: int = 365
    codelist: str = "social-prescribing"


@dataclass
class Inputs:
    """The warehouse tables the outcomes are computed from, as DataFrames."""

    practices: pd.DataFrame
    deliveries: pd.DataFrame
    delivery_practices: pd.DataFrame
    patients: pd.DataFrame
    registrations: pd.DataFrame
    consultations: pd.DataFrame
    clinical_events: pd.DataFrame
    hospital_attendances: pd.DataFrame
    sp_codes: pd.DataFrame


# Only the columns the outcomes use, as an analyst exporting from the warehouse would take.
INPUT_QUERIES = {
    "practices": "select practice_id, region from raw.practices",
    "deliveries": "select delivery_id, extracted_at, source_system, status from audit.deliveries",
    "delivery_practices": "select delivery_id, practice_id from audit.delivery_practices",
    "patients": "select practice_id, patient_id, year_of_birth, sex, ethnicity, imd_quintile, "
    "rural_urban, date_of_death from raw.patients",
    "registrations": "select practice_id, patient_id, start_date, end_date from raw.registrations",
    "consultations": "select practice_id, patient_id, consultation_id, consultation_date, mode "
    "from raw.consultations",
    "clinical_events": "select practice_id, patient_id, event_date, snomed_code "
    "from raw.clinical_events",
    "hospital_attendances": "select practice_id, patient_id, attendance_id, attendance_date, "
    "setting from raw.hospital_attendances",
    "sp_codes": "select codelist, code, category from codelists.sp_codes",
}


def load_inputs(con: duckdb.DuckDBPyConnection) -> Inputs:
    """Read the input tables of a work warehouse into pandas."""
    return Inputs(**{name: con.sql(sql).df() for name, sql in INPUT_QUERIES.items()})


def _days(n: int) -> pd.Timedelta:
    return pd.Timedelta(days=n)


def practice_extracts(inputs: Inputs) -> pd.DataFrame:
    """Each practice's latest applied delivery: its extract date and source system."""
    applied = inputs.delivery_practices.merge(
        inputs.deliveries[inputs.deliveries["status"] == "applied"], on="delivery_id"
    )
    latest = (
        applied.sort_values(["practice_id", "extracted_at", "delivery_id"])
        .groupby("practice_id")
        .tail(1)
    )
    return latest[["practice_id", "extracted_at", "source_system"]].merge(
        inputs.practices, on="practice_id", how="left"
    )


def registered_spans(inputs: Inputs, practices: pd.DataFrame) -> pd.DataFrame:
    """Registrations clipped at death and extract date, overlapping/touching ones merged."""
    reg = inputs.registrations.merge(inputs.patients[KEY + ["date_of_death"]], on=KEY).merge(
        practices[["practice_id", "extracted_at"]], on="practice_id"
    )
    extracted = reg["extracted_at"]
    reg["end"] = pd.concat(
        [reg["end_date"].fillna(extracted), reg["date_of_death"].fillna(extracted), extracted],
        axis=1,
    ).min(axis=1)
    reg = reg[reg["end"] >= reg["start_date"]].sort_values(KEY + ["start_date", "end"])
    latest_end_before = reg.groupby(KEY)["end"].cummax().groupby([reg[k] for k in KEY]).shift()
    new_span = latest_end_before.isna() | (reg["start_date"] > latest_end_before + _days(1))
    reg["span"] = new_span.astype(int).groupby([reg[k] for k in KEY]).cumsum()
    return reg.groupby(KEY + ["span"], as_index=False).agg(
        span_start=("start_date", "min"), span_end=("end", "max")
    )


def on_registered_days(rows: pd.DataFrame, spans: pd.DataFrame, day: str) -> pd.DataFrame:
    """The rows whose `day` falls inside one of the patient's registered spans."""
    matched = rows.merge(spans[KEY + ["span_start", "span_end"]], on=KEY)
    inside = (matched[day] >= matched["span_start"]) & (matched[day] <= matched["span_end"])
    return matched[inside].drop(columns=["span_start", "span_end"])


def index_dates(inputs: Inputs, spans: pd.DataFrame, study: Study) -> pd.DataFrame:
    """First referral while registered, within the study period, per patient."""
    referral_codes = inputs.sp_codes[
        (inputs.sp_codes["codelist"] == study.codelist)
        & (inputs.sp_codes["category"] == "referral")
    ]["code"]
    events = inputs.clinical_events
    referrals = events[
        events["snomed_code"].isin(referral_codes)
        & (events["event_date"] >= pd.Timestamp(study.study_start))
        & (events["event_date"] <= pd.Timestamp(study.study_end))
    ]
    registered = on_registered_days(referrals[KEY + ["event_date"]], spans, "event_date")
    return (
        registered.groupby(KEY, as_index=False)["event_date"]
        .min()
        .rename(columns={"event_date": "index_date"})
    )


def person_time(index: pd.DataFrame, spans: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Registered days of the pre window; follow-up end and days of the post window."""
    cohort = index.copy()
    cohort["pre_start"] = cohort["index_date"] - _days(window_days)
    cohort["pre_end"] = cohort["index_date"] - _days(1)
    both = cohort.merge(spans, on=KEY)
    overlap = (
        (
            both[["span_end", "pre_end"]].min(axis=1)
            - both[["span_start", "pre_start"]].max(axis=1)
        ).dt.days
        + 1
    ).clip(lower=0)
    pre_days = overlap.groupby([both[k] for k in KEY]).sum().rename("pre_days").reset_index()
    holds_index = both[
        (both["span_start"] <= both["index_date"]) & (both["index_date"] <= both["span_end"])
    ].copy()
    holds_index["follow_up_end"] = pd.concat(
        [holds_index["span_end"], holds_index["index_date"] + _days(window_days)], axis=1
    ).min(axis=1)
    cohort = cohort.merge(pre_days, on=KEY, how="left").merge(
        holds_index[KEY + ["follow_up_end"]], on=KEY, how="left"
    )
    cohort["pre_days"] = cohort["pre_days"].fillna(0).astype("int64")
    cohort["follow_up_end"] = cohort["follow_up_end"].fillna(cohort["index_date"])
    cohort["post_days"] = (cohort["follow_up_end"] - cohort["index_date"]).dt.days.astype("int64")
    cohort["complete_follow_up"] = cohort["post_days"] == window_days
    return cohort


def outcome_events(inputs: Inputs) -> pd.DataFrame:
    """Consultations, A&E attendances and emergency admissions as one table of events."""
    consultations = inputs.consultations.rename(
        columns={"consultation_id": "record_id", "consultation_date": "event_date"}
    )
    consultations["measure"] = "consultations"
    hospital = inputs.hospital_attendances
    hospital = hospital[hospital["setting"].isin(["ae", "emergency_admission"])].rename(
        columns={"attendance_id": "record_id", "attendance_date": "event_date"}
    )
    hospital["measure"] = hospital.pop("setting").map(
        {"ae": "ae_attendances", "emergency_admission": "emergency_admissions"}
    )
    return pd.concat([consultations, hospital], ignore_index=True)


def window_counts(cohort: pd.DataFrame, events: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """Distinct events per patient, window, measure and consultation mode, on registered days."""
    mine = events.merge(cohort[KEY + ["index_date", "pre_start", "follow_up_end"]], on=KEY)
    mine = mine[
        (mine["event_date"] >= mine["pre_start"])
        & (mine["event_date"] <= mine["follow_up_end"])
        & (mine["event_date"] != mine["index_date"])
    ]
    mine = on_registered_days(mine, spans, "event_date")
    mine["window"] = (mine["event_date"] < mine["index_date"]).map({True: "pre", False: "post"})
    by_measure = (
        mine.groupby(KEY + ["window", "measure"])["record_id"]
        .nunique()
        .unstack(["window", "measure"])
    )
    consultations = mine[mine["measure"] == "consultations"]
    by_mode = (
        consultations.groupby(KEY + ["window", "mode"])["record_id"]
        .nunique()
        .unstack(["window", "mode"])
    )
    by_mode.columns = [(w, f"consultations_{m}") for w, m in by_mode.columns]
    counts = pd.concat([by_measure, by_mode], axis=1)
    counts.columns = [f"{w}_{m}" for w, m in counts.columns]
    return counts.reset_index()


def age_band(age: pd.Series) -> pd.Series:
    band = pd.Series("80+", index=age.index)
    for upper, label in reversed(AGE_BANDS):
        band[age < upper] = label
    return band


OUTPUT_COLUMNS = [
    "patient_id",
    "practice_id",
    "index_date",
    "age_at_index",
    "age_band",
    "sex",
    "ethnicity",
    "imd_quintile",
    "rural_urban",
    "region",
    "source_system",
    "pre_days",
    "post_days",
    "follow_up_end",
    "complete_follow_up",
] + [
    f"{w}_{m}"
    for w in ("pre", "post")
    for m in [*MEASURES, *(f"consultations_{mode}" for mode in MODES)]
]


def patient_outcomes(inputs: Inputs, study: Study = Study()) -> pd.DataFrame:
    """One row per referred patient, with the columns of `marts.sp_patient_outcomes`."""
    practices = practice_extracts(inputs)
    spans = registered_spans(inputs, practices)
    cohort = person_time(index_dates(inputs, spans, study), spans, study.window_days)
    counts = window_counts(cohort, outcome_events(inputs), spans)
    out = (
        cohort.merge(inputs.patients, on=KEY)
        .merge(practices[["practice_id", "region", "source_system"]], on="practice_id")
        .merge(counts, on=KEY, how="left")
    )
    out["age_at_index"] = out["index_date"].dt.year - out["year_of_birth"]
    out["age_band"] = age_band(out["age_at_index"])
    for column in OUTPUT_COLUMNS:
        if column not in out:
            out[column] = 0
        if column[:4] in ("pre_", "post") and column not in ("pre_days", "post_days"):
            out[column] = out[column].fillna(0).astype("int64")
    return out[OUTPUT_COLUMNS].sort_values(KEY, ignore_index=True)


def as_records(frame: pd.DataFrame) -> list[tuple]:
    """Rows as plain Python values (dates as dates, missing as None), in key order, so two
    tables compare equal exactly when every value agrees."""
    frame = frame.sort_values(KEY, ignore_index=True)
    columns = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            column = column.dt.date
        columns.append(
            [
                None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
                for v in column.astype(object)
            ]
        )
    return list(zip(*columns, strict=True))


def differences(expected: pd.DataFrame, actual: pd.DataFrame, limit: int = 5) -> list[str]:
    """What differs between two versions of sp_patient_outcomes (empty when equal)."""
    if list(expected.columns) != list(actual.columns):
        return [f"columns differ: {list(expected.columns)} != {list(actual.columns)}"]
    left, right = as_records(expected), as_records(actual)
    if len(left) != len(right):
        return [f"{len(left)} rows != {len(right)} rows"]
    return [
        f"row {i}: {a} != {b}" for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b
    ][:limit]


def main(argv: list[str] | None = None) -> int:
    """`python pandas_outcomes.py WORK_DB OUT.parquet`: compute, write, report timings as JSON."""
    import json
    import sys
    import time

    work, out = (argv or sys.argv[1:])[:2]
    started = time.perf_counter()
    with duckdb.connect(work, read_only=True) as con:
        inputs = load_inputs(con)
    loaded = time.perf_counter()
    outcomes = patient_outcomes(inputs)
    computed = time.perf_counter()
    outcomes.to_parquet(out, index=False)
    print(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "compute_seconds": computed - loaded,
                "rows": len(outcomes),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
