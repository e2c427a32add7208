"""The ``agent`` reasoner: a multimodal LLM calls tools in a bounded loop (SAM 3 Agent / JiT style).

::

    rscore run site.jpg "the worker not wearing a helmet" --reasoner agent \\
        --endpoint http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct

The model sees the picture and the query and answers only with tool calls, over any OpenAI-compatible endpoint
(the HTTP client, retries and image encoding are :mod:`rscore.reasoners.openai`'s). Calls are read from
``message.tool_calls`` (function calling) or from the text form Qwen2.5-VL / Qwen3-VL emit when the server does
not parse them (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``). Tools:

- ``segment_phrase(phrase, box?)``: masks for a phrase. A text-prompted segmenter (a segmenter backend with a
  ``segment_phrase(image, phrase)`` method) answers from the phrase alone; otherwise the engine's box segmenter
  (SAM2 when its weights are here, else the classical one) segments the ``box`` the model gives;
- ``examine_masks(mask_ids)``: numbered overlays of masks, sent back to the model as pictures;
- ``combine_masks(a, b, how)``: ``and`` / ``or`` / ``and_not`` of two masks;
- one tool per plugin operator (``op_<plugin>_<name>``: the operator's typed parameters, :class:`rscore.sdk.Param`,
  plus ``compare`` / ``value`` / ``high``) and per analytic template (``template_<name>``): a new mask;
- ``select_masks(mask_ids, label?)``: the answer; ``report_no_mask(reason)``: the target is not in the picture.

Bounds (options ``agent_<name>``, see :class:`AgentOptions`): turns, total tokens, wall time, pictures per turn,
masks kept. A reply without a usable tool call, or calling a tool that does not exist, gets one repair turn; a
second in a row, or running out of turns / tokens / time, is a :class:`~rscore.errors.BackendUnavailable` naming the
bound (never a made-up mask). Every call, its arguments, a summary of its result and the model's own words become
``plan.steps``; ``plan.match`` records turns, tool calls, tokens and the time spent waiting for the endpoint.

A scene larger than twice the picture goes through the engine's tiled path: a loop on the downscaled whole scene,
then loops on the tiles (all, or those the overview's masks reach, at most ``agent_max_tiles``), masks merged across
tile borders; operator tools measure a tile's original values. Design and cost: :mod:`rscore.reasoners.agent_tiles`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError, RscoreError
from rscore.instances import mask_bbox
from rscore.reasoners.agent_local import _LocalClient
from rscore.reasoners.agent_options import AgentOptions  # moved there (#22); still importable from here
from rscore.reasoners.agent_tiles import (as_targets, check_tile_budget, choose_tiles, max_halo,
                                         measure_scene)
from rscore.reasoners.base import VLMReasoner
from rscore.reasoners.openai import OpenAIChatClient, OpenAIOptions, OpenAIReasoner, _content_text, image_data_url
from rscore.reasoners.parsing import frame_for_model
from rscore.reasoners.prompting import SentImage, describe_scene, reasoning_view
from rscore.types import Instance, Plan, Request, Scene, Step, Target, Window

if TYPE_CHECKING:
    from rscore.sdk import Operator, Template

log = logging.getLogger(__name__)

__all__ = ["AgentOptions", "AgentReasoner", "make_agent_reasoner", "parse_text_tool_calls"]

COMPARE = ("<", "<=", ">", ">=", "in")
TEXT_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
MAX_STEP_CHARS = 500


@dataclass
class _Mask:
    id: int
    mask: np.ndarray  # scene-sized bool
    source: str
    label: str
    score: float = 1.0


@dataclass
class _Call:
    name: str
    arguments: dict[str, Any]
    id: str | None = None
    error: str | None = None  # why the call could not be read


@dataclass
class _State:
    masks: dict[int, _Mask] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    tokens: int = 0
    turns: int = 0
    calls: int = 0
    http_s: float = 0.0
    tool_s: float = 0.0  # segmenters, operators and templates: backend compute, not loop overhead
    done: Plan | None = None
    images: list[np.ndarray] = field(default_factory=list)  # pictures to send with the next turn
    measured: tuple[Scene, tuple[slice, slice]] | None = None  # what operator/template tools measure (agent_tiles)


def parse_text_tool_calls(text: str) -> list[_Call]:
    """Tool calls written in the text (Qwen2.5-VL / Qwen3-VL / Hermes): ``<tool_call>{json}</tool_call>``."""
    calls = []
    for body in TEXT_CALL.findall(text or ""):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            calls.append(_Call("", {}, error=f"the <tool_call> body is not JSON ({exc.msg})"))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            calls.append(_Call("", {}, error='a <tool_call> needs {"name": ..., "arguments": {...}}'))
            continue
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = None
        calls.append(_Call(data["name"], args if isinstance(args, dict) else {},
                           error=None if isinstance(args, dict) else "arguments must be a JSON object"))  # fmt: skip
    return calls


def _api_calls(message: Mapping[str, Any]) -> list[_Call]:
    out = []
    for tc in message.get("tool_calls") or []:
        fn = (tc or {}).get("function") or {}
        raw = fn.get("arguments", "{}")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
            error = None if isinstance(args, dict) else "arguments must be a JSON object"
        except json.JSONDecodeError as exc:
            args, error = {}, f"the arguments are not JSON ({exc.msg})"
        out.append(_Call(str(fn.get("name") or ""), args if isinstance(args, dict) else {}, tc.get("id"), error))
    return out


def _fn(name: str, description: str, properties: Mapping[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": dict(properties), "required": list(required)}}}  # fmt: skip


def _tool_name(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)


class AgentReasoner(VLMReasoner):
    """See the module docstring. Built by :func:`make_agent_reasoner` (backend ``agent``).

    A :class:`~rscore.reasoners.base.VLMReasoner` whose :meth:`plan` is a bounded tool loop instead of one answer
    with repair turns: the picture is fitted by the backend it talks to (:meth:`fit`: the ``openai`` reasoner's rule,
    or the local model's processor sizes), :meth:`session` is that backend's client (HTTP, or the local model behind
    the same surface), every turn is one request with the tools."""

    name = "agent"  # larger scenes: the engine's tiled path, overview first (rscore.reasoners.agent_tiles)

    def __init__(self, http: OpenAIOptions | None, options: AgentOptions, engine_options: Mapping[str, Any],
                 local: Any = None) -> None:  # fmt: skip
        if (http is None) == (local is None):
            raise ValueError("the agent needs exactly one of an endpoint (http) and a local model")
        self.http = http
        self.local = local  # a loaded rscore.reasoners.transformers_vlm.TransformersReasoner
        self.options = options
        self.engine_options = dict(engine_options)
        self._segmenter: Any = None
        self.image_format = http.image_format if http is not None else "png"
        self.vlm: VLMReasoner = OpenAIReasoner(http) if http is not None else local

    @property
    def max_concurrency(self) -> int | None:
        """Tiles reasoned at once (the engine's ``reason_concurrency``): one for a local model (one model on one
        device), as many as asked for an endpoint."""
        return 1 if self.local is not None else None

    def choose_tiles(self, windows: Sequence[Window], shape: tuple[int, int], overview: Plan | None,
                     targets: Sequence[Target]) -> tuple[list[int] | None, str]:  # fmt: skip
        """Which tiles of a large scene get a loop after the overview's (the engine's tiled path asks;
        :func:`rscore.reasoners.agent_tiles.choose_tiles`)."""
        return choose_tiles(self.options, windows, shape, overview, targets)

    def picture_side(self, request: Request) -> int:
        return self.vlm.picture_side(request)

    def fit(self, rgb: np.ndarray, options: Any = None) -> SentImage:
        """The picture as the backend's model sees it (its own sizes)."""
        return self.vlm.fit(rgb)

    @contextlib.contextmanager
    def session(self, options: Any = None) -> Iterator[Any]:
        """The client the loop asks: the endpoint's, or the local model behind the same surface."""
        with (OpenAIChatClient(self.http) if self.http is not None else _LocalClient(self.local)) as client:
            yield client

    # ------------------------------------------------------------------------------------------------ tools
    def tools(self, scene: Scene | None, templates: Sequence[Template], operators: Mapping[str, Operator],
              plugin: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        """The tool definitions sent to the model and ``{tool name: operator | template}`` for the plugin ones;
        ``scene`` is what the plugin tools would measure (its bands decide which are offered; ``None``: none)."""
        box = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
               "description": "x0, y0, x1, y1 in the picture's coordinates"}  # fmt: skip
        ids = {"type": "array", "items": {"type": "integer"}, "description": "mask numbers"}
        tools = [
            _fn("segment_phrase", "Segment what a short noun phrase names; give a box around it when you can.",
                {"phrase": {"type": "string"}, "box": box}, ["phrase"]),
            _fn("examine_masks", "See numbered overlays of masks on the picture.", {"mask_ids": ids}, ["mask_ids"]),
            _fn("combine_masks", "A new mask from two masks.", {"a": {"type": "integer"}, "b": {"type": "integer"},
                "how": {"type": "string", "enum": ["and", "or", "and_not"]}}, ["a", "b", "how"]),
            _fn("select_masks", "Final answer: the masks that are the target.", {"mask_ids": ids,
                "label": {"type": "string"}}, ["mask_ids"]),
            _fn("report_no_mask", "Final answer: the target is not in the picture.", {"reason": {"type": "string"}},
                ["reason"]),
        ]  # fmt: skip
        plugin_tools: dict[str, Any] = {}
        if scene is None:
            return tools, plugin_tools
        for op in operators.values():
            if plugin is not None and op.name.split(".", 1)[0] != plugin or not all(scene.has(r) for r in op.requires):
                continue
            schema = op.json_schema()
            props = dict(schema["properties"])
            props["compare"] = {"type": "string", "enum": list(COMPARE), "description": "how to threshold the output"}
            props["value"] = {"type": "number", "description": f"threshold ({op.unit or 'unitless'}); in: the low end"}
            props["high"] = {"type": "number", "description": "high end for compare=in"}
            props["within"] = {"type": "integer", "description": "optional mask number to keep the result inside"}
            name = _tool_name("op_", op.name)
            required = [] if op.returns in ("mask", "classes") else ["compare", "value"]
            tools.append(_fn(name, f"{op.description} -> {op.returns}" + (f" [{op.unit}]" if op.unit else ""),
                             props, required))  # fmt: skip
            plugin_tools[name] = op
        for t in templates:
            if t.program is None or scene.kind not in t.kinds or not all(scene.has(r) for r in t.requires):
                continue
            name = _tool_name("template_", t.name)
            tools.append(_fn(name, f"{t.label}: {t.description}" + (f" (rule: {t.explain})" if t.explain else ""), {}))
            plugin_tools[name] = t
        return tools, plugin_tools

    # ------------------------------------------------------------------------------------------------ the loop
    def plan(self, scene: Scene, request: Request, templates: Sequence[Template]) -> Plan:
        from rscore.engine import current_registry
        from rscore.io.images import scene_rgb8

        from rscore.tiling import in_memory_pixel_limit

        o, h = self.options, self.http
        if scene.height * scene.width > in_memory_pixel_limit():
            raise OptionError(
                f"the agent reasoner holds its masks in memory and this {scene.width}x{scene.height} scene is larger "
                f"than RSCORE_IN_MEMORY_PIXELS ({in_memory_pixel_limit():,} px): crop it, or let the engine tile it "
                "(-O reason_tiles=auto)"
            )
        view = reasoning_view(scene)
        if view is not None:
            check_tile_budget(o, view)
        # what operator/template tools measure: the scene itself, a tile's original values, nothing on the overview
        roles_scene = scene if view is None else None if view.is_overview else view.scene
        t_start = time.monotonic()
        deadline = t_start + o.max_wall_s
        image = scene_rgb8(scene)
        sent = self.fit(image)
        operators = current_registry().operators
        tools, plugin_tools = self.tools(roles_scene, templates, operators, request.plugin)
        state = _State()
        with self.session() as client:
            model = self.local.model_name if h is None else h.model or self._only_model(client, deadline)
            coords = h.coords if h is not None else self.local.options.coords
            frame = coords or ("norm1000" if frame_for_model(model) == "norm1000" else "pixels")
            messages = self._opening(request, sent, describe_scene(scene, sent), tools, frame)
            repairs_left = o.repairs
            while state.done is None:
                self._check_bounds(state, deadline, t_start)
                message, reply = self._ask(client, model, messages, tools, state, deadline)
                state.turns += 1
                text = _content_text(message.get("content"))
                thought = (_content_text(message.get("reasoning_content") or message.get("reasoning")) + "\n"
                           + TEXT_CALL.sub("", text)).strip()  # fmt: skip
                if thought:
                    state.steps.append(Step(f"turn {state.turns}: model: {_clip(thought)}"))
                calls = _api_calls(message) or parse_text_tool_calls(text)
                as_text = not message.get("tool_calls")
                known = {t["function"]["name"] for t in tools}
                broken = [c for c in calls if c.error or c.name not in known]
                if not calls or (broken and len(broken) == len(calls)):
                    why = ("no tool call in the reply" if not calls else
                           "; ".join(c.error or f"there is no tool '{c.name}'" for c in broken))  # fmt: skip
                    state.steps.append(Step(f"turn {state.turns}: unusable reply ({why})", operator="repair"))
                    if repairs_left <= 0:
                        raise client.error(f"agent: the model broke the tool-call format ({why}) after "
                                           f"{o.repairs} repair turn(s)")  # fmt: skip
                    repairs_left -= 1
                    messages += [{"role": "assistant", "content": text or ""}, {"role": "user", "content": (
                        f"Your reply could not be used: {why}. Answer with exactly one call of one of these tools: "
                        f"{', '.join(sorted(known))}, as a tool call or as <tool_call>{{\"name\": ..., "
                        "\"arguments\": {...}}</tool_call>.")}]  # fmt: skip
                    continue
                repairs_left = o.repairs
                results = []
                for call in calls:
                    state.calls += 1
                    t_tool = time.monotonic()
                    try:
                        summary = self._run(call, scene, request, image, sent, frame, operators, plugin_tools, state)
                    except RscoreError as exc:  # a tool failing is the model's to handle, not the end
                        summary = f"error: {exc}"
                    if call.name not in ("examine_masks", "select_masks", "report_no_mask", "combine_masks"):
                        state.tool_s += time.monotonic() - t_tool
                    state.steps.append(Step(
                        f"turn {state.turns}: {call.name}({_clip(json.dumps(call.arguments), 200)}) -> {_clip(summary)}",
                        operator=call.name, params=dict(call.arguments)))  # fmt: skip
                    results.append((call, summary))
                    if state.done is not None:
                        break
                messages += self._replies(message, text, results, as_text, sent, state)
        total = time.monotonic() - t_start
        info = {"reasoner_model": reply.get("model") or model, "endpoint": client.display, "turns": state.turns,
                "tool_calls": state.calls, "tokens": state.tokens, "agent_time_s": round(total, 4),
                "endpoint_time_s": round(state.http_s, 4), "tool_time_s": round(state.tool_s, 4)}  # fmt: skip
        done = state.done
        if view is not None:  # a tile or the overview: the selection as targets with masks, merged across tiles
            return Plan(steps=tuple(state.steps) + done.steps, absent=done.absent, reason=done.reason,
                        reasoner=self.name, match={**info, **done.match}, raw=text or None,
                        targets=as_targets(done.instances))  # fmt: skip
        return Plan(steps=tuple(state.steps) + done.steps, absent=done.absent, reason=done.reason,
                    reasoner=self.name, match={**info, **done.match}, raw=text or None, instances=done.instances)  # fmt: skip

    def _check_bounds(self, state: _State, deadline: float, t_start: float) -> None:
        o = self.options
        if state.turns >= o.max_turns:
            raise BackendUnavailable(f"agent: no final answer after {state.turns} turns (the limit; raise "
                                     "-O agent_max_turns=N if the task needs more steps)")  # fmt: skip
        if state.tokens >= o.max_total_tokens:
            raise BackendUnavailable(f"agent: {state.tokens} tokens used without a final answer (limit "
                                     f"agent_max_total_tokens={o.max_total_tokens})")  # fmt: skip
        if time.monotonic() >= deadline:
            raise BackendUnavailable(f"agent: no final answer within {o.max_wall_s:g} s (limit agent_max_wall_s)")

    def _ask(self, client: OpenAIChatClient, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
             state: _State, deadline: float) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
        if self.http is not None:
            payload.update(temperature=self.http.temperature, max_tokens=self.http.max_tokens)
        if self.options.tool_format == "auto":
            payload["tools"] = tools
            payload["tool_choice"] = "auto"
        t0 = time.monotonic()
        try:
            data = client.request_json("POST", "/chat/completions", payload, deadline)
        except BackendUnavailable as exc:
            if "HTTP 400" in str(exc) and "tools" in payload:  # e.g. vLLM without --enable-auto-tool-choice
                raise BackendUnavailable(f"{exc}; if the server does not take 'tools', pass -O agent_tool_format=text"
                                         ) from None  # fmt: skip
            raise
        state.http_s += time.monotonic() - t0
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise client.error(f"the reply has no choices[0].message ({_clip(json.dumps(data), 100)})") from None
        usage = data.get("usage") or {}
        spent = int(usage.get("total_tokens") or 0) or (
            int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0))
        if not spent:  # no usage from the server: about 4 characters a token, 1000 per picture
            spent = len(json.dumps(messages[-2:])) // 4 + len(json.dumps(message)) // 4
        state.tokens += spent
        return message, data

    def _only_model(self, client: Any, deadline: float) -> str:
        models = client.list_models(deadline)
        if len(models) != 1:
            raise client.error(f"pass --model NAME (the endpoint serves {len(models)} models: {', '.join(models[:10])})")
        return models[0]

    # ------------------------------------------------------------------------------------------------ prompts
    def _opening(self, request: Request, sent: SentImage, context: str, tools: list[dict[str, Any]],
                 frame: str) -> list[dict[str, Any]]:  # fmt: skip
        w, hgt = sent.size
        coords = ("0-1000 normalised coordinates" if frame == "norm1000" else f"pixels of this {w}x{hgt} picture")
        system = (
            "You segment what a query asks for in a picture by calling tools, one or a few per turn. Find "
            "candidates with segment_phrase (or the domain tools), look at them with examine_masks, reject wrong "
            "ones and try other phrases, combine masks when the query needs it, then answer with select_masks, or "
            "report_no_mask when the target is not there. Never select a mask you have not examined. "
            f"Boxes are x0, y0, x1, y1 in {coords}."
        )
        if self.options.tool_format == "text":
            system += ("\nTools (call as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>):\n"
                       + "\n".join(json.dumps(t["function"]) for t in tools))  # fmt: skip
        user = [
            {"type": "image_url", "image_url": {"url": image_data_url(sent.array, self.image_format)}},
            {"type": "text", "text": f"{context}\nQuery: {request.query}"},
        ]
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _replies(self, message: Mapping[str, Any], text: str, results: list[tuple[_Call, str]], as_text: bool,
                 sent: SentImage, state: _State) -> list[dict[str, Any]]:  # fmt: skip
        """The assistant turn as the model sent it, the tool results, and any pictures to look at."""
        if as_text:
            out: list[dict[str, Any]] = [{"role": "assistant", "content": text}, {"role": "user", "content": "\n".join(
                f"<tool_response>\n{json.dumps({'name': c.name, 'result': s})}\n</tool_response>" for c, s in results)}]
        else:
            out = [{"role": "assistant", "content": text or None, "tool_calls": message.get("tool_calls")}]
            answered = {c.id for c, _ in results}
            out += [{"role": "tool", "tool_call_id": c.id, "content": s} for c, s in results]
            out += [{"role": "tool", "tool_call_id": tc.get("id"), "content": "not run (an answer was given)"}
                    for tc in message.get("tool_calls") or [] if tc.get("id") not in answered]  # fmt: skip
        if state.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": "The overlays you asked for, in order."}]
            # overlays are for the model's eyes: JPEG (q90) encodes ~10x faster than PNG and is 3-5x smaller
            parts += [{"type": "image_url", "image_url": {"url": image_data_url(img, "jpeg")}} for img in state.images]
            out.append({"role": "user", "content": parts})
            state.images = []
        return out

    # ------------------------------------------------------------------------------------------------ running tools
    def _run(self, call: _Call, scene: Scene, request: Request, image: np.ndarray, sent: SentImage, frame: str,
             operators: Mapping[str, Operator], plugin_tools: Mapping[str, Any], state: _State) -> str:  # fmt: skip
        if call.error:
            return f"error: {call.error}"
        a = call.arguments
        if call.name == "segment_phrase":
            return self._segment_phrase(str(a.get("phrase") or "").strip(), a.get("box"), image, sent, frame, state)
        if call.name == "examine_masks":
            return self._examine(_ids(a.get("mask_ids"), state), sent, state)
        if call.name == "combine_masks":
            (x, y), how = _ids([a.get("a"), a.get("b")], state), str(a.get("how"))
            ops = {"and": np.logical_and, "or": np.logical_or, "and_not": lambda p, q: p & ~q}
            if how not in ops:
                return "error: how must be and, or or and_not"
            return self._add(ops[how](state.masks[x].mask, state.masks[y].mask), f"mask {x} {how} mask {y}",
                             state.masks[x].label, state)  # fmt: skip
        if call.name == "select_masks":
            chosen = _ids(a.get("mask_ids"), state)
            if not chosen:
                return "error: select at least one mask, or call report_no_mask"
            label = str(a.get("label") or state.masks[chosen[0]].label)
            insts = []
            for i in chosen:
                m = state.masks[i]
                box = mask_bbox(m.mask)
                if box is not None:
                    insts.append(Instance(label, m.score, box, int(m.mask.sum()), m.mask,
                                          attributes={"agent_mask": i, "source": m.source}))  # fmt: skip
            what = ", ".join(f"{i} ({_clip(state.masks[i].source, 80)})" for i in chosen)
            step = Step(f"answer: mask(s) {what} as '{label}'", operator="select_masks")
            state.done = Plan(steps=(step,), instances=tuple(insts), match={"selected": chosen})
            return f"selected {len(insts)} mask(s)"
        if call.name == "report_no_mask":
            reason = str(a.get("reason") or "no reason given")
            state.done = Plan(absent=True, reason=f"the agent found no mask: {_clip(reason, 300)}")
            return "reported: no mask"
        target = plugin_tools.get(call.name)
        if target is None:
            return f"error: there is no tool '{call.name}'"
        return self._plugin_tool(call, target, scene, request, operators, plugin_tools, state)

    def _add(self, mask: np.ndarray, source: str, label: str, state: _State, score: float = 1.0) -> str:
        if len(state.masks) >= self.options.max_masks:
            return f"error: {self.options.max_masks} masks already (limit agent_max_masks); select or combine them"
        n = max(state.masks, default=0) + 1
        state.masks[n] = _Mask(n, np.asarray(mask, bool), source, label, score)
        return f"mask {n}: {_describe_mask(state.masks[n].mask)}"

    def _segment_phrase(self, phrase: str, box: Any, image: np.ndarray, sent: SentImage, frame: str,
                        state: _State) -> str:  # fmt: skip
        if not phrase:
            return "error: give a phrase"
        seg = self._get_segmenter()
        if hasattr(seg, "segment_phrase"):
            found = list(seg.segment_phrase(image, phrase))
        else:
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                return (f"error: the {getattr(seg, 'name', 'box')} segmenter here needs a box around '{phrase}' "
                        "(x0, y0, x1, y1)")  # fmt: skip
            x0, y0, x1, y1 = _to_original(box, sent, frame)
            if x1 - x0 < 2 or y1 - y0 < 2:
                return "error: the box is empty or outside the picture"
            found = seg.segment(image, [Target(phrase, box=(x0, y0, x1, y1), phrase=phrase)])
        if not found:
            return f"no mask for '{phrase}'"
        return "; ".join(self._add(inst.mask, f"segment_phrase('{phrase}')", phrase, state, float(inst.score))
                         for inst in found if inst.mask is not None)  # fmt: skip

    def _get_segmenter(self) -> Any:
        if self._segmenter is None:
            from rscore.engine import _segmenter, current_registry

            name = str(self.engine_options.get("segmenter") or "auto")
            _, self._segmenter = _segmenter(current_registry(), name, self.engine_options)
        return self._segmenter

    def _examine(self, ids: list[int], sent: SentImage, state: _State) -> str:
        if not ids:
            return "error: give mask numbers to examine"
        limit = self.options.max_images_per_turn
        if len(ids) <= limit:
            state.images += [render_overlay(sent.array, [(i, state.masks[i].mask)]) for i in ids]
        else:  # more than the picture budget: one picture with every mask numbered
            state.images.append(render_overlay(sent.array, [(i, state.masks[i].mask) for i in ids]))
        return f"rendered mask(s) {', '.join(map(str, ids))}: see the picture(s) that follow"

    def _plugin_tool(self, call: _Call, target: Any, scene: Scene, request: Request, operators: Mapping[str, Operator],
                     plugin_tools: Mapping[str, Any], state: _State) -> str:  # fmt: skip
        from rscore.sdk import Operator, OpContext

        a = dict(call.arguments)
        if state.measured is None:  # the scene itself, or a tile's original values grown by the tools' halo
            state.measured = measure_scene(scene, max_halo(plugin_tools))
        if state.measured is None:
            return "error: plugin tools do not run on the overview picture"
        mscene, crop = state.measured
        if not isinstance(target, Operator):
            from rscore.engine.program import run_program

            run = run_program(mscene, request, target, operators, tile_size=int(request.option("tile_size", 1024)))
            if not isinstance(run.mask, np.ndarray):
                return "error: the scene is too large for the agent's in-memory masks"
            return self._add(run.mask[crop], f"template {target.qualified_name}", target.label, state)
        params = {p.name: a[p.name] for p in target.params if p.name in a}
        ctx = OpContext(mscene, request, operators, params=request.options)
        values = np.asarray(ctx.op(target.name, **params))[..., crop[0], crop[1]]
        compare = str(a.get("compare") or (">" if target.returns in ("mask", "classes") else ""))
        if compare not in COMPARE:
            return f"error: compare must be one of {', '.join(COMPARE)}"
        value = float(a.get("value", 0.0))
        v = values.astype(np.float32)
        with np.errstate(invalid="ignore"):
            if compare == "in":
                high = float(a.get("high", value))
                mask = ((v >= value) | (v <= high)) if value > high else ((v >= value) & (v <= high))
            else:
                mask = {"<": v < value, "<=": v <= value, ">": v > value, ">=": v >= value}[compare]
        mask &= np.isfinite(v) & np.asarray(ctx.valid)[crop]
        within = a.get("within")
        if within is not None:
            (w,) = _ids([within], state)
            mask &= state.masks[w].mask
        rule = f"{target.name} {compare} {value:g}" + (f"..{a.get('high')}" if compare == "in" else "")
        return self._add(mask, rule + (f" within mask {within}" if within is not None else ""), target.name, state)


# ---------------------------------------------------------------------------------------------------- helpers
def _clip(text: str, limit: int = MAX_STEP_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ids(values: Any, state: _State) -> list[int]:
    if not isinstance(values, (list, tuple)):
        values = [values]
    out = []
    for v in values:
        try:
            i = int(v)
        except (TypeError, ValueError):
            raise OptionError(f"'{v}' is not a mask number") from None
        if i not in state.masks:
            raise OptionError(f"there is no mask {i} (masks: {', '.join(map(str, state.masks)) or 'none yet'})")
        out.append(i)
    return out


def _to_original(box: Sequence[float], sent: SentImage, frame: str) -> tuple[float, float, float, float]:
    ow, oh = sent.original_size
    if frame == "norm1000":
        sx, sy = ow / 1000.0, oh / 1000.0
    else:
        sx, sy = sent.scale
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0 * sx, x1 * sx))
    y0, y1 = sorted((y0 * sy, y1 * sy))
    return max(0.0, x0), max(0.0, y0), min(float(ow), x1), min(float(oh), y1)


def _describe_mask(mask: np.ndarray) -> str:
    area = int(mask.sum())
    box = mask_bbox(mask)
    where = f", box {list(box)} (original pixels)" if box else ""
    return f"{area} px ({area / max(1, mask.size):.1%} of the picture){where}"


def render_overlay(picture: np.ndarray, masks: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """The sent picture with each mask filled, outlined and numbered (what ``examine_masks`` shows the model)."""
    import cv2

    h, w = picture.shape[:2]
    out = picture.astype(np.float32).copy()
    colours = [(255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 96, 255), (255, 160, 32)]
    labels = []
    for k, (number, mask) in enumerate(masks):
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        colour = np.array(colours[k % len(colours)], np.float32)
        out[small] = 0.55 * out[small] + 0.45 * colour
        labels.append((number, small, colour))
    img = np.clip(out, 0, 255).astype(np.uint8)
    for number, small, colour in labels:
        contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, tuple(int(c) for c in colour), 2)
        ys, xs = np.nonzero(small)
        x, y = (int(xs.mean()), int(ys.mean())) if xs.size else (8, 20)
        for thickness, ink in ((4, (0, 0, 0)), (2, (255, 255, 255))):
            cv2.putText(img, str(number), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, ink, thickness, cv2.LINE_AA)
    return img


def make_agent_reasoner(options: Mapping[str, Any]) -> AgentReasoner:
    """The backend factory: the endpoint options as the ``openai`` reasoner reads them, plus ``agent_*`` bounds."""
    bounds = AgentOptions.from_options(options)
    try:
        http = OpenAIOptions.from_options(options)
    except BackendUnavailable as exc:  # no endpoint: a local model when one is named, else say what is needed
        local = {"weights", "transformers_weights", "transformers"} & {k for k, v in options.items() if v is not None}
        if not local:
            raise BackendUnavailable(
                str(exc).replace("reasoner 'openai' needs an endpoint", "reasoner 'agent' needs an endpoint")
                + ", or a local model: --model NAME --weights DIR"
            ) from None
        from rscore.reasoners.transformers_vlm import make_transformers_reasoner

        text_only = dataclasses.replace(bounds, tool_format="text")  # a chat template may not take tools
        return AgentReasoner(None, text_only, options, local=make_transformers_reasoner(options))
    return AgentReasoner(http, bounds, options)
