"""What the Prefect flow costs over the library, and what a second Dask worker buys.

1. **Overhead per tile.** One synthetic 10 m DEM (``--size`` px square, default 1024) is mapped with the landslide
   template at ``--tile`` px (default 128, so 64 tiles) by

   - ``library``: ``rscore.engine.run(...)`` in this process (read, tiles, merge, COG/GPKG/PNG writers);
   - ``flow, 1 tile/task``: ``flows_run("landslide-risk-mapping", ..., batch_tiles=1, workers=1)``;
   - ``flow, 4x4 tiles/task``: the same with ``batch_tiles=4``;
   - ``flow, resumed``: the first flow again on the same output folder, every batch reused from the persisted
     results (merge and writers only).

   Overhead per tile = (flow wall - library wall) / tiles. Both sides use one thread for the tiles, so the difference
   is Prefect's task orchestration (task runs, result persistence, cache lookups) plus the flow's planning/merge.
2. **1 vs 2 Dask workers.** A bigger region (``--dask-size``, default 2048 px, tiles of ``--dask-tile`` = 512 px, one
   tile per task) mapped on a ``LocalCluster`` of 1 and of 2 single-threaded worker processes started before the
   clock starts (fresh output folders: nothing reused). Speed-up = wall(1) / wall(2).

A temporary Prefect server is started once (its start-up time is printed, not counted). Worker processes must be
able to import ``rscore_flows`` (installed, or on ``PYTHONPATH``). On a shared 2-core machine expect noise of
+-15 %; run it twice.

::

    python benchmarks/bench_flows.py                    # ~2-3 min on 2 cores
    python benchmarks/bench_flows.py --size 512 --dask-size 1024 --dask-tile 256     # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

QUERY = "landslide-prone areas"


def _dem(folder: Path, size: int, seed: int = 11) -> Path:
    from rscore_earth.synthetic import TerrainSpec, write_dem

    path = folder / f"dem_{size}.tif"
    if not path.exists():
        write_dem(path, replace(TerrainSpec(), height=size, width=size, seed=seed))
    return path


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - t0, value


def overhead(work: Path, size: int, tile: int) -> dict[str, Any]:
    from rscore import engine
    from rscore_flows.cli import flows_run

    dem = _dem(work, size)
    tiles = math.ceil(size / tile) ** 2
    engine.run(dem, QUERY, plugin="earth", out_dir=work / "warm", options={"tile_size": tile})  # imports, caches
    lib_s, _ = _timed(engine.run, dem, QUERY, plugin="earth", out_dir=work / "lib", options={"tile_size": tile})
    rows = [("library (rscore.engine.run)", lib_s, None)]
    for label, batch, out in (("flow, 1 tile/task", 1, "flow1"), ("flow, 4x4 tiles/task", 4, "flow16")):
        wall, summary = _timed(
            flows_run, "landslide-risk-mapping", [str(dem)], work / out, tile_size=tile, batch_tiles=batch, workers=1,
            refresh=True,
        )
        assert summary["status"] == "ok", summary
        rows.append((label, wall, summary))
    wall, summary = _timed(
        flows_run, "landslide-risk-mapping", [str(dem)], work / "flow1", tile_size=tile, batch_tiles=1, workers=1
    )
    assert summary["regions"][0]["tiles"]["reused"] == tiles, summary
    rows.append(("flow, resumed (all reused)", wall, summary))
    store = work / "flow1" / ".task-results"
    stored = sum(p.stat().st_size for p in store.iterdir())
    print(f"\n1. Overhead per tile: {size} x {size} px DEM, {tile} px tiles ({tiles} tiles), one thread for tiles")
    print(f"   {'run':<30} {'wall s':>8} {'per tile ms':>12} {'overhead/tile ms':>17}")
    for label, wall, _ in rows:
        print(f"   {label:<30} {wall:8.2f} {1000 * wall / tiles:12.1f} {1000 * (wall - lib_s) / tiles:17.1f}")
    walls = {label: wall for label, wall, _ in rows}
    n1, n16 = tiles, math.ceil(size / (4 * tile)) ** 2  # tasks of the two flow runs
    per_task = (walls["flow, 1 tile/task"] - walls["flow, 4x4 tiles/task"]) / (n1 - n16)
    fixed = walls["flow, 4x4 tiles/task"] - lib_s - n16 * per_task
    print(f"   => about {1000 * per_task:.0f} ms per task + {fixed:.1f} s per run (plan, subflow, merge task, reports)")
    each = stored / tiles / 1e3
    print(f"   persisted results: {stored / 1e6:.1f} MB for {tiles} one-tile batches ({each:.0f} kB each)")
    return {
        "size": size, "tile": tile, "tiles": tiles, "library_s": lib_s,
        "runs": walls, "per_task_s": per_task, "fixed_s": fixed, "persisted_bytes": stored,
    }  # fmt: skip


def dask_scaling(work: Path, size: int, tile: int) -> dict[str, Any]:
    from distributed import LocalCluster

    from rscore_flows.cli import flows_run

    dem = _dem(work, size, seed=5)
    tiles = math.ceil(size / tile) ** 2
    walls = {}
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.ERROR)  # after Prefect's logging set-up, which resets them
    for n in (1, 2):
        with LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster:
            wall, summary = _timed(
                flows_run, "landslide-risk-mapping", [str(dem)], work / f"dask{n}", tile_size=tile, batch_tiles=1,
                dask_address=cluster.scheduler_address, refresh=True,
            )  # fmt: skip
        r = summary["regions"][0]
        assert summary["status"] == "ok" and r["tiles"]["computed"] == tiles, summary
        walls[n] = (wall, r["compute_s"], r["merge_s"], len(r["workers"]))
    from rscore import engine

    lib_s, _ = _timed(engine.run, dem, QUERY, plugin="earth", out_dir=work / "dask-lib", options={"tile_size": tile})
    print(f"\n2. Dask LocalCluster: {size} x {size} px DEM, {tile} px tiles ({tiles} tasks), 1-thread worker processes")
    print(f"   {'workers':<8} {'wall s':>8} {'task compute s (sum)':>21} {'merge+write s':>14} {'workers used':>13}")
    for n, (wall, compute, merge, used) in walls.items():
        print(f"   {n:<8} {wall:8.2f} {compute:21.2f} {merge:14.2f} {used:13d}")
    print(f"   speed-up 1 -> 2 workers: {walls[1][0] / walls[2][0]:.2f}x (library, one thread: {lib_s:.2f} s)")
    return {"size": size, "tile": tile, "tiles": tiles, "walls": {n: w[0] for n, w in walls.items()},
            "speedup": walls[1][0] / walls[2][0], "library_s": lib_s}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="DEM size for the overhead figure (px)")
    parser.add_argument("--tile", type=int, default=128, help="tile size for the overhead figure (px)")
    parser.add_argument("--dask-size", type=int, default=2048, help="DEM size for the Dask figure (px)")
    parser.add_argument("--dask-tile", type=int, default=512, help="tile size for the Dask figure (px)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="keep DEMs and outputs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("RSCORE_MATCHER", "keyword")  # no embedding model load in the figures
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # read when prefect is first imported
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the temporary server
    from prefect.testing.utilities import prefect_test_harness

    work = args.workdir or Path(tempfile.mkdtemp(prefix="rscore-bench-flows-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"rscore flows benchmark - {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")  # fmt: skip
    t0 = time.perf_counter()
    figures: dict[str, Any] = {}
    try:
        with prefect_test_harness(server_startup_timeout=120):
            print(f"temporary Prefect server started in {time.perf_counter() - t0:.1f} s (not counted below)")
            figures["overhead"] = overhead(work, args.size, args.tile)
            if not args.skip_dask:
                figures["dask"] = dask_scaling(work, args.dask_size, args.dask_tile)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (figures compare only on an otherwise idle machine)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
