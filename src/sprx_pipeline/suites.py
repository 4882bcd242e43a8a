"""The Great Expectations suites: one per raw table and one per published mart.

Every expectation is a typed GX class (a typo fails at import) labelled, as OHDSI's Data
Quality Dashboard labels its checks, with a Kahn category and subcategory (conformance:
value, relational, computational; completeness; plausibility: uniqueness, atemporal,
temporal), a level and a threshold:

- `level` "error" (GX severity `critical`): a failure means the published tables would be
  wrong, so it blocks publication. "warn" (GX severity `warning`): reported in the gate's
  summary, `audit.quality_checks` and the Data Docs, but publication goes ahead: completeness
  and plausibility findings describe the data, they do not make it wrong.
- `threshold_pct`: the share of rows that may fail before the check fails (GX `mostly` =
  1 - threshold / 100), for checks over rows; aggregate checks (a minimum, a row count) have
  none.

Row rules that decide what is loaded run earlier, in SQL, in the loader (`ingest`); dbt
tests check keys over whole tables. These suites are the independent second look, after
loading and before publishing. Values known only at run time (the latest extract date, the
study period, the active codelist) are suite parameters, filled in by `quality.parameters`.

The suites are kept as JSON in `expectations/` (what GX stores and reads); regenerate them
after editing this module with `python -m sprx_pipeline.suites` (a test keeps them in step).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from .config import PROJECT_ROOT
from .contract import (
    ATTENDANCE_SETTINGS,
    CONSULTATION_MODES,
    ETHNICITIES,
    ID_PATTERN,
    REGIONS,
    RURAL_URBAN,
    SEXES,
    STAFF_ROLES,
)
from .study import declared

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

CONFORMANCE, COMPLETENESS, PLAUSIBILITY = "conformance", "completeness", "plausibility"
VALUE, RELATIONAL, COMPUTATIONAL = "value", "relational", "computational"
UNIQUENESS, ATEMPORAL, TEMPORAL = "uniqueness", "atemporal", "temporal"
ERROR, WARN = "error", "warn"
SEVERITY = {ERROR: "critical", WARN: "warning"}

# Thresholds a data team tunes (percent of rows allowed to fail), and plausible ranges.
MISSING_IMD_PCT = 10.0  # IMD quintile is derived from the postcode: rarely missing
MISSING_RURAL_URBAN_PCT = 10.0
UNKNOWN_ETHNICITY_PCT = 25.0  # ethnicity recording in English primary care is ~75-90%
UNKNOWN_SEX_PCT = 1.0
QUARANTINE_SHARE_MAX = 0.05  # OHDSI DQD's default: 5% of rows failing
NUMERIC_VALUE_RANGE = (-1.0e5, 1.0e5)
MIN_PERSON_YEARS_FOR_RATES = 100.0  # rates over fewer person-years are too noisy to judge
# The declared study (dbt_project.yml vars): measures, age bands and breakdowns.
STUDY = declared()
# Each measure's plausible rate range is declared with it (domain.md: ~5.5 consultations and
# ~0.35 A&E attendances a person-year).
PLAUSIBLE_RATE_PER_1000_PY = {m.name: m.plausible_rate_per_1000_py for m in STUDY.measures}
MIN_REGISTERED_FOR_UPTAKE = 1_000
MAX_ABS_SMD_AFTER_MATCHING = 0.1  # OHDSI CohortMethod's (and Austin's) usual balance limit
MAX_MONTHLY_UPTAKE_PER_100K = 1_000.0  # 1% of a list referred in one month is implausible
OLDEST_AGE = 125

PARAMETERS = {
    "earliest_date": "1900-01-01: no record is older",
    "latest_extracted_at": "the latest extract date of any applied delivery",
    "latest_extract_year": "its year: nobody is born later",
    "study_start": "dbt var study_start",
    "study_end": "dbt var study_end",
    "window_days": "dbt var window_days",
    "controls_per_case": "dbt var controls_per_case",
    "codelist_codes": "the codes of the active SP codelist",
}

Expectation = gxe.Expectation


def parameter(name: str) -> dict[str, str]:
    """A suite parameter reference, filled in at run time (see PARAMETERS)."""
    assert name in PARAMETERS, name
    return {"$PARAMETER": name}


def check(
    name: str,
    kahn: tuple[str, str | None],
    level: str,
    expectation: type[Expectation],
    threshold_pct: float | None = None,
    description: str = "",
    **kwargs: Any,
) -> Expectation:
    """One labelled check: a GX expectation with its Kahn category, level and threshold."""
    category, subcategory = kahn
    if threshold_pct is not None:
        assert "mostly" in expectation.__fields__, f"{name}: {expectation.__name__} has no mostly"
        if threshold_pct > 0:
            kwargs["mostly"] = round(1 - threshold_pct / 100, 6)
    meta = {
        "check": name,
        "kahn_category": category,
        "kahn_subcategory": subcategory,
        "level": level,
        "threshold_pct": threshold_pct,
        "description": description,
    }
    return expectation(**kwargs, meta=meta, severity=SEVERITY[level])


def _id_format(column: str) -> Expectation:
    return check(
        f"{column}_format",
        (CONFORMANCE, VALUE),
        ERROR,
        gxe.ExpectColumnValuesToMatchRegex,
        0.0,
        f"{column} is an opaque id of 1-64 characters A-Z a-z 0-9 _ -",
        column=column,
        regex=ID_PATTERN,
    )


def _allowed(column: str, values: tuple[str, ...] | list[Any]) -> Expectation:
    return check(
        f"{column}_allowed",
        (CONFORMANCE, VALUE),
        ERROR,
        gxe.ExpectColumnValuesToBeInSet,
        0.0,
        f"{column} takes only the contract's values",
        column=column,
        value_set=list(values),
    )


def _present(column: str) -> Expectation:
    return check(
        f"{column}_present",
        (COMPLETENESS, None),
        ERROR,
        gxe.ExpectColumnValuesToNotBeNull,
        0.0,
        f"{column} is never empty",
        column=column,
    )


def _unique(*columns: str) -> Expectation:
    name = "_".join(columns) + "_unique"
    if len(columns) == 1:
        return check(
            name,
            (PLAUSIBILITY, UNIQUENESS),
            ERROR,
            gxe.ExpectColumnValuesToBeUnique,
            0.0,
            f"one row per {columns[0]}",
            column=columns[0],
        )
    return check(
        name,
        (PLAUSIBILITY, UNIQUENESS),
        ERROR,
        gxe.ExpectCompoundColumnsToBeUnique,
        0.0,
        f"one row per {', '.join(columns)}",
        column_list=list(columns),
    )


def _dated_within(column: str, earliest: Any, latest: Any) -> list[Expectation]:
    """A date column's earliest value is not before `earliest`, its latest not after `latest`."""
    return [
        check(
            f"{column}_not_before_{_label(earliest)}",
            (PLAUSIBILITY, TEMPORAL),
            ERROR,
            gxe.ExpectColumnMinToBeBetween,
            None,
            f"no {column} before {_label(earliest)}",
            column=column,
            min_value=earliest,
        ),
        check(
            f"{column}_not_after_{_label(latest)}",
            (PLAUSIBILITY, TEMPORAL),
            ERROR,
            gxe.ExpectColumnMaxToBeBetween,
            None,
            f"no {column} after {_label(latest)}",
            column=column,
            max_value=latest,
        ),
    ]


def _label(value: Any) -> str:
    return value["$PARAMETER"] if isinstance(value, dict) else str(value).replace("-", "_")


def _at_least(column: str, minimum: float, kahn: tuple[str, str]) -> Expectation:
    return check(
        f"{column}_at_least_{minimum:g}",
        kahn,
        ERROR,
        gxe.ExpectColumnMinToBeBetween,
        None,
        f"{column} is never below {minimum:g}",
        column=column,
        min_value=minimum,
    )


def _between(
    column: str,
    low: Any,
    high: Any,
    kahn: tuple[str, str],
    level: str = ERROR,
    threshold_pct: float = 0.0,
) -> Expectation:
    return check(
        f"{column}_between_{_label(low)}_and_{_label(high)}",
        kahn,
        level,
        gxe.ExpectColumnValuesToBeBetween,
        threshold_pct,
        f"{column} lies in [{_label(low)}, {_label(high)}]",
        column=column,
        min_value=low,
        max_value=high,
    )


def raw_suites() -> dict[str, list[Expectation]]:
    """Suites over the loaded contract tables (schema raw), checked after loading."""
    latest = parameter("latest_extracted_at")
    return {
        "raw.practices": [
            _id_format("practice_id"),
            _unique("practice_id"),
            _present("region"),
            _allowed("region", REGIONS),
        ],
        "raw.patients": [
            _id_format("patient_id"),
            _unique("practice_id", "patient_id"),
            _present("year_of_birth"),
            _present("sex"),
            _present("ethnicity"),
            _allowed("sex", SEXES),
            _allowed("ethnicity", ETHNICITIES),
            _allowed("imd_quintile", [1, 2, 3, 4, 5]),
            _allowed("rural_urban", RURAL_URBAN),
            check(
                "imd_quintile_recorded",
                (COMPLETENESS, None),
                WARN,
                gxe.ExpectColumnValuesToNotBeNull,
                MISSING_IMD_PCT,
                "IMD quintile is known for most patients",
                column="imd_quintile",
            ),
            check(
                "rural_urban_recorded",
                (COMPLETENESS, None),
                WARN,
                gxe.ExpectColumnValuesToNotBeNull,
                MISSING_RURAL_URBAN_PCT,
                "rurality is known for most patients",
                column="rural_urban",
            ),
            check(
                "ethnicity_recorded",
                (COMPLETENESS, None),
                WARN,
                gxe.ExpectColumnValuesToNotBeInSet,
                UNKNOWN_ETHNICITY_PCT,
                "ethnicity is recorded for most patients",
                column="ethnicity",
                value_set=["Unknown"],
            ),
            check(
                "sex_recorded",
                (COMPLETENESS, None),
                WARN,
                gxe.ExpectColumnValuesToNotBeInSet,
                UNKNOWN_SEX_PCT,
                "sex is recorded for nearly all patients",
                column="sex",
                value_set=["U"],
            ),
            _between(
                "year_of_birth", 1900, parameter("latest_extract_year"), (PLAUSIBILITY, ATEMPORAL)
            ),
            *_dated_within("date_of_death", parameter("earliest_date"), latest),
        ],
        "raw.registrations": [
            _id_format("registration_id"),
            _unique("registration_id"),
            _present("start_date"),
            *_dated_within("start_date", parameter("earliest_date"), latest),
            check(
                "end_date_not_before_start_date",
                (PLAUSIBILITY, TEMPORAL),
                ERROR,
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                0.0,
                "a registration does not end before it starts",
                column_A="end_date",
                column_B="start_date",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
        ],
        "raw.consultations": [
            _id_format("consultation_id"),
            _unique("consultation_id"),
            _present("consultation_date"),
            _allowed("mode", CONSULTATION_MODES),
            _allowed("staff_role", STAFF_ROLES),
            *_dated_within("consultation_date", parameter("earliest_date"), latest),
        ],
        "raw.clinical_events": [
            _id_format("event_id"),
            _unique("event_id"),
            _present("event_date"),
            check(
                "snomed_code_format",
                (CONFORMANCE, VALUE),
                ERROR,
                gxe.ExpectColumnValuesToMatchRegex,
                0.0,
                "SNOMED CT ids are 6 to 18 digits, no leading zero",
                column="snomed_code",
                regex=r"^[1-9][0-9]{5,17}$",
            ),
            *_dated_within("event_date", parameter("earliest_date"), latest),
            check(
                "numeric_value_plausible",
                (PLAUSIBILITY, ATEMPORAL),
                WARN,
                gxe.ExpectColumnValuesToBeBetween,
                0.1,
                "numeric values are within a plausible magnitude",
                column="numeric_value",
                min_value=NUMERIC_VALUE_RANGE[0],
                max_value=NUMERIC_VALUE_RANGE[1],
            ),
        ],
        "raw.hospital_attendances": [
            _id_format("attendance_id"),
            _unique("attendance_id"),
            _present("attendance_date"),
            _allowed("setting", ATTENDANCE_SETTINGS),
            *_dated_within("attendance_date", parameter("earliest_date"), latest),
        ],
    }


def _non_negative_counts(columns: list[str]) -> list[Expectation]:
    return [_at_least(c, 0, (CONFORMANCE, COMPUTATIONAL)) for c in columns]


OUTCOME_COUNTS = STUDY.outcome_count_columns()


def mart_suites() -> dict[str, list[Expectation]]:
    """Suites over the published marts, checked before publishing."""
    window = parameter("window_days")
    study = (parameter("study_start"), parameter("study_end"))
    return {
        "marts.sp_referrals": [
            _unique("event_id"),
            _present("event_date"),
            _present("codelist_version"),
            _present("while_registered"),
            _allowed("category", ["referral", "declined", "related_referral", "homeless"]),
            check(
                "snomed_code_in_codelist",
                (CONFORMANCE, RELATIONAL),
                ERROR,
                gxe.ExpectColumnValuesToBeInSet,
                0.0,
                "every SP event carries a code of the active codelist",
                column="snomed_code",
                value_set=parameter("codelist_codes"),
            ),
            *_dated_within(
                "event_date", parameter("earliest_date"), parameter("latest_extracted_at")
            ),
        ],
        "marts.sp_patient_outcomes": [
            _unique("practice_id", "patient_id"),
            _present("index_date"),
            *_dated_within("index_date", *study),
            _between("pre_days", 0, window, (CONFORMANCE, COMPUTATIONAL)),
            _between("post_days", 0, window, (CONFORMANCE, COMPUTATIONAL)),
            _between("age_at_index", 0, OLDEST_AGE, (PLAUSIBILITY, ATEMPORAL)),
            _allowed("age_band", STUDY.age_band_labels),
            *_non_negative_counts(OUTCOME_COUNTS),
        ],
        "marts.sp_matched_controls": [
            _unique("practice_id", "control_patient_id"),
            _unique("practice_id", "case_patient_id", "control_number"),
            _between(
                "control_number", 1, parameter("controls_per_case"), (CONFORMANCE, COMPUTATIONAL)
            ),
            check(
                "pre_window_fully_registered",
                (CONFORMANCE, COMPUTATIONAL),
                ERROR,
                gxe.ExpectColumnValuesToBeBetween,
                0.0,
                "controls are registered on every day of the case's pre window",
                column="pre_days",
                min_value=window,
                max_value=window,
            ),
            _between("post_days", 0, window, (CONFORMANCE, COMPUTATIONAL)),
            *_non_negative_counts(OUTCOME_COUNTS),
        ],
        "marts.sp_outcome_summary": [
            _unique("cohort", "measure", "window"),
            _allowed("cohort", ["referred", "control"]),
            _allowed("measure", list(PLAUSIBLE_RATE_PER_1000_PY)),
            _allowed("window", ["pre", "post"]),
            *_non_negative_counts(["events", "person_days"]),
            *(
                check(
                    f"{measure}_rate_plausible",
                    (PLAUSIBILITY, ATEMPORAL),
                    WARN,
                    gxe.ExpectColumnValuesToBeBetween,
                    0.0,
                    f"{measure} per 1,000 person-years in [{low:g}, {high:g}] where there are "
                    f"at least {MIN_PERSON_YEARS_FOR_RATES:g} person-years",
                    column="rate_per_1000_py",
                    min_value=low,
                    max_value=high,
                    row_condition=(Column("measure") == measure)
                    & (Column("person_years") >= MIN_PERSON_YEARS_FOR_RATES),
                )
                for measure, (low, high) in PLAUSIBLE_RATE_PER_1000_PY.items()
            ),
        ],
        "marts.sp_uptake_monthly": [
            _unique("month", "group_type", "group_value"),
            _present("group_value"),
            _allowed("group_type", ["all", *STUDY.monthly_breakdowns]),
            *_dated_within("month", *study),
            *_non_negative_counts(
                ["referred_patients", "declined_patients", "registered_patients"]
            ),
            check(
                "monthly_uptake_plausible",
                (PLAUSIBILITY, ATEMPORAL),
                WARN,
                gxe.ExpectColumnValuesToBeBetween,
                0.0,
                f"monthly referrals per 100,000 registered in [0, "
                f"{MAX_MONTHLY_UPTAKE_PER_100K:g}] where at least "
                f"{MIN_REGISTERED_FOR_UPTAKE:,} are registered",
                column="rate_per_100k",
                min_value=0,
                max_value=MAX_MONTHLY_UPTAKE_PER_100K,
                row_condition=(Column("group_type") == "all")
                & (Column("registered_patients") >= MIN_REGISTERED_FOR_UPTAKE),
            ),
        ],
        "marts.sp_covariate_balance": [
            _unique("subgroup", "covariate", "level"),
            _allowed("statistic", ["mean", "share"]),
            check(
                "balanced_after_matching",
                (PLAUSIBILITY, ATEMPORAL),
                WARN,
                gxe.ExpectColumnValuesToBeBetween,
                0.0,
                f"every covariate of the matched cases and their controls has |SMD| at most "
                f"{MAX_ABS_SMD_AFTER_MATCHING:g} (all referred patients)",
                column="smd_after",
                min_value=-MAX_ABS_SMD_AFTER_MATCHING,
                max_value=MAX_ABS_SMD_AFTER_MATCHING,
                row_condition=Column("subgroup") == "all",
            ),
        ],
        "marts.dq_practice_feedback": [
            _unique("practice_id", "delivery_id"),
            check(
                "quarantine_share_low",
                (CONFORMANCE, VALUE),
                WARN,
                gxe.ExpectColumnValuesToBeBetween,
                0.0,
                f"at most {QUARANTINE_SHARE_MAX:.0%} of a practice's rows in a delivery "
                "are quarantined",
                column="quarantine_share",
                min_value=0,
                max_value=QUARANTINE_SHARE_MAX,
            ),
            check(
                "sp_prevalence_within_funnel_limits",
                (PLAUSIBILITY, ATEMPORAL),
                WARN,
                gxe.ExpectColumnValuesToBeInSet,
                0.0,
                "a practice's SP referral prevalence is within 3 SD of its source system's",
                column="prevalence_flag",
                value_set=["within_limits", "not_assessable"],
            ),
        ],
    }


def all_suites() -> dict[str, list[Expectation]]:
    return {**raw_suites(), **mart_suites()}


def suite(name: str, expectations: list[Expectation]) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=name, expectations=expectations, meta={"generated_by": "sprx_pipeline.suites"}
    )


def suite_json(name: str, expectations: list[Expectation]) -> str:
    """A suite as GX stores it, with sorted keys and no random ids, so diffs stay readable."""
    data = suite(name, expectations).to_json_dict()
    data.pop("id", None)
    data["meta"].pop("great_expectations_version", None)
    for expectation in data["expectations"]:
        expectation.pop("id", None)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_suites(folder: Path = EXPECTATIONS_DIR) -> Iterator[Path]:
    """Write every suite to `<folder>/<suite>.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, expectations in all_suites().items():
        path = folder / f"{name}.json"
        path.write_text(suite_json(name, expectations))
        yield path


def load_suite(name: str, folder: Path = EXPECTATIONS_DIR) -> gx.ExpectationSuite:
    """A kept suite, read from its JSON (what the gate runs)."""
    path = folder / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: suite missing; regenerate with `python -m sprx_pipeline.suites`"
        )
    return gx.ExpectationSuite(**json.loads(path.read_text()))


if __name__ == "__main__":
    for written in write_suites():
        print(f"wrote {written.relative_to(PROJECT_ROOT)}")
