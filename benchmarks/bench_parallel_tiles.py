"""Analytic tiles in worker processes: ``rscore run --plugin earth DEM "landslide-prone areas"`` with ``-O workers=1``
(one tile after another, the old behaviour) and ``-O workers=N`` side by side, on the synthetic DEMs of
``bench_earth_scale.py`` (generated once and cached under ``--workdir``).

For each size and worker count the real command line runs as a child process (rounds interleaved, ``--repeat``
each, median shown). Printed: wall time, CPU time (the CLI and its workers), the largest single process's peak RSS
(``ru_maxrss`` from ``wait4``, which covers the reaped workers: constant memory per worker means this stays flat
as workers are added), ``segment_s`` from result.json (the tiles' compute, where workers act) and whether the masks
written are byte-identical to the ``workers=1`` run's.

::

    python benchmarks/bench_parallel_tiles.py                          # 2048 px, workers 1 and 2
    python benchmarks/bench_parallel_tiles.py --sizes 2048,4096 --workers 1,2 --repeat 3
    # flood_prone needs the whole raster's drainage; compare with the sources of an older commit, side by side:
    git archive COMMIT rscore plugins/earth/src | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python benchmarks/bench_parallel_tiles.py --query "flood-prone areas" --baseline-src /tmp/base

``--baseline-src DIR`` runs every worker count a second time with ``DIR`` and ``DIR/plugins/earth/src`` first on
``PYTHONPATH`` (rows ``N-base``), interleaved with the current sources' runs in each round.

On a machine shared with other work, wall times vary; the ratio within one round is the figure to quote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_earth_scale import ensure_dem, run_child  # noqa: E402

QUERY = "landslide-prone areas"


def _digest(path: Path) -> str:
    import numpy as np
    import rasterio

    with rasterio.open(path) as ds:
        return hashlib.sha1(np.ascontiguousarray(ds.read()).tobytes()).hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2048")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (1 = sequential)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--matcher", default="keyword", help="template matcher of the runs (default keyword)")
    ap.add_argument("--query", default=QUERY, help=f"the query (default {QUERY!r})")
    ap.add_argument("--baseline-src", type=Path, help="also run with these sources first on PYTHONPATH (rows N-base)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    labels = args.workers.split(",")
    if args.baseline_src:
        labels += [f"{n}-base" for n in labels]
    for size in (int(s) for s in args.sizes.split(",")):
        dem, _ = ensure_dem(args.workdir, size)
        runs: dict[str, list[dict[str, Any]]] = {}
        digests: dict[str, str] = {}
        for _ in range(args.repeat):
            for label in labels:
                n, _, variant = label.partition("-")
                out = args.workdir / f"par_{size}_w{label}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "rscore", "run", "--plugin", "earth", str(dem), args.query, "--out",
                       str(out), "--tile-size", str(args.tile_size), "--matcher", args.matcher, "-O", f"workers={n}"]
                env = None
                if variant:
                    base = args.baseline_src.resolve()
                    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                        [str(base), str(base / "plugins" / "earth" / "src"), os.environ.get("PYTHONPATH", "")]))
                print(f"running {size} px, workers={label} ...", file=sys.stderr, flush=True)
                run = run_child(cmd, env=env, log=args.workdir / f"par_{size}_w{label}.log")
                if run["rc"] != 0:
                    log = args.workdir / f"par_{size}_w{label}.log"
                    raise SystemExit(f"rscore run failed (exit {run['rc']}); see {log}")
                run["segment_s"] = json.loads((out / "result.json").read_text()).get("timings", {}).get("segment_s")
                runs.setdefault(label, []).append(run)
                digests[label] = _digest(out / "mask.tif")
        base = statistics.median(r["wall_s"] for r in runs[labels[0]])
        for n, rs in runs.items():
            wall = statistics.median(r["wall_s"] for r in rs)
            rows.append({
                "size": size, "workers": n, "wall_s": round(wall, 2),
                "cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 2),
                "segment_s": round(statistics.median(r["segment_s"] or 0 for r in rs), 2),
                "peak_rss_mib": round(max(r["peak_rss"] for r in rs) / 2**20, 1),
                "speedup": round(base / wall, 2),
                "same_mask": digests[n] == digests[labels[0]],
            })
    keys = list(rows[0])
    print("  ".join(f"{k:>12}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r[k]):>12}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
