"""Publish the built warehouse as a read-only file, replaced atomically.

Dashboards and analysts open the published file; the pipeline builds a different file.
Publishing copies the published schemas into a fresh temporary file beside the target,
flushes it, and renames it over the target: a reader sees the old warehouse or the new one,
never a mix, and a crash part-way leaves the old one in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

from .config import WarehousePaths
from .quality import DATA_DOCS, SUMMARY_PAGE

PUBLISHED_SCHEMAS = ("marts", "audit", "codelists")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(paths: WarehousePaths, build_id: str | None = None) -> Path:
    """Copy the published schemas of the work file to `paths.published`, atomically."""
    target = paths.published
    staging = target.with_name(f".{target.name}.publishing")
    staging.unlink(missing_ok=True)
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
    os.replace(staging, target)
    _fsync_dir(target.parent)
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
        checks, warnings, failed = con.execute(
            "with latest as (select stage, max(checked_at) as at from audit.quality_checks "
            "group by stage) select count(*), count(*) filter (where status = 'warn'), "
            "count(*) filter (where status = 'fail') from audit.quality_checks q "
            "join latest on latest.stage = q.stage and latest.at = q.checked_at").fetchone()
        quality_dir = WarehousePaths.at(path).quality_dir
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
            "quality_checks": f"{checks} ({warnings} warnings, {failed} failed)",
            "quality_summary": str(quality_dir / SUMMARY_PAGE),
            "data_docs": str(quality_dir / DATA_DOCS),
            "referred_pre_consultations_per_1000_py": rates.get("pre"),
            "referred_post_consultations_per_1000_py": rates.get("post"),
            "control_pre_consultations_per_1000_py": control_rates.get("pre"),
            "control_post_consultations_per_1000_py": control_rates.get("post"),
        }
    finally:
        con.close()
