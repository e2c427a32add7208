"""The ``openai`` reasoner: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp, SGLang, hosted).

::

    rscore run photo.jpg "the worker not wearing a helmet" --reasoner openai \\
        --endpoint http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct

**Endpoint.** ``endpoint`` is the API base URL; ``http://host:8000``, ``http://host:8000/v1`` and
``http://host:8000/v1/chat/completions`` all mean the same (a URL with no path gets ``/v1``; a trailing
``/chat/completions`` is removed; any other path, e.g. ``.../v1beta/openai``, is kept). Requests go to
``{base}/chat/completions``. Without ``model``, the endpoint's ``{base}/models`` list is asked and its only model
used (several: the error lists them).

**API key.** From the environment only - ``RSCORE_OPENAI_API_KEY``, else ``OPENAI_API_KEY`` - sent as
``Authorization: Bearer``. Not an option on purpose: engine options are recorded in result.json's provenance.

**Options** (``request.options``; each also as ``openai_<name>`` or inside a nested ``openai`` mapping, which win
over the flat names): ``endpoint`` (else ``RSCORE_OPENAI_ENDPOINT``), ``model`` (else ``RSCORE_OPENAI_MODEL``),
``timeout_s``, ``max_retries``, ``max_side``, ``temperature``; and as ``openai_<name>`` only: ``total_timeout_s``,
``backoff_s``, ``max_pixels``, ``size_multiple``, ``image_format``, ``max_tokens``, ``coords``, ``response_format``,
``max_targets``, ``repairs``. See :class:`OpenAIOptions`.

**Failures.** Connection errors, timeouts, HTTP 408/409/429 and 5xx are retried up to ``max_retries`` times with
exponential backoff (``backoff_s * 2**n``, at most 30 s, or the server's ``Retry-After``), all inside one time budget
(``total_timeout_s``) that also covers the repair turn; every single request is bounded by ``timeout_s`` (the body
is read in chunks against that deadline, so a trickling server cannot stretch it). Other HTTP errors fail at once.
An answer that cannot be parsed gets one repair turn (the model sees its own output, what was wrong and the schema).
Every failure is a :class:`rscore.errors.BackendUnavailable` (exit 2, HTTP 503) whose one-line message names the
endpoint and the model: the input and the query are fine, the backend cannot answer them - the user's fix is another
endpoint, model or limit. (``InputError`` would blame the input file and map to HTTP 422.)
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.reasoners.base import Generation, Prepared, Run, VLMReasoner
from rscore.reasoners.parsing import FRAMES, frame_for_model
from rscore.reasoners.prompting import (
    ANSWER_SCHEMA,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_MULTIPLE,
    SentImage,
)
from rscore.types import Request

log = logging.getLogger(__name__)

__all__ = [
    "API_KEY_ENVS",
    "OpenAIOptions",
    "OpenAIChatClient",
    "ChatReply",
    "OpenAIReasoner",
    "make_openai_reasoner",
    "normalise_endpoint",
    "image_data_url",
]

API_KEY_ENVS = ("RSCORE_OPENAI_API_KEY", "OPENAI_API_KEY")
ENDPOINT_ENV = "RSCORE_OPENAI_ENDPOINT"
MODEL_ENV = "RSCORE_OPENAI_MODEL"
FLAT_OPTIONS = ("endpoint", "model", "timeout_s", "max_retries", "max_side", "temperature")
RETRY_STATUS = frozenset({408, 409, 429})
MAX_BACKOFF_S = 30.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
PNG_LEVEL = 1
"""zlib level of the PNG pictures sent (lossless at any level). 1 rather than Pillow's 6: on a 672x504 CCTV frame
24 instead of 90 CPU ms for an 11 % larger file (459 vs 412 KiB) - the encoding was most of the client's CPU per
request (benchmarks/bench_vlm_requests.py)."""


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the ``openai`` reasoner (times in seconds, sizes in pixels).

    - ``endpoint``: API base URL (see the module docstring); ``model``: model name, ``None`` = the endpoint's only one.
    - ``timeout_s``: limit for one HTTP request, connecting to last byte.
    - ``max_retries``: retries of one request after a connection error, timeout, 408/409/429 or 5xx.
    - ``total_timeout_s``: limit for everything one plan needs (model lookup, requests, retries, repair turn).
    - ``backoff_s``: first retry delay; doubles per retry (at most 30 s; ``Retry-After`` wins when the server sends it).
    - ``max_side`` / ``max_pixels`` / ``size_multiple``: how the picture is resized before sending
      (:func:`rscore.reasoners.prompting.fit_image`); ``image_format``: ``png`` (lossless) or ``jpeg`` (quality 90).
    - ``temperature``, ``max_tokens``: sampling; 0 = greedy, the reproducible choice.
    - ``coords``: coordinate frame of answers (``auto`` | ``pixels`` | ``norm1000`` | ``norm1``); ``None`` = by model
      name (:func:`rscore.reasoners.parsing.frame_for_model`).
    - ``response_format``: ``none`` | ``json_object`` | ``json_schema`` (constrained decoding with the answer schema
      where the server supports it: vLLM, llama.cpp, SGLang, OpenAI).
    - ``max_targets``: targets kept per answer; ``repairs``: repair turns after an unusable answer.
    """

    endpoint: str
    model: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 3
    total_timeout_s: float = 600.0
    backoff_s: float = 1.0
    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    size_multiple: int = DEFAULT_MULTIPLE
    image_format: str = "png"
    temperature: float = 0.0
    max_tokens: int = 2048
    coords: str | None = None
    response_format: str = "none"
    max_targets: int = 20
    repairs: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.timeout_s > 0, "timeout_s must be > 0 (seconds)"),
            (isinstance(self.max_retries, int) and 0 <= self.max_retries <= 20, "max_retries must be an int in 0..20"),
            (self.total_timeout_s > 0, "total_timeout_s must be > 0 (seconds)"),
            (self.backoff_s >= 0, "backoff_s must be >= 0 (seconds)"),
            (isinstance(self.size_multiple, int) and 1 <= self.size_multiple <= 256, "size_multiple must be 1..256"),
            (
                isinstance(self.max_side, int) and self.max_side >= max(32, self.size_multiple),
                "max_side must be an int >= 32 px (and >= size_multiple)",
            ),
            (
                isinstance(self.max_pixels, int) and self.max_pixels >= max(32, self.size_multiple) ** 2,
                f"max_pixels must be an int >= {max(32, self.size_multiple) ** 2}",
            ),
            (self.image_format in ("png", "jpeg"), "image_format must be 'png' or 'jpeg'"),
            (0 <= self.temperature <= 2, "temperature must be in [0, 2]"),
            (isinstance(self.max_tokens, int) and 16 <= self.max_tokens <= 1_000_000, "max_tokens must be >= 16"),
            (self.coords is None or self.coords in FRAMES, f"coords must be one of {', '.join(FRAMES)}"),
            (
                self.response_format in ("none", "json_object", "json_schema"),
                "response_format must be none, json_object or json_schema",
            ),
            (isinstance(self.max_targets, int) and 1 <= self.max_targets <= 1000, "max_targets must be 1..1000"),
            (isinstance(self.repairs, int) and 0 <= self.repairs <= 3, "repairs must be 0..3"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"openai reasoner: {message}")
        normalise_endpoint(self.endpoint)  # raises OptionError for a URL that is not one

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OpenAIOptions:
        """Build from engine options: flat ``endpoint`` ... ``temperature``, then ``openai_<field>`` keys and a nested
        ``openai`` mapping (these win). Unknown ``openai_*`` keys are an :class:`OptionError`; the endpoint and the
        model fall back to ``RSCORE_OPENAI_ENDPOINT`` / ``RSCORE_OPENAI_MODEL``."""
        values = scoped(options, "openai", cls, flat=FLAT_OPTIONS, what="openai reasoner")
        values.setdefault("endpoint", os.environ.get(ENDPOINT_ENV) or None)
        values.setdefault("model", os.environ.get(MODEL_ENV) or None)
        if not values.get("endpoint"):
            raise BackendUnavailable(
                "reasoner 'openai' needs an endpoint: pass --endpoint URL (e.g. http://localhost:8000/v1) "
                f"or set {ENDPOINT_ENV}"
            )
        converted = typed(cls, values, what="openai reasoner option")
        return cls(**converted)


def normalise_endpoint(endpoint: str) -> str:
    """The API base URL for an endpoint given with or without ``/v1`` or ``/chat/completions`` (module docstring)."""
    text = str(endpoint).strip()
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise OptionError(
            f"openai reasoner: endpoint '{endpoint}' is not an http(s) URL (e.g. http://localhost:8000/v1)"
        )
    path = parsed.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    if not path:
        path = "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


def _display(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parsed = urllib.parse.urlsplit(url)
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def image_data_url(image: np.ndarray, fmt: str = "png") -> str:
    """An ``(H, W, 3)`` uint8 picture as a ``data:image/png;base64,...`` (or JPEG, quality 90) URL."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


# ---------------------------------------------------------------------------------------------------- HTTP client
@dataclass(frozen=True)
class ChatReply:
    """One chat completion: the text, a separate reasoning text (vLLM/DeepSeek ``reasoning_content``), why it
    stopped, the model that answered, token usage."""

    content: str
    reasoning: str
    finish_reason: str | None
    model: str | None
    usage: Mapping[str, Any]


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatClient:
    """A small, bounded client for ``{base}/chat/completions`` and ``{base}/models``.

    Use as a context manager; every call takes a ``deadline`` (``time.monotonic()`` seconds) past which it gives up.
    """

    def __init__(self, options: OpenAIOptions) -> None:
        import httpx

        self.options = options
        self.base = normalise_endpoint(options.endpoint)
        self.display = _display(self.base)
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        key = next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._key_env = next((e for e in API_KEY_ENVS if os.environ.get(e)), None)
        self._http = httpx.Client(
            headers=headers, timeout=options.timeout_s, follow_redirects=True,
            verify=_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        )  # fmt: skip

    def __enter__(self) -> OpenAIChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def error(self, what: str) -> BackendUnavailable:
        model = f" (model '{self.options.model}')" if self.options.model else ""
        return BackendUnavailable(f"openai reasoner: {self.display}{model}: {what}")

    # ------------------------------------------------------------------------------------------------ requests
    def request_json(self, method: str, path: str, payload: Mapping[str, Any] | None, deadline: float) -> Any:
        """One API call with retries and backoff inside ``deadline``; the decoded JSON body."""
        o = self.options
        attempt = 0
        last = "no attempt made"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise self.error(f"no usable answer within the total time limit of {o.total_timeout_s:g} s ({last})")
            try:
                return self._once(method, path, payload, min(o.timeout_s, remaining), deadline)
            except _Retryable as exc:
                last = str(exc)
                if attempt >= o.max_retries:
                    tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                    raise self.error(f"{last} ({tries}; raise --option openai_max_retries=N if it is busy)") from None
                delay = min(MAX_BACKOFF_S, o.backoff_s * 2**attempt) * (1 + 0.1 * random.random())
                if exc.retry_after is not None:
                    delay = min(60.0, max(0.0, exc.retry_after))
                if time.monotonic() + delay >= deadline:
                    raise self.error(
                        f"{last}; no time left to retry within the total limit of {o.total_timeout_s:g} s"
                    ) from None
                log.info("%s: %s; retry %d/%d in %.2f s", self.display, last, attempt + 1, o.max_retries, delay)
                time.sleep(delay)
                attempt += 1

    def _once(self, method: str, path: str, payload: Mapping[str, Any] | None, timeout: float, deadline: float) -> Any:
        import httpx

        url = self.base + path
        started = time.monotonic()
        stop = min(deadline, started + timeout)
        try:
            with self._http.stream(method, url, json=payload, timeout=httpx.Timeout(timeout)) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise self.error(f"the response is larger than {MAX_RESPONSE_BYTES // 2**20} MiB")
                    if time.monotonic() > stop:
                        raise httpx.ReadTimeout("response body too slow")
                status = resp.status_code
                headers = resp.headers
        except httpx.TimeoutException:
            raise _Retryable(f"no answer within {timeout:.3g} s (timed out)") from None
        except httpx.TransportError as exc:
            raise _Retryable(
                f"connection failed ({type(exc).__name__}: {_one_line(str(exc), 120) or 'no detail'})"
            ) from None
        text = bytes(body).decode("utf-8", errors="replace")
        if status in RETRY_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}{self._detail(text)}", _retry_after(headers.get("retry-after")))
        if status >= 400:
            hint = {
                401: f"; check the API key ({self._key_env or ' or '.join(API_KEY_ENVS)})",
                403: f"; check the API key ({self._key_env or ' or '.join(API_KEY_ENVS)})",
                404: "; is this an OpenAI-compatible API base URL (e.g. http://host:8000/v1)?",
            }.get(status, "")
            raise self.error(f"HTTP {status}{self._detail(text)}{hint}")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise self.error(f"HTTP {status} with a body that is not JSON ({_one_line(text, 80)!r})") from None

    @staticmethod
    def _detail(text: str) -> str:
        try:
            err = json.loads(text).get("error")
            msg = err.get("message") if isinstance(err, dict) else err
        except (json.JSONDecodeError, AttributeError):
            msg = text
        return f": {_one_line(msg, 160)}" if msg and str(msg).strip() else ""

    # --------------------------------------------------------------------------------------------------- calls
    def list_models(self, deadline: float) -> list[str]:
        data = self.request_json("GET", "/models", None, deadline)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self.error("GET /models did not return a model list; pass --model NAME")
        return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]

    def chat(self, messages: Sequence[Mapping[str, Any]], deadline: float, *, model: str) -> ChatReply:
        o = self.options
        payload: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "temperature": o.temperature,
            "max_tokens": o.max_tokens,
            "stream": False,
        }
        if o.response_format == "json_object":
            payload["response_format"] = {"type": "json_object"}
        elif o.response_format == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "rscore_answer", "schema": ANSWER_SCHEMA},
            }
        data = self.request_json("POST", "/chat/completions", payload, deadline)
        if isinstance(data, dict) and data.get("error"):
            raise self.error(f"the server returned an error{self._detail(json.dumps(data))}")
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise self.error(f"the reply has no choices[0].message ({_one_line(json.dumps(data), 100)})") from None
        return ChatReply(
            content=_content_text(message.get("content")),
            reasoning=_content_text(message.get("reasoning_content") or message.get("reasoning")),
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
            usage=data.get("usage") or {},
        )


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


@functools.lru_cache(maxsize=4)
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> Any:
    """httpx's default verifying SSL context (same CA rules), built once: loading the CA bundle costs ~70 ms, which a
    client per plan (per tile, per agent query) paid every time."""
    import httpx

    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def _user_agent() -> str:
    from rscore import __version__

    return f"rscore/{__version__}"


# ------------------------------------------------------------------------------------------------------- reasoner
@dataclass(frozen=True)
class _Session:
    """What one plan holds open: the HTTP client, the deadline of everything it asks, the model it asks."""

    client: OpenAIChatClient
    deadline: float
    model: str


class OpenAIReasoner(VLMReasoner):
    """Plans by asking a VLM behind an OpenAI-compatible endpoint (see the module docstring). The stages are
    :class:`~rscore.reasoners.base.VLMReasoner`'s; :meth:`generate` is one chat completion."""

    name = "openai"

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self._models: dict[str, str] = {}  # endpoint base URL -> the model it serves, when looked up

    def options_for(self, request: Request) -> OpenAIOptions:
        """This reasoner's options with the request's own openai options laid over them (same precedence rules)."""
        req = request.options
        overrides = {f"openai_{k}": req[k] for k in FLAT_OPTIONS if req.get(k) is not None}
        overrides.update(
            {k: v for k, v in req.items() if isinstance(k, str) and k.startswith("openai_") and v is not None}
        )
        nested = req.get("openai")
        if isinstance(nested, Mapping):
            overrides.update({f"openai_{k}": v for k, v in nested.items() if v is not None})
        if not overrides:
            return self.options
        merged = OpenAIOptions.from_options({**_as_options(self.options), **overrides})
        return self.options if merged == self.options else merged

    @contextlib.contextmanager
    def session(self, options: OpenAIOptions) -> Iterator[_Session]:
        deadline = time.monotonic() + options.total_timeout_s
        with OpenAIChatClient(options) as client:
            yield _Session(client, deadline, options.model or self._model(client, deadline))

    def frame(self, options: OpenAIOptions, session: _Session) -> str:
        return options.coords or frame_for_model(session.model)

    def picture_part(self, sent: SentImage, options: OpenAIOptions) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": image_data_url(sent.array, options.image_format)}}

    def generate(self, messages: Sequence[Mapping[str, Any]], prepared: Prepared, options: OpenAIOptions,
                 session: _Session) -> Generation:  # fmt: skip
        t0 = time.monotonic()
        reply = session.client.chat(messages, session.deadline, model=session.model)
        text = reply.content
        if reply.reasoning and "<think>" not in text.lower():
            text = f"<think>{reply.reasoning}</think>\n{text}"
        usage = reply.usage or {}
        return Generation(
            text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0) if usage else None,
            completion_tokens=int(usage.get("completion_tokens") or 0) if usage else None,
            seconds=time.monotonic() - t0,
            cut_off=options.max_tokens if reply.finish_reason == "length" else None,
            model=reply.model,
            payload=reply,
        )

    def failure(self, what: str, session: _Session) -> BackendUnavailable:
        return session.client.error(what)

    def describe(self, session: _Session) -> str:
        return f"{session.client.display} ({session.model})"

    def run_info(self, run: Run, options: OpenAIOptions, session: _Session) -> dict[str, Any]:
        last = run.generations[-1] if run.generations else None
        return {
            "reasoner_model": (last.model if last is not None and last.model else session.model),
            "endpoint": session.client.display,
            **super().run_info(run, options, session),
        }

    def _model(self, client: OpenAIChatClient, deadline: float) -> str:
        if client.base in self._models:
            return self._models[client.base]
        models = client.list_models(deadline)
        if len(models) != 1:
            have = ", ".join(models[:10]) or "none"
            raise client.error(f"pass --model NAME (the endpoint serves {len(models)} models: {have})")
        self._models[client.base] = models[0]
        log.info("%s serves one model: %s", client.display, models[0])
        return models[0]


def _as_options(options: OpenAIOptions) -> dict[str, Any]:
    return {
        f"openai_{f.name}": getattr(options, f.name) for f in fields(options) if getattr(options, f.name) is not None
    }


def make_openai_reasoner(options: Mapping[str, Any]) -> OpenAIReasoner:
    """The backend factory (``BackendSpec("reasoner", "openai", make_openai_reasoner, ..., modules=("httpx",))``).

    Validates the options now, so a missing endpoint or a bad value fails before any image is read or sent.
    """
    return OpenAIReasoner(OpenAIOptions.from_options(options))
