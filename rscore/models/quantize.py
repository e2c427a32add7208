"""8-bit / 4-bit loading of local models through bitsandbytes (``-O load_in=8bit|4bit``).

::

    rscore run photo.jpg "the tool that cuts" --reasoner lisa --model lisa-13b-llama2-v1 --weights DIR -O load_in=8bit
    rscore run photo.jpg "the helmetless worker" --reasoner transformers --model qwen2.5-vl-7b -O load_in=4bit

The settings are LISA's own (``LISA/chat.py``): 8-bit is LLM.int8() with the default outlier threshold; 4-bit is NF4
with double quantisation and the compute dtype of the run (bfloat16 on GPUs that have it). Modules named in
``skip`` stay in the run's dtype: the vision towers, the projector, SAM and LISA's ``[SEG]`` projection (quantising
them costs accuracy for almost no memory), and the language model's output layer.

bitsandbytes quantises on CUDA only. :func:`require` is asked before any weight is read: without a CUDA device, or
without the ``bitsandbytes`` package, the run stops with one line naming what is missing
(:class:`~rscore.errors.BackendUnavailable`, exit 2 / HTTP 503).

The transformers reasoner passes :func:`bnb_config` to ``from_pretrained`` (``quantization_config`` plus a
``device_map`` on the chosen GPU). LISA's checkpoints are read key by key into modules built in memory (their layout
is not transformers'), so :func:`quantize_linear_layers` swaps the filled ``nn.Linear`` layers for bitsandbytes'
``Linear8bitLt`` / ``Linear4bit`` as bitsandbytes documents it (the weights are quantised when the module moves to
the GPU).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from rscore.errors import BackendUnavailable, OptionError

__all__ = ["LOAD_IN", "check_load_in", "require", "bnb_config", "quantize_linear_layers"]

LOAD_IN = ("none", "8bit", "4bit")


def check_load_in(value: str, what: str) -> None:
    """:class:`OptionError` for a value that is not one of :data:`LOAD_IN`."""
    if value not in LOAD_IN:
        raise OptionError(f"{what}: load_in must be one of {', '.join(LOAD_IN)} (got {value!r})")


def require(load_in: str, device: str, what: str) -> None:
    """Raise :class:`BackendUnavailable` naming what is missing for ``load_in`` on ``device``: a CUDA device (the
    device asked for, or any), the ``bitsandbytes`` package. Nothing to check for ``none``."""
    if load_in == "none":
        return
    import torch

    missing = []
    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU-only build)"
        missing.append(f"no CUDA device{build}")
    elif not str(device).startswith("cuda"):
        missing.append(f"the run is on {device} (pass --device cuda)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed (pip install bitsandbytes)")
    if missing:
        raise BackendUnavailable(f"{what}: -O load_in={load_in} needs a CUDA GPU and bitsandbytes: {'; '.join(missing)}")


def bnb_config(load_in: str, *, compute_dtype: Any = None, skip: Sequence[str] = ()) -> Any:
    """The ``transformers.BitsAndBytesConfig`` for ``load_in`` (``None`` for ``none``): LLM.int8() for ``8bit``,
    NF4 + double quantisation computing in ``compute_dtype`` (default bfloat16) for ``4bit``; ``skip`` modules stay
    unquantised. Building it needs neither CUDA nor bitsandbytes."""
    if load_in == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip) or None)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
        llm_int8_skip_modules=list(skip) or None,
    )


def _skipped(name: str, skip: Sequence[str]) -> bool:
    parts = name.split(".")
    return any(s in parts or name.startswith(s + ".") or name == s for s in skip)


def quantize_linear_layers(module: Any, config: Any) -> list[str]:
    """Replace every ``torch.nn.Linear`` of ``module`` outside ``config.llm_int8_skip_modules`` by bitsandbytes'
    ``Linear8bitLt`` (``has_fp16_weights=False``, ``threshold=config.llm_int8_threshold``) or ``Linear4bit``
    (``config``'s quant type, double quantisation and compute dtype), carrying the filled weights and biases over;
    the weights are quantised when ``module`` is moved to a CUDA device. Returns the replaced modules' names."""
    import bitsandbytes as bnb
    import torch

    skip = list(config.llm_int8_skip_modules or [])
    replaced = []
    for name, child in list(module.named_modules()):
        if not isinstance(child, torch.nn.Linear) or _skipped(name, skip):
            continue
        w = child.weight.data
        if config.load_in_8bit:
            new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                      has_fp16_weights=False, threshold=config.llm_int8_threshold)  # fmt: skip
            new.weight = bnb.nn.Int8Params(w.to(torch.float16), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                    compute_dtype=config.bnb_4bit_compute_dtype, compress_statistics=config.bnb_4bit_use_double_quant,
                                    quant_type=config.bnb_4bit_quant_type)  # fmt: skip
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=config.bnb_4bit_use_double_quant,
                                           quant_type=config.bnb_4bit_quant_type)  # fmt: skip
        if child.bias is not None:
            new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        parent_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, attr, new)
        replaced.append(name)
    return replaced
