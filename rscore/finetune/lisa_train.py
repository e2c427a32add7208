"""Fine-tuning a LISA checkpoint on a plugin's mask-labelled data: ``rscore finetune --reasoner lisa``.

As LISA trains: LoRA on the language model's attention projections, the ``[SEG]`` projection (``text_hidden_fcs``)
and SAM's mask decoder trained in full, the CLIP tower and SAM's image encoder frozen. Each item is the inference
prompt (:func:`rscore.reasoners.lisa.lisa_prompt`) with the answer ``"Sure, it is [SEG]."`` (``"It is not in this
image."`` for a sample without a mask) appended; the loss is LISA's: next-token cross-entropy on the answer +
2.0 x BCE + 0.5 x Dice between the mask decoded from the ``[SEG]`` hidden state and the ground truth at the
picture's size.

The adapter folder has the usual ``rscore_adapter.json``, the LoRA in ``reasoner/`` (peft) and
``reasoner/lisa_heads.safetensors`` (projection + mask decoder, transformers' key names). ``--adapter DIR`` with
``--reasoner lisa`` loads it (:func:`apply_lisa_adapter`); it refuses an adapter trained for another backend or on a
model of another size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import InputError

# loading an adapter lives beside the model (rscore.models.lisa), so the reasoner never imports the trainer
from rscore.models.lisa import HEADS_FILE, apply_lisa_adapter

if TYPE_CHECKING:
    from rscore.finetune.data import SceneLoader, TrainItem
    from rscore.models.lisa import LisaModel

log = logging.getLogger(__name__)

__all__ = ["train_lisa", "save_lisa_adapter", "apply_lisa_adapter", "HEADS_FILE", "POSITIVE_ANSWER", "NEGATIVE_ANSWER"]

POSITIVE_ANSWER = "Sure, it is [SEG]."
NEGATIVE_ANSWER = "It is not in this image."
CE_WEIGHT, BCE_WEIGHT, DICE_WEIGHT = 1.0, 2.0, 0.5  # LISA's loss weights


def _lora_targets(names: Sequence[str]) -> str:
    """A peft regex that puts LoRA on the language model's ``names`` only (not CLIP's projections)."""
    return rf".*language_model.*\.({'|'.join(names)})"


def dice_loss(logits: Any, truth: Any, eps: float = 1e-6) -> Any:
    p = logits.sigmoid().flatten(1)
    t = truth.flatten(1)
    return (1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)).mean()


def train_lisa(
    model: LisaModel,
    items: Sequence[TrainItem],
    loader: SceneLoader,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    steps: int = 100,
    lr: float = 3e-4,
    seed: int = 0,
    answer: str = POSITIVE_ANSWER,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train in place (``model.llava`` becomes a peft model); returns losses and the trainable parameter count.
    ``answer`` is what the model is taught to say for a sample with a mask (it must hold ``[SEG]``)."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    from rscore.reasoners import lisa as R

    if not items:
        raise InputError("the dataset has no training items")
    if "[SEG]" not in answer:
        raise InputError(f"the LISA training answer {answer!r} has no [SEG] token")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    for p in [*model.llava.parameters(), *model.sam.parameters()]:
        p.requires_grad_(False)
    peft_model = get_peft_model(model.llava, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                                        target_modules=_lora_targets(target_modules)))
    model.llava = peft_model
    heads = [*model.text_hidden_fcs.parameters(), *model.sam.mask_decoder.parameters()]
    for p in heads:
        p.requires_grad_(True)
    trainable = [p for p in [*peft_model.parameters(), *heads] if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=lr)
    tok = model.tokenizer
    eos = tok.eos_token_id
    embeddings: dict[tuple[str, int, str], tuple[Any, tuple[int, int]]] = {}
    losses: list[float] = []
    parts: list[dict[str, float]] = []
    order = rng.permutation(len(items))
    peft_model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        item = items[int(order[step % len(items)])]
        prepared = loader.load(item)
        picture, truth = prepared.rgb, prepared.mask
        positive = bool(truth.any())
        prompt = R.lisa_prompt(item.query, im_start_end=model.use_im_start_end)
        ids = R.lisa_input_ids(prompt, tok, model.image_token_id, model.image_seq_length)
        said = tok(answer if positive else NEGATIVE_ANSWER, add_special_tokens=False).input_ids
        full = ids + said + ([eos] if eos is not None else [])
        input_ids = torch.tensor([full], device=model.device)
        labels = input_ids.clone()
        labels[0, : len(ids)] = -100
        out = peft_model(input_ids=input_ids, pixel_values=R._clip_pixels(picture, model.clip_size).to(model.device),
                         labels=labels, output_hidden_states=True)
        loss = CE_WEIGHT * out.loss
        record = {"ce": float(out.loss.detach())}
        positions = R.seg_hidden_positions(full, model.seg_token_id)
        if positive and positions:
            key = (item.sample.id, item.frame, item.query)
            if key not in embeddings:
                embeddings[key] = R.sam_embed(model.sam, picture)
            image_emb, resized = embeddings[key]
            emb = model.text_hidden_fcs(out.hidden_states[-1][0, positions])
            low, _ = R.sam_decode(model.sam, image_emb.clone(), emb)
            side = int(model.sam.config.vision_config.image_size)
            logits = R.upscale_logits(low[:, None], side, resized, truth.shape)[:, 0]
            target = torch.from_numpy(truth).float().to(logits.device).expand_as(logits)
            bce = F.binary_cross_entropy_with_logits(logits, target)
            dice = dice_loss(logits, target)
            loss = loss + BCE_WEIGHT * bce + DICE_WEIGHT * dice
            record.update(bce=float(bce.detach()), dice=float(dice.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        parts.append(record)
        if progress:
            progress(step + 1, steps)
    peft_model.eval()
    return {"losses": losses, "parts": parts, "trainable_params": int(n_trainable), "steps": steps,
            "seconds": round(time.perf_counter() - t0, 3)}


def save_lisa_adapter(model: LisaModel, folder: Path) -> None:
    """The LoRA (peft ``save_pretrained``) and the heads file into ``folder`` (the adapter's ``reasoner/``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.llava.save_pretrained(str(folder))
    heads = {f"text_hidden_fcs.{k}": v.detach().cpu().contiguous() for k, v in model.text_hidden_fcs.state_dict().items()}
    heads.update({f"mask_decoder.{k}": v.detach().cpu().contiguous() for k, v in model.sam.mask_decoder.state_dict().items()})
    save_file(heads, str(folder / HEADS_FILE))
