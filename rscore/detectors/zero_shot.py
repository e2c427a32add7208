"""Open-vocabulary detectors through transformers: OWLv2 (backend ``owlv2``) and Grounding DINO (``grounding-dino``).

Both take phrases ("person", "hard hat") and return boxes in the original image's pixels:

- **OWLv2** pads the picture to a square (bottom and right, grey) before resizing it, so its normalised boxes are
  relative to the padded square: they are scaled by ``max(h, w)`` on both axes, then clipped to the picture (scaling
  by ``(h, w)`` - a common mistake - stretches every box on non-square frames). Each box's label is its best phrase.
- **Grounding DINO** reads the phrases as one caption (``"person. hard hat."``); a box's score for a phrase is the
  highest token probability inside that phrase's tokens, and its label the best phrase. ``text_threshold`` is not a
  second filter here: a box is kept when its best phrase scores at least ``conf``.

Per-phrase NMS (``iou``) then keeps the best ``max`` boxes. Models load once per process from a ``save_pretrained``
folder or a registered name (``--weights DIR`` / the Hugging Face cache; never downloaded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rscore.detectors import RECOMMENDED, Detection, DetectorOptions, cached, nms, settings_key
from rscore.errors import BackendUnavailable, OptionError

log = logging.getLogger(__name__)

__all__ = ["ZeroShotDetector", "make_owlv2_detector", "make_grounding_dino_detector", "clean_phrases"]

_RECOMMENDED = RECOMMENDED
MAX_PHRASES = 64


def clean_phrases(phrases: Sequence[str] | None, backend: str) -> tuple[str, ...]:
    """Phrases as the models want them: stripped, lower case, no dots (Grounding DINO's separator), unique."""
    if not phrases:
        raise OptionError(f"the {backend} detector is open-vocabulary: it needs the phrases to look for "
                          "(e.g. -O detector_phrases='person,hard hat')")
    out: list[str] = []
    for p in phrases:
        text = " ".join(str(p).replace(".", " ").split()).lower()
        if text and text not in out:
            out.append(text)
    if not out:
        raise OptionError(f"the {backend} detector got only empty phrases")
    if len(out) > MAX_PHRASES:
        raise OptionError(f"the {backend} detector takes at most {MAX_PHRASES} phrases, got {len(out)}")
    return tuple(out)


class ZeroShotDetector:
    """OWLv2 or Grounding DINO with its processor; ``detect(image, phrases)``."""

    open_vocabulary = True
    class_names: tuple[str, ...] = ()

    def __init__(self, backend: str, folder: Path, opts: DetectorOptions, model_name: str) -> None:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from rscore.models.device import resolve_device

        self.name = backend
        self.model = model_name
        self.folder = folder
        self.opts = opts
        self.device = resolve_device(opts.device if opts.device != "auto" else None)
        try:
            self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            self.net = AutoModelForZeroShotObjectDetection.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"{backend} model in {folder} does not load ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from None
        self.net.eval().to(self.device)
        self._torch = torch

    def detect(self, image: np.ndarray, phrases: Sequence[str] | None = None) -> list[Detection]:
        return self.detect_batch([image], phrases)[0]

    def detect_batch(self, images: Sequence[np.ndarray], phrases: Sequence[str] | None = None) -> list[list[Detection]]:
        from rscore.segmenters.prompts import as_rgb8

        words = clean_phrases(phrases, self.name)
        out: list[list[Detection]] = []
        for start in range(0, len(images), self.opts.batch):
            chunk = [as_rgb8(im, f"{self.name} detector") for im in images[start : start + self.opts.batch]]
            if self.name == "owlv2":
                scores, labels, boxes = self._owlv2(chunk, words)
            else:
                scores, labels, boxes = self._grounding_dino(chunk, words)
            for img, s, lab, b in zip(chunk, scores, labels, boxes):
                out.append(self._finish(img, s, lab, b, words))
        return out

    # --------------------------------------------------------------------------------------------------- models
    def _owlv2(self, images: list[np.ndarray], words: tuple[str, ...]) -> tuple[list[Any], list[Any], list[Any]]:
        torch = self._torch
        inputs = self.processor(text=[list(words)] * len(images), images=images, return_tensors="pt",
                                padding="max_length", truncation=True)  # fmt: skip
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            raw = self.net(**inputs)
        probs = torch.sigmoid(raw.logits.float())  # (B, boxes, phrases)
        best, labels = probs.max(-1)
        scores, labels_, boxes = [], [], []
        for i, img in enumerate(images):
            side = float(max(img.shape[:2]))  # normalised to the padded square
            cxcywh = raw.pred_boxes[i].float().cpu().numpy()
            xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1) * side
            scores.append(best[i].cpu().numpy())
            labels_.append(labels[i].cpu().numpy())
            boxes.append(xyxy)
        return scores, labels_, boxes

    def _grounding_dino(
        self, images: list[np.ndarray], words: tuple[str, ...]
    ) -> tuple[list[Any], list[Any], list[Any]]:
        torch = self._torch
        caption = ". ".join(words) + "."
        inputs = self.processor(images=images, text=[caption] * len(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            raw = self.net(**inputs)
        ids = inputs["input_ids"][0].tolist()
        spans = self._phrase_spans(ids, len(words))
        probs = torch.sigmoid(raw.logits.float())[:, :, : len(ids)]  # (B, queries, tokens)
        per_phrase = torch.stack([probs[:, :, a:b].max(-1).values for a, b in spans], -1)  # (B, queries, phrases)
        best, labels = per_phrase.max(-1)
        scores, labels_, boxes = [], [], []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            cxcywh = raw.pred_boxes[i].float().cpu().numpy()
            xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
            xyxy *= np.array([w, h, w, h], np.float64)
            scores.append(best[i].cpu().numpy())
            labels_.append(labels[i].cpu().numpy())
            boxes.append(xyxy)
        return scores, labels_, boxes

    def _phrase_spans(self, ids: list[int], n: int) -> list[tuple[int, int]]:
        """Token ranges ``[a, b)`` of each phrase in the caption: runs of tokens between special tokens and dots."""
        tok = self.processor.tokenizer
        dot = tok.convert_tokens_to_ids(".")
        special = set(tok.all_special_ids) | {dot}
        spans: list[tuple[int, int]] = []
        start = None
        for i, t in enumerate(ids + [dot]):
            if t in special:
                if start is not None:
                    spans.append((start, i))
                    start = None
            elif start is None:
                start = i
        if len(spans) < n:
            raise OptionError(f"grounding-dino: the caption was cut to {len(ids)} tokens and keeps {len(spans)} of "
                              f"{n} phrases; ask for fewer or shorter phrases")
        return spans[:n]

    def _finish(
        self, img: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, words: tuple[str, ...]
    ) -> list[Detection]:
        h, w = img.shape[:2]
        keep = scores >= self.opts.conf
        scores, labels, boxes = scores[keep].astype(np.float64), labels[keep], boxes[keep]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        sized = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores, labels, boxes = scores[sized], labels[sized], boxes[sized]
        kept = nms(boxes, scores, self.opts.iou, labels)[: self.opts.max]
        return [Detection(words[int(labels[i])], float(scores[i]), tuple(float(v) for v in boxes[i]), int(labels[i]))
                for i in kept]  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "path": str(self.folder), "device": self.device,
                "conf": self.opts.conf, "iou": self.opts.iou}  # fmt: skip


def _make(backend: str, options: Mapping[str, Any]) -> ZeroShotDetector:
    from rscore.models.registry import resolve, resolve_auto

    opts = DetectorOptions.from_options(options)
    weights = opts.weights or None
    if opts.model in ("", "auto"):
        found = resolve_auto(backend, weights=weights, recommend=_RECOMMENDED[backend])
    else:
        found = resolve(opts.model, backend=backend, weights=weights)
    key = (backend, str(found.path), settings_key(opts))
    return cached(key, lambda: ZeroShotDetector(backend, found.path, opts, found.spec.name))


def make_owlv2_detector(options: Mapping[str, Any]) -> ZeroShotDetector:
    return _make("owlv2", options)


def make_grounding_dino_detector(options: Mapping[str, Any]) -> ZeroShotDetector:
    return _make("grounding-dino", options)
