"""Whole-warehouse snapshots, and real `sprx` processes against a copy of one, for the fault
tests (deltas, crash safety, readers and writers, idempotence).

A `Site` is a landing folder and a warehouse under one root. `contents()` reads every table
of a DuckDB file, sorted, so two states can be compared table by table.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.faults import KILL_AT_VARIABLE

SPRX = str(Path(sys.executable).with_name("sprx"))
Contents = dict[str, list[str]]
SUCCESSFUL_BUILDS_ONLY = (("audit", "builds"), ("audit", "quality_checks"))
# How each build went about its work (full or incremental, which practices), not what it
# made: after a kill the next build may rightly take another way to the same marts.
BUILD_HISTORY = (("audit", "build_scopes"), ("audit", "build_practices"))


def contents(path: Path, ignore_clock: bool = False, schemas: tuple[str, ...] = ()) -> Contents:
    """Every row of every table in the file (or in `schemas`), sorted, keyed by schema.table.

    `ignore_clock` compares what a run produced rather than when: it leaves out columns of
    clock times and of random build ids, and reduces audit.builds to the distinct inputs of
    the builds that succeeded, and audit.quality_checks to the distinct checks of those
    builds, and leaves out the build scopes (BUILD_HISTORY). (A killed run leaves history
    there by design: its build is `abandoned`, with the checks it got through, or a build of
    the same inputs was repeated: see docs/operations.md, Guarantees.)
    """
    found: Contents = {}
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() order by all"
        ).fetchall()
        for schema, table in tables:
            if (schemas and schema not in schemas) or (
                ignore_clock and (schema, table) in BUILD_HISTORY
            ):
                continue
            columns = con.execute(
                "select column_name, data_type from duckdb_columns() where "
                "schema_name = ? and table_name = ? order by column_index",
                [schema, table],
            ).fetchall()
            keep = [
                f'"{name}"'
                for name, kind in columns
                if not ignore_clock
                or not (
                    kind.startswith("TIMESTAMP")
                    or name == "build_id"
                    or (table, name) == ("builds", "status")
                )
            ]
            query = f'select {", ".join(keep) or "count(*)"} from {schema}."{table}"'
            if ignore_clock and (schema, table) in SUCCESSFUL_BUILDS_ONLY:
                query = (
                    f"select distinct {', '.join(keep)} from {schema}.{table} where build_id "
                    f"in (select build_id from audit.builds where status in "
                    "('success', 'published'))"
                )
            found[f"{schema}.{table}"] = sorted(map(repr, con.execute(query).fetchall()))
    return found


def differences(left: Contents, right: Contents) -> list[str]:
    """The tables whose rows differ (empty when the states are equal): a readable failure."""
    return sorted(name for name in left.keys() | right.keys() if left.get(name) != right.get(name))


@dataclass(frozen=True)
class Site:
    """A landing folder and a warehouse, as a user has them: `root/landing`, `root/warehouse`."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def paths(self) -> WarehousePaths:
        return WarehousePaths.at(self.root / "warehouse" / "sprx.duckdb")

    @property
    def published(self) -> Path:
        return self.paths.published

    def copy_to(self, root: Path) -> Site:
        """A copy of the landing folder and every file behind the warehouse."""
        shutil.copytree(self.root, root, symlinks=True, dirs_exist_ok=True)
        return Site(root)

    def args(self, command: str) -> list[str]:
        where = ["--warehouse", str(self.published)]
        if command == "run":
            return [SPRX, "run", "--landing", str(self.landing), *where]
        if command == "ingest":
            return [SPRX, "ingest", str(self.landing), *where]
        return [SPRX, command, *where]

    def start(self, command: str, *extra: str, kill_at: str | None = None) -> subprocess.Popen:
        """Start `sprx COMMAND` on this site; `kill_at` names a crash point (sprx_pipeline.faults)."""
        env = {k: v for k, v in os.environ.items() if k != KILL_AT_VARIABLE}
        if kill_at:
            env[KILL_AT_VARIABLE] = kill_at
        return subprocess.Popen(
            [*self.args(command), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def sprx(
        self, command: str, *extra: str, kill_at: str | None = None, timeout: float = 300
    ) -> tuple[int, str]:
        """Run `sprx COMMAND` to its end; its exit code (-9 when killed) and output."""
        process = self.start(command, *extra, kill_at=kill_at)
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output


KILLED = -signal.SIGKILL


def kill_after_line(process: subprocess.Popen, marker: str) -> str:
    """SIGKILL `process` as soon as it prints a line holding `marker`; return its output.

    Raises if the process ended without printing it (the kill point was never reached).
    """
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.kill()
            break
    rest, _ = process.communicate(timeout=60)
    output = "".join(seen) + (rest or "")
    if process.returncode != KILLED:
        raise AssertionError(f"never reached {marker!r}; exit {process.returncode}:\n{output}")
    return output


def dbt_processes_for(paths: WarehousePaths) -> list[int]:
    """Live processes whose command line names this warehouse's dbt folder (a zombie has an
    empty command line, so a killed child awaiting its reaper does not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(paths.dbt_dir).encode() in cmdline:
            found.append(int(entry.name))
    return found
