"""Vision-language reasoners: a model looks at the picture and answers with explicit targets (the decoupled path).

A reasoner is any object with ``name`` and ``plan(scene, request, templates) -> rscore.types.Plan``, registered as
``rscore.sdk.BackendSpec(kind="reasoner", ...)``. The VLM reasoners share two modules so that every model is asked
the same way and every answer is read the same way:

- :mod:`rscore.reasoners.prompting` - what the model is shown: :func:`fit_image` (the client resizes the picture
  itself and records the scale), :func:`select_templates` (which plugin template's ``prompt`` expansion carries the
  domain knowledge), :func:`describe_scene`, :func:`build_prompt`, :func:`repair_prompt`, :data:`ANSWER_SCHEMA`.
- :mod:`rscore.reasoners.parsing` - what the model said: :func:`parse_answer` (rscore's JSON schema, Qwen2.5-VL
  grounding JSON, Seg-Zero / VisionReasoner ``<think>/<answer>``, absent forms; clipping and the normalised
  coordinate rule), :func:`parse_with_repair` (one repair turn), :func:`map_targets` and :func:`answer_to_plan`.

The model-backed reasoners share one base class, :class:`rscore.reasoners.base.VLMReasoner`: ``plan`` ->
``fit`` (the picture) -> ``prepare`` (the chat) -> ``generate`` (the backend: the only stage each must write) ->
``parse`` -> ``finish`` (the plan), with repair turns between parse and generate. Backends:
:mod:`rscore.reasoners.openai` (``--reasoner openai``: any OpenAI-compatible chat-completions endpoint),
:mod:`~rscore.reasoners.transformers_vlm` (a local VLM), :mod:`~rscore.reasoners.agent` (a bounded tool loop over
either) and :mod:`~rscore.reasoners.lisa` (``[SEG]`` embeddings -> SAM masks). A reasoner built from the pieces
without the base class::

    hints = select_templates(request.query, templates, kind=scene.kind, forced=request.option("template"))
    sent = fit_image(scene_rgb8(scene), max_side=1024)
    prompt = build_prompt(request.query, hints, image_size=sent.size, context=describe_scene(scene, sent))
    messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": [<image>, prompt.user]}]
    parse = functools.partial(parse_answer, image_size=sent.size, default_label=hints.label or "target")
    answer, outputs, errors = parse_with_repair(generate, messages, parse, repair_prompt)
    return answer_to_plan(answer, sent=sent, hints=hints, reasoner="mine", raw=outputs[-1])

**Large scenes.** The engine reasons a scene larger than ``reason_tile`` px tile by tile
(:mod:`rscore.engine.decoupled`): each tile, and a downscaled overview of the whole scene first, reaches ``plan`` as
an ordinary sub-scene whose ``metadata["reasoning_view"]`` (:class:`ReasoningView`) says where it lies in the whole;
:func:`describe_scene` puts that (and the overview's one line) into the prompt. A reasoner may define
``picture_side(request) -> int``, the longest side of the picture it sends, from which the default tile size
(twice that) is derived.
"""

from __future__ import annotations

from typing import Any

from rscore.reasoners.parsing import (
    FRAMES,
    AnswerParseError,
    ParsedAnswer,
    answer_to_plan,
    find_json,
    frame_for_model,
    map_targets,
    parse_answer,
    parse_with_repair,
    resolve_frame,
    split_think_answer,
    steps_from_text,
)
from rscore.reasoners.prompting import (
    ANSWER_EXAMPLE,
    ANSWER_SCHEMA,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_MULTIPLE,
    Prompt,
    ReasoningView,
    SentImage,
    TemplateHints,
    build_prompt,
    describe_scene,
    fit_image,
    reasoning_view,
    repair_prompt,
    select_templates,
)

__all__ = [
    "ANSWER_EXAMPLE",
    "ANSWER_SCHEMA",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MULTIPLE",
    "FRAMES",
    "AnswerParseError",
    "ParsedAnswer",
    "Prompt",
    "ReasoningView",
    "SentImage",
    "TemplateHints",
    "answer_to_plan",
    "build_prompt",
    "describe_scene",
    "find_json",
    "fit_image",
    "frame_for_model",
    "map_targets",
    "parse_answer",
    "parse_with_repair",
    "reasoning_view",
    "repair_prompt",
    "resolve_frame",
    "select_templates",
    "split_think_answer",
    "steps_from_text",
    "make_openai_reasoner",
    "OpenAIReasoner",
    "OpenAIOptions",
]


def __getattr__(name: str) -> Any:  # the HTTP backend loads only when asked for
    if name in ("make_openai_reasoner", "OpenAIReasoner", "OpenAIOptions"):
        from rscore.reasoners import openai

        return getattr(openai, name)
    raise AttributeError(name)
