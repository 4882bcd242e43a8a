"""The pipeline's steps as functions: what the CLI commands and the Airflow tasks call.

Each step that writes takes the warehouse's single-writer lock, so a second run waits or
stops with a clear message rather than corrupting the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build as dbt_build
from . import codelists, ingest, publish
from .config import SP_CODELIST, WarehousePaths
from .warehouse import connect, writer_lock

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def load_active_codelist(source: str | Path, name: str = SP_CODELIST) -> codelists.Codelist:
    """The verified codelist from a codelist folder."""
    folder = Path(source)
    if not folder.is_dir():
        raise codelists.CodelistError(f"codelist source {folder} is not a folder")
    return codelists.load_codelist(folder, name)


def ingest_landing(paths: WarehousePaths, landing: Path, progress: Progress = _quiet,
                   wait_seconds: float = 0.0) -> ingest.IngestReport:
    """Apply every new delivery in `landing` to the work warehouse."""
    with writer_lock(paths, wait_seconds):
        con = connect(paths.work)
        try:
            return ingest.ingest(con, landing, progress)
        finally:
            con.close()


def build_warehouse(paths: WarehousePaths, codelist_source: str | Path,
                    dbt_vars: dict[str, Any] | None = None,
                    wait_seconds: float = 0.0) -> dbt_build.BuildReport:
    """Verify the codelist and `dbt build` the work warehouse."""
    codelist = load_active_codelist(codelist_source)
    with writer_lock(paths, wait_seconds):
        return dbt_build.build(paths, codelist, dbt_vars)


def publish_warehouse(paths: WarehousePaths, build_id: str | None = None,
                      wait_seconds: float = 0.0) -> Path:
    """Replace the published warehouse with the work warehouse's published schemas."""
    with writer_lock(paths, wait_seconds):
        return publish.publish(paths, build_id)


@dataclass
class RunReport:
    ingest: ingest.IngestReport
    build: dbt_build.BuildReport
    published: Path
    summary: dict[str, Any]


def run(paths: WarehousePaths, landing: Path, codelist_source: str | Path,
        dbt_vars: dict[str, Any] | None = None, progress: Progress = _quiet,
        wait_seconds: float = 0.0) -> RunReport:
    """Ingest, build and publish, holding the writer lock throughout."""
    codelist = load_active_codelist(codelist_source)
    with writer_lock(paths, wait_seconds):
        progress(f"ingesting deliveries from {landing}")
        con = connect(paths.work)
        try:
            report = ingest.ingest(con, landing, progress)
        finally:
            con.close()
        progress(f"building the warehouse with dbt (codelist {codelist.name} "
                 f"{codelist.version})")
        built = dbt_build.build(paths, codelist, dbt_vars)
        progress(f"publishing to {paths.published}")
        published = publish.publish(paths, built.build_id)
    return RunReport(report, built, published, publish.published_summary(published))
