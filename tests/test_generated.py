"""Generated extracts through the real pipeline: plausible rates, and a known causal effect found.

The generator's causal model (`synthetic_process`) refers patients when their recent use is
high, and high use falls by itself, so referred patients' use falls after referral whether
or not referral does anything. Two extracts of the same seed: one where referral has no
effect (`effect` 1.0) and one where it multiplies the three outcomes' rates by 0.8. The
design's estimate (`effect`) must not reject the null on the first and must hold 0.8 in its
interval on the second, while the before/after ratio falls on both. `make validate` measures
bias and coverage over many seeds; these two runs are its smallest case.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import duckdb
import numpy as np
import pytest
from conftest import run_pipeline
from release_checks import (
    assert_disclosure_safe,
    assert_model_statistics_come_from_released_values,
    read_csv,
)

from sprx_pipeline.config import PROJECT_ROOT
from sprx_pipeline.release import write_release
from sprx_pipeline.report import write_report
from sprx_pipeline.synthetic import CausalModel, generate

pytestmark = pytest.mark.slow


PATIENTS, PRACTICES, SEED = 40_000, 10, 7


def _built(root, effect: float):
    generate(
        root / "landing",
        patients=PATIENTS,
        practices=PRACTICES,
        seed=SEED,
        model=CausalModel(effect=effect),
    )
    report = run_pipeline(root / "landing", root / "warehouse" / "sprx.duckdb")
    return report, duckdb.connect(str(root / "warehouse" / "sprx.work.duckdb"), read_only=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """No effect: referral changes nothing."""
    report, work = _built(tmp_path_factory.mktemp("generated"), 1.0)
    yield report, work
    work.close()


@pytest.fixture(scope="module")
def generated_effect(tmp_path_factory):
    """The same seed with a true effect of 0.8 on all three outcomes."""
    report, work = _built(tmp_path_factory.mktemp("generated-effect"), 0.8)
    yield report, work
    work.close()


def _rate_per_person_year(con, events_sql: str) -> float:
    """Events on registered days in the study period per registered person-year."""
    (rate,) = con.execute(f"""
        with spans as (
            select practice_id, patient_id, greatest(span_start, date '2015-02-01') as s,
                   least(span_end, date '2020-01-31') as e
            from intermediate.int_registered_spans),
        events as ({events_sql})
        select (select count(*) from events join spans using (practice_id, patient_id)
                where event_date between s and e and event_date between '2015-02-01' and '2020-01-31')
             / (select sum(date_diff('day', s, e) + 1) / 365.25 from spans where e >= s)
    """).fetchone()
    return rate


def test_every_generated_row_is_loaded(generated):
    report, work = generated
    assert len(report.ingest.applied) == len(report.ingest.outcomes) > 1
    assert work.execute("select count(*) from audit.quarantine").fetchone() == (0,)


def test_consultation_and_ae_rates_are_those_of_uk_primary_care(generated):
    _, work = generated
    consultations = _rate_per_person_year(
        work,
        "select practice_id, patient_id, consultation_date as event_date from raw.consultations",
    )
    ae = _rate_per_person_year(
        work,
        "select practice_id, patient_id, attendance_date as event_date "
        "from raw.hospital_attendances where setting = 'ae'",
    )
    assert 5.0 <= consultations <= 6.0
    assert 0.3 <= ae <= 0.4


def test_referral_uptake_reaches_one_to_two_percent_a_year_by_2019(generated):
    report, work = generated
    (referred_2019, registered_mid_2019) = work.execute("""
        select count(distinct (practice_id, patient_id)) filter (
                   where month between '2019-01-01' and '2019-12-01'),
               (select registered_patients from marts.sp_uptake_monthly
                where month = '2019-07-01' and group_type = 'all')
        from marts.sp_uptake_monthly m
        join (select distinct practice_id, patient_id,
                     date_trunc('month', event_date) as month
              from marts.sp_referrals where category = 'referral' and while_registered) r
          using (month)
        where m.group_type = 'all'
    """).fetchone()
    assert 0.01 <= referred_2019 / registered_mid_2019 <= 0.02
    declines = work.execute(
        "select count(*) filter (where category = 'declined') / count(*) "
        "from marts.sp_referrals where category in ('referral', 'declined')"
    ).fetchone()[0]
    assert 0.15 <= declines <= 0.25


def _effects(work) -> dict[tuple[str, str], tuple[float, float, float, float]]:
    return {
        (measure, estimate): (ratio, log_se, lower, upper)
        for measure, estimate, ratio, log_se, lower, upper in work.execute(
            "select measure, estimate, ratio, log_se, ci_lower, ci_upper "
            "from marts.sp_effect_estimates where subgroup = 'all'"
        ).fetchall()
    }


def test_before_after_falls_when_referral_does_nothing(generated):
    """Regression to the mean: referred patients' use falls by itself after referral, which
    the old design (a ratio of ratios against demographic controls) took for an effect."""
    _, work = generated
    effects = _effects(work)
    ratio, _, _, upper = effects["consultations", "referred_post_vs_pre"]
    assert ratio < 0.92 and upper < 1
    ratio, _, _, upper = effects["ae_attendances", "referred_post_vs_pre"]
    assert ratio < 0.85 and upper < 1


def test_no_effect_is_not_mistaken_for_one(generated):
    _, work = generated
    effects = _effects(work)
    for measure in ("consultations", "ae_attendances", "emergency_admissions"):
        ratio, _, lower, upper = effects[measure, "effect"]
        assert lower < 1.0 < upper, (measure, ratio, lower, upper)
    ratio, _, _, _ = effects["consultations", "effect"]
    assert 0.9 <= ratio <= 1.1


def test_a_true_effect_of_0_8_is_recovered_within_its_interval(generated_effect):
    _, work = generated_effect
    effects = _effects(work)
    for measure in ("consultations", "ae_attendances"):
        ratio, _, lower, upper = effects[measure, "effect"]
        assert lower < 0.8 < upper, (measure, ratio, lower, upper)
    ratio, _, lower, upper = effects["consultations", "effect"]
    assert 0.72 <= ratio <= 0.88 and upper < 1


def test_matched_controls_share_the_cases_recent_use(generated):
    """Balance after matching: exact bands of recent use leave the matched cases and their
    controls within 0.1 standard deviations on every use covariate, from far apart before."""
    _, work = generated
    rows = {
        covariate: (before, after)
        for covariate, before, after in work.execute(
            "select covariate, smd_before, smd_after from marts.sp_covariate_balance "
            "where subgroup = 'all' and statistic = 'mean'"
        ).fetchall()
    }
    for covariate in ("consultations_recent", "consultations_pre", "ae_attendances_pre"):
        before, after = rows[covariate]
        assert before > 0.3 and abs(after) <= 0.1, (covariate, before, after)
    matched, eligible = work.execute(
        "select max(matched_cases), max(cases) from marts.sp_covariate_balance"
    ).fetchone()
    assert 0.25 <= matched / eligible <= 0.6


def test_effect_is_the_mantel_haenszel_ratio_of_the_published_rows(generated):
    """The SQL's Mantel-Haenszel estimate and robust interval, recomputed in NumPy from the
    published patient rows (cases and their controls, post windows)."""
    _, work = generated
    sets = work.execute("""
        select o.post_consultations, o.post_days, sum(c.post_consultations), sum(c.post_days)
        from marts.sp_patient_outcomes o
        join marts.sp_matched_controls c
          on c.practice_id = o.practice_id and c.case_patient_id = o.patient_id
        group by o.practice_id, o.patient_id, o.post_consultations, o.post_days""").fetchall()
    e1, t1, e0, t0 = (np.array(c, dtype=float) for c in zip(*sets, strict=True))
    a, b = e1 * t0 / (t1 + t0), e0 * t1 / (t1 + t0)
    ratio = a.sum() / b.sum()
    log_se = np.sqrt(((a - ratio * b) ** 2).sum()) / a.sum()
    found, found_se, _, _ = _effects(work)["consultations", "effect"]
    assert found == pytest.approx(ratio, abs=1e-4)
    assert found_se == pytest.approx(log_se, abs=2e-6)


def _poisson_gee(y, exposure, x, clusters):
    """Poisson GEE, log link, independence working correlation, fitted by Newton steps;
    returns the coefficients and their robust (sandwich) covariance clustered on `clusters`."""
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        mu = exposure * np.exp(x @ beta)
        bread = x.T @ (x * mu[:, None])
        step = np.linalg.solve(bread, x.T @ (y - mu))
        beta += step
        if np.abs(step).max() < 1e-12:
            break
    mu = exposure * np.exp(x @ beta)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    scores = np.zeros((cluster_index.max() + 1, x.shape[1]))
    np.add.at(scores, cluster_index, x * (y - mu)[:, None])
    inverse = np.linalg.inv(bread)
    return beta, inverse @ (scores.T @ scores) @ inverse


def test_effect_intervals_are_those_of_a_poisson_gee_clustered_on_matched_sets(generated):
    """The closed-form sums in dbt agree with a GEE fitted from patient rows in NumPy."""
    _, work = generated
    people = work.execute("""
        select 1 as referred, practice_id || '|' || patient_id as matched_set, pre_days,
               post_days, pre_consultations, post_consultations from marts.sp_patient_outcomes
        union all
        select 0, practice_id || '|' || case_patient_id, pre_days, post_days,
               pre_consultations, post_consultations from marts.sp_matched_controls""").fetchall()
    referred, sets, pre_days, post_days, pre, post = (
        np.array(c) for c in zip(*people, strict=True)
    )
    post_flag = np.r_[np.zeros(len(people)), np.ones(len(people))]
    referred2 = np.r_[referred, referred].astype(float)
    y = np.r_[pre, post].astype(float)
    days = np.r_[pre_days, post_days].astype(float)
    keep = days > 0
    # log rate = b0 + b1 post + b2 referred + b3 post x referred:
    # control post/pre = exp(b1), referred = exp(b1 + b3), ratio of ratios = exp(b3).
    x = np.column_stack([np.ones(len(y)), post_flag, referred2, post_flag * referred2])[keep]
    beta, cov = _poisson_gee(y[keep], days[keep], x, np.r_[sets, sets][keep])
    effects = _effects(work)
    referred_var = cov[1, 1] + cov[3, 3] + 2 * cov[1, 3]
    for estimate, log_ratio, variance in (
        ("control_post_vs_pre", beta[1], cov[1, 1]),
        ("referred_post_vs_pre", beta[1] + beta[3], referred_var),
        ("ratio_of_ratios", beta[3], cov[3, 3]),
    ):
        ratio, log_se, _, _ = effects["consultations", estimate]
        assert ratio == pytest.approx(np.exp(log_ratio), abs=1e-4)
        assert log_se == pytest.approx(np.sqrt(variance), abs=2e-6)


@pytest.fixture(scope="module")
def generated_release(generated, tmp_path_factory):
    report, _ = generated
    folder = tmp_path_factory.mktemp("generated-release") / "release"
    write_release(report.published, folder)
    return folder


def test_generated_release_rounds_every_count_and_recomputes_rates(generated_release):
    assert_disclosure_safe(generated_release)
    # Every standard error is recomputed from the released counts and design effect.
    assert assert_model_statistics_come_from_released_values(generated_release) >= 20
    for row in read_csv(generated_release / "sp_outcome_summary.csv"):
        if row["rate_per_1000_py"]:
            assert float(row["rate_per_1000_py"]) == round(
                1000 * int(row["events_rounded5"]) / int(row["person_years_rounded1"]), 2
            )
    for row in read_csv(generated_release / "sp_effect_estimates.csv"):
        if row["estimate"] == "referred_post_vs_pre" and row["ratio"]:
            post = int(row["referred_post_events_rounded5"]) / int(
                row["referred_post_person_years_rounded1"]
            )
            pre = int(row["referred_pre_events_rounded5"]) / int(
                row["referred_pre_person_years_rounded1"]
            )
            assert float(row["ratio"]) == round(post / pre, 4)
    measures = read_csv(generated_release / "sp_measures.csv")
    yearly = [r for r in measures if r["measure"] == "referred_yearly"]
    assert len(yearly) == 5 and all(r["ratio"] for r in yearly)


def test_report_renders_its_charts_in_headless_chromium(generated_release, tmp_path, capsys):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run `make setup` (it installs Debian's chromium)")
    html = write_report(generated_release, tmp_path / "report.html")
    text = html.read_text()
    # Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    assert not re.search(
        r'(src|href)\s*=\s*"(https?:)?//|@import|url\(|<link\b|<script\s+src', text
    )
    screenshot = PROJECT_ROOT / "data" / "test-output" / "report.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1200,5200",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    subprocess.run(
        [*flags, f"--screenshot={screenshot}", html.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    rendered, total = map(int, re.search(r'data-charts-rendered="(\d+)/(\d+)"', dom).groups())
    # At least: a forest plot, 3 before/after panels, monthly columns, 8 yearly group charts,
    # declines, matching and prevalence bars (16; a second forest plot when the homeless
    # subgroup has any released estimate), every one laid out with visible marks.
    charts = text.count('<svg class="chart"')
    assert charts >= 16
    assert (rendered, total) == (charts, charts)
    assert dom.count('data-rendered="yes"') == charts
    assert screenshot.stat().st_size > 50_000
    with capsys.disabled():
        print(f"\nreport screenshot for review: {screenshot}")
