"""The study, as declared once in the dbt project's vars (`dbt_project/dbt_project.yml`).

The models read the same vars through `macros/study.sql`; this module is Python's reading of
them, so the suites, the release's column classes, the report's labels and text and the
extract contract's consultation modes follow a change of the declaration instead of
restating it. A build may override vars (`sprx run --vars`); `Study.of(build_vars)` reads the
declaration as a build saw it.

>>> study = declared()
>>> study.measure_names[:2], study.age_band_labels[-1], study.window_days
(('consultations', 'ae_attendances'), '80+', 365)
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .config import DBT_PROJECT_DIR

WINDOWS = ("pre", "post")
COLUMN_CLASSES = ("label", "count", "person_time", "rate")


@dataclass(frozen=True)
class Measure:
    """One outcome measure: events of a source table that pass a filter."""

    name: str
    label: str
    source: str
    filter: str | None
    by_mode: bool
    headline: bool
    plausible_rate_per_1000_py: tuple[float, float]


@dataclass(frozen=True)
class Breakdown:
    """One breakdown group of the uptake measures."""

    name: str
    label: str
    monthly: bool


@dataclass(frozen=True)
class Study:
    """The declared study: what is measured, over which windows, broken down how."""

    vars: dict[str, Any]

    @classmethod
    def of(cls, build_vars: dict[str, Any] | None = None) -> Study:
        """The declaration with a build's own vars laid over the project's."""
        return cls({**project_vars(), **(build_vars or {})})

    @property
    def window_days(self) -> int:
        return int(self.vars["window_days"])

    @property
    def controls_per_case(self) -> int:
        return int(self.vars["controls_per_case"])

    @property
    def recent_use_days(self) -> int:
        return int(self.vars["recent_use_days"])

    @property
    def measures(self) -> tuple[Measure, ...]:
        return tuple(
            Measure(
                name=name,
                label=spec["label"],
                source=spec["source"],
                filter=spec.get("filter"),
                by_mode=bool(spec.get("by_mode", False)),
                headline=bool(spec.get("headline", False)),
                plausible_rate_per_1000_py=tuple(spec["plausible_rate_per_1000_py"]),
            )
            for name, spec in self.vars["outcome_measures"].items()
        )

    @property
    def measure_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.measures)

    @property
    def headline_measures(self) -> tuple[str, ...]:
        """The measures the report and the run summary lead with; the first is the primary."""
        return tuple(m.name for m in self.measures if m.headline)

    @property
    def primary_measure(self) -> str:
        """The first headline measure: the one whose rates the run summary shows."""
        if not self.headline_measures:
            raise ValueError(
                "no outcome measure is declared `headline: true` in dbt_project.yml's "
                "outcome_measures: mark the one the summary and report should lead with"
            )
        return self.headline_measures[0]

    @property
    def consultation_modes(self) -> tuple[str, ...]:
        return tuple(self.vars["consultation_modes"])

    @property
    def age_band_labels(self) -> tuple[str, ...]:
        """The labels macros/study.sql gives the age bands: "18-29", ..., "80+"."""
        edges = [int(e) for e in self.vars["age_bands"]]
        bounded = [f"{low}-{high - 1}" for low, high in zip(edges, edges[1:], strict=False)]
        return (*bounded, f"{edges[-1]}+")

    @property
    def breakdowns(self) -> tuple[Breakdown, ...]:
        return tuple(
            Breakdown(name, spec["label"], bool(spec.get("monthly", False)))
            for name, spec in self.vars["breakdowns"].items()
        )

    @property
    def monthly_breakdowns(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.breakdowns if b.monthly)

    def outcome_count_columns(self) -> list[str]:
        """The per-person event counts of sp_patient_outcomes: <window>_<measure>."""
        return [f"{w}_{m}" for w in WINDOWS for m in self.measure_names]

    def column_class(self, column: str) -> str:
        """The declared class of a released column; a column with none, or two, is an error
        (a release must not guess how to treat a number)."""
        classes = {
            name
            for name, patterns in self.vars["released_columns"].items()
            if any(fnmatchcase(column, p) for p in patterns)
        }
        if column in {b.name for b in self.breakdowns}:
            classes.add("label")
        if len(classes) != 1:
            raise ValueError(
                f"released column {column!r} has {len(classes)} classes {sorted(classes)} in "
                "dbt_project.yml's released_columns: give it exactly one"
            )
        (found,) = classes
        if found not in COLUMN_CLASSES:
            raise ValueError(f"{found!r} is not a column class: use one of {COLUMN_CLASSES}")
        return found

    def summary(self) -> dict[str, Any]:
        """What a release carries of the declaration, for the report (which reads nothing
        but the release)."""
        return {
            "window_days": self.window_days,
            "controls_per_case": self.controls_per_case,
            "recent_use_days": self.recent_use_days,
            "measures": {m.name: {"label": m.label, "headline": m.headline} for m in self.measures},
            "breakdowns": {b.name: b.label for b in self.breakdowns},
        }


def project_vars(project_dir: Path = DBT_PROJECT_DIR) -> dict[str, Any]:
    """The vars of dbt_project.yml, as dbt reads them when a build passes none."""
    return dict(_read_vars(project_dir / "dbt_project.yml"))


@cache
def _read_vars(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["vars"]


def declared() -> Study:
    """The study as the project declares it (no build's overrides)."""
    return Study.of()
