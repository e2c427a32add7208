"""rscore's own hook implementations (plugin name ``core``), registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rscore.hookspecs import hookimpl
from rscore.sdk import BackendSpec, Reader, Writer


@hookimpl
def rscore_readers() -> list[Reader]:
    from rscore.io.images import ImageReader

    return [ImageReader()]


@hookimpl
def rscore_writers() -> list[Writer]:
    from rscore.io.writers import MaskPngWriter, OverlayPngWriter, ResultJsonWriter

    return [MaskPngWriter(), OverlayPngWriter(), ResultJsonWriter()]


def _analytic(options: Mapping[str, Any]) -> Any:
    from rscore.engine.analytic import AnalyticReasoner

    return AnalyticReasoner(options)


def _classical(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.classical import ClassicalSegmenter

    return ClassicalSegmenter.from_options(options)


def _openai(options: Mapping[str, Any]) -> Any:
    from rscore.reasoners.openai import make_openai_reasoner

    return make_openai_reasoner(options)


@hookimpl
def rscore_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            "reasoner",
            "analytic",
            _analytic,
            "offline: match the query to a plugin template and run its operator program (no weights)",
        ),
        BackendSpec(
            "segmenter",
            "classical",
            _classical,
            "GrabCut/watershed from boxes and points, connected components (no weights)",
            modules=("cv2",),
        ),
        BackendSpec(
            "reasoner",
            "openai",
            _openai,
            "any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp, hosted): --endpoint URL --model NAME",
            modules=("httpx",),
        ),
    ]
