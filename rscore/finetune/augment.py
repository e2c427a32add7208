"""Domain augmentations for fine-tuning, by the names plugins declare in :class:`rscore.sdk.AdapterSpec`.

Each augmentation takes an ``(H, W, 3)`` uint8 picture, its ``(H, W)`` bool target mask and a NumPy generator, and
returns both transformed: geometric ones move the mask with the picture, photometric ones leave it alone. In
:func:`augment` each named augmentation fires with probability ``p`` (default 0.5) per sample, in the declared order.

======================== ============================================================================================
name                     what it does
======================== ============================================================================================
``hflip`` / ``vflip``    mirror left-right / top-bottom
``rot90``                rotate by 90, 180 or 270 degrees (overhead imagery: orientation carries no meaning)
``tile_crop``            crop a random ``tile_size`` x ``tile_size`` window (option ``tile_size``, px) when larger
``brightness_contrast``  gain 0.75-1.25 and offset -25..25 grey levels
``jpeg_compression``     re-encode as JPEG at quality 30-90
``motion_blur``          a 3-9 px line kernel at a random angle (camera shake, moving workers)
``gaussian_blur``        sigma 0.5-1.5 px
``specular_jitter``      1-3 small saturated white ellipses (endoscope light reflections)
``underwater_colour_jitter`` red attenuated by a factor in ``colour_jitter.red_attenuation`` (default 0.3-1.0),
                         then a blend towards blue-green by ``colour_jitter.blue_green_cast`` (default 0-0.3)
``haze``                 ``I t + A (1 - t)``, transmission t 0.6-1.0, a grey-blue airlight A (turbid water, mist)
======================== ============================================================================================

Unknown names are reported by :func:`check_augmentations` so that a run can say which it skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ["AUGMENTATIONS", "augment", "check_augmentations"]

Augmentation = Callable[[np.ndarray, np.ndarray, np.random.Generator, Mapping[str, Any]], tuple[np.ndarray, np.ndarray]]


def _hflip(img, mask, rng, opts):
    return np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def _vflip(img, mask, rng, opts):
    return np.ascontiguousarray(img[::-1]), np.ascontiguousarray(mask[::-1])


def _rot90(img, mask, rng, opts):
    k = int(rng.integers(1, 4))
    return np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(mask, k))


def _tile_crop(img, mask, rng, opts):
    size = int(opts.get("tile_size", 1024))
    h, w = mask.shape
    if h <= size and w <= size:
        return img, mask
    th, tw = min(size, h), min(size, w)
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    return np.ascontiguousarray(img[y : y + th, x : x + tw]), np.ascontiguousarray(mask[y : y + th, x : x + tw])


def _brightness_contrast(img, mask, rng, opts):
    gain = rng.uniform(0.75, 1.25)
    offset = rng.uniform(-25, 25)
    return np.clip(img.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8), mask


def _jpeg(img, mask, rng, opts):
    quality = int(rng.integers(30, 91))
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        return img, mask
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]), mask


def _motion_blur(img, mask, rng, opts):
    length = int(rng.integers(3, 10))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(img, -1, kernel), mask


def _gaussian_blur(img, mask, rng, opts):
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5))), mask


def _specular(img, mask, rng, opts):
    out = img.copy()
    h, w = mask.shape
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (max(1, int(rng.uniform(0.01, 0.04) * w)), max(1, int(rng.uniform(0.01, 0.04) * h)))
        cv2.ellipse(out, centre, axes, float(rng.uniform(0, 180)), 0, 360, (252, 252, 250), -1)
    return out, mask


def _range(opts: Mapping[str, Any], key: str, default: tuple[float, float]) -> tuple[float, float]:
    jitter = opts.get("colour_jitter") or {}
    lo, hi = jitter.get(key, default) if isinstance(jitter, Mapping) else default
    return float(lo), float(hi)


def _underwater(img, mask, rng, opts):
    out = img.astype(np.float32)
    out[..., 0] *= rng.uniform(*_range(opts, "red_attenuation", (0.3, 1.0)))
    cast = rng.uniform(*_range(opts, "blue_green_cast", (0.0, 0.3)))
    out = out * (1 - cast) + np.array([10.0, 150.0, 170.0], np.float32) * cast
    return np.clip(out, 0, 255).astype(np.uint8), mask


def _haze(img, mask, rng, opts):
    t = rng.uniform(0.6, 1.0)
    airlight = np.array([170.0, 190.0, 200.0], np.float32)
    return np.clip(img.astype(np.float32) * t + airlight * (1 - t), 0, 255).astype(np.uint8), mask


AUGMENTATIONS: Mapping[str, Augmentation] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "rot90": _rot90,
    "tile_crop": _tile_crop,
    "brightness_contrast": _brightness_contrast,
    "jpeg_compression": _jpeg,
    "motion_blur": _motion_blur,
    "gaussian_blur": _gaussian_blur,
    "specular_jitter": _specular,
    "underwater_colour_jitter": _underwater,
    "haze": _haze,
}


def check_augmentations(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(known, unknown)`` names, in the given order."""
    return tuple(n for n in names if n in AUGMENTATIONS), tuple(n for n in names if n not in AUGMENTATIONS)


def augment(
    img: np.ndarray,
    mask: np.ndarray,
    names: Sequence[str],
    rng: np.random.Generator,
    options: Mapping[str, Any] | None = None,
    *,
    p: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Apply each known augmentation in ``names`` with probability ``p``; returns ``(img, mask, applied names)``.

    ``options`` are the adapter's options (``tile_size``, ``colour_jitter``...). Unknown names are ignored here (see
    :func:`check_augmentations`).
    """
    opts = options or {}
    applied = []
    for name in names:
        fn = AUGMENTATIONS.get(name)
        if fn is None or rng.random() >= p:
            continue
        img, mask = fn(img, mask, rng, opts)
        applied.append(name)
    return img, mask, tuple(applied)
