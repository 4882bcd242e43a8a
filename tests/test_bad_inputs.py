"""A corpus of bad deliveries, each with the exact outcome it must get.

Every case starts from one good delivery (practice P009: 3 patients and their records) and
breaks one thing. A delivery-level fault is refused whole, with a reason naming the file and
rule, and nothing of it is applied. A row-level fault quarantines exactly the broken rows under
their rule, and every other row is loaded: received = loaded + quarantined, no good row lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from deliveries import write_delivery

from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.contract import sha256_file
from sprx_pipeline.pipeline import ingest_landing

DELIVERY = "2020-01-31_emis_009"


def good_tables() -> dict[str, list[list]]:
    return {
        "practices": [["P009", "Midlands"]],
        "patients": [
            ["A", "P009", 1970, "F", "White", 3, "urban", None],
            ["B", "P009", 1980, "M", "Asian", None, None, None],
            ["C", "P009", 1940, "F", "Black", 1, "rural", "2019-06-30"],
        ],
        "registrations": [
            ["RA", "A", "P009", "2010-01-01", None],
            ["RB", "B", "P009", "2012-05-01", "2019-12-31"],
            ["RC", "C", "P009", "2000-01-01", None],
        ],
        "consultations": [
            ["C1", "A", "P009", "2019-01-01", "face_to_face", "gp"],
            ["C2", "B", "P009", "2019-03-04", "telephone", "nurse"],
            ["C3", "C", "P009", "2019-06-01", "home_visit", "gp"],
        ],
        "clinical_events": [
            ["E1", "A", "P009", "2019-01-01", "871731000000106", "C1", None],
            ["E2", "B", "P009", "2019-03-04", "38341003", "C2", "140.5"],
            ["E3", "C", "P009", "2019-06-01", "871711000000103", None, None],
        ],
        "hospital_attendances": [
            ["H1", "A", "P009", "2019-02-01", "ae"],
            ["H2", "C", "P009", "2019-05-01", "emergency_admission"],
        ],
    }


@dataclass
class Fault:
    """One broken delivery: how to break it, and what it must get."""

    name: str
    rows: Callable[[dict], None] | None = None  # break the rows before writing
    files: Callable[[Path], None] | None = None  # break the written folder
    refused: str | None = None  # text the refusal reason must hold
    quarantined: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    fmt: str = "csv"


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def edit_manifest(folder: Path, change: Callable[[dict], None], rehash: str | None = None) -> None:
    data = manifest(folder)
    change(data)
    if rehash:
        data["files"][rehash]["sha256"] = sha256_file(folder / data["files"][rehash]["path"])
    (folder / "manifest.json").write_text(json.dumps(data))


def rewrite(folder: Path, table: str, text: bytes, rows: int | None = None) -> None:
    """Replace a table's file and keep the manifest's hash (and row count) truthful."""
    path = folder / manifest(folder)["files"][table]["path"]
    path.write_bytes(text)

    def change(data):
        if rows is not None:
            data["files"][table]["rows"] = rows

    edit_manifest(folder, change, rehash=table)


def set_cell(table: str, row: int, column: int, value) -> Callable[[dict], None]:
    def change(tables):
        tables[table][row][column] = value

    return change


def add_row(table: str, values: list) -> Callable[[dict], None]:
    return lambda tables: tables[table].append(values)


PATIENTS_CSV = (
    b"patient_id,practice_id,year_of_birth,sex,ethnicity,imd_quintile,rural_urban,date_of_death\n"
)

FAULTS = [
    # --- manifest ---------------------------------------------------------------------
    Fault(
        "missing manifest",
        files=lambda f: (f / "manifest.json").unlink(),
        refused="missing_manifest",
    ),
    Fault(
        "manifest is not JSON",
        files=lambda f: (f / "manifest.json").write_text("{oops"),
        refused="manifest_json",
    ),
    Fault(
        "unknown contract version",
        files=lambda f: edit_manifest(f, lambda m: m.update(contract_version="2")),
        refused="contract_version: unknown contract version '2'",
    ),
    Fault(
        "manifest without practices",
        files=lambda f: edit_manifest(f, lambda m: m.pop("practices")),
        refused="manifest_shape: missing keys: practices",
    ),
    Fault(
        # A practice id the ID pattern rejects: Python's `$` would let a trailing newline
        # through, and rows would then be proven well-formed by the manifest's list.
        "manifest practice id ends in a newline",
        files=lambda f: edit_manifest(f, lambda m: m.update(practices=["P009\n"])),
        refused="practice_list: expected a non-empty list of practice ids",
    ),
    Fault(
        "unknown table",
        files=lambda f: edit_manifest(
            f,
            lambda m: m["files"].update(
                prescriptions={"path": "patients.csv", "rows": 3, "sha256": "0" * 64}
            ),
        ),
        refused="unknown_table: 'prescriptions'",
    ),
    Fault(
        "full delivery missing a table",
        files=lambda f: edit_manifest(f, lambda m: m["files"].pop("hospital_attendances")),
        refused="missing_table: a full delivery must carry every table; missing hospital_attendances",
    ),
    Fault(
        "delivery id differs from its folder",
        files=lambda f: edit_manifest(f, lambda m: m.update(delivery_id="2020-01-31_emis_010")),
        refused="delivery_dir",
    ),
    Fault(
        "extracted_at is not a real date",
        files=lambda f: edit_manifest(f, lambda m: m.update(extracted_at="2020-02-30")),
        refused="iso_date: '2020-02-30' is not a real date",
    ),
    Fault(
        "unknown source system",
        files=lambda f: edit_manifest(f, lambda m: m.update(source_system="Cerner")),
        refused="allowed_values: 'Cerner' is not one of",
    ),
    Fault(
        "unknown delivery kind",
        files=lambda f: edit_manifest(f, lambda m: m.update(kind="partial")),
        refused="allowed_values: 'partial'",
    ),
    Fault(
        "manifest lies about a row count",
        files=lambda f: edit_manifest(f, lambda m: m["files"]["patients"].update(rows=5)),
        refused="patients.csv: row_count: the manifest says 5 rows, the file has 3",
    ),
    Fault(
        "manifest hash does not match the file",
        files=lambda f: edit_manifest(
            f, lambda m: m["files"]["consultations"].update(sha256="a" * 64)
        ),
        refused="consultations.csv: sha256_mismatch",
    ),
    Fault(
        "listed file is missing",
        files=lambda f: (f / "registrations.csv").unlink(),
        refused="registrations.csv: missing_file",
    ),
    Fault(
        "file path leaves the delivery",
        files=lambda f: edit_manifest(
            f, lambda m: m["files"]["patients"].update(path="../patients.csv")
        ),
        refused="file_path",
    ),
    # --- files ------------------------------------------------------------------------
    Fault(
        "truncated gzip",
        fmt="csv.gz",
        files=lambda f: rewrite(
            f, "consultations", (f / "consultations.csv.gz").read_bytes()[:-12]
        ),
        refused="consultations.csv.gz",
    ),
    Fault(
        "not UTF-8",
        files=lambda f: rewrite(f, "practices", b"practice_id,region\nP009,Midl\xe9nds\n"),
        refused="practices.csv: unreadable_file",
    ),
    Fault(
        "missing header row",
        files=lambda f: rewrite(f, "practices", b"P009,Midlands\n", rows=1),
        refused="practices.csv: columns: missing column(s) practice_id, region",
    ),
    Fault(
        "extra column",
        files=lambda f: rewrite(
            f, "practices", b"practice_id,region,postcode\nP009,Midlands,B1 1AA\n"
        ),
        refused="practices.csv: columns: unexpected column(s) postcode",
    ),
    Fault(
        "missing column",
        files=lambda f: rewrite(f, "practices", b"practice_id\nP009\n"),
        refused="practices.csv: columns: missing column(s) region",
    ),
    Fault(
        "semicolon delimiter",
        files=lambda f: rewrite(f, "practices", b"practice_id;region\nP009;Midlands\n"),
        refused="practices.csv: columns",
    ),
    Fault(
        "empty file",
        files=lambda f: rewrite(f, "practices", b"", rows=0),
        refused="practices.csv: missing_header",
    ),
    Fault(
        "repeated column",
        files=lambda f: rewrite(
            f, "practices", b"practice_id,region,region\nP009,Midlands,Midlands\n"
        ),
        refused="practices.csv: columns: a column is repeated",
    ),
    Fault(
        "row with an extra field",
        files=lambda f: rewrite(f, "practices", b"practice_id,region\nP009,Midlands,extra\n"),
        refused="practices.csv: unreadable_file",
    ),
    Fault(
        "parquet file that is not Parquet",
        fmt="parquet",
        files=lambda f: rewrite(f, "practices", b"practice_id,region\nP009,Midlands\n"),
        refused="practices.parquet: file_format",
    ),
    # --- direct identifiers -------------------------------------------------------------
    Fault(
        "NHS numbers as patient ids",
        rows=lambda t: [
            _rename_patient(t, old, new)
            for old, new in (("A", "9434765919"), ("B", "4010232137"), ("C", "9434765870"))
        ],
        refused="patients.csv column patient_id: nhs_number",
    ),
    Fault(
        "an NHS number written in its spaced form",
        rows=set_cell("patients", 1, 0, "943 476 5919"),
        refused="patients.csv column patient_id: nhs_number",
    ),
    Fault(
        "postcodes as patient ids",
        rows=lambda t: [
            _rename_patient(t, old, new)
            for old, new in (("A", "SW1A1AA"), ("B", "M11AE"), ("C", "B338TH"))
        ],
        refused="patients.csv column patient_id: postcode",
    ),
    Fault(
        "full dates of birth",
        rows=set_cell("patients", 0, 2, "1970-05-04"),
        refused="patients.csv column year_of_birth: date_of_birth",
    ),
    # --- rows -------------------------------------------------------------------------
    Fault(
        "duplicate consultation id",
        rows=add_row("consultations", ["C2", "A", "P009", "2019-04-04", "telephone", "gp"]),
        quarantined={
            "consultations": [("C2", "duplicate_key"), ("C2", "duplicate_key")],
            "clinical_events": [("E2", "unknown_consultation")],
        },
    ),
    Fault(
        "impossible date",
        rows=set_cell("consultations", 0, 3, "2019-02-30"),
        quarantined={
            "consultations": [("C1", "invalid_date:consultation_date")],
            "clinical_events": [("E1", "unknown_consultation")],
        },
    ),
    Fault(
        "date written day first",
        rows=set_cell("hospital_attendances", 0, 3, "01/02/2019"),
        quarantined={"hospital_attendances": [("H1", "invalid_date:attendance_date")]},
    ),
    Fault(
        "future date",
        rows=set_cell("hospital_attendances", 0, 3, "2020-02-01"),
        quarantined={"hospital_attendances": [("H1", "after_extracted_at:attendance_date")]},
    ),
    Fault(
        "SNOMED code failing its check digit",
        rows=set_cell("clinical_events", 1, 4, "38341004"),
        quarantined={"clinical_events": [("E2", "snomed_code:snomed_code")]},
    ),
    Fault(
        "code that is not a SNOMED id",
        rows=set_cell("clinical_events", 1, 4, "HTN"),
        quarantined={"clinical_events": [("E2", "snomed_code:snomed_code")]},
    ),
    Fault(
        "unknown patient",
        rows=add_row("hospital_attendances", ["H9", "Z", "P009", "2019-01-01", "ae"]),
        quarantined={"hospital_attendances": [("H9", "unknown_patient")]},
    ),
    Fault(
        "event before birth",
        rows=set_cell("hospital_attendances", 0, 3, "1969-12-31"),
        quarantined={"hospital_attendances": [("H1", "before_birth")]},
    ),
    Fault(
        "consultation after death",
        rows=add_row("consultations", ["C9", "C", "P009", "2019-07-01", "face_to_face", "gp"]),
        quarantined={"consultations": [("C9", "after_death")]},
    ),
    Fault(
        "registration ends before it starts",
        rows=set_cell("registrations", 1, 4, "2011-01-01"),
        quarantined={"registrations": [("RB", "end_before_start")]},
    ),
    Fault(
        "unknown sex",
        rows=set_cell("patients", 1, 3, "X"),
        quarantined={
            "patients": [("B", "allowed_values:sex")],
            "registrations": [("RB", "unknown_patient")],
            "consultations": [("C2", "unknown_patient")],
            "clinical_events": [("E2", "unknown_patient")],
        },
    ),
    Fault(
        "IMD quintile out of range",
        rows=set_cell("patients", 0, 5, 6),
        quarantined={
            "patients": [("A", "allowed_values:imd_quintile")],
            "registrations": [("RA", "unknown_patient")],
            "consultations": [("C1", "unknown_patient")],
            "clinical_events": [("E1", "unknown_patient")],
            "hospital_attendances": [("H1", "unknown_patient")],
        },
    ),
    Fault(
        "year of birth before 1900",
        rows=set_cell("patients", 2, 2, 1850),
        quarantined={
            "patients": [("C", "year_of_birth_range")],
            "registrations": [("RC", "unknown_patient")],
            "consultations": [("C3", "unknown_patient")],
            "clinical_events": [("E3", "unknown_patient")],
            "hospital_attendances": [("H2", "unknown_patient")],
        },
    ),
    Fault(
        "death before birth",
        rows=set_cell("patients", 2, 7, "1930-01-01"),
        quarantined={
            "patients": [("C", "death_before_birth")],
            "registrations": [("RC", "unknown_patient")],
            "consultations": [("C3", "unknown_patient")],
            "clinical_events": [("E3", "unknown_patient")],
            "hospital_attendances": [("H2", "unknown_patient")],
        },
    ),
    Fault(
        "missing required date",
        rows=set_cell("hospital_attendances", 1, 3, None),
        quarantined={"hospital_attendances": [("H2", "missing_value:attendance_date")]},
    ),
    Fault(
        "row from a practice not in the manifest",
        rows=add_row("hospital_attendances", ["H8", "A", "P010", "2019-01-01", "ae"]),
        quarantined={"hospital_attendances": [("H8", "practice_not_in_delivery")]},
    ),
    Fault(
        "event in an unknown consultation",
        rows=set_cell("clinical_events", 0, 5, "C77"),
        quarantined={"clinical_events": [("E1", "unknown_consultation")]},
    ),
    Fault(
        "id with a space",
        rows=add_row("hospital_attendances", ["H 7", "A", "P009", "2019-01-01", "ae"]),
        quarantined={"hospital_attendances": [("H 7", "id_format:attendance_id")]},
    ),
    Fault(
        "value that is not a number",
        rows=set_cell("clinical_events", 1, 6, "high"),
        quarantined={"clinical_events": [("E2", "not_number:numeric_value")]},
    ),
]


def _rename_patient(tables: dict, old: str, new: str) -> None:
    for table, rows in tables.items():
        position = 0 if table == "patients" else 1
        for row in rows:
            if table != "practices" and row[position] == old:
                row[position] = new


KEYS = {
    "practices": "practice_id",
    "patients": "patient_id",
    "registrations": "registration_id",
    "consultations": "consultation_id",
    "clinical_events": "event_id",
    "hospital_attendances": "attendance_id",
}


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_bad_input_gets_exactly_its_outcome(fault: Fault, tmp_path: Path):
    tables = good_tables()
    if fault.rows:
        fault.rows(tables)
    folder = write_delivery(
        tmp_path / "landing", DELIVERY, "2020-01-31", "EMIS", ["P009"], tables, fmt=fault.fmt
    )
    if fault.files:
        fault.files(folder)
    paths = WarehousePaths.at(tmp_path / "wh" / "sprx.duckdb")
    report = ingest_landing(paths, tmp_path / "landing")
    (outcome,) = report.outcomes
    with duckdb.connect(str(paths.work), read_only=True) as con:
        if fault.refused:
            assert outcome.status == "refused"
            assert fault.refused in outcome.reason
            for table in KEYS:  # nothing of a refused delivery is applied, or quarantined
                assert con.execute(f"select count(*) from raw.{table}").fetchone() == (0,)
            assert con.execute("select count(*) from audit.quarantine").fetchone() == (0,)
            assert con.execute("select status from audit.deliveries").fetchall() == [("refused",)]
            return
        assert outcome.status == "applied", outcome.reason
        quarantined = {}
        for table, rule, row in con.execute(
            "select table_name, rule, row_json from audit.quarantine order by row_number"
        ).fetchall():
            quarantined.setdefault(table, []).append((json.loads(row)[KEYS[table]], rule))
        assert quarantined == fault.quarantined
        for table, rows in tables.items():  # every other row arrived, and nothing else
            held = {r[0] for r in con.execute(f"select {KEYS[table]} from raw.{table}").fetchall()}
            bad = {key for key, _ in fault.quarantined.get(table, [])}
            assert held == {str(r[0]) for r in rows} - bad, table
            received, loaded, held_back = con.execute(
                "select received, loaded, quarantined from audit.delivery_tables "
                "where table_name = ?",
                [table],
            ).fetchone()
            assert (received, loaded, held_back) == (
                len(rows),
                len(rows) - len(fault.quarantined.get(table, [])),
                len(fault.quarantined.get(table, [])),
            )


def test_the_corpus_is_large_and_spans_every_level():
    assert len(FAULTS) >= 30
    assert sum(f.refused is not None for f in FAULTS) >= 20
    assert sum(bool(f.quarantined) for f in FAULTS) >= 15
