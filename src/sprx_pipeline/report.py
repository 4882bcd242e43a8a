"""`sprx report`: one self-contained HTML file built only from a release folder.

The report reads nothing but the disclosure-controlled CSVs and manifest that `sprx release`
wrote (checked against the manifest's hashes), so it can leave the secure environment with
them. Charts are inline SVG from `charts.py`; there are no scripts, fonts or styles to fetch.
A few lines of inline script mark each chart that the browser laid out, which is how the
test in headless Chromium knows the charts rendered.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from . import charts, disclosure
from .charts import PALETTE, Balance, BeforeAfter, Estimate, Series
from .release import read_release
from .study import declared

Rows = list[dict[str, str]]

EFFECT = {"effect": ("Effect of referral (matched design)", "#123c5a")}
ASSUMPTION = (
    "It assumes that, among patients of the same practice, sex, age band, "
    "deprivation quintile and homeless status with the same recent use, whether a "
    "patient was referred on a given day is unrelated to how their use would have "
    "gone without referral (no unmeasured confounding)."
)
PER_100K = 100_000
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class ReportStudy:
    """The study a release declares (its manifest's `study`: measures, breakdowns, windows,
    controls per case), in the words the report uses. Passed to every part of one report so
    that all its labels and sentences speak of that one study."""

    summary: dict[str, Any]

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ReportStudy:
        """The release's study; a release written before it carried one reads as the project
        declares it now."""
        return cls(manifest.get("study") or declared().summary())

    @property
    def measures(self) -> dict[str, str]:
        """The released measures and their labels, in declared order."""
        return {name: spec["label"] for name, spec in self.summary["measures"].items()}

    @property
    def headline_measures(self) -> list[str]:
        return [name for name, spec in self.summary["measures"].items() if spec["headline"]]

    @property
    def groups(self) -> dict[str, str]:
        """The breakdown groups and their labels."""
        return dict(self.summary["breakdowns"])

    @property
    def window_days(self) -> int:
        return int(self.summary["window_days"])

    @property
    def window(self) -> str:
        return _period(self.window_days)

    @property
    def recent(self) -> str:
        return _period(int(self.summary["recent_use_days"]))

    @property
    def controls(self) -> str:
        return _number(int(self.summary["controls_per_case"]))

    def estimates(self) -> dict[str, tuple[str, str]]:
        """The descriptive before/after estimates, their labels and colours."""
        window = self.window
        return {
            "referred_post_vs_pre": (f"Referred: {window} after / {window} before", PALETTE[1]),
            "control_post_vs_pre": (f"Controls: {window} after / {window} before", PALETTE[0]),
            "ratio_of_ratios": ("Referred vs controls (ratio of ratios)", "#222222"),
        }

    def covariate_label(self, covariate: str) -> str:
        """The label of a balance covariate (sp_covariate_balance) in the study's words: a
        measure's count over the window before (`<measure>_pre`) by the measure's label, a
        breakdown group's by the group's."""
        measure = covariate.removesuffix("_pre")
        if covariate.endswith("_pre") and measure in self.measures:
            return f"{self.measures[measure]}, {self.window} before"
        if covariate == "consultations_recent":
            return f"{self.measures.get('consultations', 'consultations')}, {self.recent} before"
        if covariate in self.groups:
            return self.groups[covariate]
        return {"age_at_index": "age at index", "homeless_before": "homeless finding"}.get(
            covariate, covariate.replace("_", " ")
        )


def _period(days: int) -> str:
    """A window as prose: "year" for 365 days, else "<n> days"."""
    return "year" if days == 365 else f"{days} days"


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else f"{n:,}"


def _sdc_note() -> str:
    """The disclosure rules in a sentence, from the disclosure module's constants."""
    return (
        "Every number here was released under statistical disclosure control: counts of "
        f"{disclosure.SUPPRESSION_THRESHOLD} or fewer are hidden and others rounded to the "
        f"nearest {disclosure.ROUNDING_MULTIPLE}, and rates and ratios are recomputed from the "
        "rounded counts."
    )


RENDER_CHECK = """
<script>
/* Marks every chart the browser laid out with visible marks (used by the render test). */
(function () {
  var charts = document.querySelectorAll('svg.chart'), rendered = 0;
  charts.forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var drawn = Array.prototype.some.call(svg.querySelectorAll('.mark'), function (mark) {
      var b = mark.getBBox(); return b.width > 0 || b.height > 0; });
    if (box.width > 0 && box.height > 0 && drawn) {
      svg.setAttribute('data-rendered', 'yes'); rendered += 1; }
  });
  document.body.setAttribute('data-charts-rendered', rendered + '/' + charts.length);
})();
</script>"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: #222; margin: 0; background: #f5f6f8; line-height: 1.45; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
header { background: #123c5a; color: #fff; padding: 28px 0 22px; }
header .inner { max-width: 1120px; margin: 0 auto; padding: 0 28px; }
header h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; }
header p { margin: 0; opacity: .88; }
h2 { font-size: 19px; margin: 34px 0 4px; }
p.lead { margin: 0 0 14px; color: #555; max-width: 820px; }
section.card { background: #fff; border-radius: 8px; padding: 18px 20px;
               box-shadow: 0 1px 3px rgba(0,0,0,.08); margin-top: 14px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr));
         gap: 14px; margin-top: 18px; }
.tile { background: #fff; border-radius: 8px; padding: 14px 16px;
        box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.tile .value { font-size: 28px; font-weight: 650; color: #123c5a; }
.tile .label { color: #555; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 18px 26px; }
.note { font-size: 13px; color: #666; }
.sdc { border-left: 4px solid #E69F00; background: #fff8e8; padding: 8px 12px;
       margin-top: 14px; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e6e6; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { color: #555; font-weight: 600; }
svg.chart { max-width: 100%; height: auto; font-family: inherit; }
footer { max-width: 1120px; margin: 0 auto; padding: 0 28px 40px; font-size: 12px; color: #777; }
"""


def _num(cell: str | None) -> float | None:
    return float(cell) if cell not in (None, "") else None


def _count(cell: str | None) -> str:
    value = _num(cell)
    return f"≤{disclosure.SUPPRESSION_THRESHOLD}" if value is None else f"{value:,.0f}"


def _percent(cell: str | None) -> str:
    value = _num(cell)
    return "–" if value is None else f"{value:.2f}"


def _one(rows: Rows, **where: str) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return found[0] if found else {}


def _section(title: str, lead: str, *parts: str) -> str:
    return (
        f'<h2>{escape(title)}</h2><p class="lead">{lead}</p>'
        f'<section class="card">{"".join(parts)}</section>'
    )


def _grid(*items: str) -> str:
    return f'<div class="grid">{"".join(items)}</div>'


def _table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _estimate_text(row: dict[str, str]) -> str:
    value, lower, upper = (_num(row.get(k)) for k in ("ratio", "ci_lower", "ci_upper"))
    if value is None:
        return "not released"
    if lower is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({lower:.2f}–{upper:.2f})"


def _tiles(study: ReportStudy, tables: dict[str, Rows]) -> str:
    summary, effects = tables["sp_outcome_summary"], tables["sp_effect_estimates"]
    referred = _one(summary, cohort="referred", measure="consultations", window="pre")
    tiles = []
    for measure in study.headline_measures:
        row = _one(effects, subgroup="all", measure=measure, estimate="effect")
        value = _num(row.get("ratio"))
        change = "not released" if value is None else f"{(value - 1) * 100:+.0f}%"
        tiles.append(
            (
                change,
                f"{study.measures[measure]}: effect of referral, rate after referral "
                f"over the rate without it: {_estimate_text(row)}",
            )
        )
    matched = _one(tables["sp_covariate_balance"], subgroup="all", covariate="age_at_index")
    tiles += [
        (_count(referred.get("patients_rounded5")), "referred patients (index in study period)"),
        (
            _count(matched.get("matched_cases_rounded5")),
            f"of {_count(matched.get('cases_rounded5'))} eligible referred patients matched "
            "to controls with the same recent use",
        ),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><div class="value">{escape(v)}</div>'
            f'<div class="label">{escape(label)}</div></div>'
            for v, label in tiles
        )
        + "</div>"
    )


def _forest(
    study: ReportStudy,
    effects: Rows,
    subgroup: str,
    title: str,
    kinds: dict[str, tuple[str, str]] | None = None,
) -> str:
    kinds = kinds or study.estimates()
    estimates = []
    for measure, measure_label in study.measures.items():
        for estimate, (label, colour) in kinds.items():
            row = _one(effects, subgroup=subgroup, measure=measure, estimate=estimate)
            estimates.append(
                Estimate(
                    label,
                    _num(row.get("ratio")),
                    _num(row.get("ci_lower")),
                    _num(row.get("ci_upper")),
                    colour,
                    measure_label,
                )
            )
    if not any(e.value for e in estimates):
        return (
            f'<p class="note"><b>{escape(title)}</b>: too few patients for any estimate '
            "to be released.</p>"
        )
    return charts.forest_plot(title, estimates)


def _before_after(study: ReportStudy, rates: Rows) -> str:
    panels = []
    for measure, label in study.measures.items():
        cohorts = []
        for cohort, name, colour in (
            ("referred", "Referred", PALETTE[1]),
            ("control", "Controls", PALETTE[0]),
        ):
            windows = [
                _one(rates, subgroup="all", cohort=cohort, measure=measure, window=w)
                for w in ("pre", "post")
            ]
            pre, post = (
                (_num(w.get("rate_per_1000_py")), _num(w.get("ci_lower")), _num(w.get("ci_upper")))
                for w in windows
            )
            cohorts.append(BeforeAfter(name, colour, pre, post))
        panels.append(charts.before_after(label, cohorts, "per 1,000 person-years"))
    legend = (
        '<p class="note"><span style="color:#D55E00">●</span> referred patients '
        '&nbsp; <span style="color:#0072B2">●</span> matched controls &nbsp; bars: 95% '
        "confidence intervals</p>"
    )
    return _grid(*panels) + legend


def _series_by(
    rows: Rows,
    measure: str,
    column: str | None,
    starts: list[str],
    transform: Callable[[float], float],
) -> list[Series]:
    picked = [r for r in rows if r["measure"] == measure]
    values = sorted({r[column] for r in picked}) if column else [""]
    series = []
    for value in values:
        by_start = {
            r["interval_start"]: _num(r["ratio"])
            for r in picked
            if not column or r[column] == value
        }
        points = [None if by_start.get(s) is None else transform(by_start[s]) for s in starts]
        label = {"true": "homeless", "false": "not homeless"}.get(value, value) or "all"
        if all(p is None for p in points):
            label += f" (≤{disclosure.SUPPRESSION_THRESHOLD}, not shown)"
        series.append(Series(label, points))
    return series


def _uptake(study: ReportStudy, measures: Rows) -> str:
    monthly = sorted({r["interval_start"] for r in measures if r["measure"] == "referred_monthly"})
    yearly = sorted({r["interval_start"] for r in measures if r["measure"] == "referred_yearly"})
    year_labels = [f"{s[:4]}/{int(s[2:4]) + 1:02d}" for s in yearly]
    per_100k = lambda ratio: ratio * PER_100K  # noqa: E731
    percent = lambda ratio: ratio * 100  # noqa: E731
    (overall_series,) = _series_by(measures, "referred_monthly", None, monthly, per_100k)
    overall = charts.column_chart(
        "Referrals per 100,000 registered, by month",
        [m[:7] for m in monthly],
        overall_series.values,
        "per 100,000",
        tick_every=12,
    )
    yearly_charts = [
        charts.line_chart(
            label,
            year_labels,
            _series_by(measures, f"referred_yearly_by_{column}", column, yearly, per_100k),
            "per 100,000",
        )
        for column, label in study.groups.items()
    ]
    declines = charts.line_chart(
        "Declines as a share of SP codes, by GP system",
        year_labels,
        _series_by(
            measures, "declined_share_yearly_by_source_system", "source_system", yearly, percent
        ),
        "% of referral and declined codes",
    )
    gaps = (
        '<p class="note">A grey tick instead of a column, or a break in a line, is a '
        f"month or year whose count was {disclosure.SUPPRESSION_THRESHOLD} or fewer, redacted "
        "in the release. Study years "
        "run from February to January.</p>"
    )
    return overall + gaps + _grid(*yearly_charts, declines)


def _matching(study: ReportStudy, rows: Rows, balance: Rows) -> str:
    bars = [
        (
            f"{r['controls_matched']} controls",
            None if _num(r["share_of_cases"]) is None else _num(r["share_of_cases"]) * 100,
        )
        for r in rows
    ]
    shares = charts.bar_chart(
        "Share of referred patients by number of matched controls", bars, "%", width=520
    )
    overall = [r for r in balance if r["subgroup"] == "all"]
    love = charts.love_plot(
        "Covariate balance (all referred patients)",
        [
            Balance(_covariate_label(study, r), _num(r["smd_before"]), _num(r["smd_after"]))
            for r in overall
        ],
    )
    unmatched = _table(
        [
            "covariate",
            "eligible cases",
            "matched cases",
            "their controls",
            "unmatched cases",
            "SMD unmatched vs matched",
        ],
        [
            [
                _covariate_label(study, r),
                _value(r, "cases"),
                _value(r, "matched_cases"),
                _value(r, "controls"),
                _value(r, "unmatched_cases"),
                _value(r, "smd_unmatched"),
            ]
            for r in overall
            if r["statistic"] == "mean"
        ],
    )
    note = (
        '<p class="note">Before matching: every eligible referred patient against a '
        "random sample of the patients their trial could draw controls from. After: the "
        "matched patients against their controls, each set's controls weighted equally. "
        "An |SMD| above 0.1 (dashed line) is a quality-gate warning. The table shows how "
        "the referred patients who found no control differ from those who did: the "
        "effect estimate describes the matched ones.</p>"
    )
    return _grid(shares, love) + note + unmatched


def _covariate_label(study: ReportStudy, row: dict[str, str]) -> str:
    label = study.covariate_label(row["covariate"])
    return f"{label} = {row['level']}" if row.get("level") else label


def _value(row: dict[str, str], column: str) -> str:
    key = column if column.startswith("smd") else f"{column}_value"
    value = _num(row.get(key))
    return "–" if value is None else f"{value:.2f}"


def _data_quality(rows: Rows) -> str:
    header = [
        "GP system",
        "practices",
        "deliveries applied",
        "deliveries refused",
        "rows received",
        "rows quarantined",
        "quarantined %",
        "SP code prevalence %",
    ]
    body = [
        [
            r["source_system"],
            _count(r["practices_rounded5"]),
            _count(r["deliveries_applied_rounded5"]),
            _count(r["deliveries_refused_rounded5"]),
            _count(r["rows_received_rounded5"]),
            _count(r["rows_quarantined_rounded5"]),
            _percent(r["quarantined_percent"]),
            _percent(r["sp_code_prevalence"]),
        ]
        for r in rows
    ]
    bars = [(r["source_system"], _num(r["sp_code_prevalence"])) for r in rows]
    return _grid(
        _table(header, body),
        charts.bar_chart(
            "Patients with an SP referral code, % of registered", bars, "%", colour=PALETTE[2]
        ),
    )


def _provenance(manifest: dict[str, Any]) -> str:
    files = _table(
        ["file", "rows", "rounded columns"],
        [[f["file"], f"{f['rows']:,}", str(len(f["rounded_columns"]))] for f in manifest["files"]],
    )
    rules = "".join(f"<li>{escape(rule)}</li>" for rule in manifest["rules"]["applied"])
    return (
        f'<ul>{rules}</ul>{files}<p class="note">The effect: Mantel-Haenszel rate ratio '
        "of post-window rates, each referred patient against their own controls, with a "
        "robust interval clustered on matched sets. Descriptive ratios: Poisson model of "
        "events with a log person-time offset, fitted by GEE with independence working "
        "correlation and robust (sandwich) standard errors clustered on matched sets (a "
        "referred patient and their controls), so pre and post counts of the same people "
        "are paired and overdispersion is allowed for. See docs/methods.md.</p>"
    )


def render(manifest: dict[str, Any], tables: dict[str, Rows]) -> str:
    """The whole report as one HTML string, in the words of the study the release declares
    (a release written before it carried one reads as the project declares it now)."""
    study = ReportStudy.of(manifest)
    window, recent, controls = study.window, study.recent, study.controls
    period, codelist = manifest["data_period"], manifest["codelist"]
    effects = tables["sp_effect_estimates"]
    subtitle = (
        f"Data {period['start']} to {period['end']} (latest extract "
        f"{period['latest_extract']}) · codelist {codelist['name']} "
        f"{codelist['version']} · build {manifest['build_id']}"
    )
    body = [
        _tiles(study, tables),
        f'<div class="sdc">{escape(_sdc_note())}</div>',
        _section(
            "The effect of referral",
            f"The rate of each kind of contact in the {window} after referral over the rate "
            "the same patients would have had without it, estimated from controls "
            "matched at the referral date on recent use (Mantel-Haenszel, by matched "
            "set). Below 1 means referral reduced use. " + escape(ASSUMPTION),
            _forest(study, effects, "all", "All matched referred patients", EFFECT),
            _forest(
                study,
                effects,
                "homeless",
                "Referred patients with a homeless finding before referral",
                EFFECT,
            ),
        ),
        _section(
            "Before and after (descriptive)",
            f"Rate ratios of the {window} after referral to the {window} before, for referred "
            "patients and their controls, and their ratio. These describe change over "
            "time, not the effect of referral: patients are referred when their use is "
            "high, and high use falls by itself (regression to the mean), so a fall "
            "here is expected even when referral changes nothing.",
            _forest(study, effects, "all", "All referred patients"),
        ),
        _section(
            "Rates before and after referral",
            f"Events per 1,000 person-years in the {study.window_days} days before and "
            "after the index date, with 95% confidence intervals.",
            _before_after(study, tables["sp_outcome_rates"]),
        ),
        _section(
            "Who is referred",
            "Patients with a social prescribing referral while registered, per 100,000 "
            "patients registered in the month or study year.",
            _uptake(study, tables["sp_measures"]),
        ),
        _section(
            "Matching and balance",
            f"Each eligible referred patient (registered for the whole {window} before "
            "referral, not referred before) was matched, as of the referral date, to up to "
            f"{controls} controls not yet referred, of the same practice, sex, age band, "
            "deprivation quintile and homeless status, with similar consultations in the "
            f"{recent} and the rest of the {window} before and A&E attendances in the "
            f"{window} before. A control referred later leaves the comparison at its own "
            "referral.",
            _matching(study, tables["sp_matching_summary"], tables["sp_covariate_balance"]),
        ),
        _section(
            "Data quality",
            "Deliveries and rows by GP clinical system, and how often "
            "each system's practices record an SP referral code.",
            _data_quality(tables["dq_source_system_summary"]),
        ),
        _section("About these numbers", "How the release was made.", _provenance(manifest)),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Social prescribing: referrals and outcomes</title><style>{STYLE}</style>"
        '</head><body><header><div class="inner"><h1>Social prescribing: who is referred, '
        f"and what changes after</h1><p>{escape(subtitle)}</p></div></header>"
        f"<main>{''.join(body)}</main><footer>Released {escape(manifest['created_at'])} "
        f"from the warehouse published {escape(manifest['published_at'])}.</footer>"
        f"{RENDER_CHECK}</body></html>"
    )


def write_report(release_dir: Path, out: Path) -> Path:
    """Render the report of `release_dir` to `out` (written beside it, then renamed)."""
    manifest, tables = read_release(release_dir)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.writing")
    staging.write_text(render(manifest, tables), encoding="utf-8")
    os.replace(staging, out)
    return out
