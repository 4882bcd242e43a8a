"""`sprx`: the command line of sprx-pipeline.

Exit codes: 0 done; 1 done, but a delivery was refused (see audit.deliveries);
2 a usage, input or build error; 3 another process holds the warehouse.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from . import __version__, config, disclosure
from .build import BuildError
from .codelists import CodelistError
from .config import WarehousePaths
from .contract import ContractError
from .ingest import IngestError, IngestReport
from .quality import SUMMARY_PAGE, GateReport, QualityGateError
from .release import ReleaseError
from .synthetic_process import CausalModel
from .warehouse import WarehouseBusy

EXAMPLES = """\
examples:
  sprx generate --out data/landing --patients 20000 --practices 20 --seed 42
  sprx run --landing data/landing --warehouse data/warehouse/sprx.duckdb
  sprx ingest data/landing --warehouse data/warehouse/sprx.duckdb
  sprx build --warehouse data/warehouse/sprx.duckdb
  sprx build --warehouse data/warehouse/sprx.duckdb --engine spark
  sprx codelists --codelists https://example.org/codelists/ --warehouse data/warehouse/sprx.duckdb
  sprx check --warehouse data/warehouse/sprx.duckdb
  sprx summary --warehouse data/warehouse/sprx.duckdb
  sprx release --warehouse data/warehouse/sprx.duckdb --out data/release
  sprx report --release data/release --out data/report.html

The published warehouse (--warehouse) is read-only; the pipeline writes a work file beside
it (<name>.work.duckdb) and replaces the published file atomically when a build passes.
"""


def _say(message: str) -> None:
    print(message, flush=True)


def _warehouse_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse",
        type=Path,
        default=config.default_warehouse(),
        help="published warehouse file (default: $SPRX_WAREHOUSE_PATH or "
        "data/warehouse/sprx.duckdb)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run to release the warehouse (default: 0, stop at once)",
    )


def _codelist_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codelists",
        default=config.default_codelist_source(),
        help="codelist source: a folder or an HTTP(S) base URL (default: "
        "$SPRX_CODELIST_SOURCE or the repository's codelists/)",
    )
    parser.add_argument(
        "--pins",
        type=Path,
        default=config.default_codelist_pins(),
        help="manifest pinning each list's version and SHA-256 (default: "
        "$SPRX_CODELIST_PINS, else the source folder's manifest.json, "
        "else the repository's)",
    )


def _vars_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vars",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="dbt vars as JSON, e.g. '{\"window_days\": 180}'",
    )


def _engine_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=config.ENGINES,
        default=None,
        help="what dbt builds on: duckdb, or spark (full builds on Apache "
        "Spark, $SPRX_SPARK_MASTER, default local[2]; the marts come "
        "back to the DuckDB warehouse) (default: $SPRX_ENGINE or duckdb)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sprx",
        description="Link social prescribing referrals in pseudonymised GP "
        "extracts to GP consultations, A&E attendances and emergency admissions before and "
        "after them, and publish the tables to a DuckDB warehouse.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sprx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="write synthetic RSC-style deliveries",
        description="Write synthetic deliveries that follow extract "
        "contract v1, one per group of practices of a source system.",
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=config.default_landing(),
        help="landing folder to write delivery folders into",
    )
    gen.add_argument("--patients", type=int, default=20_000, help="patients (default 20000)")
    gen.add_argument("--practices", type=int, default=20, help="practices (default 20)")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    gen.add_argument(
        "--effect",
        type=float,
        default=CausalModel.effect,
        help="true causal effect of referral: the rate ratio of consultations, "
        "A&E attendances and emergency admissions in the year after "
        "referral against the same patients' rates without it (default "
        f"{CausalModel.effect:g}; 1 for none). See synthetic_process.py.",
    )

    ing = commands.add_parser(
        "ingest",
        help="apply new deliveries to the warehouse",
        description="Apply every delivery in DIR not yet applied, in "
        "contract order (extracted_at, then delivery_id).",
    )
    ing.add_argument("landing", type=Path, metavar="DIR", help="landing folder of deliveries")
    _warehouse_arg(ing)

    bld = commands.add_parser(
        "build",
        help="check, dbt build and check again",
        description="Verify the codelist, check the loaded tables "
        "(Great Expectations), dbt build every model and test into the "
        "work warehouse, and check the marts: a build that passes is "
        "ready for `sprx publish`. dbt rebuilds only the practices with "
        "deliveries applied since the last successful build, unless the "
        "dbt project, codelist or vars changed.",
    )
    _warehouse_arg(bld)
    _codelist_arg(bld)
    _vars_arg(bld)
    _engine_arg(bld)
    bld.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every practice, not only those with deliveries applied "
        "since the last successful build",
    )

    cod = commands.add_parser(
        "codelists",
        help="pull and verify the codelists",
        description="Fetch every pinned codelist from the source, check "
        "it against its pinned version and SHA-256, and keep it for builds.",
    )
    _warehouse_arg(cod)
    _codelist_arg(cod)

    chk = commands.add_parser(
        "check",
        help="run the quality gate (Great Expectations)",
        description="Run the quality gate over the work warehouse: the "
        "Great Expectations suites of expectations/ over the loaded tables "
        "and the marts, and the row accounting of every delivery. Records "
        "each check in audit.quality_checks and updates the Data Docs. "
        "Exits 2 if a check at error level fails.",
    )
    _warehouse_arg(chk)
    chk.add_argument(
        "--stage",
        choices=("loaded", "marts", "all"),
        default="all",
        help="loaded: the raw tables; marts: the built marts (default: all)",
    )
    chk.add_argument(
        "--dbt-tests",
        action="store_true",
        help="also run every dbt data and unit test over the built warehouse",
    )

    pub = commands.add_parser(
        "publish",
        help="publish the built warehouse (atomic)",
        description="Replace the published warehouse atomically with the "
        "latest build, if it passed the quality gate.",
    )
    _warehouse_arg(pub)

    run = commands.add_parser(
        "run",
        help="ingest, build and publish",
        description="Ingest new deliveries, build with dbt, publish "
        "the warehouse and print a summary.",
    )
    run.add_argument(
        "--landing",
        type=Path,
        default=config.default_landing(),
        help="landing folder (default: $SPRX_LANDING_DIR or data/landing)",
    )
    _warehouse_arg(run)
    _codelist_arg(run)
    _vars_arg(run)
    _engine_arg(run)

    summ = commands.add_parser("summary", help="print the headline figures of a warehouse")
    summ.add_argument("--warehouse", type=Path, default=config.default_warehouse())

    rel = commands.add_parser(
        "release",
        help="write disclosure-controlled CSVs and a manifest",
        description="Write the summary marts of a published warehouse "
        "as CSVs under statistical disclosure control (counts of "
        f"{disclosure.SUPPRESSION_THRESHOLD} or fewer redacted, others rounded to the nearest "
        f"{disclosure.ROUNDING_MULTIPLE}, rates recomputed), with manifest.json. Nothing "
        "patient-level.",
    )
    rel.add_argument(
        "--warehouse",
        type=Path,
        default=config.default_warehouse(),
        help="published warehouse to release from",
    )
    rel.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="release folder (replaced whole if it holds an earlier release)",
    )

    rep = commands.add_parser(
        "report",
        help="write the HTML report of a release",
        description="Write one self-contained HTML file (no network "
        "needed) of charts and tables, built only from a release folder.",
    )
    rep.add_argument(
        "--release",
        type=Path,
        required=True,
        metavar="DIR",
        help="release folder written by `sprx release`",
    )
    rep.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="HTML file to write (default: <DIR>-report.html beside the release folder)",
    )
    return parser


def _print_ingest(report: IngestReport) -> None:
    applied, refused = report.applied, report.refused
    _say(
        f"deliveries: {len(applied)} applied, {len(refused)} refused, "
        f"{len(report.outcomes) - len(applied) - len(refused)} unchanged"
    )
    for outcome in refused:
        _say(f"  REFUSED {outcome.delivery_id}: {outcome.reason}")
    quarantined = sum(o.quarantined for o in applied)
    if quarantined:
        _say(f"  {quarantined} rows quarantined (see audit.quarantine)")


def _print_summary(summary: dict[str, Any]) -> None:
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        _say(f"  {key.replace('_', ' '):<{width}}  {value}")


def _generate(args: argparse.Namespace) -> int:
    from .synthetic import generate  # NumPy and PyArrow load only for this command

    started = time.perf_counter()
    result = generate(
        args.out,
        patients=args.patients,
        practices=args.practices,
        seed=args.seed,
        model=CausalModel(effect=args.effect),
        progress=_say,
    )
    _say(
        f"wrote {len(result.deliveries)} deliveries for {result.patients} patients in "
        f"{args.out} ({time.perf_counter() - started:.1f} s)"
    )
    for table, rows in result.rows.items():
        _say(f"  {table:<22}{rows:>12,} rows")
    return 0


def _print_gate(report: GateReport) -> None:
    _say(f"quality gate ({report.stage}): {report.summary()}")
    for check in report.warnings:
        _say(f"  WARNING {check.describe()}")


def _run(args: argparse.Namespace) -> int:
    from . import pipeline

    paths = WarehousePaths.at(args.warehouse)
    started = time.perf_counter()
    report = pipeline.run(
        paths, args.landing, args.codelists, args.vars, _say, args.wait, args.pins, args.engine
    )
    _print_ingest(report.ingest)
    if report.build is None or report.loaded_gate is None or report.gate is None:
        _say(
            f"nothing new: {report.published} is current (build {report.current_build}), "
            + (
                f"published again in storage version {config.publish_storage_version()}"
                if report.republished
                else "left as it was"
            )
        )
    else:
        for gate in (report.loaded_gate, report.gate):
            _print_gate(gate)
        _say(
            f"built {report.build.passed} dbt nodes (build {report.build.build_id}); "
            f"published in {time.perf_counter() - started:.1f} s"
        )
    _print_summary(report.summary)
    return 1 if report.ingest.refused else 0


def _check(args: argparse.Namespace) -> int:
    from . import pipeline

    paths = WarehousePaths.at(args.warehouse)
    if not paths.work.is_file():
        raise FileNotFoundError(f"{paths.work} does not exist: run `sprx ingest` first")
    stages = ("loaded", "marts") if args.stage == "all" else (args.stage,)
    for number, stage in enumerate(stages):
        dbt_tests = args.dbt_tests and number == len(stages) - 1
        report = pipeline.quality_gate(paths, stage, None, dbt_tests, args.wait)
        _print_gate(report)
    _say(f"quality summary: {paths.quality_dir / SUMMARY_PAGE}\nData Docs: {report.data_docs}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from .release import write_release

    manifest = write_release(args.warehouse, args.out)
    _say(
        f"wrote release {args.out.resolve()} (build {manifest['build_id']}, codelist "
        f"{manifest['codelist']['version']}):"
    )
    for entry in manifest["files"]:
        _say(f"  {entry['file']:<32}{entry['rows']:>8,} rows")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = args.out or args.release.with_name(f"{args.release.name}-report.html")
    _say(f"wrote report {write_report(args.release, out)}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    from . import pipeline, publish

    if args.command == "generate":
        return _generate(args)
    if args.command == "run":
        return _run(args)
    if args.command == "check":
        return _check(args)
    if args.command == "release":
        return _release(args)
    if args.command == "report":
        return _report(args)
    if args.command == "summary":
        if not args.warehouse.is_file():
            raise FileNotFoundError(f"{args.warehouse} does not exist: run `sprx run` first")
        _print_summary(publish.published_summary(args.warehouse))
        return 0
    paths = WarehousePaths.at(args.warehouse)
    if args.command == "ingest":
        report = pipeline.ingest_landing(paths, args.landing, _say, args.wait)
        _print_ingest(report)
        return 1 if report.refused else 0
    if args.command == "codelists":
        for codelist in pipeline.pull_codelists(paths, args.codelists, args.pins, args.wait):
            _say(
                f"verified {codelist.name} {codelist.version} ({len(codelist.codes)} codes, "
                f"sha256 {codelist.sha256[:12]}…)"
            )
        return 0
    if args.command == "build":
        pipeline.pull_codelists(paths, args.codelists, args.pins, args.wait)
        checked = pipeline.build_warehouse(
            paths, args.vars, args.wait, _say, args.full_refresh, args.engine
        )
        for gate in (checked.loaded_gate, checked.gate):
            _print_gate(gate)
        _say(
            f"built {checked.build.passed} dbt nodes into {paths.work} "
            f"(build {checked.build.build_id}; {checked.build.scope.describe()}; dbt "
            f"{checked.build.dbt_seconds:.1f} s); ready to publish"
        )
        return 0
    if args.command == "publish":
        _say(f"published {pipeline.publish_warehouse(paths, None, args.wait)}")
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return dispatch(args)
    except WarehouseBusy as exc:
        print(f"sprx: busy: {exc}", file=sys.stderr)
        return 3
    except (
        IngestError,
        ContractError,
        CodelistError,
        BuildError,
        QualityGateError,
        ReleaseError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        ValueError,
    ) as exc:
        print(f"sprx: error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"sprx: error: the DuckDB warehouse reported: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
