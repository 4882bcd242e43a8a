"""Results on the tiny extract: effect estimates, rates with intervals, matching, measures,
the disclosure-controlled release, the report, Parquet exports and column documentation.

Per-patient counts are those of tests/test_linkage.py (EXPECTED_OUTCOMES); the working of
every expected number is in the comments.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest
from release_checks import (
    assert_disclosure_safe,
    assert_model_statistics_come_from_released_values,
    read_csv,
)

from sprx_pipeline import disclosure
from sprx_pipeline.build import run_dbt
from sprx_pipeline.config import DBT_PROJECT_DIR
from sprx_pipeline.publish import _swap_parquet_link
from sprx_pipeline.release import ReleaseError, write_release
from sprx_pipeline.report import write_report

D = date.fromisoformat
SPRX = str(Path(sys.executable).with_name("sprx"))
Z = 1.959963985

# Referred consultations (pre_days, post_days, pre, post), from EXPECTED_OUTCOMES:
# CTRL5 365/365 1/1, CTRL6 365/365 3/1, DEATH 365/108 0/1, DEREG 365/80 1/1,
# EDGE 365/365 1/2, EXTRACT 365/166 1/1, LEAP 365/365 2/1, NEWREG 181/365 1/0.
# Pre: 10 events over 2736 days; post: 8 over 2179.
# Ratio (8/2179) / (10/2736) = 21888/21790 = 1.004497.
# Influence of each patient (each is its own matched set) on log(post/pre), with
# R_pre = 10/2736 and R_post = 8/2179 a day:
#   (post - 8 * post_days/2179)/8 - (pre - 10 * pre_days/2736)/10
# CTRL5  (1 - 1.340064)/8 - (1 - 1.334064)/10 = -0.009102
# CTRL6  (1 - 1.340064)/8 - (3 - 1.334064)/10 = -0.209102
# DEATH  (1 - 0.396512)/8 - (0 - 1.334064)/10 =  0.208842
# DEREG  (1 - 0.293713)/8 - (1 - 1.334064)/10 =  0.121692
# EDGE   (2 - 1.340064)/8 - (1 - 1.334064)/10 =  0.115898
# EXTRACT(1 - 0.609454)/8 - (1 - 1.334064)/10 =  0.082225
# LEAP   (1 - 1.340064)/8 - (2 - 1.334064)/10 = -0.109102
# NEWREG (0 - 1.340064)/8 - (1 - 0.661550)/10 = -0.201353
# Sum of squares 0.174870: se = 0.418175;
# 95% CI 1.004497 * exp(-+1.959964 * 0.418175) = 0.4426 .. 2.2798.
CONSULTATION_RATIO, CONSULTATION_SE = 1.0045, 0.418175
CONSULTATION_CI = (0.4426, 2.2798)


def effect(tiny, subgroup: str, measure: str, estimate: str) -> tuple:
    return tiny.query(
        "select ratio, log_se, ci_lower, ci_upper from marts.sp_effect_estimates "
        "where subgroup = ? and measure = ? and estimate = ?",
        [subgroup, measure, estimate],
    )[0]


def test_referred_consultation_ratio_and_interval_match_the_hand_working(tiny):
    ratio, log_se, lower, upper = effect(tiny, "all", "consultations", "referred_post_vs_pre")
    assert (ratio, log_se, lower, upper) == (CONSULTATION_RATIO, CONSULTATION_SE, *CONSULTATION_CI)
    # The bounds follow from the rounded se too (to the 4th decimal).
    assert lower == pytest.approx(21888 / 21790 * math.exp(-Z * 0.418175), abs=1e-4)


def test_effect_compares_post_window_rates_within_matched_sets(tiny):
    # Two matched sets. EDGE: case 2 consultations in 365 post days; controls CTRL1 (1 in
    # 365) and CTRL5 (1 in 258, censored at its referral): E0 = 2, T0 = 623. CTRL5 as a
    # case: 1 in 365; its control CTRL2: 0 in 365. Mantel-Haenszel terms
    # a = E1 T0 / (T1 + T0), b = E0 T1 / (T1 + T0): EDGE 2 * 623 / 988 = 1.261134 and
    # 2 * 365 / 988 = 0.738866; CTRL5 1 * 365 / 730 = 0.5 and 0. RR = 1.761134 / 0.738866
    # = 2.383562. Residuals a - RR b: 1.261134 - 1.761134 = -0.5, and 0.5; se =
    # sqrt(0.5) / 1.761134 = 0.401507; 95% CI 2.3836 * exp(-+1.959964 * 0.401507) =
    # 1.0851 .. 5.2359. Its inputs are the matched sets' only: 2 cases, 3 controls.
    assert effect(tiny, "all", "consultations", "effect") == (2.3836, 0.401507, 1.0851, 5.2359)
    inputs = tiny.query(
        "select kind, referred_patients, control_patients, "
        "referred_post_events, control_post_events from "
        "marts.sp_effect_estimates where subgroup = 'all' and measure = "
        "'consultations' and estimate = 'effect'"
    )
    assert inputs == [("causal", 2, 3, 3, 2)]
    # A&E: no post-window attendance in either set (EDGE's H03 is day +366), so no ratio.
    assert effect(tiny, "all", "ae_attendances", "effect")[0] is None


def test_ae_ratio_and_estimates_of_the_controls(tiny):
    # A&E: pre 1 event (EDGE's H01) over 2736 days; post 2 (DEATH's H05, DEREG's H06) over
    # 2179: (2/2179) / (1/2736) = 5472/2179 = 2.5112.
    assert effect(tiny, "all", "ae_attendances", "referred_post_vs_pre")[0] == 2.5112
    # Controls' consultations: pre 3 over 1095 days, post 2 over 988: ratio 0.738866. Set
    # influences (post - 2 T_post/988)/2 - (pre - 3 T_pre/1095)/3: EDGE's set (CTRL1, CTRL5:
    # pre 2 in 730, post 2 in 623) (2 - 1.261134)/2 - (2 - 2)/3 = 0.369433; CTRL5's (CTRL2:
    # 1 in 365, 0 in 365) (0 - 0.738866)/2 - (1 - 1)/3 = -0.369433: se 0.522457, 95% CI
    # 0.7389 * exp(-+1.959964 * 0.522457) = 0.2654 .. 2.0572.
    assert effect(tiny, "all", "consultations", "control_post_vs_pre") == (
        0.7389,
        0.522457,
        0.2654,
        2.0572,
    )
    # Ratio of ratios 1.004497 / 0.738866 = 1.3595; var = sum (u - v)^2 over the eight sets
    # (v = 0 where a case has no controls): EDGE (0.115898 - 0.369433)^2, CTRL5
    # (-0.009102 + 0.369433)^2 and the six others' u^2: se 0.596216, 95% CI 0.4226 .. 4.3740.
    assert effect(tiny, "all", "consultations", "ratio_of_ratios") == (
        1.3595,
        0.596216,
        0.4226,
        4.374,
    )
    # Emergency admissions: no referred event before index, so no ratio at all.
    assert effect(tiny, "all", "emergency_admissions", "referred_post_vs_pre") == (
        None,
        None,
        None,
        None,
    )


def test_homeless_subgroup_is_the_patient_found_homeless_before_index(tiny):
    # DEREG's homeless finding (2017-11-01) precedes the index (2018-01-10): 1 consultation
    # in 365 days before, 1 in 80 after: ratio 365/80 = 4.5625. Controls must share the
    # homeless finding, and nobody else has one: no controls, so no effect either.
    rows = tiny.query(
        "select estimate, referred_patients, control_patients, ratio, ci_lower "
        "from marts.sp_effect_estimates where subgroup = 'homeless' "
        "and measure = 'consultations' order by estimate"
    )
    assert rows == [
        ("control_post_vs_pre", 1, 0, None, None),
        ("effect", 0, 0, None, None),
        ("ratio_of_ratios", 1, 0, None, None),
        ("referred_post_vs_pre", 1, 0, 4.5625, None),
    ]


def test_rates_carry_robust_intervals_and_agree_with_the_outcome_summary(tiny):
    # Referred consultations before index: 10 over 2736 days = 1334.98 per 1,000 py.
    # Residuals E - 10 * T/2736: DEATH -1.334064; CTRL5, DEREG, EDGE, EXTRACT -0.334064
    # each; LEAP 0.665936; CTRL6 1.665936; NEWREG 1 - 0.661550 = 0.338450; squares sum
    # 5.559484 / 100 = 0.055595, se 0.235786; 1334.98 * exp(-+1.959964 * 0.235786) =
    # 840.96 .. 2119.22.
    rows = tiny.query(
        "select events, person_days, rate_per_1000_py, log_se, ci_lower, ci_upper "
        "from marts.sp_outcome_rates where subgroup = 'all' and cohort = "
        "'referred' and measure = 'consultations' and \"window\" = 'pre'"
    )
    assert rows == [(10, 2736, 1334.98, 0.235786, 840.96, 2119.22)]
    mismatched = tiny.query("""
        select * from marts.sp_outcome_rates r
        join marts.sp_outcome_summary s using (cohort, measure, "window")
        where r.subgroup = 'all' and (r.events <> s.events or r.person_days <> s.person_days
              or r.rate_per_1000_py <> s.rate_per_1000_py or r.patients <> s.patients)""")
    assert mismatched == []


def test_matching_summary_counts_cases_by_number_of_controls(tiny):
    # Eight referred patients; EDGE found two controls (CTRL1, CTRL5), CTRL5 one (CTRL2).
    rows = tiny.query(
        "select controls_matched, cases, referred_patients, share_of_cases "
        "from marts.sp_matching_summary order by 1"
    )
    assert rows == [
        (0, 6, 8, 0.75),
        (1, 1, 8, 0.125),
        (2, 1, 8, 0.125),
        (3, 0, 8, 0.0),
        (4, 0, 8, 0.0),
        (5, 0, 8, 0.0),
    ]


@pytest.mark.parametrize(
    "measure, start, where, expected",
    [
        # Study years run Feb..Jan. 2015/16: everyone but NEWREG (from 2016-09) and CTRL2
        # (from 2017-01) is registered: 12, nobody referred.
        ("referred_yearly", "2015-02-01", "", (0, 12, 0.0)),
        # 2017/18: all 13 at P001 and EXTRACT; referred EDGE, CTRL6, NEWREG and DEREG: 4 of 14.
        ("referred_yearly", "2017-02-01", "", (4, 14, 4 / 14)),
        # 2018/19: CTRL5 (2018-03-01) and EXTRACT (2019-01-15); DEREG's 2018-05-01 code was
        # while unregistered.
        ("referred_yearly", "2018-02-01", "", (2, 14, 2 / 14)),
        # January 2018: DEREG, homeless since 2017-11-01, referred on the 10th; EDGE on the 1st.
        ("referred_monthly_by_homeless", "2018-01-01", "and homeless", (1, 1, 1.0)),
        ("referred_monthly_by_homeless", "2018-01-01", "and not homeless", (1, 13, 1 / 13)),
        # 2017/18 for DEREG: the finding falls inside the year, not before it, so not homeless.
        ("referred_yearly_by_homeless", "2017-02-01", "and not homeless", (4, 14, 4 / 14)),
        # 2018/19: DECLINE's decline (E09) against CTRL5's and EXTRACT's referrals (E14, E20).
        ("declined_share_yearly", "2018-02-01", "", (1, 3, 1 / 3)),
        # 2017/18: five referral codes (E01, E02, E04, E07, E15), no decline.
        ("declined_share_yearly", "2017-02-01", "", (0, 5, 0.0)),
        (
            "referred_yearly_by_source_system",
            "2019-02-01",
            "and source_system = 'TPP'",
            (0, 1, 0.0),
        ),
        # 50-59 in 2018: EDGE, CTRL1-CTRL6 (CTRL2 registered from 2017); EDGE referred.
        ("referred_monthly_by_age_band", "2018-01-01", "and age_band = '50-59'", (1, 7, 1 / 7)),
    ],
)
def test_measures_numerators_and_denominators(tiny, measure, start, where, expected):
    rows = tiny.query(
        "select numerator, denominator, ratio from marts.sp_measures "
        f"where measure = ? and interval_start = ? {where}",
        [measure, D(start)],
    )
    assert len(rows) == 1
    numerator, denominator, ratio = rows[0]
    assert (numerator, denominator) == expected[:2]
    assert ratio == pytest.approx(expected[2])


def test_measures_have_the_opensafely_shape_and_every_interval(tiny):
    columns = [
        r[0]
        for r in tiny.query(
            "select column_name from information_schema.columns where table_schema = 'marts' "
            "and table_name = 'sp_measures' order by ordinal_position"
        )
    ]
    assert columns[:6] == [
        "measure",
        "interval_start",
        "interval_end",
        "ratio",
        "numerator",
        "denominator",
    ]
    assert columns[6:] == [
        "age_band",
        "sex",
        "ethnicity",
        "imd_quintile",
        "region",
        "rural_urban",
        "source_system",
        "homeless",
    ]
    intervals = tiny.query(
        "select measure, count(*), min(interval_start), max(interval_end) "
        "from marts.sp_measures where measure in ('referred_monthly', "
        "'referred_yearly') group by 1 order by 1"
    )
    assert intervals == [
        ("referred_monthly", 60, D("2015-02-01"), D("2020-01-31")),
        ("referred_yearly", 5, D("2015-02-01"), D("2020-01-31")),
    ]


# --- release -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_release(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-release") / "release"
    write_release(tiny.paths.published, folder)
    return folder


def test_sdc_rules_on_single_values():
    # Counts: 7 or fewer redacted; 8..12 -> 10; 13 -> 15; 1002 -> 1000.
    assert [disclosure.apply_sdc(v) for v in (0, 1, 7, 8, 12, 13, 1002, None)] == [
        None,
        None,
        None,
        10,
        10,
        15,
        1000,
        None,
    ]
    # Person-years: 7 or fewer redacted, 7.4 (rounds to 7) too; others to a whole year.
    assert [disclosure.apply_person_time_sdc(v) for v in (5.49, 7.4, 7.6, 417.42, None)] == [
        None,
        None,
        8,
        417,
        None,
    ]


def test_tiny_release_redacts_small_counts_and_rounds_the_rest(tiny_release):
    assert_disclosure_safe(tiny_release)
    rows = read_csv(tiny_release / "sp_measures.csv")
    year = [
        r for r in rows if r["measure"] == "referred_yearly" and r["interval_start"] == "2017-02-01"
    ]
    # numerator 4 -> redacted; denominator 14 -> 15; ratio not computable from a redaction.
    assert [(r["numerator_rounded5"], r["denominator_rounded5"], r["ratio"]) for r in year] == [
        ("", "15", "")
    ]
    systems = {
        r["source_system"]: r for r in read_csv(tiny_release / "dq_source_system_summary.csv")
    }
    # EMIS: 84 rows received -> 85, 83 loaded -> 85, 1 quarantined -> redacted, so the
    # quarantine percentage (recomputed from rounded counts) is redacted too; 13 study
    # patients -> 15, 7 referred -> redacted.
    emis = systems["EMIS"]
    assert (
        emis["rows_received_rounded5"],
        emis["rows_loaded_rounded5"],
        emis["rows_quarantined_rounded5"],
        emis["quarantined_percent"],
        emis["study_patients_rounded5"],
        emis["referred_patients_rounded5"],
    ) == ("85", "85", "", "", "15", "")
    # Eight referred patients: every outcome count and estimate is redacted.
    effects = read_csv(tiny_release / "sp_effect_estimates.csv")
    assert {r["ratio"] for r in effects} == {""} and len(effects) == 24


def test_no_released_statistic_gives_back_a_count_that_rounding_hid(tiny_release):
    """Every count behind a model statistic of the tiny extract is 7 or fewer, so every
    standard error, design effect and interval is empty; the effect ratios too."""
    assert assert_model_statistics_come_from_released_values(tiny_release) == 0
    for row in read_csv(tiny_release / "sp_effect_estimates.csv"):
        assert (row["ratio"], row["log_se"], row["design_effect"]) == ("", "", "")


def test_manifest_lists_files_rows_rules_and_build(tiny, tiny_release):
    manifest = json.loads((tiny_release / "manifest.json").read_text())
    (build_id,) = tiny.query("select build_id from meta.publication")[0]
    assert manifest["build_id"] == build_id
    assert manifest["codelist"] == {"name": "social-prescribing", "version": "2026-11-22.1"}
    assert manifest["data_period"] == {
        "start": "2015-02-01",
        "end": "2020-01-31",
        "latest_extract": "2020-01-31",
    }
    assert manifest["rules"]["suppression_threshold"] == 7
    assert manifest["rules"]["rounding_multiple"] == 5
    for entry in manifest["files"]:
        assert len(read_csv(tiny_release / entry["file"])) == entry["rows"]
    assert {e["file"]: e["rows"] for e in manifest["files"]}["sp_matching_summary.csv"] == 6


def test_release_refuses_a_folder_that_is_not_a_release(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="is not a release"):
        write_release(tiny.paths.published, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_release_and_report_print_where_they_wrote(tiny, tmp_path):
    out = tmp_path / "release"
    result = subprocess.run(
        [SPRX, "release", "--warehouse", str(tiny.paths.published), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote release {out}" in result.stdout
    assert "sp_measures.csv" in result.stdout
    # Again over the earlier release: replaced whole.
    again = subprocess.run(
        [SPRX, "release", "--warehouse", str(tiny.paths.published), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    report = subprocess.run(
        [SPRX, "report", "--release", str(out)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == f"wrote report {tmp_path / 'release-report.html'}"
    missing = subprocess.run(
        [SPRX, "report", "--release", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("sprx: error: ")
    assert "Traceback" not in missing.stderr


def test_report_of_a_fully_redacted_release_says_so(tiny_release, tmp_path):
    html = write_report(tiny_release, tmp_path / "report.html").read_text()
    assert "too few patients for any estimate to be released" in html
    assert "codelist social-prescribing 2026-11-22.1" in html
    assert "Data 2015-02-01 to 2020-01-31" in html


def test_report_refuses_a_release_whose_files_changed(tiny_release, tmp_path):
    copy = tmp_path / "release"
    copy.mkdir()
    for path in tiny_release.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "sp_matching_summary.csv").write_text("controls_matched,cases_rounded5\n0,3\n")
    with pytest.raises(ReleaseError, match="differs from its manifest"):
        write_report(copy, tmp_path / "report.html")


# --- dashboard-ready outputs ---------------------------------------------------------------


def test_parquet_exports_hold_every_mart(tiny):
    link = tiny.paths.parquet
    assert link.is_symlink()
    marts = {
        r[0]
        for r in tiny.query("select table_name from duckdb_tables() where schema_name = 'marts'")
    }
    assert {p.stem for p in link.iterdir()} == marts
    with duckdb.connect() as con:
        for table in ("sp_measures", "sp_effect_estimates", "sp_patient_outcomes"):
            (exported,) = con.execute(
                "select count(*) from read_parquet(?)", [str(link / f"{table}.parquet")]
            ).fetchone()
            assert exported == tiny.query(f"select count(*) from marts.{table}")[0][0]


def test_parquet_link_swaps_atomically_and_keeps_the_previous_folder(tmp_path):
    link = tmp_path / "sprx.parquet"
    folders = []
    for n in range(3):
        folder = tmp_path / f".sprx.parquet.2026010{n}T000000-abc{n}"
        folder.mkdir()
        (folder / "t.parquet").write_text(str(n))
        _swap_parquet_link(link, folder)
        folders.append(folder)
        assert (link / "t.parquet").read_text() == str(n)
    # The oldest folder is gone, the previous one stays for readers still in it.
    assert [f.exists() for f in folders] == [False, True, True]
    assert os.readlink(link) == folders[2].name  # relative, so the folder can move
    # A copied warehouse folder holds a real folder of Parquet files: set aside, then swapped.
    os.unlink(link)
    shutil.copytree(folders[2], link)
    newest = tmp_path / ".sprx.parquet.20260109T000000-abc9"
    newest.mkdir()
    (newest / "t.parquet").write_text("9")
    _swap_parquet_link(link, newest)
    assert (link / "t.parquet").read_text() == "9" and link.is_symlink()
    # Anything else in its place is refused, and left alone.
    os.unlink(link)
    link.mkdir()
    (link / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not the Parquet export"):
        _swap_parquet_link(link, newest)
    assert (link / "notes.txt").read_text() == "mine"


def test_dbt_docs_describe_every_column_of_every_published_mart(tiny, tmp_path):
    target = tmp_path / "target"
    code, _ = run_dbt(
        [
            "docs",
            "generate",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(target),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        tiny.paths,
    )
    assert code == 0
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    published = {
        r[0]
        for r in tiny.query("select table_name from duckdb_tables() where schema_name = 'marts'")
    }
    undocumented, seen = [], set()
    for unique_id, node in catalog["nodes"].items():
        if node["metadata"]["schema"] != "marts":
            continue
        seen.add(node["metadata"]["name"])
        described = {
            name.lower(): column.get("description", "").strip()
            for name, column in manifest["nodes"][unique_id]["columns"].items()
        }
        assert manifest["nodes"][unique_id]["description"].strip(), unique_id
        undocumented += [
            f"{node['metadata']['name']}.{c}"
            for c in node["columns"]
            if not described.get(c.lower())
        ]
    assert seen == published
    assert undocumented == []
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert set(exposures) == {"sprx_report", "sprx_dashboard"}
    assert exposures["sprx_dashboard"]["type"] == "dashboard"
