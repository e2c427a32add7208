"""Moved to :mod:`rscore.models.adapter` (the models, segmenters and reasoners that load an adapter sit below
``rscore.finetune``, which writes one); this module re-exports its names so that old imports keep working."""

from __future__ import annotations

from rscore.models.adapter import *  # noqa: F403
from rscore.models.adapter import DECODER_FILE, FORMAT_VERSION, REASONER_DIR  # noqa: F401
from rscore.models.adapter import __all__ as _moved

__all__ = [*_moved, "DECODER_FILE", "FORMAT_VERSION", "REASONER_DIR"]
