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
    started: list[tuple[ServerThread, httpx.Client]] = []

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 1, "queue_size": 2,
                  "request_timeout_s": 30, "job_runner": "inprocess"}
        kwargs.update(overrides)
        settings = Settings(**kwargs)
        thread = ServerThread(create_app(settings, registry=registry))
        client = httpx.Client(base_url=thread.start(), timeout=30)
        client.settings = settings  # type: ignore[attr-defined]
        client.thread = thread  # type: ignore[attr-defined]
        started.append((thread, client))
        return client

    yield start
    for thread, client in started:
        client.close()
        thread.stop()


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
