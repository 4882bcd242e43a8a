"""Where things live, and the environment variables that move them.

| variable | default | meaning |
|---|---|---|
| SPRX_LANDING_DIR | data/landing | folder of delivery folders |
| SPRX_WAREHOUSE_PATH | data/warehouse/sprx.duckdb | the published, read-only warehouse |
| SPRX_CODELIST_SOURCE | <repo>/codelists | folder or HTTP(S) base URL serving the codelist files |
| SPRX_CODELIST_PINS | the source folder's manifest.json, else <repo>/codelists/manifest.json | manifest pinning each list's version and SHA-256 |
| SPRX_PROJECT_ROOT | this checkout, or the copy a wheel carries | where `dbt_project/` and `codelists/` are |
| SPRX_DATA_DOCS_ASSETS | <project root>/vendor/data-docs | the pinned npm files that make the GX Data Docs work offline |
| SPRX_PUBLISH_STORAGE_VERSION | v1.0.0 | DuckDB storage version of the published file (the work file is always the newest) |
| SPRX_ENGINE | duckdb | what dbt builds on: `duckdb`, or `spark` (src/sprx_pipeline/spark.py) |
| SPRX_SPARK_MASTER | local[2] | the Spark master of the `spark` engine (e.g. spark://host:7077, yarn) |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# A wheel (`pip install .`) carries the dbt project, codelists and suites in `project/` (see
# setup.py); an editable install and the Docker image read them from the checkout.
_BUNDLED = Path(__file__).resolve().parent / "project"
PROJECT_ROOT = Path(
    os.environ.get("SPRX_PROJECT_ROOT")
    or (_BUNDLED if _BUNDLED.is_dir() else Path(__file__).resolve().parents[2])
)
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_CODELIST_DIR = PROJECT_ROOT / "codelists"
SP_CODELIST = "social-prescribing"
ENGINES = ("duckdb", "spark")


def default_landing() -> Path:
    return Path(os.environ.get("SPRX_LANDING_DIR", "data/landing"))


def default_warehouse() -> Path:
    return Path(os.environ.get("SPRX_WAREHOUSE_PATH", "data/warehouse/sprx.duckdb"))


def default_codelist_source() -> str:
    return os.environ.get("SPRX_CODELIST_SOURCE", str(DEFAULT_CODELIST_DIR))


# The published file is written in the storage format of DuckDB 1.0, which every DuckDB
# since 0.10.3 opens (1.4 LTS, 1.5 and R's, JDBC's and BI tools' embedded builds among
# them); the newest format (`latest`) would lock out every reader older than the writer.
DEFAULT_PUBLISH_STORAGE_VERSION = "v1.0.0"
_STORAGE_VERSION = re.compile(r"v\d+\.\d+\.\d+|latest")


def publish_storage_version() -> str:
    """The DuckDB storage version `sprx publish` writes (SPRX_PUBLISH_STORAGE_VERSION): the
    oldest DuckDB release an analyst's tool may embed and still open the published file."""
    version = os.environ.get("SPRX_PUBLISH_STORAGE_VERSION", DEFAULT_PUBLISH_STORAGE_VERSION)
    if not _STORAGE_VERSION.fullmatch(version):
        raise ValueError(
            f"SPRX_PUBLISH_STORAGE_VERSION={version!r} is not a DuckDB storage "
            "version: write it as DuckDB does, e.g. v1.0.0, v1.4.0 or latest"
        )
    return version


def data_docs_assets() -> Path:
    """Where the pinned copies of the Data Docs' CDN files are (`data_docs.fetch` fills it)."""
    return Path(os.environ.get("SPRX_DATA_DOCS_ASSETS") or PROJECT_ROOT / "vendor" / "data-docs")


def default_engine() -> str:
    """The engine dbt builds on, from SPRX_ENGINE (default duckdb)."""
    engine = os.environ.get("SPRX_ENGINE", "duckdb").strip().lower() or "duckdb"
    if engine not in ENGINES:
        raise ValueError(f"SPRX_ENGINE is {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def default_codelist_pins() -> Path | None:
    pins = os.environ.get("SPRX_CODELIST_PINS")
    return Path(pins) if pins else None


@dataclass(frozen=True)
class WarehousePaths:
    """The files behind one warehouse.

    Dashboards read `published`, a read-only file replaced atomically; the pipeline only
    ever writes `work`, beside it, so a reader never sees a half-built table.
    """

    published: Path

    @classmethod
    def at(cls, published: Path | str) -> WarehousePaths:
        return cls(Path(published).resolve())

    @property
    def work(self) -> Path:
        return self.published.with_name(f"{self.published.stem}.work.duckdb")

    @property
    def lock(self) -> Path:
        return self.published.with_name(f"{self.published.stem}.lock")

    @property
    def codelist_cache(self) -> Path:
        """The verified codelists the latest pull kept (what builds read)."""
        return self.published.with_name(f"{self.published.stem}.codelists")

    @property
    def quality_dir(self) -> Path:
        """This warehouse's Great Expectations project: Data Docs and validation history."""
        return self.published.with_name(f"{self.published.stem}.quality")

    @property
    def parquet(self) -> Path:
        """The Parquet exports of the published marts: a symlink to the latest folder of
        `<table>.parquet` files, swapped atomically at each publish."""
        return self.published.with_name(f"{self.published.stem}.parquet")

    @property
    def lake(self) -> Path:
        """The Parquet copies of the raw, audit and codelists tables that a Spark build reads
        (`<schema>/<table>/`), and Spark's own table files (`spark-warehouse/`)."""
        return self.published.with_name(f"{self.published.stem}.lake")

    @property
    def dbt_dir(self) -> Path:
        """dbt's target and log folders for this warehouse (kept out of the source tree)."""
        return self.published.with_name(f".{self.published.stem}.dbt")
