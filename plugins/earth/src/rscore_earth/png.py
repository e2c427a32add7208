"""8-bit grey / RGB PNGs (with alpha, or a transparent key colour) written fast, for ``map.png`` and
``basemap.png`` (:mod:`rscore_earth.mapplot`).

A PNG is a signature and three or four chunks here (IHDR, tRNS for a transparent key, one IDAT, IEND; PNG spec,
ISO/IEC 15948): the rows, each with one filter byte and the filtered bytes (one numpy subtraction for the whole
picture), deflated by ISA-L (the ``isal`` package's zlib stream, level 2). libpng through OpenCV (zlib level 1) took 4x the CPU on a 4096 px run's pictures
for files 3-13 % larger (issue 22); Pillow's per-row filter search ~8x. Decoders read it as any PNG (tests: Pillow,
OpenCV, GDAL).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save_png"]


def save_png(path: Path, pixels: np.ndarray, *, row_filter: str = "up", transparent: Any = None) -> None:
    """``pixels`` (``(h, w)`` grey, ``(h, w, 2)`` grey + alpha, ``(h, w, 3)`` RGB or ``(h, w, 4)`` RGBA uint8) as
    an 8-bit PNG. ``transparent`` (grey or RGB only): the level (an int) or colour (an ``(r, g, b)``) that decoders
    show see-through (a ``tRNS`` chunk: no alpha channel to encode, so no extra cost; GDAL reads it as the image's
    nodata value, Pillow as its ``transparency``, browsers and QGIS draw it transparent). Rows: every row with one PNG filter
    (``"up"``: the difference to the row above; ``"sub"``: to the pixel on the left; one numpy subtraction),
    deflated by ISA-L (``isal``, level 2) into one IDAT chunk. A 4096 px run's map.png + basemap.png: ~0.08 CPU-s
    against 0.22 for OpenCV's libpng (zlib level 1, "sub") and ~0.4 for Pillow's filter search, files 3-13 %
    smaller; the pixels are the same (issue 22). ``"sub"`` suits pictures enlarged by whole pixels (ISA-L then finds
    the repeated rows; with "up" the README example's map.png is 20 % larger). Without ``isal``: OpenCV, as before."""
    if row_filter not in _FILTERS:
        raise ValueError(f"row_filter must be one of {', '.join(_FILTERS)}, got {row_filter!r}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _COLOUR_TYPES:
        raise ValueError(f"expected (h, w) or (h, w, 2/3/4) pixels, got shape {pixels.shape}")
    if transparent is not None and channels not in (1, 3):
        raise ValueError("a transparent key colour is for grey or RGB pixels (the others have an alpha channel)")
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency of rscore-earth
        _save_png_pillow(path, pixels, transparent)
        return
    with open(path, "wb") as fh:
        for part in _png_parts(pixels, lambda raw: isal_zlib.compress(raw, 2), row_filter, transparent):
            fh.write(part)


_FILTERS = {"sub": 1, "up": 2}  # PNG filter type numbers
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey + alpha, RGB, RGBA


def _png_parts(pixels: np.ndarray, deflate: Any, row_filter: str = "up", transparent: Any = None) -> list[bytes]:
    """The PNG file of ``pixels`` (uint8 ``(h, w)`` grey or ``(h, w, 2/3/4)``: grey + alpha, RGB, RGBA) as a list
    of byte strings: signature, IHDR, ``tRNS`` (the ``transparent`` key, if given), one IDAT (``deflate`` of the
    filtered rows: a zlib stream), IEND (PNG spec, ISO/IEC 15948)."""
    pixels = np.ascontiguousarray(pixels, np.uint8)
    h, w = pixels.shape[:2]
    bpp = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, -1)
    raw = np.empty((h, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = _FILTERS[row_filter]
    if row_filter == "up":  # each byte minus the byte above it (the first row: minus 0)
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # uint8 wraps modulo 256, as PNG's filters do
    else:  # "sub": each byte minus the same channel's byte one pixel to the left (the first pixel: minus 0)
        raw[:, 1 : 1 + bpp] = rows[:, :bpp]
        np.subtract(rows[:, bpp:], rows[:, :-bpp], out=raw[:, 1 + bpp :])

    def chunk(tag: bytes, data: bytes) -> list[bytes]:
        return [struct.pack(">I", len(data)), tag, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))]

    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPES[bpp], 0, 0, 0)  # 8 bits per channel
    key = [] if transparent is None else [int(v) for v in np.atleast_1d(transparent)]
    if len(key) not in (0, bpp):
        raise ValueError(f"the transparent key needs {bpp} value(s) for these pixels, got {transparent!r}")
    trns = chunk(b"tRNS", struct.pack(">" + "H" * bpp, *key)) if key else []
    return [b"\x89PNG\r\n\x1a\n", *chunk(b"IHDR", ihdr), *trns, *chunk(b"IDAT", deflate(raw)), *chunk(b"IEND", b"")]


def _save_png_pillow(path: Path, pixels: np.ndarray, transparent: Any = None) -> None:  # pragma: no cover
    """Without ``isal``: OpenCV's libpng as before for grey / RGB without a key; Pillow for the rest."""
    if transparent is None and (pixels.ndim == 2 or pixels.shape[2] == 3):
        _save_png_opencv(path, pixels)
        return
    from PIL import Image

    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[1 if pixels.ndim == 2 else pixels.shape[2]]
    extra = {} if transparent is None else {"transparency": transparent if np.ndim(transparent) else int(transparent)}
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(path, compress_level=1, **extra)


def _save_png_opencv(path: Path, pixels: np.ndarray) -> None:
    """OpenCV's libpng, zlib level 1, the "sub" filter on every row (what :func:`save_png` did before ISA-L); Pillow
    where OpenCV lacks the option."""
    try:
        import cv2

        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    except (ImportError, AttributeError):  # pragma: no cover - OpenCV is a core dependency; old builds lack the filter
        from PIL import Image

        Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(path, compress_level=1)
        return
    if pixels.ndim == 3:  # OpenCV writes BGR (cvtColor: ~20x faster than a reversed-axis copy)
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels, params)
    if not ok:  # pragma: no cover - encoding a uint8 array does not fail
        raise OSError(f"OpenCV could not encode {path.name}")
    path.write_bytes(data.tobytes())
