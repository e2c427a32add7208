"""Tuning the SAM2 mask decoder on a domain with BCE + Dice (the image encoder and prompt encoder stay frozen).

Prompts are what the reasoner gives at inference: for every connected component of a ground-truth mask, its box
(jittered by up to ``box_jitter`` of its side, normal noise) and one interior positive point. SAM2 decodes three
candidate masks per prompt; as in SAM's own training the loss of a prompt is that of its best candidate,
``BCE(logits, truth) + Dice(sigmoid(logits), truth)``, plus the mean squared error of the IoU head against each
candidate's real IoU (so that the candidate the segmenter picks by predicted IoU is the good one). Losses are
computed on the decoder's low-resolution grid (256 x 256 for 1024 px models), to which the truth is area-resampled
(SAM2 resizes the whole picture to its square input, so that grid covers the whole picture).

Two backends, as at inference: ``sam2`` (Meta's package; the decoder is run through the predictor's own prompt
preparation) and ``sam2-hf`` (transformers' ``Sam2Model``). Images without a target (negative rows) are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.models.adapter import mask_decoder
from rscore.finetune.augment import augment
from rscore.finetune.data import SceneLoader, TrainItem
from rscore.finetune.supervision import mask_components

log = logging.getLogger(__name__)

__all__ = ["DecoderTrainer", "load_base_segmenter", "seg_loss", "train_mask_decoder", "save_mask_decoder"]

BACKENDS = ("sam2", "sam2-hf")
_RECOMMENDED = {"sam2": "sam2.1-hiera-tiny", "sam2-hf": "hf-sam2.1-hiera-tiny"}


def seg_loss(logits: Any, truth: Any, iou_pred: Any) -> tuple[Any, Any]:
    """``(per-prompt loss of the best candidate, IoU-head MSE)`` for ``logits`` ``(B, C, h, w)``, soft ``truth``
    ``(B, h, w)`` in [0, 1] and predicted IoUs ``(B, C)``."""
    import torch
    import torch.nn.functional as F

    t = truth[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * t).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    per_candidate = bce + dice  # (B, C)
    best = per_candidate.min(dim=1).values
    with torch.no_grad():
        hard, tb = logits > 0, t > 0.5
        real_iou = (hard & tb).sum(dim=(2, 3)).float() / (hard | tb).sum(dim=(2, 3)).clamp(min=1).float()
    iou_mse = F.mse_loss(iou_pred.float(), real_iou)
    return best, iou_mse


class DecoderTrainer:
    """A SAM2 model loaded for tuning (a private copy, not the segmenters' shared cache) and its decode step."""

    def __init__(self, backend: str, model: Any, processor: Any, resolved: Any, device: str) -> None:
        self.backend, self.model, self.processor = backend, model, processor
        self.resolved, self.device = resolved, device
        self.model.requires_grad_(False)
        self.decoder = mask_decoder(model)
        self.decoder.requires_grad_(True)
        self.predictor = None
        if backend == "sam2":
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            self.predictor = SAM2ImagePredictor(model)
            self._predict = getattr(SAM2ImagePredictor._predict, "__wrapped__", None)
            if self._predict is None:
                raise BackendUnavailable("this sam2 version's predictor cannot be run with gradients (no __wrapped__)")

    @property
    def model_name(self) -> str:
        return self.resolved.spec.name

    def decode(self, rgb: np.ndarray, boxes: np.ndarray, points: np.ndarray) -> tuple[Any, Any]:
        """``(low-resolution logits (B, 3, h, w), predicted IoUs (B, 3))`` for ``boxes`` ``(B, 4)`` and one positive
        point per prompt ``(B, 2)`` (pixels of ``rgb``), with gradients through the decoder."""
        import torch

        if self.backend == "sam2":
            p = self.predictor
            with torch.no_grad():
                p.set_image(rgb)
            mask_input, coords, labels, box = p._prep_prompts(
                points[:, None, :], np.ones((len(points), 1), np.int32), boxes, None, True
            )
            _, ious, low = self._predict(p, coords, labels, box, mask_input, multimask_output=True, return_logits=True)
            return low, ious
        inputs = self.processor(images=rgb, return_tensors="pt")
        with torch.no_grad():
            emb = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        enc = self.processor(
            original_sizes=inputs["original_sizes"],
            input_boxes=[[list(map(float, b)) for b in boxes]],
            input_points=[[[[float(x), float(y)]] for x, y in points]],
            input_labels=[[[1] for _ in points]],
            return_tensors="pt",
        )
        tensors = {k: enc[k].to(self.device) for k in ("input_points", "input_labels", "input_boxes")}
        out = self.model(image_embeddings=emb, multimask_output=True, **tensors)
        return out.pred_masks[0], out.iou_scores[0]


def load_base_segmenter(
    backend: str, model: str = "auto", *, weights: str | None = None, config: str | None = None, device: str = "auto"
) -> DecoderTrainer:
    """Resolve a SAM2 model like ``--segmenter sam2`` / ``sam2-hf`` and load a private copy of it (float32)."""
    if backend not in BACKENDS:
        raise OptionError(f"the mask decoder can be tuned for segmenter {' or '.join(BACKENDS)}, not {backend!r}")
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch

    from rscore.models import registry
    from rscore.models.device import placement

    if model == "auto":
        resolved = registry.resolve_auto(backend, weights=weights, recommend=_RECOMMENDED[backend])
    else:
        resolved = registry.resolve(model, backend=backend, weights=weights)
    dev = placement(device=device, dtype="float32").device
    if backend == "sam2":
        from rscore.models.sam2_build import build_sam2_model, check_state_dict

        cfg = config or resolved.spec.config
        if cfg is None:
            raise OptionError(
                f"{resolved.path}: no sam2 config is known for this checkpoint; pass segmenter_config="
                "configs/sam2.1/sam2.1_hiera_<t|s|b+|l>.yaml"
            )
        net = build_sam2_model(cfg)
        try:
            ckpt = torch.load(str(resolved.path), map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated download, foreign file
            raise BackendUnavailable(f"{resolved.path}: not a readable SAM2 checkpoint ({exc})") from None
        state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
        if not isinstance(state, Mapping):
            raise BackendUnavailable(f"{resolved.path}: not a SAM2 checkpoint (no 'model' state dict inside)")
        problem = check_state_dict(net, state, resolved.path)
        if problem:
            raise BackendUnavailable(problem)
        net.load_state_dict(state, strict=True)
        return DecoderTrainer(backend, net.to(dev).eval(), None, resolved, dev)
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    folder = Path(resolved.path)
    try:
        net = Sam2Model.from_pretrained(str(folder), local_files_only=True)
        if any((folder / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
            processor = Sam2Processor.from_pretrained(str(folder), local_files_only=True)
        else:
            size = int(net.config.prompt_encoder_config.image_size)
            processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size}))
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"{folder}: transformers cannot load a Sam2Model from it ({exc})") from None
    return DecoderTrainer(backend, net.to(dev).eval(), processor, resolved, dev)


def _jitter(box: tuple[float, ...], shape: tuple[int, int], amount: float, rng: np.random.Generator) -> list[float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    noise = rng.normal(0.0, amount / 2, 4).clip(-amount, amount) * np.array([w, h, w, h])
    H, W = shape
    nx0, ny0 = min(max(0.0, x0 + noise[0]), W - 1.0), min(max(0.0, y0 + noise[1]), H - 1.0)
    nx1, ny1 = max(min(float(W), x1 + noise[2]), nx0 + 1.0), max(min(float(H), y1 + noise[3]), ny0 + 1.0)
    return [nx0, ny0, nx1, ny1]


def train_mask_decoder(
    trainer: DecoderTrainer,
    items: Sequence[TrainItem],
    loader: SceneLoader,
    *,
    steps: int,
    lr: float,
    box_jitter: float = 0.1,
    iou_weight: float = 1.0,
    augmentations: Sequence[str] = (),
    augment_options: Mapping[str, Any] | None = None,
    augment_p: float = 0.5,
    max_targets: int = 20,
    min_area_px: int = 4,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Tune ``trainer``'s mask decoder in place; returns the log (``losses`` per step, ``iou_losses``, counts)."""
    import cv2
    import torch

    usable = [it for it in items if not it.sample.negative]
    if not usable:
        raise OptionError("tuning the mask decoder needs samples with a target mask (all are negatives)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    params = [p for p in trainer.decoder.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr)
    losses: list[float] = []
    iou_losses: list[float] = []
    skipped = 0
    order: list[int] = []
    t0 = time.perf_counter()
    trainer.decoder.train()
    try:
        step = 0
        while step < steps:
            if not order:
                order = list(rng.permutation(len(usable)))
            prepared = loader.load(usable[order.pop()])
            rgb, mask, _ = augment(prepared.rgb, prepared.mask, augmentations, rng, augment_options, p=augment_p)
            comps = mask_components(mask, "target", min_area_px=min_area_px, max_targets=max_targets)
            if not comps:
                skipped += 1
                if skipped > 10 * len(usable):
                    raise OptionError("no sample has a target component large enough to tune the decoder on")
                continue
            boxes = np.array([_jitter(t.box, mask.shape, box_jitter, rng) for t, _ in comps], np.float32)
            points = np.array([t.points[0][:2] for t, _ in comps], np.float32)
            logits, ious = trainer.decode(np.ascontiguousarray(rgb), boxes, points)
            h, w = logits.shape[-2:]
            truth = np.stack([cv2.resize(c.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) for _, c in comps])
            truth_t = torch.from_numpy(truth).to(logits.device)
            best, iou_mse = seg_loss(logits.float(), truth_t, ious)
            loss = best.mean() + iou_weight * iou_mse
            if not torch.isfinite(loss):
                raise OptionError(f"the decoder loss became {float(loss)} at step {step + 1}; lower segmenter_lr")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            step += 1
            losses.append(float(best.mean().detach()))
            iou_losses.append(float(iou_mse.detach()))
            log.info("mask decoder step %d/%d: BCE+Dice %.4f, IoU MSE %.4f", step, steps, losses[-1], iou_losses[-1])
            if progress is not None:
                progress(step, steps)
    finally:
        trainer.decoder.eval()
    return {
        "losses": losses,
        "iou_losses": iou_losses,
        "trainable_params": int(sum(p.numel() for p in params)),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def save_mask_decoder(trainer: DecoderTrainer, path: Path) -> None:
    """Write the decoder's state dict as safetensors."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in trainer.decoder.state_dict().items()}
    save_file(state, str(path))
