"""An analyst's DuckDB, for tests/test_analyst_readers.py: run by an older duckdb in its own
venv (not this project's), it opens the published warehouse read-only and reads every table,
then every Parquet export, and prints one JSON object.

    python analyst_reader.py WAREHOUSE PARQUET_DIR

For each table and file: its row count and a digest of its rows (sorted reprs, as
tests/warehouse_state.py compares them), so the test can tell the old DuckDB read the same
values as the writer's. Uses only the standard library and duckdb: whatever an analyst has.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import duckdb


def digest(rows: list[tuple]) -> str:
    return hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()


def read_warehouse(path: str) -> dict:
    """Every table of the file: {schema.table: [rows, digest]}, or {"error": message}."""
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() order by all"
        ).fetchall()
        found = {}
        for schema, table in tables:
            rows = con.execute(f'select * from {schema}."{table}"').fetchall()
            found[f"{schema}.{table}"] = [len(rows), digest(rows)]
        return {"tables": found}
    finally:
        con.close()


def read_parquet(folder: str) -> dict:
    """Every `<table>.parquet` of the export: {table: [rows, digest]}."""
    con = duckdb.connect()
    found = {}
    for file in sorted(Path(folder).glob("*.parquet")):
        rows = con.execute("select * from read_parquet(?)", [str(file)]).fetchall()
        found[file.stem] = [len(rows), digest(rows)]
    return found


if __name__ == "__main__":
    warehouse, parquet = sys.argv[1:3]
    print(
        json.dumps(
            {
                "duckdb": duckdb.__version__,
                **read_warehouse(warehouse),
                "parquet": read_parquet(parquet),
            }
        )
    )
