"""Turn what a vision-language model wrote into targets: every answer format RS models emit, one coordinate rule.

Accepted answers (found anywhere in the text: inside ```json fences, after prose, in ``<answer>`` tags):

- **rscore's schema** (:data:`rscore.reasoners.prompting.ANSWER_SCHEMA`)::

      {"steps": [...], "targets": [{"label", "box": [x0,y0,x1,y1], "positive_points": [[x,y]],
                                    "negative_points": [[x,y]], "confidence"}]}
      {"steps": [...], "absent": true, "reason": "..."}

- **Qwen2.5-VL grounding JSON**: ``[{"bbox_2d": [x0,y0,x1,y1], "point_2d": [x,y], "label": "..."}, ...]`` (or one
  such object), usually in a ```json fence.
- **Seg-Zero / VisionReasoner**: ``<think>...</think><answer>...</answer>`` where the answer is a JSON list of
  ``{"bbox_2d", "point_2d"}`` (VisionReasoner) or Seg-Zero's ``{"bbox", "points_1", "points_2"}`` - also with Python
  quoting (``{'bbox': ...}``), which Seg-Zero's own prompt example uses.
- **Absent**: ``{"absent": true, ...}``, ``{"targets": []}``, an empty list ``[]``, or an ``<answer>`` of ``none`` /
  ``no object`` / ``absent``.

Key aliases: boxes ``box`` | ``bbox`` | ``bbox_2d`` (``[x0,y0,x1,y1]``, ``[[x0,y0],[x1,y1]]`` or
``{"x0","y0","x1","y1"}`` / ``{"xmin",...}``); positive points ``positive_points`` | ``points_pos`` | ``point_2d`` |
``points_1`` | ``points_2`` | ``point`` | ``points`` (``[x, y]`` or ``[x, y, 1|0]``); negative points
``negative_points`` | ``points_neg``; ``label`` | ``name`` | ``category``; ``confidence`` | ``score`` (values in
(1, 100] are read as percent). Trailing commas and Python literals (``True``, single quotes) are tolerated.

**Coordinate frames** (``frame`` argument / the reasoner's ``coords`` option):

- ``pixels``: pixels of the picture as sent (Qwen2.5-VL, Seg-Zero, VisionReasoner, what rscore's prompt asks for).
- ``norm1000``: 0-1000 on both axes (Qwen2-VL, Qwen3-VL).  ``norm1``: 0-1 on both axes.
- ``auto`` (default) decides per answer, from all its coordinates together: ``norm1`` when every value lies in
  [0, 1] and at least one is fractional; ``norm1000`` when some x exceeds the picture's width (or some y its height)
  by more than 5 % while every value lies in [0, 1000]; otherwise ``pixels``. An answer is only re-read as normalised
  when it cannot be pixels, so on pictures whose sides are both >= 1000 px ``auto`` always means pixels - set the
  frame explicitly for models that answer in 0-1000 (:func:`frame_for_model` knows the Qwen families).

**Clipping** (in the sent picture, ``W`` x ``H`` px): box corners are ordered (x0 <= x1, y0 <= y1) and clipped to
``[0, W] x [0, H]``; a box narrower or lower than ``min_box_px`` (1 px) after clipping is dropped; points outside the
picture are dropped and points on its far edge moved onto the last pixel. A target left without a box and without a
positive point is dropped. Each of these is reported in :attr:`ParsedAnswer.notes`. If the model gave targets and
*all* of them were dropped, the answer is an error (the repair turn tells the model why), not an empty result.

:func:`map_targets` takes targets from the sent picture to original pixels (box edges scale with the image; points
are pixel centres: ``x_orig = (x + 0.5) * sx - 0.5``). :func:`answer_to_plan` builds the :class:`~rscore.types.Plan`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rscore.errors import OptionError
from rscore.reasoners.jsonfind import AnswerParseError, find_value
from rscore.types import Plan, Step, Target

if TYPE_CHECKING:
    from rscore.reasoners.prompting import SentImage, TemplateHints

log = logging.getLogger(__name__)

__all__ = [
    "FRAMES",
    "AnswerParseError",
    "ParsedAnswer",
    "parse_answer",
    "split_think_answer",
    "find_json",
    "steps_from_text",
    "resolve_frame",
    "frame_for_model",
    "map_targets",
    "answer_to_plan",
    "parse_with_repair",
]

FRAMES = ("auto", "pixels", "norm1000", "norm1")
NORM_TOLERANCE = 1.05  # a coordinate this far beyond the picture's side cannot be a pixel of it
MAX_STEPS = 20
MAX_STEP_CHARS = 500

BOX_KEYS = ("box", "bbox", "bbox_2d")
POS_KEYS = ("positive_points", "points_pos", "pos_points", "point_2d", "points_1", "points_2", "point", "points")
NEG_KEYS = ("negative_points", "points_neg", "neg_points")
LABEL_KEYS = ("label", "name", "category", "class", "object")
CONF_KEYS = ("confidence", "score", "conf")
PHRASE_KEYS = ("phrase", "description")
_GEOMETRY = frozenset(BOX_KEYS + POS_KEYS + NEG_KEYS)
_SCHEMA_KEYS = frozenset(("targets", "absent", "steps"))


@dataclass(frozen=True)
class ParsedAnswer:
    """A model's answer in the frame of the picture as sent.

    ``targets`` are in sent-picture pixels, clipped, degenerate ones dropped. ``steps`` are the model's reasoning
    steps (its explicit ``steps``, else split from its ``<think>`` text or the prose around the JSON); ``think`` is
    that free text. ``format`` is ``rscore`` | ``qwen-grounding`` | ``seg-zero``; ``frame`` the coordinate frame the
    answer was read in; ``notes`` what was clipped or dropped.
    """

    targets: tuple[Target, ...] = ()
    steps: tuple[str, ...] = ()
    absent: bool = False
    reason: str = ""
    think: str = ""
    format: str = "rscore"
    frame: str = "pixels"
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------- text structure
_THINK = re.compile(r"<think>(.*?)(?=</think>|<answer>|\Z)", re.S | re.I)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|(?=<answer>)|\Z)", re.S | re.I)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S | re.I)
_NO_OBJECT = re.compile(
    r"(none|null|nothing|no|absent|n/?a|not (found|present|visible|in the image)|"
    r"no (such |matching |visible )?(object|target|region|thing)s?( (found|present|visible|in the (image|picture)))?)",
    re.I,
)


def split_think_answer(text: str) -> tuple[str, str, bool]:
    """Split ``<think>``/``<answer>`` output: ``(think, answer_body, tagged)``.

    ``tagged`` is true when an ``<answer>`` tag was present (its last occurrence is the body; an unclosed tag runs to
    the end). Without one, the body is the text minus its ``<think>`` blocks. A bare ``</think>`` (chat templates
    that open the think block inside the prompt) splits the text there.
    """
    if re.search(r"</think>", text, re.I) and not re.search(r"<think>", text, re.I):
        head, _, tail = re.split(r"(</think>)", text, maxsplit=1, flags=re.I)
        text = f"<think>{head}</think>{tail}"
    think = "\n".join(m.group(1).strip() for m in _THINK.finditer(text) if m.group(1).strip())
    answers = list(_ANSWER.finditer(text))
    if answers:
        return think, answers[-1].group(1).strip(), True
    return think, _THINK_BLOCK.sub("", text).strip(), False


def steps_from_text(text: str, *, max_steps: int = MAX_STEPS, max_chars: int = MAX_STEP_CHARS) -> tuple[str, ...]:
    """Split free reasoning text into steps: by lines (list markers removed), a single paragraph by sentences."""
    lines = [
        re.sub(r"^\s*(?:[-*\u2022]|\d+[.)]|step \d+[:.])\s*", "", ln, flags=re.I).strip() for ln in text.splitlines()
    ]
    lines = [ln for ln in lines if ln]
    if len(lines) <= 1:
        lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", " ".join(lines)) if s.strip()]
    out = [ln if len(ln) <= max_chars else ln[: max_chars - 3].rstrip() + "..." for ln in lines]
    return tuple(out[:max_steps])


# -------------------------------------------------------------------------------------------------- finding JSON
def _priority(value: Any) -> int:
    """2: an answer structure; 1: a weak one (bare box, empty list); 0: not an answer."""
    if isinstance(value, dict):
        keys = {str(k).lower() for k in value}
        return 2 if keys & (_SCHEMA_KEYS | _GEOMETRY) else 0
    if isinstance(value, (list, tuple)):
        if not value or _is_number_list(value, 4):
            return 1
        if all(isinstance(v, dict) for v in value) and any({str(k).lower() for k in v} & _GEOMETRY for v in value):
            return 2
    return 0


def find_json(text: str) -> tuple[Any, str]:
    """The answer value in ``text`` and the prose around it: ``(value, prose)``.

    Fenced blocks are searched first, then the whole text; a full answer structure beats a bare box or an empty list.
    Raises :class:`AnswerParseError` when there is none, or when the JSON that holds it is malformed or cut off
    (:func:`rscore.reasoners.jsonfind.find_value`).
    """
    return find_value(text, _priority)


# --------------------------------------------------------------------------------------------- reading targets
@dataclass
class _Raw:
    """A target as the model wrote it (numbers in its own frame)."""

    label: str
    box: tuple[float, float, float, float] | None
    positive: list[tuple[float, float]]
    negative: list[tuple[float, float]]
    confidence: float
    phrase: str | None


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise AnswerParseError(f"{what}: {v!r} is not a number")
    try:
        x = float(v)
    except ValueError:
        raise AnswerParseError(f"{what}: {v!r} is not a number") from None
    if not math.isfinite(x):
        raise AnswerParseError(f"{what}: {v!r} is not a finite number")
    return x


def _is_number_list(v: Any, n: int) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) == n
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )


def _box(v: Any, what: str) -> tuple[float, float, float, float] | None:
    if v is None:
        return None
    if isinstance(v, dict):
        d = {str(k).lower(): x for k, x in v.items()}
        for keys in (("x0", "y0", "x1", "y1"), ("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2")):
            if all(k in d for k in keys):
                v = [d[k] for k in keys]
                break
        else:
            raise AnswerParseError(f"{what}: box {v!r} needs x0, y0, x1, y1")
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
        v = [*v[0], *v[1]]
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise AnswerParseError(f"{what}: box must be [x0, y0, x1, y1], got {v!r}")
    x0, y0, x1, y1 = (_number(x, what) for x in v)
    return x0, y0, x1, y1


def _point(v: Any, what: str) -> tuple[float, float, int]:
    if isinstance(v, dict):
        d = {str(k).lower(): x for k, x in v.items()}
        if "x" not in d or "y" not in d:
            raise AnswerParseError(f"{what}: point {v!r} needs x and y")
        flag = d.get("label", d.get("positive", 1))
        return _number(d["x"], what), _number(d["y"], what), 0 if flag in (0, False, "0", "negative") else 1
    if isinstance(v, (list, tuple)) and len(v) in (2, 3):
        flag = 1 if len(v) == 2 else int(_number(v[2], what) != 0)
        return _number(v[0], what), _number(v[1], what), flag
    raise AnswerParseError(f"{what}: point must be [x, y], got {v!r}")


def _points(v: Any, what: str) -> list[tuple[float, float, int]]:
    if v is None or v == []:
        return []
    if isinstance(v, dict) or (isinstance(v, (list, tuple)) and v and not isinstance(v[0], (list, tuple, dict))):
        return [_point(v, what)]
    if isinstance(v, (list, tuple)):
        return [_point(p, what) for p in v]
    raise AnswerParseError(f"{what}: points must be a list of [x, y], got {v!r}")


def _first(d: Mapping[str, Any], keys: Iterable[str]) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _raw_target(obj: Any, index: int, default_label: str, notes: list[str]) -> _Raw:
    what = f"target {index + 1}"
    if not isinstance(obj, dict):
        raise AnswerParseError(f"{what} is not an object: {obj!r}")
    d = {str(k).lower(): v for k, v in obj.items()}
    label_v = _first(d, LABEL_KEYS)
    label = " ".join(str(label_v).split())[:120] if label_v is not None and str(label_v).strip() else default_label
    what = f"target {index + 1} ('{label}')"
    box = _box(_first(d, BOX_KEYS), what)
    positive: list[tuple[float, float]] = []
    negative: list[tuple[float, float]] = []
    for key in POS_KEYS:
        for x, y, flag in _points(d.get(key), what):
            (positive if flag else negative).append((x, y))
    for key in NEG_KEYS:
        negative += [(x, y) for x, y, _ in _points(d.get(key), what)]
    conf_v = _first(d, CONF_KEYS)
    confidence = 1.0
    if conf_v is not None:
        try:
            confidence = _number(conf_v, what)
        except AnswerParseError:
            notes.append(f"{what}: confidence {conf_v!r} is not a number; 1.0 used")
        if 1.0 < confidence <= 100.0:
            confidence /= 100.0
        confidence = min(1.0, max(0.0, confidence))
    phrase_v = _first(d, PHRASE_KEYS)
    return _Raw(label, box, positive, negative, confidence, str(phrase_v) if phrase_v is not None else None)


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "yes", "1", "absent")
    return bool(v)


def _explicit_steps(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return steps_from_text(v)
    if isinstance(v, (list, tuple)):
        out = []
        for item in v:
            if isinstance(item, dict):
                item = _first({str(k).lower(): x for k, x in item.items()}, ("text", "step", "description", "thought"))
            if item is not None and str(item).strip():
                text = " ".join(str(item).split())
                out.append(text if len(text) <= MAX_STEP_CHARS else text[: MAX_STEP_CHARS - 3] + "...")
        return tuple(out[:MAX_STEPS])
    return ()


def _interpret(
    value: Any, default_label: str, tagged: bool, notes: list[str]
) -> tuple[list[_Raw], tuple[str, ...], bool, str, str]:
    """``(raw targets, steps, absent, reason, format)`` of a recognised answer value."""
    grounding = "seg-zero" if tagged else "qwen-grounding"
    if isinstance(value, dict):
        d = {str(k).lower(): v for k, v in value.items()}
        if d.keys() & _SCHEMA_KEYS and not (d.keys() & _GEOMETRY and "targets" not in d and "absent" not in d):
            steps = _explicit_steps(d.get("steps", d.get("reasoning")))
            absent = _bool(d.get("absent", False))
            reason = " ".join(str(d.get("reason") or d.get("why") or "").split())
            items = d.get("targets")
            if items is None and not absent:
                raise AnswerParseError("the JSON has neither 'targets' nor 'absent': true")
            items = items or []
            if not isinstance(items, (list, tuple)):
                items = [items] if isinstance(items, dict) else None
                if items is None:
                    raise AnswerParseError("'targets' must be a list of objects")
            raws = [_raw_target(t, i, default_label, notes) for i, t in enumerate(items)]
            if absent and raws:
                raise AnswerParseError(
                    f"the answer says absent but also lists {len(raws)} target(s): give targets or absent, not both"
                )
            return raws, steps, absent or not raws, reason, "rscore"
        return [_raw_target(d, 0, default_label, notes)], (), False, "", grounding
    if isinstance(value, (list, tuple)):
        if not value:
            return [], (), True, "", grounding
        if _is_number_list(value, 4):
            return [_Raw(default_label, _box(value, "box"), [], [], 1.0, None)], (), False, "", grounding
        raws = [_raw_target(v, i, default_label, notes) for i, v in enumerate(value)]
        return raws, (), False, "", grounding
    raise AnswerParseError(f"the answer is a {type(value).__name__}, not an object or a list")


# ------------------------------------------------------------------------------------------------ coordinates
def frame_for_model(model: str | None) -> str:
    """The coordinate frame a model family answers in by default: ``norm1000`` for Qwen2-VL and Qwen3-VL names
    (``Qwen/Qwen2-VL-7B-Instruct``, ``qwen3-vl:8b``), ``auto`` for anything else (Qwen2.5-VL answers in pixels)."""
    if model and re.search(r"qwen[-_ ]?(?:2|3)[-_ ]?vl", model, re.I):
        return "norm1000"
    return "auto"


def _coords(raws: Sequence[_Raw]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for r in raws:
        if r.box is not None:
            xs += [r.box[0], r.box[2]]
            ys += [r.box[1], r.box[3]]
        for x, y in (*r.positive, *r.negative):
            xs.append(x)
            ys.append(y)
    return xs, ys


def resolve_frame(frame: str, xs: Sequence[float], ys: Sequence[float], size: tuple[int, int]) -> str:
    """The frame to read an answer's coordinates in (see the module docstring for the ``auto`` rule)."""
    if frame not in FRAMES:
        raise OptionError(f"unknown coordinate frame '{frame}' (use {', '.join(FRAMES)})")
    if frame != "auto":
        return frame
    values = [*xs, *ys]
    if not values:
        return "pixels"
    if all(0.0 <= v <= 1.0 for v in values) and any(v != int(v) for v in values):
        return "norm1"
    w, h = size
    beyond = max(xs, default=0.0) > w * NORM_TOLERANCE or max(ys, default=0.0) > h * NORM_TOLERANCE
    if beyond and all(0.0 <= v <= 1000.0 for v in values):
        return "norm1000"
    return "pixels"


def _to_pixels(
    raws: list[_Raw], frame: str, size: tuple[int, int], min_box_px: float, notes: list[str]
) -> list[Target]:
    w, h = size
    fx, fy = {"pixels": (1.0, 1.0), "norm1000": (w / 1000.0, h / 1000.0), "norm1": (float(w), float(h))}[frame]
    out: list[Target] = []
    for r in raws:
        box = None
        if r.box is not None:
            x0, y0, x1, y1 = r.box[0] * fx, r.box[1] * fy, r.box[2] * fx, r.box[3] * fy
            if x1 < x0 or y1 < y0:
                notes.append(f"'{r.label}': box corners reordered")
                x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
            cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if cx1 - cx0 < min_box_px or cy1 - cy0 < min_box_px:
                inside = cx1 > cx0 and cy1 > cy0
                notes.append(
                    f"'{r.label}': box {_fmt(r.box)} dropped ("
                    + ("thinner than 1 px" if inside else f"outside the {w}x{h} picture")
                    + ")"
                )
            else:
                if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                    notes.append(f"'{r.label}': box {_fmt(r.box)} clipped to the {w}x{h} picture")
                box = (cx0, cy0, cx1, cy1)
        points: list[tuple[float, float, int]] = []
        for flag, pts in ((1, r.positive), (0, r.negative)):
            for x, y in pts:
                px, py = x * fx, y * fy
                if 0.0 <= px <= w and 0.0 <= py <= h:
                    points.append((min(px, w - 1.0), min(py, h - 1.0), flag))
                else:
                    notes.append(f"'{r.label}': point {_fmt((x, y))} outside the {w}x{h} picture dropped")
        if box is None and not any(f for _, _, f in points):
            notes.append(f"'{r.label}': dropped (no box and no positive point inside the picture)")
            continue
        out.append(Target(r.label, box, tuple(points), r.phrase, r.confidence))
    return out


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


# ------------------------------------------------------------------------------------------------------ parsing
def parse_answer(
    text: str,
    image_size: tuple[int, int],
    *,
    frame: str = "auto",
    default_label: str = "target",
    max_targets: int = 100,
    min_box_px: float = 1.0,
) -> ParsedAnswer:
    """Read a model's output (any accepted format, see the module docstring) against the picture it saw.

    ``image_size`` is the sent picture's ``(width, height)`` in px; the returned targets are in its pixels.
    ``default_label`` names targets the model left unnamed. At most ``max_targets`` are kept (in the model's order).
    Raises :class:`AnswerParseError` (a one-line reason meant for the repair turn) for unusable output.
    """
    if frame not in FRAMES:
        raise OptionError(f"unknown coordinate frame '{frame}' (use {', '.join(FRAMES)})")
    if not isinstance(text, str) or not text.strip():
        raise AnswerParseError("the answer is empty")
    think, body, tagged = split_think_answer(text)
    bare = body.strip().strip(".!\"' ").strip()
    if tagged and bare and _NO_OBJECT.fullmatch(bare):
        reason = steps_from_text(think)[-1] if think else ""
        return ParsedAnswer(
            absent=True,
            reason=reason or f"the model answered '{bare}'",
            think=think,
            steps=steps_from_text(think),
            format="seg-zero",
        )
    if not body:
        raise AnswerParseError("the answer has reasoning but no JSON answer after it")
    value, prose = find_json(body)
    notes: list[str] = []
    raws, steps, absent, reason, fmt = _interpret(value, default_label, tagged, notes)
    narrative = think or (prose if len(prose) >= 20 and re.search(r"[A-Za-z]{3}", prose) else "")
    if not steps and narrative:
        steps = steps_from_text(narrative)
    if absent:
        if not reason:
            reason = (
                steps[-1]
                if steps and fmt != "rscore"
                else "the model found nothing in the image that answers the query"
            )
        return ParsedAnswer((), steps, True, reason, narrative, fmt, "pixels", tuple(notes))
    xs, ys = _coords(raws)
    used = resolve_frame(frame, xs, ys, image_size)
    targets = _to_pixels(raws, used, image_size, min_box_px, notes)
    if not targets:
        raise AnswerParseError(
            f"none of the {len(raws)} target(s) lies inside the {image_size[0]}x{image_size[1]} picture "
            f"({'; '.join(notes[:3])})"
        )
    if len(targets) > max_targets:
        notes.append(f"{len(targets) - max_targets} target(s) beyond the first {max_targets} dropped")
        targets = targets[:max_targets]
    if used != "pixels":
        notes.append(f"coordinates read as {used}")
    return ParsedAnswer(tuple(targets), steps, False, "", narrative, fmt, used, tuple(notes))


def parse_with_repair(
    generate: Callable[[list[dict[str, Any]]], str],
    messages: Sequence[dict[str, Any]],
    parse: Callable[[str], ParsedAnswer],
    repair: Callable[[str, str], str],
    *,
    repairs: int = 1,
) -> tuple[ParsedAnswer, list[str], list[str]]:
    """Ask, parse, and on an unusable answer ask again with the model's own output and what was wrong with it.

    ``generate(messages) -> text`` runs the model on OpenAI-style ``{"role", "content"}`` messages; ``parse`` is
    usually a :func:`functools.partial` of :func:`parse_answer`; ``repair(previous, error) -> text`` builds the repair
    turn (:func:`rscore.reasoners.prompting.repair_prompt`). Returns ``(answer, outputs, errors)``: every raw output
    and every parse error, in order. After ``repairs`` failed repairs raises :class:`AnswerParseError` with the last
    error.
    """
    convo = list(messages)
    outputs: list[str] = []
    errors: list[str] = []
    for attempt in range(repairs + 1):
        text = generate(convo)
        outputs.append(text)
        try:
            return parse(text), outputs, errors
        except AnswerParseError as exc:
            errors.append(str(exc))
            log.info("unusable model answer (attempt %d): %s", attempt + 1, exc)
            log.debug("the unusable answer was: %r", text[:2000])
            convo = [
                *convo,
                {"role": "assistant", "content": text},
                {"role": "user", "content": repair(text, str(exc))},
            ]
    plural = "s" if repairs != 1 else ""
    raise AnswerParseError(f"{errors[-1]} (still unusable after {repairs} repair attempt{plural})")


# -------------------------------------------------------------------------------------------------- to the plan
def map_targets(targets: Iterable[Target], from_size: tuple[int, int], to_size: tuple[int, int]) -> tuple[Target, ...]:
    """Targets from a ``from_size`` picture to ``to_size`` pixels (both ``(width, height)``), clipped to it.

    Box edges scale by ``to / from`` per axis; points are pixel centres (``(x + 0.5) * s - 0.5``), kept inside
    ``[0, W-1] x [0, H-1]``.
    """
    (fw, fh), (tw, th) = from_size, to_size
    sx, sy = tw / fw, th / fh
    out = []
    for t in targets:
        box = None
        if t.box is not None:
            x0, y0, x1, y1 = t.box
            box = (max(0.0, x0 * sx), max(0.0, y0 * sy), min(float(tw), x1 * sx), min(float(th), y1 * sy))
        points = tuple(
            (min(tw - 1.0, max(0.0, (x + 0.5) * sx - 0.5)), min(th - 1.0, max(0.0, (y + 0.5) * sy - 0.5)), f)
            for x, y, f in t.points
        )
        out.append(Target(t.label, box, points, t.phrase, t.confidence))
    return tuple(out)


def _hint_step(hints: TemplateHints, reasoner: str) -> Step:
    m = hints.match
    if hints.best is not None:
        how = "forced" if m.get("method") == "forced" else f"{m.get('method')} match {float(m.get('score', 0)):.2f}"
        return Step(
            f"domain knowledge: the prompt expansion of template '{hints.best.qualified_name}' "
            f"({hints.best.label}; {how}) was given to the model",
            operator=reasoner,
        )
    if hints.listed:
        alts = m.get("alternatives") or []
        best = f" (best {alts[0]['template']} {alts[0]['score']:.2f} < {m.get('threshold')})" if alts else ""
        return Step(
            f"no template matched the query{best}; the plugin's {len(hints.listed)} template(s) were listed to the "
            "model as domain hints",
            operator=reasoner,
        )
    return Step("no plugin template applies to this input; the model reasoned from the query alone", operator=reasoner)


def answer_to_plan(
    answer: ParsedAnswer,
    *,
    sent: SentImage,
    hints: TemplateHints,
    reasoner: str,
    raw: str | None,
    info: Mapping[str, Any] | None = None,
    extra_steps: Sequence[Step] = (),
) -> Plan:
    """The :class:`~rscore.types.Plan` of a parsed answer, targets mapped to original pixels.

    ``steps``: how the domain knowledge was chosen, ``extra_steps`` (e.g. a repair), the model's reasoning, then the
    parser's notes. ``match``: the template match (as the analytic reasoner records it) plus ``info`` (model id,
    endpoint...) and ``answer_format``, ``coordinates``, ``image_sent`` / ``image_original`` ([width, height] px).
    ``raw`` (the model's own words, ``<think>`` included) goes to ``Plan.raw``.
    """
    steps = [_hint_step(hints, reasoner), *extra_steps]
    steps += [Step(s) for s in answer.steps]
    steps += [Step(f"answer check: {n}", operator="parser") for n in answer.notes]
    match = {
        **hints.match,
        **(info or {}),
        "answer_format": answer.format,
        "coordinates": answer.frame,
        "image_sent": list(sent.size),
        "image_original": list(sent.original_size),
    }
    template = hints.best.qualified_name if hints.best is not None else None
    if answer.absent:
        return Plan(
            steps=tuple(steps),
            absent=True,
            reason=answer.reason,
            template=template,
            reasoner=reasoner,
            match=match,
            raw=raw,
        )
    targets = map_targets(answer.targets, sent.size, sent.original_size)
    return Plan(steps=tuple(steps), targets=targets, template=template, reasoner=reasoner, match=match, raw=raw)
