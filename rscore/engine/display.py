"""Pictures of a large scene for a reasoner: one display rule (bands, 8-bit or one stretch) for every tile, the
downscaled overview, and the tile / overview sub-scenes (:mod:`rscore.engine.decoupled`).

Scenes whose bands are 8-bit give each tile its own pixels; display bands that read back as 8-bit (a plugin's
windowed CT band) are shown as they are; other scenes (16-bit, float) are stretched to 8 bits with *one* 2-98 %
stretch measured on a raw sample of the whole scene, so every tile is shown with the same contrast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.reasoners.prompting import ReasoningView
from rscore.tiling import iter_windows
from rscore.types import ArraySource, Scene, Window

STRETCH = (2.0, 98.0)  # percentiles, as rscore.io.images.scene_rgb8


@dataclass(frozen=True)
class _Display:
    """How tiles are shown: ``native`` = 8-bit pixels as they are (every band when the scene's source is 8-bit, else
    the display ``roles``, which a plugin already made 8-bit, e.g. a CT window), else ``roles`` stretched with
    ``lo``..``hi``."""

    native: bool
    roles: tuple[str, ...]
    lo: float = 0.0
    hi: float = 255.0
    all_bands: bool = True


def _display_roles(scene: Scene) -> tuple[str, ...]:
    from rscore.io.images import DISPLAY_ORDER

    if scene.has("red", "green", "blue"):
        return ("red", "green", "blue")
    role = next((r for r in DISPLAY_ORDER if r in scene.band_roles), scene.band_roles[0] if scene.band_roles else None)
    if role is None:
        raise OptionError("the scene has no bands to show a reasoner")
    return (role,)


def _stretch(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        out = np.clip((data.astype(np.float32) - lo) / (hi - lo) * 255.0, 0, 255)
    out[~np.isfinite(out)] = 0
    return out.astype(np.uint8)


def _downsample(
    scene: Scene, roles: Sequence[str], side: int, sample_px: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The ``roles`` bands of the whole scene shrunk (area averaging) to at most ``side`` px on the longer side, read
    window by window so that a lazy raster is never loaded whole: ``(bands, h, w)`` float32, its valid mask, and a
    strided sample of about ``sample_px`` *raw* valid values per band (for the stretch: averaging narrows the
    spread of the values, so percentiles of the shrunk picture would over-stretch every tile)."""
    import cv2

    height, width = scene.shape
    scale = min(1.0, side / max(height, width))
    oh, ow = max(1, round(height * scale)), max(1, round(width * scale))
    out = np.zeros((len(roles), oh, ow), np.float32)
    valid: np.ndarray | None = None
    step = max(1, math.isqrt(max(1, height * width // sample_px)))
    samples: list[np.ndarray] = []
    block = max(1024, math.ceil(4 / scale))
    block += (-block) % step  # blocks start on the sampling grid
    for win in iter_windows(height, width, block):
        r0, r1 = win.row_off * oh // height, (win.row_off + win.height) * oh // height
        c0, c1 = win.col_off * ow // width, (win.col_off + win.width) * ow // width
        data = scene.read(win, list(roles)).astype(np.float32)
        v = scene.valid(win)
        picked = data[:, ::step, ::step]
        samples.append(picked[:, v[::step, ::step]] if v is not None else picked.reshape(len(roles), -1))
        if r1 <= r0 or c1 <= c0:
            continue
        for b in range(len(roles)):
            out[b, r0:r1, c0:c1] = cv2.resize(data[b], (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA)
        if v is not None:
            if valid is None:
                valid = np.ones((oh, ow), bool)
            small = cv2.resize(v.astype(np.uint8), (c1 - c0, r1 - r0), interpolation=cv2.INTER_NEAREST)
            valid[r0:r1, c0:c1] = small > 0
    return out, valid, np.concatenate(samples, axis=1)


def _prepare_display(
    scene: Scene, side: int, need_overview: bool
) -> tuple[_Display, tuple[np.ndarray, np.ndarray | None] | None]:
    """The display rule for tiles and, when asked or needed for the stretch, the overview picture ``(bands, h, w)``
    uint8 with its valid mask (``None`` otherwise)."""
    roles = _display_roles(scene)
    all_bands = str(scene.source.dtype) == "uint8"
    # A plugin may give a float scene an 8-bit display band (the surgical plugin's windowed CT): show it as it is;
    # a second stretch would undo the window the user chose.
    native = all_bands or scene.read(Window(0, 0, 1, 1), list(roles)).dtype == np.uint8
    if native and not need_overview:
        return _Display(True, roles, all_bands=all_bands), None
    raw, valid, sample = _downsample(scene, roles, side)
    if native:
        return _Display(True, roles, all_bands=all_bands), (np.clip(np.rint(raw), 0, 255).astype(np.uint8), valid)
    sample = sample[np.isfinite(sample)]  # one stretch for all display bands, as scene_rgb8 does per picture
    lo, hi = (float(v) for v in np.percentile(sample, STRETCH)) if sample.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    display = _Display(False, roles, lo, hi)
    return display, (_stretch(raw, lo, hi), valid)


def _shifted_geo(scene: Scene, window: Window, scale: tuple[float, float] = (1.0, 1.0)) -> Any:
    if scene.geo is None:
        return None
    a, b, c, d, e, f = scene.geo.transform
    c2, f2 = c + a * window.col_off + b * window.row_off, f + d * window.col_off + e * window.row_off
    sx, sy = scale
    return dataclasses.replace(scene.geo, transform=(a * sx, b * sy, c2, d * sx, e * sy, f2))


def _view_metadata(scene: Scene, view: ReasoningView) -> dict[str, Any]:
    return {**dict(scene.metadata or {}), "reasoning_view": view}


def _tile_scene(scene: Scene, window: Window, display: _Display, view: ReasoningView) -> Scene:
    """The sub-scene one tile is reasoned on: its pixels read once (all bands for 8-bit scenes, the display bands as
    they are when they are 8-bit, else the display bands with the whole scene's stretch)."""
    if display.native and display.all_bands:
        data, roles = scene.read(window), scene.band_roles
    elif display.native:
        data, roles = scene.read(window, list(display.roles)), display.roles
    else:
        data, roles = _stretch(scene.read(window, list(display.roles)), display.lo, display.hi), display.roles
    return Scene(
        source=ArraySource(np.ascontiguousarray(data), scene.valid(window)),
        kind=scene.kind,
        band_roles=tuple(roles),
        path=scene.path,
        reader=scene.reader,
        pixel_size=scene.pixel_size,
        unit=scene.unit,
        geo=_shifted_geo(scene, window),
        dicom=scene.dicom,
        video=scene.video,
        metadata=_view_metadata(scene, view),
    )


def _overview_scene(scene: Scene, picture: tuple[np.ndarray, np.ndarray | None], display: _Display,
                    view: ReasoningView) -> Scene:
    data, valid = picture
    sx, sy = scene.width / data.shape[2], scene.height / data.shape[1]
    return Scene(
        source=ArraySource(data, valid),
        kind=scene.kind,
        band_roles=display.roles,
        path=scene.path,
        reader=scene.reader,
        pixel_size=(scene.pixel_size[0] * sx, scene.pixel_size[1] * sy) if scene.pixel_size else None,
        unit=scene.unit,
        geo=_shifted_geo(scene, Window(0, 0, scene.height, scene.width), (sx, sy)),
        dicom=scene.dicom,
        video=scene.video,
        metadata=_view_metadata(scene, view),
    )
