"""Applying deliveries: contract order, full replacement, re-runs and refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from deliveries import write_delivery
from tiny_extract import write_tiny_extract

from sprx_pipeline import ingest
from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.pipeline import ingest_landing
from sprx_pipeline.warehouse import WarehouseBusy

PRACTICE = [("P009", "Midlands")]
PATIENTS = [
    ("A", "P009", 1970, "F", "White", 3, "urban", None),
    ("B", "P009", 1980, "M", "Asian", None, None, None),
]
REGISTRATIONS = [("RA", "A", "P009", "2010-01-01", None), ("RB", "B", "P009", "2012-05-01", None)]


def small_delivery(
    landing: Path,
    delivery_id: str = "2020-01-31_vision_001",
    extracted_at: str = "2020-01-31",
    patients=PATIENTS,
    registrations=REGISTRATIONS,
    **tables,
) -> Path:
    return write_delivery(
        landing,
        delivery_id,
        extracted_at,
        "Vision",
        ["P009"],
        {"practices": PRACTICE, "patients": patients, "registrations": registrations, **tables},
    )


def contents(warehouse: Path) -> dict[str, list]:
    """Every row of the raw and audit tables, sorted, for before/after comparison."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where schema_name in ('raw', 'audit') order by all"
        ).fetchall()
        return {
            f"{s}.{t}": sorted(map(repr, con.execute(f"select * from {s}.{t}").fetchall()))
            for s, t in tables
        }


def statuses(warehouse: Path) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "select delivery_id, status, reason from audit.deliveries "
            "order by applied_at, delivery_id"
        ).fetchall()


@pytest.fixture
def paths(tmp_path: Path) -> WarehousePaths:
    return WarehousePaths.at(tmp_path / "wh" / "sprx.duckdb")


def test_deliveries_are_applied_in_extracted_at_then_id_order(tmp_path, paths):
    landing = write_tiny_extract(tmp_path / "landing")
    report = ingest_landing(paths, landing)
    assert [o.delivery_id for o in report.applied] == ["2019-06-30_tpp_001", "2020-01-31_emis_001"]


def test_rerun_with_nothing_new_changes_nothing(tmp_path, paths):
    landing = write_tiny_extract(tmp_path / "landing")
    ingest_landing(paths, landing)
    before = contents(paths.work)
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["skipped", "skipped"]
    assert contents(paths.work) == before


def test_full_delivery_replaces_every_table_of_its_practices(tmp_path, paths):
    landing = tmp_path / "landing"
    small_delivery(landing, "2019-12-31_vision_001", "2019-12-31")
    small_delivery(
        landing, "2020-01-31_vision_001", patients=PATIENTS[:1], registrations=REGISTRATIONS[:1]
    )
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute("select patient_id, _delivery_id from raw.patients").fetchall() == [
            ("A", "2020-01-31_vision_001")
        ]
        assert con.execute("select count(*) from raw.registrations").fetchone() == (1,)


def test_same_delivery_id_with_new_content_is_refused(tmp_path, paths):
    landing = tmp_path / "landing"
    small_delivery(landing)
    ingest_landing(paths, landing)
    before = contents(paths.work)["raw.patients"]
    shutil.rmtree(landing / "2020-01-31_vision_001")
    small_delivery(landing, patients=PATIENTS[:1], registrations=REGISTRATIONS[:1])
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["refused"]
    assert "duplicate_delivery_id" in report.refused[0].reason
    assert contents(paths.work)["raw.patients"] == before


def test_older_delivery_for_the_same_practice_is_refused_not_rolled_back(tmp_path, paths):
    landing = tmp_path / "landing"
    small_delivery(landing)
    ingest_landing(paths, landing)
    small_delivery(
        landing,
        "2019-12-31_vision_001",
        "2019-12-31",
        patients=PATIENTS[:1],
        registrations=REGISTRATIONS[:1],
    )
    report = ingest_landing(paths, landing)
    assert [(o.delivery_id, o.status) for o in report.outcomes] == [
        ("2019-12-31_vision_001", "refused"),
        ("2020-01-31_vision_001", "skipped"),
    ]
    assert "out_of_order" in report.refused[0].reason
    assert "2020-01-31_vision_001" in report.refused[0].reason


def test_file_that_differs_from_its_manifest_hash_refuses_the_delivery_whole(tmp_path, paths):
    landing = tmp_path / "landing"
    folder = small_delivery(landing)
    with open(folder / "patients.csv", "a") as handle:
        handle.write("C,P009,1990,F,White,1,urban,\n")
    report = ingest_landing(paths, landing)
    (outcome,) = report.refused
    assert "patients.csv: sha256_mismatch" in outcome.reason
    assert contents(paths.work)["raw.patients"] == []
    assert statuses(paths.work) == [("2020-01-31_vision_001", "refused", outcome.reason)]


def test_refusal_is_recorded_once_and_a_corrected_delivery_is_then_applied(tmp_path, paths):
    landing = tmp_path / "landing"
    folder = small_delivery(landing)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["patients"]["rows"] = 3
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert (
        ingest_landing(paths, landing)
        .refused[0]
        .reason.endswith("row_count: the manifest says 3 rows, the file has 2")
    )
    assert [o.status for o in ingest_landing(paths, landing).outcomes] == ["skipped"]
    manifest["files"]["patients"]["rows"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert [o.status for o in ingest_landing(paths, landing).outcomes] == ["applied"]
    assert [s for _, s, _ in statuses(paths.work)] == ["refused", "applied"]


def test_unreadable_manifest_is_refused_with_its_path(tmp_path, paths):
    landing = tmp_path / "landing"
    (landing / "2020-01-31_broken").mkdir(parents=True)
    (landing / "2020-01-31_broken" / "manifest.json").write_text("{not json")
    small_delivery(landing)
    report = ingest_landing(paths, landing)
    assert [(o.delivery_id, o.status) for o in report.outcomes] == [
        ("2020-01-31_broken", "refused"),
        ("2020-01-31_vision_001", "applied"),
    ]
    assert "2020-01-31_broken/manifest.json: manifest_json" in report.refused[0].reason


def test_bad_rows_are_quarantined_and_accounted_for(tmp_path, paths):
    landing = tmp_path / "landing"
    small_delivery(
        landing,
        consultations=[
            ("C1", "A", "P009", "2019-01-01", "face_to_face", "gp"),
            ("C2", "A", "P009", "2019-02-30", "face_to_face", "gp"),  # no such date
            ("C3", "Z", "P009", "2019-01-01", "telephone", "gp"),  # unknown patient
            ("C4", "B", "P009", "2020-02-01", "telephone", "gp"),  # after extracted_at
            ("C5", "B", "P009", "2019-01-01", "carrier_pigeon", "gp"),  # not an allowed mode
            ("C6", "A", "P009", "1969-12-31", "telephone", "gp"),  # before year of birth
        ],
        clinical_events=[
            ("E1", "A", "P009", "2019-01-01", "871731000000106", "C1", None),
            ("E2", "A", "P009", "2019-01-01", "871731000000107", None, None),  # Verhoeff fails
            ("E3", "A", "P009", "2019-01-01", "871731000000106", "C2", None),  # quarantined consult
        ],
    )
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work), read_only=True) as con:
        rules = con.execute(
            "select row_json->>'$.consultation_id', rule from audit.quarantine "
            "where table_name = 'consultations' order by 1"
        ).fetchall()
        assert rules == [
            ("C2", "invalid_date:consultation_date"),
            ("C3", "unknown_patient"),
            ("C4", "after_extracted_at:consultation_date"),
            ("C5", "allowed_values:mode"),
            ("C6", "before_birth"),
        ]
        events = con.execute(
            "select row_json->>'$.event_id', rule from audit.quarantine "
            "where table_name = 'clinical_events' order by 1"
        ).fetchall()
        assert events == [("E2", "snomed_code:snomed_code"), ("E3", "unknown_consultation")]
        accounts = con.execute(
            "select table_name, received, loaded, quarantined from "
            "audit.delivery_tables where table_name in ('consultations', "
            "'clinical_events') order by 1"
        ).fetchall()
        assert accounts == [("clinical_events", 3, 1, 2), ("consultations", 6, 1, 5)]


def test_missing_landing_area_is_an_error_that_says_what_to_do(tmp_path, paths):
    with pytest.raises(ingest.IngestError, match="does not exist.*create it"):
        ingest_landing(paths, tmp_path / "nowhere")


def test_a_second_writer_is_told_the_warehouse_is_busy(tmp_path, paths):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from sprx_pipeline.config import WarehousePaths\n"
                "from sprx_pipeline.warehouse import writer_lock\n"
                f"with writer_lock(WarehousePaths.at({str(paths.published)!r})):\n"
                "    print('locked', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WarehouseBusy, match=f"being written by pid {holder.pid}"):
            ingest_landing(paths, tmp_path)
        with pytest.raises(WarehouseBusy):
            ingest_landing(paths, tmp_path, wait_seconds=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert ingest_landing(paths, write_tiny_extract(tmp_path / "landing")).applied


def _rehash(folder: Path, table: str, path: Path) -> None:
    """Point the manifest's entry for `table` at `path` with its new hash."""
    from sprx_pipeline.contract import sha256_file

    data = json.loads((folder / "manifest.json").read_text())
    data["files"][table].update(path=path.name, sha256=sha256_file(path))
    (folder / "manifest.json").write_text(json.dumps(data))


def test_a_csv_with_a_byte_order_mark_and_crlf_lines_is_read_as_plain_utf8(tmp_path, paths):
    """Excel writes 'CSV UTF-8' with a BOM and CRLF line ends: the header is still the
    contract's, and no value carries the mark."""
    landing = tmp_path / "landing"
    folder = small_delivery(landing)
    path = folder / "patients.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    _rehash(folder, "patients", path)
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["applied"]
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select patient_id, rural_urban from raw.patients order by 1"
        ).fetchall() == [("A", "urban"), ("B", None)]


def test_parquet_written_by_pandas_keeps_integers_with_gaps_and_dates_as_timestamps(
    tmp_path, paths
):
    """pandas stores an integer column with a missing value as float (3.0) and dates as
    timestamps: whole floats and midnight timestamps load as the contract's int and date;
    a fraction or a time of day is still quarantined."""
    import pandas as pd

    landing = tmp_path / "landing"
    folder = small_delivery(landing, patients=PATIENTS * 2)
    frame = pd.DataFrame(
        {
            "patient_id": ["A", "B", "C", "D"],
            "practice_id": ["P009"] * 4,
            "year_of_birth": [1970, 1980, 1990, 1990],
            "sex": ["F", "M", "F", "M"],
            "ethnicity": ["White", "Asian", "Black", "Other"],
            "imd_quintile": [3.0, None, 2.5, 1.0],
            "rural_urban": ["urban", None, "rural", "rural"],
            "date_of_death": pd.to_datetime(
                [None, "2019-05-01", None, "2019-06-01 14:30"], format="ISO8601"
            ),
        }
    )
    (folder / "patients.csv").unlink()
    frame.to_parquet(folder / "patients.parquet", index=False)
    _rehash(folder, "patients", folder / "patients.parquet")
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["applied"]
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select patient_id, imd_quintile, date_of_death::varchar from raw.patients order by 1"
        ).fetchall() == [("A", 3, None), ("B", None, "2019-05-01")]
        assert con.execute(
            "select row_json->>'$.patient_id', rule from audit.quarantine order by 1"
        ).fetchall() == [("C", "not_integer:imd_quintile"), ("D", "invalid_date:date_of_death")]


def p010_delivery(landing: Path, consultations: list[tuple]) -> Path:
    return write_delivery(
        landing,
        "2020-01-31_vision_002",
        "2020-01-31",
        "Vision",
        ["P010"],
        {
            "practices": [("P010", "London")],
            "patients": [("A", "P010", 1975, "M", "Other", 2, "urban", None)],
            "registrations": [("RA10", "A", "P010", "2011-01-01", None)],
            "consultations": consultations,
        },
    )


def test_a_record_id_already_held_by_another_practice_is_quarantined_not_doubled(tmp_path, paths):
    """Consultation ids are the table's key across practices: a second practice sending C1
    gets that row quarantined (key_in_other_practice), the first practice's C1 stays, and the
    first practice may still send its own C1 again."""
    landing = tmp_path / "landing"
    small_delivery(landing, consultations=[("C1", "A", "P009", "2019-01-01", "telephone", "gp")])
    p010_delivery(
        landing,
        [
            ("C1", "A", "P010", "2019-03-03", "video", "nurse"),
            ("C2", "A", "P010", "2019-03-04", "video", "nurse"),
        ],
    )
    small_delivery(
        landing,
        "2020-02-29_vision_003",
        "2020-02-29",
        consultations=[("C1", "A", "P009", "2019-01-02", "telephone", "gp")],
    )
    report = ingest_landing(paths, landing)
    assert [o.status for o in report.outcomes] == ["applied"] * 3
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select consultation_id, practice_id, consultation_date::varchar "
            "from raw.consultations order by 1"
        ).fetchall() == [("C1", "P009", "2019-01-02"), ("C2", "P010", "2019-03-04")]
        assert con.execute(
            "select delivery_id, row_json->>'$.consultation_id', rule from audit.quarantine"
        ).fetchall() == [("2020-01-31_vision_002", "C1", "key_in_other_practice")]


def test_a_hash_collision_in_the_record_key_mirror_quarantines_nothing(tmp_path, paths):
    """The other-practice check finds candidates by hash in `record_keys` and confirms them
    in raw. A mirror row under another practice with C2's hash (what a collision would
    leave) must not quarantine P010's C2; P009's real C1 still stops P010's C1."""
    landing = tmp_path / "landing"
    small_delivery(landing, consultations=[("C1", "A", "P009", "2019-01-01", "telephone", "gp")])
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work)) as con:
        con.execute("insert into record_keys.consultations select hash('C2'), 'P009'")
    p010_delivery(
        landing,
        [
            ("C1", "A", "P010", "2019-03-03", "video", "nurse"),
            ("C2", "A", "P010", "2019-03-04", "video", "nurse"),
        ],
    )
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select consultation_id, practice_id from raw.consultations order by 1"
        ).fetchall() == [("C1", "P009"), ("C2", "P010")]
        assert con.execute(
            "select row_json->>'$.consultation_id', rule from audit.quarantine"
        ).fetchall() == [("C1", "key_in_other_practice")]


@pytest.mark.parametrize(
    "damage",
    ["drop schema record_keys cascade", "update record_keys._hash_probe set probe = probe + 1"],
)
def test_a_missing_or_stale_record_key_mirror_is_rebuilt_from_raw(tmp_path, paths, damage):
    """A warehouse made before the mirror existed, or filled by a DuckDB whose hash()
    differed, gets the mirror rebuilt on the next write, and the check still holds."""
    landing = tmp_path / "landing"
    small_delivery(landing, consultations=[("C1", "A", "P009", "2019-01-01", "telephone", "gp")])
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work)) as con:
        con.execute("delete from record_keys.consultations")  # stale content must not survive
        con.execute(damage)
    p010_delivery(landing, [("C1", "A", "P010", "2019-03-03", "video", "nurse")])
    ingest_landing(paths, landing)
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select row_json->>'$.consultation_id', rule from audit.quarantine"
        ).fetchall() == [("C1", "key_in_other_practice")]
        assert con.execute(
            "select practice_id, count(*) from record_keys.consultations group by 1 order by 1"
        ).fetchall() == [("P009", 1)]
