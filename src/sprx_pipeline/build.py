"""Build the warehouse with dbt: record the codelist, run `dbt build`, record the outcome.

dbt runs in a child process against the work file, never the published one, and dies with
its parent: a killed `sprx run` leaves no dbt behind holding the work file. Every build
leaves a row in `audit.builds` naming the codelist version it used and the fingerprint of
all its inputs (so a run with nothing new can see that the published build is current),
and one in `audit.build_scopes` saying whether it rebuilt everything or only the practices
whose deliveries changed (see `scope`). dbt is handed that scope in the environment variable
SPRX_BUILD (`scope.dbt_env`) on every run, on DuckDB and on Spark.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from . import __version__, scope
from .codelists import Codelist, record_codelist
from .config import DBT_PROJECT_DIR, PROJECT_ROOT, WarehousePaths
from .contract import sha256_file
from .faults import crash_point
from .warehouse import connect

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The Great Expectations suites the quality gate checks a build with (suites.EXPECTATIONS_DIR,
# not imported from there: importing `suites` loads Great Expectations).
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"


class BuildError(RuntimeError):
    """dbt could not build the warehouse; the message lists the failing models and tests."""


@dataclass(frozen=True)
class BuildReport:
    build_id: str
    passed: int
    failed: list[str]
    scope: scope.BuildScope | None = None
    dbt_seconds: float = 0.0  # wall time of the dbt child process


def dbt_args(
    command: str,
    paths: WarehousePaths,
    dbt_vars: dict[str, Any] | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """Command-line arguments for dbt against this warehouse's work file."""
    args = [
        command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(paths.dbt_dir / "target"),
        "--log-path",
        str(paths.dbt_dir / "logs"),
    ]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars, sort_keys=True)]
    return args + (extra or [])


def run_dbt(
    args: list[str],
    paths: WarehousePaths,
    extra_env: dict[str, str] | None = None,
    alongside: Callable[[], None] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Run dbt in a child process against the work file, with `extra_env` added to its
    environment (a build's SPRX_BUILD); return its exit code and results.

    `alongside` runs in this process while dbt runs (it must not open the work file, which
    dbt holds); if it raises, dbt is stopped and the exception goes on.

    A child process, not dbtRunner: dbt-duckdb keeps the database attached for the life
    of the process, and the publish step must open the work file straight afterwards.
    """
    dbt = Path(sys.executable).with_name("dbt")
    env = {
        **os.environ,
        "SPRX_DUCKDB_PATH": str(paths.work),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **(extra_env or {}),
    }
    results_file = paths.dbt_dir / "target" / "run_results.json"
    results_file.unlink(missing_ok=True)
    with subprocess.Popen([str(dbt), *args], env=env, preexec_fn=die_with_parent()) as child:
        crash_point("build.dbt_spawned")
        if alongside is not None:
            try:
                alongside()
            except BaseException:
                stop(child)
                raise
        returncode = child.wait()
    results = json.loads(results_file.read_text())["results"] if results_file.is_file() else []
    return returncode, results


def stop(child: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """End a dbt child: SIGTERM, then SIGKILL if it has not exited within the grace."""
    child.terminate()
    try:
        child.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the child when this process dies (Linux).

    Without it a SIGKILLed `sprx run` leaves dbt running as an orphan that still holds the
    work file's lock, and the next run fails on it. (The signal follows the thread that
    started the child; ours waits for it.) On other systems: None, no such guarantee.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def failures(returncode: int, results: list[dict[str, Any]]) -> tuple[int, list[str]]:
    bad = [r for r in results if r["status"] in ("error", "fail", "runtime error")]
    lines = [f"{r['unique_id']}: {(r.get('message') or r['status']).strip()}" for r in bad]
    if returncode != 0 and not lines:
        lines.append(f"dbt exited with code {returncode} before running any node")
    return len(results) - len(bad), lines


def incremental_args(planned: scope.BuildScope) -> list[str]:
    """What an incremental build leaves out of `dbt build`: the unit tests. A unit test runs a
    model's SQL on the rows it is given, never the warehouse's, so its outcome depends only
    on the dbt project and the engine's versions, which are in the build's fingerprint; an
    incremental build happens only when that fingerprint equals the last successful build's,
    and the full build that began that line ran every unit test and passed."""
    return [] if planned.full_rebuild else ["--exclude-resource-type", "unit_test"]


def build_vars(codelist: Codelist, dbt_vars: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dbt vars that decide what a build makes (recorded in audit.builds, part of its
    fingerprint): the active codelist's name, then the caller's. A caller's `sprx_build` is
    dropped: the build passes its own (`scope.dbt_env`), when it runs dbt."""
    return scope.without_per_build({"sp_codelist": codelist.name, **(dbt_vars or {})})


def suites_digest(folder: Path = EXPECTATIONS_DIR) -> str:
    """SHA-256 over the expectation suites (`*.json`) the quality gate checks a build with."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.json")):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def input_fingerprint(
    con: duckdb.DuckDBPyConnection, codelist: Codelist, build_fingerprint: str
) -> str:
    """SHA-256 of everything a build and its publication read, so equal fingerprints mean
    equal published content: the deliveries as recorded (applied and refused, by manifest
    hash), the codelist pulls, the active codelist, `build_fingerprint` (scope.fingerprint:
    dbt project, codelist, dbt vars, engine versions), the expectation suites and this
    package's version. Clock times and build ids are left out on purpose."""
    parts = {
        "package": __version__,
        "deliveries": con.execute(
            "select delivery_id, manifest_sha256, status, reason from audit.deliveries order by all"
        ).fetchall(),
        "codelist_pulls": con.execute(
            "select codelist, version, sha256, source, status, reason from audit.codelist_pulls "
            "order by pulled_at, codelist"
        ).fetchall(),
        "codelist": [codelist.name, codelist.version, codelist.sha256],
        "build": build_fingerprint,
        "expectations": suites_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def settle_builds(con: duckdb.DuckDBPyConnection, published_build_id: str | None) -> None:
    """Close the rows a killed process left open in audit.builds.

    A build still `running` when no process can be running it (the caller holds the writer
    lock) was interrupted: it becomes `abandoned`. A `success` build that the published file
    holds was published, and the process died before saying so: it becomes `published`.
    """
    con.execute(
        "update audit.builds set status = 'published', finished_at = now()::timestamp "
        "where build_id = ? and status = 'success'",
        [published_build_id],
    )
    con.execute(
        "update audit.builds set status = 'abandoned', finished_at = now()::timestamp "
        "where status = 'running'"
    )


def open_build(
    paths: WarehousePaths,
    codelist: Codelist,
    dbt_vars: dict[str, Any] | None = None,
    full_rebuild: bool = False,
    engine: str = "duckdb",
) -> tuple[str, dict[str, Any], scope.BuildScope]:
    """Make `codelist` active, open a row in audit.builds and record the build's scope;
    return its id, the vars to run dbt with, and the scope."""
    build_id = uuid.uuid4().hex[:12]
    merged_vars = build_vars(codelist, dbt_vars)
    build_fingerprint = scope.fingerprint(codelist.sha256, merged_vars, engine=engine)
    with connect(paths.work) as con:
        record_codelist(con, codelist)
        planned = scope.plan(con, build_fingerprint, full_rebuild, engine)
        con.execute(
            "insert into audit.builds (build_id, started_at, finished_at, status, codelist, "
            "codelist_version, codelist_sha256, dbt_vars, input_fingerprint) values "
            "(?, now()::timestamp, null, 'running', ?, ?, ?, ?, ?)",
            [
                build_id,
                codelist.name,
                codelist.version,
                codelist.sha256,
                json.dumps(merged_vars, sort_keys=True),
                input_fingerprint(con, codelist, build_fingerprint),
            ],
        )
        scope.record(con, build_id, planned)
    crash_point("build.started")
    return build_id, merged_vars, planned


def start_build(
    paths: WarehousePaths,
    codelist: Codelist,
    dbt_vars: dict[str, Any] | None = None,
    full_rebuild: bool = False,
    engine: str = "duckdb",
) -> tuple[str, str]:
    """Make `codelist` active and open a build with its scope; return its id and the value
    dbt is told the build by (SPRX_BUILD: `scope.build_value`)."""
    build_id, _, planned = open_build(paths, codelist, dbt_vars, full_rebuild, engine)
    return build_id, scope.build_value(build_id, planned)


def finish_build(paths: WarehousePaths, build_id: str, status: str) -> None:
    """Close a build's row in audit.builds as success, failed or published."""
    con = connect(paths.work)
    try:
        con.execute(
            "update audit.builds set status = ?, finished_at = now()::timestamp where build_id = ?",
            [status, build_id],
        )
    finally:
        con.close()


def run_build(
    paths: WarehousePaths,
    build_id: str,
    merged_vars: dict[str, Any],
    planned: scope.BuildScope,
    select: list[str] | None = None,
    engine: str = "duckdb",
    progress: Callable[[str], None] | None = None,
    alongside: Callable[[], None] | None = None,
) -> BuildReport:
    """`dbt build` an opened build, passing dbt its scope (`scope.dbt_env`); on any failure
    mark it failed and raise BuildError. On the `spark` engine dbt builds on Spark and the
    marts come back to the work file (`spark.build`), with the same vars and scope.

    `alongside` runs while dbt builds (see `run_dbt`; before it, on Spark, which builds in
    this process). An incremental build leaves out dbt's unit tests (`incremental_args`)."""
    # A partial build tests only what it built: a test that also reads an unselected model
    # would fail on a fresh file (dbt's "eager" indirect selection would run it).
    extra = ["--select", *select, "--indirect-selection", "cautious"] if select else []
    extra += incremental_args(planned)
    args = dbt_args("build", paths, merged_vars, extra)
    build_env = scope.dbt_env(build_id, planned)
    started = time.perf_counter()
    if engine == "spark":
        from . import spark

        if alongside is not None:
            alongside()
        returncode, results, _ = spark.build(paths, args, progress, build_env)
    else:
        returncode, results = run_dbt(args, paths, build_env, alongside)
    passed, failed = failures(returncode, results)
    if failed:
        finish_build(paths, build_id, "failed")
        raise BuildError(
            "dbt build failed:\n  "
            + "\n  ".join(failed)
            + f"\n(full log: {paths.dbt_dir / 'logs' / 'dbt.log'})"
        )
    return BuildReport(build_id, passed, failed, planned, time.perf_counter() - started)


def build(
    paths: WarehousePaths,
    codelist: Codelist,
    dbt_vars: dict[str, Any] | None = None,
    select: list[str] | None = None,
    full_rebuild: bool = False,
    engine: str = "duckdb",
) -> BuildReport:
    """Make `codelist` active, then `dbt build` the project (only the practices whose
    deliveries changed, unless a full rebuild is due); raise BuildError on any failure."""
    build_id, merged_vars, planned = open_build(paths, codelist, dbt_vars, full_rebuild, engine)
    report = run_build(paths, build_id, merged_vars, planned, select, engine)
    finish_build(paths, build_id, "success")
    return report
