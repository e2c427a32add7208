"""Compatibility shims for third-party packages, kept small and in one place.

``torchvision`` without its C extension
    The only torchvision wheel for torch 2.13 is a CUDA build; on a CPU-only torch its extension (``_C``) fails to
    load, and ``import torchvision`` then dies with ``operator torchvision::nms does not exist`` because the module
    registers fake (meta) kernels for ``torchvision::nms`` / ``torchvision::qnms`` unconditionally. transformers
    imports torchvision as soon as it is installed (image processors, and through them ``sentence-transformers``),
    and so does ``sam2``. :func:`ensure_torchvision` defines those two operators with a pure-torch implementation
    *before* torchvision is first imported, and only when the extension really is missing: with a working extension
    (CUDA torch + CUDA torchvision, or matching CPU builds) it does nothing.

    With the shim, ``import torchvision`` works, and so do its transforms, ``torch.ops.torchvision.nms`` and the
    Python fallbacks torchvision keeps for ``roi_align``. ``torchvision.ops.nms`` itself still refuses to run
    (torchvision checks for its extension there); rscore does not call it.

Call :func:`ensure_torchvision` before importing ``transformers``, ``sentence_transformers``, ``sam2`` or
``torchvision``. It is idempotent and cheap after the first call.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ensure_torchvision", "torchvision_shim_active", "nms"]

_lock = threading.Lock()
_checked = False
_library: Any = None  # the torch.library.Library that owns the shim's operators; kept alive for the process


def torchvision_shim_active() -> bool:
    """``True`` when this process runs torchvision on rscore's pure-torch ``nms`` (its C extension is missing)."""
    return _library is not None


def ensure_torchvision() -> bool:
    """Make ``import torchvision`` work on a CPU torch whose torchvision extension cannot load.

    Returns ``True`` when the shim is (now) active, ``False`` when it is not needed: torchvision is not installed,
    is already imported, or its extension loads.
    """
    global _checked, _library
    if _checked:
        return _library is not None
    with _lock:
        if _checked:
            return _library is not None
        _checked = True
        if "torchvision" in sys.modules:
            return False
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return False
        import torch

        if _has_op(torch, "nms"):
            return False
        if _extension_loads(torch, Path(next(iter(spec.submodule_search_locations)))):
            return False
        _library = _register(torch)
        log.info("torchvision's C extension is missing; using rscore's pure-torch torchvision::nms")
        return True


def _has_op(torch: Any, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_loads(torch: Any, package_dir: Path) -> bool:
    """Load torchvision's ``_C`` library the way torchvision does; ``False`` when it cannot be loaded here."""
    for candidate in sorted(package_dir.glob("_C*")):
        if candidate.suffix not in (".so", ".pyd", ".dylib"):
            continue
        try:
            torch.ops.load_library(str(candidate))
        except (OSError, RuntimeError) as exc:
            log.debug("torchvision extension %s does not load: %s", candidate, exc)
            return False
        return _has_op(torch, "nms")
    return False


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression, same contract as ``torchvision.ops.nms``.

    ``boxes`` is ``(N, 4)`` ``(x0, y0, x1, y1)``, ``scores`` ``(N,)``; returns the int64 indices of the kept boxes in
    decreasing score order. A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``.
    Memory is O(N): one row of IoUs per kept box.
    """
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    x0, y0, x1, y1 = b.unbind(1)
    areas = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    alive = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
    keep: list[int] = []
    for i in range(b.shape[0]):
        if not bool(alive[i]):
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest] &= ~(iou > iou_threshold)
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def _qnms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    return nms(boxes.dequantize(), scores.dequantize(), iou_threshold)


def _register(torch: Any) -> Any:
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms, "CompositeExplicitAutograd")
    lib.impl("qnms", _qnms, "CompositeExplicitAutograd")
    return lib
