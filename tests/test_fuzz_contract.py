"""Property-based tests of the contract parser and loader (hypothesis).

Hypothesis generates valid deliveries (one practice, up to four patients and their records,
each table in CSV, gzip CSV or Parquet with its columns in any order, full or delta), then
breaks them at random, and each one is ingested into a fresh warehouse:

1. row faults (a value that breaks its column's rule, an arbitrary string, a repeated
   record id, an unknown patient, a practice not in the manifest): the delivery is applied,
   every table accounts for its rows (received = loaded + quarantined, in audit.delivery_tables,
   raw and audit.quarantine alike), every row known to be bad is quarantined, and every good
   row is loaded with its values. A row is good when nothing was done to it and nothing it
   refers to (its patient, its consultation) was broken; a row holding an arbitrary string,
   and rows that refer to it, may go either way.
2. manifest and file faults (a missing or mistyped key, a wrong count or hash, a bad path,
   a truncated or missing file, random bytes for a manifest): the delivery is refused whole,
   and nothing of it is applied or quarantined.
3. bytes of a file flipped behind a manifest hash made true again: either refused whole with
   nothing applied, or every table accounts for its rows.

The examples are derandomized (the same ones every run, no example database), so CI is
deterministic; EXAMPLES says how many each property runs.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sprx_pipeline import contract
from sprx_pipeline.contract import DELETIONS, TABLES, TableSpec, sha256_file, write_manifest
from sprx_pipeline.ingest import apply_folder
from sprx_pipeline.warehouse import connect

# Examples per family of faults: 3 x 20 row faults + 11 x 6 manifest and file faults + 20
# rehashed corruptions = 146 deliveries.
EXAMPLES = {"row_faults": 20, "manifest_faults": 6, "rehashed": 20}
FUZZ = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PRACTICE, DELIVERY, EXTRACTED_AT = "P1", "2019-12-31_emis_001", "2019-12-31"
SNOMED_CODES = ("871731000000106", "871711000000103", "32911000", "390893007", "38341003")
FORMATS = ("csv", "csv.gz", "parquet")
Row = dict[str, Any]
Tables = dict[str, list[Row]]
pytestmark = pytest.mark.slow  # an example ingests into a fresh DuckDB file: up to ~0.5 s


def spec_of(table: str) -> TableSpec:
    return DELETIONS if table == DELETIONS.name else TABLES[table]


# --- valid deliveries ----------------------------------------------------------------------

EVENT_DATES = st.dates(date(2015, 1, 1), date(2019, 6, 30)).map(date.isoformat)


@st.composite
def valid_tables(draw: st.DrawFn) -> Tables:
    """One practice's tables, every row valid: events after 2015, births by 2000, deaths
    (if any) after every event, nothing after the extract date."""
    patients = [f"A{i}" for i in range(draw(st.integers(1, 4)))]
    pick = st.sampled_from(patients)

    def some(make, prefix: str, most: int) -> list[Row]:
        return [make(f"{prefix}{i}") for i in range(draw(st.integers(0, most)))]

    consultations = some(
        lambda key: {
            "consultation_id": key,
            "patient_id": draw(pick),
            "practice_id": PRACTICE,
            "consultation_date": draw(EVENT_DATES),
            "mode": draw(st.sampled_from(contract.CONSULTATION_MODES)),
            "staff_role": draw(st.sampled_from(contract.STAFF_ROLES)),
        },
        "C",
        4,
    )
    consulted = [c["consultation_id"] for c in consultations]
    return {
        "practices": [{"practice_id": PRACTICE, "region": draw(st.sampled_from(contract.REGIONS))}],
        "patients": [
            {
                "patient_id": p,
                "practice_id": PRACTICE,
                "year_of_birth": str(draw(st.integers(1930, 2000))),
                "sex": draw(st.sampled_from(contract.SEXES)),
                "ethnicity": draw(st.sampled_from(contract.ETHNICITIES)),
                "imd_quintile": draw(st.sampled_from([None, "1", "2", "3", "4", "5"])),
                "rural_urban": draw(st.sampled_from([None, *contract.RURAL_URBAN])),
                "date_of_death": draw(st.sampled_from([None, "2019-09-30"])),
            }
            for p in patients
        ],
        "registrations": [
            {
                "registration_id": f"R{i}",
                "patient_id": p,
                "practice_id": PRACTICE,
                "start_date": draw(
                    st.dates(date(2000, 1, 1), date(2014, 12, 31)).map(date.isoformat)
                ),
                "end_date": draw(st.sampled_from([None, "2019-08-31"])),
            }
            for i, p in enumerate(patients)
        ],
        "consultations": consultations,
        "clinical_events": some(
            lambda key: {
                "event_id": key,
                "patient_id": draw(pick),
                "practice_id": PRACTICE,
                "event_date": draw(EVENT_DATES),
                "snomed_code": draw(st.sampled_from(SNOMED_CODES)),
                "consultation_id": draw(st.sampled_from([None, *consulted])),
                "numeric_value": draw(
                    st.sampled_from([None, str(draw(st.integers(-(10**6), 10**6)) / 100)])
                ),
            },
            "E",
            4,
        ),
        "hospital_attendances": some(
            lambda key: {
                "attendance_id": key,
                "patient_id": draw(pick),
                "practice_id": PRACTICE,
                "attendance_date": draw(EVENT_DATES),
                "setting": draw(st.sampled_from(contract.ATTENDANCE_SETTINGS)),
            },
            "H",
            3,
        ),
    }


@st.composite
def valid_delivery(draw: st.DrawFn) -> Delivery:
    tables = draw(valid_tables())
    kind = draw(st.sampled_from(["full", "delta"]))
    if kind == "delta":  # a delta carries some tables, and may delete records it does not hold
        kept = draw(st.sets(st.sampled_from(list(TABLES)), min_size=1))
        tables = {t: rows for t, rows in tables.items() if t in kept}
        tables["deletions"] = [
            {"table_name": draw(st.sampled_from(list(TABLES))), "record_id": f"X{i}"}
            for i in range(draw(st.integers(0, 2)))
        ]
    layout = {
        t: (draw(st.sampled_from(FORMATS)), draw(st.permutations(spec_of(t).column_names)))
        for t in tables
    }
    return Delivery(kind, tables, layout)


# --- faults --------------------------------------------------------------------------------


def bad_values(spec: TableSpec, column: str) -> list[str]:
    """Values that certainly break a rule of `column` (and are not direct identifiers)."""
    col = spec.column(column)
    values = [] if col.nullable else [""]
    values += {
        "id": ["a b", "x" * 65, "é1"],
        "int": ["x1", "1.5"],
        "date": ["2019-02-30", "2019/01/01", "2030-01-01"],
        "number": ["high", "nan"],
        "code": ["12345", "HTN"],
        "text": [],
    }[col.kind]
    if col.allowed is not None:
        values.append("ZZ" if col.kind == "text" else "6")
    if column == "year_of_birth":
        values.append("1850")
    return values


@dataclass
class Delivery:
    """A generated delivery: its rows (strings or None), how each file is written, and which
    rows were made bad for certain, or made uncertain, by the faults."""

    kind: str
    tables: Tables
    layout: dict[str, tuple[str, list[str]]]
    bad: set[tuple[str, int]] = field(default_factory=set)
    unsure: dict[tuple[str, int], Row] = field(default_factory=dict)  # row as it was


ROW_FAULTS = {  # families, so that each is drawn as often as the others
    "values that break a rule": ("bad_value",),
    "arbitrary strings": ("arbitrary_value",),
    "references": ("repeat", "stranger", "foreign_practice"),
}


@st.composite
def with_row_faults(draw: st.DrawFn, family: str) -> Delivery:
    """A valid delivery with one to three row faults of one family."""
    delivery = draw(valid_delivery())
    filled = [t for t, rows in delivery.tables.items() if rows]
    for _ in range(draw(st.integers(1, 3)) if filled else 0):
        table = draw(st.sampled_from(filled))
        index = draw(st.integers(0, len(delivery.tables[table]) - 1))
        row, spec = delivery.tables[table][index], spec_of(table)
        column = draw(st.sampled_from(spec.column_names))
        fault = draw(st.sampled_from(ROW_FAULTS[family]))
        if fault == "bad_value":
            row[column] = draw(st.sampled_from(bad_values(spec, column)))
            delivery.bad.add((table, index))
        elif fault == "arbitrary_value":
            delivery.unsure.setdefault((table, index), dict(row))
            row[column] = draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=12))
        elif fault == "repeat":  # the copy and the original share a key: both quarantined
            delivery.tables[table].append(dict(row))
        elif fault == "stranger" and "patient_id" in row and table != "patients":
            row["patient_id"] = "Z9"
            delivery.bad.add((table, index))
        elif fault == "foreign_practice" and "practice_id" in row:
            row["practice_id"] = "P2"
            delivery.bad.add((table, index))
    return delivery


# --- writing -------------------------------------------------------------------------------


def write(delivery: Delivery, landing: Path) -> Path:
    """Write the delivery's files and a truthful manifest."""
    folder = landing / DELIVERY
    folder.mkdir(parents=True)
    files = {}
    for table, rows in delivery.tables.items():
        fmt, columns = delivery.layout[table]
        path = folder / f"{table}.{fmt}"
        if fmt == "parquet":
            data = {c: [r[c] for r in rows] for c in columns}
            pq.write_table(
                pa.table(data, schema=pa.schema([(c, pa.string()) for c in columns])), path
            )
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([["" if r[c] is None else r[c] for c in columns] for r in rows])
            payload = buffer.getvalue().encode("utf-8")
            path.write_bytes(gzip.compress(payload, mtime=0) if fmt == "csv.gz" else payload)
        files[table] = {"path": path.name, "rows": len(rows), "sha256": sha256_file(path)}
    write_manifest(
        folder,
        {
            "contract_version": "1",
            "delivery_id": DELIVERY,
            "extracted_at": EXTRACTED_AT,
            "kind": delivery.kind,
            "source_system": "EMIS",
            "practices": [PRACTICE],
            "files": files,
        },
    )
    return folder


def ingest_once(delivery: Delivery, mutate=None) -> tuple[Any, dict[str, Any]]:
    """Write and ingest a delivery in a fresh warehouse; its outcome and what was kept."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(delivery, Path(tmp) / "landing")
        if mutate:
            mutate(folder)
        with connect(Path(tmp) / "wh.duckdb") as con:
            outcome = apply_folder(con, folder)
            kept = {
                "raw": {
                    t: con.execute(f"select {', '.join(spec.column_names)} from raw.{t}").fetchall()
                    for t, spec in TABLES.items()
                },
                "quarantine": con.execute(
                    "select table_name, row_number, rule from audit.quarantine"
                ).fetchall(),
                "accounts": {
                    t: (r, lo, q)
                    for t, r, lo, q in con.execute(
                        "select table_name, received, loaded, quarantined "
                        "from audit.delivery_tables"
                    ).fetchall()
                },
                "deliveries": con.execute("select status from audit.deliveries").fetchall(),
            }
    return outcome, kept


# --- the oracle ----------------------------------------------------------------------------


def judge(delivery: Delivery) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Which rows must be quarantined, and which may go either way, following references:
    a repeated key quarantines every copy; a row whose patient (or consultation) is not
    loaded is quarantined; one whose patient is uncertain is uncertain."""
    bad, unsure = set(delivery.bad), set(delivery.unsure)
    for table, rows in delivery.tables.items():
        key = spec_of(table).key
        copies: dict[tuple, set[tuple[str, int]]] = {}
        for i, row in enumerate(rows):
            copies.setdefault(tuple(row[k] for k in key), set()).add((table, i))
        for rows_sharing_a_key in (c for c in copies.values() if len(c) > 1):
            # every copy is quarantined, unless an arbitrary string made the copy
            (unsure if rows_sharing_a_key & unsure else bad).update(rows_sharing_a_key)

    def ids(table: str, key: tuple[str, ...]) -> tuple[set, set]:
        """Keys certainly loaded, and keys perhaps loaded (an uncertain row's, as it is
        and as it was before its arbitrary string)."""
        rows = delivery.tables.get(table, [])
        loaded = {
            tuple(r[k] for k in key) for i, r in enumerate(rows) if (table, i) not in bad | unsure
        }
        maybe = {tuple(r[k] for k in key) for i, r in enumerate(rows) if (table, i) in unsure}
        maybe |= {tuple(r[k] for k in key) for (t, _), r in delivery.unsure.items() if t == table}
        return loaded, maybe

    def follow(table: str, column: tuple[str, ...], loaded: set, maybe: set) -> None:
        for i, row in enumerate(delivery.tables.get(table, [])):
            ref = tuple(row[c] for c in column)
            if (table, i) in bad | unsure or None in ref:  # an uncertain row stays uncertain
                continue
            if ref not in loaded:
                (unsure if ref in maybe else bad).add((table, i))

    patients = ids("patients", ("practice_id", "patient_id"))
    for table in ("registrations", "consultations", "clinical_events", "hospital_attendances"):
        follow(table, ("practice_id", "patient_id"), *patients)
    follow("clinical_events", ("consultation_id",), *ids("consultations", ("consultation_id",)))
    return bad, unsure - bad


def typed(spec: TableSpec, row: Row) -> tuple:
    """A generated (good) row as the warehouse holds it."""
    convert = {"int": int, "number": float, "date": date.fromisoformat}
    return tuple(
        None if row[c.name] is None else convert.get(c.kind, str)(row[c.name]) for c in spec.columns
    )


# --- the properties --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ROW_FAULTS)
@settings(max_examples=EXAMPLES["row_faults"], **FUZZ)
@given(data=st.data())
def test_every_row_is_loaded_or_quarantined_and_accounted_for(family, data):
    delivery = data.draw(with_row_faults(family))
    outcome, kept = ingest_once(delivery)
    bad, unsure = judge(delivery)
    if outcome.status == "refused":
        # Only an arbitrary string can make a file unreadable (say a bare carriage return in
        # an unquoted CSV field) or look like an identifier; nothing is then applied.
        event(f"refused: {outcome.reason.split(': ')[1]}")
        assert delivery.unsure, outcome.reason
        assert all(rows == [] for rows in kept["raw"].values())
        assert kept["quarantine"] == [] and kept["accounts"] == {}
        return
    event(
        f"{delivery.kind} delivery; rows known bad: {min(len(bad), 3)}{'+' * (len(bad) > 2)}; "
        f"uncertain: {bool(unsure)}"
    )
    quarantined = Counter((t, n - 1) for t, n, _ in kept["quarantine"])
    for table, rows in delivery.tables.items():
        held_back = {i for t, i in quarantined if t == table}
        # received = loaded + quarantined, and the audit, raw and quarantine rows agree
        received, loaded, quarantined_count = kept["accounts"][table]
        assert (received, loaded + quarantined_count) == (len(rows), len(rows))
        assert (
            quarantined_count
            == len(held_back)
            == sum(n for (t, _), n in quarantined.items() if t == table)
        )
        # every row known to be bad is quarantined; none known to be good is
        must = {i for t, i in bad if t == table}
        good = set(range(len(rows))) - must - {i for t, i in unsure if t == table}
        assert must <= held_back, (table, must - held_back)
        assert not good & held_back, (table, good & held_back)
        if table in TABLES:  # every good row is in raw, with its values
            assert loaded == len(kept["raw"][table])
            in_raw = Counter(kept["raw"][table])
            expected = Counter(typed(spec_of(table), rows[i]) for i in good)
            assert not expected - in_raw, (table, expected - in_raw)


def corrupt_manifest(change):
    def mutate(folder: Path) -> None:
        path = folder / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return mutate


def first_file(folder: Path) -> Path:
    return folder / first_entry(json.loads((folder / "manifest.json").read_text()))["path"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


MANIFEST_KEYS = (
    "contract_version",
    "delivery_id",
    "extracted_at",
    "kind",
    "source_system",
    "practices",
    "files",
)
WRONG_VALUES = {
    "contract_version": ["2", 2, None],
    "delivery_id": ["bad id!", "", 7, "2019-12-31_emis_002"],
    "extracted_at": ["2019-13-01", "31/12/2019", 20191231, "2019-02-29"],
    "kind": ["partial", None],
    "source_system": ["Cerner", ""],
    "practices": [[], PRACTICE, [1], [PRACTICE, PRACTICE]],
    "files": [{}, []],
}
WRONG_ENTRIES = {
    "rows": [-1, "3", True, 2.5, 10**6],
    "sha256": ["abc", "g" * 64, "0" * 64],
    "path": ["../x.csv", "x.txt", "a/b.csv", ".hidden.csv", "missing.csv"],
}


def first_entry(manifest: dict) -> dict:
    return manifest["files"][sorted(manifest["files"])[0]]


def change_file(change):
    return lambda folder: first_file(folder).write_bytes(change(first_file(folder).read_bytes()))


# Each fault: a strategy for a change to a delivery's folder that must get it refused whole.
MANIFEST_FAULTS = {
    "drop a key": st.sampled_from(MANIFEST_KEYS).map(
        lambda key: corrupt_manifest(lambda m: m.pop(key))
    ),
    "mistype a key": st.sampled_from(MANIFEST_KEYS).flatmap(
        lambda key: st.sampled_from(WRONG_VALUES[key]).map(
            lambda value: corrupt_manifest(lambda m: m.update({key: value}))
        )
    ),
    "break a file entry": st.sampled_from(sorted(WRONG_ENTRIES)).flatmap(
        lambda field_: st.sampled_from(WRONG_ENTRIES[field_]).map(
            lambda value: corrupt_manifest(lambda m: first_entry(m).update({field_: value}))
        )
    ),
    "miscount a file": st.sampled_from([-1, 1]).map(
        lambda by: corrupt_manifest(
            lambda m: first_entry(m).update(rows=first_entry(m)["rows"] + by)
        )
    ),
    "name an unknown table": st.just(
        corrupt_manifest(lambda m: m["files"].update(prescriptions=first_entry(m)))
    ),
    "random bytes": st.binary(max_size=64).map(
        lambda blob: lambda folder: (folder / "manifest.json").write_bytes(blob)
    ),
    "random JSON": JSON_VALUES.map(
        lambda doc: lambda folder: (folder / "manifest.json").write_text(json.dumps(doc))
    ),
    "truncate a file": st.integers(1, 20).map(lambda n: change_file(lambda data: data[:-n])),
    "append to a file": st.binary(min_size=1, max_size=20).map(
        lambda extra: change_file(lambda data: data + extra)
    ),
    "flip a byte": st.integers(0, 10**6).map(
        lambda at: change_file(
            lambda data: (
                data[: at % len(data)]
                + bytes([data[at % len(data)] ^ 0xFF])
                + data[at % len(data) + 1 :]
            )
        )
    ),
    "delete a file": st.just(lambda folder: first_file(folder).unlink()),
}


@pytest.mark.parametrize("fault", MANIFEST_FAULTS)
@settings(max_examples=EXAMPLES["manifest_faults"], **FUZZ)
@given(data=st.data())
def test_a_broken_manifest_or_file_is_refused_whole_with_nothing_applied(fault, data):
    outcome, kept = ingest_once(data.draw(valid_delivery()), data.draw(MANIFEST_FAULTS[fault]))
    event(outcome.reason.split(": ")[1] if ": " in outcome.reason else outcome.status)
    assert outcome.status == "refused", fault
    assert all(rows == [] for rows in kept["raw"].values())
    assert kept["quarantine"] == [] and kept["accounts"] == {}
    assert kept["deliveries"] == [("refused",)]


@st.composite
def rehashed_corruption(draw: st.DrawFn):
    """Flip one to three bytes of one file and make the manifest's hash true again: only the
    readers and the row rules stand between those bytes and the warehouse."""
    flips = draw(
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3)
    )

    def mutate(folder: Path) -> None:
        path = first_file(folder)
        data = bytearray(path.read_bytes())
        for at, mask in flips:
            data[at % len(data)] ^= mask
        path.write_bytes(bytes(data))
        corrupt_manifest(lambda m: first_entry(m).update(sha256=sha256_file(path)))(folder)

    return mutate


@settings(max_examples=EXAMPLES["rehashed"], **FUZZ)
@given(valid_delivery(), rehashed_corruption())
def test_corrupt_bytes_behind_a_true_hash_are_refused_whole_or_accounted_for(delivery, mutate):
    outcome, kept = ingest_once(delivery, mutate)
    event(outcome.status)
    if outcome.status == "refused":
        assert all(rows == [] for rows in kept["raw"].values())
        assert kept["quarantine"] == [] and kept["accounts"] == {}
        return
    quarantined = Counter(t for t, _, _ in kept["quarantine"])
    for table, (received, loaded, held_back) in kept["accounts"].items():
        assert received == loaded + held_back == len(delivery.tables.get(table, [])), table
        assert held_back == quarantined[table]
        if table in TABLES:
            assert loaded == len(kept["raw"][table])


# --- what fuzzing found, kept as plain tests ---------------------------------------------------


def one_table_delivery(landing: Path, table_bytes: bytes, name: str) -> Path:
    """A full delivery of empty tables but `practices`, whose file holds `table_bytes`."""
    from deliveries import write_delivery

    folder = write_delivery(landing, DELIVERY, EXTRACTED_AT, "EMIS", [PRACTICE], {})
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / manifest["files"]["practices"]["path"]).unlink()
    (folder / name).write_bytes(table_bytes)
    manifest["files"]["practices"] = {"path": name, "rows": 1, "sha256": sha256_file(folder / name)}
    write_manifest(folder, manifest)
    return folder


def test_a_gzip_file_that_does_not_decompress_is_refused_not_a_crash(tmp_path):
    # Found by test_corrupt_bytes_behind_a_true_hash_...: gzip raised zlib.error, which is
    # not an OSError, and ingest stopped with a traceback. Flipping the first bit of the
    # deflate stream (byte 10, after the gzip header) does the same.
    data = bytearray(gzip.compress(b"practice_id,region\nP1,London\n", mtime=0))
    data[10] ^= 0x01
    folder = one_table_delivery(tmp_path / "landing", bytes(data), "practices.csv.gz")
    with connect(tmp_path / "wh.duckdb") as con:
        outcome = apply_folder(con, folder)
    assert outcome.status == "refused"
    assert "practices.csv.gz: file_format: cannot be read" in outcome.reason


def test_a_bare_carriage_return_in_a_csv_field_refuses_the_file_whole(tmp_path):
    # Found by the arbitrary-strings family: Python's csv module, writing "\n" line ends,
    # does not quote a field holding "\r", and DuckDB's reader cannot read the file. The
    # delivery is refused whole, naming the file. Quoted, the same value is read and
    # quarantined like any other bad id.
    folder = one_table_delivery(
        tmp_path / "landing", b"practice_id,region\n0\r,London\n", "practices.csv"
    )
    with connect(tmp_path / "wh.duckdb") as con:
        outcome = apply_folder(con, folder)
        assert con.execute("select count(*) from raw.practices").fetchone() == (0,)
    assert outcome.status == "refused"
    assert "practices.csv: unreadable_file" in outcome.reason

    quoted = one_table_delivery(
        tmp_path / "quoted", b'practice_id,region\n"0\r",London\n', "practices.csv"
    )
    with connect(tmp_path / "quoted.duckdb") as con:
        assert apply_folder(con, quoted).status == "applied"
        assert con.execute("select rule from audit.quarantine").fetchall() == [
            ("id_format:practice_id",)
        ]
