"""A generated extract through the real pipeline: plausible rates, and the planted signal found.

The generator multiplies consultation and A&E rates by 1.5 in the year before a referral and
1.2 in the year after, so referred patients' post/pre rate ratio should be near 0.8 while
their matched controls' stays near 1.0.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import duckdb
import numpy as np
import pytest

from conftest import run_pipeline
from release_checks import assert_disclosure_safe, read_csv
from sprx_pipeline.config import PROJECT_ROOT
from sprx_pipeline.release import write_release
from sprx_pipeline.report import write_report
from sprx_pipeline.synthetic import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    generate(root / "landing", patients=20_000, practices=12, seed=7)
    report = run_pipeline(root / "landing", root / "warehouse" / "sprx.duckdb")
    work = duckdb.connect(str(root / "warehouse" / "sprx.work.duckdb"), read_only=True)
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
        work, "select practice_id, patient_id, consultation_date as event_date "
              "from raw.consultations")
    ae = _rate_per_person_year(
        work, "select practice_id, patient_id, attendance_date as event_date "
              "from raw.hospital_attendances where setting = 'ae'")
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
    declines = work.execute("select count(*) filter (where category = 'declined') / count(*) "
                            "from marts.sp_referrals where category in ('referral', 'declined')"
                            ).fetchone()[0]
    assert 0.15 <= declines <= 0.25


def test_linkage_recovers_the_planted_change_and_controls_stay_flat(generated):
    _, work = generated
    rates = {(cohort, window): rate for cohort, window, rate in work.execute(
        "select cohort, \"window\", rate_per_1000_py from marts.sp_outcome_summary "
        "where measure = 'consultations'").fetchall()}
    case_ratio = rates["referred", "post"] / rates["referred", "pre"]
    control_ratio = rates["control", "post"] / rates["control", "pre"]
    assert 0.72 <= case_ratio <= 0.88
    assert 0.92 <= control_ratio <= 1.08


def test_most_cases_find_five_controls(generated):
    _, work = generated
    shares = dict(work.execute("""
        select coalesce(n, 0) as controls, count(*) / sum(count(*)) over () as share
        from marts.sp_patient_outcomes o
        left join (select practice_id, case_patient_id, count(*) as n
                   from marts.sp_matched_controls group by all) c
          on c.practice_id = o.practice_id and c.case_patient_id = o.patient_id
        group by 1""").fetchall())
    assert shares.get(5, 0) >= 0.8


# --- effect estimates, release and report on generated data ---------------------------------

def _effects(work) -> dict[tuple[str, str], tuple[float, float, float, float]]:
    return {(measure, estimate): (ratio, log_se, lower, upper)
            for measure, estimate, ratio, log_se, lower, upper in work.execute(
                "select measure, estimate, ratio, log_se, ci_lower, ci_upper "
                "from marts.sp_effect_estimates where subgroup = 'all'").fetchall()}


def test_effect_estimates_recover_the_planted_change(generated):
    # Planted: consultations and A&E x1.5 in the year before referral and x1.2 after, so
    # referred post/pre = 0.8; controls unchanged (1.0); emergency admissions not planted.
    _, work = generated
    effects = _effects(work)
    ratio, _, lower, upper = effects["consultations", "referred_post_vs_pre"]
    assert 0.72 <= ratio <= 0.88 and lower < 0.8 < upper and upper < 1
    ratio, _, lower, upper = effects["consultations", "control_post_vs_pre"]
    assert 0.92 <= ratio <= 1.08 and lower < 1.0 < upper
    ratio, _, lower, upper = effects["consultations", "ratio_of_ratios"]
    assert 0.72 <= ratio <= 0.88 and lower < 0.8 < upper and upper < 1
    _, _, lower, upper = effects["ae_attendances", "ratio_of_ratios"]
    assert lower < 0.8 < upper
    _, _, lower, upper = effects["emergency_admissions", "ratio_of_ratios"]
    assert lower < 1.0 < upper


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
    referred, sets, pre_days, post_days, pre, post = (np.array(c) for c in zip(*people))
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
            ("ratio_of_ratios", beta[3], cov[3, 3])):
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
    for row in read_csv(generated_release / "sp_outcome_summary.csv"):
        if row["rate_per_1000_py"]:
            assert float(row["rate_per_1000_py"]) == round(
                1000 * int(row["events_rounded5"]) / int(row["person_years_rounded1"]), 2)
    for row in read_csv(generated_release / "sp_effect_estimates.csv"):
        if row["estimate"] == "referred_post_vs_pre" and row["ratio"]:
            post = int(row["referred_post_events_rounded5"]) / int(row["referred_post_person_years_rounded1"])
            pre = int(row["referred_pre_events_rounded5"]) / int(row["referred_pre_person_years_rounded1"])
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
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//|@import|url\(|<link\b|<script\s+src',
                         text)
    screenshot = PROJECT_ROOT / "data" / "test-output" / "report.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
             "--window-size=1200,5200"]
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    subprocess.run([*flags, f"--screenshot={screenshot}", html.as_uri()], capture_output=True,
                   timeout=120, check=True)
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
