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

from release_checks import assert_disclosure_safe, read_csv
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
# DEATH 365/108 0/1, DEREG 365/80 1/1, EDGE 365/365 1/2, EXTRACT 365/166 1/1,
# LEAP 365/365 2/1, NEWREG 181/365 1/0. Pre: 6 events over 2006 days; post: 6 over 1449.
# Ratio (6/1449) / (6/2006) = 2006/1449 = 1.384403.
# Influence of each patient (each is its own matched set) on log(post/pre), with
# R_pre = 6/2006 and R_post = 6/1449 a day:
#   (post - 6 * post_days/1449)/6 - (pre - 6 * pre_days/2006)/6
# DEATH  (1 - 0.447205) - (0 - 1.091725) = 1.644520
# DEREG  (1 - 0.331263) - (1 - 1.091725) = 0.760462
# EDGE   (2 - 1.511387) - (1 - 1.091725) = 0.580338
# EXTRACT(1 - 0.687371) - (1 - 1.091725) = 0.404354
# LEAP   (1 - 1.511387) - (2 - 1.091725) = -1.419662
# NEWREG (0 - 1.511387) - (1 - 0.541376) = -1.970011   (all divided by 6)
# Sum of squares 9.679425 / 36 = 0.268873: se = 0.518530;
# 95% CI 1.384403 * exp(-+1.959964 * 0.518530) = 0.5011 .. 3.8250.
CONSULTATION_RATIO, CONSULTATION_SE = 1.3844, 0.518530
CONSULTATION_CI = (0.5011, 3.8250)


def effect(tiny, subgroup: str, measure: str, estimate: str) -> tuple:
    return tiny.query("select ratio, log_se, ci_lower, ci_upper from marts.sp_effect_estimates "
                      "where subgroup = ? and measure = ? and estimate = ?",
                      [subgroup, measure, estimate])[0]


def test_referred_consultation_ratio_and_interval_match_the_hand_working(tiny):
    ratio, log_se, lower, upper = effect(tiny, "all", "consultations", "referred_post_vs_pre")
    assert (ratio, log_se, lower, upper) == (CONSULTATION_RATIO, CONSULTATION_SE,
                                             *CONSULTATION_CI)
    # The bounds follow from the rounded se too (to the 4th decimal).
    assert lower == pytest.approx(2006 / 1449 * math.exp(-Z * 0.518530), abs=1e-4)


def test_ae_ratio_and_estimates_without_an_interval(tiny):
    # A&E: pre 1 event (EDGE's H01) over 2006 days; post 2 (DEATH's H05, DEREG's H06) over
    # 1449: (2/1449) / (1/2006) = 4012/1449 = 2.7688.
    assert effect(tiny, "all", "ae_attendances", "referred_post_vs_pre")[0] == 2.7688
    # Controls: CTRL1 alone (1 consultation before, 1 after, 365 days each): ratio 1, but one
    # matched set gives no sandwich variance, so no interval; nor for the ratio of ratios.
    assert effect(tiny, "all", "consultations", "control_post_vs_pre") == (1.0, None, None, None)
    assert effect(tiny, "all", "consultations", "ratio_of_ratios") == (1.3844, None, None, None)
    # Emergency admissions: no referred event before index, so no ratio at all.
    assert effect(tiny, "all", "emergency_admissions", "referred_post_vs_pre") == (
        None, None, None, None)


def test_homeless_subgroup_is_the_patient_found_homeless_before_index(tiny):
    # DEREG's homeless finding (2017-11-01) precedes the index (2018-01-10): 1 consultation
    # in 365 days before, 1 in 80 after: ratio 365/80 = 4.5625; no controls, one set.
    rows = tiny.query("select estimate, referred_patients, control_patients, ratio, ci_lower "
                      "from marts.sp_effect_estimates where subgroup = 'homeless' "
                      "and measure = 'consultations' order by estimate")
    assert rows == [("control_post_vs_pre", 1, 0, None, None),
                    ("ratio_of_ratios", 1, 0, None, None),
                    ("referred_post_vs_pre", 1, 0, 4.5625, None)]


def test_rates_carry_robust_intervals_and_agree_with_the_outcome_summary(tiny):
    # Referred consultations before index: 6 over 2006 days = 1092.47 per 1,000 py.
    # Residuals E - 6 * T/2006: DEATH -1.091725, DEREG, EDGE, EXTRACT -0.091725 each,
    # LEAP 0.908275, NEWREG 1 - 0.541376 = 0.458624; squares sum 2.252402 / 36 = 0.062567,
    # se 0.250133; 1092.47 * exp(-+1.959964 * 0.250133) = 669.11 .. 1783.71.
    rows = tiny.query("select events, person_days, rate_per_1000_py, log_se, ci_lower, ci_upper "
                      "from marts.sp_outcome_rates where subgroup = 'all' and cohort = "
                      "'referred' and measure = 'consultations' and \"window\" = 'pre'")
    assert rows == [(6, 2006, 1092.47, 0.250133, 669.11, 1783.71)]
    mismatched = tiny.query("""
        select * from marts.sp_outcome_rates r
        join marts.sp_outcome_summary s using (cohort, measure, "window")
        where r.subgroup = 'all' and (r.events <> s.events or r.person_days <> s.person_days
              or r.rate_per_1000_py <> s.rate_per_1000_py or r.patients <> s.patients)""")
    assert mismatched == []


def test_matching_summary_counts_cases_by_number_of_controls(tiny):
    # Six referred patients; only EDGE found a control (CTRL1).
    rows = tiny.query("select controls_matched, cases, referred_patients, share_of_cases "
                      "from marts.sp_matching_summary order by 1")
    assert rows == [(0, 5, 6, 0.8333), (1, 1, 6, 0.1667), (2, 0, 6, 0.0), (3, 0, 6, 0.0),
                    (4, 0, 6, 0.0), (5, 0, 6, 0.0)]


@pytest.mark.parametrize("measure, start, where, expected", [
    # Study years run Feb..Jan. 2015/16: everyone but NEWREG (from 2016-09) and CTRL2
    # (from 2017-01) is registered: 10, nobody referred.
    ("referred_yearly", "2015-02-01", "", (0, 10, 0.0)),
    # 2017/18: all 11 at P001 and EXTRACT; referred EDGE, NEWREG and DEREG: 3 of 12.
    ("referred_yearly", "2017-02-01", "", (3, 12, 0.25)),
    # 2018/19: EXTRACT (2019-01-15) only; DEREG's 2018-05-01 code was while unregistered.
    ("referred_yearly", "2018-02-01", "", (1, 12, 1 / 12)),
    # January 2018: DEREG, homeless since 2017-11-01, referred on the 10th; EDGE on the 1st.
    ("referred_monthly_by_homeless", "2018-01-01", "and homeless", (1, 1, 1.0)),
    ("referred_monthly_by_homeless", "2018-01-01", "and not homeless", (1, 11, 1 / 11)),
    # 2017/18 for DEREG: the finding falls inside the year, not before it, so not homeless.
    ("referred_yearly_by_homeless", "2017-02-01", "and not homeless", (3, 12, 0.25)),
    # 2018/19: DECLINE's decline (E09) against EXTRACT's referral (E20): 1 of 2 codes.
    ("declined_share_yearly", "2018-02-01", "", (1, 2, 0.5)),
    # 2017/18: four referral codes (E01, E02, E04, E07), no decline.
    ("declined_share_yearly", "2017-02-01", "", (0, 4, 0.0)),
    ("referred_yearly_by_source_system", "2019-02-01", "and source_system = 'TPP'", (0, 1, 0.0)),
    ("referred_monthly_by_age_band", "2018-01-01", "and age_band = '50-59'", (1, 5, 0.2)),
])
def test_measures_numerators_and_denominators(tiny, measure, start, where, expected):
    rows = tiny.query("select numerator, denominator, ratio from marts.sp_measures "
                      f"where measure = ? and interval_start = ? {where}", [measure, D(start)])
    assert len(rows) == 1
    numerator, denominator, ratio = rows[0]
    assert (numerator, denominator) == expected[:2]
    assert ratio == pytest.approx(expected[2])


def test_measures_have_the_opensafely_shape_and_every_interval(tiny):
    columns = [r[0] for r in tiny.query(
        "select column_name from information_schema.columns where table_schema = 'marts' "
        "and table_name = 'sp_measures' order by ordinal_position")]
    assert columns[:6] == ["measure", "interval_start", "interval_end", "ratio", "numerator",
                           "denominator"]
    assert columns[6:] == ["age_band", "sex", "ethnicity", "imd_quintile", "region",
                           "rural_urban", "source_system", "homeless"]
    intervals = tiny.query("select measure, count(*), min(interval_start), max(interval_end) "
                           "from marts.sp_measures where measure in ('referred_monthly', "
                           "'referred_yearly') group by 1 order by 1")
    assert intervals == [("referred_monthly", 60, D("2015-02-01"), D("2020-01-31")),
                         ("referred_yearly", 5, D("2015-02-01"), D("2020-01-31"))]


# --- release -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_release(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-release") / "release"
    write_release(tiny.paths.published, folder)
    return folder


def test_sdc_rules_on_single_values():
    # Counts: 7 or fewer redacted; 8..12 -> 10; 13 -> 15; 1002 -> 1000.
    assert [disclosure.apply_sdc(v) for v in (0, 1, 7, 8, 12, 13, 1002, None)] == [
        None, None, None, 10, 10, 15, 1000, None]
    # Person-years: 7 or fewer redacted, 7.4 (rounds to 7) too; others to a whole year.
    assert [disclosure.apply_person_time_sdc(v) for v in (5.49, 7.4, 7.6, 417.42, None)] == [
        None, None, 8, 417, None]


def test_tiny_release_redacts_small_counts_and_rounds_the_rest(tiny_release):
    assert_disclosure_safe(tiny_release)
    rows = read_csv(tiny_release / "sp_measures.csv")
    year = [r for r in rows if r["measure"] == "referred_yearly"
            and r["interval_start"] == "2017-02-01"]
    # numerator 3 -> redacted; denominator 12 -> 10; ratio not computable from a redaction.
    assert [(r["numerator_rounded5"], r["denominator_rounded5"], r["ratio"]) for r in year] == [
        ("", "10", "")]
    systems = {r["source_system"]: r for r in read_csv(tiny_release / "dq_source_system_summary.csv")}
    # EMIS: 66 rows received -> 65, 65 loaded -> 65, 1 quarantined -> redacted, so the
    # quarantine percentage (recomputed from rounded counts) is redacted too; 11 study
    # patients -> 10, 5 referred -> redacted.
    emis = systems["EMIS"]
    assert (emis["rows_received_rounded5"], emis["rows_loaded_rounded5"],
            emis["rows_quarantined_rounded5"], emis["quarantined_percent"],
            emis["study_patients_rounded5"], emis["referred_patients_rounded5"]) == (
        "65", "65", "", "", "10", "")
    # Six referred patients: every outcome count and estimate is redacted.
    effects = read_csv(tiny_release / "sp_effect_estimates.csv")
    assert {r["ratio"] for r in effects} == {""} and len(effects) == 18


def test_manifest_lists_files_rows_rules_and_build(tiny, tiny_release):
    manifest = json.loads((tiny_release / "manifest.json").read_text())
    (build_id,) = tiny.query("select build_id from meta.publication")[0]
    assert manifest["build_id"] == build_id
    assert manifest["codelist"] == {"name": "social-prescribing", "version": "2026-11-22.1"}
    assert manifest["data_period"] == {"start": "2015-02-01", "end": "2020-01-31",
                                       "latest_extract": "2020-01-31"}
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
    result = subprocess.run([SPRX, "release", "--warehouse", str(tiny.paths.published),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"wrote release {out}" in result.stdout
    assert "sp_measures.csv" in result.stdout
    # Again over the earlier release: replaced whole.
    again = subprocess.run([SPRX, "release", "--warehouse", str(tiny.paths.published),
                            "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    report = subprocess.run([SPRX, "report", "--release", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == f"wrote report {tmp_path / 'release-report.html'}"
    missing = subprocess.run([SPRX, "report", "--release", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=120)
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
    marts = {r[0] for r in tiny.query(
        "select table_name from duckdb_tables() where schema_name = 'marts'")}
    assert {p.stem for p in link.iterdir()} == marts
    with duckdb.connect() as con:
        for table in ("sp_measures", "sp_effect_estimates", "sp_patient_outcomes"):
            (exported,) = con.execute("select count(*) from read_parquet(?)",
                                      [str(link / f"{table}.parquet")]).fetchone()
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
    code, _ = run_dbt(["docs", "generate", "--project-dir", str(DBT_PROJECT_DIR),
                       "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target),
                       "--log-path", str(tmp_path / "logs")], tiny.paths)
    assert code == 0
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    published = {r[0] for r in tiny.query(
        "select table_name from duckdb_tables() where schema_name = 'marts'")}
    undocumented, seen = [], set()
    for unique_id, node in catalog["nodes"].items():
        if node["metadata"]["schema"] != "marts":
            continue
        seen.add(node["metadata"]["name"])
        described = {name.lower(): column.get("description", "").strip()
                     for name, column in manifest["nodes"][unique_id]["columns"].items()}
        assert manifest["nodes"][unique_id]["description"].strip(), unique_id
        undocumented += [f"{node['metadata']['name']}.{c}" for c in node["columns"]
                         if not described.get(c.lower())]
    assert seen == published
    assert undocumented == []
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert set(exposures) == {"sprx_report", "sprx_dashboard"}
    assert exposures["sprx_dashboard"]["type"] == "dashboard"
