"""Execute, for an analytic plan: a template's program over the whole scene, tile by tile (halo =
``template.halo``), stitched seam-free. :func:`run_program` maps :func:`rscore.engine.tile.run_tile` over the tiles
(here or in worker processes, :mod:`rscore.engine.parallel`) and writes each into a :class:`TileStitcher`; the
landslide flow uses the same two pieces with tile batches computed as Prefect tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rscore.engine.parallel import map_tiles, resolve_workers
from rscore.progress import report
from rscore.sdk import Operator, Template
from rscore.tiling import ArraySink, TiledArray, iter_tiles, make_sink, tile_count
from rscore.types import ProgressCallback, Request, Scene, Step, Target, Window

__all__ = ["ProgramRun", "run_program", "TileStitcher", "merge_notes"]


@dataclass
class ProgramRun:
    """What running a template program over a whole scene produced."""

    mask: np.ndarray | TiledArray
    score: np.ndarray | TiledArray | None
    classes: np.ndarray | TiledArray | None
    steps: list[Step]
    targets: list[Target]
    tiles: int
    caveats: list[str]
    summaries: list[tuple[Window, Any]] = field(default_factory=list)  # (core, template.tile_summary's value)


def run_program(
    scene: Scene,
    request: Request,
    template: Template,
    operators: Mapping[str, Operator],
    *,
    tile_size: int = 1024,
    progress: ProgressCallback | None = None,
) -> ProgramRun:
    """Run ``template.program`` tile by tile (halo = ``template.halo``) and stitch the outputs seam-free.

    Invalid pixels (nodata, alpha) are never in the mask; their score is NaN and their class 0. Notes recorded by
    the program become steps; a note's numeric stats are averaged over tiles weighted by tile area. Tiles run in
    worker processes with option ``workers`` (:mod:`rscore.engine.parallel`; same outputs as one by one).
    """
    assert template.program is not None
    h, w = scene.shape
    total = tile_count(h, w, tile_size)
    workers = resolve_workers(request.options.get("workers"), pixels=h * w, tiles=total)
    stitch = TileStitcher(h, w, tile_size)
    targets: list[Target] = []
    tiles = iter_tiles(h, w, tile_size, template.halo)
    unit = _progress_unit(scene, tile_size) if progress else None
    for done, res in enumerate(map_tiles(scene, request, template, operators, tiles, workers), start=1):
        stitch.add(res)
        targets += res.targets
        if unit is not None:
            report(progress, *unit(done, total), plain=(done, total))
    mask, score, classes = stitch.finish()
    return ProgramRun(mask, score, classes, stitch.steps(), targets, total, stitch.caveats, stitch.summaries)


def _progress_unit(scene: Scene, tile_size: int) -> Callable[[int, int], tuple[int, int, str]]:
    """``(done, total, unit)`` of a run that has finished ``done`` of ``total`` tiles (tiles come row by row, in
    order): tiles, or the slices fully done for a stacked DICOM series."""
    from rscore.engine.decoupled import stacked_slice_rows

    per = stacked_slice_rows(scene)
    if per is None:
        return lambda done, total: (done, total, "tiles")
    h, w = scene.shape
    per_band = -(-w // tile_size)

    def slices(done: int, total: int) -> tuple[int, int, str]:
        rows = h if done >= total else min(h, (done // per_band) * tile_size)
        return rows // per, h // per, "slices"

    return slices


class TileStitcher:
    """The stitch stage of a tiled program: tile outputs (cropped to their cores, as :func:`rscore.engine.tile.run_tile` returns them)
    written into the scene-sized mask / score / class rasters (in memory, or compressed tiles on disk above
    ``RSCORE_IN_MEMORY_PIXELS``), their notes merged into plan steps weighted by tile area, their caveats kept once,
    their ``summary`` (the template's ``tile_summary``) kept as ``(core, value)`` in :attr:`summaries`.
    :func:`run_program` uses it tile by tile; the landslide flow batch by batch. Tiles may come in any order."""

    def __init__(self, height: int, width: int, tile_size: int) -> None:
        self.height, self.width, self.tile_size = height, width, tile_size
        self.mask = make_sink(height, width, bool, tile_size)
        self.score: ArraySink | TiledArray | None = None
        self.classes: ArraySink | TiledArray | None = None
        self.notes: list[tuple[Step, float]] = []
        self.caveats: list[str] = []
        self.summaries: list[tuple[Window, Any]] = []

    def add(self, res: Any) -> None:
        """One tile's outputs: anything with ``core`` (its window), ``mask`` / ``score`` / ``classes`` (core-sized
        arrays or ``None``), ``notes`` and ``caveats`` (and optionally ``summary``)."""
        h, w, ts = self.height, self.width, self.tile_size
        if res.mask is not None:
            self.mask.write(res.core, res.mask)
        if res.score is not None:
            self.score = self.score or make_sink(h, w, np.float32, ts, fill=np.nan)
            self.score.write(res.core, res.score)
        if res.classes is not None:
            self.classes = self.classes or make_sink(h, w, np.uint8, ts)
            self.classes.write(res.core, res.classes)
        weight = float(res.core.height * res.core.width)
        self.notes += [(note, weight) for note in res.notes]
        self.caveats += [c for c in res.caveats if c not in self.caveats]
        summary = getattr(res, "summary", None)
        if summary is not None:
            self.summaries.append((res.core, summary))

    def steps(self) -> list[Step]:
        return merge_notes(self.notes)

    def finish(self) -> tuple[Any, Any, Any]:
        """``(mask, score, classes)``: arrays, or :class:`TiledArray` on disk; ``None`` for outputs no tile gave."""
        return (
            self.mask.finish(),
            self.score.finish() if self.score is not None else None,
            self.classes.finish() if self.classes is not None else None,
        )

    def close(self) -> None:
        """Release on-disk tiles of a stitch that is abandoned (after :meth:`finish`, the rasters own them)."""
        for sink in (self.mask, self.score, self.classes):
            if isinstance(sink, TiledArray):
                sink.close()


def merge_notes(notes: Iterable[tuple[Step, float]]) -> list[Step]:
    """The notes of many tiles as plan steps: one step per distinct text (first-seen order), its numeric stats
    averaged weighted by each tile's core area, other stats from the first note. Also used by the flows, which
    run tiles as separate tasks."""
    acc: dict[str, tuple[Step, dict[str, float], float]] = {}
    for note, weight in notes:
        numeric = {
            k: float(v) for k, v in note.stats.items() if isinstance(v, (int, float, np.number)) and np.isfinite(v)
        }
        if note.text not in acc:
            other = {k: v for k, v in note.stats.items() if k not in numeric}
            acc[note.text] = (Step(note.text, note.operator, note.params, other), {k: 0.0 for k in numeric}, 0.0)
        step, sums, wsum = acc[note.text]
        for k, v in numeric.items():
            sums[k] = sums.get(k, 0.0) + v * weight
        acc[note.text] = (step, sums, wsum + weight)
    steps = []
    for step, sums, wsum in acc.values():
        means = {k: v / wsum for k, v in sums.items()} if wsum else {}
        steps.append(Step(step.text, step.operator, step.params, {**step.stats, **means}))
    return steps
