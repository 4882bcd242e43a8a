"""Checks every release must pass, on the tiny extract and on a generated one."""

from __future__ import annotations

import csv
from pathlib import Path

from sprx_pipeline import disclosure
from sprx_pipeline.release import RELEASED_TABLES


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def released_values(folder: Path, suffix: str) -> list[tuple[str, str, str]]:
    """(file, column, value) of every non-empty value in columns whose names end in suffix."""
    found = []
    for path in sorted(folder.glob("*.csv")):
        for row in read_csv(path):
            found += [(path.name, k, v) for k, v in row.items() if k.endswith(suffix) and v != ""]
    return found


def assert_disclosure_safe(folder: Path) -> None:
    """No released count is 1..7 and every one is a multiple of 5; person-time is a whole
    number above 7; the folder holds only the released tables; no identifying column."""
    counts = released_values(folder, disclosure.ROUNDED_SUFFIX)
    assert counts, "no released count at all: the check would prove nothing"
    bad = [c for c in counts if int(c[2]) % 5 or 1 <= int(c[2]) <= 7]
    assert bad == []
    person_time = released_values(folder, disclosure.PERSON_TIME_SUFFIX)
    assert [p for p in person_time if int(p[2]) <= 7] == []
    files = {p.name for p in folder.iterdir()}
    assert files == {"manifest.json", *(f"{t.name}.csv" for t in RELEASED_TABLES)}
    for path in folder.glob("*.csv"):
        header = path.read_text().splitlines()[0].split(",")
        assert not {"patient_id", "practice_id", "case_patient_id"} & set(header), path
