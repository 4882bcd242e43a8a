"""Build the warehouse with dbt: record the codelist, run `dbt build`, record the outcome.

dbt runs in a child process against the work file, never the published one. Every
build leaves a row in `audit.builds` naming the codelist version it used, and one in
`audit.build_scopes` saying whether it rebuilt everything or only the practices whose
deliveries changed (see `scope`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import scope
from .codelists import Codelist, record_codelist
from .config import DBT_PROJECT_DIR, WarehousePaths
from .warehouse import connect


class BuildError(RuntimeError):
    """dbt could not build the warehouse; the message lists the failing models and tests."""


@dataclass(frozen=True)
class BuildReport:
    build_id: str
    passed: int
    failed: list[str]
    scope: scope.BuildScope | None = None
    dbt_seconds: float = 0.0  # wall time of the dbt child process


def dbt_args(command: str, paths: WarehousePaths, dbt_vars: dict[str, Any] | None = None,
             extra: list[str] | None = None) -> list[str]:
    """Command-line arguments for dbt against this warehouse's work file."""
    args = [command, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(paths.dbt_dir / "target"), "--log-path",
            str(paths.dbt_dir / "logs")]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars, sort_keys=True)]
    return args + (extra or [])


def run_dbt(args: list[str], paths: WarehousePaths) -> tuple[int, list[dict[str, Any]]]:
    """Run dbt in a child process against the work file; return its exit code and results.

    A child process, not dbtRunner: dbt-duckdb keeps the database attached for the life
    of the process, and the publish step must open the work file straight afterwards.
    """
    dbt = Path(sys.executable).with_name("dbt")
    env = {**os.environ, "SPRX_DUCKDB_PATH": str(paths.work), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    results_file = paths.dbt_dir / "target" / "run_results.json"
    results_file.unlink(missing_ok=True)
    completed = subprocess.run([str(dbt), *args], env=env, check=False)
    results = json.loads(results_file.read_text())["results"] if results_file.is_file() else []
    return completed.returncode, results


def failures(returncode: int, results: list[dict[str, Any]]) -> tuple[int, list[str]]:
    bad = [r for r in results if r["status"] in ("error", "fail", "runtime error")]
    lines = [f"{r['unique_id']}: {(r.get('message') or r['status']).strip()}" for r in bad]
    if returncode != 0 and not lines:
        lines.append(f"dbt exited with code {returncode} before running any node")
    return len(results) - len(bad), lines


def open_build(paths: WarehousePaths, codelist: Codelist, dbt_vars: dict[str, Any] | None = None,
               full_rebuild: bool = False) -> tuple[str, dict[str, Any], scope.BuildScope]:
    """Make `codelist` active, open a row in audit.builds and record the build's scope;
    return its id, the vars to run dbt with, and the scope."""
    build_id = uuid.uuid4().hex[:12]
    merged_vars = {"sp_codelist": codelist.name, **(dbt_vars or {})}
    build_fingerprint = scope.fingerprint(codelist.sha256, merged_vars)
    con = connect(paths.work)
    try:
        record_codelist(con, codelist)
        planned = scope.plan(con, build_fingerprint, full_rebuild)
        con.execute("insert into audit.builds values (?, now()::timestamp, null, 'running', "
                    "?, ?, ?, ?)", [build_id, codelist.name, codelist.version, codelist.sha256,
                                    json.dumps(merged_vars, sort_keys=True)])
        scope.record(con, build_id, planned)
    finally:
        con.close()
    return build_id, merged_vars, planned


def start_build(paths: WarehousePaths, codelist: Codelist, dbt_vars: dict[str, Any] | None = None,
                full_rebuild: bool = False) -> tuple[str, dict[str, Any]]:
    """Make `codelist` active and open a build with its scope; return its id and the vars."""
    build_id, merged_vars, _ = open_build(paths, codelist, dbt_vars, full_rebuild)
    return build_id, merged_vars


def finish_build(paths: WarehousePaths, build_id: str, status: str) -> None:
    """Close a build's row in audit.builds as success, failed or published."""
    con = connect(paths.work)
    try:
        con.execute("update audit.builds set status = ?, finished_at = now()::timestamp "
                    "where build_id = ?", [status, build_id])
    finally:
        con.close()


def run_build(paths: WarehousePaths, build_id: str, merged_vars: dict[str, Any],
              select: list[str] | None = None,
              planned: scope.BuildScope | None = None) -> BuildReport:
    """`dbt build` an opened build; on any failure mark it failed and raise BuildError."""
    extra = ["--select", *select] if select else []
    started = time.perf_counter()
    passed, failed = failures(*run_dbt(dbt_args("build", paths, merged_vars, extra), paths))
    if failed:
        finish_build(paths, build_id, "failed")
        raise BuildError("dbt build failed:\n  " + "\n  ".join(failed)
                         + f"\n(full log: {paths.dbt_dir / 'logs' / 'dbt.log'})")
    return BuildReport(build_id, passed, failed, planned, time.perf_counter() - started)


def build(paths: WarehousePaths, codelist: Codelist, dbt_vars: dict[str, Any] | None = None,
          select: list[str] | None = None, full_rebuild: bool = False) -> BuildReport:
    """Make `codelist` active, then `dbt build` the project (only the practices whose
    deliveries changed, unless a full rebuild is due); raise BuildError on any failure."""
    build_id, merged_vars, planned = open_build(paths, codelist, dbt_vars, full_rebuild)
    report = run_build(paths, build_id, merged_vars, select, planned)
    finish_build(paths, build_id, "success")
    return report
