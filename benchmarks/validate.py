"""`make validate`: does the headline estimate recover a known causal effect?

For each true effect (default 1.0, no effect, and 0.8) and each seed, generate an extract with
that effect (`synthetic_process.CausalModel`), ingest it into a fresh work warehouse, build
the effect estimate with dbt, and record for consultations, A&E attendances and emergency
admissions:

- **new design** (`sp_effect_estimates`, row `effect`): the target-trial matched design of
  docs/methods.md, decision 5, with the Mantel-Haenszel comparison of post-window rates;
- **DiD on the matched sets** (from the `effect` row's inputs): the same cases and controls,
  but differencing the matched pre-periods (Daw & Hatfield 2018 warn that this brings the
  regression to the mean back); a point estimate only;
- **descriptive DiD** (row `ratio_of_ratios`): every referred patient against the new
  controls, pre-periods differenced, as the descriptive rows report it;
- **old design** (version 1 of the methods, recomputed here from the warehouse's tables):
  controls matched on practice, sex, age band and IMD only, "never referred before
  index + 365 days", and the ratio of ratios with its GEE interval.

Over the seeds it reports, per design, measure and true effect: the bias as the geometric
mean of estimate / truth, the coverage of the 95% intervals, the mean interval width (upper
over lower), the median share of cases matched and the largest |SMD| after matching.
Results go to benchmarks/validation.json and the table in docs/validation.md. Not part of
`make test`: 50 extracts take about half an hour on two cores.

    python benchmarks/validate.py --seeds 25 --effects 1.0 0.8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from sprx_pipeline import build as dbt_build
from sprx_pipeline import pipeline
from sprx_pipeline.config import DBT_PROJECT_DIR, DEFAULT_CODELIST_DIR, PROJECT_ROOT, WarehousePaths
from sprx_pipeline.synthetic import CausalModel, generate

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache" / "validation"
RESULTS = HERE / "validation.json"
DOC = PROJECT_ROOT / "docs" / "validation.md"
MEASURES = ("consultations", "ae_attendances", "emergency_admissions")
Z = 1.959963985
SELECT = ["+sp_effect_estimates", "+sp_covariate_balance", "+sp_patient_outcomes"]
AGE_BAND = (
    "case when {a} < 18 then 0 when {a} < 30 then 1 when {a} < 40 then 2 "
    "when {a} < 50 then 3 when {a} < 60 then 4 when {a} < 70 then 5 "
    "when {a} < 80 then 6 else 7 end"
)


def _say(message: str) -> None:
    print(message, flush=True)


def _draw_controls():
    """The greedy draw of the dbt project's Python model, so both designs draw alike."""
    path = DBT_PROJECT_DIR / "models" / "intermediate" / "matching" / "int_matched_controls.py"
    spec = importlib.util.spec_from_file_location("int_matched_controls", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.draw_controls


# --- the old design (methods version 1), from the warehouse's intermediate tables -----------
def _old_design_sets(con: duckdb.DuckDBPyConnection, seed: int = 42) -> list[tuple]:
    """Version 1 controls: exact on practice, sex, age band and IMD; registered through
    [t - 365, t]; no referral before t + 365 (information from after t); seeded greedy draw."""
    candidates = con.execute(f"""
        with cases as (
            select i.practice_id, i.patient_id, i.index_date, a.sex,
                   coalesce(a.imd_quintile, -1) as imd, a.year_of_birth,
                   md5('{seed}|' || i.practice_id || '|' || i.patient_id) as case_order
            from intermediate.int_index_dates i
            join intermediate.int_patient_attributes a using (practice_id, patient_id)),
        referred as (
            select practice_id, patient_id, min(event_date) as first_referral
            from intermediate.int_sp_events where category = 'referral' group by all)
        select c.practice_id, c.patient_id, c.index_date, a.patient_id as control
        from cases c
        join intermediate.int_patient_attributes a
          on a.practice_id = c.practice_id and a.sex = c.sex
         and coalesce(a.imd_quintile, -1) = c.imd and a.patient_id <> c.patient_id
        join intermediate.int_registered_spans s
          on s.practice_id = a.practice_id and s.patient_id = a.patient_id
         and s.span_start <= c.index_date - 365 and s.span_end >= c.index_date
        left join referred r on r.practice_id = a.practice_id and r.patient_id = a.patient_id
        where {AGE_BAND.format(a="year(c.index_date) - a.year_of_birth")}
              = {AGE_BAND.format(a="year(c.index_date) - c.year_of_birth")}
          and (r.first_referral is null or r.first_referral >= c.index_date + 365)
        order by c.practice_id, c.case_order, c.patient_id,
                 md5('{seed}|' || c.practice_id || '|' || c.patient_id || '|' || a.patient_id),
                 a.patient_id""").fetchall()
    return _draw_controls()(candidates, 5)


def _old_design_windows(
    con: duckdb.DuckDBPyConnection, drawn: list[tuple], measure: str
) -> dict[tuple[str, str], list[float]]:
    """Per matched set: [case pre events, pre days, post events, post days, the same for
    its controls], with the controls' windows measured as version 1 did (no censoring at a
    control's own referral)."""
    con.execute(
        "create or replace temp table old_controls (practice_id varchar, "
        "case_id varchar, index_date date, control_id varchar, n integer)"
    )
    con.executemany("insert into old_controls values (?, ?, ?, ?, ?)", drawn)
    sets: dict[tuple[str, str], list[float]] = {}
    for practice, case, pre_e, pre_d, post_e, post_d in con.execute(f"""
            select practice_id, patient_id, pre_{measure}, pre_days, post_{measure}, post_days
            from marts.sp_patient_outcomes""").fetchall():
        sets[(practice, case)] = [pre_e, pre_d, post_e, post_d, 0.0, 0.0, 0.0, 0.0]
    rows = con.execute(f"""
        with windows as (
            select o.*, least(s.span_end, o.index_date + 365) as follow_up_end
            from old_controls o
            join intermediate.int_registered_spans s
              on s.practice_id = o.practice_id and s.patient_id = o.control_id
             and o.index_date between s.span_start and s.span_end)
        select w.practice_id, w.case_id, 365 as pre_days,
               date_diff('day', w.index_date, w.follow_up_end) as post_days,
               count(e.record_id) filter (where e.event_date < w.index_date) as pre_events,
               count(e.record_id) filter (where e.event_date > w.index_date) as post_events
        from windows w
        left join intermediate.int_outcome_events e
          on e.practice_id = w.practice_id and e.patient_id = w.control_id
         and e.measure = '{measure}' and e.event_date <> w.index_date
         and e.event_date between w.index_date - 365 and w.follow_up_end
        group by all""").fetchall()
    for practice, case, pre_d, post_d, pre_e, post_e in rows:
        totals = sets[(practice, case)]
        totals[4] += pre_e
        totals[5] += pre_d
        totals[6] += post_e
        totals[7] += post_d
    return sets


def _ratio_of_ratios(sets: dict[tuple[str, str], list[float]]) -> tuple[float, float, float]:
    """The version-1 estimate: (referred post/pre) / (controls post/pre), with the sandwich
    interval clustered on matched sets (docs/methods.md, decision 10)."""
    s = np.array(list(sets.values()), dtype=float)
    s = s[s[:, 5] > 0]  # sets with controls, as version 1 reported them
    influences = []
    for offset in (0, 4):
        pre_e, pre_d, post_e, post_d = (s[:, offset + k] for k in range(4))
        r_pre, r_post = pre_e.sum() / pre_d.sum(), post_e.sum() / post_d.sum()
        influences.append(
            (post_e - r_post * post_d) / post_e.sum() - (pre_e - r_pre * pre_d) / pre_e.sum()
        )
    ratio = (
        (s[:, 2].sum() / s[:, 3].sum())
        / (s[:, 0].sum() / s[:, 1].sum())
        / ((s[:, 6].sum() / s[:, 7].sum()) / (s[:, 4].sum() / s[:, 5].sum()))
    )
    se = math.sqrt(float(((influences[0] - influences[1]) ** 2).sum()))
    return ratio, ratio * math.exp(-Z * se), ratio * math.exp(Z * se)


# --- one replicate ------------------------------------------------------------------------
def _landing(effect: float, seed: int, patients: int, practices: int) -> Path:
    folder = CACHE / f"{patients}_{practices}_effect{effect}_seed{seed}"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        generate(
            folder,
            patients=patients,
            practices=practices,
            seed=seed,
            model=CausalModel(effect=effect),
        )
        (folder / ".complete").touch()
    return folder


def replicate(
    effect: float,
    seed: int,
    patients: int,
    practices: int,
    work_root: Path,
    dbt_vars: dict[str, Any] | None,
) -> dict[str, Any]:
    """Generate, ingest and build one extract; every design's estimate per measure."""
    landing = _landing(effect, seed, patients, practices)
    shutil.rmtree(work_root, ignore_errors=True)
    paths = WarehousePaths.at(work_root / "sprx.duckdb")
    paths.published.parent.mkdir(parents=True)
    pipeline.pull_codelists(paths, DEFAULT_CODELIST_DIR)
    pipeline.ingest_landing(paths, landing)
    dbt_build.build(paths, pipeline.active_codelist(paths), dbt_vars, select=SELECT)
    out: dict[str, Any] = {"effect": effect, "seed": seed}
    with duckdb.connect(str(paths.work)) as con:
        estimates = {
            (m, e): (r, lo, hi)
            for m, e, r, lo, hi in con.execute(
                "select measure, estimate, ratio, ci_lower, ci_upper from marts.sp_effect_estimates "
                "where subgroup = 'all'"
            ).fetchall()
        }
        matched_did = dict(
            con.execute("""
            select measure, (referred_post_events / referred_post_person_years)
                / (referred_pre_events / referred_pre_person_years)
                / ((control_post_events / control_post_person_years)
                   / (control_pre_events / control_pre_person_years))
            from marts.sp_effect_estimates where subgroup = 'all' and estimate = 'effect'
              and referred_pre_events > 0 and control_pre_events > 0
              and control_post_events > 0""").fetchall()
        )
        cases, matched = con.execute(
            "select max(cases), max(matched_cases) from marts.sp_covariate_balance "
            "where subgroup = 'all'"
        ).fetchone()
        (referred,) = con.execute("select count(*) from marts.sp_patient_outcomes").fetchone()
        (max_smd,) = con.execute(
            "select max(abs(smd_after)) from marts.sp_covariate_balance where subgroup = 'all'"
        ).fetchone()
        drawn = _old_design_sets(con)
        for measure in MEASURES:
            out[measure] = {
                "new": estimates[measure, "effect"],
                "matched_did": (matched_did.get(measure), None, None),
                "new_did": estimates[measure, "ratio_of_ratios"],
                "old": _ratio_of_ratios(_old_design_windows(con, drawn, measure)),
            }
    out.update(referred=referred, eligible=cases, matched=matched, max_abs_smd_after=max_smd)
    return out


# --- summaries ----------------------------------------------------------------------------
DESIGNS = {
    "new": "new design: matched on recent use, post-window rates (effect)",
    "matched_did": "the same matched sets, pre-periods differenced",
    "new_did": "all referred vs the new controls, pre-periods differenced (ratio_of_ratios)",
    "old": "old design: demographic controls, ratio of ratios",
}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for effect in sorted({r["effect"] for r in runs}, reverse=True):
        of_effect = [r for r in runs if r["effect"] == effect]
        for measure in MEASURES:
            for design in DESIGNS:
                found = [r[measure][design] for r in of_effect if r[measure][design][0]]
                if not found:
                    continue
                logs = [math.log(ratio / effect) for ratio, _, _ in found]
                rows.append(
                    {
                        "effect": effect,
                        "measure": measure,
                        "design": design,
                        "replicates": len(found),
                        "mean_estimate": math.exp(
                            statistics.fmean(math.log(r) for r, _, _ in found)
                        ),
                        "bias_ratio": math.exp(statistics.fmean(logs)),
                        "bias_ratio_se": math.exp(statistics.stdev(logs) / math.sqrt(len(logs)))
                        if len(logs) > 1
                        else None,
                        "coverage": _share(
                            lo is not None and lo <= effect <= hi for _, lo, hi in found
                        )
                        if any(lo for _, lo, _ in found)
                        else None,
                        "mean_interval_width": statistics.fmean(
                            hi / lo for _, lo, hi in found if lo
                        )
                        if any(lo for _, lo, _ in found)
                        else None,
                    }
                )
    return rows


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def _matched_share(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["matched"] / r["eligible"] for r in runs if r["eligible"])


def write_doc(summary: list[dict[str, Any]], runs: list[dict[str, Any]], settings: dict) -> None:
    lines = [
        "# Validation: bias and coverage of the effect estimate",
        "",
        "Written by `make validate` (`benchmarks/validate.py`) on "
        f"{settings['date']}; do not edit by hand. {settings['seeds']} seeds per true effect, "
        f"{settings['patients']:,} patients in {settings['practices']} practices each, "
        f"generated by `sprx generate --effect E` (the causal model of "
        "`src/sprx_pipeline/synthetic_process.py`). Bias is the geometric mean of "
        "estimate / truth (1 = unbiased; its standard error as a factor in brackets); "
        "coverage is the share of 95% intervals that contain the truth; width is the mean "
        "of upper / lower bound.",
        "",
        f"Median share of eligible cases matched: {_matched_share(runs):.0%}; largest |SMD| "
        f"after matching (median over runs): "
        f"{statistics.median(r['max_abs_smd_after'] for r in runs):.3f}. "
        f"Wall time: {settings['minutes']:.0f} minutes.",
        "",
        "| true effect | measure | design | runs | mean estimate | bias | coverage | width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        se = f" (×{row['bias_ratio_se']:.3f})" if row["bias_ratio_se"] else ""
        coverage = "–" if row["coverage"] is None else f"{row['coverage']:.0%}"
        width = "–" if row["mean_interval_width"] is None else f"{row['mean_interval_width']:.2f}"
        lines.append(
            f"| {row['effect']:g} | {row['measure']} | {DESIGNS[row['design']]} | "
            f"{row['replicates']} | {row['mean_estimate']:.3f} | {row['bias_ratio']:.3f}{se} | "
            f"{coverage} | {width} |"
        )
    DOC.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=25)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--effects", type=float, nargs="+", default=[1.0, 0.8])
    parser.add_argument("--patients", type=int, default=40_000)
    parser.add_argument("--practices", type=int, default=10)
    parser.add_argument(
        "--vars",
        type=json.loads,
        default=None,
        help="dbt vars for the new design (a sensitivity run: writes no doc)",
    )
    parser.add_argument("--work", type=Path, default=HERE / "cache" / "validation-work")
    args = parser.parse_args(argv)
    os.environ.setdefault("DBT_QUIET", "true")  # dbt's per-node lines, 50 builds over
    started = time.perf_counter()
    runs = []
    total = args.seeds * len(args.effects)
    for effect in args.effects:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run = replicate(effect, seed, args.patients, args.practices, args.work, args.vars)
            runs.append(run)
            _say(
                f"[{len(runs)}/{total}] effect {effect:g} seed {seed}: consultations "
                f"new {run['consultations']['new'][0]:.3f}, old {run['consultations']['old'][0]:.3f}; "
                f"matched {run['matched']}/{run['eligible']} "
                f"({time.perf_counter() - started:.0f} s)"
            )
    summary = summarise(runs)
    for row in summary:
        coverage = "-" if row["coverage"] is None else f"{row['coverage']:.0%}"
        _say(
            f"effect {row['effect']:g} {row['measure']:<21} {row['design']:<12} "
            f"bias {row['bias_ratio']:.3f} coverage {coverage}"
        )
    settings = {
        "date": date.today().isoformat(),
        "seeds": args.seeds,
        "patients": args.patients,
        "practices": args.practices,
        "effects": args.effects,
        "vars": args.vars,
        "minutes": (time.perf_counter() - started) / 60,
    }
    if args.vars is None:
        RESULTS.write_text(
            json.dumps({"settings": settings, "summary": summary, "runs": runs}, indent=2) + "\n"
        )
        write_doc(summary, runs, settings)
        _say(f"wrote {RESULTS.relative_to(PROJECT_ROOT)} and {DOC.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
