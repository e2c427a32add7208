"""Writers of rscore-surgical (``rscore_writers``); they apply to scenes of the DICOM reader only.

- ``segmentation.dcm`` - DICOM SEG on the source series (:mod:`rscore_surgical.dicom_seg`);
- ``slices/slice_NNN.png`` - one PNG per slice for quick viewing: the slice in its display window
  (:mod:`rscore_surgical.windowing`, option ``window``) with each segment tinted in its colour and outlined. ``NNN``
  is the slice's index in the sorted series (0 = lowest position along the slice normal), so ``-O slice=K`` writes
  ``slice_K.png``. Option ``slice_pngs=false`` skips them. The segment colours match the SEG's display colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rscore.sdk import Writer
from rscore.types import Result, Scene, Window

from rscore_surgical.dicom import slice_rows
from rscore_surgical.dicom_seg import DicomSegWriter, flag
from rscore_surgical.segments import build_segments, is_dicom_scene
from rscore_surgical.windowing import apply_window, resolve_window, stretch

__all__ = ["SlicePngWriter", "writers", "slice_picture", "ALPHA"]

ALPHA = 0.45  # weight of a segment's colour over the image


def slice_picture(scene: Scene, k: int, window: object) -> np.ndarray:
    """Slice ``k`` of a DICOM scene as ``(rows, cols, 3)`` uint8: windowed (CT), or the file's window, or stretched."""
    per = slice_rows(scene)
    win = Window(k * per, 0, per, scene.width)
    if scene.has("red", "green", "blue"):
        rgb = scene.read(win, ["red", "green", "blue"])
        if rgb.dtype != np.uint8:
            rgb = stretch(rgb.reshape(1, -1)[0]).reshape(rgb.shape)
        return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    role = "hu" if scene.has("hu") else scene.band_roles[0]
    values = scene.read(win, [role])[0].astype(np.float32)
    valid = scene.valid(win)
    if valid is not None:
        values[~np.asarray(valid, bool)] = np.nan
    if window is not None:
        grey = apply_window(values, window.center, window.width)  # type: ignore[attr-defined]
    else:
        grey = stretch(values, None if valid is None else np.asarray(valid, bool))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


class SlicePngWriter(Writer):
    """``slices/slice_NNN.png``: each slice, windowed, with the segments overlaid (see the module docstring)."""

    name = "surgical.slice-png"
    description = "one PNG per DICOM slice: the slice in its display window with the segments overlaid"

    def applies(self, scene: Scene, result: Result) -> bool:
        return is_dicom_scene(scene) and flag(result.options, "slice_pngs", True)

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from PIL import Image

        window = resolve_window(scene, result.options.get("window"), template=result.plan.template,
                                query=result.query)
        segments = build_segments(scene, result)
        folder = out_dir / "slices"
        folder.mkdir()
        n = scene.height // slice_rows(scene)
        first = int(scene.metadata.get("slice_index", 0) or 0)
        digits = max(3, len(str(first + n - 1)))
        out: dict[str, Path] = {}
        for k in range(n):
            rgb = slice_picture(scene, k, window).astype(np.float32)
            for seg in segments:
                mask = seg.mask[k]
                if not mask.any():
                    continue
                colour = np.asarray(seg.colour, np.float32)
                rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * colour
                rgb[_outline(mask)] = colour
            index = first + k
            path = folder / f"slice_{index:0{digits}d}.png"
            Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB").save(path, compress_level=6)
            out[f"slice_png_{index:0{digits}d}"] = path
        return out


def writers() -> list[Writer]:
    return [DicomSegWriter(), SlicePngWriter()]
