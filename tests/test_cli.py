"""The `sprx` command as a user runs it: real processes, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

SPRX = str(Path(sys.executable).with_name("sprx"))


def sprx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SPRX, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_with_an_example():
    result = sprx("--help")
    assert result.returncode == 0
    for command in ("generate", "ingest", "build", "publish", "run", "summary"):
        assert command in result.stdout
    assert "sprx run --landing data/landing --warehouse data/warehouse/sprx.duckdb" in result.stdout


def test_missing_landing_folder_exits_2_with_a_message_not_a_traceback(tmp_path):
    result = sprx("ingest", str(tmp_path / "nowhere"), "--warehouse", str(tmp_path / "w.duckdb"))
    assert result.returncode == 2
    assert result.stderr.startswith("sprx: error: landing area")
    assert "Traceback" not in result.stderr


def test_malformed_manifest_is_refused_and_ingest_exits_1(tmp_path):
    delivery = tmp_path / "landing" / "2020-01-31_emis_001"
    delivery.mkdir(parents=True)
    (delivery / "manifest.json").write_text('{"contract_version": "9"}')
    result = sprx("ingest", str(tmp_path / "landing"), "--warehouse", str(tmp_path / "w.duckdb"))
    assert result.returncode == 1
    assert "REFUSED 2020-01-31_emis_001" in result.stdout
    assert "manifest_shape: missing keys: delivery_id, extracted_at" in result.stdout


def test_run_on_the_tiny_extract_prints_the_summary_and_publishes(tmp_path):
    from tiny_extract import write_tiny_extract

    landing = write_tiny_extract(tmp_path / "landing")
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"
    result = sprx("run", "--landing", str(landing), "--warehouse", str(warehouse))
    assert result.returncode == 0, result.stderr
    assert "deliveries: 2 applied, 0 refused, 0 unchanged" in result.stdout
    assert "referred patients" in result.stdout and "1334.98" in result.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from marts.sp_patient_outcomes").fetchone() == (8,)
    again = sprx("run", "--landing", str(landing), "--warehouse", str(warehouse))
    assert again.returncode == 0
    assert "deliveries: 0 applied, 0 refused, 2 unchanged" in again.stdout
