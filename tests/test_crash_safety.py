"""SIGKILL a real `sprx` process at many points; nothing published changes, nothing is lost.

Every test starts from the same state, `before`: the tiny extract ingested, built and
published, and two new deliveries waiting in the landing folder (a correction delta for
P001 and a later full delivery for P002). A clean, uninterrupted `sprx run` from there
reaches the state `clean`. Each test kills a process at one point, then checks:
1. the published warehouse is exactly as it was (every row of every table, clock times
   included), or, once the rename has happened, exactly the new one;
2. the next run finishes to the state `clean` reaches: every table of the work file (raw,
   audit, codelists, intermediate, marts; staging holds only views) and of the published
   file, compared row by row. Clock times and random build ids are left out, and
   audit.builds is compared as the inputs of its successful builds: the history of the
   interrupted run stays there on purpose (its build `abandoned`, or the same inputs built
   twice). After a killed `sprx ingest`, the next `sprx ingest` is compared on what ingest
   writes: the raw tables and the deliveries' audit tables.

Kill points: precise ones through `SPRX_KILL_AT` (sprx_pipeline.faults), points in dbt's
progress (the process is killed as soon as it prints a line), and one by the clock.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from deliveries import write_delivery
from tiny_extract import (
    CLINICAL_EVENTS,
    CONSULTATIONS,
    HOSPITAL_ATTENDANCES,
    P2,
    PATIENTS,
    REGISTRATIONS,
    write_tiny_correction,
)
from warehouse_state import (
    KILLED,
    Contents,
    Site,
    contents,
    dbt_processes_for,
    differences,
    kill_after_line,
)

from sprx_pipeline.pipeline import published_build
from sprx_pipeline.publish import temporary_files

pytestmark = pytest.mark.slow

INGESTED_TABLES = (
    "audit.deliveries",
    "audit.delivery_tables",
    "audit.delivery_practices",
    "audit.delivery_practice_tables",
    "audit.quarantine",
)


def write_p002_followup(landing: Path) -> None:
    """A later full delivery of P002 in gzip CSV: the tiny extract's rows and one more
    consultation for EXTRACT, extracted 2019-12-31."""

    def mine(rows: list[tuple], position: int = 2) -> list[tuple]:
        return [row for row in rows if row[position] == P2]

    write_delivery(
        landing,
        "2019-12-31_tpp_001",
        "2019-12-31",
        "TPP",
        [P2],
        {
            "practices": [(P2, "North West")],
            "patients": mine(PATIENTS, 1),
            "registrations": mine(REGISTRATIONS),
            "consultations": [
                *mine(CONSULTATIONS),
                ("C62", "EXTRACT", P2, "2019-09-09", "telephone", "nurse"),
            ],
            "clinical_events": mine(CLINICAL_EVENTS),
            "hospital_attendances": mine(HOSPITAL_ATTENDANCES),
        },
        fmt="csv.gz",
    )


@dataclass(frozen=True)
class Reference:
    """A state to compare with: both files' contents (clock times left out)."""

    work: Contents
    published: Contents

    def assert_reached_by(self, site: Site) -> None:
        assert differences(contents(site.paths.work, ignore_clock=True), self.work) == []
        assert differences(contents(site.published, ignore_clock=True), self.published) == []
        assert not any(f.exists() for f in temporary_files(site.paths))
        # The Parquet export is of the same build, one file per mart.
        assert published_build(site.paths) is not None
        marts = {name.split(".")[1] for name in self.published if name.startswith("marts.")}
        assert {p.stem for p in site.paths.parquet.iterdir()} == marts


@pytest.fixture(scope="module")
def before(tiny, tmp_path_factory) -> Site:
    site = Site(tmp_path_factory.mktemp("before"))
    Site(tiny.landing.parent).copy_to(site.root)  # landing/ and warehouse/
    write_tiny_correction(site.landing)
    write_p002_followup(site.landing)
    return site


@pytest.fixture(scope="module")
def published_before(before) -> Contents:
    return contents(before.published)


@pytest.fixture(scope="module")
def clean(before, tmp_path_factory) -> Reference:
    """What an uninterrupted `sprx run` from `before` reaches."""
    site = before.copy_to(tmp_path_factory.mktemp("clean"))
    code, output = site.sprx("run")
    assert code == 0, output
    assert "deliveries: 2 applied, 0 refused, 2 unchanged" in output
    return Reference(
        contents(site.paths.work, ignore_clock=True), contents(site.published, ignore_clock=True)
    )


def assert_no_dbt_left(site: Site) -> None:
    """dbt dies with the process that started it: nothing is left holding the work file."""
    deadline = time.monotonic() + 5
    while dbt_processes_for(site.paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dbt_processes_for(site.paths) == []


@dataclass(frozen=True)
class Kill:
    """Where to kill a process: a crash point, or a line of its output."""

    name: str
    point: str = ""
    line: str = ""

    def kill(self, site: Site, command: str) -> str:
        process = site.start(command, kill_at=self.point or None)
        if self.line:
            return kill_after_line(process, self.line)
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate(timeout=60)
        assert process.returncode == KILLED, f"{self.name}: not killed\n{output}"
        return output


# --- sprx ingest ---------------------------------------------------------------------------

INGEST_KILLS = [
    Kill(f"{point} of delivery {n}", point=f"{point}:{n}")
    for n in (1, 2)
    for point in ("ingest.staged", "ingest.written", "ingest.committed")
]


@pytest.mark.parametrize("kill", INGEST_KILLS, ids=[k.name for k in INGEST_KILLS])
def test_an_ingest_killed_part_way_is_finished_by_the_next(
    kill, before, published_before, clean, tmp_path
):
    site = before.copy_to(tmp_path)
    kill.kill(site, "ingest")
    assert contents(site.published) == published_before
    code, output = site.sprx("ingest")
    assert code == 0, output
    # Each delivery applied once, whole: the raw tables and their audit trail as a clean run's.
    ingested = contents(site.paths.work, ignore_clock=True)
    expected = {
        name: rows
        for name, rows in clean.work.items()
        if name.startswith("raw.") or name in INGESTED_TABLES
    }
    assert differences({k: ingested[k] for k in expected}, expected) == []


# --- sprx run ------------------------------------------------------------------------------

# Kills in a run's ingest are the ingest kills above, and one just after dbt starts is the
# build kill below: each run kill here costs a whole run, so only where a run differs.
RUN_KILLS = [
    Kill("build: dbt creating the marts", line="START sql table model marts.sp_outcome_summary"),
    # Mid-way through a per-practice model built a batch at a time (a line, not a share of
    # a clean run's duration: that was too early or too late on a machine under load).
    Kill(
        "build: dbt inside a batched per-practice model",
        line="START sql practice_batched model intermediate.int_trial_baselines",
    ),
]


@pytest.mark.parametrize("kill", RUN_KILLS, ids=[k.name for k in RUN_KILLS])
def test_a_run_killed_part_way_leaves_the_published_warehouse_and_the_next_run_finishes(
    kill, before, published_before, clean, tmp_path
):
    site = before.copy_to(tmp_path)
    kill.kill(site, "run")
    assert contents(site.published) == published_before
    assert_no_dbt_left(site)
    code, output = site.sprx("run")
    assert code == 0, output
    clean.assert_reached_by(site)


# --- publish -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(before, published_before, tmp_path_factory) -> Site:
    """A run from `before` killed in its publish, tables copied into the temporary file: the
    new deliveries are ingested and built, the published file is as it was."""
    site = before.copy_to(tmp_path_factory.mktemp("built"))
    Kill("publish.copied", point="publish.copied").kill(site, "run")
    assert contents(site.published) == published_before
    assert temporary_files(site.paths)[0].exists()
    return site


PUBLISH_KILLS = [Kill(point, point=point) for point in ("publish.copied", "publish.flushed")]


@pytest.mark.parametrize("kill", PUBLISH_KILLS, ids=[k.name for k in PUBLISH_KILLS])
def test_a_publish_killed_before_the_rename_leaves_the_old_warehouse(
    kill, built, published_before, clean, tmp_path
):
    site = built.copy_to(tmp_path)
    kill.kill(site, "publish")
    assert contents(site.published) == published_before
    code, output = site.sprx("publish")
    assert code == 0, output
    clean.assert_reached_by(site)


@pytest.mark.parametrize("point, rebuilt", [("publish.replaced", True), ("publish.linked", False)])
def test_a_publish_killed_after_the_rename_has_published_and_the_next_run_finishes(
    point, rebuilt, built, clean, tmp_path
):
    site = built.copy_to(tmp_path)
    Kill(point, point=point).kill(site, "publish")
    # The rename is the warehouse's commit point: the new one is in place, whole.
    assert differences(contents(site.published, ignore_clock=True), clean.published) == []
    code, output = site.sprx("run")
    assert code == 0, output
    # Killed before the Parquet link followed, the build is published again; after it, the
    # work file is told the build is published, and there is nothing new to do.
    assert ("nothing new since build" not in output) == rebuilt
    clean.assert_reached_by(site)


# --- build -------------------------------------------------------------------------------


def test_a_build_killed_part_way_cannot_be_published(before, published_before, tmp_path):
    site = before.copy_to(tmp_path)
    assert site.sprx("ingest")[0] == 0
    Kill("dbt just started", point="build.dbt_spawned").kill(site, "build")
    assert_no_dbt_left(site)
    code, output = site.sprx("publish")
    assert code == 2
    assert "has not passed the quality gate (its marts were not checked)" in output
    assert contents(site.published) == published_before
