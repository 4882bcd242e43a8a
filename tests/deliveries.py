"""Build small contract deliveries by hand, for tests that need exact answers."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sprx_pipeline.contract import CONTRACT_VERSION, DELETIONS, TABLES, file_entry, write_manifest

Rows = Sequence[Sequence[Any]]


def csv_bytes(columns: Sequence[str], rows: Rows) -> bytes:
    """CSV text of `rows` under a header; None becomes an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue().encode("utf-8")


def write_table(folder: Path, table: str, rows: Rows, fmt: str = "csv") -> Path:
    """Write one contract table file in csv, csv.gz or parquet (all columns as text)."""
    columns = (DELETIONS if table == DELETIONS.name else TABLES[table]).column_names
    if fmt == "parquet":
        path = folder / f"{table}.parquet"
        data = {
            c: [None if r[i] is None else str(r[i]) for r in rows] for i, c in enumerate(columns)
        }
        pq.write_table(pa.table(data, schema=pa.schema([(c, pa.string()) for c in columns])), path)
        return path
    payload = csv_bytes(columns, rows)
    if fmt == "csv.gz":
        path = folder / f"{table}.csv.gz"
        path.write_bytes(gzip.compress(payload, mtime=0))
    else:
        path = folder / f"{table}.csv"
        path.write_bytes(payload)
    return path


def write_delivery(
    landing: Path,
    delivery_id: str,
    extracted_at: str,
    source_system: str,
    practices: Sequence[str],
    tables: dict[str, Rows],
    kind: str = "full",
    fmt: str = "csv",
) -> Path:
    """Write a delivery folder with its manifest; tables not given are written empty."""
    folder = landing / delivery_id
    folder.mkdir(parents=True)
    names = list(TABLES) if kind == "full" else list(tables)
    files = {}
    for table in names:
        rows = tables.get(table, [])
        files[table] = file_entry(write_table(folder, table, rows, fmt), len(rows))
    write_manifest(
        folder,
        {
            "contract_version": CONTRACT_VERSION,
            "delivery_id": delivery_id,
            "extracted_at": extracted_at,
            "kind": kind,
            "source_system": source_system,
            "practices": list(practices),
            "files": files,
        },
    )
    return folder
