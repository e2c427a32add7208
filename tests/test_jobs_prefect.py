"""``POST /v1/jobs`` on the Prefect job runner: real flow runs on Prefect's temporary server, the service over HTTP.

The service runs in a uvicorn thread on loopback (as in test_service.py) with the installed plugins; jobs use the
bundled earth example DEM. One temporary Prefect server serves the module (the one tests/test_flows.py started is
reused when it is still up in the same session: starting one takes 8-20 s).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("prefect")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
rscore_earth = pytest.importorskip("rscore_earth")

from rscore.engine import default_registry  # noqa: E402
from rscore.errors import OptionError  # noqa: E402
from rscore.service import ServerThread, Settings, create_app  # noqa: E402
from rscore.service.jobs import InProcessJobRunner, make_job_runner  # noqa: E402

EXAMPLE_DEM = Path(rscore_earth.__file__).parent / "data" / "example_dem.tif"
QUERY = "landslide-prone areas"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """The API URL of a temporary Prefect server: the session's harness if one is up, else one for this module."""
    import os

    import prefect.settings as ps
    from prefect.server.api.server import SubprocessASGIServer

    running = SubprocessASGIServer._instances.get(None)
    if running is not None and running.running and ps.PREFECT_API_URL.value() == running.api_url:
        yield running.api_url  # tests/test_flows.py's session harness
        return
    from prefect.testing.utilities import prefect_test_harness

    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=timeout):
            yield ps.PREFECT_API_URL.value()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(EXAMPLE_DEM, root / "a.tif")
    shutil.copy(EXAMPLE_DEM, root / "b.tif")
    (root / "bad.tif").write_bytes(b"this is not a GeoTIFF at all")
    return root


@pytest.fixture
def service(prefect_api: str, tmp_path: Path, roots: Path) -> Iterator[Callable[..., httpx.Client]]:
    """``service(**settings) -> httpx.Client`` on a fresh service whose jobs are Prefect flow runs."""
    started: list[tuple[ServerThread, httpx.Client]] = []

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 2, "queue_size": 4,
                  "job_runner": "prefect"}  # fmt: skip
        kwargs.update(overrides)
        app = create_app(Settings(**kwargs), registry=default_registry())
        thread = ServerThread(app)
        client = httpx.Client(base_url=thread.start(), timeout=30)
        client.app = app  # type: ignore[attr-defined]
        started.append((thread, client))
        return client

    yield start
    for thread, client in started:
        client.close()
        thread.stop()


def prefect_client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def wait_done(client: httpx.Client, url: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get(url)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] not in ("queued", "running"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job not done in {timeout_s} s: {job}")
        time.sleep(0.25)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    for word in words:
        assert word in body["error"], body["error"]


def service_runs(flow_name: str | None = None) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with prefect_client() as c:
        runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["rscore-service"])))
    return [r for r in runs if flow_name is None or f"flow:{flow_name}" in r.tags]


# ------------------------------------------------------------------------------------------------------------ tests
def test_job_is_a_prefect_flow_run_with_downloadable_results_per_input(service, roots: Path, tmp_path: Path):
    client = service()
    r = client.post("/v1/jobs", json={"inputs": ["a.tif", str(roots / "b.tif")], "query": QUERY, "plugin": "earth"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["runner"] == "prefect" and job["flow"] == "segment-batch" and job["state"] == "queued"
    assert [i["state"] for i in job["items"]] == ["queued", "queued"]
    run_id = uuid.UUID(job["id"])  # the job id is the flow run id, readable through the Prefect API
    with prefect_client() as c:
        run = c.read_flow_run(run_id)
    assert "rscore-service" in run.tags and run.parameters["inputs"] == [str(roots / "a.tif"), str(roots / "b.tif")]
    assert run.parameters["query"] == QUERY and run.parameters["plugin"] == "earth"

    job = wait_done(client, job["url"])
    assert job["state"] == "succeeded", job
    assert job["started"] and job["finished"] and job["message"] is None
    with prefect_client() as c:
        run = c.read_flow_run(run_id)
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert run.state.type.value == "COMPLETED"
    assert sorted(t.name for t in tasks) == ["input-0", "input-1"]
    assert {t.state.type.value for t in tasks} == {"COMPLETED"}
    result_ids = set()
    for item in job["items"]:
        assert item["state"] == "succeeded" and item["error"] is None and item["absent"] is False
        assert item["instance_count"] > 0 and item["seconds"] > 0
        result_ids.add(item["result_id"])
        mask = client.get(item["links"]["mask_cog"])
        assert mask.status_code == 200 and mask.content[:4] in TIFF_MAGIC
        doc = client.get(item["links"]["result"]).json()
        assert doc["summary"]["instance_count"] == item["instance_count"] and doc["query"] == QUERY
        assert client.get(f"/v1/results/{item['result_id']}").json()["links"] == item["links"]
    assert len(result_ids) == 2 and all((tmp_path / "out" / rid / "map.png").is_file() for rid in result_ids)

    # Nothing is kept in the service's memory: a restarted service reports the same job from the Prefect API.
    again = service()
    assert again.get(job["url"]).json()["items"] == job["items"]
    assert_error(again.get(f"/v1/jobs/{uuid.uuid4()}"), 404)
    assert_error(again.get("/v1/jobs/not-a-flow-run-id"), 404)
    health = again.get("/healthz").json()["jobs"]
    assert health["runner"] == "prefect" and "segment-batch" in health["flows"]


def test_a_failing_input_is_a_failed_item_and_the_others_succeed(service, roots: Path):
    client = service()
    r = client.post("/v1/jobs", json={"inputs": ["bad.tif", "a.tif"], "query": QUERY, "plugin": "earth"})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["url"])
    assert job["state"] == "partial", job
    bad, good = job["items"]
    assert bad["state"] == "failed" and bad["links"] == {} and bad["result_id"] is None
    assert "bad.tif" in bad["error"] and "InputError" in bad["error"]
    assert good["state"] == "succeeded" and client.get(good["links"]["map_png"]).content.startswith(b"\x89PNG")
    with prefect_client() as c:
        assert c.read_flow_run(uuid.UUID(job["id"])).state.type.value == "COMPLETED"  # the run goes on: partial

    # every input failing fails the flow run itself
    r = client.post("/v1/jobs", json={"inputs": ["bad.tif"], "query": QUERY, "plugin": "earth"})
    job = wait_done(client, r.json()["url"])
    assert job["state"] == "failed" and "every input failed" in job["message"], job
    assert job["items"][0]["state"] == "failed"
    with prefect_client() as c:
        assert c.read_flow_run(uuid.UUID(job["id"])).state.type.value == "FAILED"


def test_bad_requests_are_4xx_and_submit_nothing(service, roots: Path, tmp_path: Path):
    client = service()
    before = len(service_runs())
    outside = tmp_path / "elsewhere.tif"
    shutil.copy(EXAMPLE_DEM, outside)
    post = lambda **body: client.post("/v1/jobs", json={"inputs": ["a.tif"], "query": QUERY, **body})  # noqa: E731
    assert_error(post(inputs=[str(outside)]), 403, "outside")
    assert_error(post(inputs=["../elsewhere.tif"]), 403)
    assert_error(post(inputs=[]), 422, "inputs")
    assert_error(post(plugin="nope"), 400, "nope")
    assert_error(post(query="   "), 422)
    assert_error(post(flow="no-such-flow"), 422, "flow")
    assert_error(post(flow_options={"batch_tiles": 2}), 400, "segment-batch")
    assert_error(post(flow="landslide-risk-mapping", flow_options={"dask_address": "tcp://x:1"}), 400, "dask_address")
    assert_error(post(flow="landslide-risk-mapping", options={"reasoner": "openai"}), 400, "analytic")
    assert_error(post(flow="scaffold-compliance", plugin="earth"), 400, "safety")
    assert_error(post(flow="scaffold-compliance", flow_options={"zones": str(outside)}), 403, "zones")
    assert_error(post(options={"aux": "/etc/passwd"}), 403)
    assert_error(post(options={"weights": "/models"}), 400, "operator")
    assert len(service_runs()) == before  # nothing reached Prefect


def test_full_job_queue_is_503_with_retry_after(service, roots: Path, monkeypatch):
    client = service(job_workers=1, queue_size=1)  # one job runs, one waits, the third is refused
    runner = client.app.state.jobs  # type: ignore[attr-defined]
    gate = threading.Event()
    real = runner._execute

    def held(*args, **kwargs):
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_execute", held)
    before = len(service_runs())
    spec = {"inputs": ["a.tif"], "query": QUERY, "plugin": "earth"}
    try:
        first, second = (client.post("/v1/jobs", json=spec) for _ in range(2))
        assert first.status_code == second.status_code == 202, (first.text, second.text)
        third = client.post("/v1/jobs", json=spec)
        assert_error(third, 503, "queue is full")
        assert int(third.headers["retry-after"]) >= 1
        assert len(service_runs()) == before + 2  # the refused job created no flow run
        assert client.get(second.json()["url"]).json()["state"] == "queued"  # Scheduled in Prefect, waiting here
        with prefect_client() as c:
            assert c.read_flow_run(uuid.UUID(second.json()["id"])).state.type.value == "SCHEDULED"
    finally:
        gate.set()
    for r in (first, second):
        assert wait_done(client, r.json()["url"])["state"] == "succeeded"
    assert client.post("/v1/jobs", json=spec).status_code == 202  # room again


def test_landslide_flow_job_reports_regions_and_the_summary(service, roots: Path):
    client = service()
    r = client.post("/v1/jobs", json={"inputs": ["a.tif", "bad.tif"], "query": QUERY, "flow": "landslide-risk-mapping",
                                      "options": {"tile_size": 256}, "flow_options": {"batch_tiles": 1}})  # fmt: skip
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["url"])
    assert job["flow"] == "landslide-risk-mapping" and job["state"] == "partial", job
    assert set(job["links"]) == {"summary", "report"}
    summary = client.get(job["links"]["summary"]).json()
    assert summary["flow_run_id"] == job["id"] and summary["tile_size"] == 256 and summary["batch_tiles"] == 1
    assert "Landslide-risk mapping" in client.get(job["links"]["report"]).text
    good, bad = job["items"]
    assert good["state"] == "succeeded" and good["result_id"] == job["result_id"]
    assert client.get(good["links"]["mask_cog"]).content[:4] in TIFF_MAGIC
    assert bad["state"] == "failed" and "bad.tif" in bad["error"] and bad["links"] == {}


def test_runner_choice(prefect_api: str, tmp_path: Path, monkeypatch):
    out, reg = tmp_path / "out", default_registry()
    auto = make_job_runner(Settings(output_root=out), out, reg)
    try:
        assert auto.name == "prefect" and auto.api_url == prefect_api  # Prefect installed and PREFECT_API_URL set
    finally:
        auto.close()
    assert isinstance(make_job_runner(Settings(output_root=out, job_runner="inprocess"), out, reg), InProcessJobRunner)
    import rscore.service.jobs as jobs

    monkeypatch.setattr(jobs, "prefect_api_url", lambda: None)
    fallback = make_job_runner(Settings(output_root=out), out, reg)
    assert fallback.name == "in-process" and "PREFECT_API_URL" in fallback.stats()["reason"]
    with pytest.raises(OptionError, match="PREFECT_API_URL"):
        make_job_runner(Settings(output_root=out, job_runner="prefect"), out, reg)
    with pytest.raises(OptionError, match="RSCORE_JOB_RUNNER"):
        Settings.from_env({"RSCORE_JOB_RUNNER": "celery"})
    assert Settings.from_env({"RSCORE_JOB_RUNNER": "in-process", "RSCORE_JOB_WORKERS": "3"}).job_workers == 3


def test_cancelling_in_prefect_stops_a_segment_batch_job(service, roots: Path):
    from prefect.states import Cancelling

    for i in range(6):
        shutil.copy(EXAMPLE_DEM, roots / f"c{i}.tif")
    client = service(workers=1)  # one input at a time
    r = client.post("/v1/jobs", json={"inputs": [f"c{i}.tif" for i in range(6)], "query": QUERY, "plugin": "earth",
                                      "options": {"tile_size": 128}})  # fmt: skip
    assert r.status_code == 202, r.text
    url, run_id = r.json()["url"], uuid.UUID(r.json()["id"])
    deadline = time.monotonic() + 60
    while client.get(url).json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with prefect_client() as c:  # what the Prefect UI's "Cancel" does
        c.set_flow_run_state(run_id, Cancelling(message="cancelled by a user"), force=True)
    job = wait_done(client, url, timeout_s=60)
    assert job["state"] == "cancelled", job
    states = [i["state"] for i in job["items"]]
    assert "cancelled" in states and states[-1] == "cancelled" and set(states) <= {"succeeded", "cancelled"}
    with prefect_client() as c:
        assert c.read_flow_run(run_id).state.type.value == "CANCELLED"
