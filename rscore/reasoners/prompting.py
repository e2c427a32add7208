"""What a vision-language reasoner is shown: the picture as sent, the domain hints, the prompt, the answer schema.

Every VLM reasoner (``openai`` over HTTP, ``transformers`` locally) builds its request from these pieces, so the
models see the same instructions and their answers go through the same parser (:mod:`rscore.reasoners.parsing`)::

    hints = select_templates(request.query, templates, kind=scene.kind, forced=request.option("template"))
    sent = fit_image(scene_rgb8(scene), max_side=1024, max_pixels=1024 * 1024, multiple=28)
    prompt = build_prompt(request.query, hints, image_size=sent.size, context=describe_scene(scene, sent))
    # system = prompt.system, user = [image, prompt.user]  -> the model -> text
    answer = parse_answer(text, sent.size)            # targets in the sent image's pixels
    plan = answer_to_plan(answer, sent=sent, hints=hints, reasoner="...", raw=text)   # original pixels

**Image size.** The client resizes the picture itself so that coordinates in the answer refer to an image whose size
it knows: the longer side is at most ``max_side`` px (default 1024) and the area at most ``max_pixels`` (default
1024 x 1024); images are never enlarged beyond that. Each side is then rounded to the nearest multiple of
``multiple`` (default 28; down when rounding up would break a limit, and never below one multiple). Qwen2/2.5-VL
servers resize every image to multiples of 28 px and answer in *that* frame; sending a size that already is one
makes their frame and ours the same. Models that resize differently (Qwen3-VL: 32) answer in normalised
coordinates, for which the size does not matter. Answers are mapped back to original pixels with a separate scale
per axis (:attr:`SentImage.scale`), so the small aspect change from rounding costs nothing.

**Domain knowledge.** :func:`select_templates` picks the plugin template that best matches the query (the same
matcher as the analytic reasoner, :mod:`rscore.engine.matching`), or a forced one, and hands its ``prompt`` expansion
to the model; when none matches, every template of the plugin is listed briefly so the model still learns what the
domain's terms mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import OptionError

if TYPE_CHECKING:
    from rscore.sdk import Template
    from rscore.types import Scene, Window

__all__ = [
    "ANSWER_SCHEMA",
    "ANSWER_EXAMPLE",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MULTIPLE",
    "SentImage",
    "TemplateHints",
    "Prompt",
    "fit_image",
    "select_templates",
    "ReasoningView",
    "reasoning_view",
    "describe_scene",
    "build_prompt",
    "repair_prompt",
]

DEFAULT_MAX_SIDE = 1024
DEFAULT_MAX_PIXELS = 1024 * 1024
DEFAULT_MULTIPLE = 28
MAX_LISTED_TEMPLATES = 12  # templates listed when none matches the query
MAX_HINT_CHARS = 240  # per listed template

ANSWER_SCHEMA: Mapping[str, Any] = {
    "title": "rscore reasoning answer",
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the reasoning, one short step per item, in order",
        },
        "targets": {
            "type": "array",
            "description": "one item per separate object or region that answers the request; empty when absent",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "box": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 4,
                        "maxItems": 4,
                        "description": "[x0, y0, x1, y1]: left, top, right, bottom",
                    },
                    "positive_points": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                        "description": "[x, y] points clearly inside the target",
                    },
                    "negative_points": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                        "description": "[x, y] points on nearby things that are NOT the target",
                    },
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["label", "box"],
            },
        },
        "absent": {"type": "boolean", "description": "true when nothing in the image answers the request"},
        "reason": {"type": "string", "description": "why the target is absent (when absent is true)"},
    },
    "required": ["steps", "targets"],
}
"""JSON Schema of the structured answer (usable as an OpenAI ``response_format`` / guided-decoding schema)."""

ANSWER_EXAMPLE = (
    '{"steps": ["...", "..."], "targets": [{"label": "...", "box": [x0, y0, x1, y1], '
    '"positive_points": [[x, y]], "negative_points": [[x, y]], "confidence": 0.8}]}\n'
    "or, when nothing in the image answers the request:\n"
    '{"steps": ["..."], "targets": [], "absent": true, "reason": "..."}'
)


# -------------------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class SentImage:
    """The picture as handed to a model, and how its pixels relate to the original's.

    ``array`` is ``(h, w, 3)`` uint8; ``original_size`` and :attr:`size` are ``(width, height)`` in pixels.
    """

    array: np.ndarray
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the sent picture, px."""
        return int(self.array.shape[1]), int(self.array.shape[0])

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per sent pixel, ``(sx, sy)`` (>= 1 when the picture was shrunk)."""
        (w, h), (ow, oh) = self.size, self.original_size
        return ow / w, oh / h

    @property
    def resized(self) -> bool:
        return self.size != self.original_size


def _to_multiple(value: float, multiple: int, *, down: bool) -> int:
    """``value`` (px) rounded to a multiple of ``multiple``: nearest, or down; never below one multiple."""
    n = math.floor(value / multiple) if down else round(value / multiple)
    return max(1, int(n)) * multiple


def _fit_sides(fw: float, fh: float, multiple: int, max_side: int, max_pixels: int) -> tuple[int, int]:
    """Round the scaled size ``(fw, fh)`` to multiples: nearest where that keeps within the limits, else down."""
    tw, th = _to_multiple(fw, multiple, down=False), _to_multiple(fh, multiple, down=False)
    if tw > max_side:
        tw = _to_multiple(fw, multiple, down=True)
    if th > max_side:
        th = _to_multiple(fh, multiple, down=True)
    if tw * th > max_pixels:
        tw, th = _to_multiple(fw, multiple, down=True), _to_multiple(fh, multiple, down=True)
    return tw, th


def fit_image(
    rgb: np.ndarray,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    multiple: int = DEFAULT_MULTIPLE,
) -> SentImage:
    """Resize an ``(H, W, 3)`` uint8 picture for a model (see the module docstring for the rule).

    ``max_side`` (px) bounds the longer side, ``max_pixels`` the area, ``multiple`` (px, 1 = off) is what each side is
    rounded to. The picture is shrunk with area averaging (Pillow's box-then-Lanczos ``reduce``) and enlarged only by
    the rounding to a multiple.
    """
    from PIL import Image

    if multiple < 1 or max_side < multiple or max_pixels < multiple * multiple:
        raise OptionError(
            f"image size limits too small: max_side={max_side} px and max_pixels={max_pixels} must allow at least one "
            f"{multiple}x{multiple} px block (multiple={multiple})"
        )
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise OptionError(f"a reasoner needs an (H, W, 3) uint8 picture, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    scale = min(1.0, max_side / max(w, h), math.sqrt(max_pixels / (w * h)))
    tw, th = _fit_sides(w * scale, h * scale, multiple, max_side, max_pixels)
    if (tw, th) == (w, h):
        return SentImage(np.ascontiguousarray(arr), (w, h))
    img = Image.fromarray(arr).resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return SentImage(np.asarray(img), (w, h))


# ----------------------------------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class TemplateHints:
    """The plugin knowledge chosen for a prompt.

    ``best`` is the matched (or forced) template whose expansion is used, ``None`` when the query matched none and
    ``listed`` holds the templates given briefly instead. ``match`` has the same keys as an analytic plan's
    (``template``, ``method``, ``score``, ``threshold``, ``alternatives``) so result.json reads the same.
    """

    best: Template | None
    listed: tuple[Template, ...] = ()
    match: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str | None:
        return self.best.label if self.best is not None else None


def select_templates(
    query: str,
    templates: Sequence[Template],
    *,
    kind: str | None = None,
    forced: str | None = None,
    matcher: str | None = None,
    max_listed: int = MAX_LISTED_TEMPLATES,
) -> TemplateHints:
    """Pick the template whose ``prompt`` expansion goes to the model.

    ``forced`` (a template name or qualified name, as ``--template``) wins; otherwise the templates that apply to
    ``kind`` are ranked with :class:`rscore.engine.matching.TemplateMatcher` (``matcher``: auto | embedding |
    keyword) and the best one over the threshold is used. Unlike the analytic reasoner, templates without an offline
    program count: their expansion is written for exactly this case. With no match, up to ``max_listed`` templates
    are listed briefly.
    """
    from rscore.engine.matching import TemplateMatcher

    if forced:
        chosen = [t for t in templates if forced in (t.name, t.qualified_name)]
        if not chosen:
            have = ", ".join(t.qualified_name for t in templates) or "none"
            raise OptionError(f"unknown template '{forced}' (available: {have})")
        t = chosen[0]
        return TemplateHints(t, (), {"template": t.qualified_name, "method": "forced", "score": 1.0})
    usable = [t for t in templates if kind is None or kind in t.kinds]
    if not usable:
        return TemplateHints(None, (), {"method": "none", "template": None})
    m = TemplateMatcher(usable, matcher)
    best, ranked = m.best(query)
    match: dict[str, Any] = {
        "method": m.method,
        "model": m.model,
        "threshold": m.threshold,
        "alternatives": [{"template": r.template.qualified_name, "score": r.score} for r in ranked[:3]],
    }
    if best is not None:
        return TemplateHints(
            best.template, (), {**match, "template": best.template.qualified_name, "score": best.score}
        )
    return TemplateHints(None, tuple(usable[:max_listed]), {**match, "template": None})


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _hint_block(hints: TemplateHints) -> str:
    if hints.best is not None:
        t = hints.best
        lines = [f"Domain knowledge for this request ({t.label}):", t.prompt.strip() or t.description.strip()]
        if t.explain:
            lines.append(f"An offline rule for the same question is: {t.explain}.")
        return "\n".join(lines)
    if hints.listed:
        lines = ["Things this domain knows how to find (use what helps; the request may be about something else):"]
        for t in hints.listed:
            lines.append(f"- {t.label}: {_clip(t.prompt or t.description, MAX_HINT_CHARS)}")
        return "\n".join(lines)
    return ""


# -------------------------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class ReasoningView:
    """Which part of a larger scene a reasoner is shown, when a large scene is reasoned tile by tile.

    The engine (:mod:`rscore.engine.decoupled`) hands a reasoner a *sub-scene* (one tile, or a downscaled overview of
    the whole scene) with this object under ``scene.metadata["reasoning_view"]``; :func:`describe_scene` reads it, so
    every reasoner that describes its scene with it tells the model where the picture lies in the whole, without any
    change to the ``plan(scene, request, templates)`` interface.

    - ``scene_size``: ``(width, height)`` of the whole scene, px; ``window``: the part shown, in whole-scene pixels
      (the whole scene for the overview).
    - ``tile`` / ``tiles``: this tile's index and the number of tiles (``tile`` is ``None`` for the overview).
    - ``overview``: one line about the whole scene from a first pass on a downscaled picture ("" when none).
    - ``band_roles`` / ``pixel_size``: the whole scene's bands and pixel size (a tile of a non-8-bit scene carries
      only its display bands, stretched to 8 bits with one stretch for the whole scene).
    - ``scene``: the whole :class:`~rscore.types.Scene`, for a reasoner that wants the original values
      (``view.scene.read(view.window)``).
    """

    scene_size: tuple[int, int]
    window: Window
    tile: int | None = None
    tiles: int = 1
    overview: str = ""
    band_roles: tuple[str, ...] = ()
    pixel_size: tuple[float, float] | None = None
    scene: Any = field(default=None, repr=False, compare=False)

    @property
    def is_overview(self) -> bool:
        return self.tile is None


def reasoning_view(scene: Scene) -> ReasoningView | None:
    """The :class:`ReasoningView` of a tile or overview sub-scene, ``None`` for an ordinary scene."""
    meta = scene.metadata if isinstance(scene.metadata, Mapping) else {}
    view = meta.get("reasoning_view")
    return view if isinstance(view, ReasoningView) else None


def describe_scene(scene: Scene, sent: SentImage | tuple[int, int], *, window: Window | None = None) -> str:
    """A short description of the input for the prompt: kind, size, bands shown, physical pixel size, metadata.

    ``sent`` is the picture as sent (or its ``(width, height)``); ``window`` says which part of the scene the picture
    shows when reasoning tile by tile (full scene when ``None``). A tile or overview sub-scene made by the engine
    (``scene.metadata["reasoning_view"]``, :class:`ReasoningView`) is described as the part of the whole scene it is,
    with the overview line when there is one.
    """
    from rscore.io.images import DISPLAY_ORDER

    view = reasoning_view(scene) if window is None else None
    if view is not None:
        (full_w, full_h), window = view.scene_size, view.window
        roles = view.band_roles or scene.band_roles
        pixel_size = view.pixel_size if view.pixel_size is not None else scene.pixel_size
    else:
        full_w, full_h, roles, pixel_size = scene.width, scene.height, scene.band_roles, scene.pixel_size
    sw, sh = sent.size if isinstance(sent, SentImage) else sent
    vw, vh = (window.width, window.height) if window is not None else (full_w, full_h)
    sx, sy = vw / sw, vh / sh
    article = "an" if scene.kind[:1].lower() in "aeiou" else "a"
    parts = [f"Input: {article} {scene.kind} of {full_w}x{full_h} pixels."]
    whole = window is None or (window.col_off, window.row_off, window.width, window.height) == (0, 0, full_w, full_h)
    if view is not None and view.is_overview:
        parts.append(
            "The picture shows the whole of it, downscaled, as a first look: the scene is then examined tile by "
            "tile at full resolution, so give what you can see at this scale."
        )
    elif not whole:
        assert window is not None
        where = ""
        if view is not None and view.tile is not None:
            where = f" (tile {view.tile + 1} of {view.tiles}; neighbouring tiles overlap it)"
        parts.append(
            f"The picture shows only the part x {window.col_off}..{window.col_off + window.width}, "
            f"y {window.row_off}..{window.row_off + window.height} of it{where}; answer for what is visible"
            + (", and box an object cut by the picture's edge up to that edge." if view is not None else ".")
        )
    if all(r in roles for r in ("red", "green", "blue")):
        shown = "true colour (red, green, blue bands)"
    else:
        role = next((r for r in DISPLAY_ORDER if r in roles), roles[0] if roles else "")
        shown = f"greyscale of the '{role}' band" if role else "greyscale"
    extra = [r for r in roles if r not in ("red", "green", "blue")]
    parts.append(f"The picture is {shown}" + (f"; the input also has bands: {', '.join(extra)}." if extra else "."))
    if (sw, sh) != (vw, vh):
        parts.append(f"It was resized to {sw}x{sh}: one of its pixels covers {sx:.2f}x{sy:.2f} input pixels.")
    if pixel_size and scene.unit:
        px, py = pixel_size
        parts.append(
            f"One input pixel is {px:.3g}x{py:.3g} {scene.unit}; one picture pixel about {px * sx:.3g}x{py * sy:.3g} "
            f"{scene.unit}."
        )
    if scene.geo is not None:
        crs = scene.geo.crs or "no CRS"
        if len(crs) > 60:  # WKT: too long to be useful to a model
            crs = "geographic CRS" if scene.geo.is_geographic else "projected CRS"
        a, b, _, d, e, _ = scene.geo.transform
        north_up = b == 0 and d == 0 and a > 0 and e < 0
        parts.append(f"It is a georeferenced raster ({crs})" + (", north up." if north_up else "."))
    if scene.dicom is not None:
        parts.append(f"It is a DICOM {scene.dicom.modality} image.")
    if scene.video is not None:
        parts.append(f"It is a frame of a {scene.video.fps:g} fps video.")
    pre = scene.metadata.get("preprocess") if isinstance(scene.metadata, Mapping) else None
    if pre:
        parts.append(f"Preprocessing applied: {'; '.join(str(p) for p in pre)}.")
    if view is not None and view.overview:
        parts.append(f"Overview of the whole scene: {view.overview}")
    return " ".join(parts)


# -------------------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class Prompt:
    """The text of a request: ``system`` instructions and the ``user`` turn (the picture goes before it)."""

    system: str
    user: str


def _frame_rule(frame: str, size: tuple[int, int]) -> str:
    w, h = size
    if frame == "norm1000":
        return (
            "Coordinates are normalised to 0..1000 on both axes: x from the left edge (0) to the right edge (1000), "
            "y from the top (0) to the bottom (1000)."
        )
    return (
        f"The picture is {w}x{h} pixels. Coordinates are integer pixel positions in it: x from the left edge "
        f"(0..{w - 1}), y from the top (0..{h - 1})."
    )


def build_prompt(
    query: str,
    hints: TemplateHints,
    *,
    image_size: tuple[int, int],
    context: str = "",
    frame: str = "pixels",
    max_targets: int = 20,
) -> Prompt:
    """The prompt for one picture.

    ``image_size`` is the sent picture's ``(width, height)``; ``context`` a scene description
    (:func:`describe_scene`); ``frame`` how coordinates are asked for: ``pixels`` (also for ``auto``) or
    ``norm1000`` (for models trained on 0-1000 coordinates, e.g. Qwen2-VL and Qwen3-VL).
    """
    system = "\n".join(
        [
            "You are the reasoning stage of an image segmentation system. Look at the picture, work out step by "
            "step what the request refers to (it may need domain knowledge or reasoning, not just naming), then "
            "give explicit targets that a separate segmenter turns into pixel masks from boxes and points.",
            _frame_rule(frame, image_size),
            "For every separate object or region that answers the request give one target: a label, a tight box "
            "[x0, y0, x1, y1] (left, top, right, bottom), one to three positive points clearly inside it, negative "
            "points on nearby look-alikes that are NOT the target (optional), and a confidence from 0 to 1. "
            f"At most {max_targets} targets, most confident first.",
            "If nothing in the picture answers the request, say so: absent true with the reason. Never invent a "
            "target to have an answer.",
            "Answer with one JSON object and nothing else:",
            ANSWER_EXAMPLE,
        ]
    )
    blocks = [f"Request: {query}"]
    hint = _hint_block(hints)
    if hint:
        blocks.append(hint)
    if context:
        blocks.append(context)
    blocks.append("Reply with the JSON object only.")
    return Prompt(system=system, user="\n\n".join(blocks))


def repair_prompt(
    previous: str, error: str, *, frame: str = "pixels", image_size: tuple[int, int] | None = None
) -> str:
    """The follow-up turn after an unusable answer: what was wrong and the schema again.

    The model's own ``previous`` output goes before this turn as the assistant's message; only its start is quoted
    here, so that a runaway answer does not double the request.
    """
    quoted = previous.strip()
    if len(quoted) > 600:
        quoted = quoted[:600] + " ..."
    lines = [
        f"Your answer could not be used: {error}",
        f"It began: {quoted!s}" if quoted else "It was empty.",
        "Answer again with exactly one JSON object following this schema, and nothing else:",
        json.dumps(ANSWER_SCHEMA, separators=(",", ":")),
        ANSWER_EXAMPLE,
    ]
    if image_size is not None:
        lines.insert(2, _frame_rule(frame, image_size))
    return "\n".join(lines)
