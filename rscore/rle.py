"""COCO-compatible run-length encoding of binary masks.

A mask of ``h`` rows and ``w`` columns is flattened in **column-major** (Fortran) order and described by the lengths
of its alternating runs, **starting with a run of zeros** (which is ``0`` when the first pixel is set). This is the
format of the COCO annotations and of ``pycocotools.mask``::

    {"size": [h, w], "counts": "PPQ1..."}      # compressed: pycocotools' rleToString text
    {"size": [h, w], "counts": [3, 2, 11]}     # uncompressed: the run lengths themselves

The compressed text stores each run length (from the fourth run on, its difference to the run two places before)
as a little-endian sequence of 5-bit groups, each written as ``chr(48 + group)`` with bit ``0x20`` meaning "more
groups follow" and bit ``0x10`` of the last group carrying the sign. :func:`encode` writes it,
:func:`decode` / :func:`area` / :func:`bbox` read both forms (``counts`` as ``str``, ``bytes`` or a list of ints).

Boxes follow rscore's convention ``(x0, y0, x1, y1)`` end-exclusive in pixels, not COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rscore.errors import InputError

__all__ = ["area", "bbox", "counts_from_string", "counts_to_string", "decode", "encode", "run_lengths"]


# ------------------------------------------------------------------------------------------------- run lengths
def run_lengths(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a 2D mask in column-major order, starting with a (possibly empty) run of zeros.

    Returns an int64 array whose even entries count zeros and odd entries count ones; it sums to ``h * w``.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask to run-length encode must be 2D, got shape {m.shape}")
    flat = m.astype(bool, copy=False).ravel(order="F")
    n = flat.size
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [n]))
    runs = np.diff(edges).astype(np.int64)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs


# ------------------------------------------------------------------------------------------ compressed strings
def counts_to_string(counts: Sequence[int] | np.ndarray) -> str:
    """Run lengths -> pycocotools' compressed counts text (``rleToString``), vectorised.

    From index 3 on, each value is stored as its difference to the value two places before (the ``i > 2`` quirk
    of the reference implementation is kept so that strings are byte-identical to pycocotools').
    """
    cnts = np.asarray(counts, dtype=np.int64).ravel()
    if cnts.size == 0:
        return ""
    x = cnts.copy()
    if x.size > 3:
        x[3:] = cnts[3:] - cnts[1:-2]
    # Emit 5-bit groups for every value at once: column k holds group k of each value.
    groups: list[np.ndarray] = []
    active: list[np.ndarray] = []
    live = np.ones(x.size, dtype=bool)
    while live.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, as C's on a signed long
        more = np.where((c & 0x10) != 0, x != -1, x != 0)
        groups.append(np.where(more, c | 0x20, c) + 48)
        active.append(live.copy())
        live &= more
    chars = np.stack(groups, axis=1)
    keep = np.stack(active, axis=1)
    return chars[keep].astype(np.uint8).tobytes().decode("ascii")


def counts_from_string(text: str | bytes) -> np.ndarray:
    """pycocotools' compressed counts text (``rleFrString``) -> run lengths (int64), vectorised."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise InputError("RLE counts text holds characters outside the COCO alphabet ('0'..'o')")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise InputError("RLE counts text is truncated (its last value has the 'more' bit set)")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    value_of = np.repeat(np.arange(ends.size), ends - starts + 1)
    pos = np.arange(c.size) - starts[value_of]
    if pos.max() > 12:
        raise InputError("RLE counts text holds a value longer than 13 groups (corrupt)")
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    nk = ends - starts + 1
    negative = (c[ends] & 0x10) != 0
    x = np.where(negative, x | (np.int64(-1) << (5 * nk)), x)
    cnts = x.copy()
    # Undo the delta coding: cnts[i] = x[i] + cnts[i - 2] for i > 2, i.e. running sums along each parity from 1 / 2.
    if cnts.size > 3:
        cnts[1::2] = np.cumsum(x[1::2])
        cnts[2::2] = np.cumsum(x[2::2])
    return cnts


# --------------------------------------------------------------------------------------------------- encode/decode
def encode(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """Encode a 2D mask as a COCO RLE ``{"size": [h, w], "counts": ...}``.

    ``compressed=True`` gives ``counts`` as pycocotools' text (``str``; pycocotools itself returns the same
    characters as ``bytes``); ``compressed=False`` gives the list of run lengths (the "uncompressed RLE" of COCO's
    ``iscrowd`` annotations).
    """
    m = np.asarray(mask)
    runs = run_lengths(m)
    h, w = (int(s) for s in m.shape)
    counts: str | list[int] = counts_to_string(runs) if compressed else [int(v) for v in runs]
    return {"size": [h, w], "counts": counts}


def _parse(rle: Mapping[str, Any]) -> tuple[int, int, np.ndarray]:
    """Validate an RLE mapping and return ``(h, w, run lengths)``."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InputError("an RLE must be a mapping with 'size' [h, w] and 'counts'")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"RLE 'size' must be [h, w], got {size!r}") from None
    if h < 0 or w < 0:
        raise InputError(f"RLE 'size' must not be negative, got {size!r}")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes, bytearray)):
        runs = counts_from_string(counts)
    else:
        try:
            runs = np.asarray(counts, dtype=np.int64).ravel()
        except (TypeError, ValueError):
            raise InputError("RLE 'counts' must be a string or a list of integers") from None
    if (runs < 0).any():
        raise InputError("RLE 'counts' holds a negative run length (corrupt)")
    total = int(runs.sum())
    if total != h * w:
        raise InputError(f"RLE counts cover {total} pixels but its size {h}x{w} has {h * w}")
    return h, w, runs


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed counts) to a C-contiguous ``(h, w)`` bool mask."""
    h, w, runs = _parse(rle)
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def area(rle: Mapping[str, Any]) -> int:
    """Number of set pixels of an RLE, without decoding it."""
    _, _, runs = _parse(rle)
    return int(runs[1::2].sum())


def bbox(rle: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (pixels, end-exclusive) of an RLE's set pixels, or ``None`` when empty.

    Computed from the runs, without decoding: a run that spans more than one column covers rows ``0 .. h-1``.
    """
    h, _, runs = _parse(rle)
    ends = np.cumsum(runs)
    starts = ends - runs
    fg = (np.arange(runs.size) % 2 == 1) & (runs > 0)
    if not fg.any():
        return None
    s = starts[fg]
    e = ends[fg] - 1  # last pixel of each run, inclusive
    cs, ce = s // h, e // h
    rs, re = s % h, e % h
    multi = ce > cs
    y0 = int(np.where(multi, 0, rs).min())
    y1 = int(np.where(multi, h - 1, re).max()) + 1
    return int(cs.min()), y0, int(ce.max()) + 1, y1
