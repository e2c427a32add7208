"""rscore's own hook implementations (plugin name ``core``), registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rscore.hookspecs import hookimpl
from rscore.sdk import BackendSpec, Param, Reader, Writer


@hookimpl
def rscore_readers() -> list[Reader]:
    from rscore.io.images import ImageReader
    from rscore.video import video_readers

    return [*video_readers(), ImageReader()]  # video first: an animated GIF is a video, a still GIF an image


@hookimpl
def rscore_writers() -> list[Writer]:
    from rscore.io.writers import CocoWriter, MaskPngWriter, OverlayPngWriter, ResultJsonWriter
    from rscore.video import video_writers

    return [MaskPngWriter(), OverlayPngWriter(), CocoWriter(), ResultJsonWriter(), *video_writers()]


@hookimpl
def rscore_flows() -> list[Any]:
    try:  # the flows ship with the core distribution (package rscore_flows under flows/); Prefect is optional
        from rscore_flows.specs import BUILTIN_FLOWS
    except ImportError:  # pragma: no cover - a copy of rscore without its flows package
        return []
    return list(BUILTIN_FLOWS)


@hookimpl
def rscore_options() -> list[Param]:
    return core_options()


def core_options() -> list[Param]:
    """Every option the core reads: engine, tiling, image reader, video engine/reader/writers and the built-in
    backends (openai, transformers, agent, lisa, classical, sam2, sam3, detectors). Derived from the backends' own
    settings dataclasses. It lives here, in the core plugin (moved from ``rscore.options`` in #19, which forwards the
    old name): it reads every backend's settings, and every backend reads its options through ``rscore.options``,
    which so stays below them all."""
    from rscore import detectors
    from rscore.engine import tiling_options
    from rscore.options import _PARAM_TYPE as PARAM_TYPE
    from rscore.options import dataclass_params
    from rscore.reasoners import agent_options, lisa, openai, transformers_vlm
    from rscore.segmenters import classical, sam2, sam3
    from rscore.video import options as video_options
    from rscore.video import reader as video_reader

    out = [
        Param("reasoner", "str", "reasoner backend (analytic, openai, transformers, agent, ...)", default="analytic"),
        Param("segmenter", "str", "segmenter backend (auto, classical, sam2, sam2-hf)", default="auto"),
        Param("tile_size", "int", "tile side for analytic programs and stored outputs", "px", (16, None), 1024),
        Param("min_area_px", "int", "smallest instance kept", "px", (0, None), 1),
        Param("max_instances", "int", "most instances listed", "", (1, None), 1000),
        Param("template", "str", "force this template instead of matching the query"),
        Param("matcher", "enum", "template matcher", choices=("auto", "embedding", "keyword")),
        Param("max_pixels", "int", "refuse images with more pixels (decompression bombs)", "px", (1, None)),
        Param("device", "str", "auto, cuda, mps or cpu"),
        Param("dtype", "str", "auto, float32, bfloat16, float16"),
        Param("load_in", "enum", "8-/4-bit loading of local models through bitsandbytes (CUDA only)", default="none",
              choices=("none", "8bit", "4bit")),
        Param("weights", "path", "folder with local model weights"),
        Param("adapter", "path", "fine-tuned adapter folder"),
        Param("model", "str", "model name or id of the reasoner"),
        Param("endpoint", "str", "OpenAI-compatible endpoint URL"),
        Param("sam2_video_model", "str", "SAM2 video model for propagation", default="auto"),
        Param("bands", "str", "band roles in order, e.g. red,green,blue,nir (rscore run --bands)"),
        Param("aux", "path", "auxiliary co-registered input (rscore run --aux)"),
        Param("planner", "bool", "compile constraint queries into operator programs (analytic reasoner)", default=True),
        Param("workers", "str", "analytic tiles in this many worker processes: auto (= cores, for scenes >= 4 Mpx) "
              "or a whole number", default="auto"),
    ]
    out += [Param(k, PARAM_TYPE.get(type(v), "str"), f"VLM tiling: {k}", default=v) for k, v in tiling_options.DEFAULTS.items()]
    out += dataclass_params(openai.OpenAIOptions, scope="openai", flat=openai.FLAT_OPTIONS, what="openai reasoner")
    out += dataclass_params(transformers_vlm.TransformersOptions, scope="transformers",
                            flat=transformers_vlm.FLAT_OPTIONS, what="transformers reasoner")  # fmt: skip
    out += dataclass_params(agent_options.AgentOptions, scope="agent", what="agent reasoner")
    out += dataclass_params(lisa.LisaOptions, scope="lisa", flat=lisa.FLAT_OPTIONS, what="lisa reasoner")
    out += dataclass_params(detectors.DetectorOptions, scope="detector", flat=("device", "weights"), what="detector")
    out += dataclass_params(sam3.Sam3Options, scope="sam3", flat=("weights", "device"), what="sam3 segmenter")
    out += [
        Param("phrase_segmenter", "enum", "text-prompted segmenter for segment_phrase", default="auto",
              choices=("auto", "sam3", "grounded")),
        Param("grounded_masks", "enum", "mask maker of the grounded segmenter", default="auto",
              choices=("auto", "sam2", "sam2-hf", "classical")),
    ]
    out += dataclass_params(classical.ClassicalOptions, scope="classical", what="classical segmenter")
    out += dataclass_params(sam2.Sam2Options, scope="sam2", flat=("weights", "adapter", "device", "dtype"),
                            what="sam2 segmenter")  # fmt: skip
    out += dataclass_params(video_options.VideoOptions, what="video")
    out += dataclass_params(video_reader.ReaderOptions, what="video reader")
    return out


def _analytic(options: Mapping[str, Any]) -> Any:
    from rscore.engine.analytic import AnalyticReasoner

    return AnalyticReasoner(options)


def _classical(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.classical import ClassicalSegmenter

    return ClassicalSegmenter.from_options(options)


def _openai(options: Mapping[str, Any]) -> Any:
    from rscore.reasoners.openai import make_openai_reasoner

    return make_openai_reasoner(options)


def _agent(options: Mapping[str, Any]) -> Any:
    from rscore.reasoners.agent import make_agent_reasoner

    return make_agent_reasoner(options)


def _transformers(options: Mapping[str, Any]) -> Any:
    from rscore.reasoners.transformers_vlm import make_transformers_reasoner

    return make_transformers_reasoner(options)


def _lisa(options: Mapping[str, Any]) -> Any:
    from rscore.reasoners.lisa import make_lisa_reasoner

    return make_lisa_reasoner(options)


def _sam2(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.sam2 import make_sam2_segmenter

    return make_sam2_segmenter(options)


def _sam2_hf(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.sam2 import make_hf_sam2_segmenter

    return make_hf_sam2_segmenter(options)


def _sam3(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.sam3 import make_sam3_segmenter

    return make_sam3_segmenter(options)


def _grounded(options: Mapping[str, Any]) -> Any:
    from rscore.segmenters.grounded import make_grounded_segmenter

    return make_grounded_segmenter(options)


def _yolo_onnx(options: Mapping[str, Any]) -> Any:
    from rscore.detectors.yolo_onnx import make_yolo_detector

    return make_yolo_detector(options)


def _owlv2(options: Mapping[str, Any]) -> Any:
    from rscore.detectors.zero_shot import make_owlv2_detector

    return make_owlv2_detector(options)


def _grounding_dino(options: Mapping[str, Any]) -> Any:
    from rscore.detectors.zero_shot import make_grounding_dino_detector

    return make_grounding_dino_detector(options)


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
        BackendSpec(
            "reasoner",
            "agent",
            _agent,
            "an MLLM calling tools in a bounded loop (segment a phrase, examine masks, plugin operators, select) over "
            "an OpenAI-compatible endpoint: --endpoint URL --model NAME",
            modules=("httpx",),
        ),
        BackendSpec(
            "reasoner",
            "transformers",
            _transformers,
            "local vision-language model (Qwen2.5-VL, Qwen3-VL) via transformers; weights from --weights or the HF cache",
            modules=("torch", "transformers"),
        ),
        BackendSpec(
            "reasoner",
            "lisa",
            _lisa,
            "LISA-family checkpoints (embedding-as-mask: a [SEG] token's hidden state prompts SAM); --model lisa-7b-v1",
            modules=("torch", "transformers"),
        ),
        BackendSpec(
            "segmenter",
            "sam2",
            _sam2,
            "SAM 2/2.1 (Meta's sam2 package), hiera tiny/small/base+/large: boxes/points -> masks",
            modules=("torch", "sam2"),
        ),
        BackendSpec(
            "segmenter",
            "sam2-hf",
            _sam2_hf,
            "SAM 2.1 through transformers' Sam2Model",
            modules=("torch", "transformers"),
        ),
        BackendSpec(
            "segmenter",
            "sam3",
            _sam3,
            "SAM 3 through transformers: a phrase in, every matching instance's mask out (boxes as exemplars)",
            modules=("torch", "transformers"),
        ),
        BackendSpec(
            "segmenter",
            "grounded",
            _grounded,
            "detector boxes -> SAM 2 / classical masks; phrases found by the detector (-O detector_model=...)",
            modules=("cv2",),
        ),
        BackendSpec(
            "detector",
            "yolo-onnx",
            _yolo_onnx,
            "YOLOv5 / v8 / v11 ONNX exports through onnxruntime (-O detector_model=model.onnx)",
            modules=("onnxruntime",),
        ),
        BackendSpec(
            "detector",
            "owlv2",
            _owlv2,
            "OWLv2 open-vocabulary detector through transformers (any phrase)",
            modules=("torch", "transformers"),
        ),
        BackendSpec(
            "detector",
            "grounding-dino",
            _grounding_dino,
            "Grounding DINO open-vocabulary detector through transformers (any phrase)",
            modules=("torch", "transformers"),
        ),
    ]
