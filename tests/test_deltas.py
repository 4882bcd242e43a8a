"""Delta deliveries: upsert by record id and delete, within the delivery's own practices.

A delta applied twice changes nothing; a full delivery after deltas leaves exactly what a
clean load of that full delivery leaves; and a correction changes the marts exactly as the
working in the comments says.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
from deliveries import write_delivery
from tiny_extract import (
    CLINICAL_EVENTS,
    CONSULTATIONS,
    CORRECTION_DELIVERY,
    P1,
    write_tiny_correction,
    write_tiny_extract,
)
from warehouse_state import Site, contents, differences

from sprx_pipeline import pipeline, record_keys
from sprx_pipeline.config import DEFAULT_CODELIST_DIR, WarehousePaths
from sprx_pipeline.contract import TABLES
from sprx_pipeline.pipeline import ingest_landing

D = date.fromisoformat


@pytest.fixture
def paths(tmp_path: Path) -> WarehousePaths:
    return WarehousePaths.at(tmp_path / "wh" / "sprx.duckdb")


def raw_data(paths: WarehousePaths) -> dict[str, list[tuple]]:
    """The contract columns of every raw table (not `_delivery_id`), sorted."""
    with duckdb.connect(str(paths.work), read_only=True) as con:
        return {
            name: sorted(
                con.execute(f"select {', '.join(spec.column_names)} from raw.{name}").fetchall(),
                key=repr,
            )
            for name, spec in TABLES.items()
        }


def record_key_mirror_differs(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows by which `record_keys` and raw's (hash(id), practice) differ, per keyed table."""
    differs = {}
    for name in record_keys.KEYED:
        key = TABLES[name].key[0]
        raw_side = f"select hash({key}), practice_id from raw.{name}"
        mirror = f"select key_hash, practice_id from record_keys.{name}"
        (n,) = con.execute(
            f"select count(*) from (({raw_side} except all {mirror}) "
            f"union all ({mirror} except all {raw_side}))"
        ).fetchone()
        if n:
            differs[name] = n
    return differs


def one_patient_practice(
    landing: Path, delivery_id: str, practice: str, region: str, consulted: str, attended: str
) -> None:
    """A full delivery of one practice: patient A (patient ids are unique within a practice,
    so the other practice may have an A too), and records RA, C1, H1 suffixed with the
    practice's number when it is not P1 (record ids are their table's key)."""
    tag = "" if practice == "P1" else practice[1:]
    write_delivery(
        landing,
        delivery_id,
        "2020-01-31",
        "Vision",
        [practice],
        {
            "practices": [(practice, region)],
            "patients": [("A", practice, 1970, "F", "White", 3, "urban", None)],
            "registrations": [(f"RA{tag}", "A", practice, "2010-01-01", None)],
            "consultations": [(f"C1{tag}", "A", practice, consulted, "face_to_face", "gp")],
            "hospital_attendances": [(f"H1{tag}", "A", practice, attended, "ae")],
        },
    )


def test_a_delta_touches_only_the_rows_of_its_own_practices(tmp_path, paths):
    landing = tmp_path / "landing"
    one_patient_practice(
        landing, "2020-01-31_vision_001", "P1", "Midlands", "2019-01-01", "2019-02-01"
    )
    one_patient_practice(
        landing, "2020-01-31_vision_002", "P2", "London", "2019-03-03", "2019-04-04"
    )
    write_delivery(
        landing,
        "2020-02-29_vision_003",
        "2020-02-29",
        "Vision",
        ["P1"],
        {
            "consultations": [
                ("C1", "A", "P1", "2019-01-02", "telephone", "gp"),
                ("C12", "A", "P1", "2019-01-03", "video", "gp"),
            ],  # P2's id
            "deletions": [("hospital_attendances", "H1"), ("hospital_attendances", "H12")],
        },
        kind="delta",
    )
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["applied"] * 3
    data = raw_data(paths)
    # P1's C1 is updated and its H1 deleted; P2's C12 and H12, named by P1's delta, are
    # untouched: the delta's C12 is quarantined and its deletion of H12 finds nothing of P1's.
    assert data["consultations"] == [
        ("C1", "A", "P1", D("2019-01-02"), "telephone", "gp"),
        ("C12", "A", "P2", D("2019-03-03"), "face_to_face", "gp"),
    ]
    assert data["hospital_attendances"] == [("H12", "A", "P2", D("2019-04-04"), "ae")]
    assert len(data["patients"]) == 2 and len(data["registrations"]) == 2
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select row_json->>'$.consultation_id', rule from audit.quarantine"
        ).fetchall() == [("C12", "key_in_other_practice")]
        # The record-key mirror followed the upsert and the deletions exactly.
        assert record_key_mirror_differs(con) == {}


def test_a_correction_that_breaks_a_rule_is_quarantined_and_replaces_nothing(tmp_path, paths):
    landing = tmp_path / "landing"
    one_patient_practice(
        landing, "2020-01-31_vision_001", "P1", "Midlands", "2019-01-01", "2019-02-01"
    )
    write_delivery(
        landing,
        "2020-02-29_vision_002",
        "2020-02-29",
        "Vision",
        ["P1"],
        {
            "consultations": [("C1", "A", "P1", "2019-02-30", "telephone", "gp")],  # no such day
        },
        kind="delta",
    )
    ingest_landing(paths, landing)
    assert raw_data(paths)["consultations"] == [
        ("C1", "A", "P1", D("2019-01-01"), "face_to_face", "gp")
    ]
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute("select delivery_id, rule from audit.quarantine").fetchall() == [
            ("2020-02-29_vision_002", "invalid_date:consultation_date")
        ]


def test_the_same_delta_applied_twice_changes_nothing(tmp_path, paths):
    landing = write_tiny_extract(tmp_path / "landing")
    write_tiny_correction(landing)
    ingest_landing(paths, landing)
    once, everything = raw_data(paths), contents(paths.work)
    # Ingesting again: the delta is recognised by id and manifest hash, nothing is written.
    assert [o.status for o in ingest_landing(paths, landing).outcomes] == ["skipped"] * 3
    assert contents(paths.work) == everything
    # The same correction sent again under a new id: an upsert of the same rows and a
    # deletion of a row already gone leave every data column as it was.
    write_tiny_correction(landing, "2020-01-31_emis_003")
    assert [o.status for o in ingest_landing(paths, landing).applied] == ["applied"]
    assert raw_data(paths) == once
    corrected = [r for r in once["consultations"] if r[0] == "C02"]
    assert corrected == [("C02", "EDGE", P1, D("2016-06-14"), "telephone", "gp")]
    assert "E07" not in {r[0] for r in once["clinical_events"]}
    # 20 of P001's consultations loaded (C31 quarantined), plus P002's 2; 14 events less E07.
    assert (len(once["consultations"]), len(once["clinical_events"])) == (
        len(CONSULTATIONS) - 1,
        len(CLINICAL_EVENTS) - 1,
    )


def full_p001(landing: Path, delivery_id: str) -> None:
    """A later full delivery of P001: the tiny extract's rows with the correction made."""
    from tiny_extract import HOSPITAL_ATTENDANCES, PATIENTS, REGISTRATIONS

    def mine(rows, position=2):
        return [r for r in rows if r[position] == P1]

    write_delivery(
        landing,
        delivery_id,
        "2020-02-29",
        "EMIS",
        [P1],
        {
            "practices": [(P1, "London")],
            "patients": mine(PATIENTS, 1),
            "registrations": mine(REGISTRATIONS),
            "consultations": [
                ("C02", "EDGE", P1, "2016-06-14", "telephone", "gp") if r[0] == "C02" else r
                for r in mine(CONSULTATIONS)
            ],
            "clinical_events": [r for r in mine(CLINICAL_EVENTS) if r[0] != "E07"],
            "hospital_attendances": mine(HOSPITAL_ATTENDANCES),
        },
    )


def test_a_full_delivery_after_deltas_equals_a_clean_load_of_it(tmp_path):
    after_deltas = WarehousePaths.at(tmp_path / "a" / "sprx.duckdb")
    landing = write_tiny_extract(tmp_path / "landing_a")
    write_tiny_correction(landing)
    write_tiny_correction(landing, "2020-01-31_emis_003")
    full_p001(landing, "2020-02-29_emis_001")
    assert len(ingest_landing(after_deltas, landing).applied) == 5

    clean = WarehousePaths.at(tmp_path / "b" / "sprx.duckdb")
    clean_landing = tmp_path / "landing_b"
    clean_landing.mkdir()
    shutil.copytree(landing / "2019-06-30_tpp_001", clean_landing / "2019-06-30_tpp_001")
    full_p001(clean_landing, "2020-02-29_emis_001")
    assert len(ingest_landing(clean, clean_landing).applied) == 2
    # Every raw row, `_delivery_id` included: the full delivery replaced all of P001.
    raw_a, raw_b = (contents(p.work, schemas=("raw",)) for p in (after_deltas, clean))
    assert differences(raw_a, raw_b) == []
    assert len(raw_a["raw.consultations"]) == 32  # C31 after death is quarantined again
    with duckdb.connect(str(after_deltas.work), read_only=True) as con:
        assert record_key_mirror_differs(con) == {}


@pytest.mark.slow
def test_a_correction_changes_the_marts_exactly_as_worked_out(tiny, tmp_path):
    """The tiny extract published, then the delta of `write_tiny_correction`:
    C02 (EDGE, index - 365, pre) moves to index - 366 (out); E07, NEWREG's only referral,
    is deleted, so NEWREG is no longer a referred patient. EDGE's recent use at its index
    becomes (0, 0, 1), so CTRL1 and CTRL5, both (0, 1, 1), no longer match it."""
    site = Site(tiny.landing.parent).copy_to(tmp_path)
    write_tiny_correction(site.landing)
    paths = site.paths
    report = pipeline.run(paths, site.landing, DEFAULT_CODELIST_DIR)
    assert [o.delivery_id for o in report.ingest.applied] == [CORRECTION_DELIVERY]

    with duckdb.connect(str(paths.published), read_only=True) as con:

        def rows(sql: str) -> list[tuple]:
            return con.execute(sql).fetchall()

        # Seven referred patients: NEWREG is gone; EDGE's pre consultations 1 -> 0 (C02 out,
        # C01 was already out); every other outcome as in tests/test_linkage.py (CTRL5's C72
        # and CTRL6's C82 are telephone consultations).
        assert rows(
            "select patient_id, pre_consultations, pre_consultations_telephone, "
            "post_consultations from marts.sp_patient_outcomes order by 1"
        ) == [
            ("CTRL5", 1, 1, 1),
            ("CTRL6", 3, 1, 1),
            ("DEATH", 0, 0, 1),
            ("DEREG", 1, 0, 1),
            ("EDGE", 0, 0, 2),
            ("EXTRACT", 1, 0, 1),
            ("LEAP", 2, 1, 1),
        ]
        # EDGE lost both controls; CTRL5 keeps CTRL2.
        assert rows(
            "select case_patient_id, control_patient_id from marts.sp_matched_controls"
        ) == [("CTRL5", "CTRL2")]
        # Referred pre: 10 consultations - EDGE's C02 - NEWREG's C41 = 8, over
        # 2736 - 181 (NEWREG's pre days) = 2555 days = 6.9952 py: 8000 / 6.9952 = 1143.64.
        # Referred post: 8 - NEWREG's 0 = 8, over 2179 - 365 = 1814 days = 4.9665 py:
        # 8000 / 4.9665 = 1610.80. Controls: CTRL2 alone, 1 consultation before, none after.
        assert rows(
            'select cohort, "window", patients, events, person_days, person_years, '
            "rate_per_1000_py from marts.sp_outcome_summary where measure = "
            "'consultations' order by 1, 2 desc"
        ) == [
            ("control", "pre", 1, 1, 365, 0.9993, 1000.68),
            ("control", "post", 1, 0, 365, 0.9993, 0.0),
            ("referred", "pre", 7, 8, 2555, 6.9952, 1143.64),
            ("referred", "post", 7, 8, 1814, 4.9665, 1610.8),
        ]
        # 12 referral-coded events less E07.
        assert rows("select count(*) from marts.sp_referrals where category = 'referral'") == [
            (11,)
        ]
        # March 2017: NEWREG's referral was its one referral; 14 still registered on the 15th
        # (13 at P001, NEWREG included, + EXTRACT at P002).
        assert rows(
            "select referred_patients, registered_patients, rate_per_100k from "
            "marts.sp_uptake_monthly where month = date '2017-03-01' and group_type "
            "= 'all'"
        ) == [(0, 14, 0.0)]
        # The delta is accounted for like any delivery: one consultation received and loaded.
        assert rows(
            "select delivery_id, consultations_received, consultations_loaded from "
            "marts.dq_practice_feedback where practice_id = 'P001' order by 1"
        ) == [("2020-01-31_emis_001", 31, 30), (CORRECTION_DELIVERY, 1, 1)]
