"""Re-running with nothing new changes nothing; anything new a build reads is noticed.

`sprx run` records a fingerprint of a build's inputs in audit.builds (deliveries as
recorded, codelist pulls, the active codelist, dbt vars, the dbt project's files, the
package version). When the published build has the fingerprint a build would have now, and
no build started since, the run skips build and publish and leaves every file as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
from warehouse_state import Site, contents, differences

from sprx_pipeline import build as dbt_build
from sprx_pipeline import scope
from sprx_pipeline.codelists import Codelist
from sprx_pipeline.config import DBT_PROJECT_DIR, DEFAULT_CODELIST_DIR
from sprx_pipeline.pipeline import (
    active_codelist,
    current_publication,
    ingest_landing,
    pull_codelists,
)
from sprx_pipeline.warehouse import connect

pytestmark = pytest.mark.slow  # uses the published tiny extract (one real dbt build per session)


@pytest.fixture
def site(tiny, tmp_path: Path) -> Site:
    """A copy of the published tiny extract: its landing folder and every warehouse file."""
    return Site(tiny.landing.parent).copy_to(tmp_path)


def test_a_rerun_with_nothing_new_leaves_every_table_and_file_as_it_was(site):
    work, published = contents(site.paths.work), contents(site.published)
    file_before, export_before = site.published.stat(), os.readlink(site.paths.parquet)
    code, output = site.sprx("run")
    assert code == 0, output
    assert "deliveries: 0 applied, 0 refused, 2 unchanged" in output
    assert "nothing new since build" in output and "build and publish skipped" in output
    # Every row of every table, clock times included, in both files.
    assert differences(contents(site.paths.work), work) == []
    assert differences(contents(site.published), published) == []
    # Not even rewritten: the same file, untouched.
    after = site.published.stat()
    assert (after.st_ino, after.st_mtime_ns) == (file_before.st_ino, file_before.st_mtime_ns)
    assert os.readlink(site.paths.parquet) == export_before  # nor the Parquet export
    assert len(work["audit.builds"]) == 1 and len(work["audit.codelist_pulls"]) == 1


def test_the_published_build_is_current_until_an_input_changes(site):
    paths = site.paths
    codelist = active_codelist(paths)
    with duckdb.connect(str(paths.published), read_only=True) as con:
        (published_build,) = con.execute("select build_id from meta.publication").fetchone()
    assert current_publication(paths, codelist) == published_build
    # Other dbt vars make another build.
    assert current_publication(paths, codelist, {"window_days": 180}) is None
    # So does another codelist version.
    other = Codelist(codelist.name, "2027-01-01.1", codelist.sha256, codelist.codes)
    assert current_publication(paths, other) is None
    # And a refused delivery: the published audit.deliveries must show it.
    broken = site.landing / "2020-02-29_broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert [o.status for o in ingest_landing(paths, site.landing).outcomes] == [
        "refused",
        "skipped",
        "skipped",
    ]
    assert current_publication(paths, codelist) is None


def test_a_refused_delivery_leaves_the_published_marts_as_they_were(site):
    """A run whose only new delivery is refused exits 1, publishes the refusal (in
    audit.deliveries and the source-system summary), and leaves every other mart unchanged."""
    marts = contents(site.published, schemas=("marts",))
    systems = marts.pop("marts.dq_source_system_summary")
    broken = shutil.copytree(
        site.landing / "2020-01-31_emis_001", site.landing / "2020-03-31_emis_002"
    )
    # A later full delivery whose consultations file was changed after its manifest was made.
    manifest = broken / "manifest.json"
    manifest.write_text(
        manifest.read_text()
        .replace("2020-01-31_emis_001", "2020-03-31_emis_002")
        .replace('"2020-01-31"', '"2020-03-31"')
    )
    consultations = next(broken.glob("consultations.*"))
    consultations.write_bytes(consultations.read_bytes() + b"\n")
    code, output = site.sprx("run")
    assert code == 1, output
    assert "deliveries: 0 applied, 1 refused, 2 unchanged" in output
    assert "sha256_mismatch" in output
    after = contents(site.published, schemas=("marts",))
    assert after.pop("marts.dq_source_system_summary") != systems
    assert differences(after, marts) == []
    with duckdb.connect(str(site.published), read_only=True) as con:
        assert con.execute(
            "select status from audit.deliveries where delivery_id = '2020-03-31_emis_002'"
        ).fetchall() == [("refused",)]
        assert con.execute(
            "select deliveries_applied, deliveries_refused from "
            "marts.dq_source_system_summary where source_system = 'EMIS'"
        ).fetchall() == [(1, 1)]


def test_an_edit_to_the_dbt_project_or_a_suite_changes_the_fingerprint(tmp_path):
    project = shutil.copytree(
        DBT_PROJECT_DIR, tmp_path / "dbt_project", ignore=shutil.ignore_patterns("target", "logs")
    )
    before = scope.fingerprint("0" * 64, {}, project)
    (project / "target").mkdir()  # dbt's own output is not an input
    (project / "target" / "manifest.json").write_text("{}")
    assert scope.fingerprint("0" * 64, {}, project) == before
    model = project / "models" / "marts" / "sp_outcome_summary.sql"
    model.write_text(model.read_text().replace("365.25", "365.2425"))
    assert scope.fingerprint("0" * 64, {}, project) != before
    suites = shutil.copytree(dbt_build.EXPECTATIONS_DIR, tmp_path / "expectations")
    unedited = dbt_build.suites_digest(suites)
    (suites / "README.md").write_text("notes are not suites")
    assert dbt_build.suites_digest(suites) == unedited
    suite = sorted(suites.glob("*.json"))[0]
    suite.write_text(suite.read_text() + "\n")
    assert dbt_build.suites_digest(suites) != unedited


def test_a_pull_with_the_same_outcome_is_not_recorded_again(site):
    pull_codelists(site.paths, DEFAULT_CODELIST_DIR)
    with connect(site.paths.work, read_only=True) as con:
        rows = con.execute("select codelist, version, status from audit.codelist_pulls").fetchall()
    assert rows == [("social-prescribing", "2026-11-22.1", "verified")]
