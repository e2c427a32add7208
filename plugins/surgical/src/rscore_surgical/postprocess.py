"""Map results on DICOM scenes back to their slices and the patient.

A volume is a stack of slices along the scene's rows (:mod:`rscore_surgical.dicom`), so a connected component of the
union mask could run from the bottom row of one slice into the top row of the next - neighbours in the stack that are
not neighbours in the patient. The instances are rebuilt as 3-D components across slices
(:mod:`rscore_surgical.components3d`: volume in mL, slice range, 3-D boxes in voxels and mm, centroid, and per slice
its ``sop_instance_uid`` and ``bbox_in_slice``); :func:`slice_attributes` gives a slice's DICOM references
(``slice`` index in the scene, ``series_slice`` in the sorted series, ``sop_instance_uid``, ``frame`` for multi-frame
files, ``position_mm`` = ImagePositionPatient), :func:`annotate` tags an instance without a mask with the slice its box
starts on.

:func:`record_windows` states in the result which display windows the model and the slice PNGs used
(:mod:`rscore_surgical.windowing`): ``provenance["display_windows"]`` and a plan step. :func:`record_volumes` adds each
segment's voxels and mL to ``classes``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rscore.types import Instance, Result, Scene, Step

from rscore_surgical.dicom import slice_rows

log = logging.getLogger(__name__)


def slice_attributes(scene: Scene, k: int) -> dict[str, Any]:
    """Slice ``k``'s references: ``slice``, ``series_slice``, ``sop_instance_uid``, ``position_mm``, ``frame``."""
    meta = scene.metadata
    attrs: dict[str, Any] = {"slice": k, "series_slice": int(meta.get("slice_index", k))}
    info = scene.dicom
    if info is not None:
        if k < len(info.sop_instance_uids):
            attrs["sop_instance_uid"] = info.sop_instance_uids[k]
        if k < len(info.positions):
            attrs["position_mm"] = list(info.positions[k])
    frames = meta.get("slice_frames") or ()
    if k < len(frames) and frames[k] is not None:
        attrs["frame"] = int(frames[k]) + 1  # DICOM frame numbers are 1-based
    return attrs


def record_windows(result: Result, scene: Scene) -> Result | None:
    """``result`` with ``provenance["display_windows"]`` (``model``, ``slice_pngs``) and, when slice PNGs are
    written, a plan step naming their window; ``None`` for scenes of other readers. ``scene`` is the preprocessed
    scene (it carries the window a model was shown)."""
    from rscore_surgical.segments import is_dicom_scene
    from rscore_surgical.windowing import window_records
    from rscore_surgical.writers import output_flags

    if not is_dicom_scene(scene):
        return None
    pngs = output_flags(result.options)["slice_pngs"]
    records, win = window_records(scene, result.options, template=result.plan.template, query=result.query,
                                  slice_pngs=pngs)
    plan = result.plan
    if pngs:
        text = (f"slice PNGs in the {win.describe()}: {win.why}" if win is not None
                else "slice PNGs without a display window (grey values stretched 2-98 %, colour as stored)")
        plan = dataclasses.replace(plan, steps=(*plan.steps, Step(text=text)))
    return result.replace(plan=plan, provenance={**result.provenance, "display_windows": records})


def annotate(inst: Instance, scene: Scene) -> Instance:
    """An instance without a mask tagged with the slice its box starts on (and its box on that slice)."""
    per = slice_rows(scene)
    k, row = divmod(inst.bbox[1], per)
    attrs = {**inst.attributes, **slice_attributes(scene, k), "row_in_slice": row}
    if (inst.bbox[3] - 1) // per != k:
        attrs["spans_slices"] = True
    else:  # the box on its own slice: what a viewer of that DICOM image (or a per-slice COCO file) needs
        attrs["bbox_in_slice"] = [inst.bbox[0], row, inst.bbox[2], inst.bbox[3] - k * per]
    return Instance(inst.label, inst.score, inst.bbox, inst.area_px, inst.mask, inst.area_real, inst.area_unit, attrs)


def record_volumes(result: Result, scene: Scene) -> Result | None:
    """``classes[segment label]`` gains ``voxels`` and ``volume_ml`` (voxel count x voxel volume from the DICOM
    geometry; :mod:`rscore_surgical.nifti`) for volumes of a DICOM series; None when there is nothing to add."""
    from rscore_surgical.nifti import segment_volumes, voxel_volume_ml
    from rscore_surgical.segments import build_segments, is_dicom_scene

    if not is_dicom_scene(scene) or result.absent or result.mask is None or voxel_volume_ml(scene) is None:
        return None
    segments = build_segments(scene, result)
    if not segments:
        return None
    classes = {k: dict(v) if isinstance(v, dict) else v for k, v in dict(result.classes).items()}
    for item in segment_volumes(scene, segments):
        entry = classes.setdefault(item["label"], {})
        if isinstance(entry, dict):
            entry.update(voxels=item["voxels"], volume_ml=item["volume_ml"])
    return dataclasses.replace(result, classes=classes)

