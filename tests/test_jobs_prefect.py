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
from rscore.service import Settings  # noqa: E402
from service_helpers import Services  # noqa: E402
from rscore.service.jobs import InProcessJobRunner, make_job_runner  # noqa: E402

EXAMPLE_DEM = Path(rscore_earth.__file__).parent / "data" / "example_dem.tif"
QUERY = "landslide-prone areas"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prefect_api(prefect_api_url) -> str:
    """The API URL of the session's temporary Prefect server (tests/conftest.py)."""
    return prefect_api_url


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
    services = Services()

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 2, "queue_size": 4,
                  "job_runner": "prefect"}  # fmt: skip
        return services.start(default_registry(), **{**kwargs, **overrides})

    yield start
    services.stop_all()


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
    assert_error(post(flow="no-such-flow"), 400, "no-such-flow", "segment-batch")  # names the offered flows
    assert_error(post(flow_options={"batch_tiles": 2}), 400, "segment-batch")
    assert_error(post(flow="landslide-risk-mapping", flow_options={"dask_address": "tcp://x:1"}), 400, "dask_address")
    assert_error(post(flow="landslide-risk-mapping", options={"reasoner": "openai"}), 400, "analytic")
    assert_error(post(flow="scaffold-compliance", plugin="earth"), 400, "safety")
    assert_error(post(flow="scaffold-compliance", flow_options={"zones": str(outside)}), 403, "zones")
    assert_error(post(options={"aux": "/etc/passwd"}), 403)
    assert_error(post(options={"weights": "/models"}), 400, "operator")
    # checked at submission, not per item later: -O names and values, typed flow options, the flow's own checks
    assert_error(post(options={"tile_sise": 64}), 400, "did you mean tile_size")
    assert_error(post(options={"slope_min_deg": 200}), 400, "slope_min_deg")
    assert_error(post(flow="scaffold-compliance", flow_options={"stride": 0}), 400, "stride")
    assert_error(post(flow="scaffold-compliance", flow_options={"templates": ["hivs"]}), 400, "hivs")
    assert_error(post(flow="landslide-risk-mapping", flow_options={"batch_tiles": "two"}), 400, "batch_tiles")
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
    chosen = make_job_runner(Settings(output_root=out, job_runner="inprocess"), out, reg)
    try:
        assert isinstance(chosen, InProcessJobRunner)
    finally:
        chosen.close()
    import rscore.service.jobs as jobs

    monkeypatch.setattr(jobs, "prefect_api_url", lambda: None)
    fallback = make_job_runner(Settings(output_root=out), out, reg)
    try:
        assert fallback.name == "in-process" and "PREFECT_API_URL" in fallback.stats()["reason"]
    finally:
        fallback.close()
    with pytest.raises(OptionError, match="PREFECT_API_URL"):
        make_job_runner(Settings(output_root=out, job_runner="prefect"), out, reg)
    with pytest.raises(OptionError, match="RSCORE_JOB_RUNNER"):
        Settings.from_env({"RSCORE_JOB_RUNNER": "celery"})
    assert Settings.from_env({"RSCORE_JOB_RUNNER": "in-process", "RSCORE_JOB_WORKERS": "3"}).job_workers == 3


def record_engine_runs(monkeypatch, hold: str | None = None) -> tuple[list[str], threading.Event, threading.Event]:
    """Patch ``rscore.engine.run`` (what every segment-batch task calls) to record the name of each input it gets;
    the input named ``hold`` waits for the returned ``release`` event (``entered`` is set when it got there)."""
    import rscore.engine

    real = rscore.engine.run
    ran: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def run(path, *args, **kwargs):
        ran.append(Path(path).name)
        if Path(path).name == hold:
            entered.set()
            assert release.wait(60), "the test never released the held input"
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rscore.engine, "run", run)
    return ran, entered, release


def task_runs_of(run_id: uuid.UUID) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client() as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))


def test_cancelling_in_prefect_stops_a_segment_batch_job(service, roots: Path, monkeypatch):
    from prefect.states import Cancelling

    from rscore_flows import segment_batch

    for i in range(4):
        shutil.copy(EXAMPLE_DEM, roots / f"c{i}.tif")
    ran, entered, release = record_engine_runs(monkeypatch, hold="c0.tif")
    client = service(workers=1)  # one input at a time
    r = client.post("/v1/jobs", json={"inputs": [f"c{i}.tif" for i in range(4)], "query": QUERY, "plugin": "earth",
                                      "options": {"tile_size": 128}})  # fmt: skip
    assert r.status_code == 202, r.text
    url, run_id = r.json()["url"], uuid.UUID(r.json()["id"])
    try:
        assert entered.wait(60), "the first input never started"
        assert client.get(url).json()["state"] == "running"
        with prefect_client() as c:  # what the Prefect UI's "Cancel" does
            c.set_flow_run_state(run_id, Cancelling(message="cancelled by a user"), force=True)
        deadline = time.monotonic() + 30  # the runner's watcher turns Cancelling into a stop request
        while not segment_batch._stopping(str(run_id)):
            assert time.monotonic() < deadline, "the runner never asked the flow run to stop"
            time.sleep(0.1)
    finally:
        release.set()  # input 0 goes on into the engine, which stops at its first tile
    job = wait_done(client, url, timeout_s=60)
    assert job["state"] == "cancelled", job
    assert [i["state"] for i in job["items"]] == ["cancelled"] * 4, job["items"]
    assert "cancelled by a user" in job["items"][0]["error"]
    assert ran == ["c0.tif"]  # the later inputs never reached the engine
    with prefect_client() as c:
        assert c.read_flow_run(run_id).state.type.value == "CANCELLED"


def test_a_queued_job_cancelled_or_paused_in_prefect_never_starts(service, roots: Path, monkeypatch):
    from prefect.states import Cancelling, Paused

    ran, _, _ = record_engine_runs(monkeypatch)
    client = service(job_workers=1, queue_size=3)
    runner = client.app.state.jobs  # type: ignore[attr-defined]
    gate = threading.Event()
    real = runner._execute
    calls: list[int] = []

    def held(*args, **kwargs):  # the first job holds the only job thread until the gate opens
        calls.append(1)
        if len(calls) == 1:
            gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_execute", held)

    def post(name: str) -> dict:
        return client.post("/v1/jobs", json={"inputs": [name], "query": QUERY, "plugin": "earth"}).json()

    try:
        blocker = post("bad.tif")  # fails fast once it runs
        cancelled, paused, paused_then_cancelled = post("a.tif"), post("b.tif"), post("a.tif")
        with prefect_client() as c:  # the Prefect UI's "Cancel" and "Pause" on runs still queued in the service
            # a Scheduled run without infrastructure: the Prefect server itself makes Cancelling Cancelled
            c.set_flow_run_state(uuid.UUID(cancelled["id"]), Cancelling(message="cancelled by a user"), force=True)
            c.set_flow_run_state(uuid.UUID(paused["id"]), Paused(message="paused by a user"), force=True)
            run_id = uuid.UUID(paused_then_cancelled["id"])
            c.set_flow_run_state(run_id, Paused(message="paused by a user"), force=True)
            c.set_flow_run_state(run_id, Cancelling(message="cancelled after a pause"), force=True)
            assert c.read_flow_run(run_id).state.type.value == "CANCELLING"  # this one stays Cancelling
        assert client.get(cancelled["url"]).json()["state"] == "cancelled"
        deadline = time.monotonic() + 30  # Cancelling: the watcher cancels it without waiting for a job thread
        while client.get(paused_then_cancelled["url"]).json()["state"] != "cancelled":
            assert time.monotonic() < deadline, client.get(paused_then_cancelled["url"]).json()
            time.sleep(0.2)
        assert client.get(paused["url"]).json()["state"] == "queued"  # Paused: cancelled when its turn comes
    finally:
        gate.set()
    assert wait_done(client, blocker["url"])["state"] == "failed"
    expected = ((cancelled, None), (paused, "paused by a user"), (paused_then_cancelled, "cancelled after a pause"))
    for job, why in expected:
        job = wait_done(client, job["url"])
        assert job["state"] == "cancelled" and job["message"] == why, job
        assert [i["state"] for i in job["items"]] == ["cancelled"], job["items"]
        run_id = uuid.UUID(job["id"])
        with prefect_client() as c:
            assert c.read_flow_run(run_id).state.type.value == "CANCELLED"
        assert task_runs_of(run_id) == []  # Prefect never started it
    assert ran == ["bad.tif"]  # only the blocker's input reached the engine
    assert runner.stats()["queued"] == runner.stats()["running"] == 0


def test_every_input_is_reported_when_task_runs_take_several_pages(service, roots: Path, monkeypatch):
    """The Prefect server answers at most PREFECT_SERVER_API_DEFAULT_LIMIT (200) rows per list query, while a job
    may have up to 1000 inputs: here the server's page is cut to 2 rows, and a job of 5 inputs must still report
    all 5."""
    from prefect.client.orchestration import SyncPrefectClient

    real = SyncPrefectClient.read_task_runs
    pages: list[int] = []

    def capped(self, *, limit=None, **kwargs):  # what a server with PREFECT_SERVER_API_DEFAULT_LIMIT=2 answers
        page = real(self, limit=2 if limit is None else min(limit, 2), **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(SyncPrefectClient, "read_task_runs", capped)
    client = service(workers=2)
    inputs = ["a.tif", "b.tif", "a.tif", "b.tif", "a.tif"]
    r = client.post("/v1/jobs", json={"inputs": inputs, "query": QUERY, "plugin": "earth"})
    assert r.status_code == 202, r.text
    pages.clear()
    job = wait_done(client, r.json()["url"])
    assert job["state"] == "succeeded", job  # not "partial" with inputs 'never run'
    assert [i["state"] for i in job["items"]] == ["succeeded"] * 5
    assert len({i["result_id"] for i in job["items"]}) == 5
    assert len(task_runs_of(uuid.UUID(job["id"]))) == 2  # the cap is real
    assert pages[-4:] == [2, 2, 1, 2], pages  # the last GET read 3 pages (then the check above read one)


def test_a_submit_racing_with_shutdown_leaves_no_flow_run_scheduled(prefect_api: str, roots: Path, tmp_path: Path):
    from rscore.service.jobs import JobSpec
    from rscore.service.pool import QueueFull
    from rscore.service.prefect_jobs import PrefectJobRunner

    spec = JobSpec(inputs=(roots / "a.tif",), query=QUERY, plugin="earth")

    def state(run_id) -> str:
        with prefect_client() as c:
            return c.read_flow_run(run_id).state.type.value

    # close() begins while submit() is creating the flow run, and gets as far as closing the pool
    runner = PrefectJobRunner(tmp_path / "out", default_registry(), api_url=prefect_api)
    at_pool, go = threading.Event(), threading.Event()
    real_pool_close, real_call = runner._pool.close, runner._call
    closer = threading.Thread(target=runner.close)
    created: list = []

    def pool_close(wait: bool = True) -> None:
        at_pool.set()
        go.wait(30)
        real_pool_close(wait=wait)

    def call(what, fn):
        result = real_call(what, fn)
        if what == "create a flow run":
            created.append(result.id)
            closer.start()
            assert at_pool.wait(30)
        return result

    runner._pool.close, runner._call = pool_close, call  # type: ignore[method-assign]
    try:
        with pytest.raises(QueueFull):  # 503: the job would be dropped by the closing pool
            runner.submit(spec)
    finally:
        go.set()
        closer.join(30)
    assert state(created[0]) == "CANCELLED" and runner.stats()["queued"] == 0

    # a job still waiting in the queue when the service stops is set Cancelled; the running one stops first
    runner = PrefectJobRunner(tmp_path / "out", default_registry(), api_url=prefect_api, workers=1)
    gate, real_execute = threading.Event(), runner._execute

    def held(*args, **kwargs):
        gate.wait(30)
        return real_execute(*args, **kwargs)

    runner._execute = held  # type: ignore[method-assign]
    first, second = runner.submit(spec), runner.submit(spec)
    closer = threading.Thread(target=runner.close)
    closer.start()
    time.sleep(0.2)
    gate.set()
    closer.join(30)
    assert not closer.is_alive()
    assert state(uuid.UUID(first.id)) == state(uuid.UUID(second.id)) == "CANCELLED"
    assert runner.stats()["queued"] == runner.stats()["running"] == 0
