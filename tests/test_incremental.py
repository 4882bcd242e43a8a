"""Incremental builds: only the practices with new deliveries are rebuilt, and the marts are
exactly those of a full rebuild of the same data.

The tiny extract (tests/tiny_extract.py) is built in full by the session fixture; a delta
delivery for P001 then adds a consultation for EDGE and a referral for CTRL1, whose effects
are worked out by hand below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from deliveries import write_delivery
from tiny_extract import P1, REFERRAL

from sprx_pipeline import build, pipeline, scope
from sprx_pipeline.build import BuildError
from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.warehouse import connect

D = date.fromisoformat


def copy_warehouse(source: WarehousePaths, folder: Path) -> WarehousePaths:
    """A private copy of a built warehouse (work file, codelists, dbt target), to change."""
    shutil.copytree(source.published.parent, folder)
    return WarehousePaths.at(folder / source.published.name)


def marts_of(paths: WarehousePaths) -> dict[str, list[tuple]]:
    """Every row of every mart (all of them: a new mart is compared too)."""
    with duckdb.connect(str(paths.work), read_only=True) as con:
        marts = [
            name
            for (name,) in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'marts' order by 1"
            ).fetchall()
        ]
        assert len(marts) == 12, marts
        return {
            mart: con.execute(f"select * from marts.{mart} order by all").fetchall()
            for mart in marts
        }


def test_a_delta_for_one_practice_rebuilds_that_practice_only_and_equals_a_full_build(
    tiny, tmp_path
):
    paths = copy_warehouse(tiny.paths, tmp_path / "warehouse")
    before = marts_of(paths)
    write_delivery(
        tmp_path / "landing",
        "2020-01-31_emis_002",
        "2020-01-31",
        "EMIS",
        [P1],
        {
            "consultations": [("C07", "EDGE", P1, "2017-07-01", "face_to_face", "gp")],
            "clinical_events": [("E30", "CTRL1", P1, "2018-01-01", REFERRAL, None, None)],
        },
        kind="delta",
    )
    pipeline.ingest_landing(paths, tmp_path / "landing")

    built = pipeline.build_warehouse(paths).build
    assert (built.scope.full_rebuild, built.scope.practices) == (False, (P1,))
    incremental = marts_of(paths)
    full = pipeline.build_warehouse(paths, full_rebuild=True).build
    assert full.scope.full_rebuild and full.scope.practices == ("P001", "P002")
    assert marts_of(paths) == incremental

    # EDGE: C07 (2017-07-01) joins C04 and C05 in the post window: 2 consultations become 3.
    # CTRL1 is now referred, index 2018-01-01 (age 2018 - 1962 = 56): C50 (2017-01-01, day
    # -365) and C51 (2017-12-01) fall in its pre window, nothing after; full follow-up.
    columns = (
        "patient_id, index_date, age_at_index, age_band, pre_days, post_days, "
        "pre_consultations, post_consultations"
    )
    assert outcome_rows(paths, columns, "'EDGE', 'CTRL1'") == [
        ("CTRL1", D("2018-01-01"), 56, "50-59", 365, 365, 2, 0),
        ("EDGE", D("2017-06-15"), 57, "50-59", 365, 365, 1, 3),
    ]
    # EDGE keeps CTRL1: as of EDGE's index (2017-06-15) CTRL1 was not yet referred, so it
    # stays eligible, now censored the day before its referral: 2017-12-31, 199 days, with
    # C51 (2017-12-01) still inside. CTRL1's own trial finds nobody: its recent use is
    # (1, 1, 0) (C51; C50; no A&E in the year), and CTRL2 (0, 1, 0) and CTRL5 (0, 0, 0) differ.
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute(
            "select case_patient_id, control_patient_id, control_number, "
            "post_days, post_consultations, censored_at_referral from "
            "marts.sp_matched_controls order by 1, 3"
        ).fetchall() == [
            ("CTRL5", "CTRL2", 1, 365, 0, False),
            ("EDGE", "CTRL1", 1, 199, 1, True),
            ("EDGE", "CTRL5", 2, 258, 1, True),
        ]
    # P002 was not rebuilt and did not change.
    p002 = [r for r in incremental["sp_patient_outcomes"] if "P002" in r]
    assert len(p002) == 1 and p002 == [r for r in before["sp_patient_outcomes"] if "P002" in r]


def deliver_edge_consultation(landing: Path, paths: WarehousePaths) -> None:
    """A delta for P001: one more consultation for EDGE, in its post window (2 become 3)."""
    write_delivery(
        landing,
        "2020-01-31_emis_002",
        "2020-01-31",
        "EMIS",
        [P1],
        {"consultations": [("C07", "EDGE", P1, "2017-07-01", "face_to_face", "gp")]},
        kind="delta",
    )
    pipeline.ingest_landing(paths, landing)


def test_dbt_rebuilds_the_scope_passed_to_it_not_the_latest_recorded_one(tiny, tmp_path):
    paths = copy_warehouse(tiny.paths, tmp_path / "warehouse")
    deliver_edge_consultation(tmp_path / "landing", paths)
    codelist = pipeline.active_codelist(paths)
    build_id, build_vars, planned = build.open_build(paths, codelist)
    assert (planned.full_rebuild, planned.practices) == (False, (P1,))
    # A later build is recorded before this one runs (as another opener would leave it),
    # rebuilding P002 only: dbt must still rebuild what this build was opened for.
    with connect(paths.work) as con:
        later = scope.BuildScope(False, "a later build", planned.fingerprint, ("P002",))
        scope.record(con, "later-build", later)
        (latest,) = con.execute(
            "select build_id from audit.build_scopes order by started_at desc limit 1"
        ).fetchone()
    assert latest == "later-build"

    report = build.run_build(paths, build_id, build_vars, planned)
    assert report.scope == planned
    assert outcome_rows(paths, "patient_id, post_consultations", "'EDGE'") == [("EDGE", 3)]
    # An incremental build leaves out the unit tests (the full build that began its line of
    # builds ran them; tiny's full build ran all six).
    kinds = [r["unique_id"].split(".")[0] for r in run_results(paths)]
    assert "unit_test" not in kinds and "model" in kinds and "test" in kinds


def run_results(paths: WarehousePaths) -> list[dict]:
    """The nodes the last `dbt build` against `paths` ran."""
    return json.loads((paths.dbt_dir / "target" / "run_results.json").read_text())["results"]


def dbt_show_scope(
    paths: WarehousePaths, dbt_env: dict | None, dbt_vars: dict | None = None
) -> subprocess.CompletedProcess:
    """`dbt show` the build scope model against the work file, with `dbt_env` in dbt's
    environment and `dbt_vars` as its vars."""
    args = build.dbt_args(
        "show", paths, dbt_vars, ["--select", "stg_audit__build_scope", "--output", "json"]
    )
    return subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args],
        env={
            **{k: v for k, v in os.environ.items() if k != scope.BUILD_ENV},
            "SPRX_DUCKDB_PATH": str(paths.work),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            **(dbt_env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def shown_practices(completed: subprocess.CompletedProcess) -> list[str]:
    assert completed.returncode == 0, completed.stdout[-2000:]
    shown = completed.stdout[completed.stdout.index("{") : completed.stdout.rindex("}") + 1]
    return sorted(row["practice_id"] for row in json.loads(shown)["show"])


def test_the_scope_model_reads_the_build_rebuilds_all_without_it_and_refuses_a_bad_one(
    tiny, tmp_path
):
    paths = copy_warehouse(tiny.paths, tmp_path / "warehouse")
    incremental = scope.BuildScope(False, "test", "f", (P1,))
    passed = scope.dbt_env("b1", incremental)
    assert shown_practices(dbt_show_scope(paths, passed)) == [P1]
    nothing_new = scope.dbt_env("b2", scope.BuildScope(False, "test", "f", ()))
    assert shown_practices(dbt_show_scope(paths, nothing_new)) == []
    # dbt run by hand, with neither: every practice with an applied delivery.
    assert shown_practices(dbt_show_scope(paths, None)) == [P1, "P002"]
    # dbt read the build only while executing: the second and third runs above, each with
    # another build, reused the first run's parse (as a var, every build re-parsed in full).
    log = (paths.dbt_dir / "logs" / "dbt.log").read_text()
    for run in log.split("Running with dbt=")[-2:]:
        assert "Partial parsing enabled" in run and "Unable to do partial parsing" not in run
    # ... or with the same value typed as the var sprx_build, which wins over the variable.
    by_hand = {
        scope.BUILD_VAR: scope.build_value("b3", scope.BuildScope(False, "", "f", ("P002",)))
    }
    assert shown_practices(dbt_show_scope(paths, passed, by_hand)) == ["P002"]
    # Airflow's template rendered without its XCom, or an empty value: a clear stop.
    for given in ("None", ""):
        refused = dbt_show_scope(paths, {scope.BUILD_ENV: given})
        assert refused.returncode != 0
        assert "the build dbt runs for (SPRX_BUILD, or the dbt var sprx_build)" in refused.stdout


def test_the_build_is_made_in_one_place_and_left_out_of_the_fingerprint(tmp_path):
    full = scope.BuildScope(True, "asked for", "f", ("P1", "P2"))
    assert scope.dbt_env("b1", full) == {
        "SPRX_BUILD": json.dumps({"full_rebuild": True, "id": "b1"}, sort_keys=True)
    }
    incremental = scope.BuildScope(False, "new deliveries", "f", ("P2",))
    assert json.loads(scope.dbt_env("b2", incremental)["SPRX_BUILD"]) == {
        "id": "b2",
        "full_rebuild": False,
        "practices": ["P2"],
    }
    project = tmp_path / "dbt_project"
    project.mkdir()
    base = scope.fingerprint("sha", {"window_days": 365}, project)
    for build_id, planned in (("b1", full), ("b2", incremental)):
        # a caller's own sprx_build var is dropped, never part of what a build makes
        run_vars = {"window_days": 365, scope.BUILD_VAR: scope.build_value(build_id, planned)}
        assert scope.fingerprint("sha", run_vars, project) == base


def test_a_recorded_scope_reads_back_as_it_was_planned(tmp_path):
    planned = scope.BuildScope(False, "deliveries applied since build b0", "f1", ("P1", "P2"))
    with connect(tmp_path / "work.duckdb") as con:
        scope.record(con, "b1", planned)
        assert scope.recorded(con, "b1") == planned


def outcome_rows(paths: WarehousePaths, columns: str, patients: str) -> list[tuple]:
    with duckdb.connect(str(paths.work), read_only=True) as con:
        return con.execute(
            f"select {columns} from marts.sp_patient_outcomes "
            f"where patient_id in ({patients}) order by 1"
        ).fetchall()


def _delivery(
    con: duckdb.DuckDBPyConnection,
    delivery_id: str,
    practice: str,
    status: str,
    applied_at: datetime,
) -> None:
    con.execute(
        "insert into audit.deliveries values (?, 'sha', date '2020-01-31', 'full', "
        "'EMIS', ?, '', ?)",
        [delivery_id, status, applied_at],
    )
    con.execute("insert into audit.delivery_practices values (?, ?)", [delivery_id, practice])


def _build(
    con: duckdb.DuckDBPyConnection,
    build_id: str,
    started_at: datetime,
    status: str,
    fingerprint: str,
) -> None:
    con.execute(
        "insert into audit.builds values (?, ?, null, ?, null, null, null, null, null)",
        [build_id, started_at, status],
    )
    con.execute(
        "insert into audit.build_scopes values (?, ?, true, '', ?, 0)",
        [build_id, started_at, fingerprint],
    )


def test_scope_is_the_practices_applied_since_the_last_successful_build(tmp_path):
    with connect(tmp_path / "work.duckdb") as con:
        _delivery(con, "d1", "P1", "applied", datetime(2026, 1, 1, 9))
        _delivery(con, "d2", "P2", "applied", datetime(2026, 1, 1, 9, 1))
        _delivery(con, "d3", "P3", "refused", datetime(2026, 1, 1, 9, 2))
        first = scope.plan(con, "f1")
        assert (first.full_rebuild, first.reason, first.practices) == (
            True,
            "no earlier successful build",
            ("P1", "P2"),
        )  # P3's delivery was refused

        _build(con, "b1", datetime(2026, 1, 1, 10), "published", "f1")
        _delivery(con, "d4", "P2", "applied", datetime(2026, 1, 2, 9))
        _build(con, "b2", datetime(2026, 1, 2, 10), "failed", "f1")  # not a baseline
        later = scope.plan(con, "f1")
        assert (later.full_rebuild, later.practices) == (False, ("P2",))
        assert later.reason == "deliveries applied since build b1"

        changed = scope.plan(con, "f2")  # project, codelist, vars or engine changed
        assert (changed.full_rebuild, changed.practices) == (True, ("P1", "P2"))
        assert changed.reason == "dbt project, codelist, dbt vars or engine changed since build b1"
        assert scope.plan(con, "f1", full_rebuild=True).reason == "asked for"


def test_fingerprint_changes_with_vars_codelist_and_project_files(tmp_path):
    project = tmp_path / "dbt_project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "a.sql").write_text("select 1")
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text("{}")
    base = scope.fingerprint("sha-a", {"window_days": 365}, project)
    assert scope.fingerprint("sha-a", {"window_days": 365}, project) == base
    assert scope.fingerprint("sha-a", {"window_days": 180}, project) != base
    assert scope.fingerprint("sha-b", {"window_days": 365}, project) != base
    (project / "target" / "manifest.json").write_text('{"changed": true}')  # build output
    assert scope.fingerprint("sha-a", {"window_days": 365}, project) == base
    (project / "models" / "a.sql").write_text("select 2")
    assert scope.fingerprint("sha-a", {"window_days": 365}, project) != base


def test_an_incremental_build_fails_when_a_delta_deletes_a_consultation_an_event_refers_to(
    tiny, tmp_path
):
    # E01, EDGE's referral, was recorded in consultation C03. A delta for P001 deletes C03 and
    # leaves E01: the reference now dangles, and the scoped relationships test must see it
    # although it looks up the rebuilt practice's consultations first.
    paths = copy_warehouse(tiny.paths, tmp_path / "warehouse")
    write_delivery(
        tmp_path / "landing",
        "2020-01-31_emis_002",
        "2020-01-31",
        "EMIS",
        [P1],
        {"deletions": [("consultations", "C03")]},
        kind="delta",
    )
    pipeline.ingest_landing(paths, tmp_path / "landing")
    with pytest.raises(BuildError, match="relationships_in_scope_stg_gp_extract__clinical_events"):
        pipeline.build_warehouse(paths)
    with duckdb.connect(str(paths.work), read_only=True) as con:
        (scoped,) = con.execute(
            "select count(*) from audit.build_practices p join audit.build_scopes s "
            "using (build_id) where not s.full_rebuild and s.started_at = "
            "(select max(started_at) from audit.build_scopes)"
        ).fetchone()
    assert scoped == 1  # the failing build was the incremental one, for P001 alone
