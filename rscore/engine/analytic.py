"""The offline analytic strategy: match the query to a template, run its operator program tile by tile.

Needs no weights. The plan says which template answered, how well the query matched it (method and score, with the
runners-up), and the steps the program recorded with what they measured. When nothing matches, or the template
cannot apply to this input, the answer is ``absent`` with the reason - never a made-up mask.

Routing (:func:`rscore.engine.matching.decide`) ranks *every* template, those without an offline program too: when
the best is VLM-only the answer is absent and names it ("this is the `divers` template, which needs a VLM"); when
it answers other inputs, likewise. ``plan.match`` keeps the whole decision (scores, margin, polarity, specificity,
``confidence``) and ``plan.match["caveats"]`` the routing's caveats (a superset answer), which reach the result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.engine.matching import decide
from rscore.errors import InternalError, OptionError
from rscore.sdk import Operator, OpContext, ProgramOutput, Template
from rscore.tiling import ArraySink, TiledArray, iter_tiles, make_sink, tile_count
from rscore.types import Plan, ProgressCallback, Request, Scene, Step, Target

if TYPE_CHECKING:
    from rscore.engine.parallel import TileResult
    from rscore.tiling import Tile

log = logging.getLogger(__name__)

SURE_MATCH = 0.75  # a VLM-only template matched at least this well "is" the question; below, it is the closest


def _needs_vlm(t: Template) -> str:
    return "has no offline program: it needs a VLM (--reasoner openai|transformers)"


class AnalyticReasoner:
    """Plans by template matching. ``options``: ``matcher`` (auto|embedding|keyword), ``template`` (force one)."""

    name = "analytic"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def plan(self, scene: Scene, request: Request, templates: Sequence[Template]) -> Plan:
        from rscore.planner import plan_constraints  # constraint queries compile to programs; others route below

        compiled = plan_constraints(scene, request, templates)
        if compiled is not None:
            return compiled
        forced = request.option("template")
        if forced:
            chosen = [t for t in templates if forced in (t.name, t.qualified_name)]
            if not chosen:
                have = ", ".join(t.qualified_name for t in templates) or "none"
                raise OptionError(f"unknown template '{forced}' (available: {have})")
            t = chosen[0]
            return self._plan_for(t, scene, {"template": t.qualified_name, "method": "forced", "score": 1.0})

        method = request.option("matcher") or self.options.get("matcher")
        decision = decide(request.query, templates, method)
        match = dict(decision.match)
        t = decision.template
        if decision.outcome == "absent":
            reason = decision.reason
            if t is not None and t.program is None:
                reason += f" (and '{t.name}' itself {_needs_vlm(t)})"
            return Plan(absent=True, reason=reason + ". Rephrase, force one with --template, or use a VLM "
                        "reasoner (--reasoner openai|transformers)", reasoner=self.name, match=match)
        assert t is not None
        if t.program is None:
            match["needs_vlm"] = t.qualified_name
            what = "this is" if decision.match.get("score", 0) >= SURE_MATCH else "the closest template is"
            return Plan(
                absent=True,
                reason=f"{what} the `{t.name}` template ({t.label}), which {_needs_vlm(t)}",
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        if scene.kind not in t.kinds:
            match["needs_kind"] = list(t.kinds)
            return Plan(
                absent=True,
                reason=f"this is the `{t.name}` template ({t.label}), which answers {'/'.join(t.kinds)} inputs, "
                f"not this {scene.kind} input"
                + (f" (opened by the '{scene.reader}' reader: pass --plugin {t.plugin} to read it as {t.plugin} does)"
                   if request.plugin is None and t.plugin else ""),
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        if decision.caveats:
            match["caveats"] = list(decision.caveats)
        if "detector" in t.needs:
            from rscore.detectors.programs import detector_configured

            if not detector_configured(request.options):  # the right template, which cannot answer here: say so
                match["needs_detector"] = t.qualified_name
                if t.prompt:
                    match["needs_vlm"] = t.qualified_name
                return Plan(
                    absent=True,
                    reason=f"this is the `{t.name}` template ({t.label}), which answers from a detector: pass "
                    "-O detector_model=PATH (a YOLO .onnx export, or an OWLv2 / Grounding DINO model: `rscore models "
                    "list --kind detector`)" + (", or use a VLM (--reasoner openai|transformers)" if t.prompt else ""),
                    template=t.qualified_name,
                    reasoner=self.name,
                    match=match,
                )
        return self._plan_for(t, scene, match)

    def _plan_for(self, t: Template, scene: Scene, match: dict[str, Any]) -> Plan:
        if t.program is None:
            return Plan(
                absent=True,
                reason=f"template '{t.qualified_name}' has no offline program; it needs a VLM reasoner",
                template=t.qualified_name,
                reasoner=self.name,
                match=match,
            )
        missing = [r for r in t.requires if not scene.has(r)]
        if missing:
            raise OptionError(
                f"template '{t.name}' needs band(s) {', '.join(missing)} and this input has "
                f"{', '.join(scene.band_roles) or 'none'}: pass --bands to name the bands, --aux to add a "
                "co-registered raster that has them, or use an input with them"
            )
        steps = [Step(text=f"matched template '{t.name}' ({t.label}): {t.description}")]
        if t.explain:
            steps.append(Step(text=f"rule: {t.explain}"))
        return Plan(steps=tuple(steps), template=t.qualified_name, reasoner=self.name, match=match)


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
    from rscore.engine.parallel import map_tiles, resolve_workers

    assert template.program is not None
    h, w = scene.shape
    total = tile_count(h, w, tile_size)
    workers = resolve_workers(request.options.get("workers"), pixels=h * w, tiles=total)
    stitch = TileStitcher(h, w, tile_size)
    targets: list[Target] = []
    tiles = iter_tiles(h, w, tile_size, template.halo)
    for done, res in enumerate(map_tiles(scene, request, template, operators, tiles, workers), start=1):
        stitch.add(res)
        targets += res.targets
        if progress:
            progress(done, total)
    mask, score, classes = stitch.finish()
    return ProgramRun(mask, score, classes, stitch.steps(), targets, total, stitch.caveats)


class TileStitcher:
    """The stitch stage of a tiled program: tile outputs (cropped to their cores, as :func:`run_tile` returns them)
    written into the scene-sized mask / score / class rasters (in memory, or compressed tiles on disk above
    ``RSCORE_IN_MEMORY_PIXELS``), their notes merged into plan steps weighted by tile area, their caveats kept once.
    :func:`run_program` uses it tile by tile; the landslide flow batch by batch. Tiles may come in any order."""

    def __init__(self, height: int, width: int, tile_size: int) -> None:
        self.height, self.width, self.tile_size = height, width, tile_size
        self.mask = make_sink(height, width, bool, tile_size)
        self.score: ArraySink | TiledArray | None = None
        self.classes: ArraySink | TiledArray | None = None
        self.notes: list[tuple[Step, float]] = []
        self.caveats: list[str] = []

    def add(self, res: Any) -> None:
        """One tile's outputs: anything with ``core`` (its window), ``mask`` / ``score`` / ``classes`` (core-sized
        arrays or ``None``), ``notes`` and ``caveats``."""
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


def run_tile(scene: Scene, request: Request, template: Template, operators: Mapping[str, Operator], tile: Tile
             ) -> TileResult:
    """The template's program on one tile: the context reads the tile's window (core plus halo); outputs are
    cropped to the core, invalid pixels are out of the mask, NaN in the score and class 0; targets are shifted to
    scene pixels. What :func:`run_program` stitches, here or in a worker process (:mod:`rscore.engine.parallel`)."""
    from rscore.engine.parallel import TileResult

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