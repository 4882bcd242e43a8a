"""Where a whole ingest spends its time: every statement the loader sends DuckDB, timed and
summed by shape (table names and literals folded), over every delivery of a landing folder.

    python benchmarks/ingest_statements.py LANDING SCRATCH_DIR [TOP]

Runs `ingest.ingest` on a fresh warehouse in SCRATCH_DIR (replaced), printing each
delivery's seconds as it goes, then the total rows/s and the TOP (25) costliest shapes with
their call counts. The figures in docs/performance.md's ingest section came from it.
"""

from __future__ import annotations

import collections
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from sprx_pipeline import ingest
from sprx_pipeline.warehouse import connect

FOLDED = r"(_in_|_bad_|_good_|_other_keys_|raw\.|record_keys\.)\w+"


def shape(sql: str) -> str:
    """A statement with its table names and string literals folded, so that the same
    statement over different tables and deliveries sums into one line."""
    text = re.sub(r"'[^']*'", "'?'", " ".join(sql.split()))
    return re.sub(FOLDED, r"\1T", text)[:110]


class TimedConnection:
    """A DuckDB connection that times every statement by its shape."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def execute(self, sql: str, *args: Any) -> duckdb.DuckDBPyConnection:
        return self._timed(sql, self.con.execute, *args)

    def executemany(self, sql: str, *args: Any) -> duckdb.DuckDBPyConnection:
        return self._timed(sql, self.con.executemany, *args)

    def _timed(self, sql: str, run: Any, *args: Any) -> duckdb.DuckDBPyConnection:
        started = time.perf_counter()
        result = run(sql, *args)
        self.seconds[shape(sql)] += time.perf_counter() - started
        self.calls[shape(sql)] += 1
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def main(landing: Path, scratch: Path, top: int = 25) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = last = time.perf_counter()

    def progress(message: str) -> None:
        nonlocal last
        now = time.perf_counter()
        print(f"{message} {now - last:.2f} s", flush=True)
        last = now

    with connect(scratch / "sprx.duckdb") as con:
        timed = TimedConnection(con)
        report = ingest.ingest(timed, landing, progress)
    seconds = time.perf_counter() - started  # closing the file included
    rows = sum(t.received for o in report.outcomes for t in o.tables)
    print(f"{rows:,} rows in {seconds:.1f} s: {rows / seconds:,.0f} rows/s")
    for statement, total in timed.seconds.most_common(top):
        print(f"{total:8.2f} s {timed.calls[statement]:5d}×  {statement}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
