"""The minimum mapping unit's cost in a landslide job, now against a git ref, side by side (#20 / #22).

Before the landslide template's ``refine`` step (``rscore_earth.mmu.refine``), the MMU ran in the earth
``rscore_postprocess`` hook, after ``finish_result`` had derived the instances from the unsieved mask, and derived
them again from the sieved one. Now the sieve runs in the finish stage before the instances are built, once.

Each variant runs in its own child process (its sources first on ``PYTHONPATH``: this checkout, or ``git archive
REF`` unpacked in a temporary folder), on the same cached synthetic DEM (``bench_earth_scale.ensure_dem``): open the
scene, one warm-up ``engine.segment``, then ``--repeat`` timed ones. The children alternate (before, now, before,
now ...) so that a load spike hits both. Timed per call: the whole ``segment`` and its end stage, ``finish_result`` +
the ``rscore_postprocess`` chain (where the MMU and the instances are), wall and CPU; the instance count and a digest
of the class map, mask and instances show the outputs agree. Printed: medians per variant, the ratio, the load
average before and after (2 cores shared with other work: compare the side-by-side figures).

::

    python benchmarks/bench_earth_mmu.py --baseline-ref 8fe4d03             # 2048^2, 3 timed calls per round
    python benchmarks/bench_earth_mmu.py --size 4096 --rounds 2 --baseline-ref main
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_earth_scale import QUERY, ensure_dem  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("", "flows", "plugins/earth/src", "plugins/safety/src", "plugins/surgical/src", "plugins/underwater/src")

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
from rscore import engine
import rscore.engine.pipeline as pipeline

spent = {"end_wall": 0.0, "end_cpu": 0.0}
def timed(fn):
    def wrapper(*a, **k):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            spent["end_wall"] += time.perf_counter() - t0
            spent["end_cpu"] += time.process_time() - c0
    return wrapper
pipeline.finish_result = timed(pipeline.finish_result)
pipeline.postprocess = timed(pipeline.postprocess)

dem, repeat = sys.argv[1], int(sys.argv[2])
opts = {"matcher": "keyword"}
scene = engine.open_scene(dem, plugin="earth", options=opts)
engine.segment(scene, sys.argv[3], plugin="earth", options=opts)  # warm-up
rows = []
for _ in range(repeat):
    spent.update(end_wall=0.0, end_cpu=0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = engine.segment(scene, sys.argv[3], plugin="earth", options=opts)
    rows.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, **spent})
h = hashlib.sha1()
for a in (res.class_map, res.mask):
    h.update(np.ascontiguousarray(a).tobytes())
h.update(repr([(i.bbox, i.area_px, i.score, i.area_real, dict(i.attributes)) for i in res.instances]).encode())
print(json.dumps({"rows": rows, "instances": len(res.instances), "digest": h.hexdigest()[:12]}))
"""


def _pythonpath(root: Path) -> str:
    return os.pathsep.join(str(root / p) if p else str(root) for p in PATHS)


def _unpack(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "rscore", "flows", "plugins"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _child(root: Path, dem: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": _pythonpath(root)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(dem), str(repeat), QUERY], env=env, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"child for {root} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench"))
    p.add_argument("--baseline-ref", required=True, help="git ref of the 'before' variant (e.g. 8fe4d03, main)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of one child per variant")
    p.add_argument("--repeat", type=int, default=3, help="timed segment calls per child (after one warm-up)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    dem, _ = ensure_dem(args.workdir, args.size, args.seed)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="rscore-bench-mmu-") as tmp:
        roots = {"before": _unpack(args.baseline_ref, Path(tmp)), "now": ROOT}
        rows: dict[str, list[dict]] = {k: [] for k in roots}
        seen: dict[str, tuple[int, str]] = {}
        for r in range(max(1, args.rounds)):
            for name, root in roots.items():
                got = _child(root, dem, args.repeat)
                rows[name] += got["rows"]
                seen[name] = (got["instances"], got["digest"])
                print(f"  round {r + 1} {name}: end stage " + ", ".join(f"{x['end_wall']:.2f}" for x in got["rows"])
                      + " s", file=sys.stderr, flush=True)  # fmt: skip
    load_after = _load()
    fig: dict = {"size": args.size, "baseline_ref": args.baseline_ref, "load_before": load_before,
                 "load_after": load_after}  # fmt: skip
    print(f"landslide job on a {args.size}^2 DEM, {args.rounds} rounds x {args.repeat} segment calls per variant, "
          f"{os.cpu_count()} CPUs, load average before {load_before}, after {load_after}")
    print(f"  {'variant':8s} {'segment wall':>13s} {'CPU':>7s} {'finish+postprocess wall':>24s} {'CPU':>7s}"
          f"  instances  digest")
    for name, rs in rows.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("wall_s", "cpu_s", "end_wall", "end_cpu")}
        fig[name] = {**{k: round(v, 3) for k, v in med.items()}, "instances": seen[name][0], "digest": seen[name][1]}
        print(f"  {name:8s} {med['wall_s']:13.2f} {med['cpu_s']:7.2f} {med['end_wall']:24.2f} {med['end_cpu']:7.2f}"
              f"  {seen[name][0]:9d}  {seen[name][1]}")
    b, n = fig["before"], fig["now"]
    fig["same_outputs"] = seen["before"] == seen["now"]
    print(f"  now / before: segment wall {n['wall_s'] / b['wall_s']:.2f}, CPU {n['cpu_s'] / b['cpu_s']:.2f}; "
          f"finish+postprocess wall {n['end_wall'] / b['end_wall']:.2f}, CPU {n['end_cpu'] / b['end_cpu']:.2f} "
          f"(saved {b['end_wall'] - n['end_wall']:.2f} s wall); outputs "
          + ("identical" if fig["same_outputs"] else "DIFFER"))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return 0 if fig["same_outputs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
