"""`make bench`: the pipeline at network scale, measured stage by stage and against peers.

For each size (default 1,000,000 and 4,000,000 patients, in practices of RSC's average size:
a practice per 4,000 patients, so 250 and 1,000) it:
1. generates the synthetic extract (`sprx generate`), cached under benchmarks/cache/ by seed,
   size and practices; a cached extract reports the time and memory measured when it was made;
2. runs each stage as its own `sprx` subprocess on a fresh warehouse: ingest; `sprx build`
   (the quality gate on the loaded tables, the full dbt build, the gate on the marts; the dbt
   build's own time is read from its output); `sprx check` (the quality gate again, alone);
   publish. Wall time from the parent, peak memory from the child's rusage (`os.wait4`,
   which covers its dbt grandchild);
3. side by side, on the same warehouse: the DuckDB scan floor (every column of every input row
   read once), the plain-pandas `sp_patient_outcomes` (benchmarks/pandas_outcomes.py, checked
   equal to the published table; up to 1,000,000 patients only, as it holds every input in
   memory: 13 GiB at 1M, more than the machine at 4M), and `dbt run` of sp_patient_outcomes
   and its parents;
4. an incremental build: one practice sends a new delivery (a later extract with new
   consultations and referrals), `sprx build` rebuilds only it; its marts are compared with a
   full rebuild of the same data (`sprx build --full-refresh`), whose time is the denominator;
5. where the time goes: the slowest dbt nodes of the full build, DuckDB's profile of the
   slowest SQL model, and the ingest's statements for one delivery;
6. with `--engines duckdb spark` (what `make bench` runs): `sprx build --engine spark` on the
   same warehouse (lake export, the full dbt build on Spark, `SPRX_SPARK_MASTER` or
   `local[2]`, the marts copied back; always a full build), its marts compared with DuckDB's
   full build of the same data, and the peak memory of the JVM and of the Python processes
   (driver and applyInPandas workers), sampled from the process tree. `--engines spark`
   measures Spark alone: per size it ingests and runs one DuckDB `sprx build` (the baseline
   the marts are compared with, and the ratio's denominator), then the Spark builds, and
   replaces only the `spark` figures of benchmarks/results.json and the Spark block of
   docs/spark.md, leaving DuckDB's as they were.

It writes benchmarks/results.json and the tables between the bench markers of
docs/performance.md, and prints them. Every measured stage runs --repeats times (3 by
default; a fresh warehouse each time) and medians are quoted; ratios are taken between
medians of the same run.

    .venv/bin/python benchmarks/bench.py                       # what `make bench` runs
    .venv/bin/python benchmarks/bench.py --sizes 100000 --repeats 3
    .venv/bin/python benchmarks/bench.py --sizes 100000 1000000 --repeats 1 --engines spark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import pandas_outcomes  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from engine_compare import compare_marts  # noqa: E402

from sprx_pipeline.config import WarehousePaths  # noqa: E402
from sprx_pipeline.contract import CONTRACT_VERSION, TABLES, file_entry, write_manifest  # noqa: E402

BIN = Path(sys.executable).parent
CACHE = HERE / "cache"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SPARK_START, SPARK_END = "<!-- spark-bench:start -->", "<!-- spark-bench:end -->"
UPDATE_EXTRACTED_AT = date(2020, 2, 7)  # a week after the generated extracts
SP_REFERRAL = "871731000000106"
TARGETS = {
    "end_to_end_seconds": 900,
    "peak_memory_gib": 16,
    "ingest_rows_per_second": 1.5e6,
    "build_over_scan_floor": 10,
    "incremental_over_full": 0.1,
}
PATIENTS_PER_PRACTICE = 4_000  # RSC: over 4 million patients in about 1,000 practices
PANDAS_MAX_PATIENTS = 1_000_000


# --- measuring a child process ----------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_gib: float
    cpu_seconds: float = 0.0  # user + system, of the child and its children: steadier than
    output: str = ""  # wall time on a machine shared with other work


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command to completion; its wall time and the peak RSS of it and its children."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        text=True,
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.stdout.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n{output[-3000:]}")
    # ru_maxrss is in KiB
    return Measured(seconds, usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime, output)


def measure_tree(command: list[str], interval: float = 0.25) -> tuple[Measured, dict[str, float]]:
    """`measure`, plus the peak resident memory of the child's process tree by kind, sampled
    every `interval` s: the JVM (Spark's driver and, in local mode, its executors) and the
    Python processes (the sprx driver and Spark's Python workers), each summed, and all."""
    import threading

    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"jvm_gib": 0.0, "python_gib": 0.0, "total_gib": 0.0}
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(child.stdout.read()))
    reader.start()
    root = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            sizes = {"jvm_gib": 0.0, "python_gib": 0.0}
            for process in [root, *root.children(recursive=True)]:
                with process.oneshot():
                    kind = "jvm_gib" if process.name() == "java" else "python_gib"
                    sizes[kind] += process.memory_info().rss / 2**30
        except psutil.Error:
            continue
        sizes["total_gib"] = sizes["jvm_gib"] + sizes["python_gib"]
        peaks = {k: max(peaks[k], sizes[k]) for k in peaks}
        time.sleep(interval)
    reader.join()
    seconds = time.perf_counter() - started
    output = "".join(chunks)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n{output[-3000:]}")
    return Measured(seconds, peaks["total_gib"], 0.0, output), peaks


def sprx(*args: str) -> list[str]:
    return [str(BIN / "sprx"), *args]


def dbt_seconds(build_output: str) -> float:
    """The dbt child's own wall time, from `sprx build`'s last line (`...; dbt 12.3 s)`):
    `sprx build` also runs the quality gate before and after dbt."""
    match = re.search(r"; dbt ([0-9.]+) s\)", build_output)
    return float(match.group(1)) if match else float("nan")


@dataclass
class Stage:
    """One stage's runs: median wall time and the largest peak memory."""

    runs: list[Measured] = field(default_factory=list)
    cached: bool = False

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_gib(self) -> float:
        return max(r.peak_gib for r in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs)

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "peak_gib": round(self.peak_gib, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "runs": [round(r.seconds, 2) for r in self.runs],
            "cached": self.cached,
        }


# --- the extract -------------------------------------------------------------------------------


def extract(patients: int, practices: int, seed: int) -> tuple[Path, Stage, dict[str, int]]:
    """The generated landing folder, made once per seed and size; how long making it took."""
    folder = CACHE / f"seed{seed}-patients{patients}-practices{practices}"
    marker = folder / "generated.json"
    if marker.is_file():
        made = json.loads(marker.read_text())
        stage = Stage(
            [Measured(made["seconds"], made["peak_gib"], made.get("cpu_seconds", 0.0))], cached=True
        )
        return folder / "landing", stage, made["rows"]
    shutil.rmtree(folder, ignore_errors=True)
    run = measure(
        sprx(
            "generate",
            "--out",
            str(folder / "landing"),
            "--patients",
            str(patients),
            "--practices",
            str(practices),
            "--seed",
            str(seed),
        )
    )
    rows = {
        line.split()[0]: int(line.split()[1].replace(",", ""))
        for line in run.output.splitlines()
        if line.strip().endswith(" rows")
    }
    marker.write_text(
        json.dumps(
            {
                "seconds": run.seconds,
                "peak_gib": run.peak_gib,
                "cpu_seconds": run.cpu_seconds,
                "rows": rows,
                "measured_at": _now(),
            },
            indent=2,
        )
    )
    return folder / "landing", Stage([run]), rows


def write_update(paths: WarehousePaths, practice: str, out: Path) -> Path:
    """A new full delivery for one practice, a week after its last: everything it held, plus a
    consultation for every tenth patient and a referral for every fiftieth, dated between the
    old and the new extract dates (so index dates and uptake move, as in a real re-extract)."""
    delivery_id = f"{UPDATE_EXTRACTED_AT.isoformat()}_update_{practice}"
    folder = out / delivery_id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    extra = {
        "consultations": "union all by name select practice_id || '-CU' || patient_id as "
        "consultation_id, practice_id, patient_id, date '2020-02-03' as "
        "consultation_date, 'telephone' as mode, 'gp' as staff_role "
        "from picked where n % 10 = 0",
        "clinical_events": "union all by name select practice_id || '-EU' || patient_id as "
        "event_id, practice_id, patient_id, date '2020-01-20' as event_date, "
        f"'{SP_REFERRAL}' as snomed_code from picked where n % 50 = 0",
    }
    files = {}
    with duckdb.connect(str(paths.work), read_only=True) as con:
        con.execute(
            "create temp table picked as select practice_id, patient_id, row_number() "
            "over (order by patient_id) as n from raw.patients where practice_id = ?",
            [practice],
        )
        for table, spec in TABLES.items():
            columns = ", ".join(spec.column_names)
            path = folder / f"{table}.parquet"
            query = (
                f"select {columns} from raw.{table} where practice_id = '{practice}' "
                + extra.get(table, "")
            )
            con.execute(f"copy ({query}) to '{path}' (format parquet)")
            (count,) = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()
            files[table] = file_entry(path, count)
        (system,) = con.execute(
            "select d.source_system from audit.deliveries d join audit.delivery_practices p "
            "using (delivery_id) where p.practice_id = ? and d.status = 'applied' "
            "order by d.extracted_at desc limit 1",
            [practice],
        ).fetchone()
    write_manifest(
        folder,
        {
            "contract_version": CONTRACT_VERSION,
            "delivery_id": delivery_id,
            "extracted_at": UPDATE_EXTRACTED_AT.isoformat(),
            "kind": "full",
            "source_system": system,
            "practices": [practice],
            "files": files,
        },
    )
    return out


# --- side-by-side measurements --------------------------------------------------------------------


def scan_floor(work: Path, repeats: int) -> tuple[float, int]:
    """Median seconds for DuckDB to read every column of every input (raw) row once."""
    with duckdb.connect(str(work), read_only=True) as con:
        tables = [f"raw.{name}" for name in TABLES]
        rows = sum(con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables)
        times = []
        for _ in range(repeats + 1):  # the first run warms the cache, as the build's does
            started = time.perf_counter()
            for table in tables:
                con.execute(f"select max(columns(*)) from {table}").fetchall()
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:]), rows


def pandas_run(paths: WarehousePaths, out: Path) -> tuple[Measured, dict[str, Any], list[str]]:
    """The pandas reference in its own process; its timings and how it differs from the mart."""
    run = measure([sys.executable, str(HERE / "pandas_outcomes.py"), str(paths.work), str(out)])
    timings = json.loads(run.output.strip().splitlines()[-1])
    with duckdb.connect(str(paths.published), read_only=True) as con:
        published = con.sql("select * from marts.sp_patient_outcomes").df()
    import pandas as pd

    return run, timings, pandas_outcomes.differences(published, pd.read_parquet(out))


def dbt_outcomes_only(paths: WarehousePaths) -> Measured:
    """`dbt run` of sp_patient_outcomes and every model it depends on, rebuilt whole."""
    from sprx_pipeline.build import dbt_args

    args = dbt_args(
        "run",
        paths,
        {"sp_codelist": "social-prescribing"},
        ["--select", "+sp_patient_outcomes", "--full-refresh"],
    )
    return measure(
        [str(BIN / "dbt"), *args],
        {"SPRX_DUCKDB_PATH": str(paths.work), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )


def snapshot_marts(paths: WarehousePaths, copy: Path) -> None:
    """Copy the work file's marts aside, to compare with another build of the same data."""
    copy.unlink(missing_ok=True)
    with duckdb.connect(str(copy)) as con:
        con.execute("attach ? as work (read_only)", [str(paths.work)])
        for mart in marts_of(con):
            con.execute(f"create table {mart} as select * from work.marts.{mart}")


def marts_differ(paths: WarehousePaths, copy: Path) -> dict[str, int]:
    """Rows in one version of each mart and not the other (zero everywhere when identical)."""
    with duckdb.connect(str(copy), read_only=True) as con:
        con.execute("attach ? as work (read_only)", [str(paths.work)])
        return {
            mart: con.execute(
                f"select (select count(*) from (from {mart} except all from work.marts.{mart})) + "
                f"(select count(*) from (from work.marts.{mart} except all from {mart}))"
            ).fetchone()[0]
            for mart in marts_of(con)
        }


def marts_of(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every mart of the attached work file: all of them are compared, new ones too."""
    return [
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where database_name = 'work' "
            "and schema_name = 'marts' order by 1"
        ).fetchall()
    ]


def slowest_nodes(run_results: Path, top: int = 8) -> list[dict[str, Any]]:
    """The dbt nodes (models and tests) that took longest, from a run_results.json."""
    results = json.loads(run_results.read_text())["results"]
    ranked = sorted(results, key=lambda r: r["execution_time"], reverse=True)[:top]
    return [
        {
            "node": r["unique_id"].split(".", 2)[-1].split(".")[0],
            "kind": r["unique_id"].split(".")[0],
            "seconds": round(r["execution_time"], 2),
        }
        for r in ranked
    ]


def practices_per_batch() -> int:
    """The dbt var that sizes a practice_batched model's batches."""
    project = yaml.safe_load((ROOT / "dbt_project" / "dbt_project.yml").read_text())
    return int(project["vars"]["practices_per_batch"])


def profile_model(paths: WarehousePaths, model: str, top: int = 6) -> list[dict[str, Any]]:
    """DuckDB's own profile of one SQL model's query: the operators that take the time (for a
    practice_batched model, of one batch)."""
    compiled = next((paths.dbt_dir / "target" / "compiled").rglob(f"{model}.sql"), None)
    if compiled is None:
        return []
    spill = paths.dbt_dir / "profile_spill"
    # As dbt runs it: into a table, under the pipeline's memory limit (fetching a model's
    # tens of millions of rows into Python would measure Python, and exhaust memory).
    with duckdb.connect(
        config={
            "memory_limit": os.environ.get("SPRX_DUCKDB_MEMORY_LIMIT", "4GB"),
            "temp_directory": str(spill),
        }
    ) as con:
        # dbt names the work file's catalog "sprx" in the SQL it compiles
        con.execute("attach ? as sprx (read_only)", [str(paths.work)])
        con.execute("use sprx")
        con.execute("pragma enable_profiling = 'json'")
        profile_file = paths.dbt_dir / f"profile_{model}.json"
        con.execute(f"pragma profiling_output = '{profile_file}'")
        # A practice_batched model is profiled as one batch: its first practices_per_batch
        # practices (the materialization fills the placeholder the same way).
        batch = [
            r[0]
            for r in con.execute(
                f"select practice_id from raw.practices order by 1 limit {practices_per_batch()}"
            ).fetchall()
        ]
        sql = compiled.read_text().replace("__sprx_practices__", ", ".join(f"'{p}'" for p in batch))
        con.execute(f"create temp table profiled as {sql}")
        con.execute("pragma disable_profiling")
    shutil.rmtree(spill, ignore_errors=True)
    operators: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if "type" in node:  # DuckDB 2's JSON profile: operator type, timing, rows out
            name = node["type"] + "".join(
                f" {node['extra_info'][k]}"
                for k in ("Table", "Join Type")
                if k in node.get("extra_info", {})
            )
            operators.append(
                {
                    "operator": name,
                    "seconds": round(node.get("timing", 0.0), 2),
                    "rows": node.get("intermediate_rows", 0),
                }
            )
        for child in node.get("children", []):
            walk(child)

    for root in json.loads(profile_file.read_text()).get("operator", []):
        walk(root)
    return sorted(operators, key=lambda o: o["seconds"], reverse=True)[:top]


# --- Spark ---------------------------------------------------------------------------------------


def copy_marts(paths: WarehousePaths, copy: Path) -> None:
    """The work file's marts, in schema marts of a new file (for `compare_marts`)."""
    copy.unlink(missing_ok=True)
    with duckdb.connect(str(copy)) as con:
        con.execute("attach ? as work (read_only)", [str(paths.work)])
        con.execute("create schema marts")
        for mart in marts_of(con):
            con.execute(f"create table marts.{mart} as select * from work.marts.{mart}")


def step_seconds(output: str, pattern: str) -> float:
    match = re.search(pattern, output)
    return float(match.group(1)) if match else float("nan")


def bench_spark(
    paths: WarehousePaths, run_dir: Path, repeats: int, duckdb_build: Stage
) -> dict[str, Any]:
    """`sprx build --engine spark` on a warehouse DuckDB has just built in full, `repeats`
    times (each a fresh process: its Spark session starts cold, as a scheduled build's
    would); its marts against DuckDB's."""
    baseline = run_dir / "duckdb_marts.duckdb"
    copy_marts(paths, baseline)
    build, memory = Stage(), []
    for repeat in range(repeats):
        run, peaks = measure_tree(
            sprx("build", "--engine", "spark", "--warehouse", str(paths.published))
        )
        build.runs.append(run)
        memory.append(peaks)
        _say(
            f"spark {repeat + 1}/{repeats}: {run.seconds:.0f} s, peak {peaks['total_gib']:.2f} GiB"
        )
    output = build.runs[-1].output
    compared, differences = compare_marts(baseline, paths.work)
    return {
        "master": os.environ.get("SPRX_SPARK_MASTER", "local[2]"),
        "build": build.summary(),
        "dbt_seconds": round(statistics.median(dbt_seconds(r.output) for r in build.runs), 2),
        "lake_seconds": step_seconds(output, r"as Parquet to .* \(([0-9.]+) s\)"),
        "marts_back_seconds": step_seconds(output, r"from Spark into .* \(([0-9.]+) s\)"),
        "peak_jvm_gib": round(max(m["jvm_gib"] for m in memory), 2),
        "peak_python_gib": round(max(m["python_gib"] for m in memory), 2),
        "peak_total_gib": round(max(m["total_gib"] for m in memory), 2),
        "duckdb_build_seconds": round(duckdb_build.seconds, 2),
        "over_duckdb_build": round(build.seconds / duckdb_build.seconds, 2),
        "marts_compared": compared,
        "marts_equal_to_duckdb": not differences,
        "differences": differences,
    }


def bench_spark_size(patients: int, practices: int, seed: int, repeats: int) -> dict[str, Any]:
    """Spark alone (`--engines spark`): ingest and one full DuckDB `sprx build` of the same
    extract (the baseline), then the Spark builds."""
    landing, _, _ = extract(patients, practices, seed)
    run_dir = CACHE / f"run-patients{patients}"
    shutil.rmtree(run_dir, ignore_errors=True)
    paths = WarehousePaths.at(run_dir / "warehouse" / "sprx.duckdb")
    measure(sprx("ingest", str(landing), "--warehouse", str(paths.published)))
    duckdb_build = Stage([measure(sprx("build", "--warehouse", str(paths.published)))])
    _say(f"duckdb build {duckdb_build.seconds:.0f} s")
    return {
        "patients": patients,
        "practices": practices,
        "seed": seed,
        "repeats": repeats,
        **bench_spark(paths, run_dir, repeats, duckdb_build),
    }


# --- one size --------------------------------------------------------------------------------


def plain_load(landing: Path, warehouse: Path, repeats: int) -> Stage:
    """DuckDB's own pace on the extract: `plain_load.py` reads every file once into typed
    tables, with no checks (the floor for `sprx ingest`)."""
    runs = [
        measure([sys.executable, str(HERE / "plain_load.py"), str(landing), str(warehouse)])
        for _ in range(repeats)
    ]
    warehouse.unlink(missing_ok=True)
    _say(f"plain DuckDB load {statistics.median(r.seconds for r in runs):.0f} s")
    return Stage(runs)


def _say(message: str) -> None:
    print(f"  {datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


def ingest_profile(landing: Path, out: Path, top: int = 10) -> dict[str, Any]:
    """Where one delivery's ingest spends its time: every statement the loader runs against
    DuckDB, timed and grouped by its shape (table names folded), for the first delivery."""
    import collections

    from sprx_pipeline import contract
    from sprx_pipeline.ingest import apply_delivery
    from sprx_pipeline.warehouse import connect

    class Timed:
        def __init__(self, con):
            self.con, self.seconds = con, collections.Counter()

        def execute(self, sql, *args):
            shape = re.sub(r"\s+", " ", sql)
            shape = re.sub(
                r"(_in_|_bad_|_good_|raw\.|record_keys\.|_other_keys_)\w+", r"\1T", shape
            )[:90]
            started = time.perf_counter()
            result = self.con.execute(sql, *args)
            self.seconds[shape] += time.perf_counter() - started
            return result

        def __getattr__(self, name):
            return getattr(self.con, name)

    shutil.rmtree(out, ignore_errors=True)
    paths = WarehousePaths.at(out / "sprx.duckdb")
    folder = sorted(p for p in landing.iterdir() if p.is_dir())[0]
    manifest = contract.read_manifest(folder)
    with connect(paths.work) as con:
        timed = Timed(con)
        started = time.perf_counter()
        apply_delivery(timed, manifest)
        seconds = time.perf_counter() - started
    rows = sum(entry.rows for entry in manifest.files.values())
    return {
        "delivery": folder.name,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "statements": [
            {"sql": sql, "seconds": round(t, 3)} for sql, t in timed.seconds.most_common(top)
        ],
    }


def bench_size(
    patients: int, practices: int, seed: int, repeats: int, engines: tuple[str, ...] = ("duckdb",)
) -> dict[str, Any]:
    measured_at, load_average = _now(), round(os.getloadavg()[0], 1)
    landing, generate, rows = extract(patients, practices, seed)
    run_dir = CACHE / f"run-patients{patients}"
    stages = {name: Stage() for name in ("ingest", "build", "quality_gate", "publish")}
    for repeat in range(repeats):
        shutil.rmtree(run_dir, ignore_errors=True)
        paths = WarehousePaths.at(run_dir / "warehouse" / "sprx.duckdb")
        warehouse = ["--warehouse", str(paths.published)]
        for name, command in (
            ("ingest", sprx("ingest", str(landing), *warehouse)),
            ("build", sprx("build", *warehouse)),
            ("quality_gate", quality_gate_command(paths)),
            ("publish", sprx("publish", *warehouse)),
        ):
            stages[name].runs.append(measure(command))
            _say(f"run {repeat + 1}/{repeats}: {name} {stages[name].runs[-1].seconds:.0f} s")
            if name == "build":
                shutil.copy(
                    paths.dbt_dir / "target" / "run_results.json", run_dir / "full_build.json"
                )
    nodes = slowest_nodes(run_dir / "full_build.json")
    slowest_sql = next(
        (n["node"] for n in nodes if n["kind"] == "model" and n["node"] != "int_matched_controls"),
        None,
    )
    profile = profile_model(paths, slowest_sql) if slowest_sql else []
    dbt_full = statistics.median(dbt_seconds(r.output) for r in stages["build"].runs)
    floor, input_rows = scan_floor(paths.work, repeats)
    pandas, pandas_timings, pandas_diff = Stage(), {}, []
    if patients <= PANDAS_MAX_PATIENTS:
        for _ in range(repeats):
            run, pandas_timings, pandas_diff = pandas_run(
                paths, run_dir / "pandas_outcomes.parquet"
            )
            pandas.runs.append(run)
        _say(f"pandas reference {pandas.seconds:.0f} s")
    outcomes_models = Stage([dbt_outcomes_only(paths) for _ in range(repeats)])
    changed, update = changed_practices(paths), run_dir / "update"
    for practice in changed:
        write_update(paths, practice, update)
    measure(sprx("ingest", str(update), *warehouse))
    incremental, full_again, differ = incremental_against_full(paths, run_dir, changed, repeats)
    dbt_incremental = statistics.median(dbt_seconds(r.output) for r in incremental.runs)
    dbt_full_again = statistics.median(dbt_seconds(r.output) for r in full_again.runs)
    # Spark last: its build replaces the work file's marts. Its baseline is the DuckDB full
    # rebuild of the same data (the update included) that the loop above ended with (the
    # REOPEN_PRACTICE step touches the audit tables only).
    spark = bench_spark(paths, run_dir, repeats, full_again) if "spark" in engines else None
    ingest_statements = ingest_profile(landing, run_dir / "ingest-profile")
    plain = plain_load(landing, run_dir / "plain-load.duckdb", repeats)
    # `sprx build` already runs the gate on both sides of dbt: its stand-alone run (`sprx
    # check`) shows what the gate costs and is not counted again.
    stage_seconds = [generate.seconds] + [
        s.seconds for name, s in stages.items() if name != "quality_gate"
    ]
    return {
        "patients": patients,
        "practices": practices,
        "seed": seed,
        "repeats": repeats,
        "measured_at": measured_at,
        "load_average_at_start": load_average,
        "input_rows": input_rows,
        "rows_by_table": rows,
        "stages": {
            "generate": generate.summary(),
            **{name: stage.summary() for name, stage in stages.items()},
        },
        "end_to_end_seconds": round(sum(stage_seconds), 1),
        "peak_gib": round(max([generate.peak_gib] + [s.peak_gib for s in stages.values()]), 2),
        "ingest_rows_per_second": round(input_rows / stages["ingest"].seconds),
        "ingest_profile": ingest_statements,
        "plain_load": plain.summary(),
        "ingest_over_plain_load": round(stages["ingest"].seconds / plain.seconds, 2),
        "scan_floor_seconds": round(floor, 2),
        "dbt_seconds": round(dbt_full, 2),
        "build_over_scan_floor": round(dbt_full / floor, 1),
        "pandas": (
            {
                **pandas.summary(),
                **{k: round(v, 2) for k, v in pandas_timings.items() if k.endswith("seconds")},
                "rows": pandas_timings["rows"],
                "equal_to_warehouse": not pandas_diff,
                "differences": pandas_diff,
            }
            if pandas.runs
            else None
        ),
        "dbt_run_outcome_models": outcomes_models.summary(),
        "pandas_over_build": round(pandas.seconds / dbt_full, 2) if pandas.runs else None,
        "pandas_over_outcome_models": (
            round(pandas.seconds / outcomes_models.seconds, 2) if pandas.runs else None
        ),
        "incremental": {
            "practices_rebuilt": changed,
            "build": incremental.summary(),
            "full_rebuild_same_data": full_again.summary(),
            "ratio": round(incremental.seconds / full_again.seconds, 3),
            "dbt_seconds": round(dbt_incremental, 2),
            "full_dbt_seconds": round(dbt_full_again, 2),
            "dbt_ratio": round(dbt_incremental / dbt_full_again, 3),
            "cpu_ratio": round(incremental.cpu_seconds / full_again.cpu_seconds, 3),
            "marts_identical": not any(differ.values()),
            "rows_differing": differ,
        },
        "slowest_nodes": nodes,
        "slowest_sql_model": {"model": slowest_sql, "profile": profile},
        **(
            {
                "spark": {
                    "patients": patients,
                    "practices": practices,
                    "seed": seed,
                    "repeats": repeats,
                    **spark,
                }
            }
            if spark
            else {}
        ),
    }


def incremental_against_full(
    paths: WarehousePaths, run_dir: Path, changed: list[str], repeats: int
) -> tuple[Stage, Stage, dict[str, int]]:
    """`repeats` times: the incremental `sprx build` of the `changed` practices, then a full
    rebuild of the same data, their marts compared (EXCEPT ALL both ways); after each, the
    warehouse is put back to "those practices changed since the last build". Returns both
    stages and the last comparison's rows differing by mart."""
    warehouse = ["--warehouse", str(paths.published)]
    incremental, full = Stage(), Stage()
    for repeat in range(repeats):
        incremental.runs.append(measure(sprx("build", *warehouse)))
        snapshot_marts(paths, run_dir / "incremental_marts.duckdb")
        full.runs.append(measure(sprx("build", "--full-refresh", *warehouse)))
        differ = marts_differ(paths, run_dir / "incremental_marts.duckdb")
        _say(
            f"incremental {repeat + 1}/{repeats}: {incremental.runs[-1].seconds:.0f} s, full "
            f"{full.runs[-1].seconds:.0f} s, marts differing {sum(differ.values())}"
        )
        reopen(paths, changed)
    return incremental, full, differ


def reopen(paths: WarehousePaths, changed: list[str]) -> None:
    """Put the warehouse back to "`changed` sent deliveries since the last build"."""
    measure([sys.executable, "-c", REOPEN_PRACTICE, str(paths.work), changed[0]])


# Mark the benchmark's builds since the update as failed, so the next `sprx build` takes the
# build before the update as its baseline and rebuilds the updated practice again: each repeat
# of the incremental build then starts from the same state.
REOPEN_PRACTICE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("update audit.builds set status = 'failed' where started_at > (select max(applied_at) "
            "from audit.deliveries d join audit.delivery_practices p using (delivery_id) "
            "where p.practice_id = ?)", [sys.argv[2]])
"""


def changed_practices(paths: WarehousePaths) -> list[str]:
    """The practices that send a new delivery: the first one in a hundred (at least one)."""
    with duckdb.connect(str(paths.work), read_only=True) as con:
        ids = [
            r[0] for r in con.execute("select practice_id from raw.practices order by 1").fetchall()
        ]
    return ids[: max(1, len(ids) // 100)]


def quality_gate_command(paths: WarehousePaths) -> list[str]:
    """The quality gate on its own: both Great Expectations checkpoints, as `sprx check`."""
    return sprx("check", "--warehouse", str(paths.published))


# --- reporting -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.machine()}"


def table(results: dict[str, Any]) -> str:
    """The performance table: one column per size."""
    sizes = results["sizes"]
    head = (
        "| | "
        + " | ".join(f"{s['patients']:,} patients, {s['practices']:,} practices" for s in sizes)
        + " |"
    )
    lines = [head, "|---|" + "---|" * len(sizes)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in sizes) + " |")

    def stage(s: dict[str, Any], name: str) -> str:
        st = s["stages"][name]
        return f"{st['seconds']:.1f} / {st['cpu_seconds']:.1f} / {st['peak_gib']:.2f}" + (
            " (cached)" if st["cached"] else ""
        )

    row("input rows (all tables)", lambda s: f"{s['input_rows']:,}")
    for name, label in (
        ("generate", "generate"),
        ("ingest", "ingest"),
        ("build", "`sprx build` (gate, full dbt build, gate)"),
        (
            "quality_gate",
            "quality gate alone (`sprx check`; inside `sprx build`, not counted again)",
        ),
        ("publish", "publish"),
    ):
        row(f"{label}: wall s / CPU s / peak GiB", lambda s, n=name: stage(s, n))
    row("of which the dbt build, wall s", lambda s: f"{s['dbt_seconds']:.1f}")
    row(
        "**end to end** (generate + ingest + `sprx build` + publish)",
        lambda s: f"**{s['end_to_end_seconds']:.0f} s**",
    )
    row("peak memory of any stage", lambda s: f"{s['peak_gib']:.2f} GiB")
    row("**ingest rows/s**", lambda s: f"**{s['ingest_rows_per_second']:,}**")
    row(
        "DuckDB's plain load of the same files, no checks (`plain_load.py`): wall s / rows/s",
        lambda s: (
            f"{s['plain_load']['seconds']:.1f} / {s['input_rows'] / s['plain_load']['seconds']:,.0f}"
            if s.get("plain_load")
            else "–"
        ),
    )
    row(
        "ingest ÷ plain load",
        lambda s: f"{s['ingest_over_plain_load']:.2f}×" if s.get("plain_load") else "–",
    )
    row("dbt build rows/s", lambda s: f"{s['input_rows'] / s['dbt_seconds']:,.0f}")
    row(
        "scan floor (DuckDB reads every input value once)",
        lambda s: f"{s['scan_floor_seconds']:.2f} s",
    )
    row("**dbt build ÷ scan floor**", lambda s: f"**{s['build_over_scan_floor']:.1f}×**")
    row(
        "pandas `sp_patient_outcomes`: load + compute s / peak GiB",
        lambda s: (
            f"{s['pandas']['load_seconds']:.1f} + {s['pandas']['compute_seconds']:.1f} / "
            f"{s['pandas']['peak_gib']:.2f}"
            if s["pandas"]
            else "not run (above 1M patients)"
        ),
    )
    row(
        "pandas equals the warehouse",
        lambda s: (
            ("yes" if s["pandas"]["equal_to_warehouse"] else "**NO**") if s["pandas"] else "–"
        ),
    )
    row(
        "`dbt run +sp_patient_outcomes` (models only) s",
        lambda s: f"{s['dbt_run_outcome_models']['seconds']:.1f}",
    )
    row(
        "pandas ÷ dbt build; ÷ `dbt run +sp_patient_outcomes`",
        lambda s: (
            f"{s['pandas_over_build']:.2f}×; {s['pandas_over_outcome_models']:.2f}×"
            if s["pandas"]
            else "–"
        ),
    )
    row(
        "incremental `sprx build`, 1 practice in 100 changed: s (dbt s) / peak GiB",
        lambda s: (
            f"{s['incremental']['build']['seconds']:.1f} ({s['incremental']['dbt_seconds']:.1f}) / "
            f"{s['incremental']['build']['peak_gib']:.2f}"
        ),
    )
    row(
        "full rebuild of the same data: s (dbt s)",
        lambda s: (
            f"{s['incremental']['full_rebuild_same_data']['seconds']:.1f} "
            f"({s['incremental']['full_dbt_seconds']:.1f})"
        ),
    )
    row(
        "**incremental ÷ full**: `sprx build` wall; CPU; dbt alone",
        lambda s: (
            f"**{s['incremental']['ratio']:.3f}**; {s['incremental']['cpu_ratio']:.3f}; "
            f"{s['incremental']['dbt_ratio']:.3f}"
        ),
    )
    row(
        "incremental marts identical to full (EXCEPT ALL both ways)",
        lambda s: "yes" if s["incremental"]["marts_identical"] else "**NO**",
    )

    def slow(s: dict) -> str:
        return ", ".join(f"{n['node']} {n['seconds']:.1f}" for n in s["slowest_nodes"][:4])

    row("slowest dbt nodes (s, summed over threads)", slow)
    when = "; ".join(
        f"{s['patients']:,} on {s.get('measured_at', results['measured_at'])[:10]}, "
        f"median of {s['repeats']} run{'s' if s['repeats'] > 1 else ''}, load average "
        f"{s.get('load_average_at_start', '?')} at its start"
        for s in sizes
    )
    caption = (
        f"Measured on {results['machine']} (`make bench`, seed {sizes[0]['seed']}; {when}; "
        "raw figures in `benchmarks/results.json`). Ratios are taken within one run."
    )
    return caption + "\n\n" + "\n".join(lines)


def spark_table(rows: list[dict[str, Any]], measured_at: str, machine_name: str) -> str:
    """The Spark engine's table: one column per size."""
    head = (
        "| | "
        + " | ".join(f"{s['patients']:,} patients, {s['practices']:,} practices" for s in rows)
        + " |"
    )
    lines = [head, "|---|" + "---|" * len(rows)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in rows) + " |")

    row("Spark master", lambda s: f"`{s['master']}`")
    row(
        "**`sprx build --engine spark`** (full build): wall s",
        lambda s: f"**{s['build']['seconds']:.1f}**",
    )
    row(
        "of which: lake export s; dbt on Spark s; marts back to DuckDB s",
        lambda s: f"{s['lake_seconds']:.1f}; {s['dbt_seconds']:.1f}; {s['marts_back_seconds']:.1f}",
    )
    row(
        "peak memory JVM / Python / both, GiB",
        lambda s: (
            f"{s['peak_jvm_gib']:.2f} / {s['peak_python_gib']:.2f} / {s['peak_total_gib']:.2f}"
        ),
    )
    row(
        "DuckDB full `sprx build` of the same data, s", lambda s: f"{s['duckdb_build_seconds']:.1f}"
    )
    row("Spark ÷ DuckDB", lambda s: f"{s['over_duckdb_build']:.2f}×")
    row(
        "Spark marts equal DuckDB's (EXCEPT ALL both ways, 1e-9 relative)",
        lambda s: "yes" if s["marts_equal_to_duckdb"] else "**NO**",
    )
    when = "; ".join(
        f"{s['patients']:,} on {s.get('measured_at', measured_at)[:10]}, median of "
        f"{s['repeats']} run(s), load average {s.get('load_average_at_start', '?')} "
        "at its start"
        for s in rows
    )
    caption = (
        f"Measured on {machine_name} (`make bench`, seed {rows[0]['seed']}; {when}; raw "
        "figures under `spark` in `benchmarks/results.json`). Memory is the RSS of the "
        "process tree summed by kind, sampled every 0.25 s: Spark's Python workers are "
        "forks that share pages, so the Python figure overstates what they hold."
    )
    return caption + "\n\n" + "\n".join(lines)


def ingest_table(results: dict[str, Any]) -> str:
    """The ingest's statements for one delivery of the largest size."""
    s = results["sizes"][-1]
    profile = s["ingest_profile"]
    lines = [
        f"One delivery of the {s['patients']:,}-patient extract ({profile['delivery']}, "
        f"{profile['rows']:,} rows) applied alone: {profile['seconds']:.1f} s, "
        f"{profile['rows_per_second']:,} rows/s. Its slowest statements (table names "
        "folded to T):",
        "",
        "| s | statement |",
        "|---|---|",
    ]
    lines += [f"| {st['seconds']:.2f} | `{st['sql']}` |" for st in profile["statements"]]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> str:
    """Which of the targets each size met."""
    checks = []
    for s in results["sizes"]:
        n = f"{s['patients']:,}"
        checks += [
            (
                f"{n}: end to end in under 15 minutes",
                s["end_to_end_seconds"] < TARGETS["end_to_end_seconds"],
                f"{s['end_to_end_seconds']:.0f} s",
            ),
            (
                f"{n}: peak memory under 16 GiB",
                s["peak_gib"] < TARGETS["peak_memory_gib"],
                f"{s['peak_gib']:.2f} GiB",
            ),
            (
                f"{n}: ingest at 1.5 million rows a second",
                s["ingest_rows_per_second"] >= TARGETS["ingest_rows_per_second"],
                f"{s['ingest_rows_per_second']:,} rows/s",
            ),
            (
                f"{n}: an incremental build ({len(s['incremental'].get('practices_rebuilt', [0]))} "
                f"practices of {s['practices']} changed) at most a tenth of a full one",
                s["incremental"]["ratio"] <= TARGETS["incremental_over_full"],
                f"{s['incremental']['ratio']:.3f} for `sprx build`, {s['incremental']['dbt_ratio']:.3f} "
                "for dbt alone",
            ),
            (
                f"{n}: dbt build within 10× the scan floor",
                s["build_over_scan_floor"] <= TARGETS["build_over_scan_floor"],
                f"{s['build_over_scan_floor']:.1f}×",
            ),
        ]
    return "\n".join(
        f"- {'met' if ok else '**missed**'}: {label} ({value})" for label, ok, value in checks
    )


def update_marked(path: Path, block: str, start: str = START, end: str = END) -> None:
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block to update")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{block}\n{end}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument(
        "--practices",
        type=int,
        default=None,
        help=f"practices per size (default: one per {PATIENTS_PER_PRACTICE:,} patients)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--spark-doc", type=Path, default=ROOT / "docs" / "spark.md")
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=("duckdb", "spark"),
        default=["duckdb"],
        help="duckdb: every stage, as above; spark: `sprx build --engine spark` "
        "on the same warehouse (needs the `spark` extra and Java 17); "
        "spark alone keeps results.json's DuckDB figures",
    )
    args = parser.parse_args(argv)
    CACHE.mkdir(exist_ok=True)
    engines = tuple(args.engines)
    if "duckdb" not in engines:
        return spark_only(args)
    results: dict[str, Any] = {"measured_at": _now(), "machine": machine(), "sizes": []}
    if args.results.exists():  # sizes not measured this time keep their earlier figures
        earlier = json.loads(args.results.read_text()).get("sizes", [])
        results["sizes"] = [
            s for s in earlier if s["patients"] not in args.sizes and "measured_at" in s
        ]
    for patients in args.sizes:
        practices = args.practices or max(10, patients // PATIENTS_PER_PRACTICE)
        print(f"benchmarking {patients:,} patients in {practices:,} practices ...", flush=True)
        results["sizes"].append(bench_size(patients, practices, args.seed, args.repeats, engines))
        results["sizes"].sort(key=lambda s: s["patients"])
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    spark_rows = [s["spark"] for s in results["sizes"] if "spark" in s]
    if spark_rows:
        results["spark"] = {
            "measured_at": results["measured_at"],
            "machine": results["machine"],
            "sizes": spark_rows,
        }
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        spark_block = spark_table(spark_rows, results["measured_at"], results["machine"])
        update_marked(args.spark_doc, spark_block, SPARK_START, SPARK_END)
        print(spark_block)
    block = table(results) + "\n\nTargets:\n\n" + targets(results) + "\n\n" + ingest_table(results)
    update_marked(args.doc, block)
    print(block)
    print(f"\nwrote {args.results} and the bench block of {args.doc}")
    return 0


def spark_only(args: argparse.Namespace) -> int:
    """`--engines spark`: the Spark rows alone, merged into results.json under `spark`."""
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    measured_at, machine_name = _now(), machine()
    # sizes not measured this time keep their earlier Spark figures
    rows = [s for s in results.get("spark", {}).get("sizes", []) if s["patients"] not in args.sizes]
    for patients in args.sizes:
        practices = args.practices or max(10, patients // PATIENTS_PER_PRACTICE)
        print(
            f"benchmarking Spark on {patients:,} patients in {practices:,} practices ...",
            flush=True,
        )
        rows.append(
            {
                "measured_at": _now(),
                "load_average_at_start": round(os.getloadavg()[0], 1),
                **bench_spark_size(patients, practices, args.seed, args.repeats),
            }
        )
        rows.sort(key=lambda s: s["patients"])
        results["spark"] = {"measured_at": measured_at, "machine": machine_name, "sizes": rows}
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    block = spark_table(rows, measured_at, machine_name)
    update_marked(args.spark_doc, block, SPARK_START, SPARK_END)
    print(block)
    print(f"\nwrote the spark figures of {args.results} and the Spark block of {args.spark_doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
