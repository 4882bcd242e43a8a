"""Shared fixtures: the tiny hand-worked extract, run once through the real pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from tiny_extract import write_tiny_extract

from sprx_pipeline import pipeline
from sprx_pipeline.config import DEFAULT_CODELIST_DIR, WarehousePaths


@dataclass(frozen=True)
class BuiltWarehouse:
    landing: Path
    paths: WarehousePaths
    report: pipeline.RunReport

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Rows of a query against the published (read-only) warehouse."""
        with duckdb.connect(str(self.paths.published), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


def run_pipeline(landing: Path, warehouse: Path, **kwargs) -> pipeline.RunReport:
    return pipeline.run(WarehousePaths.at(warehouse), landing, DEFAULT_CODELIST_DIR, **kwargs)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltWarehouse]:
    """The tiny extract, ingested, built with dbt and published once per test session."""
    root = tmp_path_factory.mktemp("tiny")
    landing = write_tiny_extract(root / "landing")
    warehouse = root / "warehouse" / "sprx.duckdb"
    report = run_pipeline(landing, warehouse)
    yield BuiltWarehouse(landing, WarehousePaths.at(warehouse), report)
