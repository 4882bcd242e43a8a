"""Fault injection for the crash tests: kill this process at a named point, on request.

The crash tests (tests/test_crash_safety.py) must kill a real `sprx` process at moments a
timer cannot hit reliably: inside the ingest transaction, between the fsync and the rename
of a publish. With `SPRX_KILL_AT=<point>` (or `<point>:<n>`, the n-th time the point is
reached) in its environment, the process sends itself SIGKILL there: no cleanup handler,
`finally` block or flush runs, exactly as if the machine had lost the process.

Unset (always, outside the tests) a point costs one environment lookup. The points are
listed in `POINTS`; naming any other point is an error, so a test cannot silently miss.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_AT_VARIABLE = "SPRX_KILL_AT"

POINTS = (
    "ingest.staged",  # a delivery's files are read and checked, nothing written yet
    "ingest.written",  # its rows and audit trail are written, the transaction not committed
    "ingest.committed",  # its transaction has committed
    "build.started",  # the build's row in audit.builds is open, dbt not yet started
    "build.dbt_spawned",  # dbt is running as a child process
    "publish.copied",  # every table is copied into the temporary file, not yet flushed
    "publish.flushed",  # the temporary file is complete, fsynced and read-only
    "publish.replaced",  # the new file has replaced the published one; the Parquet export
    # link still points at the previous export
    "publish.linked",  # the Parquet link points at the new export too; the work file does
    # not yet record the build as published
)

_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """SIGKILL this process if `SPRX_KILL_AT` names `point` (and its n-th arrival is now)."""
    wanted = os.environ.get(KILL_AT_VARIABLE)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name not in POINTS:
        raise ValueError(
            f"{KILL_AT_VARIABLE}={wanted!r} names no crash point; points are {', '.join(POINTS)}"
        )
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
