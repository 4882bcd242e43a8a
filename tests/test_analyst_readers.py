"""The published warehouse opens in the DuckDB an analyst has, not only in ours.

Analysts' tools embed whatever DuckDB they were built with (R's duckdb, DBeaver's JDBC
driver, BI connectors), and a DuckDB file in the newest storage format opens only in the
DuckDB that wrote it or newer. `sprx publish` therefore writes the published copy in an
older storage version (SPRX_PUBLISH_STORAGE_VERSION, v1.0.0 by default). Here the real
DuckDB 1.4 LTS, and 1.0.0 (the oldest release docs/results.md names), installed from PyPI into
venvs of their own (cached in `.cache/`), open the published tiny extract read-only and read
every table and every Parquet export; each must read exactly the rows our DuckDB reads.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import analyst_reader
import duckdb
import pytest
import venvs
from warehouse_state import Site

from sprx_pipeline import publish
from sprx_pipeline.config import WarehousePaths

pytestmark = pytest.mark.slow  # the published tiny extract, and venvs from PyPI on first use

LTS = "1.4.4"  # the long-term-support line analysts are told to use
OLDEST = "1.0.0"  # the oldest release docs/results.md promises (storage version v1.0.0)
READER = Path(analyst_reader.__file__)
# The readers' wheels: duckdb 1.0.0 has none for Python 3.13, so they run on 3.11 wherever
# the tests run (the file format does not depend on the writer's Python).
READER_PYTHON = shutil.which("python3.11") or sys.executable


def reader(version: str) -> Path:
    return venvs.cached(f"duckdb-{version}", [f"duckdb=={version}"], READER_PYTHON)


def read_with(version: str, warehouse: Path, parquet: Path) -> dict:
    """What DuckDB `version` reads of the warehouse and export, as analyst_reader prints it."""
    done = subprocess.run(
        [str(reader(version)), str(READER), str(warehouse), str(parquet)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["duckdb"] == version
    return found


@pytest.mark.parametrize("version", [LTS, OLDEST])
def test_an_older_duckdb_reads_every_published_table_and_parquet_file(tiny, version):
    paths = tiny.paths
    theirs = read_with(version, paths.published, paths.parquet)
    ours = analyst_reader.read_warehouse(str(paths.published))
    assert "error" not in theirs, theirs["error"]
    # Every table, marts and audit among them, with the same rows as our DuckDB reads.
    assert theirs["tables"] == ours["tables"]
    names = set(theirs["tables"])
    assert {
        "marts.sp_patient_outcomes",
        "marts.sp_referrals",
        "marts.sp_effect_estimates",
        "marts.dq_practice_feedback",
        "audit.deliveries",
        "audit.quality_checks",
        "audit.quarantine",
        "codelists.sp_codes",
        "meta.publication",
    } <= names
    # The hand-worked extract: 8 referred patients, 15 SP-coded events (tests/test_linkage.py).
    assert theirs["tables"]["marts.sp_patient_outcomes"][0] == 8
    assert theirs["tables"]["marts.sp_referrals"][0] == 15
    # The Parquet export: one file per mart, the mart's rows.
    marts = {
        name.split(".")[1]: rows
        for name, rows in ours["tables"].items()
        if name.startswith("marts.")
    }
    assert theirs["parquet"] == analyst_reader.read_parquet(str(paths.parquet)) == marts


def test_the_published_file_is_in_the_storage_version_asked_for(tiny):
    with duckdb.connect(str(tiny.paths.published), read_only=True) as con:
        (tags,) = con.execute(
            "select tags from duckdb_databases() where database_name = current_database()"
        ).fetchone()
        (recorded,) = con.execute("select storage_version from meta.publication").fetchone()
    assert (tags["storage_version"], recorded) == ("v1.0.0+", "v1.0.0")


def test_a_file_in_the_newest_format_is_what_duckdb_lts_cannot_open(tiny, tmp_path, monkeypatch):
    # What the published file was before: our DuckDB's own format. (This is why the test
    # above can fail.)
    copy = WarehousePaths.at(tmp_path / "sprx.duckdb")
    shutil.copy(tiny.paths.work, copy.work)
    monkeypatch.setenv("SPRX_PUBLISH_STORAGE_VERSION", "latest")
    publish.publish(copy, "newest-format")
    theirs = read_with(LTS, copy.published, copy.parquet)
    assert "Trying to read a database file with version number" in theirs["error"]
    assert len(theirs["parquet"]) == len(analyst_reader.read_parquet(str(copy.parquet))) >= 11


def test_another_storage_version_republishes_the_same_build(tiny, tmp_path, monkeypatch):
    site = Site(tiny.landing.parent).copy_to(tmp_path)
    (build,) = tiny.query("select build_id from meta.publication")[0]
    monkeypatch.setenv("SPRX_PUBLISH_STORAGE_VERSION", "v1.4.0")
    code, output = site.sprx("run")
    assert code == 0, output
    assert f"is current (build {build}), published again in storage version v1.4.0" in output
    with duckdb.connect(str(site.published), read_only=True) as con:
        assert con.execute("select build_id, storage_version from meta.publication").fetchall() == [
            (build, "v1.4.0")
        ]
        (tags,) = con.execute(
            "select tags from duckdb_databases() where database_name = current_database()"
        ).fetchone()
    assert tags["storage_version"] == "v1.4.0+"
    # Asked again for the same version: nothing to do, the file is left untouched.
    before = site.published.stat()
    code, output = site.sprx("run")
    assert code == 0 and "left as it was" in output, output
    assert site.published.stat().st_ino == before.st_ino


def test_a_storage_version_duckdb_does_not_know_is_refused_with_the_setting_named(
    tiny, tmp_path, monkeypatch
):
    copy = WarehousePaths.at(tmp_path / "sprx.duckdb")
    shutil.copy(tiny.paths.work, copy.work)
    monkeypatch.setenv("SPRX_PUBLISH_STORAGE_VERSION", "v9.0.0")
    with pytest.raises(
        ValueError,
        match=r"SPRX_PUBLISH_STORAGE_VERSION='v9.0.0': DuckDB "
        + re.escape(duckdb.__version__)
        + " cannot write it",
    ):
        publish.publish(copy, "unknown-version")
    monkeypatch.setenv("SPRX_PUBLISH_STORAGE_VERSION", "1.4")
    with pytest.raises(ValueError, match="not a DuckDB storage version"):
        publish.publish(copy, "malformed-version")
    assert not copy.published.exists()
