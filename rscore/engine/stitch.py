"""Stitch: pieces of objects found tile by tile, merged across tile borders, into instances and one union mask.

What the tiled decoupled path (:mod:`rscore.engine.decoupled`) does after each tile was reasoned and segmented::

    instance (tile pixels) --piece_from_instance--> TilePiece (scene pixels, mask cropped to its box)
    pieces of all tiles --merge_across_tiles (IoU inside the two tiles' overlap, transitive)--> merged pieces
    merged pieces --stitch_pieces--> instances (full-size masks within the budget) + union mask (memory or disk)

The analytic path stitches its program's tile outputs with :func:`rscore.tiling.make_sink` (seam-free by halo,
:func:`rscore.engine.program.run_program`); both keep memory flat with the scene's size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rscore.errors import OptionError
from rscore.instances import cluster_boxes, mask_bbox, sort_instances
from rscore.tiling import TiledArray, in_memory_pixel_limit, iter_windows, make_sink
from rscore.types import Instance, Scene, Window

log = logging.getLogger(__name__)

__all__ = ["TilePiece", "piece_from_instance", "merge_across_tiles", "stitch_pieces"]


def _intersect(a: Window, b: Window) -> Window | None:
    r0, c0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _box_window(box: Sequence[int]) -> Window:
    x0, y0, x1, y1 = (int(v) for v in box)
    return Window(y0, x0, y1 - y0, x1 - x0)


@dataclass(frozen=True)
class TilePiece:
    """An instance found in one or more tiles, in scene pixels, its mask kept cropped to its box.

    ``instance`` has ``bbox`` / ``area_px`` in scene pixels and ``mask=None``; ``crop`` is the ``(y1-y0, x1-x0)``
    bool mask of its box; ``tiles`` the tiles it was found in.
    """

    instance: Instance
    crop: np.ndarray
    tiles: tuple[int, ...]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.instance.bbox

    def region(self, window: Window) -> np.ndarray:
        """This piece's pixels inside ``window`` (scene pixels) as a ``window``-sized bool array."""
        out = np.zeros((window.height, window.width), bool)
        part = _intersect(window, _box_window(self.bbox))
        if part is not None:
            src = part.relative_to(_box_window(self.bbox))
            dst = part.relative_to(window)
            out[dst.slices] = self.crop[src.slices]
        return out


def piece_from_instance(instance: Instance, tile: int, window: Window) -> TilePiece | None:
    """An instance a segmenter returned for the tile ``window`` (mask of the tile's size, or none: its box is taken
    as its mask) as a :class:`TilePiece` in scene pixels; ``None`` when it has no pixels."""
    if instance.mask is not None:
        mask = np.asarray(instance.mask, bool)
        if mask.shape != (window.height, window.width):
            raise OptionError(
                f"the segmenter returned a {mask.shape} mask for a {window.height}x{window.width} tile picture"
            )
        box = mask_bbox(mask)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        crop = mask[y0:y1, x0:x1].copy()
    else:
        x0, y0, x1, y1 = (int(v) for v in instance.bbox)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(window.width, x1), min(window.height, y1)
        if x1 <= x0 or y1 <= y0:
            return None
        crop = np.ones((y1 - y0, x1 - x0), bool)
    bbox = (x0 + window.col_off, y0 + window.row_off, x1 + window.col_off, y1 + window.row_off)
    inst = dataclasses.replace(
        instance,
        bbox=bbox,
        area_px=int(np.count_nonzero(crop)),
        mask=None,
        attributes={**instance.attributes, "tiles": [tile + 1]},
    )
    return TilePiece(inst, crop, (tile,))


def _overlap_iou(a: TilePiece, b: TilePiece, overlap: Window) -> float:
    """IoU of two pieces counted inside ``overlap`` only (the part of the scene both their tiles saw)."""
    hull = Window(
        min(a.bbox[1], b.bbox[1]),
        min(a.bbox[0], b.bbox[0]),
        max(a.bbox[3], b.bbox[3]) - min(a.bbox[1], b.bbox[1]),
        max(a.bbox[2], b.bbox[2]) - min(a.bbox[0], b.bbox[0]),
    )
    region = _intersect(overlap, hull)
    if region is None:
        return 0.0
    ra, rb = a.region(region), b.region(region)
    union = int(np.count_nonzero(ra | rb))
    return int(np.count_nonzero(ra & rb)) / union if union else 0.0


def merge_across_tiles(
    pieces: Sequence[TilePiece], windows: Sequence[Window], iou: float = 0.5
) -> tuple[list[TilePiece], list[dict[str, Any]]]:
    """Merge the pieces of objects that cross tile borders.

    Two pieces found in different tiles are the same object when both boxes reach into the two tiles' overlap and
    their IoU computed *inside that overlap* is ``>= iou`` (outside it each tile saw only its own side, so a whole-box
    IoU would punish exactly the objects that were cut). Merging is transitive (union-find). Labels may differ
    between tiles (the model names what it sees); a merged piece takes the label and attributes of its best member
    (highest score, then area), the highest score, the union mask, and ``attributes["tiles"]`` (the tile numbers,
    1-based as in the plan's steps, sorted) and ``attributes["merged"]`` (pieces merged). Pieces of the same tile
    are left to :func:`rscore.instances.merge_instances_iou`.

    ``windows`` are the tiles (``TilePiece.tiles`` index them, 0-based). Returns ``(pieces, groups)``: the merged
    pieces, best first, and one record per merge (``label``, ``tiles`` 1-based, ``pieces``, ``bbox``, ``iou``: the
    smallest IoU that joined the group).
    """
    if not 0.0 < iou <= 1.0:
        raise OptionError(f"merge iou must be in (0, 1], got {iou}")
    items = list(pieces)
    if len(items) < 2:
        return items, []
    links: dict[tuple[int, int], float] = {}  # pair -> the overlap IoU that joined it

    def link(a: int, b: int) -> bool:
        pa, pb = items[a], items[b]
        best = 0.0
        for ta in pa.tiles:
            for tb in pb.tiles:
                if ta == tb:
                    continue
                shared = _intersect(windows[ta], windows[tb])
                if shared is None:
                    continue
                # both boxes must reach into the shared strip; then measure IoU there
                if _intersect(shared, _box_window(pa.bbox)) is None or _intersect(shared, _box_window(pb.bbox)) is None:
                    continue
                best = max(best, _overlap_iou(pa, pb, shared))
        if best >= iou:
            links[(a, b)] = best
        return best >= iou

    groups = cluster_boxes([p.bbox for p in items], link)
    out: list[TilePiece] = []
    records: list[dict[str, Any]] = []
    for members in groups:
        if len(members) == 1:
            out.append(items[members[0]])
            continue
        group = sorted((items[k] for k in members), key=lambda p: (-p.instance.score, -p.instance.area_px))
        merged = _union(group)
        out.append(merged)
        records.append(
            {
                "label": merged.instance.label,
                "tiles": [t + 1 for t in merged.tiles],
                "pieces": len(group),
                "bbox": list(merged.bbox),
                "iou": round(min(v for (a, _), v in links.items() if a in members), 4),
            }
        )
    out.sort(key=lambda p: (-p.instance.score, -p.instance.area_px))
    return out, records


def _union(group: Sequence[TilePiece]) -> TilePiece:
    """One piece from several (best first): union mask, best member's label and attributes, highest score."""
    best = group[0]
    hull = Window(
        min(p.bbox[1] for p in group),
        min(p.bbox[0] for p in group),
        max(p.bbox[3] for p in group) - min(p.bbox[1] for p in group),
        max(p.bbox[2] for p in group) - min(p.bbox[0] for p in group),
    )
    canvas = np.zeros((hull.height, hull.width), bool)
    for p in group:
        canvas |= p.region(hull)
    x0, y0, x1, y1 = mask_bbox(canvas) or (0, 0, hull.width, hull.height)
    crop = canvas[y0:y1, x0:x1]
    tiles = tuple(sorted({t for p in group for t in p.tiles}))
    merged_count = sum(int(p.instance.attributes.get("merged", 1)) for p in group)
    area = int(np.count_nonzero(crop))
    area_real = None
    if best.instance.area_real is not None and best.instance.area_px > 0:
        area_real = best.instance.area_real / best.instance.area_px * area
    inst = dataclasses.replace(
        best.instance,
        score=max(p.instance.score for p in group),
        bbox=(x0 + hull.col_off, y0 + hull.row_off, x1 + hull.col_off, y1 + hull.row_off),
        area_px=area,
        area_real=area_real,
        attributes={**best.instance.attributes, "tiles": [t + 1 for t in tiles], "merged": merged_count},
    )
    return TilePiece(inst, crop, tiles)


def stitch_pieces(
    scene: Scene, pieces: Sequence[TilePiece], max_mask_bytes: int, store_tile: int
) -> tuple[list[Instance], np.ndarray | TiledArray, tuple[str, ...]]:
    """Instances in scene pixels (full-size masks for the best ones where the scene and the budget allow) and the
    union mask (in memory, or stitched to tiles on disk for scenes over the in-memory limit)."""
    height, width = scene.shape
    real = None
    if scene.pixel_size is not None and scene.unit:
        real = abs(float(scene.pixel_size[0]) * float(scene.pixel_size[1]))
    in_memory = height * width <= in_memory_pixel_limit()
    n_masks = min(len(pieces), max_mask_bytes // max(1, height * width)) if in_memory else 0
    warnings: tuple[str, ...] = ()
    if not in_memory and pieces:
        warnings = (
            f"instance masks are not kept for a {width}x{height} scene (over RSCORE_IN_MEMORY_PIXELS); instances "
            "carry box, area and score, the union mask is complete",
        )
    elif n_masks < len(pieces):
        log.info("kept full-size masks for the best %d of %d instances (%d MiB budget)", n_masks, len(pieces),
                 max_mask_bytes >> 20)
    instances: list[Instance] = []
    for rank, p in enumerate(pieces):
        inst = p.instance
        full = None
        if rank < n_masks:
            full = np.zeros((height, width), bool)
            full[_box_window(p.bbox).slices] = p.crop
        area_real, area_unit = inst.area_real, inst.area_unit
        if area_real is None and real is not None:
            area_real, area_unit = inst.area_px * real, f"{scene.unit}2"
        instances.append(dataclasses.replace(inst, mask=full, area_real=area_real, area_unit=area_unit))
    sink = make_sink(height, width, bool, store_tile)
    if isinstance(sink, TiledArray):
        boxes = np.array([p.bbox for p in pieces], dtype=np.int64).reshape(-1, 4)
        for win in iter_windows(height, width, store_tile):
            hit = (
                (boxes[:, 0] < win.col_off + win.width) & (boxes[:, 2] > win.col_off)
                & (boxes[:, 1] < win.row_off + win.height) & (boxes[:, 3] > win.row_off)
            )
            if not hit.any():
                continue
            block = np.zeros((win.height, win.width), bool)
            for i in np.flatnonzero(hit):
                block |= pieces[i].region(win)
            sink.write(win, block)
        return sort_instances(instances), sink, warnings
    union = sink.finish()
    for p in pieces:
        union[_box_window(p.bbox).slices] |= p.crop
    return sort_instances(instances), union, warnings
