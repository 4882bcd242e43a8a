"""The incremental build against a full rebuild of the same data, repeated on a warehouse that
`make bench` left, as the bench measures it: medians of --repeats runs, each pair's marts
compared (EXCEPT ALL both ways).

    .venv/bin/python benchmarks/incremental_repeats.py benchmarks/cache/run-patients4000000 \
        --repeats 3

Before each incremental build the builds since the changed practices' latest delivery are
marked failed (the bench's REOPEN_PRACTICE), so every repeat rebuilds the same practices (the
first one in a hundred) from the same state. For a size the bench ran once (`--repeats 1` at
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
    warehouse = ["--warehouse", str(paths.published)]
    changed = bench.changed_practices(paths)
    incremental, full = bench.Stage(), bench.Stage()
    for repeat in range(args.repeats):
        bench.measure([sys.executable, "-c", bench.REOPEN_PRACTICE, str(paths.work), changed[0]])
        incremental.runs.append(bench.measure(bench.sprx("build", *warehouse)))
        bench.snapshot_marts(paths, args.run_dir / "incremental_marts.duckdb")
        full.runs.append(bench.measure(bench.sprx("build", "--full-refresh", *warehouse)))
        differ = sum(bench.marts_differ(paths, args.run_dir / "incremental_marts.duckdb").values())
        print(
            f"run {repeat + 1}/{args.repeats}: incremental {incremental.runs[-1].seconds:.1f} s "
            f"(dbt {bench.dbt_seconds(incremental.runs[-1].output):.1f} s), full "
            f"{full.runs[-1].seconds:.1f} s (dbt {bench.dbt_seconds(full.runs[-1].output):.1f} s), "
            f"marts rows differing {differ}",
            flush=True,
        )
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
