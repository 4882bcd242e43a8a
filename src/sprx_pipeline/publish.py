"""Publish the built warehouse as a read-only file, replaced atomically.

Dashboards and analysts open the published file; the pipeline builds a different file.
Publishing copies the published schemas into a fresh temporary file beside the target,
flushes it, and renames it over the target: a reader sees the old warehouse or the new one,
never a mix, and a crash part-way leaves the old one in place (and a temporary file that
the next publish, or `sprx run`, removes).

The marts are also exported as Parquet, for tools that do not speak DuckDB, into a fresh
folder beside the warehouse, named with the build id; `<stem>.parquet` is a symlink swapped
to it atomically after the warehouse is replaced, and the previous folder is kept for
readers still in it. A build counts as published once both hold it (`published_build_id`,
`exported_build_id`): a run killed between the two renames is published again.

The published file is written in an older DuckDB storage format (`config.
publish_storage_version`, v1.0.0 unless set) so that analysts' tools, which embed whatever
DuckDB they were built with, can open it; the work file uses the newest format. DuckDB
writes the older format with only the compression methods that format knows, so the file
is somewhat larger (about 13% for the demo warehouse).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from .config import WarehousePaths, publish_storage_version
from .faults import crash_point
from .quality import DATA_DOCS, SUMMARY_PAGE
from .release import published_study
from .study import Study

PUBLISHED_SCHEMAS = ("marts", "audit", "codelists")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_files(paths: WarehousePaths) -> tuple[Path, Path]:
    """The file a publish writes before renaming it over the target, and its DuckDB WAL."""
    staging = paths.published.with_name(f".{paths.published.name}.publishing")
    return staging, staging.with_name(f"{staging.name}.wal")


def remove_leftovers(paths: WarehousePaths) -> None:
    """Delete what a publish killed part-way left: the temporary file and its WAL (DuckDB
    2.0 ignores a WAL that belongs to another file, but nothing should rest on that)."""
    for leftover in temporary_files(paths):
        leftover.unlink(missing_ok=True)


def exported_build_id(paths: WarehousePaths) -> str | None:
    """The build whose Parquet export the `<stem>.parquet` link points at, if it is a link."""
    if not paths.parquet.is_symlink():
        return None
    return os.readlink(paths.parquet).rpartition("-")[2]


def published_build_id(path: Path) -> str | None:
    """The build a published warehouse was copied from; None if there is none yet, or the
    file was not published by this pipeline (then the next run publishes over it)."""
    if not path.is_file():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.execute("select build_id from meta.publication").fetchone()[0]
    except duckdb.Error:
        return None


def published_storage_version(path: Path) -> str | None:
    """The storage version the published file was written in, as it was asked for (None for
    a file published before it was recorded, or not by this pipeline)."""
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.execute("select storage_version from meta.publication").fetchone()[0]
    except duckdb.Error:
        return None


def _open_staging(staging: Path, storage_version: str) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is a new file at `staging`, in that storage
    version (a file's version is fixed when it is created, hence ATTACH, not connect)."""
    con = duckdb.connect()
    try:
        con.execute(f"attach ? as published (storage_version '{storage_version}')", [str(staging)])
    except duckdb.InvalidInputException as exc:
        con.close()
        raise ValueError(
            f"SPRX_PUBLISH_STORAGE_VERSION={storage_version!r}: DuckDB "
            f"{duckdb.__version__} cannot write it ({exc})"
        ) from exc
    con.execute("use published")
    return con


def publish(paths: WarehousePaths, build_id: str | None = None) -> Path:
    """Copy the published schemas of the work file to `paths.published`, atomically."""
    target = paths.published
    staging, _ = temporary_files(paths)
    remove_leftovers(paths)
    storage_version = publish_storage_version()
    con = _open_staging(staging, storage_version)
    try:
        con.execute("attach ? as work (read_only)", [str(paths.work)])
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'work' "
            f"and schema_name in ({', '.join('?' * len(PUBLISHED_SCHEMAS))}) order by all",
            list(PUBLISHED_SCHEMAS),
        ).fetchall()
        for schema in PUBLISHED_SCHEMAS:
            con.execute(f"create schema {schema}")
        for schema, table in tables:
            con.execute(f'create table {schema}."{table}" as select * from work.{schema}."{table}"')
        crash_point("publish.copied")
        con.execute("create schema meta")
        con.execute(
            "create table meta.publication as select now()::timestamp as published_at, "
            "?::varchar as build_id, ?::varchar as storage_version",
            [build_id, storage_version],
        )
        con.execute("detach work")
        con.execute("checkpoint published")
        exports = _export_parquet(
            con, paths.parquet, [t for s, t in tables if s == "marts"], build_id
        )
    finally:
        con.close()
    with open(staging, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(staging, 0o444)
    crash_point("publish.flushed")
    os.replace(staging, target)
    _fsync_dir(target.parent)
    crash_point("publish.replaced")
    _swap_parquet_link(paths.parquet, exports)
    crash_point("publish.linked")
    return target


def _export_parquet(
    con: duckdb.DuckDBPyConnection, link: Path, marts: list[str], build_id: str | None
) -> Path:
    """Write each mart of the staged warehouse to `<table>.parquet` in a new folder, named
    `.<link>.<time>-<random>-<build id>` (the build id last, for `exported_build_id`)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = link.with_name(f".{link.name}.{stamp}-{uuid.uuid4().hex[:6]}-{build_id or ''}")
    folder.mkdir()
    try:
        for table in marts:
            path = str(folder / f"{table}.parquet").replace("'", "''")
            con.execute(f"copy marts.\"{table}\" to '{path}' (format parquet)")
        for file in folder.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _swap_parquet_link(link: Path, folder: Path) -> None:
    """Point `link` at `folder` in one rename; keep the folder it pointed at before.

    A real folder of Parquet files in the link's place (a copied warehouse folder, whose
    copy followed the link) is set aside as the previous export; anything else is refused.
    """
    previous = link.resolve() if link.is_symlink() else None
    if link.exists() and previous is None:
        if not link.is_dir() or any(p.suffix != ".parquet" for p in link.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            raise FileExistsError(
                f"{link} is not the Parquet export sprx publish maintains: move it away"
            )
        previous = link.with_name(f".{link.name}.00000000T000000-copied")
        shutil.rmtree(previous, ignore_errors=True)
        link.rename(previous)
    temporary = link.with_name(f".{link.name}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name)
    os.replace(temporary, link)
    _fsync_dir(link.parent)
    for old in link.parent.glob(f".{link.name}.*-*"):
        if old.is_dir() and old not in (folder, previous):
            shutil.rmtree(old, ignore_errors=True)


def published_summary(path: Path) -> dict[str, Any]:
    """Headline figures of a published warehouse, for the end of a run."""
    con = duckdb.connect(str(path), read_only=True)
    try:

        def one(sql: str) -> Any:
            return con.execute(sql).fetchone()[0]

        study = published_study(con)
        primary = study.primary_measure
        rates = {
            (cohort, window): rate
            for cohort, window, rate in con.execute(
                'select cohort, "window", rate_per_1000_py from marts.sp_outcome_summary '
                "where measure = ?",
                [primary],
            ).fetchall()
        }
        checks, warnings, failed = con.execute(
            "with latest as (select stage, max(checked_at) as at from audit.quality_checks "
            "group by stage) select count(*), count(*) filter (where status = 'warn'), "
            "count(*) filter (where status = 'fail') from audit.quality_checks q "
            "join latest on latest.stage = q.stage and latest.at = q.checked_at"
        ).fetchone()
        quality_dir = WarehousePaths.at(path).quality_dir
        return {
            "warehouse": str(path),
            "deliveries_applied": one(
                "select count(distinct delivery_id) from audit.deliveries where status = 'applied'"
            ),
            "deliveries_refused": one(
                "select count(distinct delivery_id) from audit.deliveries where status = 'refused'"
            ),
            "rows_quarantined": one("select count(*) from audit.quarantine"),
            "practices": one("select count(distinct practice_id) from marts.dq_practice_feedback"),
            "patients": one(
                "select coalesce(sum(patients_loaded), 0) "
                "from marts.dq_practice_feedback where is_latest_delivery"
            ),
            "referred_patients": one("select count(*) from marts.sp_patient_outcomes"),
            "matched_controls": one("select count(*) from marts.sp_matched_controls"),
            "codelist_version": one("select max(version) from codelists.sp_codes"),
            "quality_checks": f"{checks} ({warnings} warnings, {failed} failed)",
            "quality_summary": str(quality_dir / SUMMARY_PAGE),
            "data_docs": str(quality_dir / DATA_DOCS),
            **{
                f"{cohort}_{window}_{primary}_per_1000_py": rates.get((cohort, window))
                for cohort in ("referred", "control")
                for window in ("pre", "post")
            },
            **_effects(con, study),
        }
    finally:
        con.close()


def _effects(con: duckdb.DuckDBPyConnection, study: Study) -> dict[str, str]:
    """The effect of referral (the matched design's causal estimate) on each headline measure
    first, then the share of cases matched, then the descriptive before/after ratios of the
    first headline measure, with 95% CIs, in the words of the study the build declared."""
    rows = con.execute(
        "select measure, estimate, ratio, ci_lower, ci_upper "
        "from marts.sp_effect_estimates where subgroup = 'all'"
    ).fetchall()
    found = {
        (measure, estimate): (ratio, lower, upper)
        for measure, estimate, ratio, lower, upper in rows
    }
    label = {m.name: m.label for m in study.measures}
    primary = study.primary_measure
    summary = {
        f"{label[name]}: effect of referral (95% CI)": _estimate(found.get((name, "effect")))
        for name in study.headline_measures
    }
    summary["cases matched (of eligible)"] = _matched_share(con)
    descriptive = {
        "referred_post_vs_pre": f"referred {label[primary]} after/before",
        "control_post_vs_pre": f"control {label[primary]} after/before",
        "ratio_of_ratios": f"{label[primary]} ratio of ratios",
    }
    for estimate, words in descriptive.items():
        summary[f"{words}, descriptive (95% CI)"] = _estimate(found.get((primary, estimate)))
    return summary


def _estimate(found: tuple[float | None, float | None, float | None] | None) -> str:
    """A ratio with its interval as text, "n/a" when not estimated."""
    ratio, lower, upper = found or (None, None, None)
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f}" if lower is None else f"{ratio:.2f} ({lower:.2f}-{upper:.2f})"


def _matched_share(con: duckdb.DuckDBPyConnection) -> str:
    """Cases with at least one control, of the cases eligible for their trial."""
    row = con.execute(
        "select max(matched_cases), max(cases) from marts.sp_covariate_balance "
        "where subgroup = 'all'"
    ).fetchone()
    matched, eligible = row if row else (None, None)
    if not eligible:
        return "n/a"
    return f"{matched:,} of {eligible:,} ({matched / eligible:.0%})"
