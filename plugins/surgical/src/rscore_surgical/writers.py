"""Writers of rscore-surgical (``rscore_writers``); they apply to scenes of the DICOM reader only.

- ``segmentation.dcm`` - DICOM SEG on the source series (:mod:`rscore_surgical.dicom_seg`);
- ``segmentation.nii.gz``, ``image.nii.gz``, ``segments.json`` - NIfTI volumes with the DICOM geometry's affine and
  the volume of each segment in mL (:mod:`rscore_surgical.nifti`; options ``nifti``, ``nifti_image``);
- ``slices/slice_NNN.png`` - one PNG per slice for quick viewing: the slice in its display window
  (:mod:`rscore_surgical.windowing`, option ``window``) with each segment tinted in its colour and outlined. ``NNN``
  is the slice's index in the sorted series (0 = lowest position along the slice normal), so ``-O slice=K`` writes
  ``slice_K.png``. Option ``slice_pngs=false`` skips them. The segment colours match the SEG's display colours.
  Their window is the one the postprocess step recorded (``provenance["display_windows"]["slice_pngs"]``; see
  "Which window, when" in :mod:`rscore_surgical.windowing`): ``-O window`` when set, else the window a model was
  shown, else the ``auto`` choice for the matched template.

The options ``dicom_seg``, ``slice_pngs``, ``nifti`` and ``nifti_image`` are checked before segmentation
(:func:`output_flags`, called by the plugin's preprocess hook), so a bad value fails fast whatever the scene or the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.sdk import Writer
from rscore.types import Result, Scene, Window

from rscore_surgical.dicom import slice_rows
from rscore_surgical.dicom_seg import DicomSegWriter, flag
from rscore_surgical.segments import build_segments, is_dicom_scene
from rscore_surgical.windowing import DisplayWindow, apply_window, slices_window, stretch

__all__ = ["SlicePngWriter", "writers", "slice_picture", "output_flags", "OUTPUT_FLAGS", "ALPHA"]

ALPHA = 0.45  # weight of a segment's colour over the image
# boolean options of the writers, with their defaults
OUTPUT_FLAGS = {"dicom_seg": True, "slice_pngs": True, "nifti": True, "nifti_image": True}


def output_flags(options: Mapping[str, Any] | None) -> dict[str, bool]:
    """The writers' boolean options parsed (:func:`~rscore_surgical.dicom_seg.flag`); a bad value is a one-line
    :class:`~rscore.errors.OptionError` naming the option and the values it takes."""
    return {name: flag(options, name, default) for name, default in OUTPUT_FLAGS.items()}


def png_window(scene: Scene, result: Result) -> DisplayWindow | None:
    """The slice PNGs' window: the one recorded by the postprocess step, else chosen by the same rule."""
    records = (result.provenance or {}).get("display_windows")
    recorded = records.get("slice_pngs") if isinstance(records, Mapping) else None
    if recorded:
        return None if recorded.get("center") is None else DisplayWindow.from_dict(recorded)
    return slices_window(scene, result.options.get("window"), template=result.plan.template, query=result.query,
                         shown=scene.metadata.get("display_window"))


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
        return is_dicom_scene(scene) and flag(result.options, "slice_pngs", True)  # validated at preprocess

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from PIL import Image

        window = png_window(scene, result)
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
    from rscore_surgical.nifti import NiftiWriter

    return [DicomSegWriter(), SlicePngWriter(), NiftiWriter()]
