"""What the video frame-size check saves: ``rscore run`` on a small video whose frames are huge.

Builds (in a temporary folder) an MJPEG AVI of two real 16000 x 16000 frames (256 million pixels each, just over the
default limit of 250 million; about 3 MB on disk, ~2.6 GB of memory to build), then runs ``rscore run`` on it as a
subprocess and prints its exit code, wall time and peak memory (the child's max RSS):

    python benchmarks/video_frame_bomb.py            # the default limit: refused from the header
    python benchmarks/video_frame_bomb.py --trust    # also with --max-pixels 3e8 (decoded: capped by --cap-gb, --timeout)

Measured 2026-12-06 on the 2-core development machine under the other engineers' load: refused in 1.4-4 s at 92 MB
peak; decoded (``--trust``: what every run did before the check) it reached 5.2 GB and was stopped at 120 s (5.5 GB
and still running after 150 s with the code before the check).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(path: Path, side: int = 16000) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (side, side))
    frame = np.zeros((side, side, 3), np.uint8)
    for i in range(2):
        frame[1000:3000, 1000 + 500 * i : 3000 + 500 * i] = 240
        writer.write(frame)
    writer.release()
    return path


def run(video: Path, *extra: str, cap_gb: float, timeout: float) -> tuple[int | None, float, float]:
    """(exit code or None on timeout, seconds, peak RSS in MB) of ``rscore run`` on ``video``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    env.pop("RSCORE_MAX_PIXELS", None)
    cap = int(cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rscore", "run", str(video), "bright spots", *extra, "--out",
                             str(video.with_suffix(".out"))], env=env, preexec_fn=limit,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        code = None
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    line = next((x for x in err.decode(errors="replace").splitlines() if x.strip()), "")
    print(f"    stderr: {line[:160]}")
    return code, seconds, max(peak, before) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trust", action="store_true", help="also run with --max-pixels 3e8 (decodes the frames)")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="address-space cap of the trusted run (GB)")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds before the trusted run is stopped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rscore-frame-bomb-") as tmp:
        t0 = time.perf_counter()
        video = build(Path(tmp) / "bomb.avi")
        print(f"built {video.name}: {video.stat().st_size / 1e6:.1f} MB on disk, 2 frames of 16000 x 16000 "
              f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        code, seconds, peak = run(video, cap_gb=args.cap_gb, timeout=args.timeout)
        print(f"default limit (250e6): exit {code}, {seconds:.1f} s, peak RSS {peak:.0f} MB")
        if args.trust:
            code, seconds, peak = run(video, "--max-pixels", "300000000", cap_gb=args.cap_gb, timeout=args.timeout)
            shown = "timed out" if code is None else f"exit {code}"
            print(f"--max-pixels 3e8 (decoded): {shown}, {seconds:.1f} s, peak RSS {peak:.0f} MB "
                  "(the RSS of every child so far: the largest)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
