"""Which practice holds each record id: a narrow mirror of the raw tables' keys.

Consultation, event, attendance and registration ids are their tables' keys across all
practices, so a delivery's row whose id another practice already holds is quarantined
(`key_in_other_practice`). Asking raw for that meant hashing and comparing every id string
the warehouse holds, on every delivery: at four million patients, 110 million consultation
ids, 1.3 s a delivery by the end of a first load and growing with the warehouse. The mirror
holds each raw row's `hash(id)` (8 bytes) and practice, so the question becomes a join of
the delivery's hashes against one integer column: 0.4 s a delivery at that size
(docs/performance.md, "Ingest against DuckDB's own load").

A hash can collide, so a match is only a candidate: it is confirmed against raw's ids
before any row is quarantined. The mirror is rebuilt whole from raw when it is missing, or
when this DuckDB's `hash()` gives another value than the one that filled it (the function
is not promised stable across versions). It is written only by ingest, in the same
transaction as raw, and re-derived from raw for the practices a delivery touched.
"""

from __future__ import annotations

import logging

import duckdb

from .contract import TABLES, TableSpec

log = logging.getLogger(__name__)

SCHEMA = "record_keys"
_PROBE = "sprx record key probe"

# Tables whose contract key is a record id alone, so it must be unique across practices.
KEYED: dict[str, TableSpec] = {
    name: spec for name, spec in TABLES.items() if "practice_id" not in spec.key
}


def is_keyed(spec: TableSpec) -> bool:
    return spec.name in KEYED


def _mirror(table: str) -> str:
    return f"{SCHEMA}.{table}"


def _hash_of_key(spec: TableSpec, alias: str = "") -> str:
    return f"hash({alias}{spec.key[0]})"


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create the mirror, or rebuild it from raw if it is missing or was filled by a
    `hash()` that differs from this DuckDB's. Cheap when it is in place: one query."""
    held = con.execute(
        "select count(*) from duckdb_tables() where database_name = current_database() "
        "and schema_name = ? and table_name = '_hash_probe'",
        [SCHEMA],
    ).fetchone()[0]
    if held:
        (same,) = con.execute(
            f"select count(*) = 1 and bool_and(probe = hash(?)) from {SCHEMA}._hash_probe",
            [_PROBE],
        ).fetchone()
        if same:
            return
        log.warning("DuckDB's hash() changed since the record-key mirror was filled; rebuilding")
    rebuild(con)


def rebuild(con: duckdb.DuckDBPyConnection) -> None:
    """Fill the mirror from raw, whole, in one transaction."""
    con.execute("begin")
    try:
        con.execute(f"create schema if not exists {SCHEMA}")
        for spec in KEYED.values():
            con.execute(
                f"create or replace table {_mirror(spec.name)} as "
                f"select {_hash_of_key(spec)} as key_hash, practice_id from raw.{spec.name}"
            )
        con.execute(
            f"create or replace table {SCHEMA}._hash_probe as select hash(?) as probe", [_PROBE]
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def register_held_elsewhere(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    staged: str,
    practices_sql: str,
    into: str,
) -> None:
    """Temp table `into` (one column, `key`): the ids in table `staged` that raw holds for
    a practice outside `practices_sql` (an SQL list). The mirror finds candidates by hash;
    raw confirms them, so a hash collision cannot quarantine a row."""
    key = spec.key[0]
    con.execute(
        f"create or replace temp table {into} as "
        f"select distinct s.{key} as key, m.practice_id from {staged} s "
        f"join {_mirror(spec.name)} m on m.key_hash = {_hash_of_key(spec, 's.')} "
        f"where m.practice_id not in ({practices_sql})"
    )
    (candidates,) = con.execute(f"select count(*) from {into}").fetchone()
    if candidates:
        con.execute(
            f"create or replace temp table {into} as select distinct c.key from {into} c "
            f"semi join raw.{spec.name} r on r.{key} = c.key and r.practice_id = c.practice_id"
        )
    else:
        con.execute(f"create or replace temp table {into} as select key from {into}")


def refresh(con: duckdb.DuckDBPyConnection, spec: TableSpec, practices_sql: str) -> None:
    """Re-derive the mirror of the practices in `practices_sql` from raw, after a delivery
    wrote them (inside its transaction)."""
    con.execute(f"delete from {_mirror(spec.name)} where practice_id in ({practices_sql})")
    con.execute(
        f"insert into {_mirror(spec.name)} select {_hash_of_key(spec)}, practice_id "
        f"from raw.{spec.name} where practice_id in ({practices_sql})"
    )
