"""The ``grounded`` segmenter (detector boxes -> masks) and :func:`segment_phrase`, the text-prompted entry point.

``grounded`` pairs a detector (:mod:`rscore.detectors`: ``-O detector_model=...``) with a box segmenter
(``-O grounded_masks=auto|sam2|sam2-hf|classical``; ``auto`` = the first available of SAM 2, SAM 2 through
transformers, classical GrabCut). A target with a box goes straight to the box segmenter; a target with only a phrase
(``Target.phrase``, else its label) is detected first - every box of that phrase (open-vocabulary detectors) or of
that class name (YOLO) becomes a box target, scored ``detection score x target confidence x mask score``.

:func:`segment_phrase` is what an agent's ``segment_phrase`` tool calls: ``sam3`` when its weights are here, else
``grounded`` when a detector is configured; ``-O phrase_segmenter=sam3|grounded`` forces one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.segmenters.prompts import as_rgb8
from rscore.types import Instance, Target

log = logging.getLogger(__name__)

__all__ = ["GroundedSegmenter", "make_grounded_segmenter", "segment_phrase", "phrase_segmenter", "BOX_SEGMENTERS"]

BOX_SEGMENTERS = ("sam2", "sam2-hf", "classical")


def _registry(registry: Any) -> Any:
    if registry is not None:
        return registry
    from rscore.engine import default_registry

    return default_registry()


def _box_segmenter(options: Mapping[str, Any], registry: Any) -> tuple[str, Any]:
    choice = str(options.get("grounded_masks") or "auto").strip().lower()
    names = BOX_SEGMENTERS if choice == "auto" else (choice,)
    if choice not in ("auto", *BOX_SEGMENTERS):
        raise OptionError(f"grounded_masks must be auto, {', '.join(BOX_SEGMENTERS)}; got '{choice}'")
    reasons = []
    for name in names:
        spec = registry.backend("segmenter", name)
        missing = spec.missing_modules()
        if missing:
            reasons.append(f"{name}: needs {', '.join(missing)}")
            continue
        try:
            return name, spec.factory(options)
        except BackendUnavailable as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailable("grounded: no box segmenter is available (" + "; ".join(reasons) + ")")


class GroundedSegmenter:
    """Detector + box segmenter. Build with :func:`make_grounded_segmenter`."""

    name = "grounded"

    def __init__(self, detector: Any, masks_name: str, masks: Any) -> None:
        self.detector = detector
        self.masks_name = masks_name
        self.masks = masks

    def _boxes_for(self, img: np.ndarray, targets: Sequence[Target]) -> list[Target]:
        phrases = [" ".join((t.phrase or t.label).split()) for t in targets]
        if self.detector.open_vocabulary:
            dets = self.detector.detect(img, list(dict.fromkeys(p.lower() for p in phrases)))
        else:
            known = {n.lower() for n in self.detector.class_names}
            unknown = sorted({p for p in phrases if p.lower() not in known})
            if unknown:
                raise OptionError(f"grounded: the detector {self.detector.model} has no class "
                                  f"{', '.join(repr(u) for u in unknown)} (its classes: "
                                  f"{', '.join(self.detector.class_names)}); use an open-vocabulary detector")
            dets = self.detector.detect(img)
        boxed = []
        for t, phrase in zip(targets, phrases):
            for d in dets:
                if d.label.lower() == phrase.lower():
                    boxed.append(Target(t.label, d.box, (), phrase, t.confidence * d.score))
        return boxed

    def segment(self, image: np.ndarray, targets: Sequence[Target]) -> list[Instance]:
        img = as_rgb8(image, "grounded")
        direct = [t for t in targets if t.box is not None or t.points]
        wanted = [t for t in targets if t.box is None and not t.points]
        boxed = direct + (self._boxes_for(img, wanted) if wanted else [])
        if not boxed:
            return []
        out = self.masks.segment(img, boxed)
        return [dataclasses.replace(i, attributes={**i.attributes, "segmenter": self.name,
                                                   "mask_segmenter": self.masks_name,
                                                   "detector": self.detector.name,
                                                   "detector_model": self.detector.model})
                for i in out]  # fmt: skip

    def segment_phrase(self, image: np.ndarray, phrase: str) -> list[Instance]:
        text = " ".join(str(phrase).split())
        if not text:
            raise OptionError("grounded: the phrase is empty")
        return sorted(self.segment(image, [Target(text, phrase=text)]), key=lambda i: -i.score)


def make_grounded_segmenter(options: Mapping[str, Any], registry: Any = None) -> GroundedSegmenter:
    from rscore.detectors import get_detector

    reg = _registry(registry)
    detector = get_detector(options, reg)
    name, masks = _box_segmenter(options, reg)
    return GroundedSegmenter(detector, name, masks)


def phrase_segmenter(options: Mapping[str, Any] | None = None, registry: Any = None) -> Any:
    """The text-prompted segmenter the options allow: ``phrase_segmenter`` (``auto`` | ``sam3`` | ``grounded``);
    ``auto`` = SAM 3 when its weights are here, else grounded when a detector is configured."""
    options = dict(options or {})
    reg = _registry(registry)
    choice = str(options.get("phrase_segmenter") or "auto").strip().lower()
    if choice not in ("auto", "sam3", "grounded"):
        raise OptionError(f"phrase_segmenter must be auto, sam3 or grounded; got '{choice}'")
    reasons = []
    for name in ("sam3", "grounded") if choice == "auto" else (choice,):
        spec = reg.backend("segmenter", name)
        missing = spec.missing_modules()
        if missing:
            reasons.append(f"{name}: needs {', '.join(missing)}")
            continue
        try:
            return spec.factory(options)
        except (BackendUnavailable, OptionError) as exc:
            if choice != "auto":
                raise
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailable("no text-prompted segmenter is available: " + "; ".join(reasons))


def segment_phrase(
    image: np.ndarray, phrase: str, options: Mapping[str, Any] | None = None, *, registry: Any = None
) -> list[Instance]:
    """Every instance of ``phrase`` in ``image`` (``(H, W, 3)`` uint8), best first, with full-image masks."""
    return phrase_segmenter(options, registry).segment_phrase(image, phrase)
