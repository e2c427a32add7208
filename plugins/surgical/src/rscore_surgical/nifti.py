"""NIfTI outputs for DICOM volumes (what research tools - 3D Slicer, ITK-SNAP, nibabel, MONAI - load directly):

- ``segmentation.nii.gz``: the segments as a label volume (uint8: 0 background, ``k`` = segment ``k`` of
  :func:`rscore_surgical.segments.build_segments`, the same numbering and colours as the DICOM SEG);
- ``image.nii.gz``: the series itself (Hounsfield units for CT, int16 when they fit, else float32; option
  ``nifti_image=false`` skips it);
- ``segments.json``: per segment its value, label, colour, voxel count and volume in millilitres.

The affine maps voxel ``(i, j, k)`` = (column, row, slice in the sorted series) to RAS+ millimetres (NIfTI's world
convention): it is built from the DICOM geometry - ImageOrientationPatient, PixelSpacing and the
ImagePositionPatient of the first and last slices - and converted from DICOM's LPS by negating x and y. The qform
and sform both carry it (code 1, scanner). Option ``nifti=false`` skips all three files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.sdk import Writer
from rscore.types import Result, Scene, Window

from rscore_surgical.dicom import slice_rows
from rscore_surgical.dicom_seg import flag
from rscore_surgical.segments import Segment, build_segments, is_dicom_scene

__all__ = ["dicom_affine", "lps_affine", "voxel_volume_ml", "segment_volumes", "NiftiWriter"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _geometry(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(row direction, column direction, slice step vector, first position) in LPS mm, or None when unknown."""
    info = scene.dicom
    if info is None or not info.orientation or not info.positions or not info.pixel_spacing_mm:
        return None
    iop = np.asarray(info.orientation, np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
    first = np.asarray(info.positions[0], np.float64)
    n = len(info.positions)
    if n > 1:
        step = (np.asarray(info.positions[-1], np.float64) - first) / (n - 1)
    else:
        step = np.cross(row_dir, col_dir) * float(info.slice_thickness_mm or 1.0)
    return row_dir, col_dir, step, first


def lps_affine(scene: Scene) -> np.ndarray | None:
    """The 4x4 voxel (column, row, slice) -> DICOM patient (LPS) mm affine of a DICOM scene (voxel centres, as
    ImagePositionPatient), or None without its geometry."""
    geo = _geometry(scene)
    if geo is None:
        return None
    row_dir, col_dir, step, first = geo
    dr, dc = (float(v) for v in scene.dicom.pixel_spacing_mm)  # type: ignore[union-attr]  # DICOM: (row, column)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = step
    lps[:3, 3] = first
    return lps


def dicom_affine(scene: Scene) -> np.ndarray | None:
    """The 4x4 voxel (column, row, slice) -> RAS+ mm affine of a DICOM scene, or None without its geometry."""
    lps = lps_affine(scene)
    return None if lps is None else LPS_TO_RAS @ lps


def voxel_volume_ml(scene: Scene) -> float | None:
    """Volume of one voxel in millilitres (|det| of the affine's 3x3, mm^3 / 1000)."""
    affine = dicom_affine(scene)
    return None if affine is None else abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


def segment_volumes(scene: Scene, segments: list[Segment]) -> list[dict[str, Any]]:
    """Per segment: ``value`` (1-based), ``label``, ``colour``, ``voxels`` and ``volume_ml`` (None without geometry)."""
    unit = voxel_volume_ml(scene)
    out = []
    for k, seg in enumerate(segments, start=1):
        voxels = int(np.count_nonzero(seg.mask))
        out.append({"value": k, "label": seg.label, "colour": list(seg.colour), "voxels": voxels,
                    "volume_ml": None if unit is None else round(voxels * unit, 4)})  # fmt: skip
    return out


def _image_volume(scene: Scene) -> np.ndarray | None:
    """The series as ``(slices, rows, cols)`` in its measured values (HU for CT); None for colour images."""
    if scene.has("red", "green", "blue"):
        return None
    role = "hu" if scene.has("hu") else scene.band_roles[0]
    per = slice_rows(scene)
    n = scene.height // per
    first = scene.read(Window(0, 0, per, scene.width), [role])[0]
    vol = np.empty((n, per, scene.width), np.float32)
    vol[0] = first
    for k in range(1, n):
        vol[k] = scene.read(Window(k * per, 0, per, scene.width), [role])[0]
    if np.all(np.isfinite(vol)) and np.array_equal(vol, np.rint(vol)) and vol.min() >= -32768 and vol.max() <= 32767:
        return vol.astype(np.int16)
    return vol


def _nifti(data_srk: np.ndarray, affine: np.ndarray, path: Path, intent: str | None = None) -> Path:
    """Write ``(slices, rows, cols)`` data as NIfTI-1 with voxel axes (column, row, slice)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(data_srk, (2, 1, 0))), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    if intent:
        img.header.set_intent(intent)
    nib.save(img, str(path))
    return path


class NiftiWriter(Writer):
    """``segmentation.nii.gz``, ``image.nii.gz`` and ``segments.json`` (see the module docstring)."""

    name = "surgical.nifti"
    description = "NIfTI label volume and image volume with the DICOM geometry's affine, volumes in mL per segment"

    def applies(self, scene: Scene, result: Result) -> bool:
        return (
            is_dicom_scene(scene) and not result.absent and result.mask is not None
            and flag(result.options, "nifti", True) and dicom_affine(scene) is not None
        )  # fmt: skip

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        affine = dicom_affine(scene)
        assert affine is not None
        segments = build_segments(scene, result)
        if not segments:
            return {}
        labels = np.zeros(segments[0].mask.shape, np.uint8)
        for k, seg in enumerate(segments, start=1):
            labels[seg.mask] = k
        out = {"nifti_segmentation": _nifti(labels, affine, out_dir / "segmentation.nii.gz", "label")}
        if flag(result.options, "nifti_image", True):
            image = _image_volume(scene)
            if image is not None:
                out["nifti_image"] = _nifti(image, affine, out_dir / "image.nii.gz")
        doc: Mapping[str, Any] = {
            "affine_ras": [[round(float(v), 6) for v in row] for row in affine],
            "voxel_volume_ml": voxel_volume_ml(scene),
            "segments": segment_volumes(scene, segments),
        }
        path = out_dir / "segments.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        out["segments"] = path
        return out
