"""VLM requests/s through rscore's ``openai`` reasoner beside a bare client: the same N requests at concurrency C.

One request = one picture + the query -> boxes / points. Both sides send the same pictures with the same text to the
same OpenAI-compatible endpoint, from C threads of this process, over the same N requests:

``bare``    a hand-written client: one pooled ``httpx.Client`` shared by the C threads (keep-alive); per request the
            picture encoded as rscore encodes it (PNG at ``rscore.reasoners.openai.PNG_LEVEL``, base64 data URL; at
            the size rscore sends), the system and user text rscore writes for it (built once, before timing),
            ``POST /chat/completions``, the JSON body decoded and the answer's JSON read into boxes.
``rscore``  ``OpenAIReasoner.plan(scene, request, templates)`` from the scene: picture fitting, template hints
            (the query matched to the templates), prompt, the HTTP call (retries and deadline), answer parsing
            (repair turn when unusable), the plan in original pixels - what ``--reasoner openai`` does per picture.

Rounds alternate bare / rscore ``--repeat`` times per concurrency. Per row: requests/s (N / the round's wall time,
median over rounds), p50 / p95 latency of one request (over all rounds), the CPU milliseconds this process spent per
request (median round; with the loopback server that includes the server's own threads, the same on both sides),
the boxes read per request; then ``ratio`` = rscore requests/s / bare requests/s (1.0 = rscore costs nothing extra).

Endpoint: without ``--base-url``, the loopback OpenAI-compatible server of the tests (tests/openai_stub_server.py, a
real HTTP server on 127.0.0.1) answers every request after ``--delay`` seconds with one target (box, points): at
``--delay 0`` the ratio is rscore's own cost per request against a bare client's, the worst case; with
``--base-url`` a real server (vLLM on a lent GPU: the command is in benchmarks/README.md) and its model.

::

    python benchmarks/bench_vlm_requests.py                                   # loopback, N=48, C=1,4
    python benchmarks/bench_vlm_requests.py --delay 0.05 --concurrency 1,8 --requests 96
    python benchmarks/bench_vlm_requests.py --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --requests 200 --concurrency 1,8,32 --images ../shared/data/construction
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_video import _table  # noqa: E402  (the same plain-text table)

QUERY = "the worker in the hi-vis vest"
W, H = 672, 504  # multiples of 28 (Qwen's patch grid): rscore sends the picture at this size, unresized
STUB_ANSWER = json.dumps({
    "steps": ["the fluorescent vest is on the person at the left"],
    "targets": [{"label": "worker", "box": [96, 120, 212, 430], "positive_points": [[150, 250]],
                 "negative_points": [[600, 40]], "confidence": 0.9}],
})  # fmt: skip


# ------------------------------------------------------------------------------------------------------ pictures
def synthetic_pictures(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` different ``(H, W, 3)`` uint8 pictures, about as compressible as a camera frame: a smooth ground (coarse
    random shading enlarged) with a little sensor noise and two coloured boxes at random places."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(50, 170, (H // 24, W // 24, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
        for colour in ((200, 255, 40), (220, 40, 30)):
            x, y = int(rng.integers(0, W - 120)), int(rng.integers(0, H - 160))
            img[y : y + 160, x : x + 120] = colour
        out.append(img)
    return out


def folder_pictures(folder: Path, n: int) -> list[np.ndarray]:
    """Up to ``n`` pictures from the image files (and the first frames of video files) under ``folder``, cycled."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif"))
    pics = []
    for path in files:
        try:
            pics.append(np.asarray(Image.open(path).convert("RGB")))
        except OSError:
            continue
        if len(pics) >= n:
            break
    if not pics:
        raise SystemExit(f"{folder}: no readable picture (.jpg/.png/.bmp/.tif)")
    return [pics[i % len(pics)] for i in range(n)]


# ---------------------------------------------------------------------------------------------------- the sides
@dataclass(frozen=True)
class Job:
    """One request: the scene rscore plans on, and what the bare client sends (picture as rscore sends it, texts)."""

    scene: Any
    sent: np.ndarray
    system: str
    user: str


def make_jobs(pictures: Sequence[np.ndarray], reasoner: Any, request: Any, templates: Sequence[Any],
              model: str) -> list[Job]:  # fmt: skip
    """rscore's own prompt for each picture (its ``prepare`` stage), so that both sides send the same words."""
    from types import SimpleNamespace

    from rscore.io.images import scene_rgb8
    from rscore.reasoners.prompting import describe_scene
    from rscore.types import ArraySource, Scene

    o = reasoner.options_for(request)
    jobs = []
    for img in pictures:
        scene = Scene(ArraySource(np.ascontiguousarray(np.moveaxis(img, -1, 0))), "image", ("red", "green", "blue"))
        sent = reasoner.fit(scene_rgb8(scene), o)
        prepared = reasoner.prepare(sent, request, templates, kind="image", context=describe_scene(scene, sent),
                                    options=o, session=SimpleNamespace(model=model))  # fmt: skip
        system = prepared.messages[0]["content"]
        user = next(p["text"] for p in prepared.messages[1]["content"] if p.get("type") == "text")
        jobs.append(Job(scene, sent.array, system, user))
    return jobs


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def bare_boxes(text: str) -> list[list[float]]:
    """The boxes of an answer, as a hand-written client would read them: the JSON (in a code fence or bare), then
    ``targets[].box`` (rscore's format) or a list of ``bbox_2d`` (Qwen's)."""
    m = _FENCE.search(text)
    try:
        data = json.loads(m.group(1) if m else text)
    except json.JSONDecodeError:
        return []
    items = data.get("targets", []) if isinstance(data, dict) else data if isinstance(data, list) else []
    boxes = [(i.get("box") or i.get("bbox_2d")) if isinstance(i, dict) else None for i in items]
    return [list(b) for b in boxes if b]


def bare_request(client: Any, url: str, model: str, job: Job, max_tokens: int) -> int:
    """One request of the bare client; the number of boxes in the answer."""
    from PIL import Image

    from rscore.reasoners import openai as rscore_openai

    buf = io.BytesIO()
    Image.fromarray(job.sent).save(buf, format="PNG", compress_level=rscore_openai.PNG_LEVEL)
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    payload = {
        "model": model,
        "messages": [
            {"role": "system", "content": job.system},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                         {"type": "text", "text": job.user}]},  # fmt: skip
        ],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "stream": False,
    }
    resp = client.post(url, json=payload)
    resp.raise_for_status()
    return len(bare_boxes(resp.json()["choices"][0]["message"]["content"] or ""))


Round = tuple[float, float, list[float], list[int]]


def _round(fn: Callable[[Job], int], jobs: Sequence[Job], concurrency: int) -> Round:
    """All ``jobs`` through ``fn`` on ``concurrency`` threads: (wall s, CPU s, latencies s, boxes per request)."""
    latencies: list[float] = [0.0] * len(jobs)
    boxes: list[int] = [0] * len(jobs)

    def one(i: int) -> None:
        t0 = time.perf_counter()
        boxes[i] = fn(jobs[i])
        latencies[i] = time.perf_counter() - t0

    c0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(jobs))))
    return time.perf_counter() - t0, time.process_time() - c0, latencies, boxes


def _row(side: str, concurrency: int, rounds: list[Round]) -> dict[str, Any]:
    n = len(rounds[0][2])
    lat = sorted(x for r in rounds for x in r[2])
    wall = statistics.median(r[0] for r in rounds)
    return {
        "side": side,
        "concurrency": concurrency,
        "requests": n,
        "requests_per_s": round(n / wall, 2),
        "p50_ms": round(1000 * lat[len(lat) // 2], 2),
        "p95_ms": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2),
        "cpu_ms_per_request": round(1000 * statistics.median(r[1] for r in rounds) / n, 2),
        "boxes_per_request": round(sum(sum(r[3]) for r in rounds) / (n * len(rounds)), 2),
    }


def measure(base_url: str, model: str, pictures: Sequence[np.ndarray], *, query: str = QUERY,
            plugin: str | None = None, concurrency: Sequence[int] = (1, 4), repeat: int = 3,
            options: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Bare and rscore rows per concurrency and their ratio, on the endpoint at ``base_url`` (``.../v1``)."""
    import httpx

    from rscore.plugins import get_registry
    from rscore.reasoners.openai import make_openai_reasoner, normalise_endpoint
    from rscore.types import Request

    reg = get_registry()
    templates = reg.templates_for(plugin)
    opts = {"reasoner": "openai", "endpoint": base_url, "model": model, **(options or {})}
    reasoner = make_openai_reasoner(opts)  # the ``openai`` backend's factory, as the engine builds it
    request = Request(query=query, plugin=plugin, options=opts)
    jobs = make_jobs(pictures, reasoner, request, templates, model)
    url = normalise_endpoint(base_url) + "/chat/completions"
    max_tokens = reasoner.options.max_tokens

    def rscore_request(job: Job) -> int:
        return len(reasoner.plan(job.scene, request, templates).targets)

    out: dict[str, Any] = {"endpoint": base_url, "model": model, "query": query, "picture": list(pictures[0].shape),
                           "rows": [], "ratios": []}  # fmt: skip
    limits = httpx.Limits(max_connections=max(concurrency))
    with httpx.Client(timeout=reasoner.options.timeout_s, limits=limits) as client:

        def bare(job: Job) -> int:
            return bare_request(client, url, model, job, max_tokens)

        bare(jobs[0]), rscore_request(jobs[0])  # warm-up: imports, the matcher, the first connection
        for c in concurrency:
            runs: dict[str, list] = {"bare": [], "rscore": []}
            for _ in range(repeat):
                runs["bare"].append(_round(bare, jobs, c))
                runs["rscore"].append(_round(rscore_request, jobs, c))
            rows = {side: _row(side, c, r) for side, r in runs.items()}
            out["rows"] += [rows["bare"], rows["rscore"]]
            out["ratios"].append({
                "concurrency": c,
                "ratio": round(rows["rscore"]["requests_per_s"] / rows["bare"]["requests_per_s"], 3),
                "extra_ms_per_request": round(rows["rscore"]["p50_ms"] - rows["bare"]["p50_ms"], 2),
                "extra_cpu_ms_per_request": round(rows["rscore"]["cpu_ms_per_request"]
                                                  - rows["bare"]["cpu_ms_per_request"], 2),
            })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", help="OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1 (default: the "
                    "loopback stub)")
    ap.add_argument("--model", help="model name on that server (default: test-vlm on the stub)")
    ap.add_argument("--requests", type=int, default=48, help="N: requests per round (default 48)")
    ap.add_argument("--concurrency", default="1,4", help="comma-separated C values (default 1,4)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per side and concurrency (default 3)")
    ap.add_argument("--delay", type=float, default=0.0, help="stub only: seconds the scripted model takes per reply")
    ap.add_argument("--images", type=Path, help="a folder of pictures (default: synthetic 672x504 pictures)")
    ap.add_argument("--query", default=QUERY)
    ap.add_argument("--plugin", default=None, help="plugin whose templates give the hints (default: all)")
    ap.add_argument("--option", "-O", action="append", default=[], help="openai reasoner option key=value")
    ap.add_argument("--png-level", type=int, help="zlib level of the PNG pictures, both sides (default: rscore's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.png_level is not None:
        from rscore.reasoners import openai as rscore_openai

        rscore_openai.PNG_LEVEL = args.png_level
    pictures = folder_pictures(args.images, args.requests) if args.images else synthetic_pictures(args.requests)
    options = dict(kv.split("=", 1) for kv in args.option)
    conc = [int(c) for c in args.concurrency.split(",")]
    load = [round(v, 2) for v in os.getloadavg()]
    if args.base_url:
        if not args.model:
            ap.error("--model is needed with --base-url")
        out = measure(args.base_url, args.model, pictures, query=args.query, plugin=args.plugin, concurrency=conc,
                      repeat=args.repeat, options=options)  # fmt: skip
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from openai_stub_server import Reply, ScriptedOpenAIServer

        with ScriptedOpenAIServer([Reply(content=STUB_ANSWER, delay_s=args.delay)]) as srv:
            out = measure(srv.url, args.model or "test-vlm", pictures, query=args.query, plugin=args.plugin,
                          concurrency=conc, repeat=args.repeat, options=options)  # fmt: skip
        out["endpoint"] = f"loopback stub (tests/openai_stub_server.py), reply delay {args.delay:g} s"
    out["load_avg"] = [load, [round(v, 2) for v in os.getloadavg()]]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"endpoint {out['endpoint']}, model {out['model']}, picture {out['picture']}, query {out['query']!r}")
    print(f"load average at start {out['load_avg'][0]}, at end {out['load_avg'][1]} ({os.cpu_count()} CPUs)")
    print(_table(out["rows"]))
    print(_table(out["ratios"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
