"""Peak memory and wall time of ``rscore run --plugin earth DEM "landslide-prone areas"`` against raster size.

For each size (default 2048, 8192 and 16384 px square) a synthetic 10 m DEM is generated with the earth plugin's
generator (``python -m rscore_earth.synthetic``: tile by tile, flat memory; a tiled, deflate-compressed GeoTIFF)
and cached under ``--workdir`` (default ``/tmp/rscore-bench``; a cached file is reused when its size and generator
tags match). Then the real command line runs as a child process::

    python -m rscore run --plugin earth dem_<N>_seed<S>.tif "landslide-prone areas" --out <workdir>/out_<N>

and its own peak resident set size is taken from ``os.wait4`` (the child's ``ru_maxrss``; the benchmark's process
is not counted). The table lists size, pixels, where the stitched outputs lived (``memory`` up to
``RSCORE_IN_MEMORY_PIXELS``, default 64e6, else ``disk``), tiles, wall time, peak RSS and the stage timings from
``result.json`` (read, segment, write). The last line is the ratio of the peak RSS at the largest size to that at
the smallest (issue 3 target: 16k / 2k <= 1.3).

::

    python benchmarks/bench_earth_scale.py                       # 2k, 8k, 16k (16k takes minutes on 2 cores)
    python benchmarks/bench_earth_scale.py --sizes 2048,8192
    python benchmarks/bench_earth_scale.py --sizes 2048 --matcher keyword --json results.json

``--matcher keyword`` skips loading the sentence-embedding model (torch), which otherwise adds a constant
~450 MB to every run; the default is what a user gets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_SIZES = (2048, 8192, 16384)
QUERY = "landslide-prone areas"
TARGET_RATIO = 1.3


def _maxrss_bytes(ru_maxrss: int) -> int:
    """``ru_maxrss`` is in KiB on Linux and in bytes on macOS."""
    return ru_maxrss if platform.system() == "Darwin" else ru_maxrss * 1024


def run_child(cmd: list[str], *, env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; return its exit code, wall time (s) and own peak RSS (bytes, from ``wait4``)."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss": _maxrss_bytes(usage.ru_maxrss),
            "cpu_s": usage.ru_utime + usage.ru_stime}  # fmt: skip


def dem_path(workdir: Path, size: int, seed: int) -> Path:
    return workdir / f"dem_{size}_seed{seed}.tif"


def _is_cached(path: Path, size: int, seed: int) -> bool:
    if not path.is_file():
        return False
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            return (
                ds.width == size and ds.height == size and tags.get("GENERATOR") == "rscore_earth.synthetic"
                and tags.get("SEED") == str(seed) and ds.block_shapes[0][0] < size
            )  # fmt: skip
    except Exception:
        return False


def ensure_dem(workdir: Path, size: int, seed: int = 0) -> tuple[Path, dict[str, Any] | None]:
    """The cached DEM of ``size`` x ``size`` px, generated (in a child process, tile by tile) when missing.

    Returns the path and the generation's figures (``None`` when the cached file was reused).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = dem_path(workdir, size, seed)
    if _is_cached(path, size, seed):
        return path, None
    partial = path.with_suffix(".partial.tif")
    cmd = [sys.executable, "-m", "rscore_earth.synthetic", str(partial), "--size", str(size), "--seed", str(seed)]
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    gen = run_child(cmd, log=workdir / f"generate_{size}.log")
    if gen["rc"] != 0:
        raise SystemExit(f"generating {path} failed (exit {gen['rc']}); see {workdir / f'generate_{size}.log'}")
    os.replace(partial, path)
    return path, gen


def bench_size(workdir: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    from rscore.tiling import in_memory_pixel_limit, tile_count

    dem, gen = ensure_dem(workdir, size, args.seed)
    out = workdir / f"out_{size}"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "rscore", "run", "--plugin", "earth", str(dem), args.query, "--out", str(out),
           "--tile-size", str(args.tile_size)]  # fmt: skip
    if args.matcher:
        cmd += ["--matcher", args.matcher]
    for opt in args.option:
        cmd += ["--option", opt]
    print(f"running {size} x {size} ...", file=sys.stderr, flush=True)
    run = run_child(cmd, log=workdir / f"run_{size}.log")
    if run["rc"] != 0:
        tail = (workdir / f"run_{size}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"rscore run failed on {dem} (exit {run['rc']}):\n{tail}")
    doc = json.loads((out / "result.json").read_text(encoding="utf-8"))
    timings = doc.get("timings", {})
    out_bytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    row = {
        "size": size,
        "pixels": size * size,
        "stitch": "memory" if size * size <= in_memory_pixel_limit() else "disk",
        "tiles": tile_count(size, size, args.tile_size),
        "wall_s": round(run["wall_s"], 2),
        "cpu_s": round(run["cpu_s"], 2),
        "peak_rss_mib": round(run["peak_rss"] / 2**20, 1),
        "read_s": timings.get("read_s"),
        "segment_s": timings.get("segment_s"),
        "write_s": timings.get("write_s"),
        "outputs_mib": round(out_bytes / 2**20, 1),
        "generate": None if gen is None else {"wall_s": round(gen["wall_s"], 2),
                                              "peak_rss_mib": round(gen["peak_rss"] / 2**20, 1)},
    }  # fmt: skip
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("size", "pixels", "stitch", "tiles", "wall s", "cpu s", "peak RSS MiB", "read s", "segment s", "write s",
            "outputs MiB")  # fmt: skip
    keys = ("size", "pixels", "stitch", "tiles", "wall_s", "cpu_s", "peak_rss_mib", "read_s", "segment_s", "write_s",
            "outputs_mib")  # fmt: skip
    cells = [[f"{r['size']} x {r['size']}" if k == "size" else f"{r[k]:,}" if k == "pixels" else
              ("" if r[k] is None else str(r[k])) for k in keys] for r in rows]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    gens = [r for r in rows if r["generate"]]
    for r in gens:
        g = r["generate"]
        print(f"generated {r['size']} x {r['size']}: {g['wall_s']} s, peak RSS {g['peak_rss_mib']} MiB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated square sizes in px")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"), help="DEM cache and output folder")
    p.add_argument("--seed", type=int, default=0, help="terrain seed")
    p.add_argument("--query", default=QUERY)
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--matcher", choices=("auto", "embedding", "keyword"), default=None,
                   help="template matcher (default: the CLI's, i.e. embeddings when installed)")
    p.add_argument("--option", "-O", action="append", default=[], help="plugin option KEY=VALUE for rscore run")
    p.add_argument("--keep-outputs", action="store_true", help="keep <workdir>/out_<size>")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 64:
        p.error("--sizes must name sizes of at least 64 px")

    rows = []
    for n in sizes:
        rows.append(bench_size(args.workdir, n, args))
        print(f"  {n} x {n}: {rows[-1]['wall_s']} s, peak RSS {rows[-1]['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    print(f"rscore run --plugin earth DEM {args.query!r}; {os.cpu_count()} CPUs, "
          f"RSCORE_IN_MEMORY_PIXELS={os.environ.get('RSCORE_IN_MEMORY_PIXELS', '64e6 (default)')}")  # fmt: skip
    print_table(rows)
    summary: dict[str, Any] = {"rows": rows, "query": args.query, "cpus": os.cpu_count()}
    if len(rows) > 1:
        small = min(rows, key=lambda r: r["size"])
        large = max(rows, key=lambda r: r["size"])
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"peak RSS {large['size']} / {small['size']}: {ratio:.2f} ({verdict} the target <= {TARGET_RATIO}); "
              f"pixels x{large['pixels'] / small['pixels']:.0f}, wall x{large['wall_s'] / small['wall_s']:.1f}")  # fmt: skip
        summary["rss_ratio"] = round(ratio, 3)
        summary["rss_ratio_sizes"] = [large["size"], small["size"]]
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if math.isfinite(summary.get("rss_ratio", 0.0)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
