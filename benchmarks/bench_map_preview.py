"""Where the map writer's time goes (``map.png`` + ``basemap.png``, issues 18 and 22), side by side in one process.

The landslide job runs once on a synthetic DEM (``--size``, default 4096 px, cached like bench_earth_writers.py), or
on ``--dem``. Then, best of ``--repeat`` rounds (alternating), this prints the CPU seconds of:

- the tiles' share of the map (``tile_summary`` = :func:`rscore_earth.mapplot.tile_preview`): what the tile workers
  do for the writer during the segment, measured here again tile by tile with the band already read (as the program
  leaves it), so that it is counted as writing, not hidden in the segment;
- the map writer with those previews (the run's result as it is) and reading the input again (the same writer on
  the result without ``tile_summaries``: what it did before, and still does for results of other paths);
- the two PNG encoders on this run's map.png and basemap.png pixels: ISA-L with one numpy row filter (now) and
  OpenCV's libpng, zlib level 1, "sub" (before), with their sizes.

    python benchmarks/bench_map_preview.py                 # 4096 px
    python benchmarks/bench_map_preview.py --size 2048 --repeat 5

The machine is shared: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_earth_scale import ensure_dem  # noqa: E402

QUERY = "landslide-prone areas"


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def tile_previews_cpu(scene: Any, result: Any, tile_size: int, repeat: int) -> tuple[float, int]:
    """CPU-s of the template's tile_summary over every tile (best of ``repeat``), the band read beforehand."""
    from rscore.sdk import OpContext
    from rscore.tiling import iter_tiles

    from rscore_earth.mapplot import preview_roles
    from rscore_earth.templates import template_by_name

    template = template_by_name(result.plan.template)
    h, w = scene.shape
    contexts = []
    for tile in iter_tiles(h, w, tile_size, template.halo):
        ctx = OpContext(scene, None, {}, tile.read, params={}, core=tile.core)
        for role in preview_roles(scene):
            ctx.band(role)  # what the program read already
        contexts.append(ctx)
    template.tile_summary(contexts[0])  # kernels loaded (the run's first tile did it in the parent)
    return _best(lambda: [template.tile_summary(c) for c in contexts], repeat), len(contexts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--dem", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import numpy as np

    from rscore import engine
    from rscore_earth import mapplot
    from rscore_earth.png import _save_png_opencv

    dem = args.dem if args.dem is not None else ensure_dem(args.workdir, args.size, args.seed)[0]
    options = {"matcher": "keyword"}
    scene = engine.open_scene(dem, plugin="earth", options=options)
    result = engine.segment(scene, QUERY, plugin="earth", options=options)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{scene.height} x {scene.width} ({Path(dem).name}), {len(result.tile_summaries)} tiles; load {load}")
    work = Path(tempfile.mkdtemp(prefix="rscore-bench-map-"))
    try:
        writer = mapplot.MapPngWriter()
        bare = result.replace(tile_summaries=())
        outs = {"previews": work / "a", "reread": work / "b"}
        for out in outs.values():
            out.mkdir()
        writer.write(scene, result, outs["previews"])  # kernels loaded, caches warm, for both
        writer.write(scene, bare, outs["reread"])
        rows: dict[str, float] = {}
        for _ in range(args.repeat):  # alternate, best of the rounds
            for name, res in (("previews", result), ("reread", bare)):
                c = _best(lambda res=res, name=name: writer.write(scene, res, outs[name]), 1)
                rows[name] = min(rows.get(name, c), c)
        tiles_cpu, n = tile_previews_cpu(scene, result, int(result.options.get("tile_size", 1024)), args.repeat)
        same = all(np.array_equal(*(np.asarray(__import__("PIL.Image").Image.open(outs[k] / f)) for k in outs))
                   for f in ("map.png", "basemap.png"))  # fmt: skip
        print(f"\nCPU-s (best of {args.repeat})")
        print(f"  tiles: tile_summary over {n} tiles (in the tile workers) {tiles_cpu:8.3f}")
        print(f"  map writer with the tiles' previews                   {rows['previews']:8.3f}")
        print(f"  map writer reading the input again                    {rows['reread']:8.3f}")
        print(f"  map, all of it (tiles + writer) vs re-read            {tiles_cpu + rows['previews']:8.3f} vs "
              f"{rows['reread']:.3f} ({rows['reread'] / (tiles_cpu + rows['previews']):.2f}x); same pixels: {same}")
        print("\nPNG encoders on this run's pictures (CPU-s, MiB)")
        from PIL import Image

        for f in ("map.png", "basemap.png"):
            with Image.open(outs["previews"] / f) as im:
                pixels = np.asarray(im)
            flt = "up" if f == "basemap.png" or mapplot.MIN_MAP // max(pixels.shape[:2]) <= 1 else "sub"
            now = _best(lambda: mapplot.save_png(work / "now.png", pixels, row_filter=flt), args.repeat)
            before = _best(lambda: _save_png_opencv(work / "before.png", pixels), args.repeat)
            print(f"  {f:12s} ISA-L + '{flt}' {now:7.3f} s {(work / 'now.png').stat().st_size / 2**20:6.2f} MiB   "
                  f"OpenCV zlib-1 'sub' {before:7.3f} s {(work / 'before.png').stat().st_size / 2**20:6.2f} MiB")
        print(f"\nload at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
