"""The VLM reasoner base class: prepare (picture + prompt) -> generate (the backend) -> parse, written once.

Every model-backed reasoner (``openai``, ``transformers``, ``agent``, ``lisa``) is a :class:`VLMReasoner`. The
skeleton that used to be copied between them lives here::

    plan(scene, request, templates)
        o = options_for(request)                      # the request's own options laid over the reasoner's
        sent = fit(scene_rgb8(scene), o)              # the picture as the model sees it (size, scale)
        plan_picture(sent, request, templates, kind=scene.kind, context=describe_scene(scene, sent), options=o)

    plan_picture(sent, request, templates, ...)
        with session(o) as s:                         # what one plan holds open: an HTTP client + deadline, or nothing
            prepared = prepare(sent, request, templates, ...)      # chat messages, template hints, coordinate frame
            answer = parse_with_repair(generate(messages) -> Generation, parse(Generation) -> answer, repair)
            return finish(answer, run)                # the Plan, in original pixels, with what the run cost

Only :meth:`VLMReasoner.generate` is backend-specific for the JSON-answering reasoners (HTTP chat completion, a
local ``model.generate``); :meth:`prepare`, :meth:`parse`, :meth:`repair` and :meth:`finish` have defaults that ask
and read every model the same way (:mod:`rscore.reasoners.prompting`, :mod:`rscore.reasoners.parsing`). A backend
whose answer is not JSON overrides :meth:`parse` / :meth:`finish` (``lisa``: masks from ``[SEG]`` hidden states);
one that talks in several turns overrides :meth:`plan` and keeps the stages (``agent``: a bounded tool loop).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable
from rscore.reasoners.parsing import AnswerParseError, answer_to_plan, parse_answer, parse_with_repair
from rscore.reasoners.prompting import (
    Prompt,
    SentImage,
    TemplateHints,
    build_prompt,
    describe_scene,
    fit_image,
    repair_prompt,
    select_templates,
)
from rscore.types import Plan, Request, Scene, Step

if TYPE_CHECKING:
    from rscore.sdk import Template

log = logging.getLogger(__name__)

__all__ = ["VLMReasoner", "Prepared", "Generation", "Run"]


@dataclass(frozen=True)
class Prepared:
    """One request as the model will see it: chat ``messages`` (OpenAI-style roles; the picture as the backend's
    image part), the ``sent`` picture, the template ``hints``, the coordinate ``frame`` of answers, the prompt
    ``style`` and the ``query``."""

    messages: tuple[Mapping[str, Any], ...]
    sent: SentImage
    hints: TemplateHints | None
    frame: str
    style: str = "rscore"
    query: str = ""


@dataclass(frozen=True)
class Generation:
    """What one backend call returned: the ``text``, token counts where known, the seconds it took, ``cut_off`` (the
    token limit the answer ran into, else ``None``), the ``model`` that answered where the backend says, and the
    backend's own ``payload`` (a chat reply, a LISA answer)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    cut_off: int | None = None
    model: str | None = None
    payload: Any = None


@dataclass
class Run:
    """One :meth:`VLMReasoner.plan_picture`: what was prepared, every generation, raw output and parse error in order,
    and the seconds from the first request to a usable answer."""

    prepared: Prepared
    generations: list[Generation] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def tokens(self) -> dict[str, int] | None:
        """Prompt and completion tokens summed over the requests; ``None`` when the backend reported none."""
        known = [g for g in self.generations if g.prompt_tokens is not None or g.completion_tokens is not None]
        if not known:
            return None
        return {
            "prompt_tokens": int(sum(g.prompt_tokens or 0 for g in known)),
            "completion_tokens": int(sum(g.completion_tokens or 0 for g in known)),
        }

    def repair_steps(self, reasoner: str) -> list[Step]:
        if not self.errors:
            return []
        return [Step(f"the first answer was unusable ({self.errors[0]}); the model repaired it", operator=reasoner)]


class VLMReasoner:
    """Base of the model-backed reasoners (module docstring). A subclass sets ``name`` and ``options`` and implements
    :meth:`generate`; the options object is expected to have ``max_side``, ``max_pixels``, ``size_multiple``,
    ``coords``, ``max_targets`` and ``repairs`` where the defaults of :meth:`fit`, :meth:`prepare` and :meth:`parse`
    are used."""

    name = "vlm"
    options: Any = None

    # ------------------------------------------------------------------------------------------------ options
    def options_for(self, request: Request) -> Any:
        """This reasoner's options with the request's own laid over them (default: the reasoner's)."""
        return self.options

    def picture_side(self, request: Request) -> int:
        """The longest side (px) of the picture this reasoner sends for ``request`` (the engine tiles scenes larger
        than twice this)."""
        return int(self.options_for(request).max_side)

    def repairs(self, options: Any) -> int:
        """Repair turns after an unusable answer."""
        return int(getattr(options, "repairs", 0) or 0)

    # ------------------------------------------------------------------------------------------------ prepare
    def fit(self, rgb: np.ndarray, options: Any = None) -> SentImage:
        """The picture as the model will see it (:func:`~rscore.reasoners.prompting.fit_image`)."""
        o = options or self.options
        return fit_image(rgb, max_side=o.max_side, max_pixels=o.max_pixels, multiple=o.size_multiple)

    @contextlib.contextmanager
    def session(self, options: Any) -> Iterator[Any]:
        """What one plan holds open (an HTTP client and its deadline); default nothing."""
        yield None

    def frame(self, options: Any, session: Any) -> str:
        """The coordinate frame the model answers in (``auto`` = decided from the numbers)."""
        return getattr(options, "coords", None) or "auto"

    def hints(self, request: Request, templates: Sequence[Template], kind: str | None) -> TemplateHints:
        return select_templates(
            request.query, templates, kind=kind, forced=request.option("template"), matcher=request.option("matcher")
        )

    def prepare(self, sent: SentImage, request: Request, templates: Sequence[Template], *, kind: str | None = None,
                context: str = "", options: Any = None, session: Any = None) -> Prepared:  # fmt: skip
        """rscore's prompt (:func:`~rscore.reasoners.prompting.build_prompt`) for the picture and the query, with the
        domain knowledge of the template that matches it."""
        o = options or self.options_for(request)
        hints = self.hints(request, templates, kind)
        frame = self.frame(o, session)
        prompt = build_prompt(
            request.query,
            hints,
            image_size=sent.size,
            context=context,
            frame="norm1000" if frame == "norm1000" else "pixels",
            max_targets=o.max_targets,
        )
        return Prepared(self.chat_messages(prompt, sent, o), sent, hints, frame, "rscore", request.query)

    def chat_messages(self, prompt: Prompt, sent: SentImage, options: Any) -> tuple[Mapping[str, Any], ...]:
        """The system and user turns of a prompt, the picture first in the user turn."""
        return (
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": [self.picture_part(sent, options), {"type": "text", "text": prompt.user}]},
        )

    def picture_part(self, sent: SentImage, options: Any) -> dict[str, Any]:
        """The picture as one content part of a chat turn (default: a processor's ``{"type": "image"}``)."""
        return {"type": "image"}

    # ------------------------------------------------------------------------------------------------ generate
    def generate(self, messages: Sequence[Mapping[str, Any]], prepared: Prepared, options: Any,
                 session: Any) -> Generation:  # fmt: skip
        """Run the model on a chat (the only backend-specific stage)."""
        raise NotImplementedError(f"{type(self).__name__}.generate")

    # ------------------------------------------------------------------------------------------------ parse
    def parse(self, generation: Generation, prepared: Prepared, options: Any) -> Any:
        """The answer in a generation (:func:`~rscore.reasoners.parsing.parse_answer`); raises
        :class:`~rscore.reasoners.parsing.AnswerParseError` for one that cannot be used (a repair turn follows)."""
        label = (prepared.hints.label if prepared.hints is not None else None) or "target"
        return parse_answer(
            generation.text,
            image_size=prepared.sent.size,
            frame=prepared.frame,
            default_label=label,
            max_targets=options.max_targets,
        )

    def repair(self, previous: str, error: str, run: Run, options: Any) -> str:
        """The user turn that asks again after an unusable answer."""
        last = run.generations[-1] if run.generations else None
        if last is not None and last.cut_off:
            error += f" (the answer was cut off at {last.cut_off} tokens: be brief)"
        sent = run.prepared.sent
        return repair_prompt(previous, error, frame=run.prepared.frame, image_size=sent.size)

    def failure(self, what: str, session: Any) -> BackendUnavailable:
        """The error of a plan that got no usable answer."""
        return BackendUnavailable(f"{self.name} reasoner ({self.describe(session)}): {what}")

    def describe(self, session: Any) -> str:
        """Who answered, for messages and logs."""
        return str(getattr(self, "model_name", self.name))

    def run_info(self, run: Run, options: Any, session: Any) -> dict[str, Any]:
        """What the run cost and who answered, for ``Plan.match``."""
        info: dict[str, Any] = {"requests": len(run.generations), "repaired": bool(run.errors)}
        tokens = run.tokens()
        if tokens is not None:
            info["tokens"] = tokens
        info["reason_time_s"] = round(run.elapsed, 4)
        return info

    def finish(self, answer: Any, run: Run, options: Any, session: Any) -> Plan:
        """The plan of a parsed answer, in original pixels (:func:`~rscore.reasoners.parsing.answer_to_plan`)."""
        p = run.prepared
        return answer_to_plan(answer, sent=p.sent, hints=p.hints, reasoner=self.name, raw=run.outputs[-1],
                              info=self.run_info(run, options, session), extra_steps=run.repair_steps(self.name))  # fmt: skip

    # ------------------------------------------------------------------------------------------------ plan
    def plan(self, scene: Scene, request: Request, templates: Sequence[Template]) -> Plan:
        """Fit the scene's picture, ask the model (repair turns as the options say), return the plan in original
        pixels."""
        from rscore.io.images import scene_rgb8

        o = self.options_for(request)
        sent = self.fit(scene_rgb8(scene), o)
        return self.plan_picture(
            sent, request, templates, kind=scene.kind, context=describe_scene(scene, sent), options=o
        )

    def plan_picture(
        self,
        sent: SentImage,
        request: Request,
        templates: Sequence[Template],
        *,
        kind: str | None = None,
        context: str = "",
        options: Any = None,
    ) -> Plan:
        """Plan for a picture already fitted with :meth:`fit` (e.g. one tile of a large scene); targets come back in
        ``sent.original_size`` pixels."""
        o = options or self.options_for(request)
        with self.session(o) as session:
            prepared = self.prepare(sent, request, templates, kind=kind, context=context, options=o, session=session)
            run = Run(prepared)

            def generate(messages: list[dict[str, Any]]) -> str:
                g = self.generate(messages, prepared, o, session)
                run.generations.append(g)
                if g.cut_off:
                    log.info("%s: the answer was cut off at %d tokens", self.describe(session), g.cut_off)
                return g.text

            t0 = time.monotonic()
            try:
                answer, run.outputs, run.errors = parse_with_repair(
                    generate,
                    list(prepared.messages),
                    lambda text: self.parse(run.generations[-1], prepared, o),
                    lambda previous, error: self.repair(previous, error, run, o),
                    repairs=self.repairs(o),
                )
            except AnswerParseError as exc:
                raise self.failure(f"no usable answer: {exc}", session) from None
            run.elapsed = time.monotonic() - t0
            plan = self.finish(answer, run, o, session)
        log.info("%s: %s", self.describe(session),
                 f"absent: {plan.reason}" if plan.absent else f"{len(plan.targets)} target(s)")  # fmt: skip
        return plan
