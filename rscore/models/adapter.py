"""The adapter folder ``rscore finetune`` writes and the functions that load it (``--adapter DIR``).

::

    DIR/
      rscore_adapter.json                 what was trained, on what, how (read by read_adapter)
      reasoner/                           the reasoner's LoRA (peft: adapter_config.json, adapter_model.safetensors)
      segmenter/mask_decoder.safetensors  tuned SAM2 mask decoder weights (optional)
      training_log.json                   loss per optimiser step, augmentations applied, samples used

Loading: :func:`apply_reasoner_adapter` wraps a loaded transformers VLM with the LoRA (merged into the weights by
default, so the model keeps its class and ``generate`` is as fast as before); :func:`apply_segmenter_adapter` loads
the mask decoder weights into a SAM2 model (Meta's ``sam2`` model or transformers' ``Sam2Model``). Both change the
model they are given in place: callers that cache base models must key the cache by the adapter too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rscore.errors import BackendUnavailable, InputError

log = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_FILE",
    "FORMAT",
    "AdapterInfo",
    "read_adapter",
    "apply_reasoner_adapter",
    "apply_segmenter_adapter",
    "mask_decoder",
    "file_sha256",
]

ADAPTER_FILE = "rscore_adapter.json"
FORMAT = "rscore-adapter"
FORMAT_VERSION = 1
REASONER_DIR = "reasoner"
DECODER_FILE = "segmenter/mask_decoder.safetensors"


@dataclass(frozen=True)
class AdapterInfo:
    """What ``rscore_adapter.json`` says: ``reasoner`` / ``segmenter`` sections (``None`` when not trained)."""

    path: Path
    plugin: str | None
    spec: str | None
    reasoner: Mapping[str, Any] | None
    segmenter: Mapping[str, Any] | None
    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reasoner_dir(self) -> Path:
        return self.path / REASONER_DIR

    @property
    def decoder_file(self) -> Path:
        return self.path / str((self.segmenter or {}).get("file", DECODER_FILE))


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_adapter(path: str | os.PathLike[str]) -> AdapterInfo:
    """Read and check an adapter folder; :class:`InputError` naming it when it is not one."""
    folder = Path(path)
    doc_path = folder / ADAPTER_FILE
    if not folder.is_dir():
        raise InputError("is not an adapter folder (rscore finetune writes one)", path=folder)
    if not doc_path.is_file():
        raise InputError(f"has no {ADAPTER_FILE}: not an adapter folder written by rscore finetune", path=folder)
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{ADAPTER_FILE} is unreadable ({exc})", path=folder) from None
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise InputError(f"{ADAPTER_FILE} is not an rscore adapter description", path=folder)
    if int(doc.get("version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"adapter format version {doc.get('version')} is newer than this rscore reads ({FORMAT_VERSION})",
            path=folder,
        )
    info = AdapterInfo(folder, doc.get("plugin"), doc.get("adapter_spec"), doc.get("reasoner"), doc.get("segmenter"),
                       doc)
    if info.reasoner is not None and not (info.reasoner_dir / "adapter_config.json").is_file():
        raise InputError(f"{REASONER_DIR}/adapter_config.json is missing (incomplete adapter)", path=folder)
    if info.segmenter is not None and not info.decoder_file.is_file():
        raise InputError(f"{info.decoder_file.relative_to(folder)} is missing (incomplete adapter)", path=folder)
    return info


def apply_reasoner_adapter(model: Any, adapter: str | os.PathLike[str] | AdapterInfo, *, merge: bool = True) -> Any:
    """Load the adapter's LoRA onto a transformers VLM (``AutoModelForImageTextToText``) and return the model to
    use: with ``merge`` the LoRA is merged into the weights and the plain model comes back (same class, same
    ``generate``); otherwise a ``peft.PeftModel``. Call it after ``from_pretrained`` and before moving the model to
    its device. :class:`BackendUnavailable` when peft is missing or the adapter was trained on another model family.
    """
    info = adapter if isinstance(adapter, AdapterInfo) else read_adapter(adapter)
    if info.reasoner is None:
        raise InputError("holds no reasoner LoRA (it was trained for the segmenter only)", path=info.path)
    want = info.reasoner.get("model_type")
    have = getattr(getattr(model, "config", None), "model_type", None)
    if want and have and want != have:
        raise BackendUnavailable(
            f"{info.path}: the LoRA was trained on a {want} model ({info.reasoner.get('base_model')}), "
            f"this model is {have}; pass the same --model it was trained on"
        )
    try:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()  # peft imports transformers, which imports torchvision
        from peft import PeftModel
    except ImportError:
        raise BackendUnavailable("loading a reasoner adapter needs the Python package peft: pip install peft") from None
    try:
        wrapped = PeftModel.from_pretrained(model, str(info.reasoner_dir), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as exc:  # shapes or module names of another base model
        raise BackendUnavailable(
            f"{info.path}: the LoRA does not fit this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    log.info("reasoner adapter %s applied (%s)", info.path, "merged" if merge else "unmerged")
    return wrapped.merge_and_unload() if merge else wrapped


def mask_decoder(model: Any) -> Any:
    """The mask decoder module of a SAM2 model: ``sam_mask_decoder`` (Meta's ``sam2``) or ``mask_decoder``
    (transformers' ``Sam2Model``)."""
    for name in ("sam_mask_decoder", "mask_decoder"):
        module = getattr(model, name, None)
        if module is not None:
            return module
    raise BackendUnavailable(f"{type(model).__name__} has no SAM2 mask decoder (sam_mask_decoder / mask_decoder)")


def apply_segmenter_adapter(model: Any, adapter: str | os.PathLike[str] | AdapterInfo) -> Any:
    """Load the adapter's tuned mask decoder into a SAM2 model in place (strictly: every tensor must fit) and
    return the model. Call it after the checkpoint is loaded, before the predictor is built."""
    info = adapter if isinstance(adapter, AdapterInfo) else read_adapter(adapter)
    if info.segmenter is None:
        raise InputError("holds no tuned SAM2 mask decoder", path=info.path)
    from safetensors.torch import load_file

    decoder = mask_decoder(model)
    state = load_file(str(info.decoder_file), device="cpu")
    expected = decoder.state_dict()
    wrong = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    extra = [k for k in state if k not in expected]
    if wrong or extra:
        key = (wrong or extra)[0]
        raise BackendUnavailable(
            f"{info.path}: the tuned mask decoder does not fit this SAM2 model ({len(wrong)} missing or reshaped, "
            f"{len(extra)} unexpected tensor(s), e.g. {key}); it was tuned on {info.segmenter.get('base_model')}"
        )
    device = next(decoder.parameters()).device
    decoder.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    log.info("segmenter adapter %s applied", info.path)
    return model
