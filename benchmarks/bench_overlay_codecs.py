"""Time to encode the video overlay per codec (issue 18: H.264 through PyAV replaced OpenCV's mp4v).

Encodes the same synthetic frames (default 300 at 640x360, a moving box drawn as a track) with each
``overlay_codec`` through :class:`rscore.video.writers.OverlaySink` and prints ms per frame, frames/s and file size::

    python benchmarks/bench_overlay_codecs.py [--frames 300] [--size 640x360]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="640x360")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    from rscore.video.writers import OverlaySink

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // 2 + 40
    frames = []
    for i in range(args.frames):
        img = background.copy()
        x = (5 * i) % (w - 80)
        img[100:180, x : x + 80] = 230
        mask = np.zeros((h, w), bool)
        mask[100:180, x : x + 80] = True
        frames.append((img, [{"mask": mask, "bbox": [x, 100, x + 80, 180], "track_id": 1, "label": "box"}]))
    print(f"{args.frames} frames {w}x{h}")
    print(f"{'codec':6s} {'ms/frame':>9s} {'frames/s':>9s} {'MiB':>6s}  file")
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("h264", "vp9", "mp4v", "MJPG"):
            sink = OverlaySink(Path(tmp) / f"o_{codec}.mp4", codec, 25.0, (w, h))
            t0 = time.perf_counter()
            for img, items in frames:
                sink.add(img, items)
            sink.close()
            dt = time.perf_counter() - t0
            print(f"{codec:6s} {1000 * dt / args.frames:9.2f} {args.frames / dt:9.1f} "
                  f"{sink.path.stat().st_size / 2**20:6.2f}  {sink.path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
