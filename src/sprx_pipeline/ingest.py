"""Apply deliveries from the landing area to the warehouse, in contract order.

Each delivery goes through three gates, and only then is applied in one transaction:
1. files: every file the manifest lists exists, has its SHA-256 and the contract's columns;
2. staging: each file is read by DuckDB's own reader as text, its row count is checked, and
   no column may hold direct identifiers (NHS numbers, postcodes, full dates of birth);
3. rows: every row is checked against the rules of its table (`column_rules`, `table_rules`);
   a failing row goes to `audit.quarantine` with the first rule it broke, never silently away.
A delivery that fails gate 1 or 2 is refused whole and recorded in `audit.deliveries`.

Each file is read once, into a temp table of text (`_in_<table>`, in file order, so a row's
number in the file is its rowid + 1). Every later step reads that table: one pass counts
the identifier evidence of every column, one pass evaluates every row rule and keeps only
the rows that break one (`_bad_<table>`: rowid and rule), and the load casts the rest. No
copy of the good rows is made before they are written.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from . import contract, record_keys
from .contract import DELETIONS, EVENT_DATE_COLUMNS, TABLES, ContractError, Manifest, TableSpec
from .faults import crash_point
from .identifiers import identifier_problems
from .snomed import snomed_problem
from .warehouse import SQL_TYPES

log = logging.getLogger(__name__)

# Tables whose rows belong to a patient, and which of their dates cannot follow death.
PATIENT_TABLES = ("registrations", "consultations", "clinical_events", "hospital_attendances")
NOT_AFTER_DEATH = {
    "registrations": "start_date",
    "consultations": "consultation_date",
    "hospital_attendances": "attendance_date",
}


class IngestError(RuntimeError):
    """The landing area itself cannot be read (as opposed to one bad delivery)."""


@dataclass
class TableCount:
    table: str
    received: int
    loaded: int
    quarantined: int


@dataclass
class DeliveryOutcome:
    """What happened to one delivery in this run: applied, refused or skipped."""

    delivery_id: str
    status: str
    reason: str = ""
    tables: list[TableCount] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)


@dataclass
class IngestReport:
    outcomes: list[DeliveryOutcome]

    def with_status(self, status: str) -> list[DeliveryOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def applied(self) -> list[DeliveryOutcome]:
        return self.with_status("applied")

    @property
    def refused(self) -> list[DeliveryOutcome]:
        return self.with_status("refused")


@dataclass(frozen=True)
class Unreadable:
    """A delivery folder whose manifest could not be parsed."""

    directory: Path
    error: ContractError
    manifest_sha256: str


# --- discovery ---------------------------------------------------------------------------


def discover(landing: Path) -> list[Manifest | Unreadable]:
    """Every delivery folder in `landing`, in the order the contract applies them."""
    if not landing.is_dir():
        raise IngestError(
            f"landing area {landing} does not exist or is not a folder; "
            "create it or pass the folder that holds the delivery folders"
        )
    found = [
        read_item(p) for p in sorted(landing.iterdir()) if p.is_dir() and not p.name.startswith(".")
    ]
    unreadable = [f for f in found if isinstance(f, Unreadable)]
    readable = sorted((f for f in found if isinstance(f, Manifest)), key=lambda m: m.order_key)
    return [*unreadable, *readable]


def read_item(directory: Path) -> Manifest | Unreadable:
    """A delivery folder's parsed manifest, or why it could not be parsed."""
    try:
        return contract.read_manifest(directory)
    except ContractError as exc:
        manifest = directory / contract.MANIFEST_NAME
        digest = contract.sha256_file(manifest) if manifest.is_file() else ""
        return Unreadable(directory, exc, digest)


# --- gate 1: files -----------------------------------------------------------------------


def read_header(entry: contract.FileEntry) -> list[str]:
    """Column names of a table file, read without loading it."""
    if entry.format == "parquet":
        try:
            return list(pq.read_schema(entry.path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ContractError(
                str(entry.path), "file_format", f"not a Parquet file ({exc})"
            ) from exc
    opener = gzip.open if entry.path.name.endswith(".gz") else open
    try:
        with opener(entry.path, "rb") as handle:
            line = handle.readline()
    except (OSError, EOFError, zlib.error) as exc:  # a damaged gzip stream raises zlib.error
        raise ContractError(str(entry.path), "file_format", f"cannot be read ({exc})") from None
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")  # a byte-order mark is not a name
    except UnicodeDecodeError:
        raise ContractError(str(entry.path), "encoding", "header is not UTF-8") from None
    if not text:
        raise ContractError(str(entry.path), "missing_header", "the file has no header row")
    return [name.strip().strip('"') for name in text.split(",")]


def check_files(manifest: Manifest) -> None:
    """Gate 1: each listed file exists, matches its hash and has exactly the contract's columns."""
    for table, entry in manifest.files.items():
        where = str(entry.path)
        if not entry.path.is_file():
            raise ContractError(
                where,
                "missing_file",
                f"the manifest lists {entry.path.name} "
                "for table {table} but the file is not in the delivery",
            )
        actual = contract.sha256_file(entry.path)
        if actual != entry.sha256:
            raise ContractError(
                where,
                "sha256_mismatch",
                f"file hash {actual[:12]}… differs from the manifest's {entry.sha256[:12]}…",
            )
        spec = DELETIONS if table == DELETIONS.name else TABLES[table]
        header = read_header(entry)
        missing = [c for c in spec.column_names if c not in header]
        extra = [c for c in header if c not in spec.column_names]
        if missing or extra or len(set(header)) != len(header):
            detail = "; ".join(
                filter(
                    None,
                    [
                        f"missing column(s) {', '.join(missing)}" if missing else "",
                        f"unexpected column(s) {', '.join(extra)}" if extra else "",
                        "a column is repeated" if len(set(header)) != len(header) else "",
                    ],
                )
            )
            raise ContractError(
                where, "columns", f"{detail} (expected {','.join(spec.column_names)})"
            )


# --- gate 2: staging -----------------------------------------------------------------------


def _staged(table: str) -> str:
    return f"_in_{table}"


def stage_file(con: duckdb.DuckDBPyConnection, entry: contract.FileEntry, spec: TableSpec) -> int:
    """Load a table file into temp table `_in_<table>`, every column as text, and count it."""
    if entry.format == "parquet":
        schema = pq.read_schema(entry.path)
        select = ", ".join(
            f"{parquet_text(c.name, c.kind, schema.field(c.name).type)} as {c.name}"
            for c in spec.columns
        )
        source = "read_parquet(?)"
    else:
        select = ", ".join(spec.column_names)
        columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in read_header(entry)) + "}"
        source = (
            f"read_csv(?, header = true, delim = ',', quote = '\"', escape = '\"', "
            f"auto_detect = false, strict_mode = true, columns = {columns})"
        )
    try:
        # In file order (DuckDB preserves insertion order), so rowid + 1 is the row's number
        # in the file; a row_number() window would make the read single-threaded.
        con.execute(
            f"create or replace temp table {_staged(spec.name)} as select {select} from {source}",
            [str(entry.path)],
        )
    except duckdb.Error as exc:
        message = str(exc).splitlines()[0]
        raise ContractError(str(entry.path), "unreadable_file", message) from None
    (received,) = con.execute(f"select count(*) from {_staged(spec.name)}").fetchone()
    if received != entry.rows:
        raise ContractError(
            str(entry.path),
            "row_count",
            f"the manifest says {entry.rows} rows, the file has {received}",
        )
    return received


def parquet_text(column: str, kind: str, arrow_type: pa.DataType) -> str:
    """SQL for a Parquet column as the text the contract's CSV would hold.

    Parquet written from pandas stores an integer column with gaps as floats (3.0) and a
    date column as timestamps at midnight: read back as text, every such row would break
    `not_integer` or `invalid_date`. A whole float is written as the integer, a midnight
    timestamp as its date; anything else stays as it is, for the row rules to judge.
    """
    if kind in ("int", "id") and pa.types.is_floating(arrow_type):
        return (
            f"case when {column} = trunc({column}) and abs({column}) < 1e15 "
            f"then cast(cast({column} as bigint) as varchar) else cast({column} as varchar) end"
        )
    if kind == "date" and pa.types.is_timestamp(arrow_type) and arrow_type.tz is None:
        return (
            f"case when cast({column} as time) = time '00:00:00' "
            f"then strftime({column}, '%Y-%m-%d') else cast({column} as varchar) end"
        )
    return f"cast({column} as varchar)"


def refuse_identifiers(
    con: duckdb.DuckDBPyConnection, entry: contract.FileEntry, spec: TableSpec
) -> None:
    """Refuse the delivery if a column holds direct identifiers (before any row is kept,
    in the warehouse or in quarantine)."""
    if problems := identifier_problems(con, _staged(spec.name), spec):
        column, detail = problems[0]
        rule, _, evidence = detail.partition(": ")
        raise ContractError(
            f"{entry.path} column {column}",
            rule,
            f"{evidence}; direct identifiers must never enter the warehouse",
        )


# --- gate 3: rows --------------------------------------------------------------------------


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def typed(column: str) -> str:
    """The name under which check_rows computes a date or integer column's value once."""
    return f"r.{column}__typed"


def _typed_columns(spec: TableSpec) -> list[str]:
    """Each date and integer column cast once per row for every rule that reads it."""
    casts = {"date": "date", "int": "integer"}
    return [
        f"try_cast({c.name} as {casts[c.kind]}) as {c.name}__typed"
        for c in spec.columns
        if c.kind in casts
    ]


def _blank(value: str) -> str:
    """SQL true for an empty or all-space value; trim() runs only on values that start with
    a space or a control character (anything else sorts at or after '!')."""
    return f"({value} is null or (case when {value} < '!' then trim({value}) = '' else false end))"


def known_valid_ids(spec: TableSpec, manifest: Manifest) -> dict[str, str]:
    """For id columns whose value is proven well-formed by a join check_rows makes anyway,
    SQL that is true when it is: a practice the manifest lists (the manifest's ids were
    checked), or a patient found among the delivery's or the warehouse's checked patients.
    The id pattern is then matched only where the proof fails: the same rule, the same
    first broken rule, and two regular expressions fewer per row of the large tables."""
    known = {}
    if "practice_id" in spec.column_names:
        known["practice_id"] = f"r.practice_id in ({_sql_list(manifest.practices)})"
    if spec.name in PATIENT_TABLES:
        known["patient_id"] = "p.patient_id is not null"
    return known


def column_rules(
    spec: TableSpec, extracted_at: date, known_valid: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """(rule, SQL that is true when row `r` breaks it) for each column of a table;
    `known_valid` as `known_valid_ids` gives it."""
    rules: list[tuple[str, str]] = []
    cutoff = f"date '{extracted_at.isoformat()}'"
    for col in spec.columns:
        value = f"r.{col.name}"
        if not col.nullable:
            rules.append((f"missing_value:{col.name}", _blank(value)))
        id_format = f"not regexp_full_match({value}, '{contract.ID_PATTERN}')"
        if known_valid and col.name in known_valid:
            id_format = f"not ({known_valid[col.name]}) and {id_format}"
        checks = {
            "id": [("id_format", id_format)],
            "int": [("not_integer", f"not regexp_full_match({value}, '-?[0-9]{{1,9}}')")],
            "number": [
                ("not_number", f"coalesce(not isfinite(try_cast({value} as double)), true)")
            ],
            "date": [
                (
                    "invalid_date",
                    f"{typed(col.name)} is null "
                    f"or not regexp_full_match({value}, '{contract.DATE_PATTERN}')",
                ),
                ("after_extracted_at", f"{typed(col.name)} > {cutoff}"),
            ],
            "code": [("snomed_code", f"{value} in (select code from _bad_codes)")],
        }.get(col.kind, [])
        if col.allowed is not None:
            checks.append(("allowed_values", f"{value} not in ({_sql_list(col.allowed)})"))
        rules += [
            (f"{rule}:{col.name}", f"{value} is not null and ({sql})") for rule, sql in checks
        ]
    return rules


def table_rules(spec: TableSpec, manifest: Manifest) -> list[tuple[str, str]]:
    """Rules that relate a row to its manifest, its patient or other rows."""
    rules: list[tuple[str, str]] = []
    if "practice_id" in spec.column_names:
        rules.append(
            ("practice_not_in_delivery", f"r.practice_id not in ({_sql_list(manifest.practices)})")
        )
    if spec.name == "patients":
        rules += [
            (
                "year_of_birth_range",
                f"{typed('year_of_birth')} not between 1900 and {manifest.extracted_at.year}",
            ),
            ("death_before_birth", f"year({typed('date_of_death')}) < {typed('year_of_birth')}"),
        ]
    if spec.name == "registrations":
        rules.append(("end_before_start", f"{typed('end_date')} < {typed('start_date')}"))
    if spec.name in PATIENT_TABLES:
        event = typed(EVENT_DATE_COLUMNS[spec.name])
        rules += [
            ("unknown_patient", "p.patient_id is null"),
            ("before_birth", f"year({event}) < p.year_of_birth"),
        ]
        if spec.name in NOT_AFTER_DEATH:
            rules.append(("after_death", f"{event} > p.date_of_death"))
    if spec.name == "clinical_events":
        rules.append(
            (
                "unknown_consultation",
                "r.consultation_id is not null and "
                "r.consultation_id not in (select consultation_id from _known_consultations)",
            )
        )
    rules.append(("duplicate_key", "d.repeated"))  # the key repeats in the file (check_rows)
    if record_keys.is_keyed(spec):
        rules.append(
            (
                "key_in_other_practice",
                f"r.{spec.key[0]} in (select key from {_other_keys(spec.name)})",
            )
        )
    return rules


def _other_keys(table: str) -> str:
    return f"_other_keys_{table}"


def register_other_practice_keys(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, manifest: Manifest
) -> None:
    """Temp table of this delivery's record ids that the warehouse holds for a practice the
    delivery does not list. Such a row cannot be applied without two rows under one key (a
    pseudonym clash, or a row sent by the wrong practice), and it is not ours to replace."""
    if record_keys.is_keyed(spec):
        record_keys.register_held_elsewhere(
            con, spec, _staged(spec.name), _sql_list(manifest.practices), _other_keys(spec.name)
        )


def _bad(table: str) -> str:
    return f"_bad_{table}"


def _good(table: str) -> str:
    return f"_good_{table}"


def check_rows(con: duckdb.DuckDBPyConnection, spec: TableSpec, manifest: Manifest) -> int:
    """One pass over a staged table: temp table `_bad_<table>` holds the rowid and first
    broken rule of each row that breaks one, and view `_good_<table>` the other rows.
    Returns the number of rows that break a rule (to be quarantined)."""
    known = known_valid_ids(spec, manifest)
    rules = column_rules(spec, manifest.extracted_at, known) + table_rules(spec, manifest)
    case = "case " + " ".join(f"when {sql} then '{rule}'" for rule, sql in rules) + " end"
    key = ", ".join(spec.key)
    joins = (
        f" left join (select {key}, true as repeated from {_staged(spec.name)} "
        f"group by {key} having count(*) > 1) d using ({key})"
    )
    if spec.name in PATIENT_TABLES:
        joins += (
            " left join _known_patients p on p.practice_id = r.practice_id "
            "and p.patient_id = r.patient_id"
        )
    typed_columns = ", ".join(["rowid as _rowid", "*", *_typed_columns(spec)])
    con.execute(
        f"create or replace temp table {_bad(spec.name)} as select _rowid, _rule from "
        f"(select r._rowid, {case} as _rule from (select {typed_columns} from "
        f"{_staged(spec.name)}) r{joins}) where _rule is not null"
    )
    (broken,) = con.execute(f"select count(*) from {_bad(spec.name)}").fetchone()
    keep = (
        f"select s.* from {_staged(spec.name)} s anti join {_bad(spec.name)} b "
        "on b._rowid = s.rowid"
        if broken
        else f"select * from {_staged(spec.name)}"
    )
    con.execute(f"create or replace temp view {_good(spec.name)} as {keep}")
    return broken


def register_bad_codes(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table `_bad_codes`: staged SNOMED codes that fail the Verhoeff or partition check."""
    codes = (
        [
            row[0]
            for row in con.execute(
                f"select distinct snomed_code from {_staged('clinical_events')} "
                "where snomed_code is not null"
            ).fetchall()
        ]
        if _has_staged(con, "clinical_events")
        else []
    )
    bad = [(code,) for code in codes if snomed_problem(code)]
    con.execute("create or replace temp table _bad_codes (code varchar)")
    if bad:
        con.executemany("insert into _bad_codes values (?)", bad)


def _has_staged(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() where temporary and table_name = ?",
            [_staged(table)],
        ).fetchone()[0]
    )


def typed_select(spec: TableSpec) -> str:
    """Cast a checked text row to the contract's types."""
    return ", ".join(f"cast({c.name} as {SQL_TYPES[c.kind]}) as {c.name}" for c in spec.columns)


def _known_sets(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> None:
    """Patients and consultations that rows of this delivery may refer to.

    A full delivery replaces its practices, so only its own rows count; a delta may also
    refer to rows already held for its practices.
    """
    practices = _sql_list(manifest.practices)
    held = manifest.kind == "delta"
    con.execute(
        "create or replace temp table _known_patients as "
        "select practice_id, patient_id, cast(year_of_birth as integer) as year_of_birth, "
        f"cast(date_of_death as date) as date_of_death from {_good('patients')}"
        + (
            " union all by name select practice_id, patient_id, year_of_birth, date_of_death "
            f"from raw.patients where practice_id in ({practices}) and (practice_id, patient_id) "
            f"not in (select practice_id, patient_id from {_good('patients')})"
            if held
            else ""
        )
    )


def _known_consultations(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> None:
    practices = _sql_list(manifest.practices)
    held = (
        (f" union select consultation_id from raw.consultations where practice_id in ({practices})")
        if manifest.kind == "delta"
        else ""
    )
    con.execute(
        "create or replace temp table _known_consultations as select consultation_id "
        f"from {_good('consultations')}" + held
    )


def _empty_staged(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
    """An empty staged table for a table a delta delivery does not carry."""
    columns = ", ".join(f"{c} varchar" for c in spec.column_names)
    con.execute(f"create or replace temp table {_staged(spec.name)} ({columns})")


# --- applying ------------------------------------------------------------------------------


def _previous(con: duckdb.DuckDBPyConnection, delivery_id: str) -> list[tuple[str, str]]:
    return con.execute(
        "select status, manifest_sha256 from audit.deliveries where delivery_id = ?", [delivery_id]
    ).fetchall()


def _record(
    con: duckdb.DuckDBPyConnection,
    delivery_id: str,
    digest: str,
    status: str,
    reason: str,
    manifest: Manifest | None = None,
) -> None:
    con.execute(
        "insert into audit.deliveries values (?, ?, ?, ?, ?, ?, ?, now()::timestamp)",
        [
            delivery_id,
            digest,
            manifest.extracted_at if manifest else None,
            manifest.kind if manifest else None,
            manifest.source_system if manifest else None,
            status,
            reason,
        ],
    )


def refuse(
    con: duckdb.DuckDBPyConnection,
    delivery_id: str,
    digest: str,
    reason: str,
    manifest: Manifest | None = None,
) -> DeliveryOutcome:
    """Record a refusal once per distinct content; nothing of the delivery is applied."""
    if ("refused", digest) not in _previous(con, delivery_id):
        _record(con, delivery_id, digest, "refused", reason, manifest)
    log.warning("refused %s: %s", delivery_id, reason)
    return DeliveryOutcome(delivery_id, "refused", reason)


def precheck(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> DeliveryOutcome | None:
    """Skip or refuse a delivery on what the warehouse already holds; None means go ahead."""
    previous = _previous(con, manifest.delivery_id)
    applied = {digest for status, digest in previous if status == "applied"}
    if manifest.manifest_sha256 in applied:
        return DeliveryOutcome(manifest.delivery_id, "skipped", "already applied")
    if applied:
        return refuse(
            con,
            manifest.delivery_id,
            manifest.manifest_sha256,
            f"{manifest.directory / contract.MANIFEST_NAME}: duplicate_delivery_id: "
            "a delivery with this id and different content was applied before; "
            "send corrections under a new delivery id",
            manifest,
        )
    if ("refused", manifest.manifest_sha256) in previous:
        return DeliveryOutcome(manifest.delivery_id, "skipped", "refused before, unchanged")
    newer = con.execute(
        "select p.practice_id, d.delivery_id from audit.delivery_practices p "
        "join audit.deliveries d using (delivery_id) where d.status = 'applied' "
        "and p.practice_id in (select unnest(?::varchar[])) "
        "and (d.extracted_at, d.delivery_id) > (?::date, ?) order by all limit 1",
        [list(manifest.practices), manifest.extracted_at, manifest.delivery_id],
    ).fetchone()
    if newer:
        return refuse(
            con,
            manifest.delivery_id,
            manifest.manifest_sha256,
            f"{manifest.directory / contract.MANIFEST_NAME}: out_of_order: practice "
            f"{newer[0]} already has the later delivery {newer[1]}; applying this "
            "one would roll its data back",
            manifest,
        )
    return None


def _write(
    con: duckdb.DuckDBPyConnection, manifest: Manifest, checked: dict[str, tuple[int, int]]
) -> list[TableCount]:
    """Apply checked rows and the audit trail in one transaction. `checked` holds each
    table's (rows received, rows quarantined), as staging and check_rows counted them."""
    practices = _sql_list(manifest.practices)
    counts: list[TableCount] = []
    con.execute("begin")
    try:
        for spec in TABLES.values():
            good = _good(spec.name)
            if manifest.kind == "full":
                con.execute(f"delete from raw.{spec.name} where practice_id in ({practices})")
            elif spec.name in manifest.files:
                # Upsert by record id within the delivery's own practices: ids are
                # practice-supplied pseudonyms, and another practice's row is not ours to touch.
                key = ", ".join(spec.key)
                con.execute(
                    f"delete from raw.{spec.name} where practice_id in ({practices}) "
                    f"and ({key}) in (select ({key}) from {good})"
                )
            con.execute(
                f"insert into raw.{spec.name} select {typed_select(spec)}, ? from {good}",
                [manifest.delivery_id],
            )
        if manifest.kind == "delta" and DELETIONS.name in manifest.files:
            _apply_deletions(con, manifest)
        for spec in record_keys.KEYED.values():
            if _rewrote(manifest, spec):
                record_keys.refresh(con, spec, practices)
        for spec in _checked_specs(manifest):
            counts.append(_audit_table(con, manifest, spec, *checked[spec.name]))
        con.executemany(
            "insert into audit.delivery_practices values (?, ?)",
            [(manifest.delivery_id, p) for p in manifest.practices],
        )
        _record(con, manifest.delivery_id, manifest.manifest_sha256, "applied", "", manifest)
        crash_point("ingest.written")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    crash_point("ingest.committed")
    return counts


def _rewrote(manifest: Manifest, spec: TableSpec) -> bool:
    """Whether applying this delivery changes raw rows of `spec`'s table."""
    return manifest.kind == "full" or {spec.name, DELETIONS.name} & set(manifest.files) != set()


def _checked_specs(manifest: Manifest) -> list[TableSpec]:
    specs = list(TABLES.values())
    return specs + [DELETIONS] if DELETIONS.name in manifest.files else specs


def _apply_deletions(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> None:
    practices = _sql_list(manifest.practices)
    for spec in TABLES.values():
        record_key = "patient_id" if spec.name == "patients" else spec.key[0]
        con.execute(
            f"delete from raw.{spec.name} where practice_id in ({practices}) and "
            f"{record_key} in (select record_id from {_good(DELETIONS.name)} "
            f"where table_name = ?)",
            [spec.name],
        )


def _audit_table(
    con: duckdb.DuckDBPyConnection,
    manifest: Manifest,
    spec: TableSpec,
    received: int,
    quarantined: int,
) -> TableCount:
    staged, bad = _staged(spec.name), _bad(spec.name)
    practice = "r.practice_id" if "practice_id" in spec.column_names else "null"
    columns = ", ".join(f"r.{c}" for c in spec.column_names)
    con.execute(
        f"insert into audit.quarantine select ?, ?, {practice}, b._rowid + 1, b._rule, "
        f"to_json(struct_pack({columns})) from {bad} b join {staged} r "
        "on r.rowid = b._rowid order by b._rowid",
        [manifest.delivery_id, spec.name],
    )
    con.execute(
        f"insert into audit.delivery_practice_tables select ?, {practice}, ?, count(*), "
        f"count(*) - count(b._rowid), count(b._rowid) from {staged} r "
        f"left join {bad} b on b._rowid = r.rowid group by all",
        [manifest.delivery_id, spec.name],
    )
    con.execute(
        "insert into audit.delivery_tables values (?, ?, ?, ?, ?)",
        [manifest.delivery_id, spec.name, received, received - quarantined, quarantined],
    )
    return TableCount(spec.name, received, received - quarantined, quarantined)


def apply_delivery(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> DeliveryOutcome:
    """Check and apply one delivery; refuse it whole if a file breaks the contract."""
    if outcome := precheck(con, manifest):
        return outcome
    received: dict[str, int] = {}
    checked: dict[str, tuple[int, int]] = {}
    try:
        check_files(manifest)
        for spec in _checked_specs(manifest):
            if spec.name in manifest.files:
                received[spec.name] = stage_file(con, manifest.files[spec.name], spec)
                refuse_identifiers(con, manifest.files[spec.name], spec)
            else:
                received[spec.name] = 0
                _empty_staged(con, spec)
        register_bad_codes(con)
        for spec in _checked_specs(manifest):
            if spec.name == "clinical_events":
                _known_consultations(con, manifest)
            register_other_practice_keys(con, spec, manifest)
            checked[spec.name] = (received[spec.name], check_rows(con, spec, manifest))
            if spec.name == "patients":
                _known_sets(con, manifest)
    except ContractError as exc:
        return refuse(con, manifest.delivery_id, manifest.manifest_sha256, str(exc), manifest)
    crash_point("ingest.staged")
    tables = _write(con, manifest, checked)
    log.info(
        "applied %s: %s",
        manifest.delivery_id,
        ", ".join(f"{t.table} {t.loaded}/{t.received}" for t in tables),
    )
    return DeliveryOutcome(manifest.delivery_id, "applied", "", tables)


def is_pending(con: duckdb.DuckDBPyConnection, item: Manifest | Unreadable) -> bool:
    """False when the warehouse already applied, or refused, this delivery as it is now."""
    delivery_id = item.delivery_id if isinstance(item, Manifest) else item.directory.name
    return all(digest != item.manifest_sha256 for _, digest in _previous(con, delivery_id))


def apply_item(con: duckdb.DuckDBPyConnection, item: Manifest | Unreadable) -> DeliveryOutcome:
    """Apply a discovered delivery, or refuse one whose manifest could not be read."""
    if isinstance(item, Unreadable):
        return refuse(con, item.directory.name, item.manifest_sha256, str(item.error))
    return apply_delivery(con, item)


def apply_folder(con: duckdb.DuckDBPyConnection, folder: Path) -> DeliveryOutcome:
    """Apply the delivery in one folder (what an Airflow mapped task does)."""
    return apply_item(con, read_item(folder))


# DuckDB checkpoints a file whenever its write-ahead log passes 16 MiB, and a delivery
# leaves about 6 MB there, so by default every third delivery paid a checkpoint whose cost
# grows with the warehouse (0.7 s a delivery on average at four million patients). A run of
# deliveries checkpoints once, at its end; each delivery is still durable at its commit.
RUN_CHECKPOINT_THRESHOLD = "8GB"


def ingest(
    con: duckdb.DuckDBPyConnection, landing: Path, progress: Callable[[str], None] | None = None
) -> IngestReport:
    """Apply every delivery in `landing` not yet applied, in contract order."""
    outcomes = []
    found = discover(landing)
    con.execute(f"set checkpoint_threshold = '{RUN_CHECKPOINT_THRESHOLD}'")
    try:
        for number, item in enumerate(found, start=1):
            outcome = apply_item(con, item)
            outcomes.append(outcome)
            if progress:
                progress(
                    f"[{number}/{len(found)}] {outcome.delivery_id}: {outcome.status}"
                    + (f" ({outcome.reason})" if outcome.reason else "")
                )
    finally:
        con.execute("reset checkpoint_threshold")
    if outcomes and any(o.status != "skipped" for o in outcomes):
        con.execute("checkpoint")
    return IngestReport(outcomes)
