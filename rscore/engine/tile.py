"""One tile of a template's program: :func:`run_tile` runs the program on the tile's window (core plus halo) and
crops what it returns to the core (:class:`TileResult`), with the template's ``tile_summary`` of the tile (work for
the writers done while the tile's pixels are in memory, :class:`rscore.sdk.Template`). Below
:mod:`rscore.engine.parallel`, which maps it over tiles here or in worker processes, and
:mod:`rscore.engine.program`, which stitches the results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rscore.errors import InternalError
from rscore.sdk import Operator, OpContext, ProgramOutput, Template
from rscore.tiling import Tile
from rscore.types import Request, Scene, Step, Target

__all__ = ["TileResult", "run_tile"]


@dataclass
class TileResult:
    """One tile's outputs, cropped to its core (``None`` where the program gave none)."""

    index: int
    core: Any
    mask: np.ndarray | None
    score: np.ndarray | None
    classes: np.ndarray | None
    targets: list[Target] = field(default_factory=list)
    notes: list[Step] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    summary: Any = None  # what template.tile_summary returned for this tile (None: nothing, or no tile_summary)


def run_tile(scene: Scene, request: Request, template: Template, operators: Mapping[str, Operator], tile: Tile
             ) -> TileResult:
    """The template's program on one tile: the context reads the tile's window (core plus halo); outputs are
    cropped to the core, invalid pixels are out of the mask, NaN in the score and class 0; targets are shifted to
    scene pixels; ``summary`` is the template's ``tile_summary(ctx)``, if it has one. What
    :func:`rscore.engine.program.run_program` stitches, here or in a worker process (:mod:`rscore.engine.parallel`)."""
    assert template.program is not None
    ctx = OpContext(scene, request, operators, tile.read, params=request.options, core=tile.core)
    out = template.program(ctx)
    if not isinstance(out, ProgramOutput):
        raise InternalError(f"template '{template.qualified_name}' returned {type(out).__name__}, not ProgramOutput")
    crop = tile.crop
    valid = ctx.valid[crop]
    res = TileResult(tile.index, tile.core, None, None, None)
    if out.mask is not None:
        _check_shape(template, "mask", out.mask, ctx.shape)
        res.mask = np.asarray(out.mask, bool)[crop] & valid
    if out.score is not None:
        _check_shape(template, "score", out.score, ctx.shape)
        score = np.asarray(out.score, np.float32)[crop].copy()
        score[~valid] = np.nan
        res.score = score
    if out.classes is not None:
        _check_shape(template, "classes", out.classes, ctx.shape)
        classes = np.asarray(out.classes, np.uint8)[crop].copy()
        classes[~valid] = 0
        res.classes = classes
    res.targets = [_shift_target(t, tile.read.col_off, tile.read.row_off) for t in out.targets]
    res.notes = list(ctx.notes)
    res.caveats = list(dict.fromkeys(ctx.caveats))
    if template.tile_summary is not None:  # after the program: the bands it read are cached in ctx
        res.summary = template.tile_summary(ctx)
    return res


def _check_shape(template: Template, what: str, arr: np.ndarray, shape: tuple[int, int]) -> None:
    if np.shape(arr) != shape:
        raise InternalError(
            f"template '{template.qualified_name}' returned a {what} of shape {np.shape(arr)} for a view of {shape}"
        )


def _shift_target(t: Target, dx: int, dy: int) -> Target:
    if not dx and not dy:
        return t
    box = None if t.box is None else (t.box[0] + dx, t.box[1] + dy, t.box[2] + dx, t.box[3] + dy)
    points = tuple((x + dx, y + dy, lab) for x, y, lab in t.points)
    return Target(t.label, box, points, t.phrase, t.confidence)
