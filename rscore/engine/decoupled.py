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

**Choosing tiles.** A reasoner with a ``choose_tiles(windows, shape, overview_plan, overview_targets)`` method is asked
after the overview which tiles to reason (``None``: all) and why the others are left (the agent, whose loops cost many
turns each: :mod:`rscore.reasoners.agent_tiles`); tiles left out are listed in the plan and the note is a caveat.

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

**Where the parts live.** This module holds the options, the tile grid and the loop; the pictures (display rule,
stretch, downsampled overview, tile sub-scenes) are :mod:`rscore.engine.display`, the cross-tile merge and the
union mask :mod:`rscore.engine.stitch`, the combined plan :mod:`rscore.engine.tile_plans`. The tiles are segmented
with the same segmenter lookup as untiled scenes (:func:`rscore.engine.backends.segmenter`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.engine.display import _overview_scene, _prepare_display, _tile_scene
from rscore.engine.stitch import TilePiece, merge_across_tiles, piece_from_instance, stitch_pieces
from rscore.engine.tile_plans import _offset_targets, _overview_line, _span, _tiled_plan
from rscore.engine.tiling_options import (  # noqa: F401 - moved there (#22), still importable from here
    DEFAULTS,
    MIN_TILE,
    MODES,
    TilingOptions,
    _concurrency,
    _tile_side,
    _whole,
    normalise_options,
    picture_side,
    should_tile,
    stacked_slice_rows,
    tiling_options,
)
from rscore.errors import BackendUnavailable, OptionError
from rscore.instances import merge_instances_iou
from rscore.progress import report
from rscore.reasoners.prompting import ReasoningView
from rscore.tiling import TiledArray
from rscore.types import Instance, Plan, ProgressCallback, Request, Scene, Target, Window

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

SEQUENTIAL_REASONERS = ("transformers",)  # local models: one model on one device, one tile at a time
MAX_LISTED_STEPS = 20  # merge groups listed one step each
MAX_REASON_CHARS = 600
OVERVIEW_TARGETS = 5  # targets named in the overview line


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
    targets, segmented), always from the calling thread (a callback taking ``unit`` counts tiles without the
    overview, or slices: :mod:`rscore.progress`). ``reasoner.plan`` runs for up to ``reason_concurrency`` tiles at
    once (:func:`reason_concurrency`); when two calls fail before any succeeds (the overview counts) the error is
    raised and tiles not yet sent are not. ``max_mask_bytes`` bounds the full-size instance masks kept;
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
    slices = height // per if (per := stacked_slice_rows(scene)) else 0

    def tell() -> None:
        """Unit-aware callbacks count tiles (the overview pass not among them) or, for stacked slices, the slices'
        worth of tiles done; the others ``(done, total)`` as always."""
        if progress is None:
            return
        tiles = done - (1 if do_overview else 0)
        if slices:
            report(progress, tiles * slices // n, slices, "slices", plain=(done, total))
        else:
            report(progress, max(0, tiles), n, "tiles", plain=(done, total))
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
        tell()
    t_reason += time.perf_counter() - t0
    # a reasoner may look closely only at the tiles its overview points at (the agent: bounded loops per scene)
    chooser = getattr(reasoner, "choose_tiles", None)
    chosen, skip_note = chooser(windows, (height, width), overview_plan, overview_targets) if callable(chooser) \
        else (None, "")
    skipped = frozenset(range(n)) - frozenset(chosen) if chosen is not None else frozenset()

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
            if k in skipped:
                ready[k], next_sent = None, next_sent + 1
                tick()
                continue
            view = ReasoningView(window=win, tile=k, overview=overview_line, **common)
            held[k] = _tile_scene(scene, win, display, view)
            sent[pool.submit(reasoner.plan, held[k], request, templates)] = k
            next_sent += 1

    def tick() -> None:
        nonlocal done
        done += 1
        tell()

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
    instances, mask, warnings = stitch_pieces(scene, merged_pieces, max_mask_bytes, store_tile)
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
        skipped=sorted(skipped), skip_note=skip_note,
        counts={"segmented": segmented, "same_tile_merged": same_tile_merged, "pieces": len(pieces),
                "instances": len(instances)},
    )
    return TiledRun(plan, tuple(instances), mask, seg_name, {"reason_s": t_reason, "segment_s": t_segment}, warnings)
