"""The DuckDB warehouse file: its fixed schemas, and the one-writer lock.

Schemas written here (dbt writes `staging`, `intermediate` and `marts`):
- `raw`: contract tables as applied, typed, one row per record id, plus `_delivery_id`.
- `audit`: what happened to every delivery and build, kept across runs.
- `codelists`: the codelist rows the latest build used.
- `record_keys`: each raw row's hashed record id and practice, for ingest's check that an id
  is not held by another practice (`record_keys.py`; internal, never exported).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from . import record_keys
from .config import WarehousePaths
from .contract import TABLES, TableSpec

SQL_TYPES = {
    "id": "VARCHAR",
    "text": "VARCHAR",
    "code": "VARCHAR",
    "int": "INTEGER",
    "date": "DATE",
    "number": "DOUBLE",
}

AUDIT_DDL = (
    """create table if not exists audit.deliveries (
        delivery_id varchar not null, manifest_sha256 varchar not null, extracted_at date,
        kind varchar, source_system varchar, status varchar not null, reason varchar,
        applied_at timestamp not null)""",
    """create table if not exists audit.delivery_tables (
        delivery_id varchar not null, table_name varchar not null,
        received bigint not null, loaded bigint not null, quarantined bigint not null)""",
    """create table if not exists audit.delivery_practices (
        delivery_id varchar not null, practice_id varchar not null)""",
    """create table if not exists audit.delivery_practice_tables (
        delivery_id varchar not null, practice_id varchar, table_name varchar not null,
        received bigint not null, loaded bigint not null, quarantined bigint not null)""",
    """create table if not exists audit.quarantine (
        delivery_id varchar not null, table_name varchar not null, practice_id varchar,
        row_number bigint, rule varchar not null, row_json varchar not null)""",
    """create table if not exists audit.builds (
        build_id varchar not null, started_at timestamp not null, finished_at timestamp,
        status varchar not null, codelist varchar, codelist_version varchar,
        codelist_sha256 varchar, dbt_vars varchar, input_fingerprint varchar)""",
    # Warehouses made before builds recorded their inputs gain the column.
    "alter table audit.builds add column if not exists input_fingerprint varchar",
    """create table if not exists audit.build_scopes (
        build_id varchar not null, started_at timestamp not null, full_rebuild boolean not null,
        reason varchar not null, fingerprint varchar not null, practices integer not null)""",
    """create table if not exists audit.build_practices (
        build_id varchar not null, practice_id varchar not null)""",
    """create table if not exists audit.codelist_pulls (
        pulled_at timestamp not null, codelist varchar, version varchar, sha256 varchar,
        source varchar not null, status varchar not null, reason varchar)""",
    """create table if not exists audit.quality_checks (
        checked_at timestamp not null, build_id varchar, stage varchar not null,
        suite varchar not null, check_name varchar not null, kahn_category varchar,
        kahn_subcategory varchar, level varchar not null, threshold_pct double,
        table_rows bigint, rows_checked bigint, rows_failing bigint, pct_failing double,
        observed varchar, status varchar not null, detail varchar)""",
    """create table if not exists codelists.sp_codes (
        codelist varchar not null, version varchar not null, code varchar not null,
        term varchar, category varchar not null)""",
)


def raw_table_ddl(spec: TableSpec) -> str:
    """`create table` for a contract table in schema raw, typed from the contract."""
    columns = ", ".join(f"{c.name} {SQL_TYPES[c.kind]}" for c in spec.columns)
    return f"create table if not exists raw.{spec.name} ({columns}, _delivery_id varchar not null)"


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a warehouse file; create its folder and fixed schemas when writing."""
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    for schema in ("raw", "audit", "codelists"):
        con.execute(f"create schema if not exists {schema}")
    for ddl in (*AUDIT_DDL, *(raw_table_ddl(s) for s in TABLES.values())):
        con.execute(ddl)
    record_keys.ensure(con)
    return con


_HELD: set[Path] = set()  # lock files this process holds


class WarehouseBusy(RuntimeError):
    """Another process is writing this warehouse."""


@contextmanager
def writer_lock(paths: WarehousePaths, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the warehouse's single-writer lock, waiting up to `wait_seconds` for it.

    DuckDB allows one writing process per file; this lock makes a second `sprx run` (or a
    second Airflow task) wait or stop with a clear message instead of failing half-way.
    The kernel drops the lock when the holder dies, so a killed run never leaves it stuck.
    Re-entrant within a process: a step called by `run` under the lock does not wait on it.
    """
    if paths.lock in _HELD:
        yield
        return
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise WarehouseBusy(
                        f"{paths.work} is being written by {holder}; wait for it to finish "
                        "or pass a longer --wait"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        _HELD.add(paths.lock)
        try:
            yield
        finally:
            _HELD.discard(paths.lock)
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
