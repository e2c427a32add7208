"""The HTTP service over real HTTP: uvicorn on a loopback ephemeral port in a thread, httpx as the client.

The engine runs for real with an in-process plugin (``demo`` from tests/demo_plugin.py plus ``slowtest`` below, whose
templates sleep or block so that queueing and deadlines can be exercised deterministically).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from rscore import hookimpl
from rscore.errors import OptionError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import OpContext, ProgramOutput, Template, Param
from rscore.service import ServerThread, Settings, check_bind, create_app, is_loopback, serve
from service_helpers import Services
from rscore.service.security import safe_relative_path, safe_upload_name

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
    reason="the service needs fastapi, uvicorn and python-multipart",
)

KEY = "k" * 20
GATE = threading.Event()  # released by tests to let 'blocking' programs finish


def _slow(ctx: OpContext) -> ProgramOutput:
    time.sleep(float(ctx.params.get("sleep_s", 0.2)))
    ctx.note("slept", sleep_s=float(ctx.params.get("sleep_s", 0.2)))
    return ProgramOutput(mask=np.ones(ctx.shape, bool))


def _blocking(ctx: OpContext) -> ProgramOutput:
    GATE.wait(timeout=20)
    return ProgramOutput(mask=np.ones(ctx.shape, bool))


class SlowTestPlugin:
    """Templates that take time on purpose."""

    @hookimpl
    def rscore_options(self) -> list[Param]:
        return [Param("sleep_s", "float", "seconds the slow template sleeps per tile", "s", (0, None), 0.2)]

    @hookimpl
    def rscore_query_templates(self) -> list[Template]:
        return [
            Template("slow", "slow thing", "sleeps sleep_s seconds per tile", ("slow things",), program=_slow),
            Template("blocking", "blocked thing", "waits for the test's gate", ("blocked things",), program=_blocking),
        ]


@pytest.fixture(scope="module")
def registry():
    import demo_plugin

    pm = get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin), ("slowtest", SlowTestPlugin())])
    return get_registry(pm)


@pytest.fixture(scope="module")
def demo_only_registry():
    import demo_plugin

    return get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin)]))


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def server(tmp_path: Path, roots: Path, registry) -> Iterator[Callable[..., httpx.Client]]:
    """``server(**settings) -> httpx.Client`` bound to a fresh service; stopped at teardown."""
    services = Services()

    def start(registry=registry, **overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 1, "queue_size": 2,
                  "request_timeout_s": 30, "job_runner": "inprocess"}  # the Prefect runner: test_jobs_prefect.py
        return services.start(registry, **{**kwargs, **overrides})

    yield start
    GATE.set()
    services.stop_all()
    GATE.clear()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bright_png() -> bytes:
    img = np.full((60, 90), 20, np.uint8)
    img[10:30, 20:50] = 230
    img[40:55, 60:85] = 210
    return png_bytes(img)


def upload(client: httpx.Client, content: bytes, query: str = "bright spots", *, name: str = "scene.png", **data):
    return client.post("/v1/segment", files={"file": (name, content, "application/octet-stream")}, data={"query": query, **data})


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def inference(client: httpx.Client) -> dict:
    return client.get("/healthz").json()["inference"]


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for word in words:
        assert word in body["error"], body["error"]


# ----------------------------------------------------------------------------------------------------- settings
def test_settings_from_env(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    s = Settings.from_env({
        "RSCORE_API_KEYS": f" {KEY} , {'x' * 16}",
        "RSCORE_MAX_UPLOAD_MB": "2.5",
        "RSCORE_ALLOWED_ROOTS": f"{a}{os.pathsep}{b}{os.pathsep}",
        "RSCORE_REQUEST_TIMEOUT_S": "7",
        "RSCORE_QUEUE_SIZE": "3",
        "RSCORE_WORKERS": "2",
        "RSCORE_OUTPUT_ROOT": str(tmp_path / "out"),
    })
    assert s.api_keys == (KEY, "x" * 16) and s.auth_required
    assert s.max_upload_bytes == int(2.5 * 2**20)
    assert s.allowed_roots == (a.resolve(), b.resolve())
    assert (s.request_timeout_s, s.queue_size, s.workers) == (7.0, 3, 2)
    assert s.output_root == (tmp_path / "out").resolve()
    assert KEY not in repr(s)
    d = Settings.from_env({})
    assert not d.auth_required and d.allowed_roots == () and 1 <= d.workers <= 2


@pytest.mark.parametrize(
    "env, words",
    [
        ({"RSCORE_API_KEYS": "short"}, "RSCORE_API_KEYS"),
        ({"RSCORE_WORKERS": "two"}, "RSCORE_WORKERS"),
        ({"RSCORE_WORKERS": "0"}, "RSCORE_WORKERS"),
        ({"RSCORE_MAX_UPLOAD_MB": "-1"}, "RSCORE_MAX_UPLOAD_MB"),
        ({"RSCORE_QUEUE_SIZE": "1.5"}, "RSCORE_QUEUE_SIZE"),
        ({"RSCORE_ALLOWED_ROOTS": "/no/such/folder/anywhere"}, "RSCORE_ALLOWED_ROOTS"),
        ({"RSCORE_JOB_RUNNER": "celery"}, "RSCORE_JOB_RUNNER"),
        ({"RSCORE_JOB_WORKERS": "0"}, "RSCORE_JOB_WORKERS"),
    ],
)
def test_settings_errors_name_the_variable(env, words):
    with pytest.raises(OptionError, match=words):
        Settings.from_env(env)


def test_serve_refuses_non_loopback_without_keys(tmp_path: Path):
    settings = Settings(output_root=tmp_path / "out")
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(OptionError, match="RSCORE_API_KEYS"):
            serve(host, 0, settings=settings)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))
    check_bind("0.0.0.0", Settings(api_keys=(KEY,), output_root=tmp_path / "out"))  # keys: any interface
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_safe_names():
    assert safe_upload_name("../../etc/pass wd.png") == "pass_wd.png"
    assert safe_upload_name("C:\\x\\..\\.bashrc") == "bashrc"
    assert safe_upload_name("") == safe_upload_name(None) == "upload"
    assert safe_relative_path("mask.png") == Path("mask.png")
    assert safe_relative_path("vectors/a.gpkg") == Path("vectors/a.gpkg")
    for bad in ("..", "../x", "a/../../b", ".staging/x", "a//b", "/etc/passwd", "a\\b", ""):
        assert safe_relative_path(bad) is None, bad


# ------------------------------------------------------------------------------------------------------ segment
def test_upload_success_links_download(server, bright_png: bytes):
    client = server()
    r = upload(client, bright_png, name="../my photo.png", plugin="demo")
    assert r.status_code == 200, r.text
    body = r.json()
    doc = body["result"]
    assert doc["template"] == "demo:bright" and not doc["absent"]
    assert doc["summary"]["instance_count"] == 2
    assert [i["bbox"] for i in doc["instances"]] == [[20, 10, 50, 30], [60, 40, 85, 55]]
    assert any("brightness >= 0.5" in s["text"] for s in doc["plan"]["steps"])
    # the document names the client's file, never the server's staging folder
    assert doc["scene"]["path"] == "my_photo.png" and doc["provenance"]["input"] == "my_photo.png"
    assert ".staging" not in r.text and str(client.settings.output_root) not in r.text
    assert set(body["links"]) >= {"mask", "overlay", "result", "count"}
    mask = client.get(body["links"]["mask"])
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert mask.headers["x-content-type-options"] == "nosniff" and "sandbox" in mask.headers["content-security-policy"]
    arr = np.asarray(Image.open(io.BytesIO(mask.content)))
    assert arr.shape == (60, 90) and arr[20, 30] == 255 and arr[0, 0] == 0
    assert client.get(body["links"]["result"]).json() == doc  # the downloadable result.json is what was returned
    assert client.get(body["links"]["count"]).text == "2"
    listing = client.get(f"/v1/results/{body['id']}").json()
    assert listing["links"] == body["links"]
    assert not any((client.settings.output_root / ".staging").glob("*/*"))  # uploads are not kept


def test_content_is_sniffed_not_trusted_from_the_name(server, bright_png: bytes):
    client = server()
    r = upload(client, bright_png, name="notes.txt", plugin="demo")  # a PNG with a misleading name is still read
    assert r.status_code == 200, r.text
    assert_error(upload(client, b"hello, not an image\n" * 10, name="fake.png", plugin="demo"), 422, "fake.png")
    assert_error(upload(client, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, name="broken.png"), 422, "broken.png")
    assert_error(upload(client, b"", name="empty.png"), 422, "empty.png: the file is empty")
    assert_error(upload(client, b"", name=""), 400, "exactly one input")  # what a browser sends for no file


def test_path_input_under_allowed_roots(server, roots: Path, bright_png: bytes):
    (roots / "sub").mkdir()
    (roots / "sub" / "a.png").write_bytes(bright_png)
    client = server()
    for given in (str(roots / "sub" / "a.png"), "sub/a.png", "sub/../sub/a.png"):
        r = client.post("/v1/segment", data={"query": "bright spots", "plugin": "demo", "path": given})
        assert r.status_code == 200, (given, r.text)
        assert r.json()["result"]["scene"]["path"] == str((roots / "sub" / "a.png").resolve())
    assert_error(client.post("/v1/segment", data={"query": "bright spots", "path": "sub/missing.png"}), 422, "no such file")


def test_path_traversal_and_symlink_escape_are_403(server, roots: Path, tmp_path: Path, bright_png: bytes):
    secret = tmp_path / "secret.png"
    secret.write_bytes(bright_png)
    (roots / "link.png").symlink_to(secret)
    (roots / "linkdir").symlink_to(tmp_path)
    client = server()
    for given in ("../secret.png", str(secret), "link.png", "linkdir/secret.png", f"{roots}/../secret.png", "/etc/passwd"):
        r = client.post("/v1/segment", data={"query": "bright spots", "path": given})
        assert_error(r, 403, "outside")
    # a job naming such a path is refused the same way, before anything runs
    r = client.post("/v1/jobs", json={"inputs": ["link.png"], "query": "bright spots"})
    assert_error(r, 403, "inputs[0]")
    # option values that name files are confined too
    r = client.post("/v1/segment", data={"query": "bright spots", "path": "x.png", "options": json.dumps({"aux": "../secret.png"})})
    assert_error(r, 403, "aux")
    # without allowed roots, server-side paths are off altogether
    no_roots = server(allowed_roots=())
    assert_error(no_roots.post("/v1/segment", data={"query": "bright spots", "path": "a.png"}), 403, "RSCORE_ALLOWED_ROOTS")


def test_api_keys(server, bright_png: bytes):
    client = server(api_keys=(KEY,))
    assert_error(client.get("/v1/plugins"), 401, "X-API-Key")
    assert_error(client.get("/v1/plugins", headers={"X-API-Key": KEY + "x"}), 401)
    assert client.get("/v1/plugins", headers={"X-API-Key": KEY}).status_code == 200
    # refused before the body is read: a huge body without a key is 401, not 413
    r = client.post("/v1/segment", content=b"x" * (4 << 20), headers={"content-type": "application/octet-stream"})
    assert_error(r, 401)
    r = upload(client, bright_png, plugin="demo", )
    assert_error(r, 401)
    r = client.post("/v1/segment", headers={"X-API-Key": KEY}, files={"file": ("a.png", bright_png)},
                    data={"query": "bright spots", "plugin": "demo"})
    assert r.status_code == 200, r.text
    link = r.json()["links"]["mask"]
    assert_error(client.get(link), 401)  # results are protected too
    assert client.get(link, headers={"X-API-Key": KEY}).status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["auth"] is True
    assert client.get("/").status_code == 200
    schema = client.get("/openapi.json").json()  # public, and documents the key
    assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])
    assert all(op.get("security") for path, ops in schema["paths"].items() if path.startswith("/v1/") for op in ops.values())


def test_upload_limit_is_413(server):
    client = server(max_upload_mb=0.05)  # 51 kB; the body may carry 1 MiB more of form fields
    big = b"\x89PNG\r\n\x1a\n" + bytes(200_000)
    assert_error(upload(client, big, name="big.png"), 413, "upload limit")
    huge = bytes(3 << 20)
    assert_error(upload(client, huge, name="huge.png"), 413, "upload limit")  # Content-Length over the body limit

    def chunks():  # no Content-Length: counted while it streams in
        boundary = b"--b\r\n"
        yield boundary + b'Content-Disposition: form-data; name="query"\r\n\r\nbright spots\r\n'
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="c.png"\r\n\r\n'
        for _ in range(40):
            yield bytes(64 << 10)
        yield b"\r\n--b--\r\n"

    r = client.post("/v1/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "upload limit")
    assert inference(client)["completed"] == 0  # nothing reached the engine


def test_unknown_plugin_and_bad_requests_are_4xx(server, bright_png: bytes):
    client = server()
    assert_error(upload(client, bright_png, plugin="nope"), 400, "unknown plugin 'nope'")
    assert_error(client.get("/v1/templates", params={"plugin": "nope"}), 400, "nope")
    assert_error(upload(client, bright_png, query="   "), 422, "query")
    assert_error(upload(client, bright_png, options="{not json"), 400, "options")
    assert_error(upload(client, bright_png, options="[1, 2]"), 400, "JSON object")
    assert_error(upload(client, bright_png, options=json.dumps({"endpoint": "http://10.0.0.1/"})), 400, "endpoint")
    assert_error(upload(client, bright_png, options=json.dumps({"tile_size": 0})), 400, "tile_size")
    assert_error(upload(client, bright_png, options=json.dumps({"tile_size": "abc"})), 400, "tile_size")
    r = client.post("/v1/segment", files={"file": ("a.png", bright_png)}, data={"query": "bright spots", "path": "a.png"})
    assert_error(r, 400, "exactly one input")
    assert_error(client.post("/v1/segment", data={"query": "bright spots"}), 400, "exactly one input")
    assert_error(client.post("/v1/segment", data={"path": "a.png"}), 422, "query")
    assert_error(client.post("/v1/jobs", json={"inputs": [], "query": "q"}), 422, "inputs")
    assert_error(client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}), 422)
    assert inference(client)["completed"] == 0
    # an answerable query with no match is a 200 'absent' answer, not an error
    r = upload(client, bright_png, query="the cat", plugin="demo")
    assert r.status_code == 200 and r.json()["result"]["absent"] is True


def test_results_endpoint_serves_only_result_files(server, bright_png: bytes):
    client = server()
    rid = upload(client, bright_png, plugin="demo").json()["id"]
    assert_error(client.get(f"/v1/results/{rid}/nothing.png"), 404)
    assert_error(client.get(f"/v1/results/{rid}/%2e%2e/%2e%2e/etc/passwd"), 400)
    assert_error(client.get(f"/v1/results/{rid}/.hidden"), 400)
    assert_error(client.get("/v1/results/.staging/x"), 404)
    assert_error(client.get("/v1/results/" + "0" * 32 + "/mask.png"), 404)
    assert_error(client.get("/v1/results/not-an-id"), 404)


def test_queue_full_is_503_with_retry_after(server, bright_png: bytes):
    client = server(workers=1, queue_size=1)
    blocked = {"query": "blocked things", "plugin": "slowtest"}
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(upload, client, bright_png, **blocked)
        wait_for(lambda: inference(client)["running"] == 1)
        second = ex.submit(upload, client, bright_png, **blocked)
        wait_for(lambda: inference(client)["waiting"] == 1)
        third = upload(client, bright_png, **blocked)
        assert_error(third, 503, "queue is full")
        assert int(third.headers["retry-after"]) >= 1
        assert inference(client)["rejected"] == 1
        GATE.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert upload(client, bright_png, plugin="demo").status_code == 200  # capacity is back


def test_timeout_is_504_and_stops_the_work(server):
    client = server(request_timeout_s=0.6, workers=1)
    big = png_bytes(np.full((256, 256), 200, np.uint8))
    options = json.dumps({"sleep_s": 0.25, "tile_size": 64})  # 16 tiles x 0.25 s = 4 s of work
    t0 = time.monotonic()
    r = upload(client, big, "slow things", plugin="slowtest", options=options)
    assert_error(r, 504, "did not finish within 0.6 s")
    assert time.monotonic() - t0 < 3
    wait_for(lambda: inference(client)["running"] == 0, timeout_s=2)  # stopped at a tile boundary, not after 4 s
    assert time.monotonic() - t0 < 2.5
    out = client.settings.output_root
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []  # no half-finished result is left
    assert not any((out / ".staging").iterdir())


def test_jobs_run_in_process_and_report_per_input(server, roots: Path, bright_png: bytes):
    (roots / "a.png").write_bytes(bright_png)
    (roots / "b.png").write_bytes(png_bytes(np.zeros((20, 20), np.uint8)))
    (roots / "bad.png").write_bytes(b"not an image at all")
    client = server()
    r = client.post("/v1/jobs", json={"inputs": ["a.png", "b.png", "bad.png"], "query": "bright spots", "plugin": "demo"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["runner"] == "in-process" and job["state"] in ("queued", "running") and len(job["items"]) == 3
    assert job["flow"] == "segment-batch" and job["links"] == {}
    wait_for(lambda: client.get(job["url"]).json()["state"] not in ("queued", "running"))
    job = client.get(job["url"]).json()
    assert job["state"] == "partial", job
    a, b, bad = job["items"]
    assert a["state"] == "succeeded" and a["instance_count"] == 2 and a["absent"] is False
    assert b["state"] == "succeeded" and b["absent"] is True
    assert bad["state"] == "failed" and "bad.png" in bad["error"] and bad["links"] == {}
    mask = client.get(a["links"]["mask"])
    assert mask.status_code == 200 and mask.content.startswith(b"\x89PNG")
    assert client.get(a["links"]["result"]).json()["summary"]["instance_count"] == 2
    assert_error(client.get("/v1/jobs/" + "f" * 32), 404)
    assert_error(client.post("/v1/jobs", json={"inputs": ["a.png"], "query": "q", "plugin": "nope"}), 400, "nope")
    scheduled = {"inputs": ["a.png"], "query": "q", "flow": "landslide-risk-mapping"}
    assert_error(client.post("/v1/jobs", json=scheduled), 400, "RSCORE_JOB_RUNNER=prefect")
    assert client.get("/healthz").json()["jobs"]["flows"] == ["segment-batch"]


def test_jobs_queue_is_bounded(server, roots: Path, bright_png: bytes):
    (roots / "a.png").write_bytes(bright_png)
    client = server(queue_size=1)  # the in-process job runner: 1 worker + 1 pending
    spec = {"inputs": ["a.png"], "query": "blocked things", "plugin": "slowtest"}
    first, second = (client.post("/v1/jobs", json=spec) for _ in range(2))
    assert first.status_code == second.status_code == 202
    third = client.post("/v1/jobs", json=spec)
    assert_error(third, 503, "queue is full")
    assert int(third.headers["retry-after"]) >= 1
    GATE.set()
    for job in (first.json(), second.json()):
        wait_for(lambda url=job["url"]: client.get(url).json()["state"] == "succeeded")


def test_plugins_templates_health_docs_and_page(server):
    client = server()
    plugins = {p["name"]: p for p in client.get("/v1/plugins").json()}
    assert plugins["core"]["core"] is True and plugins["demo"]["templates"] == 4
    templates = client.get("/v1/templates", params={"plugin": "demo"}).json()
    assert {t["qualified_name"] for t in templates} >= {"demo:bright", "demo:vlm-only"}
    assert {t["analytic"] for t in templates} == {True, False}
    by_name = {t["qualified_name"]: t for t in templates}  # each template as a program, as `rscore templates show`
    vlm, bright = by_name["demo:vlm-only"], by_name["demo:bright"]
    assert vlm["program"]["kind"] == "vlm" and vlm["program_text"] == "VLM only"
    assert bright["program"]["kind"] in ("operators", "direct") and bright["program_text"]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["inference"]["workers"] == 1
    schema = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/plugins", "/v1/templates", "/healthz"} <= set(schema["paths"])
    assert "securitySchemes" not in schema["components"]  # no keys configured: none documented
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    for src in ("docs-assets/swagger-ui-bundle.js", "docs-assets/swagger-ui.css"):
        if src in docs.text:  # served locally when fastapi-offline is installed
            assert client.get("/" + src).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("static/app.js", "static/style.css"):
        text = client.get("/" + asset).text
        assert "http://" not in text and "https://" not in text  # nothing from the internet
    assert "https://" not in page.text and "http://" not in page.text


# No 5xx, and every status code, content type, header and body the service sends is the one its schema documents.
# (positive_data_acceptance is left out: "exactly one of file/path" and "the plugin must be installed" are rules a
# schema cannot state, so some schema-valid requests are rightly refused with 400.)
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "response_headers_conformance,negative_data_rejection"
)


@pytest.mark.skipif(importlib.util.find_spec("schemathesis") is None, reason="schemathesis is not installed")
@pytest.mark.parametrize("examples", [25, pytest.param(300, marks=pytest.mark.slow)])
def test_schemathesis_finds_no_server_errors(
    server, demo_only_registry, roots: Path, bright_png: bytes, tmp_path: Path, examples: int
):
    (roots / "a.png").write_bytes(bright_png)
    # without the deliberately slow test plugin: fuzzed queries could match its templates and wait on purpose
    # a queue long enough for the coverage phase: it posts jobs of up to 1000 inputs back to back (503 is documented,
    # but schemathesis counts every 5xx as a server error)
    client = server(registry=demo_only_registry, queue_size=32, request_timeout_s=20)
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe) if exe.exists() else "schemathesis", "run", f"{client.base_url}/openapi.json",
           "--checks", CHECKS, "--max-examples", str(examples), "--workers", "1", "--request-timeout", "30", "--seed", "1"]
    if shutil.which(cmd[0]) is None:
        pytest.skip("the schemathesis command is not on PATH")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("rscore_earth") is None, reason="the earth plugin is not installed")
def test_earth_plugin_geotiff_if_installed(tmp_path: Path):
    """With the real earth plugin installed from its entry point: a GeoTIFF upload, answered and downloadable."""
    example_path = None
    for module in ("rscore_earth.example", "rscore_earth.synthetic"):
        try:
            example_path = importlib.import_module(module).example_path
            break
        except (ImportError, AttributeError):
            continue
    if example_path is None:
        pytest.skip("rscore_earth has no example_path() for its bundled example")
    settings = Settings(output_root=tmp_path / "out", workers=1, request_timeout_s=120)
    with ServerThread(create_app(settings, registry=get_registry())) as url, httpx.Client(base_url=url, timeout=120) as client:
        path = Path(example_path())
        r = client.post("/v1/segment", files={"file": (path.name, path.read_bytes())},
                        data={"query": "landslide-prone areas", "plugin": "earth"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["result"]["template"].startswith("earth:")
        assert body["result"]["scene"]["crs"]
        for link in body["links"].values():
            assert client.get(link).status_code == 200
