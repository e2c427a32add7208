"""SAM2 segmenters: boxes and points from a plan -> instance masks, with Meta's ``sam2`` package or transformers.

Two backends, one behaviour:

- ``sam2`` (:class:`Sam2Segmenter`): the ``sam2`` package's :class:`~sam2.sam2_image_predictor.SAM2ImagePredictor`.
  The model is built from the package's yaml config for the size (hiera tiny / small / base+ / large; SAM 2 and 2.1)
  with random weights, then the checkpoint file is loaded into it strictly (every key must match).
- ``sam2-hf`` (:class:`HFSam2Segmenter`): transformers' ``Sam2Model`` + ``Sam2Processor`` from a folder saved with
  ``save_pretrained`` (the ``facebook/sam2.1-hiera-*`` repositories hold one).

For every view (the ``image`` handed to :meth:`segment`) the image embedding is computed once and kept with the
loaded model, so that it is reused when the same pixels come again, also by another segmenter instance of that
model; the prompts of all targets are then decoded in batches of up to ``batch_size``, one batch per prompt shape
(box or not, number of points). Prompts of one shape need no padding, so a target's mask does not depend on which
other targets share its view: padding points would add tokens to the decoder's attention and change it. With
``multimask`` (default) SAM returns three candidate masks per prompt and the one with the highest predicted IoU is
kept.

**Scores** (0-1): ``confidence x predicted IoU`` of the kept mask, where ``confidence`` is the target's (the
reasoner's) and the predicted IoU is SAM's own estimate of the mask's quality. Instances scoring below ``min_score``
and empty masks are dropped (logged at INFO).

Weights come from the model registry (:mod:`rscore.models`): ``--weights DIR`` or the Hugging Face cache; absent
weights raise :class:`rscore.errors.BackendUnavailable` naming the ``rscore models pull`` command. Models are loaded
once per process (per file, device and dtype) and shared by every segmenter instance.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.models.sam2_build import build_sam2_model, check_state_dict  # moved there; re-exported here
from rscore.options import scoped, typed
from rscore.segmenters.prompts import Prompt, as_rgb8, validate_target
from rscore.types import Instance, Target

log = logging.getLogger(__name__)

__all__ = [
    "Sam2Options",
    "Sam2Segmenter",
    "HFSam2Segmenter",
    "make_sam2_segmenter",
    "make_hf_sam2_segmenter",
    "build_sam2_model",
    "check_state_dict",
    "load_sam2_model",
    "clear_model_cache",
]

_RECOMMENDED = {"sam2": "sam2.1-hiera-tiny", "sam2-hf": "hf-sam2.1-hiera-tiny"}

@dataclass(frozen=True)
class Sam2Options:
    """Options of the SAM2 segmenters.

    - ``model``: ``auto`` (the best SAM2 whose weights are here: large, base+, small, tiny), a registered name
      (``sam2.1-hiera-tiny``; ``hf-sam2.1-hiera-tiny`` for ``sam2-hf``), a size (``tiny``, ``small``, ``base+``,
      ``large``), or a path (a ``.pt`` checkpoint for ``sam2``, a ``save_pretrained`` folder for ``sam2-hf``).
    - ``config``: ``sam2`` only: the yaml config for a checkpoint that is not registered (a package config name such
      as ``configs/sam2.1/sam2.1_hiera_t.yaml`` or a file path).
    - ``weights``: the ``--weights`` folder (see :mod:`rscore.models.registry`).
    - ``adapter``: ``--adapter``, a folder from ``rscore finetune`` whose tuned mask decoder replaces the model's
      when it was tuned for this backend (``sam2`` or ``sam2-hf``).
    - ``device`` / ``dtype``: ``auto`` = CUDA, MPS or CPU; bfloat16 autocast on GPUs (:mod:`rscore.models.device`).
    - ``multimask``: decode three candidates per prompt and keep the best by predicted IoU.
    - ``mask_threshold``: logit threshold of the masks (0 = probability 0.5).
    - ``batch_size``: prompts decoded together (bounds memory: masks are full image size).
    - ``min_score``: instances whose score (confidence x predicted IoU) is below are dropped.
    """

    model: str = "auto"
    config: str | None = None
    weights: str | None = None
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    multimask: bool = True
    mask_threshold: float = 0.0
    batch_size: int = 16
    min_score: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.model, str) and self.model.strip() != "", "model must be a name, size or path"),
            (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 1024, "batch_size must be an int in 1..1024"),
            (math.isfinite(self.mask_threshold), "mask_threshold must be a finite number (a logit)"),
            (0.0 <= self.min_score <= 1.0, "min_score must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"sam2 segmenter: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Sam2Options:
        """From engine options: shared ``weights`` / ``device`` / ``dtype``, then flat ``sam2_<field>`` keys and a
        nested ``sam2`` mapping (these win). Unknown ``sam2_*`` keys are an :class:`OptionError`."""
        values = scoped(options, "sam2", cls, flat=("weights", "adapter", "device", "dtype"), what="sam2 segmenter")
        return cls(**typed(cls, values, what="sam2 segmenter option"))


# ---------------------------------------------------------------------------------------------------- prompts
_Prompt = Prompt


def _validate(target: Target, shape: tuple[int, int]) -> Prompt:
    return validate_target(target, shape, "SAM2")


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    return as_rgb8(image, "SAM2")


def _digest(img: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(img.shape).encode())
    h.update(memoryview(img).cast("B"))
    return h.hexdigest()


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# -------------------------------------------------------------------------------------------------- model loading
_CACHE: dict[tuple[str, ...], Any] = {}
_CACHE_LOCK = threading.RLock()


class _Session:
    """What segmenters of one loaded model share: the predictor or processor, the current view's embedding (so a
    segmenter built per request still embeds a view once), and a lock that keeps one view's work together."""

    def __init__(self, **parts: Any) -> None:
        self.lock = threading.RLock()
        self.view: str | None = None
        self.embedding: Any = None
        self.original_sizes: Any = None
        self.__dict__.update(parts)


def _session(key: tuple[Any, ...], make: Any) -> Any:
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def clear_model_cache() -> None:
    """Forget the loaded SAM2 models and their sessions (frees their memory once no segmenter holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _tuned_decoder(adapter: str | Path | None, backend: str) -> Any:
    """The adapter's tuned mask decoder when it was tuned for ``backend``, else ``None``."""
    if not adapter:
        return None
    from rscore.models.adapter import read_adapter

    info = read_adapter(adapter)
    return info if info.segmenter and info.segmenter.get("backend") == backend else None


def load_sam2_model(checkpoint: str | Path, config: str | Path, device: str, adapter: str | Path | None = None) -> Any:
    """Build the model of ``config`` and load the ``{"model": state_dict}`` checkpoint into it strictly (then an
    ``rscore finetune`` adapter's tuned decoder, if given); cached per (checkpoint, config, device, adapter).
    Problems with the file raise :class:`BackendUnavailable` naming it."""
    key = ("sam2", str(Path(checkpoint).resolve()), str(config), device, str(Path(adapter).resolve()) if adapter else "")
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        import torch

        model = build_sam2_model(config)
        try:
            ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated download, foreign file
            raise BackendUnavailable(
                f"{checkpoint}: not a readable SAM2 checkpoint ({type(exc).__name__}: {exc}); pull it again"
            ) from None
        state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
        if not isinstance(state, Mapping):
            raise BackendUnavailable(f"{checkpoint}: not a SAM2 checkpoint (no 'model' state dict inside)")
        problem = check_state_dict(model, state, checkpoint)
        if problem:
            raise BackendUnavailable(problem)
        model.load_state_dict(state, strict=True)
        tuned = _tuned_decoder(adapter, "sam2")
        if tuned is not None:
            from rscore.models.adapter import apply_segmenter_adapter

            apply_segmenter_adapter(model, tuned)
        model = model.to(device).eval()
        _CACHE[key] = model
        log.info("loaded SAM2 %s (%s) on %s", Path(checkpoint).name, config, device)
        return model


def _load_hf(folder: Path, device: str, adapter: str | Path | None = None) -> tuple[Any, Any]:
    key = ("sam2-hf", str(folder.resolve()), device, str(Path(adapter).resolve()) if adapter else "")
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = Sam2Model.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # a folder transformers cannot load is the folder's problem
            raise BackendUnavailable(
                f"{folder}: transformers cannot load a Sam2Model from it ({type(exc).__name__}: {exc})"
            ) from None
        tuned = _tuned_decoder(adapter, "sam2-hf")
        if tuned is not None:
            from rscore.models.adapter import apply_segmenter_adapter

            apply_segmenter_adapter(model, tuned)
        if any((folder / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
            try:
                processor = Sam2Processor.from_pretrained(str(folder), local_files_only=True)
            except Exception as exc:  # a processor config transformers cannot read is the folder's problem
                raise BackendUnavailable(
                    f"{folder}: transformers cannot load a Sam2Processor from it ({type(exc).__name__}: {exc})"
                ) from None
        else:  # checkpoints saved without an image processor: SAM2's defaults at the model's input size
            size = int(model.config.prompt_encoder_config.image_size)
            processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size}))
        model = model.to(device).eval()
        _CACHE[key] = (model, processor)
        log.info("loaded transformers Sam2Model from %s on %s", folder, device)
        return model, processor


# ----------------------------------------------------------------------------------------------------- segmenters
class _Sam2Base:
    """Shared flow: validate, embed once per view, decode prompts in batches, keep the best mask, build instances."""

    name = ""
    backend = ""

    def __init__(self, options: Sam2Options | None = None) -> None:
        from rscore.models import registry
        from rscore.models.device import placement

        self.options = options or Sam2Options()
        o = self.options
        if o.model == "auto":
            self.resolved = registry.resolve_auto(self.backend, weights=o.weights, recommend=_RECOMMENDED[self.backend])
        else:
            self.resolved = registry.resolve(o.model, backend=self.backend, weights=o.weights)
        self.placement = placement(device=o.device, dtype=o.dtype)
        self.session: _Session = self._load()

    @property
    def model_name(self) -> str:
        return self.resolved.spec.name

    # -- backend parts
    def _load(self) -> _Session:  # pragma: no cover - interface
        raise NotImplementedError

    def _embed(self, img: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _decode(self, prompts: Sequence[_Prompt], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(masks (B, H, W) bool, best predicted IoU (B,), candidates' predicted IoUs (B, C))``."""
        raise NotImplementedError  # pragma: no cover - interface

    # -- the contract
    def set_image(self, image: np.ndarray) -> None:
        """Compute the image embedding of a view (skipped when the same pixels were the last view)."""
        with self.session.lock:
            self._set(_as_rgb8(image))

    def _set(self, img: np.ndarray) -> None:
        digest = _digest(img)
        if digest != self.session.view:
            self.session.view = None
            self._embed(img)
            self.session.view = digest

    def segment(self, image: np.ndarray, targets: Sequence[Target]) -> list[Instance]:
        """Masks for every target on ``image`` (``(H, W, 3)`` uint8; gray and RGBA accepted), in target order;
        empty or low-scoring ones are dropped."""
        img = _as_rgb8(image)
        shape = img.shape[:2]
        prompts = [_validate(t, shape) for t in targets]
        if not prompts:
            return []
        groups: dict[tuple[bool, int], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault((p.box is not None, len(p.points)), []).append(i)
        found: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
        with self.session.lock:
            self._set(img)
            for group in groups.values():
                for start in range(0, len(group), self.options.batch_size):
                    idx = group[start : start + self.options.batch_size]
                    masks, best, candidates = self._decode([prompts[i] for i in idx], shape)
                    for j, i in enumerate(idx):
                        found[i] = (masks[j], float(best[j]), candidates[j])
        out = []
        for i, target in enumerate(targets):
            mask, iou, candidates = found[i]
            inst = self._instance(target, prompts[i], mask, iou, candidates)
            if inst is not None:
                out.append(inst)
        return out

    def _instance(
        self, target: Target, prompt: _Prompt, mask: np.ndarray, iou: float, candidates: np.ndarray
    ) -> Instance | None:
        if not mask.any():
            log.info("%s: empty mask for target '%s'; no instance", self.name, target.label)
            return None
        confidence = float(min(1.0, max(0.0, target.confidence)))
        predicted = float(min(1.0, max(0.0, iou)))
        score = confidence * predicted
        if score < self.options.min_score:
            log.info("%s: target '%s' scored %.3f < min_score %.3f; no instance", self.name, target.label, score,
                     self.options.min_score)
            return None
        kind = "points" if prompt.box is None else "box+points" if prompt.points else "box"
        return Instance(
            label=target.label,
            score=score,
            bbox=_bbox(mask),
            area_px=int(np.count_nonzero(mask)),
            mask=mask,
            attributes={
                "segmenter": self.name,
                "model": self.model_name,
                "prompt": kind,
                "confidence": round(confidence, 4),
                "predicted_iou": round(predicted, 4),
                "candidates_iou": [round(float(c), 4) for c in np.atleast_1d(candidates)],
            },
        )


class Sam2Segmenter(_Sam2Base):
    """``--segmenter sam2``: Meta's ``sam2`` package (see the module docstring)."""

    name = "sam2"
    backend = "sam2"

    @property
    def predictor(self) -> Any:
        """The ``SAM2ImagePredictor`` shared by the segmenters of this model and mask threshold."""
        return self.session.predictor

    def _load(self) -> _Session:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        config = self.options.config or self.resolved.spec.config
        if config is None:
            raise OptionError(
                f"{self.resolved.path}: no sam2 config is known for this checkpoint; pass --option "
                "sam2_config=configs/sam2.1/sam2.1_hiera_<t|s|b+|l>.yaml (the size it was trained at)"
            )
        model = load_sam2_model(self.resolved.path, config, self.placement.device, self.options.adapter)
        threshold = self.options.mask_threshold
        path = str(Path(self.resolved.path).resolve())
        key = ("sam2-session", path, str(config), self.placement.device, str(threshold), str(self.options.adapter))
        return _session(key, lambda: _Session(predictor=SAM2ImagePredictor(model, mask_threshold=threshold)))

    def _embed(self, img: np.ndarray) -> None:
        import torch

        from rscore.models.device import autocast

        with torch.inference_mode(), autocast(self.placement):
            self.predictor.set_image(img)

    def _decode(self, prompts: Sequence[_Prompt], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        from rscore.models.device import autocast

        n_points = max(len(p.points) for p in prompts)
        coords = labels = None
        if n_points:
            coords = np.zeros((len(prompts), n_points, 2), np.float32)
            labels = np.full((len(prompts), n_points), -1, np.int32)  # -1: SAM's "not a point" padding
            for b, p in enumerate(prompts):
                for k, (x, y, flag) in enumerate(p.points):
                    coords[b, k] = (x, y)
                    labels[b, k] = flag
        boxes = None
        if prompts[0].box is not None:
            boxes = np.array([p.box for p in prompts], np.float32)
        with torch.inference_mode(), autocast(self.placement):
            masks, ious, _ = self.predictor.predict(
                point_coords=coords, point_labels=labels, box=boxes, multimask_output=self.options.multimask
            )
        if masks.ndim == 3:  # the predictor drops the batch axis for a single prompt
            masks, ious = masks[None], ious[None]
        best = ious.argmax(axis=1)
        rows = np.arange(len(prompts))
        return masks[rows, best] > 0.5, ious[rows, best], ious


class HFSam2Segmenter(_Sam2Base):
    """``--segmenter sam2-hf``: transformers' ``Sam2Model`` / ``Sam2Processor`` (see the module docstring)."""

    name = "sam2-hf"
    backend = "sam2-hf"

    def _load(self) -> _Session:
        model, processor = _load_hf(self.resolved.path, self.placement.device, self.options.adapter)
        self.model, self.processor = model, processor
        key = ("sam2-hf-session", str(Path(self.resolved.path).resolve()), self.placement.device, str(self.options.adapter))
        return _session(key, _Session)

    def _embed(self, img: np.ndarray) -> None:
        import torch

        from rscore.models.device import autocast

        inputs = self.processor(images=img, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.placement.device)
        with torch.inference_mode(), autocast(self.placement):
            self.session.embedding = self.model.get_image_embeddings(pixels)
        self.session.original_sizes = inputs["original_sizes"]

    def _decode(self, prompts: Sequence[_Prompt], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        from rscore.models.device import autocast

        kwargs: dict[str, Any] = {}
        if any(p.points for p in prompts):
            kwargs["input_points"] = [[[[x, y] for x, y, _ in p.points] for p in prompts]]
            kwargs["input_labels"] = [[[f for _, _, f in p.points] for p in prompts]]
        if prompts[0].box is not None:
            kwargs["input_boxes"] = [[list(p.box) for p in prompts if p.box is not None]]
        enc = self.processor(original_sizes=self.session.original_sizes, return_tensors="pt", **kwargs)
        device = self.placement.device
        tensors = {k: enc[k].to(device) for k in ("input_points", "input_labels", "input_boxes") if k in enc}
        with torch.inference_mode(), autocast(self.placement):
            out = self.model(
                image_embeddings=self.session.embedding, multimask_output=self.options.multimask, **tensors
            )
            ious = out.iou_scores[0].float()  # (B, C)
            best = ious.argmax(dim=1)
            rows = torch.arange(len(prompts), device=ious.device)
            chosen = out.pred_masks[0][rows, best][:, None].float()  # (B, 1, h, w) low-resolution logits
        masks = self.processor.post_process_masks(
            [chosen.cpu()], self.session.original_sizes, mask_threshold=self.options.mask_threshold, binarize=True
        )[0][:, 0]
        ious_np = ious.cpu().numpy()
        return masks.numpy().astype(bool), ious_np[np.arange(len(prompts)), best.cpu().numpy()], ious_np


def make_sam2_segmenter(options: Mapping[str, Any]) -> Sam2Segmenter:
    """Backend factory of ``--segmenter sam2`` (options: :class:`Sam2Options`)."""
    return Sam2Segmenter(Sam2Options.from_options(options))


def make_hf_sam2_segmenter(options: Mapping[str, Any]) -> HFSam2Segmenter:
    """Backend factory of ``--segmenter sam2-hf`` (options: :class:`Sam2Options`)."""
    return HFSam2Segmenter(Sam2Options.from_options(options))
