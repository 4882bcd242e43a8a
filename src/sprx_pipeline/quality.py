"""The quality gate: Great Expectations checkpoints after loading and before publishing.

Two stages, each a GX Checkpoint over the suites of `suites` (kept in `expectations/`):
- `loaded` (checkpoint `sprx_loaded`): the raw contract tables, after `sprx ingest`;
  snapshotted before dbt builds anything from them and checked while it builds (a failure
  stops dbt and fails the build: `PendingGate`, `pipeline.build_warehouse`);
- `marts` (checkpoint `sprx_publish`): the marts dbt built, with the row accounting of every
  delivery (received = loaded + quarantined), before `publish` copies them out.

GX has no DuckDB engine, so each stage first writes a Parquet snapshot of the tables it
checks and validates that with GX's pandas engine. Raw tables larger than `RAW_SAMPLE_ROWS`
are checked on a repeatable Bernoulli sample of about that size: the loader's row rules and
dbt's tests have already checked every row in SQL, and a sample of 250,000 rows measures a
completeness share to within 0.2 percentage points. A build that rebuilds only some practices
(`scope`) checks only their rows in the raw tables and the per-practice marts: the others
passed the gate when they were loaded. The snapshot is deleted afterwards: patient-level
rows do not linger.

Each warehouse has its own GX project beside it (`<name>.quality/gx/`), so its Data Docs
(`gx/uncommitted/data_docs/local_site/index.html`) keep the history of every gate; they
open offline (`data_docs`: pinned copies of the files GX loads from CDNs). Every
check's outcome is also recorded in `audit.quality_checks`, which is published. A check at
level `error` that fails raises `QualityGateError`, naming each failed check and by how much;
nothing is published after it.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import yaml

from . import data_docs
from .build import EXPECTATIONS_DIR, dbt_args, failures, run_dbt
from .config import DBT_PROJECT_DIR, SP_CODELIST, WarehousePaths
from .warehouse import connect

STAGES = {"loaded": "sprx_loaded", "marts": "sprx_publish"}
RAW_SAMPLE_ROWS = 250_000
# Tables with a row per patient or event of one practice: a scoped gate checks only the
# practices the build rebuilt. (The other marts are whole-network summaries, checked whole.)
PER_PRACTICE_SUITES = (
    "raw.",
    "marts.sp_referrals",
    "marts.sp_patient_outcomes",
    "marts.sp_matched_controls",
)
EARLIEST_DATE = "1900-01-01"
HISTORY_RUNS = 30
VACUOUS_WHEN_EMPTY = ("expect_column_min_to_be_between", "expect_column_max_to_be_between")
SAMPLE_SEED = 42
DATA_DOCS = Path("gx/uncommitted/data_docs/local_site/index.html")


class QualityGateError(RuntimeError):
    """A check at error level failed: the warehouse must not be published."""

    def __init__(self, message: str, report: GateReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, as recorded in audit.quality_checks."""

    suite: str
    name: str
    kahn_category: str | None
    kahn_subcategory: str | None
    level: str
    passed: bool
    detail: str
    threshold_pct: float | None = None
    rows_checked: int | None = None
    rows_failing: int | None = None
    pct_failing: float | None = None
    observed: str | None = None
    table_rows: int | None = None

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "fail" if self.level == "error" else "warn"

    def describe(self) -> str:
        return (
            f"{self.level} {self.suite} {self.name} ({self.kahn_category}"
            + (f"/{self.kahn_subcategory}" if self.kahn_subcategory else "")
            + f"): {self.detail}"
        )


@dataclass(frozen=True)
class GateReport:
    stage: str
    checks: list[CheckResult]
    data_docs: Path | None = None
    checked_at: datetime = field(default_factory=datetime.now)
    scope: str = "all practices"

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    def summary(self) -> str:
        return (
            f"{len(self.checks)} checks over {self.scope}: "
            f"{len(self.checks) - len(self.failed) - len(self.warnings)} passed, "
            f"{len(self.warnings)} warnings, {len(self.failed)} failed"
        )


# --- run-time parameters -------------------------------------------------------------------


def dbt_vars(con: duckdb.DuckDBPyConnection, build_id: str | None) -> dict[str, Any]:
    """The dbt vars of build `build_id`: the project's defaults overlaid with its own (the
    defaults alone when no build is given or recorded)."""
    defaults = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    row = con.execute("select dbt_vars from audit.builds where build_id = ?", [build_id]).fetchone()
    return {**defaults, **(json.loads(row[0]) if row and row[0] else {})}


def parameters(con: duckdb.DuckDBPyConnection, build_id: str | None) -> dict[str, Any]:
    """Values the suites leave as parameters (see `suites.PARAMETERS`), for build `build_id`."""
    import pandas as pd

    build_vars = dbt_vars(con, build_id)
    (latest,) = con.execute(
        "select max(extracted_at) from audit.deliveries where status = 'applied'"
    ).fetchone()
    latest = latest or date.today()
    codes = [
        c
        for (c,) in con.execute(
            "select code from codelists.sp_codes where codelist = ? order by code",
            [build_vars.get("sp_codelist", SP_CODELIST)],
        ).fetchall()
    ]
    return {
        "earliest_date": pd.Timestamp(EARLIEST_DATE),
        "latest_extracted_at": pd.Timestamp(latest),
        "latest_extract_year": latest.year,
        "study_start": pd.Timestamp(build_vars["study_start"]),
        "study_end": pd.Timestamp(build_vars["study_end"]),
        "window_days": int(build_vars["window_days"]),
        "controls_per_case": int(build_vars["controls_per_case"]),
        "codelist_codes": codes,
    }


# --- snapshots -----------------------------------------------------------------------------


def build_scope(con: duckdb.DuckDBPyConnection, build_id: str | None) -> list[str] | None:
    """The practices an incremental build rebuilt, or None to check every practice: when it
    rebuilt everything, or nothing (a build after an interrupted publish has nothing new, and
    a gate over no rows would pass by default)."""
    row = con.execute(
        "select full_rebuild from audit.build_scopes where build_id = ?", [build_id]
    ).fetchone()
    if row is None or row[0]:
        return None
    practices = [
        p
        for (p,) in con.execute(
            "select practice_id from audit.build_practices where build_id = ? order by 1",
            [build_id],
        ).fetchall()
    ]
    return practices or None


def snapshot(
    con: duckdb.DuckDBPyConnection,
    suite_names: list[str],
    folder: Path,
    practices: list[str] | None = None,
) -> dict[str, int]:
    """Write each suite's table as `<folder>/<suite>.parquet`; return the rows it had to check.

    Dates become timestamps (pandas reads Parquet dates as Python objects, which GX cannot
    compare); per-practice tables keep only `practices`, when given; raw tables above
    RAW_SAMPLE_ROWS are sampled, repeatably.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    con.execute(
        "create or replace temp table _gate_scope as select unnest(?::varchar[]) as practice_id",
        [practices or []],
    )
    rows = {}
    for name in suite_names:
        schema, table = name.split(".")
        columns = con.execute(
            "select column_name, data_type from duckdb_columns() where "
            "schema_name = ? and table_name = ? order by column_index",
            [schema, table],
        ).fetchall()
        select = ", ".join(
            f'cast("{c}" as timestamp) as "{c}"' if kind == "DATE" else f'"{c}"'
            for c, kind in columns
            if not c.startswith("_")
        )
        source = f'(select * from {schema}."{table}"'
        if practices is not None and name.startswith(PER_PRACTICE_SUITES):
            source += " where practice_id in (select practice_id from _gate_scope)"
        source += ") as checked"
        (rows[name],) = con.execute(f"select count(*) from {source}").fetchone()
        if schema == "raw" and rows[name] > RAW_SAMPLE_ROWS:
            percent = 100.0 * RAW_SAMPLE_ROWS / rows[name]
            source += f" using sample {percent:.6f} percent (bernoulli, {SAMPLE_SEED})"
        target = str(folder / f"{name}.parquet").replace("'", "''")
        con.execute(f"copy (select {select} from {source}) to '{target}' (format parquet)")
    return rows


# --- the checkpoint ------------------------------------------------------------------------


def _context(project: Path):
    """This warehouse's GX project, created on first use, quiet (no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.save()
    return context


def _checkpoint(context, stage: str, suite_names: list[str], folder: Path):
    """The stage's Checkpoint: one validation definition per suite over its snapshot file."""
    import great_expectations as gx

    from .suites import load_suite

    source_name = "sprx_snapshot"
    existing = {d.name: d for d in context.data_sources.all().values()}.get(source_name)
    if existing is not None and Path(existing.base_directory) != folder:
        context.data_sources.delete(source_name)  # the warehouse folder moved
        existing = None
    source = existing or context.data_sources.add_pandas_filesystem(
        source_name, base_directory=folder
    )
    definitions = []
    for name in suite_names:
        asset = (
            source.get_asset(name)
            if name in source.get_asset_names()
            else source.add_parquet_asset(name)
        )
        batch = (
            asset.get_batch_definition("snapshot")
            if "snapshot" in [b.name for b in asset.batch_definitions]
            else asset.add_batch_definition_path("snapshot", f"{name}.parquet")
        )
        suite = context.suites.add_or_update(load_suite(name))
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch, suite=suite)
            )
        )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=STAGES[stage], validation_definitions=definitions, result_format="SUMMARY"
        )
    )


def _update_data_docs(context, result) -> None:
    """Render this run's validation pages and the index once (GX's UpdateDataDocsAction
    renders the index again for every suite, which costs seconds per stage)."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    identifiers = list(result.run_results)
    identifiers += [
        ExpectationSuiteIdentifier(name=v.suite_name) for v in result.run_results.values()
    ]
    context.build_data_docs(resource_identifiers=identifiers)


def prune_history(project: Path, keep: int = HISTORY_RUNS) -> None:
    """Keep the latest `keep` results of each suite, in the store and in the Data Docs, so
    that a warehouse rebuilt twice a week does not grow its quality folder without bound."""
    uncommitted = project / "gx" / "uncommitted"
    for base in (uncommitted / "validations", uncommitted / "data_docs/local_site/validations"):
        for suite_dir in (p for p in base.glob("*/*") if p.is_dir()):
            runs = sorted(suite_dir.glob("*/*"), key=lambda p: p.name)
            for old in runs[:-keep]:
                shutil.rmtree(old)
                if not any(old.parent.iterdir()):
                    old.parent.rmdir()


def _as_check(suite: str, result: Any, table_rows: int) -> CheckResult:
    """A GX expectation result as a CheckResult that says by how much it failed."""
    config, outcome = result.expectation_config, result.result or {}
    meta = config.meta or {}
    checked, failing = outcome.get("element_count"), outcome.get("unexpected_count")
    pct = outcome.get("unexpected_percent")
    observed = outcome.get("observed_value")
    passed = bool(result.success)
    if error := _exception(result.exception_info):
        detail = f"could not be evaluated: {error}"
    elif config.type in VACUOUS_WHEN_EMPTY and _is_missing(observed):
        # A column with no values (an empty table; nobody has died) breaks no bound.
        passed, observed, detail = True, None, "no values to check"
    elif failing is not None:
        detail = (
            f"{failing:,} of {checked:,} rows ({pct or 0:.2f}%) fail; threshold "
            f"{meta.get('threshold_pct') or 0:g}%"
        )
        examples = outcome.get("partial_unexpected_list") or []
        if failing and examples:
            detail += f"; e.g. {', '.join(map(str, examples[:3]))}"
    else:
        bounds = {k: v for k, v in config.kwargs.items() if k in ("min_value", "max_value")}
        detail = f"observed {_show(observed)}; expected {_bounds(bounds)}"
    if checked is not None and checked < table_rows:
        detail += f" (sampled {checked:,} of {table_rows:,} rows)"
    return CheckResult(
        suite=suite,
        name=meta.get("check", config.type),
        kahn_category=meta.get("kahn_category"),
        kahn_subcategory=meta.get("kahn_subcategory"),
        level=meta.get("level", "error"),
        passed=passed,
        detail=detail,
        threshold_pct=meta.get("threshold_pct"),
        rows_checked=checked,
        rows_failing=failing,
        pct_failing=pct,
        observed=None if observed is None else _show(observed),
        table_rows=table_rows,
    )


def _is_missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, (list, dict)) and bool(pd.isna(value)))


def _exception(info: dict[str, Any] | None) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any.

    GX reports it either at the top level or per metric, keyed by the metric's id.
    """
    info = info or {}
    if info.get("raised_exception"):
        return info.get("exception_message") or "unknown error"
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return (nested[0].get("exception_message") or "unknown error") if nested else None


def _show(value: Any) -> str:
    """A value as a person writes it: dates without a midnight time."""
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date().isoformat()
    return str(value)


def _bounds(bounds: dict[str, Any]) -> str:
    low, high = (
        _show(bounds[k]) if bounds.get(k) is not None else None for k in ("min_value", "max_value")
    )
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def run_checkpoint(
    paths: WarehousePaths,
    stage: str,
    suite_names: list[str],
    params: dict[str, Any],
    table_rows: dict[str, int],
    run_name: str,
) -> list[CheckResult]:
    """Run the stage's GX checkpoint over its snapshot, then update the Data Docs."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(paths.quality_dir)
    folder = paths.quality_dir / "snapshot"
    result = _checkpoint(context, stage, suite_names, folder).run(
        expectation_parameters=params, run_id=RunIdentifier(run_name=run_name)
    )
    prune_history(paths.quality_dir)
    _update_data_docs(context, result)
    data_docs.make_offline((paths.quality_dir / DATA_DOCS).parent)
    checks = []
    for validation in result.run_results.values():
        suite = validation.suite_name
        checks += [_as_check(suite, r, table_rows[suite]) for r in validation.results]
    return checks


# --- checks outside GX ------------------------------------------------------------------


def check_row_accounting(con: duckdb.DuckDBPyConnection) -> CheckResult:
    """Every applied delivery accounts for its rows: received = loaded + quarantined, and the
    quarantine holds exactly the rows counted as quarantined."""
    broken = con.execute(
        "select delivery_id, table_name, received, loaded, quarantined "
        "from audit.delivery_tables where received <> loaded + quarantined "
        "order by all"
    ).fetchall()
    (quarantine_gap,) = con.execute(
        "select count(*) from (select delivery_id, table_name, sum(quarantined) as n "
        "from audit.delivery_tables group by all) t full join (select delivery_id, "
        "table_name, count(*) as n from audit.quarantine group by all) q "
        "using (delivery_id, table_name) where coalesce(t.n, 0) <> coalesce(q.n, 0)"
    ).fetchone()
    (tables,) = con.execute("select count(*) from audit.delivery_tables").fetchone()
    detail = "; ".join(
        f"{d} {t}: received {r} != loaded {lo} + quarantined {q}" for d, t, r, lo, q in broken
    )
    if quarantine_gap:
        detail += f"; {quarantine_gap} table(s) whose quarantine rows differ from the count"
    return CheckResult(
        "audit.delivery_tables",
        "row_accounting",
        "conformance",
        "computational",
        "error",
        not (broken or quarantine_gap),
        detail.strip("; ") or "received = loaded + quarantined everywhere",
        threshold_pct=0.0,
        rows_checked=tables,
        rows_failing=len(broken) + quarantine_gap,
        table_rows=tables,
    )


def check_dbt_tests(paths: WarehousePaths) -> CheckResult:
    """Every dbt data and unit test passes over the built warehouse as it now stands."""
    passed, failed = failures(*run_dbt(dbt_args("test", paths), paths))
    return CheckResult(
        "dbt",
        "dbt_tests",
        "conformance",
        None,
        "error",
        not failed,
        "; ".join(failed) or f"{passed} dbt tests passed",
        rows_checked=passed + len(failed),
        rows_failing=len(failed),
    )


# --- the gate ------------------------------------------------------------------------------


def stage_suites(stage: str, folder: Path = EXPECTATIONS_DIR) -> list[str]:
    """The suites a stage checks: the kept suites of its schema (`raw.*` or `marts.*` in
    expectations/, which the gate runs; tests/test_quality.py holds them equal to
    `suites`). Read from the folder, not from `suites`, which imports Great Expectations:
    a build snapshots before dbt starts and imports Great Expectations while dbt runs."""
    schema = "raw" if stage == "loaded" else "marts"
    names = sorted(path.name.removesuffix(".json") for path in folder.glob(f"{schema}.*.json"))
    if not names:
        raise FileNotFoundError(
            f"no {schema}.*.json suites in {folder}: the quality gate has nothing to check "
            "with; restore expectations/ (or write it: python -m sprx_pipeline.suites)"
        )
    return names


def gate(
    paths: WarehousePaths,
    stage: str = "marts",
    build_id: str | None = None,
    run_dbt_tests: bool = False,
    scoped: bool = False,
) -> GateReport:
    """Run one stage of the gate, record every check, raise if a check at error level fails.

    `scoped`: check only the practices that build `build_id` rebuilt (what a build does);
    otherwise every practice (what `sprx check` does). `run_dbt_tests` re-runs dbt's tests too
    (for a warehouse built by hand); `sprx build` has just run them in `dbt build`.
    """
    pending = prepare(paths, stage, build_id, scoped)
    pending.validate()
    if run_dbt_tests:
        pending.checks.append(check_dbt_tests(paths))
    return pending.finish()


@dataclass
class PendingGate:
    """One stage of the gate, split where it stops needing the work file.

    `prepare` snapshots the tables (DuckDB); `validate` runs Great Expectations over the
    snapshot and touches no DuckDB file, so it can run while another process (dbt) holds the
    work file; `finish` records the checks and raises if one at error level failed. A build
    validates the loaded tables while dbt builds (`pipeline.build_warehouse`): importing and
    running Great Expectations costs seconds that would otherwise come before dbt starts."""

    paths: WarehousePaths
    stage: str
    build_id: str | None
    names: list[str]
    params: dict[str, Any]
    table_rows: dict[str, int]
    practices: list[str] | None
    extra: list[CheckResult]
    checks: list[CheckResult] | None = None

    def validate(self) -> list[CheckResult]:
        """Run the checkpoint over the snapshot (once), then delete the snapshot."""
        if self.checks is None:
            try:
                run_name = f"{self.stage}-{self.build_id or 'manual'}"
                self.checks = (
                    run_checkpoint(
                        self.paths, self.stage, self.names, self.params, self.table_rows, run_name
                    )
                    + self.extra
                )
            finally:
                shutil.rmtree(self.paths.quality_dir / "snapshot", ignore_errors=True)
        return self.checks

    @property
    def failed(self) -> bool:
        """Whether a validated check at error level failed."""
        return any(c.status == "fail" for c in self.checks or [])

    def finish(self) -> GateReport:
        """Record the checks (validating first if not yet done) and write the summary page;
        raise QualityGateError, naming each failed check, if one at error level failed."""
        checks = self.validate()
        practices = self.practices
        scope = (
            "all practices" if practices is None else f"the {len(practices)} practice(s) rebuilt"
        )
        report = GateReport(self.stage, checks, self.paths.quality_dir / DATA_DOCS, scope=scope)
        record(self.paths, report, self.build_id)
        write_summary(self.paths)
        if report.failed:
            raise QualityGateError(
                f"quality gate ({self.stage}) failed, nothing published: "
                + report.summary()
                + "\n  "
                + "\n  ".join(c.describe() for c in report.failed)
                + f"\n(Data Docs: {report.data_docs})",
                report,
            )
        return report


def prepare(
    paths: WarehousePaths, stage: str, build_id: str | None = None, scoped: bool = False
) -> PendingGate:
    """Snapshot what one stage of the gate checks, with its parameters (see `gate`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown quality stage {stage!r}; expected one of {', '.join(STAGES)}")
    names = stage_suites(stage)
    with connect(paths.work) as con:
        params = parameters(con, build_id)
        practices = build_scope(con, build_id) if scoped else None
        table_rows = snapshot(con, names, paths.quality_dir / "snapshot", practices)
        extra = [check_row_accounting(con)] if stage == "marts" else []
    return PendingGate(paths, stage, build_id, names, params, table_rows, practices, extra)


def require_passed(con: duckdb.DuckDBPyConnection, build_id: str | None) -> None:
    """Raise QualityGateError unless `build_id` is a build that dbt did not fail, whose marts
    passed the gate, and whose latest check of each stage found nothing at error level."""
    if build_id is None:
        raise QualityGateError("nothing has been built yet: run `sprx build` before publishing")
    row = con.execute("select status from audit.builds where build_id = ?", [build_id]).fetchone()
    if row is None or row[0] == "failed":
        raise QualityGateError(
            f"build {build_id} {'failed' if row else 'does not exist'}; "
            "nothing published: fix it and run `sprx build` again"
        )
    latest = dict(
        con.execute(
            "select stage, count(*) filter (where status = 'fail') from audit.quality_checks q "
            "where build_id = ? and checked_at = (select max(checked_at) from audit.quality_checks "
            "where build_id = q.build_id and stage = q.stage) group by stage",
            [build_id],
        ).fetchall()
    )
    if "marts" not in latest or any(latest.values()):
        problem = (
            "its marts were not checked"
            if "marts" not in latest
            else "; ".join(
                f"{n} checks failed at stage {stage}" for stage, n in sorted(latest.items()) if n
            )
        )
        raise QualityGateError(
            f"build {build_id} has not passed the quality gate ({problem}); "
            "nothing published: see audit.quality_checks, fix the data and "
            "run `sprx build`"
        )


def record(paths: WarehousePaths, report: GateReport, build_id: str | None) -> None:
    """Append the report's checks to audit.quality_checks."""
    rows = [
        (
            report.checked_at,
            build_id,
            report.stage,
            c.suite,
            c.name,
            c.kahn_category,
            c.kahn_subcategory,
            c.level,
            c.threshold_pct,
            c.table_rows,
            c.rows_checked,
            c.rows_failing,
            c.pct_failing,
            c.observed,
            c.status,
            c.detail,
        )
        for c in report.checks
    ]
    with connect(paths.work) as con:
        con.executemany(
            "insert into audit.quality_checks values "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


SUMMARY_PAGE = "summary.html"
_STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}


def write_summary(paths: WarehousePaths) -> Path:
    """One self-contained page of the latest result of every check, failures first, in the
    layout of OHDSI's Data Quality Dashboard. GX's Data Docs load their styles and scripts
    from a CDN; this page needs no network, for trusted research environments."""
    with connect(paths.work) as con:
        rows = con.execute(
            "select stage, suite, check_name, kahn_category, kahn_subcategory, level, "
            "threshold_pct, rows_checked, rows_failing, pct_failing, status, detail, checked_at "
            "from audit.quality_checks q where checked_at = (select max(checked_at) from "
            "audit.quality_checks where stage = q.stage)"
        ).fetchall()
    rows.sort(key=lambda r: (_STATUS_ORDER[r[10]], r[0], r[1], r[2]))
    counts = {s: sum(r[10] == s for r in rows) for s in _STATUS_ORDER}

    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.2f}"
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    body = "".join(
        f'<tr class="{r[10]}">'
        + "".join(
            cell(v)
            for v in (
                r[10],
                r[0],
                r[1],
                r[2],
                f"{r[3]}/{r[4]}" if r[4] else r[3],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[11],
            )
        )
        + "</tr>"
        for r in rows
    )
    checked = max((r[12] for r in rows), default=None)
    page = f"""<!doctype html><meta charset="utf-8"><title>sprx quality gate</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}
td:last-child{{min-width:28em}}
tr.fail td:first-child{{background:#c62828;color:#fff}}tr.warn td:first-child{{background:#f9a825}}
tr.pass td:first-child{{background:#2e7d32;color:#fff}}</style>
<h1>Quality gate: {paths.published.name}</h1>
<p>Latest check of each stage ({html.escape(str(checked))}): <b>{counts["pass"]}</b> passed,
<b>{counts["warn"]}</b> warnings, <b>{counts["fail"]}</b> failed. A failed check (level error)
blocks publication; a warning is reported only. Thresholds are the share of rows that may fail.
Kahn categories as in OHDSI's Data Quality Dashboard. Every run: <code>audit.quality_checks</code>;
Great Expectations Data Docs: <code>{html.escape(str(DATA_DOCS))}</code>.</p>
<table><tr><th>status<th>stage<th>suite<th>check<th>Kahn category<th>level<th>threshold %
<th>rows checked<th>rows failing<th>% failing<th>detail</tr>{body}</table>
"""
    target = paths.quality_dir / SUMMARY_PAGE
    target.write_text(page, encoding="utf-8")
    return target
