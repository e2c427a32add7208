"""D8 drainage: compiled vs reference kernels, exactness of tiled runs, peak memory against raster size.

For each size N (synthetic DEM from ``bench_earth_scale.ensure_dem``, cached) a fresh subprocess measures:

- ``fill`` / ``accumulate`` CPU seconds on one 1024 x 1024 tile: the reference (skimage morphological reconstruction,
  numpy waves) and the compiled kernels (``rscore_earth.hydrology``), and whether their outputs are identical;
- ``whole``: wall / CPU seconds and peak RSS of the whole-raster contributing area (``terrain.flow_accumulation``
  on the full array, what ``earth.flow_accumulation`` caches per scene up to ``drainage_max_px``);
- ``tiled vs whole``: max abs difference (m^2) between the old tile-local accumulation (1024 px tiles, 64 px halo)
  and the whole-raster one, on the tile cores - the error the whole-raster pass removes;
- with ``--tiled``: the exact tiled computation (``rscore_earth.drainage_tiled``, what runs above
  ``drainage_max_px``) reading the GeoTIFF window by window: wall / CPU seconds, peak RSS, RSS after imports, and
  (up to ``--compare-max`` px a side) whether it equals the whole-array result, computed afterwards in the same
  process (so it does not raise the tiled peak).

::

    python benchmarks/bench_earth_drainage.py --sizes 1024 2048 4096
    python benchmarks/bench_earth_drainage.py --tiled --sizes 1024 2048 4096 8192
    python benchmarks/bench_earth_drainage.py --tiled --procedural --sizes 2048 16384
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
import numpy as np, rasterio
sys.path.insert(0, sys.argv[3])
from bench_earth_scale import ensure_dem
from pathlib import Path
from rscore_earth import terrain
size = int(sys.argv[1]); what = sys.argv[2]
procedural = what == "tiled" and sys.argv[6] == "1"
if procedural:  # elevations generated window by window (rscore_earth.synthetic), no file
    px, z = 10.0, None
else:
    path, _ = ensure_dem(Path('/tmp/rscore-bench'), size, 0)
    with rasterio.open(path) as ds:
        px = abs(ds.transform.a)
        z = ds.read(1).astype(np.float64) if what != "tiled" else None  # the tiled run reads window by window
out = {"size": size}
if what == "kernels":
    t = z[:1024, :1024].copy()
    terrain.fill_depressions(t[:40, :40]); terrain.accumulate(np.array([-1]), np.ones(1))  # compile / load cache
    c = time.process_time(); f0 = terrain.fill_depressions(t, compiled=False); out["fill_reference_s"] = time.process_time() - c
    c = time.process_time(); f1 = terrain.fill_depressions(t, compiled=True); out["fill_compiled_s"] = time.process_time() - c
    rec = terrain.d8_receivers(f1, px, px)
    c = time.process_time(); a0 = terrain.accumulate(rec, np.full(t.size, px * px), compiled=False); out["acc_reference_s"] = time.process_time() - c
    c = time.process_time(); a1 = terrain.accumulate(rec, np.full(t.size, px * px), compiled=True); out["acc_compiled_s"] = time.process_time() - c
    c = time.process_time(); terrain.d8_receivers(f1, px, px); out["receivers_s"] = time.process_time() - c
    out["identical"] = bool(np.array_equal(f0, f1, equal_nan=True) and np.array_equal(a0, a1))
elif what == "whole":
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w = time.perf_counter(); c = time.process_time()
    acc = terrain.flow_accumulation(z, px, px)
    out["whole_wall_s"] = time.perf_counter() - w; out["whole_cpu_s"] = time.process_time() - c
    out["whole_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["dem_rss_mib_before"] = base / 1024
    if size <= 4096:
        tile, halo, diff = 1024, 64, 0.0
        h, wd = z.shape
        for r0 in range(0, h, tile):
            for c0 in range(0, wd, tile):
                rs, cs = max(0, r0 - halo), max(0, c0 - halo)
                re, ce = min(h, r0 + tile + halo), min(wd, c0 + tile + halo)
                loc = terrain.flow_accumulation(z[rs:re, cs:ce], px, px)
                core = loc[r0 - rs : r0 - rs + min(tile, h - r0), c0 - cs : c0 - cs + min(tile, wd - c0)]
                diff = max(diff, float(np.nanmax(np.abs(core - acc[r0 : r0 + tile, c0 : c0 + tile]))))
        out["tiled_vs_whole_max_abs_m2"] = diff
        out["whole_max_m2"] = float(np.nanmax(acc))
elif what == "tiled":
    from rscore_earth.drainage_tiled import tiled_flow_accumulation
    from rasterio.windows import Window as RW
    tile = int(sys.argv[4]); compare_max = int(sys.argv[5])
    tiled_flow_accumulation(lambda a, b, c, d: np.zeros((b - a, d - c)), 4, 4, 1.0, 1.0, 2).close()  # compile/load
    out["rss_after_imports_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if procedural:
        from dataclasses import replace
        from rscore.types import Window
        from rscore_earth import synthetic
        spec = replace(synthetic.TerrainSpec(), height=size, width=size, pixel_size=px, seed=0)
        def read(r0, r1, c0, c1):
            return synthetic.generate_dem(spec, Window(r0, c0, r1 - r0, c1 - c0)).astype(np.float64)
        def read_all():
            return synthetic.generate_dem(spec).astype(np.float64)
    else:
        ds = rasterio.open(path)
        def read(r0, r1, c0, c1):
            a = ds.read(1, window=RW(c0, r0, c1 - c0, r1 - r0), masked=True)
            return a.astype(np.float64).filled(np.nan)
        def read_all():
            return ds.read(1, masked=True).astype(np.float64).filled(np.nan)
    w = time.perf_counter(); c = time.process_time()
    from rscore_earth.gdalenv import gdal_env
    with gdal_env():  # GDAL's block cache capped as for the plugin's own reads
        store = tiled_flow_accumulation(read, size, size, px, px, tile)
    out["tiled_wall_s"] = time.perf_counter() - w; out["tiled_cpu_s"] = time.process_time() - c
    out["tiled_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if size <= compare_max:
        acc = terrain.flow_accumulation(read_all(), px, px)
        got = store.read()
        out["tiled_equals_whole"] = bool(np.array_equal(got, acc, equal_nan=True))
        out["tiled_max_abs_diff_m2"] = float(np.nanmax(np.abs(got.astype(np.float64) - acc)))
    store.close()
print(json.dumps(out))
"""


def run(size: int, what: str, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(size), what, str(HERE), *extra], capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tiled", action="store_true", help="measure the exact tiled (bounded-memory) computation")
    ap.add_argument("--tile", type=int, default=1024, help="tile side of the tiled computation (px)")
    ap.add_argument("--procedural", action="store_true",
                    help="--tiled on elevations generated window by window (no DEM file: sizes up to 16k and more)")
    ap.add_argument("--compare-max", type=int, default=4096, help="largest side compared with the whole array")
    args = ap.parse_args(argv)
    rows = []
    if args.tiled:
        for n in args.sizes:
            r = run(n, "tiled", str(args.tile), str(args.compare_max), "1" if args.procedural else "0")
            rows.append(r)
            same = (f", equals whole-array: {r['tiled_equals_whole']} (max |diff| {r['tiled_max_abs_diff_m2']:.3g} m2)"
                    if "tiled_equals_whole" in r else "")
            print(f"{n}^2 tiled ({args.tile} px) accumulation: wall {r['tiled_wall_s']:.1f} s, CPU "
                  f"{r['tiled_cpu_s']:.1f} s, peak RSS {r['tiled_peak_rss_mib']:.0f} MiB (after imports "
                  f"{r['rss_after_imports_mib']:.0f} MiB){same}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"tiled": rows}, indent=1))
        return 0
    k = run(min(args.sizes[0], 4096) if args.sizes[0] >= 1024 else 1024, "kernels")
    print(f"1024^2 tile, CPU s: fill reference {k['fill_reference_s']:.2f} compiled {k['fill_compiled_s']:.2f} "
          f"({k['fill_reference_s'] / k['fill_compiled_s']:.1f}x); accumulate reference {k['acc_reference_s']:.3f} "
          f"compiled {k['acc_compiled_s']:.3f} ({k['acc_reference_s'] / k['acc_compiled_s']:.1f}x); receivers "
          f"{k['receivers_s']:.2f}; identical outputs: {k['identical']}")
    for n in args.sizes:
        r = run(n, "whole")
        rows.append(r)
        extra = (f", tiled (1024 px + 64 px halo) vs whole max |diff| {r['tiled_vs_whole_max_abs_m2']:.4g} m2 of max "
                 f"{r['whole_max_m2']:.4g} m2" if "tiled_vs_whole_max_abs_m2" in r else "")
        print(f"{n}^2 whole-raster accumulation: wall {r['whole_wall_s']:.1f} s, CPU {r['whole_cpu_s']:.1f} s, peak RSS "
              f"{r['whole_peak_rss_mib']:.0f} MiB (DEM loaded: {r['dem_rss_mib_before']:.0f} MiB){extra}")
    if args.json:
        args.json.write_text(json.dumps({"kernels": k, "sizes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
