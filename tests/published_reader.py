"""A dashboard stand-in for tests/test_readers_and_writers.py: query the published warehouse
in a loop, each time on a fresh connection, and print one JSON line per look.

    python published_reader.py WAREHOUSE STOP_FILE

Each look runs separate queries, as a dashboard does, against two marts and the
publication record; any exception is printed as {"error": ...} and the loop goes on. It
stops when STOP_FILE exists.
"""

from __future__ import annotations

import json
import os
import sys
import time

import duckdb


def look(path: str) -> dict:
    with duckdb.connect(path, read_only=True) as con:
        build_id, published_at = con.execute(
            "select build_id, published_at::varchar from meta.publication"
        ).fetchone()
        (outcomes,) = con.execute("select count(*) from marts.sp_patient_outcomes").fetchone()
        (summarised,) = con.execute(
            "select patients from marts.sp_outcome_summary where cohort = 'referred' "
            "and measure = 'consultations' and \"window\" = 'pre'"
        ).fetchone()
    return {
        "build_id": build_id,
        "published_at": published_at,
        "outcomes": outcomes,
        "summarised": summarised,
    }


def main(path: str, stop: str) -> None:
    while not os.path.exists(stop):
        try:
            print(json.dumps(look(path)), flush=True)
            time.sleep(0.02)  # a busy dashboard, not a busy loop: leave the writer a core
        except Exception as exc:  # a reader must never see one: the test counts them
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
