"""Adapt the decoupled path to a domain: LoRA on the VLM reasoner, optionally the SAM2 mask decoder.

::

    rscore finetune --plugin P --dataset MANIFEST --out DIR [--model M] [--segmenter sam2|sam2-hf] [-O KEY=VALUE ...]
        -> finetune_command(P, MANIFEST, DIR, model=M, segmenter=..., options={...}) -> (text, exit code)

The dataset is a manifest (:mod:`rscore.evaluation.manifest`) or a folder the plugin's dataset reader understands.
Masks become box / point supervision (:mod:`rscore.finetune.supervision`); the reasoner learns to answer with those
targets in rscore's JSON schema (:mod:`rscore.finetune.lora`); with ``segmenter`` the SAM2 mask decoder is tuned on
the same prompts with BCE + Dice (:mod:`rscore.finetune.sam2_decoder`). Defaults (LoRA rank, target modules,
augmentations and their options) come from the plugin's :class:`~rscore.sdk.AdapterSpec` (its first one); options
override them. The result is an adapter folder (:mod:`rscore.models.adapter`) that ``--adapter DIR`` loads through
:func:`apply_reasoner_adapter` / :func:`apply_segmenter_adapter`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rscore.errors import OptionError
from rscore.models.adapter import (
    ADAPTER_FILE,
    DECODER_FILE,
    FORMAT,
    FORMAT_VERSION,
    REASONER_DIR,
    AdapterInfo,
    apply_reasoner_adapter,
    apply_segmenter_adapter,
    file_sha256,
    read_adapter,
)
from rscore.finetune.augment import AUGMENTATIONS, check_augmentations

if TYPE_CHECKING:
    from rscore.plugins import Registry
    from rscore.sdk import AdapterSpec

log = logging.getLogger(__name__)

__all__ = [
    "AUGMENTATIONS",
    "AdapterInfo",
    "FinetuneOptions",
    "FinetuneResult",
    "apply_reasoner_adapter",
    "apply_segmenter_adapter",
    "finetune",
    "finetune_command",
    "read_adapter",
]

_TUPLE_FIELDS = ("target_modules", "augmentations")


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune (``None`` = the plugin's :class:`~rscore.sdk.AdapterSpec` default).

    Reasoner (LoRA): ``reasoner`` ``transformers`` (a VLM answering with boxes/points) or ``lisa`` (a LISA checkpoint:
    LoRA + its [SEG] projection + SAM mask decoder, :mod:`rscore.finetune.lisa_train`; ``lisa_vision_tower`` names
    the CLIP folder when it is not under ``--weights``, ``lisa_answer`` the answer taught, default LISA's
    "Sure, it is [SEG]."); ``model`` / ``weights`` / ``device`` / ``dtype`` as for the
    reasoner;
    ``train_reasoner`` (False = decoder only); ``steps`` optimiser steps of ``accumulate`` items each; ``lr``
    (AdamW), ``weight_decay``, ``warmup_steps`` (linear); ``rank``, ``alpha`` (default 2 x rank), ``dropout``,
    ``target_modules`` (module names, e.g. ``q_proj``); ``max_side`` (px, the picture size at inference).

    Data: ``augmentations`` (names, :mod:`rscore.finetune.augment`; ``()`` = none) each applied with probability
    ``augment_p``; ``max_targets`` components per mask, ``min_area_px`` smallest component (px); ``engine``: reader /
    engine options for every row (``aux``, ``bands``, ``matcher``, ``template``...).

    Segmenter: ``segmenter`` ``sam2`` | ``sam2-hf`` tunes that backend's mask decoder (``None``: not tuned);
    ``segmenter_model`` (``auto`` / name / path), ``segmenter_config`` (yaml for unregistered sam2 checkpoints),
    ``segmenter_steps`` (default ``steps``), ``segmenter_lr``, ``box_jitter`` (fraction of a box side).

    ``seed`` seeds the sample order, the augmentations, LoRA initialisation and dropout.
    """

    reasoner: str = "transformers"
    model: str = "auto"
    weights: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    train_reasoner: bool = True
    steps: int = 200
    accumulate: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    rank: int | None = None
    alpha: float | None = None
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None
    max_side: int = 1024
    augmentations: tuple[str, ...] | None = None
    augment_p: float = 0.5
    max_targets: int = 20
    min_area_px: int = 4
    segmenter: str | None = None
    segmenter_model: str = "auto"
    segmenter_config: str | None = None
    segmenter_steps: int | None = None
    segmenter_lr: float = 1e-4
    box_jitter: float = 0.1
    seed: int = 0
    engine: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def whole(v: Any, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        checks = [
            (whole(self.steps, 1), "steps must be a whole number >= 1"),
            (whole(self.accumulate, 1), "accumulate must be a whole number >= 1"),
            (whole(self.warmup_steps, 0), "warmup_steps must be a whole number >= 0"),
            (isinstance(self.lr, float) and 0 < self.lr < 1, "lr must be in (0, 1)"),
            (isinstance(self.segmenter_lr, float) and 0 < self.segmenter_lr < 1, "segmenter_lr must be in (0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.rank is None or whole(self.rank, 1), "rank must be a whole number >= 1"),
            (self.alpha is None or self.alpha > 0, "alpha must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (whole(self.max_side, 32), "max_side must be a whole number >= 32 (px)"),
            (0 <= self.augment_p <= 1, "augment_p must be in [0, 1]"),
            (whole(self.max_targets, 1), "max_targets must be a whole number >= 1"),
            (whole(self.min_area_px, 1), "min_area_px must be a whole number >= 1"),
            (self.segmenter in (None, "sam2", "sam2-hf"), "segmenter must be sam2 or sam2-hf (or none)"),
            (self.reasoner in ("transformers", "lisa"), "reasoner must be transformers or lisa"),
            (self.reasoner != "lisa" or self.segmenter is None,
             "--reasoner lisa tunes its own SAM mask decoder: leave --segmenter out"),
            (self.segmenter_steps is None or whole(self.segmenter_steps, 1), "segmenter_steps must be >= 1"),
            (0 <= self.box_jitter < 1, "box_jitter must be in [0, 1)"),
            (whole(self.seed, 0), "seed must be a whole number >= 0"),
            (self.train_reasoner or self.segmenter is not None, "nothing to train: no reasoner and no segmenter"),
            (isinstance(self.engine, Mapping), "engine must be a mapping of engine options"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"finetune: {message}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, **overrides: Any) -> FinetuneOptions:
        """From a flat mapping (``-O KEY=VALUE``): fields are converted from text (lists as ``a,b`` or JSON), every
        other key is an engine option."""
        from rscore.evaluation.runner import split_options

        values, engine = split_options(cls, options, overrides, "finetune", _convert)
        return cls(**values, engine=engine)


def _convert(name: str, value: Any, default: Any) -> Any:
    try:
        if name in _TUPLE_FIELDS:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()] if value.strip().lower() != "none" else []
            return tuple(str(v) for v in value)
        if name == "segmenter":
            return None if str(value).lower() in ("", "none", "no", "false") else str(value)
        if name in ("lr", "segmenter_lr", "weight_decay", "dropout", "augment_p", "box_jitter", "alpha"):
            return float(value)
        if name in ("train_reasoner",):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int) or name in ("rank", "segmenter_steps"):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return None if value is None else str(value)
    except (TypeError, ValueError):
        raise OptionError(f"finetune option {name}={value!r} has the wrong type") from None


@dataclass(frozen=True)
class FinetuneResult:
    """Where the adapter was written and what ``rscore_adapter.json`` says (losses are in ``training_log.json``)."""

    out: Path
    document: Mapping[str, Any]
    log: Mapping[str, Any]


def _adapter_spec(plugin: str | None, registry: Registry) -> AdapterSpec | None:
    return next((a for a in registry.adapters if a.plugin == plugin), None) if plugin else None


def _prepare_out(out: Path) -> Path:
    if out.exists():
        if not out.is_dir():
            raise OptionError(f"output folder {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / ADAPTER_FILE).exists():
            raise OptionError(f"output folder {out} exists and is not an rscore adapter folder; choose another --out")
        from rscore.io.outdir import check_out_dir

        check_out_dir(out)  # replaced only if every file in it is one rscore wrote (its marker lists them)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise OptionError(f"cannot create output folder {out}: {exc.strerror or exc}") from None


def _move_into_place(tmp: Path, out: Path) -> None:
    from rscore.io.outdir import check_out_dir, write_marker

    write_marker(tmp)
    check_out_dir(out)  # again: files may have appeared while it trained
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _check_packages(opts: FinetuneOptions) -> None:
    """Fail before anything is read when torch / transformers / peft (or sam2) are missing."""
    import importlib.util

    from rscore.errors import BackendUnavailable

    needed = ["torch", "transformers", "safetensors"]
    if opts.train_reasoner:
        needed.append("peft")
    if opts.segmenter == "sam2":
        needed.append("sam2")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(f"rscore finetune needs the Python package(s) {', '.join(missing)}: pip install them")
    from rscore.compat import ensure_torchvision

    ensure_torchvision()  # before transformers / peft import torchvision


def finetune(
    plugin: str | None,
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: FinetuneOptions | Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> FinetuneResult:
    """Fine-tune on ``dataset`` and write the adapter folder ``out`` (all or nothing: written to a temporary folder
    beside it and moved into place at the end). ``progress(stage, done, total)`` with stage ``reasoner`` or
    ``segmenter``."""
    from rscore import __version__
    from rscore.engine import default_registry
    from rscore.evaluation.manifest import load_dataset
    from rscore.evaluation.runner import hardware_info, software_versions, weight_hashes
    from rscore.finetune.data import SceneLoader, training_items

    opts = options if isinstance(options, FinetuneOptions) else FinetuneOptions.from_options(options)
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    _check_packages(opts)
    manifest = load_dataset(dataset, plugin=plugin, registry=reg)
    items = training_items(manifest)
    spec = _adapter_spec(plugin, reg)
    rank = opts.rank or (spec.lora_rank if spec else 8)
    alpha = opts.alpha or 2.0 * rank
    targets = opts.target_modules or (spec.target_modules if spec else ("q_proj", "v_proj"))
    names = opts.augmentations if opts.augmentations is not None else (spec.augmentations if spec else ())
    known, unknown = check_augmentations(names)
    if unknown:
        log.warning("augmentation(s) %s unknown to rscore; skipped (known: %s)", ", ".join(unknown),
                    ", ".join(AUGMENTATIONS))
    aug_options = dict(spec.options) if spec else {}
    out = Path(out)
    tmp = _prepare_out(out)
    loader = SceneLoader(manifest, plugin, reg, opts.engine)
    training_log: dict[str, Any] = {"samples": len(manifest), "items": len(items)}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rscore": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "plugin": plugin,
        "adapter_spec": spec.name if spec else None,
        "dataset": {"path": str(manifest.path), "source": manifest.source, "sha256": manifest.sha256,
                    "rows": len(manifest), "items": len(items)},
        "augmentations": list(known),
        "augmentations_skipped": list(unknown),
        "augment_p": opts.augment_p,
        "seed": opts.seed,
        "reasoner": None,
        "segmenter": None,
        "software": software_versions(),
        "hardware": hardware_info(),
    }
    try:
        if opts.train_reasoner and opts.reasoner == "lisa":
            doc["reasoner"], training_log["reasoner"] = _finetune_lisa(opts, items, loader, tmp, rank, alpha, targets,
                                                                       progress)
        elif opts.train_reasoner:
            from rscore.finetune.lora import load_base_reasoner, save_lora, train_lora
            from rscore.reasoners.transformers_vlm import TransformersOptions

            topts = TransformersOptions(model=opts.model, weights=opts.weights, device=opts.device, dtype=opts.dtype,
                                        max_side=opts.max_side)
            reasoner = load_base_reasoner(topts)
            base_files = weight_hashes(reasoner.resolved.path)
            result = train_lora(
                reasoner, items, loader, reg.templates_for(plugin), rank=rank, alpha=alpha, dropout=opts.dropout,
                target_modules=targets, steps=opts.steps, lr=opts.lr, accumulate=opts.accumulate,
                warmup_steps=opts.warmup_steps, weight_decay=opts.weight_decay, augmentations=known,
                augment_options=aug_options, augment_p=opts.augment_p, max_targets=opts.max_targets,
                min_area_px=opts.min_area_px, seed=opts.seed,
                progress=(lambda d, t: progress("reasoner", d, t)) if progress else None,
            )
            save_lora(reasoner, tmp / REASONER_DIR)
            training_log["reasoner"] = result
            doc["reasoner"] = {
                "base_model": reasoner.model_name,
                "repo_id": reasoner.resolved.spec.repo_id,
                "model_type": reasoner.model_type,
                "base_files": base_files["files"],
                "folder": REASONER_DIR,
                "rank": rank,
                "alpha": alpha,
                "dropout": opts.dropout,
                "target_modules": list(targets),
                "steps": opts.steps,
                "accumulate": opts.accumulate,
                "lr": opts.lr,
                "max_side": opts.max_side,
                "device": reasoner.placement.device,
                "dtype": reasoner.placement.dtype,
                "loss_first": result["losses"][0],
                "loss_last": result["losses"][-1],
                "trainable_params": result["trainable_params"],
            }
        if opts.segmenter is not None:
            from rscore.finetune.sam2_decoder import load_base_segmenter, save_mask_decoder, train_mask_decoder

            trainer = load_base_segmenter(opts.segmenter, opts.segmenter_model, weights=opts.weights,
                                          config=opts.segmenter_config, device=opts.device)
            seg_steps = opts.segmenter_steps or opts.steps
            result = train_mask_decoder(
                trainer, items, loader, steps=seg_steps, lr=opts.segmenter_lr, box_jitter=opts.box_jitter,
                augmentations=known, augment_options=aug_options, augment_p=opts.augment_p,
                max_targets=opts.max_targets, min_area_px=opts.min_area_px, seed=opts.seed,
                progress=(lambda d, t: progress("segmenter", d, t)) if progress else None,
            )
            save_mask_decoder(trainer, tmp / DECODER_FILE)
            training_log["segmenter"] = result
            doc["segmenter"] = {
                "backend": opts.segmenter,
                "base_model": trainer.model_name,
                "repo_id": trainer.resolved.spec.repo_id,
                "base_files": weight_hashes(trainer.resolved.path)["files"],
                "file": DECODER_FILE,
                "sha256": file_sha256(tmp / DECODER_FILE),
                "steps": seg_steps,
                "lr": opts.segmenter_lr,
                "box_jitter": opts.box_jitter,
                "loss_first": result["losses"][0],
                "loss_last": result["losses"][-1],
                "trainable_params": result["trainable_params"],
            }
        (tmp / "training_log.json").write_text(json.dumps(training_log, indent=2), encoding="utf-8")
        (tmp / ADAPTER_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FinetuneResult(out, doc, training_log)


def _finetune_lisa(
    opts: FinetuneOptions,
    items: Any,
    loader: Any,
    tmp: Path,
    rank: int,
    alpha: float,
    targets: tuple[str, ...],
    progress: Callable[[str, int, int], None] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--reasoner lisa``: load the checkpoint as ``rscore run --reasoner lisa`` does, train, save; the adapter's
    reasoner section and the training log."""
    from rscore.evaluation.runner import weight_hashes
    from rscore.finetune.lisa_train import HEADS_FILE, POSITIVE_ANSWER, save_lisa_adapter, train_lisa
    from rscore.reasoners.lisa import LisaOptions, LisaReasoner

    vision = opts.engine.get("lisa_vision_tower") or opts.engine.get("vision_tower")
    reasoner = LisaReasoner(LisaOptions(model=opts.model, weights=opts.weights, device=opts.device, dtype=opts.dtype,
                                        vision_tower=str(vision) if vision else None))
    model = reasoner.model
    result = train_lisa(model, items, loader, rank=rank, alpha=alpha, dropout=opts.dropout, target_modules=targets,
                        steps=opts.steps, lr=opts.lr, seed=opts.seed,
                        answer=str(opts.engine.get("lisa_answer") or POSITIVE_ANSWER),
                        progress=(lambda d, t: progress("reasoner", d, t)) if progress else None)
    save_lisa_adapter(model, tmp / REASONER_DIR)
    from rscore.reasoners.lisa import clear_lisa_cache

    clear_lisa_cache()  # the cached model was trained in place: the next load starts from the checkpoint again
    section = {
        "backend": "lisa",
        "base_model": reasoner.model_name,
        "model_type": "lisa",
        "base_files": weight_hashes(model.path)["files"],
        "folder": REASONER_DIR,
        "heads": f"{REASONER_DIR}/{HEADS_FILE}",
        "rank": rank,
        "alpha": alpha,
        "dropout": opts.dropout,
        "target_modules": list(targets),
        "trained": ["lora", "text_hidden_fcs", "sam.mask_decoder"],
        "answer": str(opts.engine.get("lisa_answer") or POSITIVE_ANSWER),
        "steps": opts.steps,
        "lr": opts.lr,
        "device": reasoner.device,
        "dtype": reasoner.dtype,
        "loss_first": result["losses"][0],
        "loss_last": result["losses"][-1],
        "trainable_params": result["trainable_params"],
    }
    return section, result


def finetune_command(
    plugin: str | None,
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    reasoner: str | None = None,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    segmenter: str | None = None,
    as_json: bool = False,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[str, int]:
    """``rscore finetune``: train and write the adapter folder; returns ``(text to print, exit code 0)``.

    ``options`` is the flat ``-O KEY=VALUE`` mapping (any :class:`FinetuneOptions` field; other keys are reader /
    engine options for every row); the keyword arguments override it. With ``as_json`` the text is the adapter
    description (``rscore_adapter.json``) plus ``"out"``.
    """
    if plugin:  # a plugin's own trainer (e.g. earth: susceptibility from a landslide inventory) answers first
        from rscore.engine import default_registry

        reg = registry or default_registry()
        for spec in (a for a in reg.adapters if a.plugin == plugin and a.trainer is not None):
            answer = spec.trainer(Path(dataset), Path(out), dict(options or {}), as_json)
            if answer is not None:
                return answer
    opts = FinetuneOptions.from_options(
        options, reasoner=reasoner, model=model, weights=str(weights) if weights is not None else None, device=device, steps=steps,
        lr=lr, segmenter=segmenter,
    )
    result = finetune(plugin, dataset, out, opts, registry, progress=progress)
    doc = result.document
    if as_json:
        return json.dumps({"out": str(result.out), **doc}, indent=2), 0
    lines = [f"adapter written to {result.out}"]
    if doc.get("reasoner"):
        r = doc["reasoner"]
        lines.append(
            f"reasoner LoRA on {r['base_model']} (rank {r['rank']}, {', '.join(r['target_modules'])}; "
            f"{r['trainable_params']:,} trainable parameters): {r['steps']} steps, loss {r['loss_first']:.4f} -> "
            f"{r['loss_last']:.4f}"
        )
    if doc.get("segmenter"):
        s = doc["segmenter"]
        lines.append(
            f"{s['backend']} mask decoder of {s['base_model']}: {s['steps']} steps, BCE+Dice {s['loss_first']:.4f} -> "
            f"{s['loss_last']:.4f}"
        )
    if doc.get("augmentations"):
        lines.append(f"augmentations: {', '.join(doc['augmentations'])}")
    if doc.get("augmentations_skipped"):
        lines.append(f"augmentations not known to rscore (skipped): {', '.join(doc['augmentations_skipped'])}")
    lines.append(f"use it with --adapter {result.out}")
    return "\n".join(lines), 0
