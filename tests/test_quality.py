"""The quality gate: Great Expectations checkpoints after loading and before publishing.

Counts below are worked out from tests/tiny_extract.py: 14 patients (NEWREG without a
rurality, EXTRACT of Unknown ethnicity), 33 consultations of which C31 (after DEATH's death)
is quarantined, 8 referred patients and 3 matched controls.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import run_pipeline
from deliveries import write_delivery
from tiny_extract import write_tiny_extract

from sprx_pipeline import pipeline, quality
from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.suites import (
    COMPLETENESS,
    CONFORMANCE,
    EXPECTATIONS_DIR,
    PLAUSIBILITY,
    all_suites,
    mart_suites,
    raw_suites,
    suite_json,
)

SPRX = str(Path(sys.executable).with_name("sprx"))
MARTS = (
    "sp_referrals",
    "sp_patient_outcomes",
    "sp_matched_controls",
    "sp_outcome_summary",
    "sp_uptake_monthly",
    "sp_covariate_balance",
    "dq_practice_feedback",
)


def test_the_suites_kept_in_expectations_are_those_the_code_defines():
    kept = sorted(p.name for p in EXPECTATIONS_DIR.glob("*.json"))
    assert kept == sorted(f"{name}.json" for name in all_suites())
    for name, expectations in all_suites().items():
        assert (EXPECTATIONS_DIR / f"{name}.json").read_text() == suite_json(name, expectations), (
            f"{name}: regenerate with `python -m sprx_pipeline.suites`"
        )


def test_one_suite_per_raw_table_and_per_mart_each_check_labelled():
    assert sorted(raw_suites()) == sorted(
        f"raw.{t}"
        for t in (
            "practices",
            "patients",
            "registrations",
            "consultations",
            "clinical_events",
            "hospital_attendances",
        )
    )
    assert sorted(mart_suites()) == sorted(f"marts.{m}" for m in MARTS)
    categories = set()
    for name, expectations in all_suites().items():
        checks = [e.meta["check"] for e in expectations]
        assert len(checks) == len(set(checks)), f"{name}: check names repeat"
        for expectation in expectations:
            meta = expectation.meta
            categories.add(meta["kahn_category"])
            assert meta["level"] in ("error", "warn")
            assert (
                expectation.severity.value
                == {"error": "critical", "warn": "warning"}[meta["level"]]
            )
            if meta["threshold_pct"]:  # a row check that tolerates some failing rows
                assert expectation.mostly == pytest.approx(1 - meta["threshold_pct"] / 100)
    assert categories == {CONFORMANCE, COMPLETENESS, PLAUSIBILITY}


def test_the_tiny_extract_passes_both_stages_and_every_check_is_recorded(tiny):
    rows = {
        (stage, suite, check): (status, checked, failing)
        for stage, suite, check, status, checked, failing in tiny.query(
            "select stage, suite, check_name, status, rows_checked, rows_failing "
            "from audit.quality_checks"
        )
    }
    # One warning: after matching, the two matched cases (both 57 at index) are older than
    # their controls: EDGE's CTRL1 (55) and CTRL5 (56), weighted 1/2 each, and CTRL5's CTRL2
    # (56): weighted mean 55.75, variance (0.5 * 0.75^2 + 0.5 * 0.25^2 + 0.25^2) / 2 = 0.1875,
    # SMD 1.25 / sqrt(0.1875 / 2) = 4.08 on age, the one of the 20 covariate rows above 0.1.
    assert {key: value for key, value in rows.items() if value[0] != "pass"} == {
        ("marts", "marts.sp_covariate_balance", "balanced_after_matching"): ("warn", 20, 1)
    }
    assert tiny.query(
        "select smd_after from marts.sp_covariate_balance where subgroup = 'all' "
        "and covariate = 'age_at_index'"
    ) == [(4.0825,)]
    assert {stage for stage, _, _ in rows} == {"loaded", "marts"}
    assert {suite for _, suite, _ in rows} == set(all_suites()) | {"audit.delivery_tables"}
    # NEWREG has no rurality and EXTRACT an Unknown ethnicity: 1 of 14 each, under 10% and 25%
    assert rows["loaded", "raw.patients", "rural_urban_recorded"] == ("pass", 14, 1)
    assert rows["loaded", "raw.patients", "ethnicity_recorded"] == ("pass", 14, 1)
    # 33 consultations delivered, C31 quarantined: 32 loaded and checked
    assert rows["loaded", "raw.consultations", "consultation_id_unique"] == ("pass", 32, 0)
    assert rows["marts", "marts.sp_patient_outcomes", "pre_days_between_0_and_window_days"] == (
        "pass",
        8,
        0,
    )
    assert rows["marts", "marts.sp_matched_controls", "pre_window_fully_registered"] == (
        "pass",
        3,
        0,
    )
    # two deliveries of six tables each, every one received = loaded + quarantined
    assert rows["marts", "audit.delivery_tables", "row_accounting"] == ("pass", 12, 0)
    docs = tiny.paths.quality_dir / quality.DATA_DOCS
    assert docs.is_file()
    pages = {
        p.parent.parent.parent.relative_to(docs.parent / "validations").as_posix()
        for p in (docs.parent / "validations").rglob("*.html")
    }
    assert pages == {name.replace(".", "/") for name in all_suites()}
    assert not (tiny.paths.quality_dir / "snapshot").exists()  # no patient rows left behind


@pytest.fixture(scope="module")
def built_tiny(tmp_path_factory) -> Path:
    """The tiny extract run and published once for this module; tests take copies."""
    root = tmp_path_factory.mktemp("built")
    run_pipeline(write_tiny_extract(root / "landing"), root / "warehouse" / "sprx.duckdb")
    return root / "warehouse"


@pytest.fixture
def warehouse(built_tiny, tmp_path) -> WarehousePaths:
    folder = shutil.copytree(built_tiny, tmp_path / "warehouse")
    (folder / "sprx.duckdb").chmod(0o644)
    return WarehousePaths.at(folder / "sprx.duckdb")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_bad_row_written_past_the_loader_is_caught_and_never_published(warehouse):
    before = digest(warehouse.published)
    with duckdb.connect(str(warehouse.work)) as con:  # someone "fixes" raw by hand
        con.execute(
            "insert into raw.patients values "
            "('HAND', 'P001', 1950, 'X', 'White', 1, 'urban', null, 'by-hand')"
        )
    args = ["--warehouse", str(warehouse.published)]
    check = subprocess.run(
        [SPRX, "check", "--stage", "loaded", *args], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 2
    assert (
        "error raw.patients sex_allowed (conformance/value): 1 of 15 rows (6.67%) fail; "
        "threshold 0%; e.g. X"
    ) in check.stderr
    assert "Traceback" not in check.stderr
    refused = subprocess.run([SPRX, "publish", *args], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert "has not passed the quality gate (1 checks failed at stage loaded)" in refused.stderr
    assert digest(warehouse.published) == before

    with duckdb.connect(str(warehouse.work)) as con:
        con.execute("delete from raw.patients where patient_id = 'HAND'")
    checked = pipeline.build_warehouse(warehouse)
    assert not checked.loaded_gate.failed and not checked.gate.failed
    pipeline.publish_warehouse(warehouse)
    assert digest(warehouse.published) != before


def test_a_build_over_a_bad_loaded_row_fails_on_the_check_that_dbt_ran_beside(warehouse):
    """`sprx build` checks the loaded tables while dbt builds: the check still decides."""
    before = digest(warehouse.published)
    with duckdb.connect(str(warehouse.work)) as con:
        con.execute(
            "insert into raw.patients values "
            "('HAND', 'P001', 1950, 'X', 'White', 1, 'urban', null, 'by-hand')"
        )
    with pytest.raises(quality.QualityGateError) as failure:
        pipeline.build_warehouse(warehouse, full_rebuild=True)
    assert "quality gate (loaded) failed, nothing published" in str(failure.value)
    assert "error raw.patients sex_allowed (conformance/value): 1 of 15 rows" in str(failure.value)
    with duckdb.connect(str(warehouse.work), read_only=True) as con:
        build_id, status = con.execute(
            "select build_id, status from audit.builds order by started_at desc limit 1"
        ).fetchone()
        assert status == "failed"
        assert con.execute(
            "select status from audit.quality_checks where build_id = ? and stage = 'loaded' "
            "and check_name = 'sex_allowed'",
            [build_id],
        ).fetchall() == [("fail",)]
    with pytest.raises(quality.QualityGateError, match=f"build {build_id} failed"):
        pipeline.publish_warehouse(warehouse, build_id)
    assert digest(warehouse.published) == before
    assert not (warehouse.quality_dir / "snapshot").exists()


def test_a_failing_mart_check_blocks_publication_and_says_by_how_much(warehouse):
    before = digest(warehouse.published)
    with duckdb.connect(str(warehouse.work)) as con:
        con.execute("update marts.sp_patient_outcomes set pre_days = 400 where patient_id = 'EDGE'")
    with pytest.raises(quality.QualityGateError) as failure:
        pipeline.quality_gate(warehouse, "marts")
    message = str(failure.value)
    assert "58 checks over all practices: 56 passed, 1 warnings, 1 failed" in message
    assert (
        "error marts.sp_patient_outcomes pre_days_between_0_and_window_days "
        "(conformance/computational): 1 of 8 rows (12.50%) fail; threshold 0%; e.g. 400" in message
    )
    with pytest.raises(quality.QualityGateError, match="1 checks failed at stage marts"):
        pipeline.publish_warehouse(warehouse)
    assert digest(warehouse.published) == before
    with duckdb.connect(str(warehouse.work), read_only=True) as con:
        assert con.execute(
            "select status, rows_failing, pct_failing from audit.quality_checks "
            "where check_name = 'pre_days_between_0_and_window_days' "
            "order by checked_at desc limit 1"
        ).fetchone() == ("fail", 1, pytest.approx(100 / 8))


def test_raw_tables_above_the_sample_size_are_checked_on_a_repeatable_sample(
    warehouse, monkeypatch
):
    monkeypatch.setattr(quality, "RAW_SAMPLE_ROWS", 10)
    checked = []
    for _ in range(2):
        report = pipeline.quality_gate(warehouse, "loaded")
        unique = next(c for c in report.checks if c.name == "consultation_id_unique")
        checked.append(unique.rows_checked)
        assert unique.table_rows == 32 and 0 < unique.rows_checked < 32  # ~10: Bernoulli
        assert unique.detail.endswith(f"(sampled {unique.rows_checked} of 32 rows)")
        patients = next(c for c in report.checks if c.name == "sex_allowed")
        assert patients.table_rows == 14 and patients.rows_checked < 14
    assert checked[0] == checked[1]  # the same seed, the same sample


def test_a_build_checks_only_the_practices_it_rebuilt(warehouse, tmp_path):
    landing = tmp_path / "landing"
    write_delivery(
        landing,
        "2020-02-29_tpp_002",
        "2020-02-29",
        "TPP",
        ["P002"],
        {
            "practices": [("P002", "North West")],
            "patients": [("EXTRACT", "P002", 1975, "F", "Unknown", 3, "rural", None)],
            "registrations": [("R20", "EXTRACT", "P002", "2000-01-01", None)],
        },
    )
    pipeline.ingest_landing(warehouse, landing)
    checked = pipeline.build_warehouse(warehouse)
    assert checked.loaded_gate.scope == checked.gate.scope == "the 1 practice(s) rebuilt"
    rows = {c.name: (c.rows_checked, c.table_rows) for c in checked.loaded_gate.checks}
    assert rows["sex_allowed"] == (1, 1)  # P002's one patient, not P001's thirteen
    assert rows["consultation_id_unique"] == (0, 0)  # P002 now sends no consultations
    outcomes = {
        c.name: c.rows_checked
        for c in checked.gate.checks
        if c.suite == "marts.sp_patient_outcomes"
    }
    assert outcomes["practice_id_patient_id_unique"] == 0  # EXTRACT's referral is gone
    everything = pipeline.quality_gate(warehouse, "loaded")  # `sprx check`: every practice
    assert {c.name: c.rows_checked for c in everything.checks}["sex_allowed"] == 14


def test_a_practice_without_deaths_or_consultations_passes_its_date_checks(tmp_path):
    landing = tmp_path / "landing"
    write_delivery(
        landing,
        "2020-01-31_emis_001",
        "2020-01-31",
        "EMIS",
        ["P1"],
        {
            "practices": [("P1", "London")],
            "patients": [("A", "P1", 1980, "F", "White", 2, "urban", None)],
            "registrations": [("R1", "A", "P1", "2010-01-01", None)],
        },
    )
    report = run_pipeline(landing, tmp_path / "wh" / "sprx.duckdb")
    vacuous = {
        c.name: c.detail for c in report.loaded_gate.checks if c.detail == "no values to check"
    }
    assert set(vacuous) >= {
        "date_of_death_not_before_earliest_date",
        "consultation_date_not_after_latest_extracted_at",
    }
    assert not report.gate.failed


def funnel_extract(landing: Path) -> None:
    """Two EMIS practices of 100 patients: 50 referred at P1, none at P2; and 20 A&E rows
    at P2 for patients it never sent (quarantined as unknown_patient)."""
    tables = {}
    for practice, referred in (("P1", 50), ("P2", 0)):
        patients = [
            (f"{practice}-{i}", practice, 1970, "F", "White", 3, "urban", None) for i in range(100)
        ]
        tables[practice] = {
            "practices": [(practice, "Midlands")],
            "patients": patients,
            "registrations": [(f"R{p[0]}", p[0], practice, "2010-01-01", None) for p in patients],
            "clinical_events": [
                (f"E{p[0]}", p[0], practice, "2018-03-01", "871731000000106", None, None)
                for p in patients[:referred]
            ],
        }
    tables["P2"]["hospital_attendances"] = [
        (f"H{i}", f"GONE-{i}", "P2", "2019-01-01", "ae") for i in range(20)
    ]
    for number, practice in enumerate(("P1", "P2"), start=1):
        write_delivery(
            landing,
            f"2020-01-31_emis_00{number}",
            "2020-01-31",
            "EMIS",
            [practice],
            tables[practice],
        )


def test_warnings_are_reported_and_recorded_but_do_not_block_publication(tmp_path):
    funnel_extract(tmp_path / "landing")
    report = run_pipeline(tmp_path / "landing", tmp_path / "wh" / "sprx.duckdb")
    warnings = {c.name: c.detail for c in report.gate.warnings}
    # P2 quarantined 20 of 1 + 100 + 100 + 20 = 221 rows (9.05%): one practice of two;
    # P1 received 1 practice + 100 patients + 100 registrations + 50 referrals = 251
    assert warnings["quarantine_share_low"].startswith("1 of 2 rows (50.00%) fail")
    # system prevalence 50/200 = 0.25; expected 25 each, SD sqrt(100 x 0.25 x 0.75) = 4.33:
    # P1 z = (50 - 25) / 4.33 = +5.77 (high), P2 z = -5.77 (low)
    assert warnings["sp_prevalence_within_funnel_limits"].startswith("2 of 2 rows (100.00%) fail")
    assert not report.gate.failed
    with duckdb.connect(str(report.published), read_only=True) as con:
        feedback = con.execute(
            "select practice_id, rows_received, rows_quarantined, quarantine_share, "
            "top_quarantine_rules, sp_code_prevalence, system_sp_code_prevalence, "
            "prevalence_z_score, prevalence_flag from marts.dq_practice_feedback order by 1"
        ).fetchall()
        assert feedback == [
            ("P1", 251, 0, 0.0, None, 50.0, 25.0, 5.77, "high"),
            ("P2", 221, 20, 0.0905, "unknown_patient (20)", 0.0, 25.0, -5.77, "low"),
        ]
        assert con.execute(
            "select count(*) from audit.quality_checks where status = 'warn'"
        ).fetchone() == (2,)
