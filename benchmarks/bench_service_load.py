"""Load on the HTTP service: N concurrent POST /v1/segment on the analytic path; status counts and latencies.

The service runs in its own process (``rscore.service.serve`` on loopback), the clients in this one (httpx, asyncio),
so client and server do not share a GIL. Three scenarios, each N requests fired at once:

``burst``    the service's default queue (RSCORE_QUEUE_SIZE, 8): what does not fit is refused at once with 503 and
             ``Retry-After``; clients give up. Shows that overload is answered quickly and never with a 500.
``retry``    the same service; clients honour ``Retry-After`` (up to ``--max-tries``): every request should succeed.
``deep``     a queue as deep as N (and a long deadline): everything is admitted and waits its turn.

Meanwhile ``/healthz`` is polled every 50 ms to show that the event loop stays responsive under load.

Plugin: ``earth`` with its bundled example DEM when installed (the real landslide program), else ``bench``, a small
analytic plugin defined here (9x9 mean brightness >= 0.5 on a synthetic image). ::

    python benchmarks/bench_service_load.py                       # 200 requests, all three scenarios
    python benchmarks/bench_service_load.py --requests 50 --scenarios retry --plugin bench --json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rscore import hookimpl
from rscore.sdk import OpContext, ProgramOutput, Template


# ------------------------------------------------------------------------------------------------- bench plugin
def _smooth_bright(ctx: OpContext) -> ProgramOutput:
    from scipy import ndimage

    band = ctx.band("gray") if ctx.has("gray") else ctx.band("red")
    mean = ndimage.uniform_filter(np.nan_to_num(band / 255.0), size=9, mode="nearest")
    ctx.note("mean brightness over 9x9 >= 0.5", share=float((mean >= 0.5).mean()))
    return ProgramOutput(mask=mean >= 0.5, score=np.clip(mean, 0, 1))


class BenchPlugin:
    """One analytic template, so the benchmark needs no other plugin."""

    @hookimpl
    def rscore_query_templates(self) -> list[Template]:
        return [
            Template(
                "bright", "bright region", "regions whose 9x9 mean brightness is at least half",
                ("bright spots", "bright regions"), program=_smooth_bright, explain="mean(9x9) >= 0.5", halo=4,
            )
        ]


def bench_image(size: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 80, (size, size)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for k in range(12):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(size // 40 + 2, size // 10 + 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 200 + k
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------- server
def run_server(args: argparse.Namespace) -> None:
    """``--serve`` mode: the service in this process (what the benchmark starts as a subprocess)."""
    import logging

    from rscore.plugins import get_plugin_manager, get_registry
    from rscore.service import Settings, serve

    logging.basicConfig(level=logging.WARNING)
    if args.plugin == "bench":
        registry = get_registry(get_plugin_manager(entry_points=False, extra=[("bench", BenchPlugin())]))
    else:
        registry = get_registry()
    settings = Settings(
        output_root=Path(args.output_root), workers=args.workers, queue_size=args.queue_size,
        request_timeout_s=args.timeout_s,
    )
    serve("127.0.0.1", args.port, settings=settings, registry=registry, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, plugin: str, workers: int, queue_size: int, timeout_s: float, output_root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, __file__, "--serve", "--port", str(self.port), "--plugin", plugin,
            "--workers", str(workers), "--queue-size", str(queue_size), "--timeout-s", str(timeout_s),
            "--output-root", str(output_root),
        ]
        self.proc = subprocess.Popen(cmd)

    def wait_ready(self, timeout_s: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the service exited with code {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the service did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------------------------------- client
@dataclass
class Outcome:
    status: int  # final status, 0 = transport error
    latency_s: float  # first send to final answer, retries and waits included
    tries: int
    error: str = ""


@dataclass
class Report:
    scenario: str
    requests: int
    workers: int
    queue_size: int
    wall_s: float
    final_status: dict[str, int]
    final_5xx: int
    responses_503_seen: int
    transport_errors: int
    ok_latency_s: dict[str, float]
    refused_latency_s: dict[str, float]
    throughput_ok_per_s: float
    healthz_latency_ms: dict[str, float]
    notes: list[str] = field(default_factory=list)


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float]:
    if not values:
        return {}
    v = np.asarray(values) * scale
    return {
        "p50": round(float(np.percentile(v, 50)), 3),
        "p90": round(float(np.percentile(v, 90)), 3),
        "p99": round(float(np.percentile(v, 99)), 3),
        "max": round(float(v.max()), 3),
        "mean": round(float(statistics.fmean(v)), 3),
    }


async def one_request(client, files: dict, data: dict, retry: bool, max_tries: int, seen_503: list[int]) -> Outcome:
    import httpx

    t0 = time.perf_counter()
    tries = 0
    while True:
        tries += 1
        try:
            r = await client.post("/v1/segment", files=files, data=data)
        except httpx.HTTPError as exc:
            return Outcome(0, time.perf_counter() - t0, tries, f"{type(exc).__name__}: {exc}")
        if r.status_code == 503:
            seen_503.append(1)
            if retry and tries < max_tries:
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                continue
        error = "" if r.status_code == 200 else r.text[:200]
        return Outcome(r.status_code, time.perf_counter() - t0, tries, error)


async def poll_health(url: str, stop: asyncio.Event, out: list[float]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                await client.get("/healthz")
                out.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)


async def fire(url: str, n: int, payload: tuple[str, bytes], data: dict, retry: bool, max_tries: int, timeout_s: float):
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    seen_503: list[int] = []
    health: list[float] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s + 30, limits=limits) as client:
        poller = asyncio.create_task(poll_health(url, stop, health))
        t0 = time.perf_counter()
        files = {"file": payload}
        outcomes = await asyncio.gather(*(one_request(client, files, data, retry, max_tries, seen_503) for _ in range(n)))
        wall = time.perf_counter() - t0
        stop.set()
        await poller
    return outcomes, wall, len(seen_503), health


def scenario(name: str, args: argparse.Namespace, payload: tuple[str, bytes], data: dict, out_root: Path) -> Report:
    queue = args.requests if name == "deep" else args.queue_size
    timeout_s = max(args.timeout_s, 600.0) if name == "deep" else args.timeout_s
    server = Server(args.plugin, args.workers, queue, timeout_s, out_root / name)
    try:
        server.wait_ready()
        # warm-up: loads the matcher (text embeddings, when installed) and the plugin's code paths
        asyncio.run(fire(server.url, 1, payload, data, True, 5, timeout_s))
        outcomes, wall, seen_503, health = asyncio.run(
            fire(server.url, args.requests, payload, data, name != "burst", args.max_tries, timeout_s)
        )
    finally:
        server.stop()
    status = Counter(o.status for o in outcomes)
    ok = [o.latency_s for o in outcomes if o.status == 200]
    refused = [o.latency_s for o in outcomes if o.status == 503]
    notes = sorted({f"{o.status}: {o.error}" for o in outcomes if o.status not in (200, 503)})[:5]
    return Report(
        scenario=name,
        requests=args.requests,
        workers=args.workers,
        queue_size=queue,
        wall_s=round(wall, 3),
        final_status={str(k): v for k, v in sorted(status.items())},
        final_5xx=sum(v for k, v in status.items() if k >= 500),
        responses_503_seen=seen_503,
        transport_errors=status.get(0, 0),
        ok_latency_s=percentiles(ok),
        refused_latency_s=percentiles(refused),
        throughput_ok_per_s=round(len(ok) / wall, 2) if wall else 0.0,
        healthz_latency_ms=percentiles(health, 1000.0),
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200, help="concurrent requests per scenario (default 200)")
    p.add_argument("--scenarios", default="burst,retry,deep", help="comma-separated: burst, retry, deep")
    p.add_argument("--plugin", choices=("auto", "earth", "bench"), default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--timeout-s", type=float, default=300.0)
    p.add_argument("--max-tries", type=int, default=1000, help="retry scenario: tries per request at most")
    p.add_argument("--size", type=int, default=512, help="bench plugin: image side in pixels")
    p.add_argument("--json", action="store_true", help="print one JSON report per scenario")
    # server mode (internal)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--output-root", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plugin == "auto":
        args.plugin = "earth" if importlib.util.find_spec("rscore_earth") else "bench"
    if args.serve:
        run_server(args)
        return 0

    if args.plugin == "earth":
        from rscore_earth.synthetic import example_path

        path = Path(example_path())
        payload, data = (path.name, path.read_bytes()), {"query": "landslide-prone areas", "plugin": "earth"}
    else:
        payload, data = ("bench.png", bench_image(args.size)), {"query": "bright spots", "plugin": "bench"}
    print(
        f"# {args.requests} concurrent POST /v1/segment, plugin {args.plugin} ({payload[0]}, {len(payload[1]):,} bytes), "
        f"{args.workers} workers, {os.cpu_count()} CPUs", file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="rscore-bench-") as tmp:
        for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            if name not in ("burst", "retry", "deep"):
                p.error(f"unknown scenario '{name}'")
            report = scenario(name, args, payload, data, Path(tmp))
            if args.json:
                print(json.dumps(asdict(report)))
            else:
                print_report(report)
    return 0


def print_report(r: Report) -> None:
    print(f"\n== {r.scenario}: {r.requests} requests, {r.workers} workers, queue {r.queue_size} ==")
    print(f"wall {r.wall_s:.2f} s; final status {r.final_status}; final 5xx {r.final_5xx}; "
          f"503 answers seen {r.responses_503_seen}; transport errors {r.transport_errors}")
    if r.ok_latency_s:
        print(f"200 latency s   {r.ok_latency_s}  ({r.throughput_ok_per_s} ok/s)")
    if r.refused_latency_s:
        print(f"503 latency s   {r.refused_latency_s}")
    print(f"/healthz ms     {r.healthz_latency_ms}")
    for note in r.notes:
        print(f"  {note}")


if __name__ == "__main__":
    sys.exit(main())
