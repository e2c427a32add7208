"""Masks in the layouts other tools read: COCO for images, YouTube-VIS for video (both with COCO compressed RLE,
decodable by ``pycocotools.mask.decode``), written beside rscore's own ``result.json`` / ``masks.json``.

- ``coco.json``: a COCO dataset document (``images``, ``categories``, ``annotations`` with ``segmentation`` RLE,
  ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd`` 0 and the rscore ``score``): ``pycocotools.coco.COCO("coco.json")``
  loads it. ``coco_results.json``: the same masks as a COCO *results* list (``image_id``, ``category_id``,
  ``segmentation``, ``bbox``, ``score``), what ``COCO.loadRes`` and ``COCOeval`` take against a ground truth that
  uses the same image id (1) and category names.
- ``ytvis.json``: a YouTube-VIS 2019/2021 dataset document: one video (``length`` = processed frames, in frame
  order, ``frame_indices`` = their source frame numbers), one annotation per track with per-frame
  ``segmentations`` / ``bboxes`` / ``areas`` (``null`` where the track is not present). ``ytvis_results.json``:
  the per-track results list (``video_id``, ``category_id``, ``segmentations``, ``score``) that YouTube-VIS
  evaluators take.

Category ids follow the order labels first appear (1-based); the score of a track is its best score.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore import rle

__all__ = ["coco_documents", "ytvis_documents", "write_coco", "write_ytvis"]


def _xywh(bbox: Iterable[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return [x0, y0, x1 - x0, y1 - y0]


def _categories(labels: Iterable[str]) -> dict[str, int]:
    cats: dict[str, int] = {}
    for label in labels:
        cats.setdefault(label, len(cats) + 1)
    return cats


def coco_documents(result: Any, width: int, height: int, file_name: str = "") -> tuple[dict[str, Any], list[dict]]:
    """``(dataset, results)`` for an image result: instances with a 2-D mask become annotations / results."""
    items = [i for i in result.instances if isinstance(i.mask, np.ndarray) and i.mask.ndim == 2]
    cats = _categories(i.label for i in items)
    annotations, results = [], []
    for k, inst in enumerate(items, start=1):
        seg = rle.encode(inst.mask)
        bbox = _xywh(inst.bbox)
        area = int(np.count_nonzero(inst.mask))
        score = round(float(inst.score), 6)
        annotations.append({"id": k, "image_id": 1, "category_id": cats[inst.label], "segmentation": seg,
                            "area": area, "bbox": bbox, "iscrowd": 0, "score": score})
        results.append({"image_id": 1, "category_id": cats[inst.label], "segmentation": seg, "bbox": bbox,
                        "score": score})
    dataset = {
        "info": {"description": f"rscore: {result.query}", "version": "1.0"},
        "images": [{"id": 1, "file_name": file_name, "width": int(width), "height": int(height)}],
        "categories": [{"id": v, "name": k, "supercategory": result.plugin or ""} for k, v in cats.items()],
        "annotations": annotations,
    }
    return dataset, results


def write_coco(result: Any, scene: Any, out_dir: Path) -> dict[str, Path]:
    dataset, results = coco_documents(result, scene.width, scene.height, Path(scene.path).name if scene.path else "")
    paths = {"coco": out_dir / "coco.json", "coco_results": out_dir / "coco_results.json"}
    paths["coco"].write_text(json.dumps(dataset) + "\n", encoding="utf-8")
    paths["coco_results"].write_text(json.dumps(results) + "\n", encoding="utf-8")
    return paths


def ytvis_documents(
    frames: Iterable[Mapping[str, Any]], tracks: Iterable[Any], width: int, height: int, query: str, source: str = ""
) -> tuple[dict[str, Any], list[dict]]:
    """``(dataset, results)`` from the frame records of ``masks.json`` (frame order) and the track summaries."""
    tracks = list(tracks)
    cats = _categories(t.label for t in tracks)
    segs: dict[int, list[Any]] = {t.id: [] for t in tracks}
    boxes: dict[int, list[Any]] = {t.id: [] for t in tracks}
    areas: dict[int, list[Any]] = {t.id: [] for t in tracks}
    indices: list[int] = []
    for pos, record in enumerate(frames):
        indices.append(int(record["frame"]))
        for inst in record.get("instances", ()):
            tid = int(inst["track_id"])
            if tid not in segs:  # a track without a summary (should not happen): keep its masks anyway
                segs[tid], boxes[tid], areas[tid] = [None] * pos, [None] * pos, [None] * pos
            segs[tid].append(inst["rle"])
            boxes[tid].append(_xywh(inst["bbox"]))
            areas[tid].append(int(inst["area_px"]))
        for tid in segs:  # absent this frame
            if len(segs[tid]) < pos + 1:
                segs[tid].append(None)
                boxes[tid].append(None)
                areas[tid].append(None)
    by_id = {t.id: t for t in tracks}
    annotations, results = [], []
    for k, tid in enumerate(sorted(segs), start=1):
        t = by_id.get(tid)
        label = t.label if t is not None else "object"
        cat = cats.setdefault(label, len(cats) + 1)
        score = round(float(t.best_score), 6) if t is not None else None
        annotations.append({"id": k, "video_id": 1, "category_id": cat, "segmentations": segs[tid],
                            "bboxes": boxes[tid], "areas": areas[tid], "iscrowd": 0, "width": int(width),
                            "height": int(height), "length": 1, "track_id": tid, "score": score})
        results.append({"video_id": 1, "category_id": cat, "segmentations": segs[tid], "score": score,
                        "track_id": tid})
    dataset = {
        "info": {"description": f"rscore: {query}", "version": "1.0"},
        "videos": [{"id": 1, "width": int(width), "height": int(height), "length": len(indices),
                    "file_names": [f"{Path(source).stem or 'frame'}/{i:06d}.jpg" for i in indices],
                    "frame_indices": indices, "source": source}],
        "categories": [{"id": v, "name": k} for k, v in cats.items()],
        "annotations": annotations,
    }
    return dataset, results


def write_ytvis(result: Any, out_dir: Path) -> dict[str, Path]:
    h, w = result.frame_size
    frames = result.log.iter_frames() if result.log else iter(())
    dataset, results = ytvis_documents(frames, result.tracks, w, h, result.query, result.source)
    paths = {"ytvis": out_dir / "ytvis.json", "ytvis_results": out_dir / "ytvis_results.json"}
    paths["ytvis"].write_text(json.dumps(dataset) + "\n", encoding="utf-8")
    paths["ytvis_results"].write_text(json.dumps(results) + "\n", encoding="utf-8")
    return paths
