"""Execute: what the plan asks for, on the scene's pixels.

- an analytic plan runs its template's program tile by tile (halo = ``template.halo``), stitched seam-free
  (:func:`rscore.engine.program.run_program`; tiles in worker processes with ``-O workers``,
  :mod:`rscore.engine.parallel`);
- targets (from the program or a reasoner) that carry their own mask (LISA) are instances as they are; the others
  go to the segmenter the options name (:func:`rscore.engine.backends.segmenter`), on the scene's 8-bit picture;
- masks a reasoner selected itself (the agent) are instances as they are;
- a scene reasoned tile by tile has been segmented and stitched already (:class:`rscore.engine.plan.Planned`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rscore.engine.program import run_program
from rscore.engine.backends import segmenter
from rscore.engine.plan import Planned
from rscore.plugins import Registry
from rscore.tiling import TiledArray
from rscore.types import Instance, Plan, ProgressCallback, Request, Scene, Window

__all__ = ["Execution", "execute"]


@dataclass
class Execution:
    """What executing a plan produced: the plan with the program's steps and targets, the stitched rasters (``None``
    where nothing made them), the instances, the segmenter that ran, and the caveats the program recorded."""

    plan: Plan
    mask: np.ndarray | TiledArray | None = None
    score: np.ndarray | TiledArray | None = None
    classes: np.ndarray | TiledArray | None = None
    instances: list[Instance] = field(default_factory=list)
    segmenter_name: str | None = None
    caveats: list[str] = field(default_factory=list)
    tile_summaries: list[tuple[Window, Any]] = field(default_factory=list)  # the template's tile_summary per tile


def execute(
    scene: Scene, request: Request, planned: Planned, registry: Registry, *, progress: ProgressCallback | None = None
) -> Execution:
    """Run ``planned`` on ``scene`` (see the module docstring); an absent plan executes nothing."""
    plan = planned.plan
    if planned.tiled is not None:
        tiled = planned.tiled
        return Execution(plan, mask=tiled.mask, instances=list(tiled.instances), segmenter_name=tiled.segmenter_name)
    out = Execution(plan)
    if plan.absent:
        return out
    opts = request.options
    out.instances += list(plan.instances)  # masks the reasoner made itself (the agent reasoner's selection)
    targets = list(plan.targets)
    template = planned.template
    if template is not None and template.program is not None and plan.reasoner == "analytic":
        run_ = run_program(
            scene, request, template, registry.operators, tile_size=int(opts["tile_size"]), progress=progress
        )
        out.mask, out.score, out.classes = run_.mask, run_.score, run_.classes
        out.tile_summaries = run_.summaries
        targets += run_.targets
        out.caveats += [c for c in run_.caveats if c not in out.caveats]
        out.plan = dataclasses.replace(plan, steps=plan.steps + tuple(run_.steps), targets=tuple(targets))
    if targets:
        from rscore.segmenters.prompts import split_presegmented

        ready, targets = split_presegmented(targets, scene.shape)  # masks a reasoner made itself (LISA)
        out.instances += ready
    if targets:
        out.segmenter_name, seg = segmenter(registry, str(opts["segmenter"]), opts)
        from rscore.io.images import scene_rgb8

        out.instances += seg.segment(scene_rgb8(scene), targets)
    return out
