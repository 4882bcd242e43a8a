"""The light install and the lock.

`pip install -c requirements.lock .` gives an analyst the CLI, ingest, dbt build, quality
gate, publish, release and report without Airflow; `.[airflow]` adds Airflow, Cosmos and the
PostgreSQL provider. One lock pins both sets: used as a constraints file it pins whichever
set is asked for. Here the light install is built from PyPI into a fresh venv (from a copy
of this checkout, outside it) and runs the tiny extract end to end; and the environment the
tests run in holds exactly the lock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import venvs
from packaging.markers import Marker
from tiny_extract import write_tiny_extract

from sprx_pipeline.config import PROJECT_ROOT, data_docs_assets

pytestmark = pytest.mark.slow  # a venv from PyPI and a real dbt build (a minute or two)

LOCK = PROJECT_ROOT / "requirements.lock"
AIRFLOW_SET = {
    "apache-airflow",
    "apache-airflow-core",
    "apache-airflow-task-sdk",
    "astronomer-cosmos",
    "apache-airflow-providers-postgres",
    "psycopg2-binary",
}
# Modules of the package an analyst's light install runs: all but the DAGs' helpers.
LIGHT_MODULES = sorted(
    p.stem
    for p in (PROJECT_ROOT / "src" / "sprx_pipeline").glob("*.py")
    if p.stem not in ("__init__", "orchestration")
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    """{name: version} of the lock's lines whose environment marker holds for this Python
    (libcst needs pyyaml-ft on 3.13 only, for one)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        requirement, _, marker = line.partition(";")
        if (
            requirement.strip()
            and not line.startswith("#")
            and (not marker.strip() or Marker(marker.strip()).evaluate())
        ):
            name, _, version = requirement.strip().partition("==")
            pins[canonical(name)] = version
    return pins


def installed(python: Path | str) -> dict[str, str]:
    """Every distribution in the venv of `python` but this package: {name: version}."""
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "list",
            "--format=json",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tools = {"pip", "setuptools", "wheel", "sprx-pipeline"}
    return {
        canonical(d["name"]): d["version"]
        for d in json.loads(done.stdout)
        if canonical(d["name"]) not in tools
    }


def source_copy(target: Path) -> Path:
    """This checkout as a user would clone it (tracked and new files, not what git ignores),
    plus the fetched Data Docs assets, so the wheel is built from outside the checkout."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    assets = data_docs_assets()
    extra = (
        [str(p.relative_to(PROJECT_ROOT)) for p in assets.rglob("*") if p.is_file()]
        if (assets.is_relative_to(PROJECT_ROOT))
        else []
    )
    for name in filter(None, [*listed, *extra]):
        if (PROJECT_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes((PROJECT_ROOT / name).read_bytes())
    return target


def test_the_environment_holds_exactly_the_lock():
    # Every installed distribution is pinned at its version, and every pin is installed:
    # the lock is the full set (light + airflow + test + spark extras), nothing stale, nothing
    # loose.
    assert installed(sys.executable) == lock_pins()


def test_the_light_code_path_imports_no_airflow():
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_MODULES!r}: importlib.import_module('sprx_pipeline.' + name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'cosmos'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "cli" in LIGHT_MODULES and "pipeline" in LIGHT_MODULES and len(LIGHT_MODULES) >= 20
    assert done.stdout.strip() == "[]"


def test_the_light_install_runs_the_pipeline_without_airflow(tmp_path):
    source = source_copy(tmp_path / "source")
    python = venvs.create(tmp_path / "venv")
    venvs.pip_install(python, "pip==26.3")
    venvs.pip_install(python, "-c", str(LOCK), str(source))
    light = installed(python)
    pins = lock_pins()
    assert not light.keys() & AIRFLOW_SET
    assert {name: version for name, version in light.items() if pins.get(name) != version} == {}
    assert {"dbt-core", "dbt-duckdb", "duckdb", "great-expectations", "pyarrow"} <= light.keys()
    assert subprocess.run([str(python), "-m", "pip", "check"], capture_output=True).returncode == 0
    no_airflow = subprocess.run(
        [str(python), "-c", "import airflow"], capture_output=True, text=True
    )
    assert "No module named 'airflow'" in no_airflow.stderr

    # The tiny extract, end to end, from a folder that is not a checkout.
    sprx = python.with_name("sprx")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPRX_", "VIRTUAL_ENV"))}
    landing = write_tiny_extract(tmp_path / "landing")
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(sprx), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    output = run("run", "--landing", str(landing), "--warehouse", str(warehouse))
    assert "deliveries: 2 applied, 0 refused" in output
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from marts.sp_patient_outcomes").fetchone() == (8,)
        assert con.execute("select count(*) from marts.sp_referrals").fetchone() == (15,)
    run("release", "--warehouse", str(warehouse), "--out", str(tmp_path / "release"))
    run("report", "--release", str(tmp_path / "release"), "--out", str(tmp_path / "report.html"))
    assert (tmp_path / "release" / "manifest.json").is_file()
    assert (tmp_path / "report.html").stat().st_size > 20_000
    # The wheel carried the dbt project (not this checkout's) and the Data Docs assets.
    bundled = subprocess.run(
        [str(python), "-c", "from sprx_pipeline import config; print(config.PROJECT_ROOT)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(bundled).is_relative_to(tmp_path / "venv") and bundled.endswith("project")
    index = (
        warehouse.with_name("sprx.quality") / "gx/uncommitted/data_docs/local_site/index.html"
    ).read_text()
    assert "static/vendor/jquery@3.7.1/dist/jquery.min.js" in index
    assert "code.jquery.com" not in index
