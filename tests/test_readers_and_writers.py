"""Readers and writers at the same time, as real processes.

One scenario, run once for the module: the tiny extract is published (eight referred
patients); a reader process queries the published file in a loop; a correction delta
arrives and run A ingests, builds and publishes it (seven referred patients). While A runs,
run B is started without waiting and run C with `--wait`. Then the warehouse is published
five times more while the reader still reads. The tests below check what each saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from tiny_extract import write_tiny_correction
from warehouse_state import Site

pytestmark = pytest.mark.slow
READER = Path(__file__).with_name("published_reader.py")
REPUBLISHES = 5


@dataclass(frozen=True)
class Scenario:
    site: Site
    first_pid: int
    first: tuple[int, str]  # exit code and output of run A
    busy: tuple[int, str]  # run B, started while A held the warehouse
    waited: tuple[int, str]  # run C, started with --wait while A held the warehouse
    overlapped: bool  # A still held the warehouse once B had finished and C started
    looks: list[dict]  # every look of the reader


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def looks_so_far(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(scope="module")
def scenario(tiny, tmp_path_factory) -> Scenario:
    site = Site(tmp_path_factory.mktemp("readers"))
    Site(tiny.landing.parent).copy_to(site.root)
    write_tiny_correction(site.landing)
    log, stop = site.root / "reader.jsonl", site.root / "stop-reading"
    with open(log, "w") as out:
        reader = subprocess.Popen(
            [sys.executable, str(READER), str(site.published), str(stop)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: len(looks_so_far(log)) >= 5, "the reader's first looks")
        first = site.start("run")
        wait_for(
            lambda: site.paths.lock.read_text() == f"pid {first.pid}", "run A to take the warehouse"
        )
        busy = site.sprx("run")
        waiting = site.start("run", "--wait", "300")
        overlapped = first.poll() is None and site.paths.lock.read_text() == f"pid {first.pid}"
        first_output, _ = first.communicate(timeout=300)
        waited_output, _ = waiting.communicate(timeout=300)
        for _ in range(REPUBLISHES):
            assert site.sprx("publish")[0] == 0
        seen = len(looks_so_far(log))
        wait_for(lambda: len(looks_so_far(log)) >= seen + 5, "the reader's last looks")
    finally:
        stop.touch()
        reader.wait(timeout=60)
    return Scenario(
        site,
        first.pid,
        (first.returncode, first_output),
        busy,
        (waiting.returncode, waited_output),
        overlapped,
        looks_so_far(log),
    )


def test_a_second_run_is_told_the_warehouse_is_busy_and_changes_nothing(scenario):
    code, output = scenario.busy
    assert code == 3
    assert output.startswith(
        f"sprx: busy: {scenario.site.paths.work} is being written by "
        f"pid {scenario.first_pid}; wait for it to finish or pass a "
        "longer --wait"
    )
    assert "Traceback" not in output


def test_a_run_that_waits_goes_after_the_first_and_finds_nothing_new(scenario):
    assert scenario.overlapped
    assert scenario.first[0] == 0, scenario.first[1]
    assert "deliveries: 1 applied, 0 refused, 2 unchanged" in scenario.first[1]
    code, output = scenario.waited
    assert code == 0, output
    assert "deliveries: 0 applied, 0 refused, 3 unchanged" in output
    assert "nothing new since build" in output
    with duckdb.connect(str(scenario.site.paths.work), read_only=True) as con:
        # The tiny extract's build and A's: C built nothing; B never reached the file.
        assert con.execute("select status, count(*) from audit.builds group by all").fetchall() == [
            ("published", 2)
        ]
        assert con.execute("select count(*) from audit.deliveries").fetchone() == (3,)


def test_a_reader_never_gets_an_error_nor_a_mix_of_two_publications(scenario):
    looks = scenario.looks
    assert [look for look in looks if "error" in look] == []
    # The two marts always agree: sp_patient_outcomes has a row per referred patient
    # summarised in sp_outcome_summary, in the same publication.
    assert [look for look in looks if look["outcomes"] != look["summarised"]] == []
    by_build = {}
    for look in looks:
        by_build.setdefault(look["build_id"], set()).add(look["outcomes"])
    # Both versions seen, each build with one answer: 8 referred patients before the
    # correction, 7 after (NEWREG's referral deleted), in that order.
    assert sorted(by_build.values(), key=min) == [{7}, {8}]
    assert looks[0]["outcomes"] == 8 and looks[-1]["outcomes"] == 7
    # Readers crossed many swaps: of the seven publications (the tiny extract's, A's and
    # five republications, each with its own published_at), at least six were seen.
    assert len({look["published_at"] for look in looks}) >= 2 + REPUBLISHES - 1
