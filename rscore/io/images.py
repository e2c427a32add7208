"""The built-in image reader (PNG, JPEG, TIFF, BMP, WebP, GIF first frame) and display helpers.

Pillow decodes; EXIF orientation is applied so that masks line up with what a viewer shows; 16-bit and float images
keep their values; an alpha channel becomes the validity mask; palette/CMYK images become RGB. The pixel count is
checked against the limit *before* decoding (decompression bombs): ``max_pixels`` option, ``RSCORE_MAX_PIXELS``,
default 250 million.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import ImageTooLarge, InputError, OptionError
from rscore.sdk import Reader
from rscore.types import ArraySource, Scene, Window

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 250_000_000
_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"BM",
    b"GIF87a",
    b"GIF89a",
)


DEFAULT_MAX_RASTER_PIXELS = 2_000_000_000  # ~44,700 px square: a large DEM mosaic, read lazily tile by tile


def max_pixels(options: Mapping[str, Any] | None = None, *, kind: str = "image") -> int:
    """The pixel limit: ``max_pixels`` option, else ``RSCORE_MAX_PIXELS``, else the default of the scene ``kind``
    (images are decoded whole: 250e6; rasters are read by window: 2e9). Not a positive whole number -> OptionError."""
    value = (options or {}).get("max_pixels")
    source = "--max-pixels"
    if value is None or value == "":
        value, source = os.environ.get("RSCORE_MAX_PIXELS", "").strip() or None, "RSCORE_MAX_PIXELS"
    if value is None:
        return DEFAULT_MAX_RASTER_PIXELS if kind == "raster" else DEFAULT_MAX_PIXELS
    try:
        number = float(value)
        ok = not isinstance(value, bool) and number.is_integer() and number >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise OptionError(f"{source} must be a positive whole number of pixels, got {value!r}")
    return int(number)


def check_pixel_limit(
    path: Path | None, width: int, height: int, options: Mapping[str, Any] | None = None, *, kind: str = "image"
) -> None:
    """Refuse a ``kind`` ("image", "raster") of ``width`` x ``height`` over :func:`max_pixels` (ImageTooLarge: exit 2,
    HTTP 413), before anything is decoded or tiled."""
    limit = max_pixels(options, kind=kind)
    if width * height > limit:
        raise ImageTooLarge(
            f"{kind} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(raise it with --max-pixels or RSCORE_MAX_PIXELS if you trust this file)",
            path=path,
        )


_GEOTIFF_TAGS = {33550, 33922, 34264, 34735}
# DICOM modalities whose pictures come from a visible-light camera: endoscopy, external camera, general and slide
# microscopy, other
OPTICAL_MODALITIES = ("ES", "XC", "GM", "SM", "OT")


def is_dicom(scene: Scene) -> bool:
    """A DICOM image (read by a DICOM reader)."""
    return scene.dicom is not None


def _dicom_modality(path: Path) -> str | None:
    """The Modality of a DICOM file whose 128-byte preamble holds another format (a TIFF header: dual-personality
    files), ``""`` when it cannot be read; ``None`` for a file that is not DICOM."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) != b"DICM":
                return None
        import pydicom

        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception:  # pydicom absent or a damaged header: still DICOM, modality unknown
        return ""


def camera_frame_problem(scene: Scene, min_side: int = 0) -> str | None:
    """Why ``scene`` is not a visible-light camera picture, or ``None`` when it may be one: a DICOM image of a
    non-optical modality (ultrasound echoes, radiograph or MR intensities: bright and grey like glare or a white
    vest) or a georeferenced map raster (a satellite or aerial scene). Colour rules made for camera frames give
    confident masks of the wrong thing on these. ``min_side``: the window (px) the rule compares a pixel with; a
    picture with a side shorter than that is too small for it (a thumbnail)."""
    if min(scene.height, scene.width) < min_side:
        return (f"only {scene.width}x{scene.height} pixels, smaller than the {min_side} px neighbourhood the rule "
                "compares each pixel with")  # fmt: skip
    modality = scene.dicom.modality if scene.dicom is not None else None
    if modality is not None and modality not in OPTICAL_MODALITIES:
        return f"a {modality} DICOM image (not a visible-light camera picture)"
    crs = scene.geo.crs if scene.geo is not None else None
    if crs or (scene.metadata or {}).get("georeferenced"):
        return f"a georeferenced map raster ({crs or 'GeoTIFF'})"
    return None


class ImageReader(Reader):
    """Ordinary images through Pillow, read whole (they are checked against the pixel limit first)."""

    name = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[128:132] == b"DICM":  # a DICOM file whose preamble holds a TIFF header: the DICOM reader's
            return False
        return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        from PIL import Image, ImageOps, UnidentifiedImageError

        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
            try:
                img = Image.open(path)
                check_pixel_limit(path, img.width, img.height, options)
                n_frames = getattr(img, "n_frames", 1)
                fmt, mode = img.format, img.mode
                modality = _dicom_modality(path) if fmt == "TIFF" else None
                if modality is not None:  # opened by its suffix (.tif): the picture is the DICOM's, without it
                    raise InputError(f"is a DICOM file ({modality or 'modality unknown'}) with a TIFF preamble: "
                                     "--plugin surgical reads it as DICOM", path=path)  # fmt: skip
                # GeoTIFF tags (ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory): a map
                georeferenced = bool(_GEOTIFF_TAGS & set(getattr(img, "tag_v2", None) or ()))
                img.load()
                img = ImageOps.exif_transpose(img)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise InputError(f"not a readable image ({_short(exc)})", path=path) from None
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
        array, roles, valid = _to_array(img)
        warn = (f"{path.name}: {n_frames} frames/pages; only the first was read",) if n_frames > 1 else ()
        if georeferenced:
            warn += (f"{path.name}: a GeoTIFF read as a plain picture (map georeferencing and any band beyond "
                     "RGB ignored); --plugin earth reads it as a map",)
        return Scene(
            source=ArraySource(array, valid),
            kind="image",
            band_roles=roles,
            path=path,
            reader=self.name,
            warnings=warn,
            metadata={"format": fmt or path.suffix.lstrip(".").upper(), "mode": mode}
            | ({"georeferenced": True} if georeferenced else {}),
        )


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _to_array(img: Any) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    """Pillow image -> (bands, rows, cols) array, band roles, validity mask from alpha."""
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "LA":
        arr = np.asarray(img)
        return arr[None, :, :, 0].copy(), ("gray",), arr[:, :, 1] > 0
    mode = img.mode
    arr = np.asarray(img)
    if mode == "RGBA":
        return np.moveaxis(arr[:, :, :3], -1, 0).copy(), ("red", "green", "blue"), arr[:, :, 3] > 0
    if arr.ndim == 3:
        return np.moveaxis(arr, -1, 0).copy(), ("red", "green", "blue")[: arr.shape[2]], None
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr[None].copy(), ("gray",), None


# ------------------------------------------------------------------------------------------------------- display
def stretch_to_uint8(band: np.ndarray, valid: np.ndarray | None = None, low: float = 2, high: float = 98) -> np.ndarray:
    """Linear percentile stretch of any dtype to uint8 (uint8 input is returned as is)."""
    if band.dtype == np.uint8:
        return band
    data = band.astype(np.float32)
    sample = data[valid] if valid is not None else data
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        hi = lo + 1
    out = np.clip((data - lo) / (hi - lo) * 255, 0, 255)
    out[~np.isfinite(out)] = 0
    return out.astype(np.uint8)


DISPLAY_ORDER = ("gray", "hu", "elevation", "nir")


def channels_last(bands: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` uint8 -> a contiguous ``(H, W, 3)`` array. OpenCV's ``merge`` interleaves the planes ~100x faster
    than numpy's strided copy of ``moveaxis`` (0.05 vs 7.5 ms at 640x480), which every VLM call on a picture paid."""
    import cv2

    return cv2.merge([np.ascontiguousarray(b) for b in bands])


def scene_rgb8(scene: Scene, window: Window | None = None) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of a scene for overlays and for models that want RGB."""
    valid = scene.valid(window)
    if scene.has("red", "green", "blue"):
        bands = scene.read(window, ["red", "green", "blue"])
        if bands.dtype == np.uint8:
            return channels_last(bands)
        # one stretch for all three bands keeps colour balance
        flat = bands.astype(np.float32)
        lo_hi = stretch_to_uint8(flat.reshape(1, -1)[0], None if valid is None else np.tile(valid.ravel(), 3))
        return channels_last(lo_hi.reshape(bands.shape))
    role = next((r for r in DISPLAY_ORDER if r in scene.band_roles), scene.band_roles[0] if scene.band_roles else None)
    band = scene.read(window, [role])[0] if role else scene.source.read(window, [0])[0]
    grey = stretch_to_uint8(band, valid)
    return np.repeat(grey[:, :, None], 3, axis=2)
