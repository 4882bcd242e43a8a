"""`sprx release`: disclosure-controlled CSVs of the summary marts, with a manifest.

Only the aggregate tables named in `RELEASED_TABLES` can leave the warehouse; each goes
through `disclosure.apply_sdc` column by column, and every rate, ratio and interval is
recomputed from the rounded counts. The folder is written beside the target and renamed
into place, so a reader sees the old release or the new one, never half of one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from . import disclosure
from .disclosure import apply_person_time_sdc, apply_sdc, interval, rate
from .study import Study, declared

MANIFEST_NAME = "manifest.json"
# Columns that would identify a patient or practice: a released table may hold none of them.
IDENTIFYING_COLUMNS = frozenset(
    {
        "patient_id",
        "practice_id",
        "case_patient_id",
        "control_patient_id",
        "event_id",
        "consultation_id",
        "delivery_id",
    }
)

Row = dict[str, Any]


class ReleaseError(ValueError):
    """The release could not be written: the message says what and where."""


@dataclass(frozen=True)
class ReleasedTable:
    """One CSV of a release: the mart's `released` columns, each treated as the study
    declares its class (dbt_project.yml var released_columns): labels pass as they are,
    counts through apply_sdc, person-time through apply_person_time_sdc, and `derive`
    recomputes the rates from the rounded values (and the exact inputs it names, such as a
    standard error). Columns are written labels first, then counts, then rates."""

    name: str
    released: tuple[str, ...]
    derive: Callable[[Row, Row], Row]
    order_by: tuple[str, ...]
    exact_inputs: tuple[str, ...] = ()
    study: Study = field(default_factory=declared, compare=False)

    def _of_class(self, *classes: str) -> tuple[str, ...]:
        return tuple(c for c in self.released if self.study.column_class(c) in classes)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._of_class("label")

    @property
    def counts(self) -> tuple[str, ...]:
        """Counts and person-time: every column that is rounded."""
        return self._of_class("count", "person_time")

    @property
    def person_time(self) -> tuple[str, ...]:
        return self._of_class("person_time")

    @property
    def derived(self) -> tuple[str, ...]:
        return self._of_class("rate")

    def released_name(self, column: str) -> str:
        return column + (
            disclosure.PERSON_TIME_SUFFIX
            if column in self.person_time
            else disclosure.ROUNDED_SUFFIX
        )

    @property
    def columns(self) -> list[str]:
        return [*self.labels, *(self.released_name(c) for c in self.counts), *self.derived]

    def release(self, exact: Row) -> Row:
        rounded = {
            c: (apply_person_time_sdc if c in self.person_time else apply_sdc)(exact[c])
            for c in self.counts
        }
        row = {c: exact[c] for c in self.labels}
        row.update({self.released_name(c): v for c, v in rounded.items()})
        row.update(self.derive(rounded, exact))
        return row


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _with_interval(
    estimate: float | None,
    exact_log_se: float | None,
    digits: int,
    exact_counts: tuple,
    rounded_counts: tuple,
) -> Row:
    """The design effect, the log_se recomputed from the rounded counts, and the interval
    around the released estimate (disclosure.released_log_se)."""
    effect = disclosure.design_effect(exact_log_se, *exact_counts)
    log_se = disclosure.released_log_se(effect, *rounded_counts)
    lower, upper = interval(estimate, log_se)
    released = lower is not None
    return {
        "design_effect": effect if released else None,
        "log_se": log_se if released else None,
        "ci_lower": _rounded(lower, digits),
        "ci_upper": _rounded(upper, digits),
    }


def _measure(r: Row, _: Row) -> Row:
    return {"ratio": _rounded(rate(r["numerator"], r["denominator"]), 6)}


def _outcome_summary(r: Row, _: Row) -> Row:
    return {"rate_per_1000_py": _rounded(rate(r["events"], r["person_years"], 1000), 2)}


def _outcome_rate(r: Row, exact: Row) -> Row:
    estimate = rate(r["events"], r["person_years"], 1000)
    return {
        "rate_per_1000_py": _rounded(estimate, 2),
        **_with_interval(estimate, exact["log_se"], 2, (exact["events"],), (r["events"],)),
    }


def _post_vs_pre(r: Row, cohort: str) -> float | None:
    """A cohort's post/pre rate ratio from rounded events and person-years."""
    post = rate(r[f"{cohort}_post_events"], r[f"{cohort}_post_person_years"])
    pre = rate(r[f"{cohort}_pre_events"], r[f"{cohort}_pre_person_years"])
    return rate(post, pre)


# The event counts behind each estimate of sp_effect_estimates (their log variance, if Poisson,
# is the sum of their reciprocals).
_ESTIMATE_EVENTS = {
    "effect": ("referred_post_events", "control_post_events"),
    "referred_post_vs_pre": ("referred_pre_events", "referred_post_events"),
    "control_post_vs_pre": ("control_pre_events", "control_post_events"),
    "ratio_of_ratios": (
        "referred_pre_events",
        "referred_post_events",
        "control_pre_events",
        "control_post_events",
    ),
}


def _effect_estimate(r: Row, exact: Row) -> Row:
    kind = exact["estimate"]
    if kind == "effect":
        # The Mantel-Haenszel ratio sums over matched sets: the rounded totals cannot give it
        # back, so it is rounded itself, and only released when no input is redacted.
        whole = all(value is not None for value in r.values())
        estimate = disclosure.round_model_ratio(exact["ratio"]) if whole else None
        digits = disclosure.MODEL_RATIO_DECIMALS
    else:
        referred, control = _post_vs_pre(r, "referred"), _post_vs_pre(r, "control")
        estimate = {
            "referred_post_vs_pre": referred,
            "control_post_vs_pre": control,
            "ratio_of_ratios": rate(referred, control),
        }[kind]
        digits = 4
    events = _ESTIMATE_EVENTS[kind]
    return {
        "ratio": _rounded(estimate, digits),
        **_with_interval(
            estimate,
            exact["log_se"],
            digits,
            tuple(exact[c] for c in events),
            tuple(r[c] for c in events),
        ),
    }


_BALANCE_GROUPS = ("cases", "comparators", "matched_cases", "controls", "unmatched_cases")
_BALANCE_SMDS = {
    "smd_before": ("cases", "comparators"),
    "smd_after": ("matched_cases", "controls"),
    "smd_unmatched": ("unmatched_cases", "matched_cases"),
}


def _balance_value(r: Row, exact: Row, group: str) -> tuple[float | None, float | None]:
    """A group's released (mean or share, standard deviation), or Nones: only over more than
    7 people (and, for a share, more than 7 with the level and more than 7 without). Shares
    of unweighted groups are recomputed from the rounded counts; the controls' share is
    weighted (1/k per set), so it is rounded to 2 decimals instead; means and standard
    deviations are rounded to 1 decimal."""
    people = r[group]
    if people is None:
        return None, None
    if exact["statistic"] == "mean":
        return _rounded(exact[f"{group}_value"], 1), _rounded(exact[f"{group}_sd"], 1)
    with_level = r[f"{group}_with_level"]
    without = apply_sdc(exact[group] - exact[f"{group}_with_level"])
    if with_level is None or without is None:
        return None, None
    share = (
        _rounded(exact[f"{group}_value"], 2)
        if group == "controls"
        else _rounded(rate(with_level, people), 4)
    )
    return share, math.sqrt(share * (1 - share))


def _smd(
    first: tuple[float | None, float | None], second: tuple[float | None, float | None]
) -> float | None:
    """The standardised difference of two released (value, sd) pairs, to 2 decimals."""
    (x1, s1), (x0, s0) = first, second
    if None in (x1, s1, x0, s0):
        return None
    if x1 == x0:
        return 0.0
    spread = math.sqrt((s1 * s1 + s0 * s0) / 2)
    return round((x1 - x0) / spread, 2) if spread > 0 else None


def _balance(r: Row, exact: Row) -> Row:
    released = {g: _balance_value(r, exact, g) for g in _BALANCE_GROUPS}
    out: Row = {}
    for group, (value, sd) in released.items():
        out[f"{group}_value"] = value
        out[f"{group}_sd"] = sd if exact["statistic"] == "mean" else None
    out.update({name: _smd(released[a], released[b]) for name, (a, b) in _BALANCE_SMDS.items()})
    return out


def _matching(r: Row, _: Row) -> Row:
    return {"share_of_cases": _rounded(rate(r["cases"], r["referred_patients"]), 4)}


def _data_quality(r: Row, _: Row) -> Row:
    return {
        "quarantined_percent": _rounded(rate(r["rows_quarantined"], r["rows_received"], 100), 3),
        "sp_code_prevalence": _rounded(rate(r["referred_patients"], r["study_patients"], 100), 3),
    }


_EFFECT_INPUTS = tuple(
    f"{cohort}_{window}_{kind}"
    for cohort in ("referred", "control")
    for window in ("pre", "post")
    for kind in ("events", "person_years")
)


def released_tables(study: Study | None = None) -> tuple[ReleasedTable, ...]:
    """The tables a release writes, with the study's breakdowns as sp_measures' labels."""
    study = study or declared()
    breakdowns = tuple(b.name for b in study.breakdowns)
    tables = (
        ReleasedTable(
            "sp_measures",
            ("measure", "interval_start", "interval_end", *breakdowns, "numerator", "denominator")
            + ("ratio",),
            _measure,
            ("measure", "interval_start", *breakdowns),
        ),
        ReleasedTable(
            "sp_outcome_summary",
            ("cohort", "measure", "window", "patients", "events", "person_years")
            + ("rate_per_1000_py",),
            _outcome_summary,
            ("cohort", "measure", "window"),
        ),
        ReleasedTable(
            "sp_outcome_rates",
            ("subgroup", "cohort", "measure", "window")
            + ("patients", "matched_sets", "events", "person_years")
            + ("rate_per_1000_py", "design_effect", "log_se", "ci_lower", "ci_upper"),
            _outcome_rate,
            ("subgroup", "cohort", "measure", "window"),
            ("log_se",),
        ),
        ReleasedTable(
            "sp_effect_estimates",
            ("subgroup", "measure", "estimate", "kind")
            + ("referred_patients", "control_patients", "cases_with_controls", *_EFFECT_INPUTS)
            + ("ratio", "design_effect", "log_se", "ci_lower", "ci_upper"),
            _effect_estimate,
            ("subgroup", "measure", "estimate"),
            ("log_se", "ratio"),
        ),
        ReleasedTable(
            "sp_covariate_balance",
            ("subgroup", "covariate", "level", "statistic")
            + (*_BALANCE_GROUPS, *(f"{g}_with_level" for g in _BALANCE_GROUPS))
            + tuple(f"{g}_{part}" for g in _BALANCE_GROUPS for part in ("value", "sd"))
            + tuple(_BALANCE_SMDS),
            _balance,
            ("subgroup", "covariate", "level"),
            tuple(f"{g}_{part}" for g in _BALANCE_GROUPS for part in ("value", "sd")),
        ),
        ReleasedTable(
            "sp_matching_summary",
            ("controls_matched", "cases", "referred_patients", "share_of_cases"),
            _matching,
            ("controls_matched",),
        ),
        ReleasedTable(
            "dq_source_system_summary",
            ("source_system", "practices", "deliveries_applied", "deliveries_refused")
            + ("rows_received", "rows_loaded", "rows_quarantined", "study_patients")
            + ("referred_patients", "quarantined_percent", "sp_code_prevalence"),
            _data_quality,
            ("source_system",),
        ),
    )
    return tuple(replace(table, study=study) for table in tables)


RELEASED_TABLES = released_tables()


def _check_not_identifying(tables: tuple[ReleasedTable, ...]) -> None:
    for table in tables:
        leaked = IDENTIFYING_COLUMNS.intersection(table.columns + list(table.exact_inputs))
        if leaked:
            raise ReleaseError(f"{table.name} would release identifying columns {sorted(leaked)}")


def _exact_rows(con: duckdb.DuckDBPyConnection, table: ReleasedTable) -> Iterator[Row]:
    """The mart's rows with the columns the release needs (names are constants above)."""
    names = [*table.labels, *table.counts, *table.exact_inputs]
    select = ", ".join(f'"{c}"' for c in dict.fromkeys(names))
    order = ", ".join(f'"{c}"' for c in table.order_by)
    cursor = con.execute(f"select {select} from marts.{table.name} order by {order}")
    columns = [d[0] for d in cursor.description]
    for values in cursor.fetchall():
        yield dict(zip(columns, values, strict=True))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[Row]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row[c]) for c in columns] for row in rows])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _provenance(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Where the numbers came from: the build, codelist and data period."""
    build_id, published_at = con.execute(
        "select build_id, published_at from meta.publication"
    ).fetchone()
    codelist = con.execute("select min(codelist), min(version) from codelists.sp_codes").fetchone()
    start, end = con.execute(
        "select min(interval_start), max(interval_end) from marts.sp_measures"
    ).fetchone()
    (extract,) = con.execute(
        "select max(extracted_at) from audit.deliveries where status = 'applied'"
    ).fetchone()
    return {
        "build_id": build_id,
        "published_at": _cell(published_at),
        "codelist": {"name": codelist[0], "version": codelist[1]},
        "data_period": {"start": _cell(start), "end": _cell(end), "latest_extract": _cell(extract)},
    }


def published_study(con: duckdb.DuckDBPyConnection) -> Study:
    """The study as the published build declared it: the project's vars with the build's."""
    row = con.execute(
        "select builds.dbt_vars from meta.publication inner join audit.builds using (build_id)"
    ).fetchone()
    return Study.of(json.loads(row[0]) if row and row[0] else None)


def _replace_folder(staged: Path, out: Path) -> None:
    """Move a finished release into place; an existing folder must be a release itself."""
    if out.exists():
        if not (out / MANIFEST_NAME).is_file():
            raise ReleaseError(
                f"{out} exists and is not a release (no {MANIFEST_NAME}): "
                "choose an empty or new folder"
            )
        retired = out.with_name(f".{out.name}.retired")
        shutil.rmtree(retired, ignore_errors=True)
        out.rename(retired)
        staged.rename(out)
        shutil.rmtree(retired)
    else:
        staged.rename(out)


def write_release(warehouse: Path, out: Path) -> dict[str, Any]:
    """Write every table of `released_tables` under SDC, and the manifest, to `out`."""
    if not warehouse.is_file():
        raise FileNotFoundError(f"{warehouse} does not exist: run `sprx run` first")
    _check_not_identifying(RELEASED_TABLES)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            study = published_study(con)
            tables = released_tables(study)
            _check_not_identifying(tables)
            manifest = {
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "warehouse": str(warehouse.resolve()),
                **_provenance(con),
                "study": study.summary(),
                "rules": {
                    "suppression_threshold": disclosure.SUPPRESSION_THRESHOLD,
                    "rounding_multiple": disclosure.ROUNDING_MULTIPLE,
                    "person_time_rounding": disclosure.PERSON_TIME_ROUNDING,
                    "rounded_count_suffix": disclosure.ROUNDED_SUFFIX,
                    "rounded_person_time_suffix": disclosure.PERSON_TIME_SUFFIX,
                    "applied": disclosure.RULES,
                },
                "files": [],
            }
            for table in tables:
                rows = [table.release(exact) for exact in _exact_rows(con, table)]
                sha256 = _write_csv(staged / f"{table.name}.csv", table.columns, rows)
                manifest["files"].append(
                    {
                        "file": f"{table.name}.csv",
                        "source": f"marts.{table.name}",
                        "rows": len(rows),
                        "columns": table.columns,
                        "rounded_columns": [table.released_name(c) for c in table.counts],
                        "recomputed_columns": list(table.derived),
                        "sha256": sha256,
                    }
                )
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        staged.chmod(0o755)
        _replace_folder(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return manifest


def read_release(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """A release's manifest and its tables as rows of strings, checked against the manifest."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} does not exist: run `sprx release` first")
    manifest = json.loads(manifest_path.read_text())
    tables = {}
    for entry in manifest["files"]:
        path = folder / entry["file"]
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise ReleaseError(f"{path} differs from its manifest entry: write the release again")
        with open(path, newline="", encoding="utf-8") as handle:
            tables[path.stem] = list(csv.DictReader(handle))
    return manifest, tables
