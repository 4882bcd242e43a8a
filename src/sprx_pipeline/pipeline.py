"""The pipeline's steps as functions: what the CLI commands and the Airflow tasks call.

Each step that writes takes the warehouse's single-writer lock, so a second run waits or
stops with a clear message rather than corrupting the first. `run` is the steps in order:
pull codelists, ingest, quality gate on the loaded tables, dbt build, quality gate on the
marts, publish. It first tidies what a killed run left, and skips build and publish when
the published build is already current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build as dbt_build
from . import codelists, ingest, publish, quality, scope
from .config import SP_CODELIST, WarehousePaths, default_engine, publish_storage_version
from .warehouse import connect, writer_lock

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- codelists ---------------------------------------------------------------------------


def _record_pull(
    paths: WarehousePaths, source: str, status: str, reason: str, pulled: list[codelists.Codelist]
) -> None:
    """Record a pull in audit.codelist_pulls when its outcome differs from the latest one.

    The table is a history of what was in force and when it changed, not a log of every
    check: a re-run that pulls the same lists from the same source changes nothing.
    """
    rows = {(c.name, c.version, c.sha256, source, status, reason) for c in pulled} or {
        (None, None, None, source, status, reason)
    }
    with connect(paths.work) as con:
        latest = set(
            con.execute(
                "select codelist, version, sha256, source, status, reason from audit.codelist_pulls "
                "where pulled_at = (select max(pulled_at) from audit.codelist_pulls)"
            ).fetchall()
        )
        if rows == latest:
            return
        con.execute("begin")  # one transaction: every row of a pull gets the same pulled_at
        con.executemany(
            "insert into audit.codelist_pulls values (now()::timestamp, ?, ?, ?, ?, ?, ?)",
            sorted(rows, key=repr),
        )
        con.execute("commit")


def pull_codelists(
    paths: WarehousePaths, source: str | Path, pins: Path | None = None, wait_seconds: float = 0.0
) -> list[codelists.Codelist]:
    """Fetch every pinned list from `source`, verify it, keep it for builds, record the pull.

    A drifted or malformed list is refused with its reason (recorded in
    audit.codelist_pulls) and the lists kept from the last good pull stay in force.
    """
    source = str(source)
    with writer_lock(paths, wait_seconds):
        try:
            pulled = codelists.load_all(source, pins)
        except codelists.CodelistError as exc:
            _record_pull(paths, source, "refused", str(exc), [])
            raise
        codelists.write_cache(paths.codelist_cache, pulled)
        _record_pull(paths, source, "verified", "", pulled)
    return pulled


def active_codelist(paths: WarehousePaths, name: str = SP_CODELIST) -> codelists.Codelist:
    """The list a build uses: the last verified pull, checked again against its pin."""
    if not (paths.codelist_cache / codelists.MANIFEST_NAME).is_file():
        raise codelists.CodelistError(
            f"no verified codelists at {paths.codelist_cache}: pull "
            "them first (`sprx run`, or the sprx_codelists DAG)"
        )
    return codelists.load_codelist(paths.codelist_cache, name)


def ensure_codelists(
    paths: WarehousePaths, source: str | Path, pins: Path | None = None, wait_seconds: float = 0.0
) -> codelists.Codelist:
    """The active codelist, pulling from `source` first if nothing was verified yet."""
    if not (paths.codelist_cache / codelists.MANIFEST_NAME).is_file():
        pull_codelists(paths, source, pins, wait_seconds)
    return active_codelist(paths)


# --- deliveries --------------------------------------------------------------------------


def pending_deliveries(
    paths: WarehousePaths, landing: Path, wait_seconds: float = 0.0
) -> list[str]:
    """Delivery folders in `landing` that the warehouse has not yet applied or refused as
    they are now, in contract order. Reads only, but under the writer's lock: DuckDB will not
    open a file read-only while another process writes it, so a reader that did not wait
    for the writer would fail whenever a delivery or a build held the file."""
    found = ingest.discover(landing)
    with writer_lock(paths, wait_seconds):
        if not paths.work.is_file():
            return [_folder_name(item) for item in found]
        with connect(paths.work, read_only=True) as con:
            return [_folder_name(item) for item in found if ingest.is_pending(con, item)]


def _folder_name(item: ingest.Manifest | ingest.Unreadable) -> str:
    return item.directory.name


def apply_delivery(
    paths: WarehousePaths, landing: Path, delivery: str, wait_seconds: float = 0.0
) -> ingest.DeliveryOutcome:
    """Apply one delivery folder of `landing` (the unit of an Airflow mapped task)."""
    folder = landing / delivery
    if not folder.is_dir():
        raise ingest.IngestError(f"{folder} is not a delivery folder in {landing}")
    with writer_lock(paths, wait_seconds), connect(paths.work) as con:
        return ingest.apply_folder(con, folder)


def ingest_landing(
    paths: WarehousePaths, landing: Path, progress: Progress = _quiet, wait_seconds: float = 0.0
) -> ingest.IngestReport:
    """Apply every new delivery in `landing` to the work warehouse."""
    with writer_lock(paths, wait_seconds), connect(paths.work) as con:
        return ingest.ingest(con, landing, progress)


# --- build, gate, publish ------------------------------------------------------------------


def published_build(paths: WarehousePaths) -> str | None:
    """The build both published forms hold (the DuckDB file and the Parquet export), or
    None: a publish killed between its two renames has not published."""
    published_id = publish.published_build_id(paths.published)
    return published_id if publish.exported_build_id(paths) == published_id else None


def recover_interrupted(paths: WarehousePaths) -> None:
    """Tidy what a killed process left, before a run or a build (under the writer lock):
    a publish's temporary file, builds left `running` (now `abandoned`), and a build that
    was published but not yet marked so. Data needs no repair: every delivery applies in
    one transaction, dbt rebuilds its tables, and the published file is replaced whole."""
    publish.remove_leftovers(paths)
    if paths.work.is_file():
        published_id = published_build(paths)
        with connect(paths.work) as con:
            dbt_build.settle_builds(con, published_id)


def current_publication(
    paths: WarehousePaths,
    codelist: codelists.Codelist,
    dbt_vars: dict[str, Any] | None = None,
    engine: str = "duckdb",
) -> str | None:
    """The published build's id if a build now would read exactly what it read (same input
    fingerprint) and no build has started since; None when a build is needed."""
    published_id = published_build(paths)
    if published_id is None or not paths.work.is_file():
        return None
    with connect(paths.work, read_only=True) as con:
        latest = con.execute(
            "select build_id, status, input_fingerprint from audit.builds "
            "order by started_at desc, build_id desc limit 1"
        ).fetchone()
        fingerprint = dbt_build.input_fingerprint(
            con,
            codelist,
            scope.fingerprint(
                codelist.sha256, dbt_build.build_vars(codelist, dbt_vars), engine=engine
            ),
        )
    return published_id if latest == (published_id, "published", fingerprint) else None


@dataclass
class CheckedBuild:
    """A build that passed the quality gate on both sides of dbt: ready to publish."""

    build: dbt_build.BuildReport
    loaded_gate: quality.GateReport
    gate: quality.GateReport


def build_warehouse(
    paths: WarehousePaths,
    dbt_vars: dict[str, Any] | None = None,
    wait_seconds: float = 0.0,
    progress: Progress = _quiet,
    full_rebuild: bool = False,
    engine: str | None = None,
) -> CheckedBuild:
    """Check the loaded tables, `dbt build` with the active codelist, check the marts.

    The loaded tables are snapshotted before dbt starts and checked while it builds (Great
    Expectations' import and checkpoint take seconds, a large part of an incremental build);
    a failed check stops dbt and fails the build, which is then never published, and the
    next build rebuilds everything this one touched (it plans from the last build that
    succeeded). Airflow's DAG keeps the two as tasks one after the other.

    dbt rebuilds only the practices with deliveries applied since the last successful build,
    unless a full rebuild is due or asked for (see `scope`). Any failure marks the build
    failed (and a failed build is never published). On the `spark` engine (default:
    SPRX_ENGINE) dbt builds everything on Spark and the marts come back to the work file.
    """
    engine = engine or default_engine()
    with writer_lock(paths, wait_seconds):
        recover_interrupted(paths)
        codelist = active_codelist(paths)
        build_id, build_vars, planned = dbt_build.open_build(
            paths, codelist, dbt_vars, full_rebuild, engine
        )
        try:
            loaded_gate = quality.prepare(paths, "loaded", build_id, scoped=True)
            progress(
                f"building the warehouse with dbt on {engine} (codelist {codelist.name} "
                f"{codelist.version}; {planned.describe()}), checking the loaded tables "
                "meanwhile (quality gate, Great Expectations)"
            )
            try:
                built = dbt_build.run_build(
                    paths,
                    build_id,
                    build_vars,
                    planned,
                    engine=engine,
                    progress=progress,
                    alongside=lambda: _stop_if_failed(loaded_gate),
                )
            except BaseException:
                if loaded_gate.checks is not None:
                    loaded_gate.finish()  # a failed check is the cause: raised before dbt's
                raise
            loaded = loaded_gate.finish()
            progress("checking the marts before publishing (quality gate)")
            gate = quality.gate(paths, "marts", build_id, scoped=True)
        except BaseException:
            dbt_build.finish_build(paths, build_id, "failed")
            raise
        dbt_build.finish_build(paths, build_id, "success")
        return CheckedBuild(built, loaded, gate)


class _LoadedTablesFailed(Exception):
    """The loaded tables failed a check while dbt was building: stop dbt."""


def _stop_if_failed(pending: quality.PendingGate) -> None:
    """Validate the loaded tables (while dbt builds: `build_warehouse`); raise to stop dbt
    if a check at error level failed."""
    pending.validate()
    if pending.failed:
        raise _LoadedTablesFailed


def start_build(
    paths: WarehousePaths,
    dbt_vars: dict[str, Any] | None = None,
    wait_seconds: float = 0.0,
    engine: str = "duckdb",
) -> tuple[str, str]:
    """Record the active codelist and open a build (for orchestrators that run dbt models
    as their own tasks); return the build id and the value dbt is told the build by (the
    environment variable SPRX_BUILD: `scope.build_value`)."""
    with writer_lock(paths, wait_seconds):
        recover_interrupted(paths)
        return dbt_build.start_build(paths, active_codelist(paths), dbt_vars, engine=engine)


def run_opened_build(
    paths: WarehousePaths,
    build_id: str,
    engine: str,
    wait_seconds: float = 0.0,
    progress: Progress = _quiet,
) -> dbt_build.BuildReport:
    """`dbt build` a build that `start_build` opened, in one step (Airflow's `spark_build`
    task: on Spark, one session builds every model) with the vars and scope it recorded;
    raise BuildError on any failure."""
    import json

    with writer_lock(paths, wait_seconds):
        with connect(paths.work, read_only=True) as con:
            row = con.execute(
                "select dbt_vars from audit.builds where build_id = ?", [build_id]
            ).fetchone()
            if row is None:
                raise ValueError(f"no build {build_id} in {paths.work}: open it with start_build")
            planned = scope.recorded(con, build_id)
        return dbt_build.run_build(
            paths, build_id, json.loads(row[0] or "{}"), planned, engine=engine, progress=progress
        )


def close_build(paths: WarehousePaths, build_id: str, wait_seconds: float = 0.0) -> str:
    """Mark a build that did not reach publication as failed; return its final status."""
    with writer_lock(paths, wait_seconds):
        with connect(paths.work, read_only=True) as con:
            (status,) = con.execute(
                "select status from audit.builds where build_id = ?", [build_id]
            ).fetchone()
        if status != "published":
            dbt_build.finish_build(paths, build_id, "failed")
            status = "failed"
        return status


def quality_gate(
    paths: WarehousePaths,
    stage: str = "marts",
    build_id: str | None = None,
    run_dbt_tests: bool = False,
    wait_seconds: float = 0.0,
    scoped: bool = False,
) -> quality.GateReport:
    """Run one stage of the quality gate over the work warehouse (`loaded`: the raw tables,
    before dbt; `marts`: the built marts and row accounting, before publishing); raise
    QualityGateError, naming each failed check, if anything must not be published.
    Without a build id, the checks are recorded against the latest build; `scoped` checks
    only the practices that build rebuilt (as `sprx build` does)."""
    with writer_lock(paths, wait_seconds):
        return quality.gate(paths, stage, build_id or latest_build(paths), run_dbt_tests, scoped)


def latest_build(paths: WarehousePaths) -> str | None:
    with connect(paths.work) as con:
        row = con.execute(
            "select build_id from audit.builds order by started_at desc limit 1"
        ).fetchone()
    return row[0] if row else None


def publish_warehouse(
    paths: WarehousePaths, build_id: str | None = None, wait_seconds: float = 0.0
) -> Path:
    """Replace the published warehouse with the work warehouse's published schemas.

    Only a build that dbt did not fail and whose marts passed the quality gate is published
    (the latest build, when no id is given): it is marked `success` in the copy, and
    `published` in the work file once the copy is in place.
    """
    with writer_lock(paths, wait_seconds):
        if not paths.work.is_file():
            raise FileNotFoundError(
                f"{paths.work} does not exist: run `sprx ingest` and `sprx build` before publishing"
            )
        if build_id is None:
            recover_interrupted(paths)
            build_id = latest_build(paths)
        with connect(paths.work) as con:
            quality.require_passed(con, build_id)
        dbt_build.finish_build(paths, build_id, "success")
        published = publish.publish(paths, build_id)
        dbt_build.finish_build(paths, build_id, "published")
        return published


@dataclass
class RunReport:
    ingest: ingest.IngestReport
    loaded_gate: quality.GateReport | None  # these three are None when nothing was new:
    build: dbt_build.BuildReport | None  # build and publish were skipped
    gate: quality.GateReport | None
    published: Path
    summary: dict[str, Any]
    current_build: str | None = None  # the published build, when it was current
    republished: bool = False  # ... and copied out again in another storage version


def run(
    paths: WarehousePaths,
    landing: Path,
    codelist_source: str | Path,
    dbt_vars: dict[str, Any] | None = None,
    progress: Progress = _quiet,
    wait_seconds: float = 0.0,
    codelist_pins: Path | None = None,
    engine: str | None = None,
) -> RunReport:
    """Pull codelists, ingest, check, build, check and publish, holding the writer lock.
    dbt builds on `engine` (default: SPRX_ENGINE, else duckdb)."""
    engine = engine or default_engine()
    with writer_lock(paths, wait_seconds):
        recover_interrupted(paths)
        progress(f"verifying codelists from {codelist_source}")
        pull_codelists(paths, codelist_source, codelist_pins)
        progress(f"ingesting deliveries from {landing}")
        report = ingest_landing(paths, landing, progress)
        if current := current_publication(paths, active_codelist(paths), dbt_vars, engine):
            wanted, held = (
                publish_storage_version(),
                publish.published_storage_version(paths.published),
            )
            if held == wanted:
                progress(
                    f"nothing new since build {current}: the published warehouse is "
                    "current; build and publish skipped"
                )
            else:
                progress(
                    f"nothing new since build {current}, but the published file is in "
                    f"storage version {held or 'unrecorded'}, not {wanted} "
                    "(SPRX_PUBLISH_STORAGE_VERSION): publishing it again"
                )
                publish_warehouse(paths, current)
            return RunReport(
                report,
                None,
                None,
                None,
                paths.published,
                publish.published_summary(paths.published),
                current,
                republished=held != wanted,
            )
        checked = build_warehouse(paths, dbt_vars, progress=progress, engine=engine)
        progress(f"publishing to {paths.published}")
        published = publish_warehouse(paths, checked.build.build_id)
    return RunReport(
        report,
        checked.loaded_gate,
        checked.build,
        checked.gate,
        published,
        publish.published_summary(published),
    )
