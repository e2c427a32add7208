"""Agent reasoner: engine overhead per turn vs the endpoint's own time, on the loopback OpenAI-compatible server.

    python benchmarks/bench_agent.py [--reps 5] [--delay 0.0,0.3,1.0]

Runs the scripted scenarios of tests/test_agent.py through ``rscore.engine.segment`` (real HTTP to
tests/openai_stub_server.py on 127.0.0.1). ``--delay`` is how long the scripted "model" takes per reply (0 = the
stub answers at once: the overhead is then all rscore's; 0.3 s is a small local model's turn). Prints per scenario:
turns, tool calls, wall time per query, time waiting for the endpoint (HTTP, request encoding included), time in
the tools' backends (segmenter - here the CPU GrabCut one, ~0.4 s a call on 2 busy cores -, operators, templates),
the engine's own overhead per turn (prompts, overlays, picture encoding, bookkeeping: wall - endpoint - tools) and
the ratio (wall - tools) / endpoint (target <= 1.10 with a real model's latency).
Figures depend on the machine and its load; compare rows of one run.

    python benchmarks/bench_agent.py --tiled [--side 10000]

The cost of one call on a large scene (:mod:`rscore.reasoners.agent_tiles`): a procedural ``side`` x ``side`` RGB
scene (generated window by window, never held whole) with one red disc cut by a tile border, reasoned by a scripted
model that looks at each picture it gets (segment the red thing, select it; nothing red: report no mask), with the
default bounds (``agent_tiles=auto``, ``agent_max_tiles=16``) and with every tile examined. Prints tiles, agent loops,
model turns, tiles skipped, the instance found against the truth's box, and wall / endpoint / tool seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_stub_server import Reply, ScriptedOpenAIServer, call  # noqa: E402

from rscore import engine  # noqa: E402
from rscore.plugins import get_registry  # noqa: E402
from rscore.types import ArraySource, Scene  # noqa: E402

W, H = 672, 504


def site() -> Scene:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    img[(yy - 150) ** 2 + (xx - 180) ** 2 <= 60**2] = (220, 30, 30)
    img[300:420, 450:570] = (30, 40, 210)
    img[270:390, 120:240] = (200, 255, 40)
    return Scene(ArraySource(img.transpose(2, 0, 1).copy()), "image", ("red", "green", "blue"))


SCENARIOS = {
    "segment-examine-reject-resegment-select": [
        [call("segment_phrase", phrase="helmet", box=[420, 270, 600, 450])],
        [call("examine_masks", mask_ids=[1])],
        [call("segment_phrase", phrase="red hard hat", box=[108, 78, 252, 222])],
        [call("examine_masks", mask_ids=[2])],
        [call("select_masks", mask_ids=[2])],
    ],
    "segment-operator-compose-select": [
        [call("segment_phrase", phrase="worker", box=[90, 240, 300, 450])],
        [call("op_safety_hivis", within=1)],
        [call("examine_masks", mask_ids=[1, 2])],
        [call("select_masks", mask_ids=[2])],
    ],
    "segment-examine-report-no-mask": [
        [call("segment_phrase", phrase="dog", box=[0, 0, 100, 100])],
        [call("examine_masks", mask_ids=[1])],
        [call("report_no_mask", reason="no dog")],
    ],
}


def run(name: str, delay: float, reps: int, reg) -> dict:
    scene = site()
    walls, endpoint, tools, turns, calls = [], [], [], 0, 0
    for _ in range(reps):
        script = [Reply(tool_calls=c, delay_s=delay) for c in SCENARIOS[name]]
        with ScriptedOpenAIServer(script) as srv:
            res = engine.segment(scene, "the hard hat", plugin="safety", registry=reg, options={
                "reasoner": "agent", "endpoint": srv.url, "model": "test-vlm", "segmenter": "classical"})  # fmt: skip
        m = res.plan.match
        walls.append(m["agent_time_s"])
        endpoint.append(m["endpoint_time_s"])
        tools.append(m["tool_time_s"])
        turns, calls = m["turns"], m["tool_calls"]
    wall, ep, tl = statistics.median(walls), statistics.median(endpoint), statistics.median(tools)
    return {"turns": turns, "calls": calls, "wall": wall, "endpoint": ep, "tools": tl,
            "overhead_ms": (wall - ep - tl) / turns * 1000, "ratio": (wall - tl) / ep}


class DiscScene:
    """A lazy ``(3, side, side)`` uint8 source: a grey texture with one red disc, generated per window read."""

    def __init__(self, side: int, cy: int, cx: int, r: int) -> None:
        self.height = self.width = side
        self.count, self.dtype = 3, "uint8"
        self.cy, self.cx, self.r = cy, cx, r

    def read(self, window=None, bands=None) -> np.ndarray:
        r0, c0, h, w = (0, 0, self.height, self.width) if window is None else (
            window.row_off, window.col_off, window.height, window.width)  # fmt: skip
        yy, xx = np.ogrid[r0 : r0 + h, c0 : c0 + w]
        grey = (90 + (xx * 7 + yy * 13) % 40).astype(np.uint8)
        out = np.stack([grey, grey, grey])
        disc = (yy - self.cy) ** 2 + (xx - self.cx) ** 2 <= self.r**2
        out[:, disc] = np.array([220, 30, 30], np.uint8)[:, None]
        return out if bands is None else out[list(bands)]

    def valid(self, window=None):
        return None


def tiled(side: int, reg) -> None:
    import time

    from test_agent_tiles import eyed_model

    cy, cx, r = side // 3, side // 2, max(16, side // 40)  # the middle column: cut by a tile border
    scene = Scene(DiscScene(side, cy, cx, r), "image", ("red", "green", "blue"))
    print(f"{side}x{side} scene, one red disc r={r} px at ({cx}, {cy}); pictures of 1024 px, tiles of 2048 px")
    print(f"{'mode':28s} {'tiles':>5s} {'loops':>5s} {'turns':>5s} {'skipped':>7s} {'instance bbox':>26s} "
          f"{'wall s':>7s} {'endpoint s':>10s} {'tools s':>7s}")
    for label, extra in (("auto (agent_max_tiles=16)", {}), ("all tiles", {"agent_tiles": "all", "agent_max_tiles": 1000})):
        with ScriptedOpenAIServer([eyed_model]) as srv:
            t0 = time.perf_counter()
            res = engine.segment(scene, "the red disc", registry=reg, options={
                "reasoner": "agent", "endpoint": srv.url, "model": "test-vlm", "segmenter": "classical", **extra})  # fmt: skip
            wall = time.perf_counter() - t0
            requests = len(srv.chat_requests)
        m, t = res.plan.match, res.plan.match["tiling"]
        loops = 1 + t["tiles"] - len(t["tiles_skipped"])
        assert requests == m["turns"]
        box = res.instances[0].bbox if res.instances else None
        print(f"{label:28s} {t['tiles']:5d} {loops:5d} {m['turns']:5d} {len(t['tiles_skipped']):7d} {str(box):>26s} "
              f"{wall:7.2f} {m['endpoint_time_s']:10.3f} {m['tool_time_s']:7.2f}")
    print(f"truth bbox: {(cx - r, cy - r, cx + r + 1, cy + r + 1)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--delay", default="0.0,0.3,1.0")
    ap.add_argument("--tiled", action="store_true", help="one call on a large scene (see the docstring)")
    ap.add_argument("--side", type=int, default=10000)
    args = ap.parse_args()
    reg = get_registry()
    if args.tiled:
        tiled(args.side, reg)
        return
    run("segment-examine-report-no-mask", 0.0, 1, reg)  # warm-up: imports, registry, first encodes
    print(f"picture {W}x{H}, classical segmenter, median of {args.reps} runs per row")
    print(f"{'scenario':42s} {'delay':>6s} {'turns':>5s} {'calls':>5s} {'wall s':>7s} {'endpoint s':>10s} "
          f"{'tools s':>7s} {'overhead/turn ms':>16s} {'(wall-tools)/endpoint':>21s}")
    for delay in (float(d) for d in args.delay.split(",")):
        for name in SCENARIOS:
            r = run(name, delay, args.reps, reg)
            print(f"{name:42s} {delay:6.2f} {r['turns']:5d} {r['calls']:5d} {r['wall']:7.3f} {r['endpoint']:10.3f} "
                  f"{r['tools']:7.3f} {r['overhead_ms']:16.1f} {r['ratio']:21.3f}")


if __name__ == "__main__":
    main()
