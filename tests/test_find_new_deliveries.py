"""`find_new_deliveries` (dags/sprx_extracts.py) while a writer holds the work warehouse.

It only reads, but DuckDB will not open a file read-only while another process has it open
for writing: a reader that does not wait for the writer fails ("Could not set lock on file")
whenever a delivery or a build is in progress. Here a real writer process applies the first of
the tiny extract's two deliveries and keeps the file open; the task, run meanwhile, must wait
for it and then list only the second delivery.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from tiny_extract import write_tiny_extract

from sprx_pipeline import orchestration
from sprx_pipeline.config import PROJECT_ROOT, WarehousePaths

pytestmark = pytest.mark.slow  # imports Airflow and a DAG file

# Holds the writer's lock and a read-write DuckDB connection, as `sprx ingest` does, applies
# one delivery, says so, and keeps both until its stdin closes.
WRITER = """
import sys
from pathlib import Path
from sprx_pipeline import ingest
from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.warehouse import connect, writer_lock
paths = WarehousePaths.at(sys.argv[1])
with writer_lock(paths), connect(paths.work) as con:
    print(ingest.apply_folder(con, Path(sys.argv[2])).status, flush=True)
    sys.stdin.read()
"""


def load_task_callable(dag_id: str, task_id: str):
    """The Python function behind a task of one of our DAG files (what the worker runs)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    task = bag.dags[dag_id].get_task(task_id)
    return task, task.python_callable


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """True once `thread` is inside `function` (read from its live stack, not from a clock)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_find_new_deliveries_waits_for_a_writer_then_lists_what_it_left(tmp_path, monkeypatch):
    landing = write_tiny_extract(tmp_path / "landing")
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"
    monkeypatch.setenv("SPRX_LANDING_DIR", str(landing))
    monkeypatch.setenv("SPRX_WAREHOUSE_PATH", str(warehouse))
    task, find_new_deliveries = load_task_callable("sprx_extracts", "find_new_deliveries")
    assert task.pool == orchestration.WRITER_POOL  # Airflow's own writers: the one-slot pool

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(warehouse), str(landing / "2019-06-30_tpp_001")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    found: dict[str, object] = {}

    def run_task() -> None:
        try:
            found["deliveries"] = find_new_deliveries()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            found["error"] = exc

    reader = threading.Thread(target=run_task)
    try:
        assert writer.stdout.readline().strip() == "applied"  # it holds the file from here
        reader.start()
        while reader.is_alive() and not blocked_in(reader, "writer_lock"):
            reader.join(0.05)
        # The task neither failed nor read past the writer: it waits for the lock.
        assert "error" not in found, found.get("error")
        assert reader.is_alive() and "deliveries" not in found
        paths = WarehousePaths.at(warehouse)
        assert paths.lock.read_text() == f"pid {writer.pid}"
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=120) == 0
    reader.join(timeout=120)
    assert "error" not in found, found.get("error")
    assert found["deliveries"] == ["2020-01-31_emis_001"]


def test_without_the_lock_duckdb_refuses_the_reader_while_the_writer_holds_the_file(tmp_path):
    """Why the task waits: the same read, not waiting, fails while the writer holds the file."""
    import duckdb

    landing = write_tiny_extract(tmp_path / "landing")
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(warehouse), str(landing / "2019-06-30_tpp_001")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "applied"
        work = WarehousePaths.at(warehouse).work
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(work), read_only=True)
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=120) == 0
