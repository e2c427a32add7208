"""Template programs that answer from detections: what any plugin needs to let a detector answer its templates.

- :func:`require_detector` - the configured detector, or :class:`~rscore.errors.BackendUnavailable` saying what to
  pass when there is none (a template over detections never answers "nothing found" without a detector).
- :func:`picture_detections` - the detections of the whole picture a program's view belongs to, computed once per
  picture however many tiles and templates ask (a bounded LRU keyed by the pixels' digest).
- :func:`detect_ahead` - batched inference on video: runs ``detector_batch`` frames per call ahead of the frames'
  use, filling that cache; :func:`prime_detections` does the same for a template's pictures (the video engine's
  sampled keyframe candidates), with the phrases the template's program declared (:func:`declare_phrases`).
- :func:`owned_targets` - boxes as the view's :class:`~rscore.types.Target` list, each box given to the one tile
  whose core holds its centre (so a tiled run reports it once).
- :func:`answer_with_detector` - an existing (VLM-only) template also answered by a detector.
- :func:`object_template` - a whole template: "these classes / phrases" -> box targets for the segmenter, e.g.
  ``object_template("fish", "fish", "fish in the water column", ("fish", "schools of fish"), classes=("fish",))``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.types import Target

__all__ = ["detector_configured", "require_detector", "picture_detections", "detect_ahead", "owned_targets", "object_template",
           "answer_with_detector", "normalise_label", "class_list", "declare_phrases", "detection_batch",
           "prime_detections", "MAX_CACHED"]  # fmt: skip

MAX_CACHED = 256  # pictures whose detections are kept (a batch primed ahead must survive until its frames run)
_CACHE: OrderedDict[tuple[Any, ...], tuple[Any, list[Any]]] = OrderedDict()  # key -> (detector, detections)
_LOCK = threading.Lock()


def normalise_label(label: str) -> str:
    """Lower case, ``-`` ``_`` ``/`` as spaces, single spaces: ``"NO-Safety_Vest"`` -> ``"no safety vest"``."""
    return " ".join(re.sub(r"[-_/]+", " ", str(label).lower()).split())


def class_list(names: Sequence[str], shown: int = 12) -> str:
    """A detector's class names for an error message: the first ``shown``, then how many there are (COCO: 80)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}... ({len(names)} classes)"


def detector_configured(options: Mapping[str, Any]) -> bool:
    """Whether the options configure a detector (``detector`` or ``detector_model``); a bad setting is not checked."""
    from rscore.detectors import detector_backend

    try:
        detector_backend(options)
    except OptionError:
        return False
    return True


def require_detector(options: Mapping[str, Any], template: str) -> Any:
    """The detector the options configure; :class:`BackendUnavailable` naming ``template`` when none is."""
    from rscore.detectors import detector_backend, get_detector

    try:
        detector_backend(options)
    except OptionError as exc:  # none configured: the template cannot run here (a bad setting stays an error)
        raise BackendUnavailable(f"template '{template}' answers from detections: {exc}") from None
    return get_detector(options)


def _key(rgb: np.ndarray, detector: Any, phrases: Sequence[str]) -> tuple[Any, ...]:
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(rgb)).cast("B"), digest_size=16).hexdigest()
    return (digest, rgb.shape, id(detector), tuple(phrases) if detector.open_vocabulary else ())


def _remember(key: tuple[Any, ...], detector: Any, dets: list[Any]) -> None:
    with _LOCK:  # the entry holds the detector: its id (in the key) cannot be reused while the entry lives
        _CACHE[key] = (detector, dets)
        _CACHE.move_to_end(key)
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)


def picture_detections(ctx: OpContext, detector: Any, phrases: Sequence[str] = ()) -> list[Any]:
    """Detections of the whole scene of ``ctx`` (``phrases`` for open-vocabulary detectors), computed once."""
    from rscore.io.images import scene_rgb8

    rgb = scene_rgb8(ctx.scene)
    key = _key(rgb, detector, phrases)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key][1]
    dets = detector.detect(rgb, list(key[3]) or None)
    _remember(key, detector, dets)
    return dets


def _run_batches(detector: Any, rgbs: Sequence[np.ndarray], phrases: Sequence[str], size: int) -> int:
    """Detections of ``rgbs`` not yet cached, ``size`` pictures per ``detect_batch`` call, into the cache; the number
    of pictures run."""
    todo: dict[tuple[Any, ...], np.ndarray] = {}
    for rgb in rgbs:
        rgb = np.ascontiguousarray(rgb)
        key = _key(rgb, detector, phrases)
        with _LOCK:
            cached = key in _CACHE
        if not cached:
            todo.setdefault(key, rgb)  # the same picture twice is run once
    keys = list(todo)
    for start in range(0, len(keys), size):
        chunk = keys[start : start + size]
        for key, dets in zip(chunk, detector.detect_batch([todo[k] for k in chunk], list(chunk[0][3]) or None)):
            _remember(key, detector, dets)
    return len(keys)


def declare_phrases(program: Any, phrases: Sequence[str]) -> Any:
    """Mark a template program as one that reads :func:`picture_detections` with ``phrases`` (what an
    open-vocabulary detector is asked), so callers can run the detector ahead on several pictures in one call
    (:func:`prime_detections`). Returns ``program``."""
    program.detector_phrases = tuple(phrases)
    return program


def detection_batch(template: Any, options: Mapping[str, Any]) -> int:
    """How many pictures to gather before running ``template``'s program on them: ``detector_batch`` for a template
    whose program declared its detector phrases while a detector is configured, else 1 (run each at once)."""
    from rscore.detectors import DetectorOptions

    if template is None or getattr(template.program, "detector_phrases", None) is None:
        return 1
    if not detector_configured(options):
        return 1
    return DetectorOptions.from_options(options).batch


def prime_detections(template: Any, scenes: Sequence[Any], options: Mapping[str, Any]) -> int:
    """Run the configured detector over ``scenes`` (``detector_batch`` per call) for ``template``'s program, which
    then finds each picture's detections in the cache: the same detections as one picture at a time, in fewer
    calls. A template that declared no phrases, or no detector configured: nothing runs. Returns the pictures run."""
    from rscore.detectors import DetectorOptions, get_detector
    from rscore.io.images import scene_rgb8

    phrases = getattr(getattr(template, "program", None), "detector_phrases", None)
    if phrases is None or not scenes or not detector_configured(options):
        return 0
    detector = get_detector(options)
    size = DetectorOptions.from_options(options).batch
    return _run_batches(detector, [scene_rgb8(s) for s in scenes], phrases, size)


def detect_ahead(
    items: Iterable[tuple[Any, Any, Any]], options: Mapping[str, Any], phrases: Sequence[str] = ()
) -> Iterator[tuple[Any, Any, Any]]:
    """Pass ``(frame, t_s, rgb)`` items (a video's sampled frames) through unchanged while the configured detector
    runs on ``detector_batch`` frames per call ahead of them, so programs find the detections ready. Items whose
    ``rgb`` is ``None`` pass at once; without a detector nothing is run."""
    from rscore.detectors import DetectorOptions, detector_backend, get_detector

    try:
        detector_backend(options)
    except OptionError:
        yield from items
        return
    detector = get_detector(options)
    size = DetectorOptions.from_options(options).batch
    buffer: list[tuple[Any, Any, Any]] = []

    def flush() -> Iterator[tuple[Any, Any, Any]]:
        _run_batches(detector, [item[2] for item in buffer], phrases, size)
        yield from buffer
        buffer.clear()

    for item in items:
        if item[2] is None:
            yield item
            continue
        buffer.append(item)
        if len(buffer) >= size:
            yield from flush()
    if buffer:
        yield from flush()


def owned_targets(ctx: OpContext, boxes: Iterable[tuple[str, Sequence[float], float]]) -> tuple[Target, ...]:
    """``(label, (x0, y0, x1, y1) in scene pixels, score)`` -> targets in the view's coordinates, keeping only the
    boxes whose centre lies in the view's core (each box belongs to exactly one tile)."""
    core, x0, y0 = ctx.core, ctx.window.col_off, ctx.window.row_off
    out = []
    for label, box, score in boxes:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if core.col_off <= cx < core.col_off + core.width and core.row_off <= cy < core.row_off + core.height:
            out.append(Target(label, (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0), (), None, float(score)))
    return tuple(out)


def answer_with_detector(
    template: Template, classes: tuple[str, ...], phrases: tuple[str, ...] = (), min_score: float = 0.0
) -> Template:
    """``template`` (typically a VLM-only one) also answered offline by a detector: same name, examples and prompt,
    with :func:`object_template`'s program for ``classes`` / ``phrases``."""
    import dataclasses

    made = object_template(template.name, template.label, template.description, template.examples,
                           classes=classes, phrases=phrases, min_score=min_score)  # fmt: skip
    return dataclasses.replace(template, program=made.program, explain=made.explain, requires=made.requires,
                               caveats=template.caveats + made.caveats, needs=made.needs)  # fmt: skip


def object_template(
    name: str,
    label: str,
    description: str,
    examples: tuple[str, ...],
    *,
    classes: tuple[str, ...],
    phrases: tuple[str, ...] = (),
    prompt: str = "",
    keywords: tuple[str, ...] = (),
    min_score: float = 0.0,
    caveats: tuple[str, ...] = (),
) -> Template:
    """A template answered by a detector: every detection whose label is one of ``classes`` (closed-set models;
    compared after :func:`normalise_label`) or, for open-vocabulary detectors, of ``phrases`` (default: the
    classes), scoring at least ``min_score``, becomes a box target labelled ``label``. A closed-set model with none
    of the classes makes the template unavailable (it does not answer "none found")."""
    wanted = {normalise_label(c) for c in classes}
    asked = tuple(phrases or classes)

    def program(ctx: OpContext) -> ProgramOutput:
        detector = require_detector(ctx.params, name)
        if not detector.open_vocabulary and not wanted & {normalise_label(c) for c in detector.class_names}:
            raise BackendUnavailable(f"template '{name}' needs a detector class among {', '.join(classes)}; "
                                     f"{detector.model} has {class_list(detector.class_names)}")
        dets = picture_detections(ctx, detector, asked)
        names = wanted | {normalise_label(p) for p in asked}
        hits = [d for d in dets if normalise_label(d.label) in names and d.score >= min_score]
        ctx.note(f"detector {detector.name} ({detector.model}): {len(hits)} of {len(dets)} detection(s) are "
                 f"{' / '.join(sorted(names))} (score >= {min_score:g})", operator="detections", count=len(hits))
        ctx.caveat(f"answered from {detector.name} detections: what the detector misses is not counted")
        return ProgramOutput(targets=owned_targets(ctx, ((label, d.box, d.score) for d in hits)))

    program.__name__ = f"detections_{name}"
    declare_phrases(program, asked)
    return Template(name, label, description, examples, program=program, prompt=prompt or f"Box every {label}.",
                    explain=f"boxes of a detector (-O detector_model=...) labelled {' / '.join(sorted(wanted))}",
                    keywords=keywords, requires=("red", "green", "blue"), kinds=("image", "video"),
                    caveats=caveats, needs=("detector",))  # fmt: skip
