"""The agent reasoner with real models on a lent GPU: an MLLM (vLLM, or transformers in process) + SAM 3 / SAM 2.

    # vLLM started here on 127.0.0.1 with the VLM's folder from --weights (rscore's layout: DIR/NAME/):
    python benchmarks/gpu_agent.py --weights /models --vlm qwen2.5-vl-7b --segmenter sam3 --demo
    python benchmarks/gpu_agent.py --weights /models --vlm qwen3-vl-8b --segmenter sam2 --dataset reasonseg/val --limit 100
    # an endpoint already serving (vLLM with --enable-auto-tool-choice --tool-call-parser hermes):
    python benchmarks/gpu_agent.py --serve endpoint --endpoint http://127.0.0.1:8000/v1 --model NAME --demo
    # the VLM in process through transformers (the agent's local path, text tool calls):
    python benchmarks/gpu_agent.py --serve transformers --weights /models --vlm qwen2.5-vl-3b --demo
    python benchmarks/gpu_agent.py ... --check          # only say what is there and what is missing

What it prints (and writes with ``--json FILE``):

- ``--demo``: two synthetic scenes with known truth - a 1024 px site picture ("the red hard hat") and a
  4096 x 4096 scene reasoned in tiles (the agent's overview loop, then the tiles it points at) - per scene: turns,
  tool calls, loops (1 + tiles examined), endpoint time, tool time (segmenter), wall, engine overhead ratio
  (wall - tools) / endpoint (target <= 1.10), IoU with the truth;
- ``--dataset``: ``rscore eval`` on a manifest or ReasonSeg folder (gIoU, cIoU, N-acc ...) with the agent's
  turns, tool calls and endpoint time per sample, summarised (mean, p50, p90).

Before anything loads, every requirement is checked and what is missing is said in one line, exit 2 (no
traceback): the dataset, the weights (rscore's model registry: what to fetch and where to put it), vLLM for
``--serve vllm``, a CUDA device (``--allow-cpu`` runs anyway, e.g. ``--serve endpoint --segmenter classical``
against any endpoint). The vLLM server this script starts is stopped when it ends; its log goes to
``--vllm-log``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SEGMENTERS = {"sam3": "sam3", "sam2": "sam2.1-hiera-large", "grounded": None, "classical": None}


class Refused(Exception):
    """A requirement is missing: one line for the user, exit 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_agent.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--serve", choices=("vllm", "transformers", "endpoint"), default="vllm",
                   help="how the MLLM runs: vLLM started here (default), transformers in this process, or --endpoint")
    p.add_argument("--vlm", default="qwen2.5-vl-7b", help="registered reasoner model (rscore models list)")
    p.add_argument("--weights", type=Path, help="rscore weights folder (DIR/NAME/); default: the Hugging Face cache")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL for --serve endpoint")
    p.add_argument("--model", help="model name the endpoint serves (default: the only one it lists)")
    p.add_argument("--segmenter", choices=tuple(SEGMENTERS), default="sam3",
                   help="segment_phrase's backend: SAM 3 (text prompts), SAM 2 (boxes from the MLLM), grounded, "
                        "classical (no weights)")  # fmt: skip
    what = p.add_mutually_exclusive_group()
    what.add_argument("--demo", action="store_true", help="the two synthetic scenes (no dataset needed)")
    what.add_argument("--dataset", type=Path, help="rscore eval manifest (.jsonl) or ReasonSeg folder")
    what.add_argument("--check", action="store_true", help="only check the requirements and say what is missing")
    p.add_argument("--limit", type=int, default=0, help="first N dataset rows (0 = all)")
    p.add_argument("--plugin", default=None, help="plugin whose tools the agent gets (default: none)")
    p.add_argument("--max-turns", type=int, default=12, help="agent_max_turns")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for vLLM to serve")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.80, help="vLLM's share (SAM needs the rest)")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--vllm-arg", action="append", default=[], help="extra argument for vLLM (repeatable)")
    p.add_argument("--vllm-log", type=Path, default=Path("vllm-gpu_agent.log"))
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (slow; for checking the script)")
    p.add_argument("-O", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="engine option for every run, as rscore run -O (e.g. agent_max_tiles=8)")
    p.add_argument("--large-side", type=int, default=4096, help="side of the demo's tiled scene, px")
    p.add_argument("--no-warmup", action="store_true", help="time the demo's first call too (loads included)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.serve == "endpoint" and not args.endpoint:
        p.error("--serve endpoint needs --endpoint URL")
    if args.endpoint and args.serve != "endpoint":
        p.error("--endpoint is for --serve endpoint (vllm and transformers run the model here)")
    if not (args.demo or args.dataset or args.check):
        p.error("say what to run: --demo, --dataset PATH or --check")
    if args.limit < 0 or args.max_turns < 1 or not 0.05 <= args.gpu_memory_utilization <= 0.98:
        p.error("--limit >= 0, --max-turns >= 1 and --gpu-memory-utilization in 0.05..0.98")
    if args.large_side < 256:
        p.error("--large-side must be at least 256 px")
    bad = [o for o in args.option if "=" not in o or not o.partition("=")[0].strip()]
    if bad:
        p.error(f"-O takes KEY=VALUE, got {bad[0]!r}")
    return args


# ------------------------------------------------------------------------------------------------- requirements
def requirements(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything before loading anything; :class:`Refused` naming every missing piece at once."""
    from rscore.errors import RscoreError
    from rscore.models.registry import resolve

    missing: list[str] = []
    found: dict[str, Any] = {}
    if args.dataset is not None and not args.dataset.exists():
        missing.append(f"dataset {args.dataset} not found")
    if args.weights is not None and not args.weights.is_dir():
        missing.append(f"weights folder {args.weights} not found")
    elif args.serve != "endpoint":
        try:
            found["vlm"] = str(resolve(args.vlm, weights=args.weights).path)
        except RscoreError as exc:
            missing.append(str(exc))
    seg_model = SEGMENTERS[args.segmenter]
    if seg_model is not None and not (args.weights is not None and not args.weights.is_dir()):
        try:
            found["segmenter"] = str(resolve(seg_model, weights=args.weights).path)
        except RscoreError as exc:
            missing.append(str(exc))
    if args.serve == "vllm" and importlib.util.find_spec("vllm") is None:
        missing.append("vLLM is not installed in this Python (pip install vllm on the GPU machine), or use "
                       "--serve transformers / --serve endpoint")  # fmt: skip
    cuda = _cuda()
    found["device"] = cuda or "cpu"
    if cuda is None and not args.allow_cpu:
        missing.append("no CUDA device here (this script is for a lent GPU; --allow-cpu runs anyway, slowly)")
    if missing:
        raise Refused("gpu_agent: cannot run: " + "; ".join(f"({i}) {m}" for i, m in enumerate(missing, 1)))
    return found


def _cuda() -> str | None:
    if not Path("/proc/driver/nvidia").exists() and shutil.which("nvidia-smi") is None:
        return None  # no NVIDIA driver: say so without importing torch (seconds)
    try:
        import torch
    except ImportError:
        return None
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else None


# ------------------------------------------------------------------------------------------------------- vLLM
def start_vllm(args: argparse.Namespace, folder: str) -> tuple[subprocess.Popen[bytes], str]:
    url = f"http://127.0.0.1:{args.port}/v1"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name",
           args.vlm, "--host", "127.0.0.1", "--port", str(args.port), "--enable-auto-tool-choice",
           "--tool-call-parser", "hermes", "--max-model-len", str(args.max_model_len), "--gpu-memory-utilization",
           str(args.gpu_memory_utilization), "--limit-mm-per-prompt", json.dumps({"image": 8}), *args.vllm_arg]  # fmt: skip
    log = args.vllm_log.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Refused(f"gpu_agent: vLLM exited with {proc.returncode} while starting; see {args.vllm_log}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(3)
    proc.terminate()
    raise Refused(f"gpu_agent: vLLM did not serve within {args.startup_timeout:g} s; see {args.vllm_log}")


# ------------------------------------------------------------------------------------------------------- runs
def engine_options(args: argparse.Namespace, found: dict[str, Any], endpoint: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"reasoner": "agent", "segmenter": args.segmenter, "agent_max_turns": args.max_turns,
                            "device": "cuda" if found["device"].startswith("cuda") else "cpu"}  # fmt: skip
    if args.weights is not None:
        opts["weights"] = str(args.weights)
    if args.segmenter == "sam2":
        opts["sam2_model"] = SEGMENTERS["sam2"]  # the one checked above, not whichever is found first
    if endpoint is not None:
        opts.update(endpoint=endpoint, openai_timeout_s=300)
        if args.model or args.serve == "vllm":
            opts["model"] = args.model or args.vlm
    else:  # transformers in process: the agent's local path (the folder the registry found)
        opts.update(model=found["vlm"], transformers_weights=str(Path(found["vlm"]).parent))
    for item in args.option:
        key, sep, value = item.partition("=")
        opts[key.strip()] = value
    return opts


def demo_scenes(large_side: int) -> list[tuple[str, Any, str, Any]]:
    import numpy as np

    from rscore.types import ArraySource, Scene

    def scene(h: int, w: int, discs: list[tuple[int, int, int]], seed: int) -> tuple[Any, Any]:
        rng = np.random.default_rng(seed)
        img = rng.integers(70, 140, (h, w, 3), dtype=np.uint8)
        yy, xx = np.ogrid[:h, :w]
        truth = np.zeros((h, w), bool)
        img[h // 2 : h // 2 + h // 6, w // 8 : w // 8 + w // 6] = (30, 40, 210)  # a blue crate (a distractor)
        for cy, cx, r in discs:
            d = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[d] = (220, 30, 30)
            truth |= d
        return Scene(ArraySource(np.ascontiguousarray(img.transpose(2, 0, 1))), "image", ("red", "green", "blue")), truth

    site, t1 = scene(768, 1024, [(200, 300, 70)], 0)
    n = large_side
    large, t2 = scene(n, n, [(n // 4, n // 2, max(8, n * 3 // 80))], 1)  # across the middle: cut by a tile border
    return [("site 1024x768", site, "the red hard hat", t1), (f"large {n}x{n} (tiles)", large, "the red disc", t2)]


def run_demo(opts: dict[str, Any], plugin: str | None, large_side: int, warmup: bool) -> tuple[list[dict[str, Any]], int]:
    """The demo rows, and the turns the untimed warm-up took (plugins, segmenter and first requests loaded once,
    as a service would: a process's first call is 3-4x slower on CPU with the stub endpoint)."""
    import numpy as np

    from rscore import engine

    scenes = demo_scenes(large_side)
    warm_turns = 0
    if warmup:
        _, scene, query, _ = scenes[0]
        warm_turns = int(engine.segment(scene, query, plugin=plugin, options=opts).plan.match.get("turns") or 0)
    rows = []
    for name, scene, query, truth in scenes:
        t0 = time.perf_counter()
        res = engine.segment(scene, query, plugin=plugin, options=opts)
        wall = time.perf_counter() - t0
        m = res.plan.match
        mask = np.asarray(res.mask, bool) if res.mask is not None else np.zeros_like(truth)
        inter, union = int((mask & truth).sum()), int((mask | truth).sum())
        endpoint_s, tool_s = float(m.get("endpoint_time_s", 0.0)), float(m.get("tool_time_s", 0.0))
        tiling = m.get("tiling") or {}
        rows.append({"scene": name, "absent": res.plan.absent, "turns": m.get("turns"), "tool_calls": m.get("tool_calls"),
                     "loops": 1 + tiling.get("tiles", 1) - len(tiling.get("tiles_skipped", [])) if tiling else 1,
                     "endpoint_s": round(endpoint_s, 3), "tool_s": round(tool_s, 3), "wall_s": round(wall, 3),
                     "overhead_ratio": round((wall - tool_s) / endpoint_s, 3) if endpoint_s else None,
                     "iou": round(inter / union, 4) if union else 1.0})  # fmt: skip
    return rows, warm_turns


def run_dataset(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    from rscore.evaluation.runner import AGENT_STATS, evaluate

    report = evaluate(args.plugin, args.dataset, {**opts, "limit": args.limit or None, "on_error": "skip"})
    out: dict[str, Any] = {"metrics": {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}}
    for key in AGENT_STATS:
        values = [float(s[key]) for s in report.samples if isinstance(s.get(key), (int, float))]
        if values:
            q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
            out[key] = {"mean": round(statistics.fmean(values), 3), "p50": round(statistics.median(values), 3),
                        "p90": round(q[8], 3)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        found = requirements(args)
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"gpu_agent: ready - device {found['device']}; " + ", ".join(f"{k}: {v}" for k, v in found.items()
                                                                       if k != "device"))  # fmt: skip
    if args.check:
        return 0
    proc = None
    try:
        endpoint = args.endpoint
        if args.serve == "vllm":
            proc, endpoint = start_vllm(args, found["vlm"])
        elif args.serve == "transformers":
            endpoint = None
        opts = engine_options(args, found, endpoint)
        figures: dict[str, Any] = {"device": found["device"], "vlm": args.model or args.vlm, "serve": args.serve,
                                   "segmenter": args.segmenter}  # fmt: skip
        if args.demo:
            figures["demo"], figures["warmup_turns"] = run_demo(opts, args.plugin, args.large_side, not args.no_warmup)
            cols = list(figures["demo"][0])
            print("  ".join(f"{c:>14}" for c in cols))
            for row in figures["demo"]:
                print("  ".join(f"{str(row[c]):>14}" for c in cols))
        else:
            figures["dataset"] = run_dataset(args, opts)
            print(json.dumps(figures["dataset"], indent=2))
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
