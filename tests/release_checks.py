"""Checks every release must pass, on the tiny extract and on a generated one."""

from __future__ import annotations

import csv
from pathlib import Path

from sprx_pipeline import disclosure
from sprx_pipeline.release import RELEASED_TABLES


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def released_values(folder: Path, suffix: str) -> list[tuple[str, str, str]]:
    """(file, column, value) of every non-empty value in columns whose names end in suffix."""
    found = []
    for path in sorted(folder.glob("*.csv")):
        for row in read_csv(path):
            found += [(path.name, k, v) for k, v in row.items() if k.endswith(suffix) and v != ""]
    return found


def assert_disclosure_safe(folder: Path) -> None:
    """No released count is 1..7 and every one is a multiple of 5; person-time is a whole
    number above 7; the folder holds only the released tables; no identifying column."""
    counts = released_values(folder, disclosure.ROUNDED_SUFFIX)
    assert counts, "no released count at all: the check would prove nothing"
    bad = [c for c in counts if int(c[2]) % 5 or 1 <= int(c[2]) <= 7]
    assert bad == []
    person_time = released_values(folder, disclosure.PERSON_TIME_SUFFIX)
    assert [p for p in person_time if int(p[2]) <= 7] == []
    files = {p.name for p in folder.iterdir()}
    assert files == {"manifest.json", *(f"{t.name}.csv" for t in RELEASED_TABLES)}
    for path in folder.glob("*.csv"):
        header = path.read_text().splitlines()[0].split(",")
        assert not {"patient_id", "practice_id", "case_patient_id"} & set(header), path


def _number(cell: str) -> float | None:
    return float(cell) if cell != "" else None


def assert_model_statistics_come_from_released_values(folder: Path) -> int:
    """The back-calculation test: every released standard error and interval is recomputed
    here from the row's own released values (rounded counts, the design effect to 1 decimal,
    the released estimate), so it carries nothing about an exact count that rounding hid; it
    is empty wherever an input count is redacted. Returns how many rows had a log_se."""
    from sprx_pipeline.disclosure import interval, released_log_se
    from sprx_pipeline.release import _ESTIMATE_EVENTS

    checked = 0
    tables = {
        "sp_outcome_rates": lambda row: ("events",),
        "sp_effect_estimates": lambda row: _ESTIMATE_EVENTS[row["estimate"]],
    }
    for name, events in tables.items():
        for row in read_csv(folder / f"{name}.csv"):
            counts = [_number(row[f"{c}{disclosure.ROUNDED_SUFFIX}"]) for c in events(row)]
            if None in counts:
                assert (row["log_se"], row["design_effect"], row["ci_lower"]) == ("", "", ""), row
                continue
            if row["log_se"] == "":
                continue
            effect = float(row["design_effect"])
            assert effect == round(effect, 1)
            log_se = released_log_se(effect, *counts)
            assert float(row["log_se"]) == log_se, row
            column = "rate_per_1000_py" if name == "sp_outcome_rates" else "ratio"
            estimate = _number(row[column])
            digits = len(row["ci_lower"].partition(".")[2])
            lower, upper = interval(estimate, log_se)
            # The interval is taken around the unrounded estimate, so each end may differ from
            # one around the released estimate by the estimate's half unit, scaled by exp(z se).
            half_unit = 0.5 * 10 ** -len(row[column].partition(".")[2])
            slack = 0.5 * 10**-digits + 1e-9 * upper
            assert abs(float(row["ci_lower"]) - lower) <= slack + half_unit * lower / estimate, row
            assert abs(float(row["ci_upper"]) - upper) <= slack + half_unit * upper / estimate, row
            checked += 1
    for row in read_csv(folder / "sp_covariate_balance.csv"):
        for smd, (first, second) in {
            "smd_before": ("cases", "comparators"),
            "smd_after": ("matched_cases", "controls"),
            "smd_unmatched": ("unmatched_cases", "matched_cases"),
        }.items():
            if row[smd] == "":
                continue
            x1, x0 = float(row[f"{first}_value"]), float(row[f"{second}_value"])
            if row["statistic"] == "mean":
                s1, s0 = float(row[f"{first}_sd"]), float(row[f"{second}_sd"])
            else:
                s1, s0 = (x1 * (1 - x1)) ** 0.5, (x0 * (1 - x0)) ** 0.5
            spread = ((s1 * s1 + s0 * s0) / 2) ** 0.5
            expected = 0.0 if x1 == x0 else round((x1 - x0) / spread, 2)
            assert float(row[smd]) == expected, (smd, row)
    return checked
