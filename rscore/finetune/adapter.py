"""Moved to :mod:`rscore.models.adapter` (the models, segmenters and reasoners that load an adapter sit below
``rscore.finetune``, which writes one); this module re-exports its names so that old imports keep working."""

from __future__ import annotations

from rscore.models.adapter import (  # noqa: F401
    ADAPTER_FILE,
    DECODER_FILE,
    FORMAT,
    FORMAT_VERSION,
    REASONER_DIR,
    AdapterInfo,
    apply_reasoner_adapter,
    apply_segmenter_adapter,
    file_sha256,
    mask_decoder,
    read_adapter,
)

__all__ = [
    "ADAPTER_FILE",
    "DECODER_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "REASONER_DIR",
    "AdapterInfo",
    "apply_reasoner_adapter",
    "apply_segmenter_adapter",
    "file_sha256",
    "mask_decoder",
    "read_adapter",
]
