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

from . import __version__, config
from .build import BuildError
from .quality import QualityGateError
from .codelists import CodelistError
from .config import WarehousePaths
from .contract import ContractError
from .ingest import IngestError, IngestReport
from .warehouse import WarehouseBusy

EXAMPLES = """\
examples:
  sprx generate --out data/landing --patients 20000 --practices 20 --seed 42
  sprx run --landing data/landing --warehouse data/warehouse/sprx.duckdb
  sprx ingest data/landing --warehouse data/warehouse/sprx.duckdb
  sprx build --warehouse data/warehouse/sprx.duckdb
  sprx codelists --codelists https://example.org/codelists/ --warehouse data/warehouse/sprx.duckdb
  sprx summary --warehouse data/warehouse/sprx.duckdb

The published warehouse (--warehouse) is read-only; the pipeline writes a work file beside
it (<name>.work.duckdb) and replaces the published file atomically when a build passes.
"""


def _say(message: str) -> None:
    print(message, flush=True)


def _warehouse_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", type=Path, default=config.default_warehouse(),
                        help="published warehouse file (default: $SPRX_WAREHOUSE_PATH or "
                             "data/warehouse/sprx.duckdb)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another run to release the warehouse "
                             "(default: 0, stop at once)")


def _codelist_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codelists", default=config.default_codelist_source(),
                        help="codelist source: a folder or an HTTP(S) base URL (default: "
                             "$SPRX_CODELIST_SOURCE or the repository's codelists/)")
    parser.add_argument("--pins", type=Path, default=config.default_codelist_pins(),
                        help="manifest pinning each list's version and SHA-256 (default: "
                             "$SPRX_CODELIST_PINS, else the source folder's manifest.json, "
                             "else the repository's)")


def _vars_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vars", type=json.loads, default=None, metavar="JSON",
                        help="dbt vars as JSON, e.g. '{\"window_days\": 180}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sprx", description="Link social prescribing referrals in pseudonymised GP "
        "extracts to GP consultations, A&E attendances and emergency admissions before and "
        "after them, and publish the tables to a DuckDB warehouse.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sprx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="write synthetic RSC-style deliveries",
                              description="Write synthetic deliveries that follow extract "
                              "contract v1, one per group of practices of a source system.")
    gen.add_argument("--out", type=Path, default=config.default_landing(),
                     help="landing folder to write delivery folders into")
    gen.add_argument("--patients", type=int, default=20_000, help="patients (default 20000)")
    gen.add_argument("--practices", type=int, default=20, help="practices (default 20)")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default 42)")

    ing = commands.add_parser("ingest", help="apply new deliveries to the warehouse",
                              description="Apply every delivery in DIR not yet applied, in "
                              "contract order (extracted_at, then delivery_id).")
    ing.add_argument("landing", type=Path, metavar="DIR", help="landing folder of deliveries")
    _warehouse_arg(ing)

    bld = commands.add_parser("build", help="run dbt build on the warehouse",
                              description="Verify the codelist, then dbt build every model "
                              "and test into the work warehouse.")
    _warehouse_arg(bld)
    _codelist_arg(bld)
    _vars_arg(bld)

    cod = commands.add_parser("codelists", help="pull and verify the codelists",
                              description="Fetch every pinned codelist from the source, check "
                              "it against its pinned version and SHA-256, and keep it for builds.")
    _warehouse_arg(cod)
    _codelist_arg(cod)

    pub = commands.add_parser("publish", help="publish the built warehouse (atomic)")
    _warehouse_arg(pub)

    run = commands.add_parser("run", help="ingest, build and publish",
                              description="Ingest new deliveries, build with dbt, publish "
                              "the warehouse and print a summary.")
    run.add_argument("--landing", type=Path, default=config.default_landing(),
                     help="landing folder (default: $SPRX_LANDING_DIR or data/landing)")
    _warehouse_arg(run)
    _codelist_arg(run)
    _vars_arg(run)

    summ = commands.add_parser("summary", help="print the headline figures of a warehouse")
    summ.add_argument("--warehouse", type=Path, default=config.default_warehouse())
    return parser


def _print_ingest(report: IngestReport) -> None:
    applied, refused = report.applied, report.refused
    _say(f"deliveries: {len(applied)} applied, {len(refused)} refused, "
         f"{len(report.outcomes) - len(applied) - len(refused)} unchanged")
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
    from .synthetic import generate

    started = time.perf_counter()
    result = generate(args.out, patients=args.patients, practices=args.practices,
                      seed=args.seed, progress=_say)
    _say(f"wrote {len(result.deliveries)} deliveries for {result.patients} patients in "
         f"{args.out} ({time.perf_counter() - started:.1f} s)")
    for table, rows in result.rows.items():
        _say(f"  {table:<22}{rows:>12,} rows")
    return 0


def _run(args: argparse.Namespace) -> int:
    from . import pipeline

    paths = WarehousePaths.at(args.warehouse)
    started = time.perf_counter()
    report = pipeline.run(paths, args.landing, args.codelists, args.vars, _say, args.wait,
                          args.pins)
    _print_ingest(report.ingest)
    if report.build is None or report.gate is None:
        _say(f"nothing new: {report.published} is current (build {report.current_build}), "
             "left as it was")
    else:
        _say(f"built {report.build.passed} dbt nodes (build {report.build.build_id}); quality "
             f"gate passed ({len(report.gate.checks)} checks); published in "
             f"{time.perf_counter() - started:.1f} s")
    _print_summary(report.summary)
    return 1 if report.ingest.refused else 0


def dispatch(args: argparse.Namespace) -> int:
    from . import pipeline, publish

    if args.command == "generate":
        return _generate(args)
    if args.command == "run":
        return _run(args)
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
            _say(f"verified {codelist.name} {codelist.version} ({len(codelist.codes)} codes, "
                 f"sha256 {codelist.sha256[:12]}…)")
        return 0
    if args.command == "build":
        pipeline.pull_codelists(paths, args.codelists, args.pins, args.wait)
        built = pipeline.build_warehouse(paths, args.vars, args.wait)
        _say(f"built {built.passed} dbt nodes into {paths.work} (build {built.build_id})")
        return 0
    if args.command == "publish":
        _say(f"published {pipeline.publish_warehouse(paths, None, args.wait)}")
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return dispatch(args)
    except WarehouseBusy as exc:
        print(f"sprx: busy: {exc}", file=sys.stderr)
        return 3
    except (IngestError, ContractError, CodelistError, BuildError, QualityGateError,
            FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"sprx: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
