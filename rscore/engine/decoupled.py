"""Large scenes on the decoupled path: reason tile by tile with scene-level context, segment per tile, merge across
tile borders.

A vision-language reasoner sees one picture of at most ``max_side`` px (1024 by default). Handed a 10k x 10k GeoTIFF
or a 6k photo whole, it sees it shrunk 5-10x and small objects vanish. :func:`segment_tiled` (called by
:func:`rscore.engine.segment` when the scene is larger than ``reason_tile``) instead::

    whole scene --downscaled to one picture--> reasoner.plan(overview)  --> one line of context (labels, where)
    for each tile (reason_tile px, overlapping by reason_overlap px), row by row:
        tile sub-scene (+ ReasoningView: window, tile k of n, overview line) --> reasoner.plan --> targets (tile px)
        targets --segmenter.segment(tile picture)--> instances (one embedding per tile), same-tile duplicates merged
        (merge_instances_iou), masks kept cropped to their boxes, in scene pixels
    pieces from different tiles whose boxes reach into the two tiles' overlap are merged when their IoU *inside that
    overlap* is >= reason_merge_iou (transitively: an object over three tiles becomes one instance)
    --> instances (union mask, max score, attributes["tiles"]), the union mask, and one Plan

**Context without a new interface.** Each tile reaches ``reasoner.plan(scene, request, templates)`` as an ordinary
:class:`~rscore.types.Scene` (its pixels read once, window by window from a lazy raster) whose
``metadata["reasoning_view"]`` is a :class:`~rscore.reasoners.prompting.ReasoningView`; the built-in reasoners
describe their scene with :func:`~rscore.reasoners.prompting.describe_scene`, which turns it into "the picture shows
only the part x 2048..4096, y 0..2048 of a 10000x10000 raster (tile 2 of 25) ... Overview of the whole scene: ...".
Third-party reasoners keep working unchanged (they see a smaller scene); those that call ``describe_scene`` get the
context too.

**Pictures.** Scenes whose bands are 8-bit give each tile its own pixels (all bands); scenes whose display bands read
back as 8-bit (a plugin's windowed CT band) give each tile those bands as they are. Other scenes (16-bit, float
rasters) give each tile its display bands stretched to 8 bits with *one* 2-98 % stretch measured on the downscaled
whole scene, so every tile is shown with the same contrast (a per-tile stretch would turn an empty tile's noise into
full-range texture); the original values stay reachable through ``view.scene.read(view.window)``.

**Memory.** Instance masks are kept cropped to their boxes while tiles are processed and merged. At the end, scenes
within ``RSCORE_IN_MEMORY_PIXELS`` get the union mask in memory and full-size masks for the best instances within
the engine's mask budget (``rscore.engine.MAX_INSTANCE_MASK_BYTES``; the others keep box, area and score); larger
scenes get the union mask stitched to compressed tiles on disk (:class:`rscore.tiling.TiledArray`) and instances
without masks (``Instance`` masks are full-scene sized by contract, which such scenes cannot afford).

Options (engine options, validated by :func:`normalise_options`): ``reason_tiles`` ``auto`` | ``on`` | ``off``,
``reason_tile`` (px, 0 = twice the reasoner's picture side), ``reason_overlap`` (px), ``reason_merge_iou``,
``reason_overview`` (bool), ``reason_concurrency`` (``auto`` | int >= 1). See :class:`TilingOptions`.

**Concurrency.** With ``reason_concurrency`` > 1 up to that many tiles' ``reasoner.plan`` calls run at once on worker
threads (an HTTP endpoint such as vLLM or a hosted API serves them in parallel); everything else stays on the calling
thread and deterministic: tile pictures are read and segmented in tile order, plan steps, raw outputs and instances
are assembled in tile order (the same result as one at a time), ``progress`` is called in order of completion, and at
most ``reason_concurrency`` tile pictures are held besides the one being segmented. ``auto`` takes the reasoner's
``max_concurrency`` attribute when it declares one (a third-party reasoner may, to say how many ``plan`` calls it
serves at once, and is then never given more), else 1: every built-in reasoner stays sequential unless the user asks.
The local ``transformers`` reasoner (one model on one device) always runs one tile at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.instances import cluster_boxes, mask_bbox, merge_instances_iou, sort_instances
from rscore.options import convert, parse_bool
from rscore.reasoners.prompting import DEFAULT_MAX_SIDE, ReasoningView
from rscore.tiling import TiledArray, in_memory_pixel_limit, iter_windows, make_sink
from rscore.types import ArraySource, Instance, Plan, ProgressCallback, Request, Scene, Step, Target, Window

if TYPE_CHECKING:
    from rscore.sdk import Template

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS",
    "TilingOptions",
    "TilePiece",
    "TiledRun",
    "normalise_options",
    "tiling_options",
    "picture_side",
    "should_tile",
    "tile_windows",
    "scene_tile_windows",
    "stacked_slice_rows",
    "piece_from_instance",
    "merge_across_tiles",
    "reason_concurrency",
    "segment_tiled",
]

DEFAULTS: Mapping[str, Any] = {
    "reason_tiles": "auto",
    "reason_tile": 0,
    "reason_overlap": 128,
    "reason_merge_iou": 0.5,
    "reason_overview": True,
    "reason_concurrency": "auto",
}
MODES = ("auto", "on", "off")
SEQUENTIAL_REASONERS = ("transformers",)  # local models: one model on one device, one tile at a time
MIN_TILE = 64
MAX_LISTED_STEPS = 20  # merge groups listed one step each
MAX_REASON_CHARS = 600
OVERVIEW_TARGETS = 5  # targets named in the overview line
STRETCH = (2.0, 98.0)  # percentiles, as rscore.io.images.scene_rgb8


# -------------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class TilingOptions:
    """How a large scene is reasoned in tiles.

    - ``mode``: ``auto`` tiles scenes whose longer side exceeds ``tile``; ``on`` always goes through the tiled path
      (a scene smaller than one tile is one tile, no overview); ``off`` never (the whole scene, shrunk, as before).
    - ``tile``: tile side in scene pixels; 0 = twice the reasoner's picture side (``picture_side``, 1024 px by
      default: tiles of 2048 px, each shown to the model at half resolution instead of the whole scene at 1/10).
    - ``overlap``: least overlap between neighbouring tiles, px (tiles are spread evenly, so it can be more); an
      object that a tile border cuts is seen whole by the tiles' shared strip when it is narrower than this.
    - ``merge_iou``: pieces from two tiles are one object when their IoU inside the tiles' overlap is at least this.
    - ``overview``: a first pass on the whole scene downscaled to one picture, whose answer (labels, where) goes to
      every tile's prompt as one line of context. One request more; off saves it.
    - ``concurrency``: how many tiles' ``reasoner.plan`` calls may run at once (``auto``: the reasoner's
      ``max_concurrency`` when it declares one, else 1); see :func:`reason_concurrency`.
    """

    mode: str = "auto"
    tile: int = 0
    overlap: int = 128
    merge_iou: float = 0.5
    overview: bool = True
    concurrency: int | str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OptionError(f"option reason_tiles must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.tile != 0 and self.tile < MIN_TILE:
            raise OptionError(f"option reason_tile must be 0 (auto) or at least {MIN_TILE} px, got {self.tile}")
        if self.overlap < 0:
            raise OptionError(f"option reason_overlap must be at least 0 px, got {self.overlap}")
        if self.tile and self.overlap * 2 >= self.tile:
            raise OptionError(
                f"option reason_overlap ({self.overlap} px) must be less than half of reason_tile ({self.tile} px)"
            )
        if not 0.0 < self.merge_iou <= 1.0:
            raise OptionError(f"option reason_merge_iou must be in (0, 1], got {self.merge_iou}")
        c = self.concurrency
        if c != "auto" and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise OptionError(f"option reason_concurrency must be auto or a whole number >= 1, got {c!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TilingOptions:
        """From engine options (``reason_tiles``, ``reason_tile``, ``reason_overlap``, ``reason_merge_iou``,
        ``reason_overview``, ``reason_concurrency``), converted and checked; missing ones take :data:`DEFAULTS`."""
        o = {k: (options.get(k) if options.get(k) is not None else v) for k, v in DEFAULTS.items()}
        mode = o["reason_tiles"]
        if isinstance(mode, bool):
            mode = "on" if mode else "off"
        mode = str(mode).strip().lower()
        tile = o["reason_tile"]
        if isinstance(tile, str) and tile.strip().lower() == "auto":
            tile = 0
        return cls(
            mode=mode,
            tile=_whole("reason_tile", tile),
            overlap=_whole("reason_overlap", o["reason_overlap"]),
            merge_iou=convert(o["reason_merge_iou"], float, "reason_merge_iou"),
            overview=parse_bool(o["reason_overview"], "reason_overview"),
            concurrency=_concurrency(o["reason_concurrency"]),
        )

    def as_options(self) -> dict[str, Any]:
        return {
            "reason_tiles": self.mode,
            "reason_tile": self.tile,
            "reason_overlap": self.overlap,
            "reason_merge_iou": self.merge_iou,
            "reason_overview": self.overview,
            "reason_concurrency": self.concurrency,
        }


def _whole(name: str, value: Any) -> int:
    return convert(value, int, name)


def _concurrency(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _whole("reason_concurrency", value)
    except OptionError:
        raise OptionError(f"option reason_concurrency must be auto or a whole number >= 1, got {value!r}") from None


def normalise_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check and convert the tiling options in an engine options dict in place (``rscore.engine._check_options``)."""
    opts.update(TilingOptions.from_options(opts).as_options())
    return opts


def tiling_options(request: Request) -> TilingOptions:
    return TilingOptions.from_options(request.options)


def picture_side(reasoner: Any, request: Request) -> int:
    """The longest side (px) of the picture ``reasoner`` sends: its ``picture_side(request)`` when it has one (the
    built-in VLM reasoners do), else :data:`~rscore.reasoners.prompting.DEFAULT_MAX_SIDE`."""
    fn = getattr(reasoner, "picture_side", None)
    if callable(fn):
        try:
            side = int(fn(request))
            if side > 0:
                return side
        except (TypeError, ValueError):
            log.debug("reasoner %r: picture_side() gave no usable size", reasoner, exc_info=True)
    return DEFAULT_MAX_SIDE


def _tile_side(options: TilingOptions, reasoner: Any, request: Request) -> int:
    return options.tile or 2 * picture_side(reasoner, request)


def stacked_slice_rows(scene: Scene) -> int | None:
    """Rows per slice when ``scene`` stacks several slices along its rows (a DICOM series: ``metadata["layout"] ==
    "stacked-rows"`` with ``metadata["slice_rows"]``), else ``None``."""
    rows = scene.metadata.get("slice_rows") if scene.metadata.get("layout") == "stacked-rows" else None
    try:
        rows = int(rows) if rows else 0
    except (TypeError, ValueError):
        return None
    return rows if 0 < rows < scene.height and scene.height % rows == 0 else None


def should_tile(scene: Scene, reasoner: Any, request: Request) -> bool:
    """Whether :func:`rscore.engine.segment` takes the tiled path: never for the ``analytic`` reasoner (its programs
    tile themselves) or one that says ``whole_scene = True``; with ``reason_tiles=auto`` when the scene's longer side
    exceeds the tile side, or when it stacks several slices (each slice is looked at on its own)."""
    o = tiling_options(request)
    if o.mode == "off" or getattr(reasoner, "name", "") == "analytic" or getattr(reasoner, "whole_scene", False):
        return False
    if o.mode == "on" or stacked_slice_rows(scene):
        return True
    return max(scene.height, scene.width) > _tile_side(o, reasoner, request)


def reason_concurrency(reasoner: Any, options: TilingOptions, tiles: int | None = None) -> tuple[int, str]:
    """How many tiles' ``reasoner.plan`` calls run at once, and a note when a request for more was capped ("" else).

    ``reason_concurrency=auto`` takes the reasoner's ``max_concurrency`` attribute when it declares a whole number
    >= 1, else 1 (no built-in reasoner declares one: an HTTP reasoner such as ``openai`` runs tiles concurrently only
    when the user sets ``reason_concurrency``). A declared ``max_concurrency`` also caps what the user asks for; the
    local ``transformers`` reasoner is always capped at 1; and there are never more calls at once than ``tiles``."""
    declared = getattr(reasoner, "max_concurrency", None)
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        declared = None
    asked = options.concurrency
    wanted = (declared or 1) if asked == "auto" else int(asked)
    name = str(getattr(reasoner, "name", "") or "")
    note = ""
    if wanted > 1 and name in SEQUENTIAL_REASONERS:
        note = (
            f"reason_concurrency={asked} was capped at 1: the local {name} reasoner runs one model on one device, so "
            "its tiles are reasoned one at a time"
        )
        wanted = 1
    elif declared is not None and wanted > declared:
        note = f"reason_concurrency={asked} was capped at {declared}: the {name or 'reasoner'} reasoner declares " \
               f"max_concurrency={declared}"
        wanted = declared
    if tiles is not None:
        wanted = min(wanted, max(1, tiles))
    return wanted, note


# ----------------------------------------------------------------------------------------------------------- grid
def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Windows of ``tile`` x ``tile`` px (the scene's side where it is smaller) covering the scene row by row, spread
    evenly so that neighbours overlap by at least ``overlap`` px; every tile is full size, so the model sees every
    part of the scene at the same scale."""
    if tile < 1 or overlap < 0 or overlap * 2 >= tile:
        raise OptionError(f"tiles of {tile} px cannot overlap by {overlap} px (at most half a tile)")
    th, tw = min(tile, height), min(tile, width)
    return [Window(r, c, th, tw) for r in _starts(height, tile, overlap) for c in _starts(width, tile, overlap)]


def scene_tile_windows(scene: Scene, tile: int, overlap: int) -> list[Window]:
    """:func:`tile_windows` of the scene, slice by slice for stacked slices: a tile never shows the border between
    two slices (the model would see two anatomies as one picture), so tiles of different slices never overlap and
    their instances are never merged (they are per-slice findings)."""
    per = stacked_slice_rows(scene)
    if per is None:
        return tile_windows(scene.height, scene.width, tile, overlap)
    one = tile_windows(per, scene.width, tile, overlap)
    return [Window(s * per + w.row_off, w.col_off, w.height, w.width) for s in range(scene.height // per) for w in one]


def _intersect(a: Window, b: Window) -> Window | None:
    r0, c0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _box_window(box: Sequence[int]) -> Window:
    x0, y0, x1, y1 = (int(v) for v in box)
    return Window(y0, x0, y1 - y0, x1 - x0)


def _span(w: Window) -> str:
    return f"x {w.col_off}..{w.col_off + w.width}, y {w.row_off}..{w.row_off + w.height}"


# --------------------------------------------------------------------------------------------------------- pieces
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


# ------------------------------------------------------------------------------------------------------- pictures
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


# ---------------------------------------------------------------------------------------------------------- plans
def _offset_targets(
    targets: Sequence[Target], window: Window, scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[Target, ...]:
    """Targets in a sub-scene's pixels -> whole-scene pixels (scaled by ``scale`` first, for the overview)."""
    sx, sy = scale
    dx, dy = window.col_off, window.row_off
    out = []
    for t in targets:
        box = None
        if t.box is not None:
            x0, y0, x1, y1 = t.box
            box = (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
        points = tuple(((x + 0.5) * sx - 0.5 + dx, (y + 0.5) * sy - 0.5 + dy, f) for x, y, f in t.points)
        out.append(dataclasses.replace(t, box=box, points=points))
    return tuple(out)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _overview_line(plan: Plan, targets: Sequence[Target], factor: float) -> str:
    """One line for the tiles' prompts from the overview's plan (targets already in scene pixels)."""
    scale = f"shrunk {factor:.1f}x" if factor > 1 else "at full size"
    if plan.absent:
        why = f" ({_clip(plan.reason, 160)})" if plan.reason else ""
        return (
            f"a first look at the whole scene {scale} found nothing that answers the request{why}; small things may "
            "only show up at full resolution, so look carefully."
        )
    named = []
    for t in targets[:OVERVIEW_TARGETS]:
        if t.box is not None:
            x0, y0, x1, y1 = (round(v) for v in t.box)
            named.append(f"'{t.label}' around x {x0}..{x1}, y {y0}..{y1}")
        elif t.points:
            x, y, _ = t.points[0]
            named.append(f"'{t.label}' near x {round(x)}, y {round(y)}")
    more = f" and {len(targets) - OVERVIEW_TARGETS} more" if len(targets) > OVERVIEW_TARGETS else ""
    line = f"a first look at the whole scene {scale} found {len(targets)} candidate(s): {'; '.join(named)}{more}"
    model_steps = [s.text for s in plan.steps if s.operator is None]
    if model_steps:
        line += f". Its reasoning: {_clip(model_steps[-1], 200)}"
    return _clip(line + " (whole-scene pixel coordinates).", 700)


def _summed_match(plans: Sequence[Plan]) -> dict[str, Any]:
    """The first plan's match, with per-request counts, tokens and times summed over every plan."""
    match = dict(plans[0].match) if plans else {}
    for key in ("requests", "reason_time_s"):
        values = [p.match.get(key) for p in plans if isinstance(p.match.get(key), (int, float))]
        if values:
            match[key] = round(sum(values), 4) if key.endswith("_s") else int(sum(values))
    tokens = [p.match.get("tokens") for p in plans if isinstance(p.match.get("tokens"), Mapping)]
    if tokens:
        match["tokens"] = {k: sum(int(t.get(k) or 0) for t in tokens) for k in ("prompt_tokens", "completion_tokens")}
    match["repaired"] = any(bool(p.match.get("repaired")) for p in plans)
    return match


def _absent_reason(tile_plans: Sequence[tuple[int, Plan]], n: int, failed: int = 0) -> str:
    """Why nothing was found, from every reasoned tile's reason (identical reasons told once)."""
    reasons: dict[str, list[int]] = {}
    for k, p in tile_plans:
        reasons.setdefault(_clip(p.reason or "no reason given", 200), []).append(k + 1)
    if len(tile_plans) == 1 and not failed:
        return next(iter(reasons))
    head = f"none of the {len(tile_plans)} tiles shows it"
    if failed:
        head = f"none of the {len(tile_plans)} tile(s) reasoned shows it ({failed} of {n} could not be reasoned)"
    if len(reasons) == 1:
        return _clip(f"{head}: {next(iter(reasons))}", MAX_REASON_CHARS)
    parts = [
        f"tile {ks[0]}: {r}" if len(ks) == 1 else f"tiles {', '.join(map(str, ks))}: {r}" for r, ks in reasons.items()
    ]
    return _clip(f"{head} - " + "; ".join(parts), MAX_REASON_CHARS)


# ------------------------------------------------------------------------------------------------------------ run
class _Inline:
    """``reason_concurrency=1``: each plan call runs at once on the calling thread, as it always did (local models
    may keep thread-local state), behind the executor's ``submit``/``shutdown``."""

    def submit(self, fn: Callable[..., Plan], *args: Any) -> Future[Plan]:
        fut: Future[Plan] = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed back through the future, as a thread pool does
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


@dataclass(frozen=True)
class TiledRun:
    """What :func:`segment_tiled` hands back to the engine."""

    plan: Plan
    instances: tuple[Instance, ...]
    mask: np.ndarray | TiledArray
    segmenter_name: str | None
    timings: Mapping[str, float]
    warnings: tuple[str, ...] = ()


def segment_tiled(
    scene: Scene,
    request: Request,
    templates: Sequence[Template],
    reasoner: Any,
    *,
    segmenter: Callable[[], tuple[str, Any]],
    progress: ProgressCallback | None = None,
    max_mask_bytes: int = 256 << 20,
    store_tile: int = 1024,
) -> TiledRun:
    """Reason ``scene`` tile by tile, segment each tile's targets, merge across borders (see the module docstring).

    ``segmenter()`` returns ``(name, segmenter)``; it is called once, when the first tile has targets.
    ``progress(done, total)`` counts the overview pass and every tile (a tile is done once reasoned and, when it has
    targets, segmented), always from the calling thread. ``reasoner.plan`` runs for up to ``reason_concurrency``
    tiles at once (:func:`reason_concurrency`); when two calls fail before any succeeds (the overview counts) the
    error is raised and tiles not yet sent are not. ``max_mask_bytes`` bounds the full-size instance masks kept;
    ``store_tile`` is the tile size of an on-disk union mask.
    """
    from rscore.io.images import scene_rgb8
    from rscore.segmenters.prompts import split_presegmented

    opts = tiling_options(request)
    side = picture_side(reasoner, request)
    tile = opts.tile or 2 * side
    overlap = min(opts.overlap, (tile - 1) // 2)
    height, width = scene.shape
    windows = scene_tile_windows(scene, tile, overlap)
    n = len(windows)
    rows = len({w.row_off for w in windows})
    grid = [rows, n // rows]
    # a shrunk stack of slices is a sliver of many pictures: no overview for stacked volumes
    do_overview = opts.overview and n > 1 and stacked_slice_rows(scene) is None
    total = n + (1 if do_overview else 0)
    done = 0
    t_reason = t_segment = 0.0
    concurrency, concurrency_note = reason_concurrency(reasoner, opts, n)
    log.info("reasoning a %dx%d scene in %d tile(s) of %d px (overlap >= %d px), %d at a time", width, height, n,
             tile, overlap, concurrency)
    if concurrency_note:
        log.warning("%s", concurrency_note)

    t0 = time.perf_counter()
    display, picture = _prepare_display(scene, side, do_overview)
    overview_plan: Plan | None = None
    overview_failed = ""
    overview_line = ""
    overview_targets: tuple[Target, ...] = ()
    whole = Window(0, 0, height, width)
    common = {"scene_size": (width, height), "tiles": n, "band_roles": scene.band_roles,
              "pixel_size": scene.pixel_size, "scene": scene}
    if do_overview and picture is not None:
        view = ReasoningView(window=whole, tile=None, **common)
        ov_scene = _overview_scene(scene, picture, display, view)
        try:
            overview_plan = reasoner.plan(ov_scene, request, templates)
        except BackendUnavailable as exc:  # the overview is context only: the tiles go on without it
            log.info("the overview pass failed: %s", exc)
            overview_failed = str(exc)
        else:
            scale = (width / ov_scene.width, height / ov_scene.height)
            overview_targets = _offset_targets(overview_plan.targets, whole, scale)
            overview_line = _overview_line(overview_plan, overview_targets, max(scale))
        done += 1
        if progress:
            progress(done, total)
    t_reason += time.perf_counter() - t0

    plans_by_tile: dict[int, Plan] = {}
    failed: list[tuple[int, BackendUnavailable]] = []
    targets: list[Target] = []
    pieces: list[TilePiece] = []
    seg_name: str | None = None
    seg: Any = None
    same_tile_merged = 0
    segmented = 0
    # Tiles' plan calls run on up to `concurrency` workers (inline when 1); pictures are read, segmented and
    # assembled here, in tile order. `held`: the pictures of tiles sent and not yet done with (at most `concurrency`,
    # the one being segmented aside); `ready`: reasoned tiles waiting for their turn (their plan, or None when there
    # is nothing to segment: failed, absent, no targets - those are counted done as soon as they come back).
    held: dict[int, Scene] = {}
    sent: dict[Future[Plan], int] = {}
    ready: dict[int, Plan | None] = {}
    next_sent = next_done = 0
    pool: ThreadPoolExecutor | _Inline = (
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rscore-reason") if concurrency > 1
        else _Inline()
    )

    def send() -> None:
        nonlocal next_sent
        while next_sent < n and len(held) < concurrency:
            k, win = next_sent, windows[next_sent]
            view = ReasoningView(window=win, tile=k, overview=overview_line, **common)
            held[k] = _tile_scene(scene, win, display, view)
            sent[pool.submit(reasoner.plan, held[k], request, templates)] = k
            next_sent += 1

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    t_loop = time.perf_counter()
    t_segment_loop = 0.0
    try:
        while next_done < n:
            send()
            if next_done in ready:  # the next tile in order is reasoned: segment it here
                k, win = next_done, windows[next_done]
                plan, sub = ready.pop(k), held.pop(k, None)
                next_done += 1
                if plan is None or sub is None:
                    continue
                if concurrency > 1:
                    send()  # keep the workers busy while this tile is segmented
                t0 = time.perf_counter()
                targets += _offset_targets(plan.targets, win)
                found, rest = split_presegmented(plan.targets, sub.shape)  # masks a reasoner made itself (LISA)
                if rest:
                    if seg is None:
                        seg_name, seg = segmenter()
                    found += seg.segment(scene_rgb8(sub), rest)
                del sub
                segmented += len(found)
                if len(found) > 1:
                    merged = merge_instances_iou(found, opts.merge_iou, same_label=True)
                    same_tile_merged += len(found) - len(merged)
                    found = merged
                pieces += [p for p in (piece_from_instance(i, k, win) for i in found) if p is not None]
                t_segment_loop += time.perf_counter() - t0
                tick()
                continue
            finished, _ = wait(list(sent), return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=sent.__getitem__):  # several at once: in tile order
                k = sent.pop(fut)
                try:
                    plan = fut.result()
                except BackendUnavailable as exc:  # one unusable answer must not lose the whole scene; all of them do
                    log.info("tile %d of %d (%s) could not be reasoned: %s", k + 1, n, _span(windows[k]), exc)
                    failed.append((k, exc))
                    held.pop(k, None)
                    ready[k] = None
                    if not plans_by_tile and len(failed) + bool(overview_failed) >= 2:
                        raise  # nothing has worked yet: a dead endpoint or a model that cannot answer, not one bad tile
                    tick()
                    continue
                plans_by_tile[k] = plan
                if plan.absent or not plan.targets:
                    held.pop(k, None)
                    ready[k] = None
                    tick()
                else:
                    ready[k] = plan
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # after a failure: requests not yet sent are not sent
        held.clear()
    t_segment += t_segment_loop
    t_reason += time.perf_counter() - t_loop - t_segment_loop
    tile_plans = sorted(plans_by_tile.items())
    failed.sort(key=lambda f: f[0])

    if failed and not tile_plans:
        raise failed[0][1]
    t0 = time.perf_counter()
    merged_pieces, groups = merge_across_tiles(pieces, windows, opts.merge_iou)
    max_instances = int(request.option("max_instances", 1000))
    if len(merged_pieces) > max_instances:
        log.info("kept the best %d of %d instances (max_instances)", max_instances, len(merged_pieces))
        merged_pieces = merged_pieces[:max_instances]
    instances, mask, warnings = _finish(scene, merged_pieces, max_mask_bytes, store_tile)
    t_segment += time.perf_counter() - t0
    if concurrency_note:
        warnings += (concurrency_note,)
    if failed:
        warnings += (
            f"{len(failed)} of {n} tile(s) could not be reasoned and are not covered: "
            + "; ".join(f"tile {k + 1} ({_span(windows[k])})" for k, _ in failed[:10])
            + (" ..." if len(failed) > 10 else ""),
        )

    plan = _tiled_plan(
        scene, tile_plans, windows, overview_plan, overview_line, tuple(targets), groups,
        tile=tile, overlap=overlap, grid=grid, opts=opts, seg_name=seg_name, failed=failed,
        overview_failed=overview_failed, concurrency=concurrency, concurrency_note=concurrency_note,
        counts={"segmented": segmented, "same_tile_merged": same_tile_merged, "pieces": len(pieces),
                "instances": len(instances)},
    )
    return TiledRun(plan, tuple(instances), mask, seg_name, {"reason_s": t_reason, "segment_s": t_segment}, warnings)


def _finish(
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


def _tiled_plan(
    scene: Scene,
    tile_plans: Sequence[tuple[int, Plan]],
    windows: Sequence[Window],
    overview_plan: Plan | None,
    overview_line: str,
    targets: tuple[Target, ...],
    groups: Sequence[Mapping[str, Any]],
    *,
    tile: int,
    overlap: int,
    grid: list[int],
    opts: TilingOptions,
    seg_name: str | None,
    counts: Mapping[str, int],
    failed: Sequence[tuple[int, Exception]] = (),
    overview_failed: str = "",
    concurrency: int = 1,
    concurrency_note: str = "",
) -> Plan:
    height, width = scene.shape
    n = len(windows)
    plans = [p for _, p in tile_plans]
    all_plans = ([overview_plan] if overview_plan is not None else []) + plans
    reasoner_name = next((p.reasoner for p in all_plans if p.reasoner), "")
    with_targets = [k for k, p in tile_plans if not p.absent and p.targets]
    steps: list[Step] = [
        Step(
            f"the {width}x{height} scene is larger than one reasoning picture: it was reasoned in {n} tile(s) of "
            f"{tile} px ({grid[0]} x {grid[1]}, overlapping by at least {overlap} px)"
            + (", after a first look at the whole scene downscaled" if overview_plan is not None else ""),
            operator="tiles",
            params={"tile_px": tile, "overlap_px": overlap, "grid": list(grid), "overview": overview_plan is not None},
        )
    ]
    if concurrency_note:
        steps.append(Step(concurrency_note, operator="tiles", params={"reason_concurrency": concurrency}))
    seen_shared: set[str] = set()

    def add(prefix: str, plan: Plan) -> None:
        for s in plan.steps:
            if s.operator is not None and s.operator == plan.reasoner:  # e.g. which template's knowledge was given
                if s.text in seen_shared:
                    continue
                seen_shared.add(s.text)
                steps.append(s)
                continue
            steps.append(dataclasses.replace(s, text=f"{prefix}: {s.text}"))
        if plan.absent:
            steps.append(Step(f"{prefix}: absent - {plan.reason or 'no reason given'}", operator="tiles"))
        else:
            steps.append(Step(f"{prefix}: {len(plan.targets)} target(s)", operator="tiles"))

    if overview_plan is not None:
        add("overview", overview_plan)
        steps.append(Step(f"context given to every tile: {overview_line}", operator="tiles"))
    elif overview_failed:
        steps.append(Step(f"overview: failed ({_clip(overview_failed, 300)}); the tiles were reasoned without it",
                          operator="tiles"))
    for k, plan in tile_plans:
        add(f"tile {k + 1} ({_span(windows[k])})", plan)
    for k, exc in failed:
        steps.append(Step(f"tile {k + 1} ({_span(windows[k])}): could not be reasoned - {_clip(str(exc), 300)}",
                          operator="tiles"))
    steps.append(
        Step(
            f"{len(with_targets)} of {n} tile(s) had targets"
            + (f" (tiles {', '.join(str(k + 1) for k in with_targets)})" if with_targets else "")
            + f": {len(targets)} target(s) mapped to scene pixels",
            operator="tiles",
            stats={"tiles": n, "tiles_with_targets": [k + 1 for k in with_targets], "targets": len(targets)},
        )
    )
    if with_targets:
        steps.append(
            Step(
                f"segmented tile by tile with {seg_name or 'the reasoner’s own masks'}: {counts['segmented']} mask(s); "
                f"{counts['same_tile_merged']} same-tile duplicate(s) merged; {len(groups)} object(s) crossing tile "
                f"borders merged from {sum(g['pieces'] for g in groups)} piece(s) (IoU >= {opts.merge_iou:g} inside "
                f"the overlap); {counts['instances']} instance(s)",
                operator="tiles",
                stats=dict(counts, merged_groups=len(groups)),
            )
        )
        for g in groups[:MAX_LISTED_STEPS]:
            steps.append(
                Step(
                    f"merged across tiles {', '.join(str(t) for t in g['tiles'])}: '{g['label']}' at "
                    f"{tuple(g['bbox'])} from {g['pieces']} pieces (overlap IoU {g['iou']:.2f})",
                    operator="tiles",
                    stats=dict(g),
                )
            )
        if len(groups) > MAX_LISTED_STEPS:
            steps.append(Step(f"... and {len(groups) - MAX_LISTED_STEPS} more merged object(s)", operator="tiles"))

    raws = []
    if overview_plan is not None and overview_plan.raw is not None:
        raws.append(f"[overview]\n{overview_plan.raw}")
    raws += [f"[tile {k + 1}: {_span(windows[k])}]\n{p.raw}" for k, p in tile_plans if p.raw is not None]
    match = _summed_match(all_plans)
    match["image_original"] = [width, height]
    match["tiling"] = {
        "tiles": n,
        "tile_px": tile,
        "overlap_px": overlap,
        "grid": list(grid),
        "overview": overview_plan is not None,
        "tiles_with_targets": [k + 1 for k in with_targets],
        "merge_iou": opts.merge_iou,
        "merged_across_tiles": len(groups),
        "tiles_failed": [k + 1 for k, _ in failed],
        "concurrency": concurrency,
    }
    template = next((p.template for p in all_plans if p.template), None)
    absent = not with_targets
    return Plan(
        steps=tuple(steps),
        targets=() if absent else targets,
        absent=absent,
        reason=_absent_reason(tile_plans, n, len(failed)) if absent else "",
        template=template,
        reasoner=reasoner_name,
        match=match,
        raw="\n\n".join(raws) if raws else None,
    )
