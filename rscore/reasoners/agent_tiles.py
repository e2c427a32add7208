"""The agent reasoner on scenes larger than its picture: an overview loop, then loops on the tiles it points at.

**Design.** The agent is one more reasoner behind the engine's tiled path (:func:`rscore.engine.decoupled.
segment_tiled`); nothing here re-implements tiling, stitching or merging::

    whole scene, downscaled to one picture --agent loop (picture tools only)--> selected masks (overview px)
        -> the engine scales them to scene pixels: the overview line every tile's prompt gets, and
        -> choose_tiles(): which tiles get a loop of their own (agent_tiles, agent_max_tiles)
    each chosen tile, at full resolution --agent loop--> selected masks as targets with tile-sized masks
        (Target.mask, as LISA's) -> pieces -> merged across tile borders by IoU inside the overlap
        (rscore.engine.stitch.merge_across_tiles) -> instances, union mask, one Plan (tile_plans._tiled_plan)

- ``agent_tiles=all``: every tile gets a loop; ``selected``: only the tiles the overview's masks reach (grown by one
  overview pixel), the most covered first, at most ``agent_max_tiles``; ``auto`` (default): ``all`` when the scene
  has at most ``agent_max_tiles`` tiles, else ``selected``. A scene whose tiles the budget cannot cover in ``all``
  mode is an :class:`~rscore.errors.OptionError` before any model turn; ``selected`` without an overview (turned off,
  or failed) is one before any tile's turn.
- Operator and template tools never measure a tile's *picture* (for 16-bit or float rasters it is the display band
  stretched to 8 bits): they run on the original values of the tile's window grown by the tools' halo
  (:func:`measure_scene`) and are cropped back to the tile; the overview (area-averaged, stretched) gets no such
  tools at all, only segment / examine / combine / answer.

**Why an overview that chooses tiles.** A loop per tile costs up to ``agent_max_turns`` model turns each, so "every
tile" grows with the scene: a 10000 x 10000 GeoTIFF in tiles of 2048 px (twice a 1024 px picture side, overlap
128 px) is 6 x 6 = 36 tiles, up to 37 x 12 = 444 turns. Choosing tiles from the overview bounds a call whatever the
scene's size: at most ``(1 + agent_max_tiles) x agent_max_turns`` turns = 17 x 12 = **204 model turns** with the
defaults (and as many times ``agent_max_total_tokens`` / ``agent_max_wall_s``); a target in two tiles answered in
3 turns per loop costs 1 + 2 loops = 9 turns. A scene of at most 16 tiles (up to ~7600 px square) is examined
tile by tile in full. Measured (``benchmarks/bench_agent.py --tiled``, a scripted model that segments what it sees
and selects it in 2 turns): 10000 x 10000 px with one disc on a tile corner, 36 tiles -> 5 loops, 10 turns (every
tile: 37 loops, 42 turns), the same instance either way.

**Known limit (stated in the result).** In ``selected`` mode only what the overview saw is looked at closely: a
target too small to show at the overview's scale is not searched for. The plan and the caveats name the tiles not
examined and how to examine them (``-O agent_tiles=all`` with a larger ``agent_max_tiles``, or a larger
``reason_tile``); an overview that reports no mask gives an absent result saying so, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import OptionError
from rscore.reasoners.agent_options import TILE_MODES  # defined beside AgentOptions (#22)
from rscore.reasoners.prompting import ReasoningView, reasoning_view
from rscore.types import ArraySource, Plan, Scene, Target, Window

if TYPE_CHECKING:
    from rscore.reasoners.agent import AgentOptions

__all__ = ["TILE_MODES", "tile_mode", "check_tile_budget", "choose_tiles", "measure_scene", "MAX_HALO"]

MAX_HALO = 256  # px of original values read around a tile for the operator tools


def tile_mode(options: AgentOptions, tiles: int) -> str:
    """``all`` or ``selected`` for a scene of ``tiles`` tiles (``auto`` resolved)."""
    if options.tiles != "auto":
        return options.tiles
    return "all" if tiles <= options.max_tiles else "selected"


def check_tile_budget(options: AgentOptions, view: ReasoningView) -> None:
    """Refuse, before any model turn, a tiled run the bounds cannot cover (see the module docstring)."""
    n = view.tiles
    if n <= 1:
        return
    mode = tile_mode(options, n)
    w, h = view.scene_size
    if mode == "all" and n > options.max_tiles:
        raise OptionError(
            f"agent: this {w}x{h} scene is {n} tiles and agent_tiles=all would run {n} agent loops (limit "
            f"agent_max_tiles={options.max_tiles}): raise agent_max_tiles, use agent_tiles=selected (the overview "
            "chooses the tiles), or a larger reason_tile"
        )


def _window_counts(mask: np.ndarray, shape: tuple[int, int], windows: Sequence[Window]) -> list[int]:
    """Pixels of an overview-sized ``mask`` inside each window of a scene of ``shape``."""
    import cv2

    mask = cv2.dilate(np.asarray(mask, np.uint8), np.ones((3, 3), np.uint8)) > 0  # reach one overview px further
    oh, ow = mask.shape
    height, width = shape
    out = []
    for w in windows:
        r0, r1 = w.row_off * oh // height, -(-(w.row_off + w.height) * oh // height)
        c0, c1 = w.col_off * ow // width, -(-(w.col_off + w.width) * ow // width)
        out.append(int(mask[r0:r1, c0:c1].sum()))
    return out


def _box_counts(box: Sequence[float], windows: Sequence[Window]) -> list[int]:
    x0, y0, x1, y1 = box
    return [int(max(0.0, min(x1, w.col_off + w.width) - max(x0, w.col_off))
                * max(0.0, min(y1, w.row_off + w.height) - max(y0, w.row_off))) for w in windows]  # fmt: skip


def choose_tiles(options: AgentOptions, windows: Sequence[Window], shape: tuple[int, int], overview: Plan | None,
                 targets: Sequence[Target]) -> tuple[list[int] | None, str]:  # fmt: skip
    """The tiles to run a loop on (``None``: every tile) and, when some are left out, a sentence saying which and
    how to examine them. ``targets`` are the overview's selection in scene pixels (masks still overview-sized)."""
    n = len(windows)
    if tile_mode(options, n) == "all":
        return None, ""
    if overview is None:  # no overview to choose from: turned off, or its error is in the plan
        raise OptionError(
            f"agent: this scene's {n} tiles are more than agent_max_tiles={options.max_tiles} and are chosen from the "
            "overview pass, which did not run (reason_overview=false; a stack of slices has none) or failed: pass "
            f"agent_tiles=all with agent_max_tiles>={n}, turn the overview on, or retry"
        )
    score = np.zeros(n, np.int64)
    for t in targets if not overview.absent else ():
        if t.mask is not None:
            score += np.asarray(_window_counts(t.mask, shape, windows))
        elif t.box is not None:
            score += np.asarray(_box_counts(t.box, windows))
    reached = [int(k) for k in np.argsort(-score, kind="stable") if score[k] > 0]
    chosen = sorted(reached[: options.max_tiles])
    left = n - len(chosen)
    if not left:
        return chosen, ""
    how = (f"-O agent_tiles=all -O agent_max_tiles={n} examines every tile ({n + 1} agent loops), or a larger "
           "reason_tile makes fewer tiles")  # fmt: skip
    if not reached:
        return [], (f"no tile was examined at full resolution: the agent's first look at the whole scene (shrunk) "
                    f"found nothing, and a target too small to show at that scale was not searched for; {how}")
    extra = (f"; the overview's masks reached {len(reached)} tiles, more than agent_max_tiles={options.max_tiles}, "
             "so the least covered were dropped") if len(reached) > len(chosen) else ""  # fmt: skip
    return chosen, (f"{left} of {n} tiles were not examined at full resolution (only the {len(chosen)} the agent's "
                    f"first look at the whole scene pointed at){extra}; a target too small to show in that first look "
                    f"may be missed there; {how}")  # fmt: skip


def measure_scene(scene: Scene, halo: int) -> tuple[Scene, tuple[slice, slice]] | None:
    """The scene the operator and template tools measure, and the slices that crop their output back to ``scene``.

    An ordinary scene is itself. A tile of a larger scene is the *original* scene's window (all bands, original
    values) grown by ``halo`` px where the scene allows; the overview is ``None`` (its pixels are averaged and
    stretched: nothing there may be measured)."""
    view = reasoning_view(scene)
    if view is None:
        return scene, (slice(None), slice(None))
    whole = view.scene
    if view.is_overview or not isinstance(whole, Scene):
        return None
    from rscore.engine.display import _shifted_geo

    w = view.window
    halo = max(0, min(int(halo), MAX_HALO))
    r0, c0 = max(0, w.row_off - halo), max(0, w.col_off - halo)
    r1, c1 = min(whole.height, w.row_off + w.height + halo), min(whole.width, w.col_off + w.width + halo)
    grown = Window(r0, c0, r1 - r0, c1 - c0)
    sub = Scene(
        source=ArraySource(np.ascontiguousarray(whole.read(grown)), whole.valid(grown)),
        kind=whole.kind, band_roles=whole.band_roles, path=whole.path, reader=whole.reader,
        pixel_size=whole.pixel_size, unit=whole.unit, geo=_shifted_geo(whole, grown), dicom=whole.dicom,
        video=whole.video, metadata=dict(whole.metadata or {}),
    )  # fmt: skip
    dr, dc = w.row_off - r0, w.col_off - c0
    return sub, (slice(dr, dr + w.height), slice(dc, dc + w.width))


def as_targets(instances: Sequence[Any]) -> tuple[Target, ...]:
    """The agent's selection on a tile or overview as targets carrying their masks (what the tiled path merges)."""
    return tuple(Target(i.label, box=tuple(float(v) for v in i.bbox), phrase=i.label,  # type: ignore[arg-type]
                        confidence=float(i.score), mask=i.mask) for i in instances if i.mask is not None)  # fmt: skip


def max_halo(tools: Mapping[str, Any]) -> int:
    """The largest halo among the plugin tools offered (operators and templates)."""
    return min(MAX_HALO, max((int(getattr(t, "halo", 0) or 0) for t in tools.values()), default=0))
