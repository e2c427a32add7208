"""Time to write each earth output kind, and writing's share of the landslide run (issues 18 and 22).

A synthetic 10 m DEM (``--size``, default 4096 px square; cached under ``--workdir`` like bench_earth_scale.py) is
read and segmented once (``landslide-prone areas``); then every writer that applies (COGs, polygons, map.png,
result.json, ...) writes into a fresh folder and its wall and CPU time are printed, with the total and the share
of writing in (segment + write)::

    python benchmarks/bench_earth_writers.py                    # 4096 px
    python benchmarks/bench_earth_writers.py --size 2048 --baseline-ref main
    python benchmarks/bench_earth_writers.py --dem plugins/earth/src/rscore_earth/data/example_dem.tif

``--baseline-ref REF`` also loads the writing code (``rscore_earth/{writers,polygons,mapplot,styles}.py``) as it is
at git ref ``REF`` (e.g. ``main``) and times its writers on the *same* result in the same process, alternating old
and new (``--repeat`` rounds, best of them), so the before/after ratio is measured side by side (this machine is
shared: absolute figures vary with load, ratios less). CPU times include the tile worker processes of the segment.

The current writers are also timed as ``rscore run`` writes them (:func:`rscore.engine.write.run_writers`: the
writers that declare ``threadsafe`` at once in threads, result.json after them): the "as rscore run" wall rows and the
wall share. A ``--baseline-ref`` column is written one writer after another, as its code did. Writing's CPU share is
the primary figure (the same whether writers run at once or not); the wall share is printed both ways.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_earth_scale import ensure_dem  # noqa: E402

QUERY = "landslide-prone areas"


REF_MODULES = ("writers", "polygons", "mapplot", "styles", "cog", "geojson", "png", "polyarrays", "polykernels")
KINDS = {"earth-cog": "COGs (mask, score, classes)", "earth-vector": "polygons (GPKG + GeoJSON)",
         "earth-map": "map.png + basemap.png", "result-json": "result.json"}  # fmt: skip  # the writing code: all of it is taken from the ref


def _load_ref(ref: str) -> Any:
    """``rscore_earth.writers`` as it is at git ``ref``, with the modules it writes through (:data:`REF_MODULES`:
    polygon tracing, map.png, styles) also at ``ref``, as a separate package ``rscore_earth_ref``; the rest
    (templates, readers, terrain) is today's ``rscore_earth``."""
    root = Path(__file__).resolve().parents[1]
    pkg = Path(tempfile.mkdtemp(prefix="rscore-writers-ref-")) / "rscore_earth_ref"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    found = []
    for name in REF_MODULES:
        shown = subprocess.run(["git", "-C", str(root), "show", f"{ref}:plugins/earth/src/rscore_earth/{name}.py"],
                               capture_output=True, text=True)  # fmt: skip
        if shown.returncode == 0:  # a module the ref does not have yet stays today's
            found.append(name)
            (pkg / f"{name}.py").write_text(shown.stdout, encoding="utf-8")
    pattern = re.compile(r"\brscore_earth\.(" + "|".join(found) + r")\b")
    for name in found:
        f = pkg / f"{name}.py"
        f.write_text(pattern.sub(r"rscore_earth_ref.\1", f.read_text(encoding="utf-8")), encoding="utf-8")
    sys.path.insert(0, str(pkg.parent))
    try:
        return importlib.import_module("rscore_earth_ref.writers")
    finally:
        sys.path.remove(str(pkg.parent))


def _children_cpu() -> float:
    """CPU seconds of ended child processes (the tile workers of ``-O workers``): ``time.process_time`` leaves them
    out, which made the segment look cheaper and writing's share of CPU larger than they are."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def time_writers(writers: list[Any], scene: Any, result: Any, out: Path) -> dict[str, dict[str, float]]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = {}
    for w in writers:
        if not w.applies(scene, result):
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        files = w.write(scene, result, out)
        rows[w.name] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                        "mib": sum(Path(p).stat().st_size for p in files.values()) / 2**20}  # fmt: skip
    return rows


def time_writers_concurrently(writers: list[Any], scene: Any, result: Any, out: Path) -> dict[str, float]:
    """The writers as ``rscore run`` runs them (:func:`rscore.engine.write.run_writers`): those that declare
    ``threadsafe`` at once in threads (as many as :func:`~rscore.engine.write.write_threads` allows), the others
    meanwhile, the ``final`` ones (result.json) after them. Wall and CPU time (all threads) of the whole write."""
    from rscore.engine.write import run_writers, write_threads

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    todo = [w for w in writers if w.applies(scene, result)]
    t0, c0 = time.perf_counter(), time.process_time()
    run_writers([w for w in todo if not getattr(w, "final", False)], scene, result, out, write_threads(result))
    for w in todo:
        if getattr(w, "final", False):
            w.write(scene, result, out)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--dem", type=Path, help="time this DEM instead of a synthetic one of --size px (e.g. the README "
                                            "example, plugins/earth/src/rscore_earth/data/example_dem.tif)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"))
    p.add_argument("--baseline-ref", help="also time rscore_earth/writers.py at this git ref on the same result")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds of writing (variants alternate within a round); the best of them is printed, so the "
                        "first round's imports and cold caches do not count against whichever variant runs first")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--concurrent", action="store_true",
                   help="(always on now; kept so that older command lines still run) the current writers are also "
                        "timed as rscore run writes them: thread-safe ones at once (rscore.engine.write)")
    args = p.parse_args()

    from rscore import engine
    from rscore.engine import default_registry

    dem = args.dem if args.dem is not None else ensure_dem(args.workdir, args.size, args.seed)[0]
    options = {"matcher": "keyword"}
    load0 = _load()
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    scene = engine.open_scene(dem, plugin="earth", options=options)
    result = engine.segment(scene, QUERY, plugin="earth", options=options)
    seg = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0 + _children_cpu() - k0}
    print(f"{scene.height} x {scene.width} DEM ({Path(dem).name}): read + segment {seg['wall_s']:.1f} s wall, "
          f"{seg['cpu_s']:.1f} s CPU "
          f"(tile worker processes included: {_children_cpu() - k0:.1f} s); load average {_load()}")

    reg = default_registry()
    current = [w for w in reg.writers_for("earth")]
    variants = {"now": current}
    if args.baseline_ref:
        ref = _load_ref(args.baseline_ref)
        by_name = {w.name: w for w in ref.writers()}
        variants = {"before": [by_name.get(w.name, w) for w in current], "now": current}
    work = Path(tempfile.mkdtemp(prefix="rscore-bench-writers-"))
    figures: dict[str, Any] = {"size": max(scene.shape), "dem": str(dem), "segment": seg}
    try:
        best: dict[str, dict[str, dict[str, float]]] = {}
        con: dict[str, float] = {}
        for _ in range(max(1, args.repeat)):  # variants alternate, so a load spike hits both; best of the rounds
            for name, ws in variants.items():
                rows = time_writers(ws, scene, result, work / name)
                for k, r in rows.items():
                    old = best.setdefault(name, {}).setdefault(k, r)
                    best[name][k] = {"wall_s": min(old["wall_s"], r["wall_s"]), "cpu_s": min(old["cpu_s"], r["cpu_s"]),
                                     "mib": r["mib"]}  # fmt: skip
            c = time_writers_concurrently(current, scene, result, work / "concurrent")  # as rscore run writes
            con = {k: min(con.get(k, v), v) for k, v in c.items()}
        for name in variants:
            rows = best[name]
            total = sum(r["wall_s"] for r in rows.values())
            total_cpu = sum(r["cpu_s"] for r in rows.values())
            share = total / (total + seg["wall_s"])
            share_cpu = total_cpu / (total_cpu + seg["cpu_s"])
            figures[name] = {"writers": rows, "write_wall_s": total, "write_cpu_s": total_cpu, "share": share,
                             "share_cpu": share_cpu}  # fmt: skip
            print(f"\n[{name}] writer               wall s   CPU s   MiB")
            for k, r in rows.items():
                print(f"  {k:22s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['mib']:6.1f}")
            print(f"  {'total':22s} {total:7.2f} {total_cpu:7.2f}   -> writing = {100 * share:.1f} % of "
                  f"(segment + write) wall, {100 * share_cpu:.1f} % of its CPU time (tile workers counted; "
                  "CPU shares are steadier than wall ones on a loaded machine)")
        from rscore.engine.write import write_threads

        seq = figures["now"]
        share = con["wall_s"] / (con["wall_s"] + seg["wall_s"])
        figures["concurrent"] = {**con, "share": share, "threads": write_threads(result)}
        print(f"\n[now, as rscore run writes: thread-safe writers at once, {write_threads(result)} threads] "
              f"{con['wall_s']:.2f} s wall ({seq['write_wall_s']:.2f} s one after another, "
              f"{seq['write_wall_s'] / con['wall_s']:.2f}x), {con['cpu_s']:.2f} s CPU -> writing = {100 * share:.1f} % "
              "of (segment + write) wall")
        print(f"\nper output kind, CPU-s (best of {max(1, args.repeat)} rounds; load average at the start {load0})")
        names = list(variants)
        print(f"  {'':34s}" + "".join(f"{n:>10s}" for n in names))
        for k in figures[names[-1]]["writers"]:
            row = [figures[n]["writers"].get(k, {}).get("cpu_s", float("nan")) for n in names]
            print(f"  {KINDS.get(k, k):34s}" + "".join(f"{v:10.2f}" for v in row))
        job = {n: {"cpu": seg["cpu_s"] + figures[n]["write_cpu_s"], "wall": seg["wall_s"] + figures[n]["write_wall_s"]}
               for n in names}  # fmt: skip
        # how rscore run writes: "before" (a git ref) one writer after another as its write_outputs did; "now" the
        # thread-safe writers at once (its CPU is the sum of the writers' either way: the per-kind rows above)
        cli_wall = {n: figures[n]["write_wall_s"] for n in names}
        cli_wall["now"] = figures["concurrent"]["wall_s"]
        for n in names:
            figures[n]["cli_write_wall_s"] = cli_wall[n]
            figures[n]["cli_share"] = cli_wall[n] / (cli_wall[n] + seg["wall_s"])
        for label, key, unit in (("writing, CPU-s", "write_cpu_s", ""), ("writing, wall s, one after another",
                                                                          "write_wall_s", "")):  # fmt: skip
            print(f"  {label:34s}" + "".join(f"{figures[n][key]:10.2f}" for n in names))
        print(f"  {'writing, wall s, as rscore run':34s}" + "".join(f"{cli_wall[n]:10.2f}" for n in names))
        print(f"  {'job (read + segment + write), CPU-s':34s}" + "".join(f"{job[n]['cpu']:10.2f}" for n in names))
        print(f"  {'job wall, as rscore run writes':34s}"
              + "".join(f"{seg['wall_s'] + cli_wall[n]:10.2f}" for n in names))
        print(f"  {'writing share of job CPU, %':34s}" + "".join(f"{100 * figures[n]['share_cpu']:10.1f}" for n in names))
        print(f"  {'writing share of job wall, %':34s}"
              + "".join(f"{100 * figures[n]['cli_share']:10.1f}" for n in names) + "   (as rscore run writes)")
        print(f"  {'  same, writers one after another':34s}"
              + "".join(f"{100 * figures[n]['share']:10.1f}" for n in names))
        print("  (targets: <= 20 % (#22), <= 25 % (#18); the segment is measured once and shared by both columns)")
        if "before" in figures:
            b, n = figures["before"], figures["now"]
            print(f"\nbefore / now, write wall: {b['write_wall_s'] / n['write_wall_s']:.2f}x, "
                  f"CPU: {b['write_cpu_s'] / n['write_cpu_s']:.2f}x")
            for k in n["writers"]:
                if k in b["writers"]:
                    print(f"  {k:22s} {b['writers'][k]['wall_s'] / max(1e-9, n['writers'][k]['wall_s']):.2f}x")
        print(f"\nload average at the end: {_load()} (2 cores shared with other work: ratios matter, not seconds)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
