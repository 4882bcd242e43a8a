"""The extract contract, version 1: what a delivery must look like.

This module is the single Python statement of `docs/extract-contract.md`. Every other
module (the generator, the loader, the quality checks) reads table layouts and allowed
values from here, so that a change to the contract is made once.

>>> TABLES["consultations"].key
('consultation_id',)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from .study import declared

CONTRACT_VERSION = "1"
MANIFEST_NAME = "manifest.json"

SOURCE_SYSTEMS = ("EMIS", "TPP", "Vision", "Microtest", "other")
DELIVERY_KINDS = ("full", "delta")
REGIONS = (
    "North East and Yorkshire",
    "North West",
    "Midlands",
    "East of England",
    "London",
    "South East",
    "South West",
)
SEXES = ("F", "M", "I", "U")
ETHNICITIES = ("White", "Mixed", "Asian", "Black", "Other", "Unknown")
RURAL_URBAN = ("urban", "rural")
# The modes are the study declaration's (dbt_project.yml var consultation_modes): the by-mode
# counts of the marts and the values a delivery may carry are one list.
CONSULTATION_MODES = declared().consultation_modes
STAFF_ROLES = ("gp", "nurse", "link_worker", "other")
ATTENDANCE_SETTINGS = ("ae", "emergency_admission", "elective_admission", "outpatient")

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_ID_RE = re.compile(ID_PATTERN)
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    `kind` is one of id, text, int, date, number, code (a SNOMED CT concept id).
    """

    name: str
    kind: str
    nullable: bool = False
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableSpec:
    """A contract table: its columns in file order and its record key."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _ids(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, "id") for n in names)


# Tables in load order: a table is loaded after every table it refers to.
TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "practices",
            (Column("practice_id", "id"), Column("region", "text", allowed=REGIONS)),
            key=("practice_id",),
        ),
        TableSpec(
            "patients",
            (
                *_ids("patient_id", "practice_id"),
                Column("year_of_birth", "int"),
                Column("sex", "text", allowed=SEXES),
                Column("ethnicity", "text", allowed=ETHNICITIES),
                Column("imd_quintile", "int", nullable=True, allowed=("1", "2", "3", "4", "5")),
                Column("rural_urban", "text", nullable=True, allowed=RURAL_URBAN),
                Column("date_of_death", "date", nullable=True),
            ),
            key=("practice_id", "patient_id"),
        ),
        TableSpec(
            "registrations",
            (
                *_ids("registration_id", "patient_id", "practice_id"),
                Column("start_date", "date"),
                Column("end_date", "date", nullable=True),
            ),
            key=("registration_id",),
        ),
        TableSpec(
            "consultations",
            (
                *_ids("consultation_id", "patient_id", "practice_id"),
                Column("consultation_date", "date"),
                Column("mode", "text", allowed=CONSULTATION_MODES),
                Column("staff_role", "text", allowed=STAFF_ROLES),
            ),
            key=("consultation_id",),
        ),
        TableSpec(
            "clinical_events",
            (
                *_ids("event_id", "patient_id", "practice_id"),
                Column("event_date", "date"),
                Column("snomed_code", "code"),
                Column("consultation_id", "id", nullable=True),
                Column("numeric_value", "number", nullable=True),
            ),
            key=("event_id",),
        ),
        TableSpec(
            "hospital_attendances",
            (
                *_ids("attendance_id", "patient_id", "practice_id"),
                Column("attendance_date", "date"),
                Column("setting", "text", allowed=ATTENDANCE_SETTINGS),
            ),
            key=("attendance_id",),
        ),
    )
}

DELETIONS = TableSpec(
    "deletions",
    (Column("table_name", "text", allowed=tuple(TABLES)), Column("record_id", "id")),
    key=("table_name", "record_id"),
)

# The date column of each table that must not be later than `extracted_at`.
EVENT_DATE_COLUMNS: dict[str, str] = {
    "registrations": "start_date",
    "consultations": "consultation_date",
    "clinical_events": "event_date",
    "hospital_attendances": "attendance_date",
}


class ContractError(ValueError):
    """A delivery breaks the contract. The message names the file, the field and the rule."""

    def __init__(self, where: str, rule: str, detail: str):
        self.where, self.rule, self.detail = where, rule, detail
        super().__init__(f"{where}: {rule}: {detail}")


@dataclass(frozen=True)
class FileEntry:
    """One table file listed in a manifest."""

    table: str
    path: Path
    rows: int
    sha256: str

    @property
    def format(self) -> str:
        return "parquet" if self.path.name.endswith(".parquet") else "csv"


@dataclass(frozen=True)
class Manifest:
    """A parsed, structurally valid delivery manifest."""

    delivery_id: str
    extracted_at: date
    kind: str
    source_system: str
    practices: tuple[str, ...]
    files: dict[str, FileEntry]
    directory: Path
    manifest_sha256: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def order_key(self) -> tuple[date, str]:
        """Deliveries are applied in order of extracted_at, then delivery_id."""
        return (self.extracted_at, self.delivery_id)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, streamed so that large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _require(condition: bool, where: str, rule: str, detail: str) -> None:
    if not condition:
        raise ContractError(where, rule, detail)


def _parse_date(value: Any, where: str) -> date:
    _require(
        isinstance(value, str) and re.fullmatch(DATE_PATTERN, value) is not None,
        where,
        "iso_date",
        f"expected YYYY-MM-DD, got {value!r}",
    )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ContractError(where, "iso_date", f"{value!r} is not a real date") from None


def parse_manifest(data: Any, directory: Path, manifest_sha256: str = "") -> Manifest:
    """Check a manifest's structure and return it typed; raise ContractError otherwise.

    File contents are not read here: `ingest` checks hashes, counts and columns.
    """
    where = str(directory / MANIFEST_NAME)
    _require(isinstance(data, dict), where, "manifest_shape", "the manifest must be a JSON object")
    missing = [
        k
        for k in (
            "contract_version",
            "delivery_id",
            "extracted_at",
            "kind",
            "source_system",
            "practices",
            "files",
        )
        if k not in data
    ]
    _require(not missing, where, "manifest_shape", f"missing keys: {', '.join(missing)}")
    _require(
        str(data["contract_version"]) == CONTRACT_VERSION,
        f"{where} contract_version",
        "contract_version",
        f"unknown contract version {data['contract_version']!r}; "
        f"this pipeline reads version {CONTRACT_VERSION}",
    )
    delivery_id = data["delivery_id"]
    _require(
        isinstance(delivery_id, str) and bool(_ID_RE.fullmatch(delivery_id)),
        f"{where} delivery_id",
        "id_format",
        f"{delivery_id!r} is not 1-64 of A-Z a-z 0-9 _ -",
    )
    extracted_at = _parse_date(data["extracted_at"], f"{where} extracted_at")
    _require(
        data["kind"] in DELIVERY_KINDS,
        f"{where} kind",
        "allowed_values",
        f"{data['kind']!r} is not one of {', '.join(DELIVERY_KINDS)}",
    )
    _require(
        data["source_system"] in SOURCE_SYSTEMS,
        f"{where} source_system",
        "allowed_values",
        f"{data['source_system']!r} is not one of {', '.join(SOURCE_SYSTEMS)}",
    )
    practices = data["practices"]
    _require(
        isinstance(practices, list)
        and len(practices) > 0
        and all(isinstance(p, str) and _ID_RE.fullmatch(p) for p in practices),
        f"{where} practices",
        "practice_list",
        "expected a non-empty list of practice ids",
    )
    _require(
        len(set(practices)) == len(practices),
        f"{where} practices",
        "practice_list",
        "a practice is listed twice",
    )
    files = data["files"]
    _require(
        isinstance(files, dict) and len(files) > 0,
        f"{where} files",
        "manifest_shape",
        "expected an object of table files",
    )
    known = set(TABLES) | ({DELETIONS.name} if data["kind"] == "delta" else set())
    entries: dict[str, FileEntry] = {}
    for table, entry in files.items():
        at = f"{where} files.{table}"
        _require(
            table in known,
            at,
            "unknown_table",
            f"{table!r} is not a table of contract version {CONTRACT_VERSION}",
        )
        _require(
            isinstance(entry, dict) and {"path", "rows", "sha256"} <= set(entry),
            at,
            "manifest_shape",
            "each file needs path, rows and sha256",
        )
        path = entry["path"]
        _require(
            isinstance(path, str)
            and path.endswith(FILE_SUFFIXES)
            and "/" not in path
            and "\\" not in path
            and not path.startswith("."),
            at,
            "file_path",
            f"{path!r} must be a file name in the delivery ending {', '.join(FILE_SUFFIXES)}",
        )
        rows = entry["rows"]
        _require(
            isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0,
            at,
            "manifest_shape",
            f"rows must be a whole number >= 0, got {rows!r}",
        )
        sha = entry["sha256"]
        _require(
            isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha) is not None,
            at,
            "manifest_shape",
            "sha256 must be 64 hexadecimal digits",
        )
        entries[table] = FileEntry(table, directory / path, rows, sha.lower())
    if data["kind"] == "full":
        absent = [t for t in TABLES if t not in entries]
        _require(
            not absent,
            f"{where} files",
            "missing_table",
            f"a full delivery must carry every table; missing {', '.join(absent)}",
        )
    return Manifest(
        delivery_id=delivery_id,
        extracted_at=extracted_at,
        kind=data["kind"],
        source_system=data["source_system"],
        practices=tuple(practices),
        files=entries,
        directory=directory,
        manifest_sha256=manifest_sha256,
        raw=data,
    )


def read_manifest(directory: Path) -> Manifest:
    """Read and check `manifest.json` in a delivery directory."""
    path = directory / MANIFEST_NAME
    _require(path.is_file(), str(path), "missing_manifest", "the delivery has no manifest.json")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(str(path), "manifest_json", f"not valid UTF-8 JSON ({exc})") from None
    manifest = parse_manifest(data, directory, hashlib.sha256(raw).hexdigest())
    _require(
        manifest.delivery_id == directory.name,
        f"{path} delivery_id",
        "delivery_dir",
        f"delivery_id {manifest.delivery_id!r} differs from its folder name {directory.name!r}",
    )
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write a manifest as sorted, indented JSON (used by the generator and tests)."""
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def file_entry(path: Path, rows: int) -> dict[str, Any]:
    """The manifest entry for a table file that has just been written."""
    return {"path": path.name, "rows": rows, "sha256": sha256_file(path)}
