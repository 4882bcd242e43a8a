"""Publish the built warehouse as a read-only file, replaced atomically.

Dashboards and analysts open the published file; the pipeline builds a different file.
Publishing copies the published schemas into a fresh temporary file beside the target,
flushes it, and renames it over the target: a reader sees the old warehouse or the new one,
never a mix, and a crash part-way leaves the old one in place (and a temporary file that
the next publish, or `sprx run`, removes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

from .config import WarehousePaths
from .faults import crash_point

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


def publish(paths: WarehousePaths, build_id: str | None = None) -> Path:
    """Copy the published schemas of the work file to `paths.published`, atomically."""
    if not paths.work.is_file():
        raise FileNotFoundError(f"{paths.work} does not exist: run `sprx ingest` and "
                                "`sprx build` before publishing")
    target = paths.published
    staging, _ = temporary_files(paths)
    remove_leftovers(paths)
    con = duckdb.connect(str(staging))
    try:
        con.execute("attach ? as work (read_only)", [str(paths.work)])
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'work' "
            f"and schema_name in ({', '.join('?' * len(PUBLISHED_SCHEMAS))}) order by all",
            list(PUBLISHED_SCHEMAS)).fetchall()
        for schema in PUBLISHED_SCHEMAS:
            con.execute(f"create schema {schema}")
        for schema, table in tables:
            con.execute(f'create table {schema}."{table}" as '
                        f'select * from work.{schema}."{table}"')
        crash_point("publish.copied")
        con.execute("create schema meta")
        con.execute("create table meta.publication as select now()::timestamp as published_at, "
                    "?::varchar as build_id", [build_id])
        con.execute("detach work")
        con.execute("checkpoint")
    finally:
        con.close()
    with open(staging, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(staging, 0o444)
    crash_point("publish.flushed")
    os.replace(staging, target)
    _fsync_dir(target.parent)
    crash_point("publish.replaced")
    return target


def published_summary(path: Path) -> dict[str, Any]:
    """Headline figures of a published warehouse, for the end of a run."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        def one(sql: str) -> Any:
            return con.execute(sql).fetchone()[0]

        rates = dict(con.execute(
            "select \"window\", rate_per_1000_py from marts.sp_outcome_summary "
            "where cohort = 'referred' and measure = 'consultations'").fetchall())
        control_rates = dict(con.execute(
            "select \"window\", rate_per_1000_py from marts.sp_outcome_summary "
            "where cohort = 'control' and measure = 'consultations'").fetchall())
        return {
            "warehouse": str(path),
            "deliveries_applied": one("select count(distinct delivery_id) from audit.deliveries "
                                      "where status = 'applied'"),
            "deliveries_refused": one("select count(distinct delivery_id) from audit.deliveries "
                                      "where status = 'refused'"),
            "rows_quarantined": one("select count(*) from audit.quarantine"),
            "practices": one("select count(distinct practice_id) from marts.dq_practice_feedback"),
            "patients": one("select coalesce(sum(patients_loaded), 0) "
                            "from marts.dq_practice_feedback where is_latest_delivery"),
            "referred_patients": one("select count(*) from marts.sp_patient_outcomes"),
            "matched_controls": one("select count(*) from marts.sp_matched_controls"),
            "codelist_version": one("select max(version) from codelists.sp_codes"),
            "referred_pre_consultations_per_1000_py": rates.get("pre"),
            "referred_post_consultations_per_1000_py": rates.get("post"),
            "control_pre_consultations_per_1000_py": control_rates.get("pre"),
            "control_post_consultations_per_1000_py": control_rates.get("post"),
        }
    finally:
        con.close()
