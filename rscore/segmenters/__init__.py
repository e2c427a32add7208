"""Segmenters: turn explicit targets (boxes, points) into instance masks.

A segmenter is any object with ``segment(image, targets) -> list[Instance]`` (:class:`Segmenter`), where ``image``
is an ``(H, W, 3)`` uint8 RGB array and every returned :class:`~rscore.types.Instance` carries a full-image mask.
Segmenters are registered as ``BackendSpec(kind="segmenter", ...)`` through the ``rscore_backends`` hook.

- :class:`rscore.segmenters.classical.ClassicalSegmenter` - GrabCut / watershed, no weights (always available).
- :mod:`rscore.segmenters.sam2` - SAM 2 (``sam2`` package or transformers): boxes / points -> masks.
- :mod:`rscore.segmenters.sam3` and :mod:`rscore.segmenters.grounded` - text-prompted: a phrase -> every instance;
  :func:`segment_phrase` ``(image, phrase, options=None) -> list[Instance]`` picks SAM 3 or detector + SAM 2.

Submodules are imported on first use so that ``import rscore.segmenters`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rscore.types import Instance, Target

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ClassicalOptions", "ClassicalSegmenter", "Segmenter", "segment_phrase"]


@runtime_checkable
class Segmenter(Protocol):
    """What the engine calls: one image, several targets, instances with full-image masks back."""

    def segment(self, image: np.ndarray, targets: Sequence[Target]) -> list[Instance]: ...


def __getattr__(name: str) -> Any:
    if name in ("ClassicalSegmenter", "ClassicalOptions"):
        from rscore.segmenters import classical

        return getattr(classical, name)
    if name == "segment_phrase":
        from rscore.segmenters.grounded import segment_phrase

        return segment_phrase
    raise AttributeError(f"module 'rscore.segmenters' has no attribute '{name}'")
