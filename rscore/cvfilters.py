"""OpenCV forms of the few ``scipy.ndimage`` filters the analytic plugins use, with scipy's border rules.

Importing ``scipy.ndimage`` costs ~0.26 CPU-s, a quarter of a small ``rscore run`` (#22), while OpenCV is already
loaded by every run. Each function here gives the same answer as the scipy call named in its docstring (masks and
minima exactly; box means to floating-point rounding, ~1e-12 relative); ``tests/test_cvfilters.py`` and the plugins'
``*_cv2_equivalence`` tests compare them with scipy on random inputs, borders, odd and even sizes, and 1-pixel
images.

Conventions followed (scipy, origin 0): a structuring element of shape ``k`` is centred on index ``k // 2``;
erosion reads ``input[x + s - c]``, dilation the reflected ``input[x - s + c]`` (so an opening by an even square
comes back to where it started); pixels outside the image are ``border_value`` for erosion and 0 for dilation.
"""

from __future__ import annotations

import cv2
import numpy as np


def uniform_filter_reflect(arr: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.uniform_filter(arr, size, mode="reflect")`` for an odd ``size`` on a 2-D float array
    (scipy's ``reflect`` repeats the edge pixel, OpenCV's ``BORDER_REFLECT``)."""
    if size % 2 == 0:
        raise ValueError(f"uniform_filter_reflect needs an odd size, got {size}")
    a = np.ascontiguousarray(arr, dtype=np.float64)
    return cv2.blur(a, (size, size), borderType=cv2.BORDER_REFLECT)


def minimum_filter_nearest(arr: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.minimum_filter(arr, size, mode="nearest")`` for an odd ``size`` on a 2-D float32/float64
    array without NaN (OpenCV's erosion with ``BORDER_REPLICATE``); exact."""
    if size % 2 == 0:
        raise ValueError(f"minimum_filter_nearest needs an odd size, got {size}")
    a = np.ascontiguousarray(arr)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return cv2.erode(a, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE)


def _u8(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)


def _kernel(structure: np.ndarray) -> np.ndarray:
    s = np.asarray(structure, bool)
    if s.ndim != 2 or not s.any():
        raise ValueError("the structuring element must be a non-empty 2-D array")
    return s.astype(np.uint8)


def binary_erosion(mask: np.ndarray, structure: np.ndarray, border_value: int = 0) -> np.ndarray:
    """``scipy.ndimage.binary_erosion(mask, structure, border_value=border_value)`` (one iteration); exact."""
    k = _kernel(structure)
    anchor = (k.shape[1] // 2, k.shape[0] // 2)
    out = cv2.erode(_u8(mask), k, anchor=anchor, borderType=cv2.BORDER_CONSTANT, borderValue=1 if border_value else 0)
    return out.astype(bool)


def binary_dilation(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_dilation(mask, structure)`` (one iteration, border 0); exact. OpenCV does not
    reflect the element, so it gets the reflected one with the matching anchor."""
    k = _kernel(structure)[::-1, ::-1].copy()
    anchor = (k.shape[1] - 1 - k.shape[1] // 2, k.shape[0] - 1 - k.shape[0] // 2)
    return cv2.dilate(_u8(mask), k, anchor=anchor, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def binary_opening(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_opening(mask, structure)``: erosion then dilation, both with border 0; exact."""
    return binary_dilation(binary_erosion(mask, structure, 0), structure)


def label(mask: np.ndarray, connectivity: int = 8, scipy_numbering: bool = False) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label(mask, structure)`` with the 3x3 ``structure`` of ``connectivity`` 8 (``np.ones``) or 4
    (scipy's default cross): parts numbered 1..n (0 = background), as ``(int32 labels, n)``. The parts and their
    count are always scipy's; their NUMBERING is OpenCV's unless ``scipy_numbering``, which renumbers them as scipy
    does (by each part's first pixel in raster order; ~3.5 ms on a 512 x 512 slice) for callers whose answer depends
    on the order, e.g. the first of equal sizes picked by ``argmax``. (OpenCV's 8-connected numbering often differs
    from scipy's; its 4-connected one matched in every random case tried, but OpenCV does not promise it.)"""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    n, labels = cv2.connectedComponents(_u8(mask), connectivity=connectivity, ltype=cv2.CV_32S)
    n = int(n) - 1
    if scipy_numbering and n > 1:
        flat = labels.ravel()
        first = np.full(n + 1, flat.size, np.int64)
        np.minimum.at(first, flat, np.arange(flat.size))
        first[0] = -1  # the background stays 0
        rank = np.empty(n + 1, np.int32)
        rank[np.argsort(first, kind="stable")] = np.arange(n + 1, dtype=np.int32)
        labels = rank[labels]
    return labels, n


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label(mask, structure=np.ones((3, 3)))`` in OpenCV's numbering: see :func:`label`."""
    return label(mask, 8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)``: background not 4-connected to the outside of the image becomes
    foreground (a flood fill of the background from a one-pixel frame around the image); exact."""
    padded = np.pad(_u8(mask), 1)
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def median_filter_nearest(arr: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(arr, size, mode="nearest")`` for ``size`` 3 or 5 on a 2-D float32 array
    (OpenCV's median replicates the border); exact on finite values. Next to a NaN neither scipy's nor this median is
    meaningful (scipy's depends on its selection order): callers mask non-finite pixels out."""
    if size not in (3, 5):
        raise ValueError(f"median_filter_nearest supports sizes 3 and 5, got {size}")
    a = np.ascontiguousarray(arr)
    if a.dtype != np.float32:
        raise ValueError(f"median_filter_nearest needs float32 (converting could change values), got {a.dtype}")
    return cv2.medianBlur(a, size)
