"""The landslide job as a user runs it against a plain whole-array numpy terrain baseline on the same DEM (#22).

Both sides run as child processes on the same cached synthetic DEM (``bench_earth_scale.ensure_dem``), alternating,
after one warm-up each (page cache, numba's on-disk kernel cache):

``job``
    ``python -m rscore run --plugin earth DEM "landslide-prone areas" --out DIR`` with the CLI's defaults (matcher,
    workers, outputs): open, plan, segment every tile, write COGs, polygons, map, result.json. Its stage timings come
    from result.json (read, segment, write).
``baseline``
    ``python`` reading the whole DEM with rasterio and computing Horn slope, a plan-type curvature (second
    differences) and a 21 x 21 local relief (``scipy.ndimage`` max/min filters) with numpy on the whole array, in one
    process, writing nothing: what the issue calls the terrain-tool floor. Its compute part is printed too.

Printed: medians (and best) of wall and CPU time per side, the ratio job / baseline (#22 target <= 3 at 4096^2),
the job's read / segment / write split, and the machine's load average before and after (2 cores shared with other
work: wall times swing, compare the side-by-side ratio).

``--before SRC`` (a checkout of an older commit, e.g. ``git archive main | tar -x -C /tmp/main-src``) also runs the
job with that tree's sources on ``PYTHONPATH`` (same interpreter and site-packages), alternating with today's, and
prints both (``python -P``: the working folder is not put first on ``sys.path``, so each side imports its own tree).

::

    python benchmarks/bench_earth_job.py                     # 4096^2, 3 runs per side
    python benchmarks/bench_earth_job.py --size 2048 --runs 2 -O workers=1
    python benchmarks/bench_earth_job.py --runs 3 --before /tmp/main-src   # + the job as an older tree runs it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_earth_scale import QUERY, ensure_dem, run_child  # noqa: E402

TARGET_RATIO = 3.0

BASELINE = r"""
import sys, time, json
t0 = time.perf_counter()
import numpy as np, rasterio
from scipy import ndimage
with rasterio.open(sys.argv[1]) as ds:
    z = ds.read(1, masked=True).filled(np.nan).astype(np.float64)
    px, py = abs(ds.transform.a), abs(ds.transform.e)
t1 = time.perf_counter()
zp = np.pad(z, 1, mode="edge")
z1, z2, z3 = zp[:-2, :-2], zp[:-2, 1:-1], zp[:-2, 2:]
z4, z5, z6 = zp[1:-1, :-2], zp[1:-1, 1:-1], zp[1:-1, 2:]
z7, z8, z9 = zp[2:, :-2], zp[2:, 1:-1], zp[2:, 2:]
gx = ((z3 + 2 * z6 + z9) - (z1 + 2 * z4 + z7)) / (8 * px)
gy = ((z7 + 2 * z8 + z9) - (z1 + 2 * z2 + z3)) / (8 * py)
slope = np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)
p, q = (z6 - z4) / (2 * px), (z8 - z2) / (2 * py)
r, t = (z4 - 2 * z5 + z6) / px**2, (z2 - 2 * z5 + z8) / py**2
s = (z9 - z7 - z3 + z1) / (4 * px * py)
g2 = np.maximum(p * p + q * q, 1e-12)
plan = (-(t * p * p - 2 * s * p * q + r * q * q) / (g2 * np.sqrt(1 + g2))).astype(np.float32)
relief = (ndimage.maximum_filter(z, size=21) - ndimage.minimum_filter(z, size=21)).astype(np.float32)
t2 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "compute_s": t2 - t1, "check": float(np.nanmean(slope) + np.nanmean(relief))}))
"""


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--runs", type=int, default=3, help="timed runs per side (after one warm-up each)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", "-O", action="append", default=[], help="-O KEY=VALUE for rscore run")
    p.add_argument("--matcher", choices=("auto", "embedding", "keyword"), default=None)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--before", type=Path, help="a source tree (older checkout): its job is timed too, alternating")
    args = p.parse_args(argv)

    dem, _ = ensure_dem(args.workdir, args.size, args.seed)
    out = args.workdir / f"job_{args.size}"
    py = [sys.executable, "-P"] if args.before else [sys.executable]
    job_cmd = [*py, "-m", "rscore", "run", "--plugin", "earth", str(dem), QUERY, "--out", str(out)]
    if args.matcher:
        job_cmd += ["--matcher", args.matcher]
    for opt in args.option:
        job_cmd += ["-O", opt]
    base_cmd = [sys.executable, "-c", BASELINE, str(dem)]
    log = args.workdir / f"job_{args.size}.log"

    envs = {"now": None}
    if args.before:
        from bench_cli_startup import pythonpath

        root = Path(__file__).resolve().parents[1]
        envs = {"now": {**os.environ, "PYTHONPATH": pythonpath(root)},
                "before": {**os.environ, "PYTHONPATH": pythonpath(args.before.resolve())}}  # fmt: skip

    def job(side: str = "now") -> dict:
        shutil.rmtree(out, ignore_errors=True)
        r = run_child(job_cmd, log=log, env=envs[side])
        if r["rc"] != 0:
            raise SystemExit(f"rscore run failed (exit {r['rc']}):\n{log.read_text(errors='replace')[-2000:]}")
        r["timings"] = json.loads((out / "result.json").read_text(encoding="utf-8")).get("timings", {})
        return r

    def base() -> dict:
        blog = args.workdir / f"baseline_{args.size}.log"
        r = run_child(base_cmd, log=blog)
        if r["rc"] != 0:
            raise SystemExit(f"baseline failed (exit {r['rc']}):\n{blog.read_text(errors='replace')[-2000:]}")
        r.update(json.loads(blog.read_text().strip().splitlines()[-1]))
        return r

    load_before = _load()
    print(f"{args.size}^2 DEM {dem}; {os.cpu_count()} CPUs; load average {load_before}", file=sys.stderr, flush=True)
    for side in envs:  # warm-up (page cache, numba's on-disk kernel cache of each tree)
        job(side)
    base()
    jobs, bases, befores = [], [], []
    for i in range(args.runs):
        jobs.append(job())
        if args.before:
            befores.append(job("before"))
        bases.append(base())
        print(f"  run {i + 1}: job {jobs[-1]['wall_s']:.1f} s, baseline {bases[-1]['wall_s']:.1f} s"
              + (f", job before {befores[-1]['wall_s']:.1f} s" if befores else "")
              + f", load {_load()}", file=sys.stderr, flush=True)
    shutil.rmtree(out, ignore_errors=True)
    load_after = _load()

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def tmed(key: str, rows: list[dict] | None = None) -> float | None:
        vals = [r["timings"].get(key) for r in (jobs if rows is None else rows) if r["timings"].get(key) is not None]
        return round(statistics.median(vals), 2) if vals else None

    fig = {
        "size": args.size, "cpus": os.cpu_count(), "options": args.option, "runs": args.runs,
        "load_before": load_before, "load_after": load_after,
        "job": {"wall_s": round(med(jobs, "wall_s"), 2), "best_wall_s": round(min(r["wall_s"] for r in jobs), 2),
                "cpu_s": round(med(jobs, "cpu_s"), 2), "peak_rss_mib": round(max(r["peak_rss"] for r in jobs) / 2**20),
                "read_s": tmed("read_s"), "segment_s": tmed("segment_s"), "write_s": tmed("write_s")},
        "baseline": {"wall_s": round(med(bases, "wall_s"), 2),
                     "best_wall_s": round(min(r["wall_s"] for r in bases), 2), "cpu_s": round(med(bases, "cpu_s"), 2),
                     "compute_s": round(med(bases, "compute_s"), 2),
                     "peak_rss_mib": round(max(r["peak_rss"] for r in bases) / 2**20)},
    }  # fmt: skip
    ratio = fig["job"]["wall_s"] / fig["baseline"]["wall_s"]
    fig["ratio_wall"] = round(ratio, 2)
    fig["ratio_best_wall"] = round(fig["job"]["best_wall_s"] / fig["baseline"]["best_wall_s"], 2)
    fig["ratio_cpu"] = round(fig["job"]["cpu_s"] / fig["baseline"]["cpu_s"], 2)
    j, b = fig["job"], fig["baseline"]
    print(f"landslide job vs whole-array numpy baseline, {args.size}^2, {args.runs} runs each, {os.cpu_count()} CPUs, "
          f"load {load_before} -> {load_after}")
    print(f"  job      wall {j['wall_s']} s (best {j['best_wall_s']}), CPU {j['cpu_s']} s, "
          f"peak {j['peak_rss_mib']} MiB; read {j['read_s']} s, segment {j['segment_s']} s, write {j['write_s']} s")
    print(f"  baseline wall {b['wall_s']} s (best {b['best_wall_s']}), CPU {b['cpu_s']} s, "
          f"peak {b['peak_rss_mib']} MiB; compute {b['compute_s']} s")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"  ratio job / baseline: wall {fig['ratio_wall']} (best {fig['ratio_best_wall']}), CPU {fig['ratio_cpu']}"
          f"  -> {verdict} the target <= {TARGET_RATIO}")
    if befores:
        fig["before"] = {"src": str(args.before), "wall_s": round(med(befores, "wall_s"), 2),
                         "best_wall_s": round(min(r["wall_s"] for r in befores), 2),
                         "cpu_s": round(med(befores, "cpu_s"), 2),
                         "peak_rss_mib": round(max(r["peak_rss"] for r in befores) / 2**20),
                         "segment_s": tmed("segment_s", befores), "write_s": tmed("write_s", befores)}  # fmt: skip
        o = fig["before"]
        print(f"  job before ({args.before}): wall {o['wall_s']} s (best {o['best_wall_s']}), CPU {o['cpu_s']} s, "
              f"peak {o['peak_rss_mib']} MiB; segment {o['segment_s']} s, write {o['write_s']} s")
        print(f"  before / now: wall {o['wall_s'] / j['wall_s']:.2f}x, CPU {o['cpu_s'] / j['cpu_s']:.2f}x, "
              f"write (wall, result.json's write_s) {o['write_s']} -> {j['write_s']} s")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
