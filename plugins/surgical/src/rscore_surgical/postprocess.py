"""Map results on DICOM scenes back to their slices.

A volume is a stack of slices along the scene's rows (:mod:`rscore_surgical.dicom`), so a connected component of the
union mask could run from the bottom row of one slice into the top row of the next - neighbours in the stack that are
not neighbours in the patient. This postprocess step rebuilds the instances slice by slice: each instance lies on one
slice and carries ``attributes`` ``slice`` (index in the scene), ``series_slice`` (index in the sorted series),
``sop_instance_uid``, ``frame`` (for multi-frame files) and ``position_mm`` (ImagePositionPatient), so a DICOM SEG
writer or a viewer can put it on the right image. Bounding boxes stay in scene coordinates; ``row_in_slice`` gives the
box's top row within its slice and ``bbox_in_slice`` the box on its slice's own image.

:func:`record_windows` states in the result which display windows the model and the slice PNGs used
(:mod:`rscore_surgical.windowing`): ``provenance["display_windows"]`` and a plan step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from rscore.instances import instances_from_mask, sort_instances
from rscore.types import Instance, Result, Scene, Step

from rscore_surgical.dicom import LAYOUT, slice_rows

log = logging.getLogger(__name__)

MAX_MASK_BYTES = 256 << 20  # full-size instance masks kept within this budget (as the engine does)


def _slice_attributes(scene: Scene, k: int) -> dict[str, Any]:
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


def split_per_slice(result: Result, scene: Scene) -> Result | None:
    """Instances rebuilt slice by slice with their DICOM references; ``None`` when there is nothing to do."""
    if scene.metadata.get("layout") != LAYOUT or result.absent or not result.instances:
        return None
    labels = {inst.label for inst in result.instances}
    if len(labels) == 1 and isinstance(result.mask, np.ndarray):
        # one kind of target (analytic templates): rebuild from the union mask, with the score and class maps
        score = result.score if isinstance(result.score, np.ndarray) else None
        classes = result.class_map if isinstance(result.class_map, np.ndarray) else None
        pieces = _split(result.mask, scene, result, labels.pop(), score, classes)
    else:
        pieces = []
        for inst in result.instances:
            if inst.mask is None:
                pieces.append(_annotate(inst, scene))  # no mask to split: tag the slice its box starts on
            else:
                score_map = np.full(scene.shape, inst.score, np.float32)
                pieces += _split(inst.mask, scene, result, inst.label, score_map, None, inst.attributes)
    limit = int(result.options.get("max_instances", 1000) or 1000)
    ordered = sort_instances(pieces)
    if len(ordered) > limit:
        log.info("kept the best %d of %d per-slice instances (max_instances)", limit, len(ordered))
        ordered = ordered[:limit]
    return result.replace(instances=tuple(ordered))


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


def _annotate(inst: Instance, scene: Scene) -> Instance:
    per = slice_rows(scene)
    k, row = divmod(inst.bbox[1], per)
    attrs = {**inst.attributes, **_slice_attributes(scene, k), "row_in_slice": row}
    if (inst.bbox[3] - 1) // per != k:
        attrs["spans_slices"] = True
    else:  # the box on its own slice: what a viewer of that DICOM image (or a per-slice COCO file) needs
        attrs["bbox_in_slice"] = [inst.bbox[0], row, inst.bbox[2], inst.bbox[3] - k * per]
    return Instance(inst.label, inst.score, inst.bbox, inst.area_px, inst.mask, inst.area_real, inst.area_unit, attrs)


def _split(
    mask: np.ndarray,
    scene: Scene,
    result: Result,
    label: str,
    score: np.ndarray | None,
    classes: np.ndarray | None,
    extra: Any = None,
) -> list[Instance]:
    per = slice_rows(scene)
    opts = result.options
    out: list[Instance] = []
    budget = MAX_MASK_BYTES
    for k in range(scene.height // per):
        rows = slice(k * per, (k + 1) * per)
        part = mask[rows]
        if not part.any():
            continue
        found = instances_from_mask(
            part,
            label=label,
            score=None if score is None else score[rows],
            classes=None if classes is None else classes[rows],
            class_names=result.class_names,
            pixel_size=scene.pixel_size,
            unit=scene.unit,
            min_area_px=int(opts.get("min_area_px", 1) or 1),
            max_instances=int(opts.get("max_instances", 1000) or 1000),
        )
        attrs = {**(extra or {}), **_slice_attributes(scene, k)}
        for inst in found:
            x0, y0, x1, y1 = inst.bbox
            full = None
            if inst.mask is not None and budget >= mask.size:
                full = np.zeros(scene.shape, bool)
                full[rows] = inst.mask
                budget -= full.size
            out.append(
                Instance(
                    label=inst.label,
                    score=inst.score,
                    bbox=(x0, y0 + k * per, x1, y1 + k * per),
                    area_px=inst.area_px,
                    mask=full,
                    area_real=inst.area_real,
                    area_unit=inst.area_unit,
                    attributes={**inst.attributes, **attrs, "row_in_slice": y0, "bbox_in_slice": [x0, y0, x1, y1]},
                )
            )
    return out


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

