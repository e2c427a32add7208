"""Built-in writers (mask PNG, overlay PNG, result.json) and the result document they share with ``--json``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.sdk import Writer
from rscore.types import Result, Scene

OVERLAY_COLOURS = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (140, 255, 90), (230, 90, 255), (255, 150, 60)]


def jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars, dataclasses, paths, tuples; NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if not math.isfinite(f) else round(f, 6)
    if isinstance(value, Path):
        return str(value)
    return value


def scene_document(scene: Scene) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "path": str(scene.path) if scene.path else None,
        "reader": scene.reader,
        "kind": scene.kind,
        "width": scene.width,
        "height": scene.height,
        "bands": list(scene.band_roles),
        "dtype": scene.source.dtype,
        "pixel_size": list(scene.pixel_size) if scene.pixel_size else None,
        "unit": scene.unit,
    }
    if scene.geo is not None:
        doc["crs"] = scene.geo.crs
        doc["transform"] = list(scene.geo.transform)
        doc["nodata"] = scene.geo.nodata
    if scene.dicom is not None:
        doc["dicom"] = {
            "modality": scene.dicom.modality,
            "study_uid": scene.dicom.study_uid,
            "series_uid": scene.dicom.series_uid,
            "slices": len(scene.dicom.sop_instance_uids),
        }
    if scene.video is not None:
        doc["video"] = {"fps": scene.video.fps, "frame_count": scene.video.frame_count}
    return doc


def result_document(result: Result, scene: Scene | None = None) -> dict[str, Any]:
    """The result as plain JSON: what ``result.json`` holds and ``rscore run --json`` prints."""
    from rscore import rle

    plan = result.plan
    instances = []
    for i, inst in enumerate(result.instances):
        item: dict[str, Any] = {
            "id": i,
            "label": inst.label,
            "score": inst.score,
            "bbox": list(inst.bbox),
            "area_px": inst.area_px,
        }
        if inst.area_real is not None:
            item["area"] = inst.area_real
            item["area_unit"] = inst.area_unit
        if inst.attributes:
            item["attributes"] = dict(inst.attributes)
        if inst.mask is not None:
            item["rle"] = rle.encode(inst.mask)
        instances.append(item)
    summary: dict[str, Any] = {"instance_count": len(instances)}
    if isinstance(result.mask, np.ndarray):
        area = int(np.count_nonzero(result.mask))
        summary["mask_area_px"] = area
        summary["mask_fraction"] = area / max(1, result.mask.size)
    doc = {
        "query": result.query,
        "plugin": result.plugin,
        "absent": plan.absent,
        "reason": plan.reason,
        "confidence": result.confidence,
        "caveats": list(result.caveats),
        "template": plan.template,
        "plan": {
            "reasoner": plan.reasoner,
            "template": plan.template,
            "match": dict(plan.match),
            "steps": [{"text": s.text, "operator": s.operator, "params": s.params, "stats": s.stats} for s in plan.steps],
            "targets": [{k: v for k, v in asdict(t).items() if k != "mask"} | ({"mask": True} if t.mask is not None else {})
                        for t in plan.targets],
            "absent": plan.absent,
            "reason": plan.reason,
            "raw": plan.raw,
        },
        "instances": instances,
        "summary": summary,
        "classes": dict(result.classes),
        "scene": scene_document(scene) if scene is not None else None,
        "outputs": dict(result.outputs),
        "provenance": dict(result.provenance),
        "timings": dict(result.timings),
        "warnings": list(result.warnings),
    }
    return jsonable(doc)


# ------------------------------------------------------------------------------------------------------- writers
def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


class MaskPngWriter(Writer):
    """``mask.png``: the union mask at the input size, 0 / 255, 8-bit grey."""

    name = "mask-png"
    description = "binary union mask (0/255 PNG) at the input size"

    def applies(self, scene: Scene, result: Result) -> bool:
        # georeferenced rasters get georeferenced masks from their plugin (e.g. COG); a PNG would drop the CRS
        return isinstance(result.mask, np.ndarray) and scene.kind != "raster"

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        path = out_dir / "mask.png"
        _write_png(path, np.where(result.mask, 255, 0).astype(np.uint8))
        return {"mask": path}


class OverlayPngWriter(Writer):
    """``overlay.png``: the scene with each instance tinted and outlined, for a quick look."""

    name = "overlay-png"
    description = "the input with instances tinted and outlined (PNG)"

    def applies(self, scene: Scene, result: Result) -> bool:
        return isinstance(result.mask, np.ndarray) and scene.kind in ("image", "volume")

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        import cv2

        from rscore.io.images import scene_rgb8

        rgb = scene_rgb8(scene).astype(np.float32)
        layers = [i.mask for i in result.instances if i.mask is not None] or [result.mask]
        for k, mask in enumerate(layers):
            colour = np.array(OVERLAY_COLOURS[k % len(OVERLAY_COLOURS)], np.float32)
            rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
        out = np.clip(rgb, 0, 255).astype(np.uint8)
        for k, mask in enumerate(layers):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, OVERLAY_COLOURS[k % len(OVERLAY_COLOURS)], 1)
        path = out_dir / "overlay.png"
        _write_png(path, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        return {"overlay": path}


class CocoWriter(Writer):
    """``coco.json`` + ``coco_results.json``: the instance masks in COCO layout (:mod:`rscore.io.coco`)."""

    name = "coco"
    description = "instance masks as COCO JSON (coco.json dataset, coco_results.json results; RLE)"

    def applies(self, scene: Scene, result: Result) -> bool:
        return scene.kind == "image" and any(isinstance(i.mask, np.ndarray) for i in result.instances)

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from rscore.io.coco import write_coco

        return write_coco(result, scene, out_dir)


class ResultJsonWriter(Writer):
    """``result.json``: the result document. Runs last, so that it lists every other output."""

    name = "result-json"
    description = "the result document (plan, instances, provenance, timings, outputs)"
    final = True

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        path = out_dir / "result.json"
        outputs = {**result.outputs, "result": "result.json"}
        doc = result_document(result.replace(outputs=outputs), scene)
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return {"result": path}
