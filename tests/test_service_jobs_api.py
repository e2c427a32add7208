"""Batch jobs over HTTP beyond test_service.py: ``GET /v1/jobs`` (recent jobs with state, flow and counts, newest
first) and a ``flow`` that is a plain string checked against the runner's flows, so a flow the job runner offers
beyond the built-in ones (a plugin's) is accepted and described in the OpenAPI document."""

from __future__ import annotations

import importlib.util
import io
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from rscore.errors import OptionError
from rscore.service import ServerThread, Settings, create_app
from rscore.service.jobs import JobItem, JobSpec, JobStatus
from service_helpers import Services

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi")


def png(value: int) -> bytes:
    img = np.zeros((24, 24), np.uint8)
    img[4:12, 4:12] = value
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(png(250))
    (root / "b.png").write_bytes(png(0))
    (root / "bad.png").write_bytes(b"not an image")
    return root


@pytest.fixture
def server(tmp_path: Path, roots: Path, demo_registry) -> Iterator[Callable[..., httpx.Client]]:
    services = Services()

    def start(**overrides: Any) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 1, "queue_size": 4,
                  "job_runner": "inprocess"}  # fmt: skip
        return services.start(demo_registry, **{**kwargs, **overrides})

    yield start
    services.stop_all()


def wait_done(client: httpx.Client, url: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {url} did not finish")


def test_jobs_listing_newest_first_with_counts_and_links(server):
    client = server()
    assert client.get("/v1/jobs").json() == {"runner": "in-process", "flows": ["segment-batch"], "jobs": []}
    first = client.post("/v1/jobs", json={"inputs": ["a.png", "bad.png"], "query": "bright spots", "plugin": "demo"})
    second = client.post("/v1/jobs", json={"inputs": ["a.png", "b.png"], "query": "bright spots"})
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    for r in (first, second):
        wait_done(client, r.json()["url"])
    listing = client.get("/v1/jobs").json()
    assert [j["id"] for j in listing["jobs"]] == [second.json()["id"], first.json()["id"]]  # newest first
    newest, oldest = listing["jobs"]
    assert newest["state"] == "succeeded" and newest["counts"] == {"succeeded": 2} and newest["inputs"] == 2
    assert oldest["state"] == "partial" and oldest["counts"] == {"succeeded": 1, "failed": 1}
    assert oldest["flow"] == "segment-batch" and oldest["plugin"] == "demo" and oldest["query"] == "bright spots"
    assert oldest["finished"] and oldest["url"].endswith("/v1/jobs/" + oldest["id"])
    detail = client.get(oldest["url"]).json()  # the listing's link leads to the per-input results
    assert client.get(detail["items"][0]["links"]["mask"]).content.startswith(b"\x89PNG")
    assert [j["id"] for j in client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]] == [newest["id"]]
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 10_000}).status_code == 422


def test_jobs_listing_needs_the_key(server):
    client = server(api_keys=("k" * 20,))
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"X-API-Key": "k" * 20}).status_code == 200


class PluginFlowRunner:
    """A job runner offering a flow beyond the built-in ones (as a flow registered by a plugin would be)."""

    name = "test-runner"
    flows = ("segment-batch", "acme-survey")

    def __init__(self) -> None:
        self.specs: list[JobSpec] = []
        self.jobs: dict[str, JobStatus] = {}
        self.lock = threading.Lock()

    def submit(self, spec: JobSpec) -> JobStatus:
        with self.lock:
            self.specs.append(spec)
            job = JobStatus(
                id=f"{len(self.specs):032x}", state="succeeded", runner=self.name, query=spec.query, plugin=spec.plugin,
                submitted="2026-12-05T00:00:00+00:00", finished="2026-12-05T00:00:01+00:00", flow=spec.flow,
                items=tuple(JobItem(input=p.name, state="succeeded") for p in spec.inputs),
            )  # fmt: skip
            self.jobs[job.id] = job
            return job

    def status(self, job_id: str) -> JobStatus | None:
        return self.jobs.get(job_id)

    def stats(self) -> Mapping[str, Any]:
        return {"runner": self.name, "flows": list(self.flows)}

    def close(self) -> None:
        pass


def test_a_flow_the_runner_offers_is_accepted_and_documented(tmp_path: Path, roots: Path, demo_registry, monkeypatch):
    import rscore.service.routes.jobs as routes

    builtin_check = routes.check_flow_options

    def check(flow: str, options: Mapping[str, Any], resolve_path: Any, **kw: Any) -> dict[str, Any]:
        """The flow checker, knowing the plugin's flow as a flow registry would (that registry is tested itself)."""
        if flow != "acme-survey":
            return builtin_check(flow, options, resolve_path, **kw)
        if set(options) - {"passes"} or not isinstance(options.get("passes", 1), int):
            raise OptionError(f"flow_options: flow '{flow}' takes passes (a whole number)")
        return dict(options)

    monkeypatch.setattr(routes, "check_flow_options", check)
    runner = PluginFlowRunner()
    settings = Settings(output_root=tmp_path / "out", allowed_roots=(roots,), workers=1)
    thread = ServerThread(create_app(settings, registry=demo_registry, job_runner=runner))
    try:
        with httpx.Client(base_url=thread.start(), timeout=30) as client:
            flow = client.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]["properties"]["flow"]
            assert "enum" not in str(flow) and "acme-survey" in flow["description"], flow  # no closed list
            body = {"inputs": ["a.png"], "query": "bright spots", "flow": "acme-survey", "flow_options": {"passes": 2}}
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            assert r.json()["flow"] == "acme-survey" and runner.specs[-1].flow_options == {"passes": 2}
            r = client.post("/v1/jobs", json={**body, "flow": "acme-surveys"})
            assert r.status_code == 400 and "acme-survey" in r.json()["error"] and "test-runner" in r.json()["error"]
            assert len(runner.specs) == 1  # refused before the runner saw it
            r = client.post("/v1/jobs", json={**body, "flow_options": {"passes": "two"}})
            assert r.status_code == 400 and "passes" in r.json()["error"] and len(runner.specs) == 1
            listing = client.get("/v1/jobs").json()
            assert listing["flows"] == ["segment-batch", "acme-survey"] and listing["jobs"][0]["flow"] == "acme-survey"
            assert listing["jobs"][0]["counts"] == {"succeeded": 1}
    finally:
        thread.stop()
