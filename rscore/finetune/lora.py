"""LoRA fine-tuning of the ``transformers`` VLM reasoner (Qwen2.5-VL / Qwen3-VL) on box / point answers.

Each step takes a training item, augments its picture and mask, and builds the request exactly as the reasoner
does at inference (:class:`rscore.reasoners.transformers_vlm.TransformersReasoner`: the picture fitted to the
processor's patch grid, the matched template's domain knowledge, the scene description, the chat template). The
target is the answer in rscore's schema derived from the mask (:mod:`rscore.finetune.supervision`), in the frame
the reasoner parses (pixels for Qwen2.5-VL, 0-1000 for Qwen3-VL), followed by the end-of-turn token; the loss is
the mean cross-entropy over the answer tokens only. AdamW on the LoRA parameters (peft), constant learning rate
after an optional linear warm-up, ``accumulate`` items per optimiser step.

The base model is loaded fresh (not from the reasoner's shared cache), so training never alters a model other
reasoners are using.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.finetune.augment import augment
from rscore.finetune.data import Prepared, SceneLoader, TrainItem, shape_only
from rscore.finetune.supervision import answer_text, mask_targets
from rscore.reasoners.prompting import describe_scene
from rscore.reasoners.transformers_vlm import RECOMMENDED, TransformersOptions, TransformersReasoner

log = logging.getLogger(__name__)

__all__ = ["TrainingReasoner", "load_base_reasoner", "ReasonerExample", "build_example", "train_lora"]

END_TOKEN = "<|im_end|>"


class TrainingReasoner(TransformersReasoner):
    """The transformers reasoner around a model loaded for training (its own copy, not the shared cache): the same
    ``fit`` / ``conversation`` / ``encode`` / ``generate`` / ``plan`` as at inference."""

    def __init__(self, options: TransformersOptions, resolved: Any, placement: Any, model: Any, processor: Any) -> None:
        self.options = options
        self.resolved = resolved
        self.placement = placement
        self.model = model
        self.processor = processor
        self.model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
        self._lock = threading.Lock()


def load_base_reasoner(options: TransformersOptions) -> TrainingReasoner:
    """Resolve the model like ``--reasoner transformers`` (registry name, folder, ``auto``) and load a private copy
    of it in float32 on CPU (bfloat16 / float16 on GPUs, LoRA weights kept in float32 by peft)."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    from rscore.models import registry
    from rscore.models.device import placement

    hf_logging.disable_progress_bar()
    if options.model == "auto":
        resolved = registry.resolve_auto("transformers", weights=options.weights, recommend=RECOMMENDED)
    else:
        resolved = registry.resolve(options.model, backend="transformers", weights=options.weights)
    where = placement(device=options.device, dtype=options.dtype)
    try:
        processor = AutoProcessor.from_pretrained(str(resolved.path), local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            str(resolved.path), dtype=where.torch_dtype, local_files_only=True
        )
    except (OSError, ValueError, ImportError) as exc:
        raise BackendUnavailable(
            f"{resolved.path}: transformers cannot load it for fine-tuning ({type(exc).__name__}: {exc})"
        ) from None
    model = model.to(where.device)
    return TrainingReasoner(options, resolved, where, model, processor)


class ReasonerExample:
    """One tokenised example: ``inputs`` (the model's keyword arguments, answer appended) and ``labels`` (-100 on the
    prompt), plus the answer text and the augmentations applied."""

    def __init__(self, inputs: Mapping[str, Any], labels: Any, answer: str, applied: tuple[str, ...]) -> None:
        self.inputs, self.labels, self.answer, self.applied = inputs, labels, answer, applied


def _end_token_id(tokenizer: Any) -> int:
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    if end is None or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    if end is None:
        raise BackendUnavailable("the tokenizer has neither <|im_end|> nor an end-of-sequence token")
    return int(end)


def build_example(
    reasoner: TrainingReasoner,
    prepared: Prepared,
    templates: Sequence[Any],
    *,
    augmentations: Sequence[str] = (),
    augment_options: Mapping[str, Any] | None = None,
    augment_p: float = 0.5,
    rng: np.random.Generator,
    max_targets: int = 20,
    min_area_px: int = 4,
) -> ReasonerExample:
    """Augment, prompt as at inference, and tokenise prompt + taught answer."""
    import torch

    rgb, mask, applied = augment(prepared.rgb, prepared.mask, augmentations, rng, augment_options, p=augment_p)
    scene = shape_only(prepared.scene, *mask.shape)
    options = reasoner.options_for(prepared.request)
    sent = reasoner.fit(rgb, options)
    convo = reasoner.conversation(
        sent, prepared.request, templates, kind=scene.kind, context=describe_scene(scene, sent), options=options
    )
    label = convo.hints.label or "target"
    targets = () if prepared.item.sample.negative else mask_targets(
        mask, label, min_area_px=min_area_px, max_targets=max_targets
    )
    answer = answer_text(
        targets,
        image_size=(mask.shape[1], mask.shape[0]),
        sent_size=sent.size,
        frame=convo.frame if convo.frame in ("norm1000", "norm1") else "pixels",
        steps=prepared.item.sample.steps,
    )
    inputs = reasoner.encode(convo.messages, sent)
    tok = reasoner.processor.tokenizer
    device = inputs["input_ids"].device
    ids = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
    target = torch.cat([ids, torch.tensor([[_end_token_id(tok)]], device=device)], dim=1)
    full, labels = append_answer(inputs, target)
    return ReasonerExample(full, labels, answer, applied)


def append_answer(inputs: Mapping[str, Any], target: Any) -> tuple[dict[str, Any], Any]:
    """Teacher forcing: the prompt ``inputs`` (from ``reasoner.encode``) followed by the ``target`` token ids.

    Returns the model inputs and the labels, which are ``-100`` (ignored by the loss) over the prompt, so the loss
    is the cross-entropy of the answer tokens only.
    """
    import torch

    prompt_len = int(inputs["input_ids"].shape[1])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], target], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    if "mm_token_type_ids" in inputs:  # Qwen3-VL marks image tokens; answer tokens are text
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(target)], dim=1)
    labels = full["input_ids"].clone()
    labels[:, :prompt_len] = -100
    return full, labels


def train_lora(
    reasoner: TrainingReasoner,
    items: Sequence[TrainItem],
    loader: SceneLoader,
    templates: Sequence[Any],
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str],
    steps: int,
    lr: float,
    accumulate: int = 1,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    augmentations: Sequence[str] = (),
    augment_options: Mapping[str, Any] | None = None,
    augment_p: float = 0.5,
    max_targets: int = 20,
    min_area_px: int = 4,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Wrap ``reasoner.model`` with a LoRA (peft) and train it; ``reasoner.model`` becomes the ``PeftModel``.

    Returns the training log: ``losses`` (mean answer-token cross-entropy per optimiser step), ``trainable_params``,
    ``total_params``, ``augmentations_applied`` (counts), ``seconds``.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    if not items:
        raise OptionError("fine-tuning needs at least one sample")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    present = {name.rsplit(".", 1)[-1] for name, _ in reasoner.model.named_modules()}
    missing = [m for m in target_modules if m not in present]
    if len(missing) == len(target_modules):
        raise OptionError(
            f"none of the LoRA target modules {', '.join(target_modules)} exists in {reasoner.model_name} "
            f"(it has e.g. {', '.join(sorted(n for n in present if n.endswith('proj'))[:8])})"
        )
    if missing:
        log.warning("LoRA target module(s) %s not in %s; training the others", ", ".join(missing), reasoner.model_name)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=[m for m in target_modules if m in present], bias="none")
    model = get_peft_model(reasoner.model, config)
    reasoner.model = model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    )
    order: list[int] = []
    losses: list[float] = []
    applied_counts: dict[str, int] = {}
    t0 = time.perf_counter()
    model.train()
    try:
        for step in range(steps):
            optimiser.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(accumulate):
                if not order:
                    order = list(rng.permutation(len(items)))
                item = items[order.pop()]
                example = build_example(
                    reasoner, loader.load(item), templates, augmentations=augmentations,
                    augment_options=augment_options, augment_p=augment_p, rng=rng, max_targets=max_targets,
                    min_area_px=min_area_px,
                )
                for name in example.applied:
                    applied_counts[name] = applied_counts.get(name, 0) + 1
                loss = model(**example.inputs, labels=example.labels).loss
                if not torch.isfinite(loss):
                    raise OptionError(
                        f"the training loss became {float(loss)} at step {step + 1}; lower the learning rate (lr={lr})"
                    )
                (loss / accumulate).backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            schedule.step()
            losses.append(total / accumulate)
            log.info("reasoner LoRA step %d/%d: loss %.4f", step + 1, steps, losses[-1])
            if progress is not None:
                progress(step + 1, steps)
    finally:
        model.eval()
    return {
        "losses": losses,
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "augmentations_applied": applied_counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def save_lora(reasoner: TrainingReasoner, folder: Path) -> None:
    """Write the LoRA (peft ``save_pretrained``: adapter_config.json + adapter_model.safetensors) into ``folder``."""
    reasoner.model.save_pretrained(str(folder), safe_serialization=True)
