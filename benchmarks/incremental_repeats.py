"""The incremental build against a full rebuild of the same data, repeated on a warehouse that
`make bench` left, as the bench measures it: medians of --repeats runs, each pair's marts
compared (EXCEPT ALL both ways).

    .venv/bin/python benchmarks/incremental_repeats.py benchmarks/cache/run-patients4000000 \
        --repeats 3

It runs the bench's own loop (`bench.incremental_against_full`): after each pair the builds
since the changed practices' latest delivery are marked failed (REOPEN_PRACTICE), so every
repeat rebuilds the same practices (the first one in a hundred) from the same state. For a size the bench ran once (`--repeats 1` at
4,000,000 patients, an hour a run here), this gives the incremental ratio's median of three
at a fifth of the cost; it prints the runs and the medians, and changes no file but the
warehouse.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import bench

from sprx_pipeline.config import WarehousePaths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a bench run folder: run-patients<N>/")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    paths = WarehousePaths.at(args.run_dir / "warehouse" / "sprx.duckdb")
    changed = bench.changed_practices(paths)
    bench.reopen(paths, changed)  # a no-op straight after `make bench`, which ends reopened
    incremental, full, _ = bench.incremental_against_full(
        paths, args.run_dir, changed, args.repeats
    )
    for kind, stage in (("incremental", incremental), ("full", full)):
        runs = ", ".join(
            f"{r.seconds:.1f} (dbt {bench.dbt_seconds(r.output):.1f})" for r in stage.runs
        )
        print(f"{kind} runs, s: {runs}")
    dbt_incremental = statistics.median(bench.dbt_seconds(r.output) for r in incremental.runs)
    dbt_full = statistics.median(bench.dbt_seconds(r.output) for r in full.runs)
    print(
        f"{len(changed)} practices changed; medians of {args.repeats}: incremental "
        f"{incremental.seconds:.1f} s (dbt {dbt_incremental:.1f} s, CPU "
        f"{incremental.cpu_seconds:.1f} s), full {full.seconds:.1f} s (dbt {dbt_full:.1f} s, "
        f"CPU {full.cpu_seconds:.1f} s); ratio {incremental.seconds / full.seconds:.3f}, "
        f"dbt alone {dbt_incremental / dbt_full:.3f}, CPU "
        f"{incremental.cpu_seconds / full.cpu_seconds:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
