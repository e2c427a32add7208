"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API with scripted answers.

It is a test fixture for rscore's ``openai`` reasoner, not a stand-in for rscore code: the reasoner talks to it over
real sockets exactly as it would to vLLM, Ollama or llama.cpp. Each ``POST /v1/chat/completions`` takes the next item
of the script (the last one repeats once the script runs out); ``GET /v1/models`` lists ``models``. Every request is
recorded (:attr:`ScriptedOpenAIServer.requests`) so tests can check what was sent, images included.

A script item is a :class:`Reply`, a string (the assistant's content, HTTP 200), or a callable taking the
:class:`RecordedRequest` and returning either - for answers that depend on the picture the client sent.

Tool calling (for the ``agent`` reasoner): ``Reply(tool_calls=[call("segment_phrase", phrase="hat"), ...])`` answers
with ``message.tool_calls`` (finish reason ``tool_calls``) as vLLM's or OpenAI's function calling does; a Qwen-style
text call is just content: ``text_call("select_masks", mask_ids=[1])``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reply:
    """One scripted response. ``content`` is the assistant's text; ``status`` != 200 sends an OpenAI-style error
    body; ``delay_s`` waits before answering; ``drop`` closes the connection without any response; ``body`` sends
    these bytes as is; ``reasoning`` fills ``message.reasoning_content``."""

    content: str | None = None
    status: int = 200
    delay_s: float = 0.0
    reasoning: str | None = None
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    body: bytes | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = None


def call(name: str, _id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """One OpenAI ``tool_calls`` item (arguments JSON-encoded, as servers send them)."""
    return {"id": _id or f"call_{name}_{abs(hash(json.dumps(arguments, sort_keys=True))) % 10**8}",
            "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def text_call(name: str, **arguments: Any) -> str:
    """The same call as Qwen2.5-VL / Qwen3-VL write it in their text when the server does not parse it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    received_at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages", []))

    def text(self) -> str:
        """Every text part of every message, joined."""
        parts = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(parts)

    def image_urls(self) -> list[str]:
        urls = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
        return urls

    def images(self) -> list[np.ndarray]:
        """The pictures sent as data URLs, decoded to ``(H, W, 3)`` uint8 arrays."""
        from PIL import Image

        out = []
        for url in self.image_urls():
            header, _, data = url.partition(",")
            assert header.startswith("data:image/") and header.endswith(";base64"), header
            out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
        return out


ScriptItem = Reply | str | Callable[[RecordedRequest], Reply | str]


class ScriptedOpenAIServer:
    """``with ScriptedOpenAIServer([...]) as srv: ... srv.url`` - an OpenAI-compatible server on an ephemeral port."""

    def __init__(self, script: Sequence[ScriptItem], *, models: Sequence[str] = ("test-vlm",)) -> None:
        if not script:
            raise ValueError("the script needs at least one reply")
        self.script = list(script)
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> ScriptedOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()  # wakes handlers that are sleeping through a scripted delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The API base URL, ``http://127.0.0.1:PORT/v1``."""
        return self.root + "/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ----------------------------------------------------------------------------------------------- replies
    def _take(self, request: RecordedRequest) -> Reply:
        with self._lock:
            item = self.script[min(self._next, len(self.script) - 1)]
            self._next += 1
        if callable(item) and not isinstance(item, Reply):
            item = item(request)
        return Reply(content=item) if isinstance(item, str) else item

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    server_owner: ScriptedOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
        return

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _send(
        self, status: int, payload: Any = None, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        data = body if body is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server_owner
        owner._record(
            RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None, time.monotonic())
        )
        if self.path.rstrip("/") == "/v1/models":
            self._send(
                200,
                {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"} for m in owner.models]},
            )
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        owner = self.server_owner
        try:
            payload = self._read_json()
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        req = RecordedRequest(
            "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, payload, time.monotonic()
        )
        owner._record(req)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        reply = owner._take(req)
        if reply.delay_s and owner._stop.wait(reply.delay_s):
            return  # server stopping
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if reply.body is not None:
            self._send(reply.status, body=reply.body, headers=reply.headers)
            return
        if reply.status != 200:
            self._send(
                reply.status,
                {"error": {"message": reply.content or f"scripted HTTP {reply.status}", "type": "server_error"}},
                headers=reply.headers,
            )
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning is not None:
            message["reasoning_content"] = reply.reasoning
        finish = reply.finish_reason
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
            finish = "tool_calls" if finish == "stop" else finish
        self._send(
            200,
            {
                "id": f"chatcmpl-{len(owner.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": (payload or {}).get("model") or "test-vlm",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": reply.usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
            headers=reply.headers,
        )
