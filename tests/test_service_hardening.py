"""Hardening of the HTTP service over real HTTP (uvicorn on loopback, httpx / raw sockets as clients).

- every option naming a server-side file (core ``aux``/``adapter``, a template's declared ``path_options``, scoped
  and nested variants) goes through the same allowed-roots check as ``path``, and a refusal says nothing about
  whether the path exists;
- 422 messages show paths relative to the allowed root;
- bodies that will be refused are not read; slow clients are cut off; expired results are removed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from rscore import hookimpl
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.service import ServerThread, Settings, create_app
from service_helpers import Services

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
    reason="the service needs fastapi, uvicorn and python-multipart",
)

KEY = "k" * 20
SECRET = "TOP-SECRET-CONTENT-42"


def _peek(ctx: OpContext) -> ProgramOutput:
    """Puts the content of the file named by option 'notes' into the plan: what a leak would look like."""
    text = Path(str(ctx.params["notes"])).read_text()
    ctx.note(f"notes say: {text}")
    return ProgramOutput(mask=np.ones(ctx.shape, bool))


class LeakyPlugin:
    @hookimpl
    def rscore_query_templates(self) -> list[Template]:
        return [Template("peek", "peeked thing", "reads a notes file", ("peek at notes",), program=_peek,
                         path_options=("notes",))]


@pytest.fixture(scope="module")
def registry():
    import demo_plugin

    extra = [("demo", demo_plugin), ("leaky", LeakyPlugin())]
    if importlib.util.find_spec("rscore_safety") is not None:
        import rscore_safety.plugin

        extra.append(("safety", rscore_safety.plugin))
    return get_registry(get_plugin_manager(entry_points=False, extra=extra))


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def server(tmp_path: Path, roots: Path, registry) -> Iterator[Callable[..., httpx.Client]]:
    services = Services()

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 1, "queue_size": 2,
                  "request_timeout_s": 30, "job_runner": "inprocess"}
        return services.start(registry, **{**kwargs, **overrides})

    yield start
    services.stop_all()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


@pytest.fixture
def layout(tmp_path: Path, roots: Path) -> dict[str, Path]:
    """An input image under the root; secrets, links and loops outside it."""
    img = np.full((40, 40), 20, np.uint8)
    img[5:20, 5:20] = 230
    (roots / "a.png").write_bytes(png_bytes(img))
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (roots / "link.txt").symlink_to(secret)
    (roots / "notes.txt").write_text("harmless notes")
    return {"secret": secret, "missing": tmp_path / "missing.txt", "loop": tmp_path / "loop1", "link": roots / "link.txt"}


def _segment(client: httpx.Client, query: str, plugin: str, options: dict) -> httpx.Response:
    return client.post("/v1/segment", data={"query": query, "plugin": plugin, "path": "a.png",
                                            "options": json.dumps(options)})


def test_declared_path_option_of_a_template_is_confined_and_leaks_nothing(server, layout, roots: Path):
    client = server()
    # inside the root: allowed, the template reads it
    r = _segment(client, "peek at notes", "leaky", {"notes": "notes.txt"})
    assert r.status_code == 200, r.text
    assert "harmless notes" in json.dumps(r.json()["result"])
    # outside: an existing file, a missing one, a symlink loop, a link inside the root pointing out: all 403 with
    # the same message apart from the echoed value, and nothing of the file's content
    messages = {}
    for name, given in (("secret", str(layout["secret"])), ("missing", str(layout["missing"])),
                        ("loop", str(layout["loop"])), ("dotdot", "../secret.txt"), ("link", "link.txt")):
        r = _segment(client, "peek at notes", "leaky", {"notes": given})
        message = error_of(r, 403)
        assert SECRET not in r.text
        messages[name] = message.replace(given, "<given>")
    assert len(set(messages.values())) == 1, messages
    assert "outside the folders this service may read" in messages["secret"]


@pytest.mark.parametrize("options", [
    {"adapter": "{secret}"}, {"sam2_adapter": "{secret}"}, {"vlm": {"adapter": "{secret}"}},
    {"aux": "a.png,{secret}"}, {"aux": ["a.png", "{secret}"]}, {"sam2_weights": "{secret}"},
    {"reasoner": "openai", "openai": {"endpoint": "http://169.254.169.254/"}},
])
def test_core_path_options_scoped_and_nested_are_confined(server, layout, options):
    client = server()
    text = json.dumps(options).replace("{secret}", str(layout["secret"]))
    r = _segment(client, "bright spots", "demo", json.loads(text))
    assert r.status_code in (400, 403), r.text
    assert SECRET not in r.text


@pytest.mark.skipif(importlib.util.find_spec("rscore_safety") is None, reason="needs the safety plugin")
def test_zones_option_of_the_safety_plugin_is_confined(server, layout, roots: Path, tmp_path: Path):
    zones = {"zones": [{"name": "crane", "polygon": [[0, 0], [20, 0], [20, 20], [0, 20]]}]}
    outside = tmp_path / "zones.json"
    outside.write_text(json.dumps(zones))
    (roots / "zones.json").write_text(json.dumps(zones))
    client = server()
    r = _segment(client, "restricted zone", "safety", {"zones": str(outside)})
    assert "outside the folders" in error_of(r, 403)
    r = _segment(client, "restricted zone", "safety", {"zones": str(layout["missing"])})
    assert "outside the folders" in error_of(r, 403)
    r = _segment(client, "restricted zone", "safety", {"zones": "zones.json"})
    assert r.status_code == 200, r.text
    # the jobs API checks the same option the same way
    r = client.post("/v1/jobs", json={"inputs": ["a.png"], "query": "restricted zone", "plugin": "safety",
                                      "options": {"zones": str(outside)}})
    assert "outside the folders" in error_of(r, 403)


def test_unreadable_input_message_is_relative_to_the_root(server, roots: Path):
    (roots / "sub").mkdir()
    (roots / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    (roots / "sub" / "loop").symlink_to(roots / "sub" / "loop")
    client = server()
    message = error_of(client.post("/v1/segment", data={"query": "bright spots", "path": "sub/broken.png"}), 422)
    assert "sub/broken.png" in message and str(roots) not in message
    message = error_of(client.post("/v1/segment", data={"query": "bright spots", "path": "sub/loop"}), 422)
    assert "loop" in message and str(roots) not in message and "no such file" not in message


# ------------------------------------------------------------------------------------ bodies it will refuse
def _raw(client: httpx.Client, head: str, body: bytes = b"", *, wait_s: float = 10) -> tuple[str, float]:
    """Send ``head`` and the first part of a body on a raw socket, then read the answer without sending the rest.
    Returns the status line and the seconds it took (a server that reads the whole body first never answers)."""
    thread = client.thread  # type: ignore[attr-defined]
    sock = socket.create_connection((thread.host, thread.port), timeout=wait_s)
    t0 = time.monotonic()
    try:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        data = b"(no answer)"
    finally:
        sock.close()
    return data.split(b"\r\n", 1)[0].decode("latin-1"), time.monotonic() - t0


def _head(port_client: httpx.Client, length: int | None, key: str | None = None) -> str:
    lines = [f"POST /v1/segment HTTP/1.1", "Host: 127.0.0.1", "Content-Type: multipart/form-data; boundary=xyz"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if key:
        lines.append(f"X-API-Key: {key}")
    return "\n".join(lines) + "\n"


def test_wrong_key_or_oversized_length_is_answered_without_reading_the_body(server):
    client = server(api_keys=(KEY,), max_upload_mb=1)
    status, _ = _raw(client, _head(client, 200 << 20), b"x" * 10_000)  # 200 MiB declared, 10 KB sent, no key
    assert status.endswith("401 Unauthorized"), status
    status, _ = _raw(client, _head(client, 200 << 20, KEY), b"x" * 10_000)  # right key, over the limit
    assert status.endswith("413 Request Entity Too Large") or " 413 " in status, status


def test_chunked_body_is_capped_while_streaming(server):
    client = server(api_keys=(KEY,), max_upload_mb=1)
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    piece = b"x" * (256 << 10)
    chunks = [part] + [piece] * 12  # a file part of 3 MiB, never the final 0 chunk
    chunked = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    status, _ = _raw(client, _head(client, None, KEY), chunked)
    assert " 413 " in status, status


def test_a_stalled_body_is_cut_off(server):
    client = server(read_timeout_s=1)
    status, seconds = _raw(client, _head(client, 5000), b"--xyz\r\n", wait_s=15)
    assert " 408 " in status, status
    assert seconds < 10


# ---------------------------------------------------------------------------------------------- retention
def test_expired_results_are_removed_and_nothing_else(server, tmp_path: Path, layout):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    foreign = out / ("f" * 32)  # looks like a result id, but rscore did not write it
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    os.utime(foreign, (time.time() - 3600, time.time() - 3600))
    (out / "notes").mkdir()
    client = server(result_ttl_s=1)
    r = client.post("/v1/segment", data={"query": "bright spots", "plugin": "demo", "path": "a.png"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    assert client.get(f"/v1/results/{rid}").status_code == 200
    deadline = time.monotonic() + 20
    while (out / rid).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (out / rid).exists()
    assert client.get(f"/v1/results/{rid}/result.json").status_code == 404
    assert (foreign / "keep.txt").read_text() == "mine" and (out / "notes").is_dir()


def test_retention_and_read_timeout_settings_from_env(tmp_path: Path):
    s = Settings.from_env({"RSCORE_RESULT_TTL_S": "3600", "RSCORE_READ_TIMEOUT_S": "5",
                           "RSCORE_OUTPUT_ROOT": str(tmp_path)})
    assert s.result_ttl_s == 3600 and s.read_timeout_s == 5
    for bad in ({"RSCORE_RESULT_TTL_S": "-1"}, {"RSCORE_READ_TIMEOUT_S": "0"}, {"RSCORE_RESULT_TTL_S": "soon"}):
        with pytest.raises(Exception, match="RSCORE_"):
            Settings.from_env(bad)


@pytest.mark.skipif(importlib.util.find_spec("rscore_earth") is None, reason="needs the earth plugin")
def test_raster_pixel_bomb_is_413_before_any_work(server, roots: Path, tmp_path: Path):
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=100_000, height=100_000, count=1, dtype="float32", crs="EPSG:32617",
                   transform=from_origin(700000, 9600000, 30, 30), tiled=True, blockxsize=256, blockysize=256,
                   sparse_ok=True, compress="deflate")
    with rasterio.open(roots / "bomb.tif", "w", **profile) as ds:
        ds.write(np.ones((1, 256, 256), np.float32), window=rasterio.windows.Window(0, 0, 256, 256))
    import rscore_earth.plugin

    registry = get_registry(get_plugin_manager(entry_points=False, extra=[("earth", rscore_earth.plugin)]))
    settings = Settings(output_root=tmp_path / "out", allowed_roots=(roots,), workers=1, job_runner="inprocess")
    with ServerThread(create_app(settings, registry=registry)) as url:
        r = httpx.post(url + "/v1/segment", data={"query": "landslide-prone areas", "plugin": "earth",
                                                  "path": "bomb.tif"}, timeout=60)
    message = error_of(r, 413)
    assert "bomb.tif" in message and "raster is 100000x100000" in message and str(roots) not in message


def test_job_item_errors_show_paths_relative_to_the_root(server, roots: Path):
    (roots / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    client = server()
    r = client.post("/v1/jobs", json={"inputs": ["bad.png"], "query": "bright spots", "plugin": "demo"})
    assert r.status_code == 202, r.text
    url = r.json()["url"]
    deadline = time.monotonic() + 30
    while (job := client.get(url).json())["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    error = job["items"][0]["error"]
    assert job["state"] == "failed" and "bad.png" in error and str(roots) not in error, job


def test_a_connection_with_stalled_headers_is_closed(server):
    client = server(read_timeout_s=1)
    thread = client.thread  # type: ignore[attr-defined]
    sock = socket.create_connection((thread.host, thread.port), timeout=15)
    try:
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        t0 = time.monotonic()
        try:
            data = sock.recv(1024)
        except (socket.timeout, ConnectionResetError):
            data = None
        assert data == b"", "the server kept a connection with half-sent headers open"
        assert time.monotonic() - t0 < 10
    finally:
        sock.close()
    # an ordinary keep-alive client is unaffected
    assert client.get("/healthz").status_code == 200
    time.sleep(1.5)
    assert client.get("/healthz").status_code == 200
