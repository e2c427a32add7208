"""Representative frames for the scaffold-compliance report: per finding, the sampled frame where it covered the
most pixels, drawn small (at most :data:`MAX_WIDTH` px wide) with each instance's mask tinted and outlined
(:func:`rscore.video.writers.draw_overlay`) and its box drawn, so a reader sees what fired and where.

:class:`BestFrames` keeps, per finding, the frame with the largest area seen so far (one frame and its masks per
finding, not the clip); :meth:`BestFrames.render` gives small PNG bytes (picklable, cached with the clip's findings);
:func:`write_frames` writes them next to the report and returns their paths relative to it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rscore_flows._common import write_bytes

__all__ = ["MAX_WIDTH", "BestFrames", "draw_evidence", "frame_file_name", "write_frames"]

MAX_WIDTH = 640


def draw_evidence(
    rgb: np.ndarray, items: Sequence[Mapping[str, Any]], zone: np.ndarray | None = None, max_width: int = MAX_WIDTH
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The frame (RGB) shrunk to at most ``max_width`` px wide, each item's ``mask`` tinted and outlined, its box
    drawn and labelled in the colour of ``track_colour(k + 1)`` for the k-th item; the restricted ``zone`` (a mask)
    outlined in white. Returns the picture and the drawn boxes (``label``, ``bbox`` end-exclusive, in the picture's
    pixels, ``colour``)."""
    import cv2

    from rscore.instances import mask_bbox
    from rscore.video.writers import draw_overlay, track_colour

    h, w = rgb.shape[:2]
    scale = min(1.0, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def shrink(mask: np.ndarray) -> np.ndarray:
        if scale == 1.0:
            return np.asarray(mask, bool)
        return cv2.resize(np.asarray(mask, np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)

    picture = np.asarray(rgb, np.uint8) if scale == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    drawn: list[dict[str, Any]] = []
    overlay_items = []
    for k, item in enumerate(items):
        mask = shrink(item["mask"])
        box = mask_bbox(mask)
        if box is None:  # too thin to survive the shrink: its box from full resolution, scaled
            full = mask_bbox(np.asarray(item["mask"], bool))
            if full is None:
                continue
            box = tuple(int(round(v * scale)) for v in full)
            box = (box[0], box[1], max(box[0] + 1, box[2]), max(box[1] + 1, box[3]))
        overlay_items.append({"mask": mask, "bbox": box, "track_id": k + 1, "label": item.get("label", "")})
        drawn.append({"label": item.get("label", ""), "bbox": [int(v) for v in box], "colour": track_colour(k + 1)})
    out = draw_overlay(picture, overlay_items)
    if zone is not None:
        contours, _ = cv2.findContours(shrink(zone).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    for d in drawn:  # boxes last, so that no tint or outline covers them
        x0, y0, x1, y1 = d["bbox"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), d["colour"], 1)
    return out, drawn


class BestFrames:
    """Per finding, the sampled frame where it covered the most pixels (the first such frame on a tie)."""

    def __init__(self) -> None:
        self._best: dict[str, tuple[int, int, float, np.ndarray, list[dict[str, Any]], np.ndarray | None]] = {}

    def offer(self, name: str, area: int, frame: int, t_s: float, rgb: np.ndarray,
              items: Sequence[Mapping[str, Any]], zone: np.ndarray | None = None) -> None:  # fmt: skip
        if area > 0 and area > self._best.get(name, (0,))[0]:
            self._best[name] = (area, frame, t_s, np.array(rgb, np.uint8, copy=True), [dict(i) for i in items], zone)

    def render(self) -> dict[str, dict[str, Any]]:
        """Per finding: ``frame``, ``t_s``, ``area_px`` (full resolution), ``size_px`` of the picture, ``boxes``
        (in its pixels) and ``png`` (the encoded picture)."""
        import cv2

        out = {}
        for name, (area, frame, t_s, rgb, items, zone) in self._best.items():
            picture, boxes = draw_evidence(rgb, items, zone)
            ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB picture
                continue
            out[name] = {
                "frame": frame, "t_s": round(t_s, 3), "area_px": area,
                "size_px": [picture.shape[1], picture.shape[0]], "boxes": boxes, "png": png.tobytes(),
            }  # fmt: skip
        return out


def instance_items(instances: Sequence[Any], mask: np.ndarray, label: str) -> list[dict[str, Any]]:
    """What to draw for one answer: its instances (mask clipped to the answer's union mask; the box where an
    instance has no mask), or the union mask as one item when the answer has no instances."""
    items = []
    for inst in instances:
        if inst.mask is not None:
            m = np.asarray(inst.mask, bool)
        else:
            x0, y0, x1, y1 = (int(v) for v in inst.bbox)
            m = np.zeros(mask.shape, bool)
            m[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        score = f" {inst.score:.2f}" if inst.score is not None and inst.score < 1.0 else ""
        items.append({"mask": m, "label": f"{inst.label or label}{score}"})
    return [i for i in items if i["mask"].any()] or [{"mask": mask, "label": label}]


def frame_file_name(camera: str, clip: str, finding: str) -> str:
    """A file name safe in a URL and on every file system."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{camera}-{clip}-{finding}") + ".png"


def write_frames(clips: Sequence[Any], out_dir: Path, folder: str) -> dict[tuple[str, str, str], str]:
    """Write every clip's representative frames under ``out_dir/folder``; returns, per (camera, clip, finding), the
    PNG's path relative to ``out_dir`` (forward slashes, for Markdown and HTML)."""
    paths: dict[tuple[str, str, str], str] = {}
    for c in clips:
        for name, ev in (getattr(c, "evidence", None) or {}).items():
            target = out_dir / folder
            target.mkdir(parents=True, exist_ok=True)
            file = write_bytes(target / frame_file_name(c.camera, c.name, name), ev["png"])  # never over a user's
            paths[(c.camera, c.name, name)] = f"{folder}/{file.name}"
    return paths
