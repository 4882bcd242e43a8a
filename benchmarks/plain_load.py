"""DuckDB's own pace for an extract: every file of every delivery read once into typed tables,
with no checks, no staging and no audit trail. The floor `sprx ingest` is compared with.

    python benchmarks/plain_load.py LANDING WAREHOUSE

Reads each file as `sprx ingest` does (DuckDB's CSV reader with every column as text, or
its Parquet reader), casts to the contract's types and appends to one table per contract
table; the warehouse file is replaced. Prints the rows loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb

from sprx_pipeline.contract import MANIFEST_NAME, TABLES
from sprx_pipeline.warehouse import SQL_TYPES


def source(path: Path, columns: tuple[str, ...]) -> str:
    """DuckDB's reader for one delivered file, every column as text for CSV."""
    quoted = str(path).replace("'", "''")
    if path.name.endswith(".parquet"):
        return f"read_parquet('{quoted}')"
    types = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
    return (
        f"read_csv('{quoted}', header = true, auto_detect = false, strict_mode = true, "
        f"columns = {types})"
    )


def load(landing: Path, warehouse: Path) -> int:
    warehouse.unlink(missing_ok=True)
    rows = 0
    with duckdb.connect(str(warehouse)) as con:
        for spec in TABLES.values():
            columns = ", ".join(f"{c.name} {SQL_TYPES[c.kind]}" for c in spec.columns)
            con.execute(f"create table {spec.name} ({columns})")
        for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            for table, entry in manifest["files"].items():
                spec = TABLES[table]
                casts = ", ".join(f"cast({c.name} as {SQL_TYPES[c.kind]})" for c in spec.columns)
                con.execute(
                    f"insert into {table} select {casts} "
                    f"from {source(folder / entry['path'], spec.column_names)}"
                )
                rows += entry["rows"]
    return rows


if __name__ == "__main__":
    print(load(Path(sys.argv[1]), Path(sys.argv[2])))
