"""SAM 3 through transformers (segmenter ``sam3``): a phrase in, the mask and score of every matching instance out.

``Sam3Model`` + ``Sam3Processor`` from a ``save_pretrained`` folder or the registered ``sam3`` (``facebook/sam3``,
gated: accept its licence on the Hub, then ``rscore models pull sam3``); never downloaded at run time.

- :meth:`Sam3Segmenter.segment_phrase` - the text-prompted call: every instance SAM 3 finds for the phrase whose
  score (SAM 3's own, presence x detection) is at least ``threshold``, masks at the image's size.
- :meth:`Sam3Segmenter.segment` - the engine's contract. A target with only a phrase (``Target.phrase`` or, with
  no phrase, its label) gets every instance of that phrase; a target with a box is given to SAM 3 as a positive box
  exemplar with its phrase, and the instance best overlapping the box (IoU >= ``box_iou``) is its mask, scaled by
  the target's confidence - SAM 3 finds *all* objects like an exemplar, so the others are not this target's. Point
  prompts are SAM 2's job (``--segmenter sam2``): a target with points and no box is an :class:`OptionError`.

The image embedding is computed once per image and reused for every phrase on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.options import scoped, typed
from rscore.segmenters.prompts import as_rgb8
from rscore.types import Instance, Target

log = logging.getLogger(__name__)

__all__ = ["Sam3Options", "Sam3Segmenter", "make_sam3_segmenter", "mask_instance"]

_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Sam3Options:
    """``model`` (``auto`` | registered name | folder), ``threshold`` (minimum instance score), ``mask_threshold``
    (mask probability), ``box_iou`` (how well an instance must match a box target), ``weights``, ``device``."""

    model: str = "auto"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    box_iou: float = 0.5
    weights: str = ""
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("threshold", "mask_threshold", "box_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OptionError(f"sam3 segmenter: {name} must be in [0, 1]")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Sam3Options:
        values = scoped(options, "sam3", cls, flat=("weights", "device"), what="sam3 segmenter")
        return cls(**typed(cls, values, what="sam3 segmenter option"))


def mask_instance(label: str, score: float, mask: np.ndarray, **attributes: Any) -> Instance | None:
    """An :class:`Instance` for a full-image bool mask (``None`` for an empty mask)."""
    mask = np.asarray(mask, bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return Instance(label=label, score=float(score), bbox=bbox, area_px=int(np.count_nonzero(mask)), mask=mask,
                    attributes=attributes)  # fmt: skip


class _Loaded:
    def __init__(self, folder: Any, device: str) -> None:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        import torch
        from transformers import Sam3Model, Sam3Processor

        try:
            self.processor = Sam3Processor.from_pretrained(str(folder), local_files_only=True)
            self.model = Sam3Model.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"SAM 3 model in {folder} does not load ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from None
        self.torch = torch
        self.device = device
        self.lock = threading.RLock()
        self.view: str | None = None
        self.vision: Any = None
        self.inputs: Any = None


class Sam3Segmenter:
    """SAM 3 segmenter; build with :func:`make_sam3_segmenter` (the model loads once per process)."""

    name = "sam3"

    def __init__(self, loaded: _Loaded, opts: Sam3Options, model_name: str) -> None:
        self._m = loaded
        self.options = opts
        self.model_name = model_name

    def _embed(self, img: np.ndarray) -> None:
        m = self._m
        digest = hashlib.blake2b(memoryview(np.ascontiguousarray(img)).cast("B"), digest_size=16).hexdigest()
        key = f"{img.shape}:{digest}"
        if m.view == key:
            return
        inputs = m.processor(images=img, return_tensors="pt").to(m.device)
        with m.torch.inference_mode():
            m.vision = m.model.get_vision_features(pixel_values=inputs["pixel_values"])
        m.inputs, m.view = inputs, key

    def _run(self, img: np.ndarray, phrase: str, box: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
        m = self._m
        self._embed(img)
        kw: dict[str, Any] = {}
        if box is not None:
            kw = {"input_boxes": [[list(box)]], "input_boxes_labels": [[1]]}
        text = m.processor(text=phrase, images=img if box is not None else None, return_tensors="pt", **kw)
        extra = {k: v.to(m.device) for k, v in text.items() if k in ("input_ids", "attention_mask", "input_boxes",
                                                                      "input_boxes_labels")}  # fmt: skip
        with m.torch.inference_mode():
            out = m.model(vision_embeds=m.vision, **extra)
        res = m.processor.post_process_instance_segmentation(
            out, threshold=self.options.threshold, mask_threshold=self.options.mask_threshold,
            target_sizes=m.inputs["original_sizes"].tolist(),
        )[0]  # fmt: skip
        masks = res["masks"].cpu().numpy().astype(bool)
        scores = res["scores"].float().cpu().numpy()
        return [{"mask": masks[i], "score": float(scores[i])} for i in range(len(scores))]

    def segment_phrase(self, image: np.ndarray, phrase: str) -> list[Instance]:
        """Every instance of ``phrase`` in ``image``, best first."""
        text = " ".join(str(phrase).split())
        if not text:
            raise OptionError("sam3: the phrase is empty")
        img = as_rgb8(image, "sam3")
        with self._m.lock:
            found = self._run(img, text)
        out = [mask_instance(text, f["score"], f["mask"], segmenter=self.name, model=self.model_name, prompt="text")
               for f in found]  # fmt: skip
        return sorted((i for i in out if i is not None), key=lambda i: -i.score)

    def segment(self, image: np.ndarray, targets: Sequence[Target]) -> list[Instance]:
        img = as_rgb8(image, "sam3")
        out: list[Instance] = []
        for t in targets:
            phrase = " ".join((t.phrase or t.label or "").split())
            if not phrase:
                raise OptionError("sam3: a target needs a phrase or a label to prompt SAM 3 with")
            if t.box is None:
                if t.points:
                    raise OptionError(f"target '{t.label}': sam3 takes phrases and boxes, not points "
                                      "(use --segmenter sam2 for point prompts)")
                out += [dataclasses.replace(i, label=t.label, score=i.score * t.confidence)
                        for i in self.segment_phrase(img, phrase)]  # fmt: skip
                continue
            from rscore.segmenters.prompts import validate_target

            box = validate_target(t, img.shape[:2], "sam3").box
            with self._m.lock:
                found = self._run(img, phrase, box)
            best = _best_for_box(found, box, self.options.box_iou)
            if best is None:
                log.info("sam3: no instance of '%s' matches box %s (IoU >= %.2f)", phrase, box, self.options.box_iou)
                continue
            inst = mask_instance(t.label, best["score"] * t.confidence, best["mask"], segmenter=self.name,
                                 model=self.model_name, prompt="text+box")  # fmt: skip
            if inst is not None:
                out.append(inst)
        return out


def _best_for_box(found: list[dict[str, Any]], box: Any, min_iou: float) -> dict[str, Any] | None:
    from rscore.detectors import box_iou

    best, best_iou = None, min_iou
    for f in found:
        rows = np.flatnonzero(f["mask"].any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(f["mask"].any(axis=0))
        iou = float(box_iou(np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]]), np.array([box]))[0, 0])
        if iou >= best_iou:
            best, best_iou = f, iou
    return best


def make_sam3_segmenter(options: Mapping[str, Any]) -> Sam3Segmenter:
    from rscore.models.device import resolve_device
    from rscore.models.registry import resolve, resolve_auto

    opts = Sam3Options.from_options(options)
    weights = opts.weights or None
    if opts.model == "auto":
        found = resolve_auto("sam3", weights=weights, recommend="sam3")
    else:
        found = resolve(opts.model, backend="sam3", weights=weights)
    device = resolve_device(opts.device if opts.device != "auto" else None)
    key = (str(found.path), device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _Loaded(found.path, device)
        loaded = _CACHE[key]
    return Sam3Segmenter(loaded, opts, found.spec.name)
