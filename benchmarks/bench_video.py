"""Video ingest and analytic throughput on the real CCTV clips, and memory over a 10x longer looped stream.

``throughput`` (default)
    For each clip in ../shared/data/construction (OpenCV ``vtest.avi`` 768x576 10 fps, the Intel worker clip as
    MP4 and as GIF, 480x270): frames per second of

    - ``decode``: every frame decoded to RGB (:func:`rscore.video.open_video`);
    - ``decode+sample``: decoded and thinned to ``--target-fps`` (source frames per second of wall time);
    - ``hivis``: decode + the safety plugin's hi-vis template program on every frame (full resolution);
    - ``motion``: decode + MOG2 background subtraction (:class:`rscore_safety.rules.MotionSignal`);
    - ``rules``: decode + motion + hi-vis where needed + the default zone rules (:func:`analyse_video`);
    - ``engine``: :func:`rscore.video.segment_video` offline (16 sampled keyframe candidates, keyframe segmented,
      optical-flow propagation both ways, hi-vis re-detection every 5 frames, tracks, RLE per frame) - frames
      processed per second of wall time.

``memory``
    The worker clip served as a live MJPEG stream on loopback (``rscore.video.mjpeg``), looped 1x and 10x
    (71 and 710 frames), processed online by ``segment_video`` (hi-vis detection every 5 frames, flow propagation,
    overlay video written) and by the rules layer. Reports the Python-heap peak (tracemalloc, which numpy's buffers
    are counted in) and the process RSS peak sampled every 10 ms during each run. Flat = the 10x run's peaks within
    a few MB of the 1x run's.

``cli``
    ``rscore run <clip> "workers in hi-vis vests"`` end to end (default options: keyframe, propagation both ways,
    re-detection, overlay video and all writers) as a child process, frames of the clip per second of wall time
    and the child's peak RSS, CPU seconds (user + system, all its threads) and CPU milliseconds per frame (the
    figure machine load does not change: 60 frames/s on 2 cores needs <= 33.3), and the 1-min load average before
    the runs. With ``--before SRC`` (an older checkout, e.g. /work/main) the same command runs with that tree's
    sources first on ``PYTHONPATH``, alternating with this checkout's, ``--repeat`` times each (median shown).
    ``--matcher`` (default keyword, as the earlier figures; ``default`` = what a user gets). Issue 22 target:
    vtest >= 60 frames/s.

``profile``
    One ``rscore run`` on the first of ``--clips`` inside this process: cProfile of the main thread (top ``--top``
    functions by own and by cumulative time) and the CPU seconds of every thread (main, decoding ahead, overlay,
    and the native threads of OpenCV / FFmpeg / x264), to see what a run spends beyond decoding, the rule and flow.

``flow``
    Propagation quality and cost of the optical-flow methods on the real worker clip: the safety plugin's hi-vis
    masks detected on every frame; from each detected frame k the mask is carried by flow alone to frame k + gap
    and compared (IoU) with the detection there (gap 5 = the default ``redetect_every``, and 10). ``static``
    (the mask not moved) is the floor. Also the flow's own milliseconds per frame at ``flow_max_side`` 384.

::

    python benchmarks/bench_video.py                 # throughput and memory
    python benchmarks/bench_video.py cli --before /work/main --repeat 3
    python benchmarks/bench_video.py cli --repeat 3 --matcher default   # as a user runs it (embedding matcher)
    python benchmarks/bench_video.py profile --clips vtest.avi --top 25
    python benchmarks/bench_video.py flow
    python benchmarks/bench_video.py throughput --repeat 3
    python benchmarks/bench_video.py memory --loops 10 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rscore.testing import shared_data_dir

CLIPS = {
    "vtest.avi": "construction/cctv_generic/opencv_vtest.avi",
    "worker.mp4": "construction/intel_worker-zone-detection_from_gif.mp4",
    "worker.gif": "construction/intel_worker-zone-detection.gif",
}
ZONES = {  # pixel polygons: the road of vtest, the left bay of the worker clip
    "vtest.avi": [[0, 190], [768, 130], [768, 480], [340, 330], [0, 300]],
    "worker.mp4": [[0, 0], [200, 0], [200, 270], [0, 270]],
    "worker.gif": [[0, 0], [200, 0], [200, 270], [0, 270]],
}
QUERY = "workers in hi-vis vests"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class RssSampler:
    """Peak resident set size (MB) during a block, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> RssSampler:
        self.start = _rss_mb()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _timed(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Best frames/s over ``repeat`` runs of ``fn`` (which returns the number of frames it handled)."""
    rates, frames = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        frames = fn()
        rates.append(frames / (time.perf_counter() - t0))
    return max(rates), frames


def throughput(data: Path, repeat: int, target_fps: float) -> list[dict[str, Any]]:
    from rscore.plugins import get_registry
    from rscore.video import open_video, segment_video
    from rscore_safety.rules import HiVisSignal, MotionSignal, analyse_video

    reg = get_registry()
    rows = []
    for name, rel in CLIPS.items():
        path = data / rel
        if not path.exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            zones = Path(tmp) / "zones.json"
            zones.write_text(json.dumps({"zones": [{"name": "zone", "polygon": ZONES[name]}]}))

            def decode() -> int:
                with open_video(path) as r:
                    return sum(1 for _ in r)

            def sample() -> int:
                with open_video(path, {"target_fps": target_fps}) as r:
                    for _ in r:
                        pass
                    return r.frames_decoded

            hivis = HiVisSignal(max_side=0, registry=reg)

            def hivis_all() -> int:
                n = 0
                with open_video(path) as r:
                    for f in r:
                        hivis(f.image)
                        n += 1
                return n

            def motion() -> int:
                m, n = MotionSignal("mog2"), 0
                with open_video(path) as r:
                    for f in r:
                        m(f.image)
                        n += 1
                return n

            def rules() -> int:
                return analyse_video(path, zones, camera=name).frames

            def engine() -> int:
                res = segment_video(path, QUERY, plugin="safety", registry=reg,
                                    options={"matcher": "keyword", "overlay": False})
                n = res.log.frame_count
                res.log.close()
                return n

            row: dict[str, Any] = {"clip": name}
            for key, fn in (("decode", decode), ("decode+sample", sample), ("hivis", hivis_all),
                            ("motion", motion), ("rules", rules), ("engine", engine)):
                fps, frames = _timed(fn, repeat)
                row[key] = round(fps, 1)
                row["frames"] = row.get("frames") or frames
            rows.append(row)
    return rows


def memory(data: Path, loops: int) -> list[dict[str, Any]]:
    from rscore.plugins import get_registry
    from rscore.video import segment_video
    from rscore.video.mjpeg import MjpegServer, jpeg_frames_of
    from rscore_safety.rules import analyse_video

    reg = get_registry()
    clip = data / CLIPS["worker.mp4"]
    frames = jpeg_frames_of(clip)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        zones = Path(tmp) / "zones.json"
        zones.write_text(json.dumps({"zones": [{"name": "left bay", "polygon": ZONES["worker.mp4"]}]}))
        for what in ("engine-online", "rules-online"):
            for n in (1, loops):
                with MjpegServer(frames, loops=n) as server:
                    tracemalloc.start()
                    t0 = time.perf_counter()
                    with RssSampler() as rss:
                        if what == "engine-online":
                            res = segment_video(server.url, QUERY, plugin="safety", registry=reg,
                                                options={"matcher": "keyword", "reconnect_attempts": 0})
                            count = res.log.frame_count
                            res.log.close()
                        else:
                            count = analyse_video(server.url, zones, options={"reconnect_attempts": 0}).frames
                    elapsed = time.perf_counter() - t0
                    _, heap_peak = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
                rows.append({
                    "run": what, "loops": n, "frames": count, "fps": round(count / elapsed, 1),
                    "heap_peak_mb": round(heap_peak / 2**20, 2), "rss_peak_mb": round(rss.peak, 1),
                    "rss_growth_mb": round(rss.peak - rss.start, 1),
                })
    return rows


def _pythonpath(src: Path) -> str:
    parts = [src, src / "flows", *(src / "plugins" / p / "src" for p in ("earth", "safety", "surgical", "underwater"))]
    return os.pathsep.join(str(p) for p in parts)


def cli(
    data: Path, repeat: int, before: Path | None, clips: list[str], matcher: str = "keyword"
) -> list[dict[str, Any]]:
    import statistics
    import subprocess

    root = Path(__file__).resolve().parents[1]
    variants = [("after", root)] + ([("before", before.resolve())] if before else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in clips:
            path = data / CLIPS[name]
            with open_clip(path) as reader:
                frames = reader.info.frame_count
            samples: dict[str, list[tuple[float, float, int, float, float]]] = {v: [] for v, _ in variants}
            overlays: dict[str, str] = {}
            for _ in range(repeat):
                for vname, src in variants:
                    env = {**os.environ, "PYTHONPATH": _pythonpath(src)}
                    if matcher != "default":
                        env["RSCORE_MATCHER"] = matcher
                    else:
                        env.pop("RSCORE_MATCHER", None)
                    cmd = [sys.executable, "-m", "rscore", "run", str(path), QUERY, "-o", str(Path(tmp) / vname)]
                    load = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                    _, status, usage = os.wait4(proc.pid, 0)
                    samples[vname].append((time.perf_counter() - t0, usage.ru_maxrss / 1024,
                                           os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime,
                                           load))
                    overlays[vname] = _probe_overlay(Path(tmp) / vname)
            for vname, _ in variants:
                wall = statistics.median(s[0] for s in samples[vname])
                cpu = statistics.median(s[3] for s in samples[vname])
                rows.append({"clip": name, "code": vname, "frames": frames, "wall_s": round(wall, 2),
                             "fps": round(frames / wall, 1), "cpu_s": round(cpu, 2),
                             "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
                             "load": round(statistics.median(s[4] for s in samples[vname]), 1),
                             "peak_rss_mb": round(max(s[1] for s in samples[vname]), 1),
                             "exit": ",".join(sorted({str(s[2]) for s in samples[vname]})),
                             "overlay": overlays.get(vname, "")})
    return rows


def profile(data: Path, clip: str, top: int) -> dict[str, Any]:
    """One ``rscore run`` on ``clip`` in this process: cProfile of the main thread (the tracking path), and the CPU
    seconds of every thread (decoding ahead, the overlay, OpenCV's and the encoder's own threads), read from
    /proc every 50 ms while the run goes."""
    import contextlib
    import cProfile
    import io
    import pstats

    from rscore.cli import main as rscore_main

    def per_thread() -> dict[str, tuple[str, float]]:
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[tid] = (names.get(tid, "native (OpenCV / FFmpeg / x264)"), (int(fields[11]) + int(fields[12])) / tick)
        return out

    seen: dict[str, tuple[str, float]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for tid, (name, cpu) in per_thread().items():
                old = seen.get(tid)
                seen[tid] = (old[0] if old and not name.startswith("native") else name, cpu)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    prof = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        c0, t0 = time.process_time(), time.perf_counter()
        prof.enable()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the CLI's own report
                rscore_main(["run", str(data / CLIPS[clip]), QUERY, "-o", str(Path(tmp) / "out")])
        except SystemExit:
            pass
        prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    sampler.join()
    threads: dict[str, float] = {}
    for name, secs in seen.values():
        key = name.rstrip("0123456789_- ") if not name.startswith("native") else name
        threads[key] = round(threads.get(key, 0.0) + secs, 2)
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats("rscore", top)  # rscore's and its plugins' functions
    return {"clip": clip, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "threads_cpu_s": dict(sorted(threads.items(), key=lambda kv: -kv[1])), "cprofile": text.getvalue()}


def _probe_overlay(out: Path) -> str:
    """The overlay video a run wrote, as its own container reports it: ``name codec frames WxH rate``."""
    import av

    videos = sorted(out.glob("overlay.*"))
    if not videos:
        return "none"
    with av.open(str(videos[0])) as c:
        st = c.streams.video[0]
        return (f"{videos[0].name} {st.codec_context.name} {st.frames}f {st.codec_context.width}x"
                f"{st.codec_context.height} {st.average_rate}/s")


def open_clip(path: Path) -> Any:
    from rscore.video import open_video

    return open_video(path)


def flow_quality(data: Path) -> list[dict[str, Any]]:
    import numpy as np

    from rscore import rle
    from rscore.plugins import get_registry
    from rscore.video import open_video, segment_video
    from rscore.video.propagate import FLOW_CHOICES, FlowPropagator

    path = data / CLIPS["worker.mp4"]
    res = segment_video(path, QUERY, plugin="safety", registry=get_registry(),
                        options={"propagator": "none", "min_area_px": 30, "overlay": False})
    h, w = res.frame_size
    detected: dict[int, np.ndarray] = {}
    for record in res.log.iter_frames():
        m = np.zeros((h, w), bool)
        for inst in record["instances"]:
            m |= rle.decode(inst["rle"])
        detected[record["frame"]] = m
    res.log.close()
    with open_video(path) as reader:
        frames = list(reader)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max(1, (a | b).sum()))

    rows = []
    for method in ("static", *FLOW_CHOICES):
        row: dict[str, Any] = {"flow": method}
        spent, steps = 0.0, 0
        for gap in (5, 10):
            ious = []
            for k in range(0, len(frames) - gap, gap):
                m0, m1 = detected.get(k), detected.get(k + gap)
                if m0 is None or m1 is None or m0.sum() < 50 or m1.sum() < 50:
                    continue
                mask = m0
                if method != "static":
                    kind, _, preset = method.partition("-")
                    prop = FlowPropagator(384, method=kind, **({"dis_preset": preset} if preset else {}))
                    prop.reset(frames[k], {1: m0})
                    for j in range(1, gap + 1):
                        t0 = time.perf_counter()
                        prop.flow(frames[k + j])  # the flow alone, timed
                        spent += time.perf_counter() - t0
                        steps += 1
                        prop._prev = prop._small_grey(frames[k + j - 1].image)  # step() recomputes it
                        (mask, _), = prop.step(frames[k + j], {1: mask}).values()
                ious.append(iou(mask, m1))
            row[f"iou_gap{gap}"] = round(float(np.mean(ious)), 3)
            row[f"n_gap{gap}"] = len(ious)
        row["flow_ms"] = round(1000 * spent / steps, 2) if steps else 0.0
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = ["  ".join(k.rjust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r.get(k, "")).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("all", "throughput", "memory", "cli", "flow", "profile"),
                        default="all")
    parser.add_argument("--top", type=int, default=30, help="profile: functions listed per ordering")
    parser.add_argument("--before", type=Path, help="cli: checkout root of the code to compare against")
    parser.add_argument("--clips", default="vtest.avi", help="cli: comma-separated clip names")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (the best is kept)")
    parser.add_argument("--target-fps", type=float, default=5.0, help="sampling rate of decode+sample")
    parser.add_argument("--loops", type=int, default=10, help="length of the long stream, in clip loops")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--matcher", choices=("keyword", "embedding", "default"), default="keyword",
                        help="cli/profile: the query matcher of the runs (default keyword, as in earlier figures; "
                        "'default': what a user gets)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("RSCORE_MATCHER", "keyword")
    data = shared_data_dir()
    if data is None:
        sys.exit("the shared data folder (../shared/data or RSCORE_SHARED_DATA) is needed")
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg": [round(v, 2) for v in os.getloadavg()]}
    if args.what in ("all", "throughput"):
        out["throughput_fps"] = throughput(data, args.repeat, args.target_fps)
    if args.what in ("all", "memory"):
        out["memory"] = memory(data, args.loops)
    if args.what == "cli":
        out["cli"] = cli(data, args.repeat, args.before, args.clips.split(","), args.matcher)
    if args.what == "flow":
        out["flow"] = flow_quality(data)
    if args.what == "profile":
        if args.matcher != "default":
            os.environ["RSCORE_MATCHER"] = args.matcher
        else:
            os.environ.pop("RSCORE_MATCHER", None)
        out["profile"] = profile(data, args.clips.split(",")[0], args.top)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"cpus {out['cpus']}, load average at start {out['load_avg']}, at end {out['load_avg_end']}")
    if "throughput_fps" in out:
        print("\nframes per second (best of --repeat):")
        print(_table(out["throughput_fps"]))
    if "cli" in out:
        print(f"\nrscore run end to end (median of {args.repeat}; load = 1-min load average before each run):")
        print(_table(out["cli"]))
        print("60 frames/s on 2 cores needs <= 33.3 CPU ms per frame (<= 16.7 ms leaves one core free); the wall "
              "time follows the CPU time only on an idle machine")
    if "profile" in out:
        p = out["profile"]
        print(f"\nprofile of one rscore run on {p['clip']} in this process: wall {p['wall_s']} s, CPU {p['cpu_s']} s "
              "(cProfile slows Python code on the main thread)")
        print("CPU s per thread: " + ", ".join(f"{k} {v}" for k, v in p["threads_cpu_s"].items()))
        print(p["cprofile"])
    if "flow" in out:
        print("\nflow propagation on the worker clip (IoU with the detection gap frames later):")
        print(_table(out["flow"]))
    if "memory" in out:
        print(f"\nmemory, worker clip as a live MJPEG stream looped 1x and {args.loops}x:")
        print(_table(out["memory"]))
        for what in ("engine-online", "rules-online"):
            r = [m for m in out["memory"] if m["run"] == what]
            if len(r) == 2:
                print(f"{what}: {r[1]['frames'] / r[0]['frames']:.0f}x the frames, heap peak "
                      f"{r[0]['heap_peak_mb']} -> {r[1]['heap_peak_mb']} MB, RSS peak {r[0]['rss_peak_mb']} -> "
                      f"{r[1]['rss_peak_mb']} MB")



if __name__ == "__main__":
    main()
