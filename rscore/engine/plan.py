"""Plan: the templates for the scene, the reasoner's plan (or a plan made before), and the template that answers.

A VLM reasoner on a scene larger than its picture reasons tile by tile (:mod:`rscore.engine.decoupled`): that path
plans, segments and stitches per tile in one pass and hands back its plan with the instances and the union mask
(:class:`Planned.tiled`), which the execute stage then takes as they are.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rscore.engine.tiling_options import should_tile
from rscore.engine.backends import backend, segmenter
from rscore.plugins import Registry
from rscore.sdk import Operator, Template
from rscore.types import Plan, ProgressCallback, Request, Scene, Step

if TYPE_CHECKING:
    from rscore.engine.decoupled import TiledRun

__all__ = ["MAX_INSTANCE_MASK_BYTES", "Planned", "plan_scene", "answering_template"]

MAX_INSTANCE_MASK_BYTES = 256 << 20  # per-instance masks kept for the best instances within this budget


@dataclass(frozen=True)
class Planned:
    """What the plan stage hands on: the plan (its context steps first), the templates it was planned against, the
    template that answers (a plugin's, or the one compiled from a constraint program; ``None`` when absent or for a
    VLM's free targets), and the tiled run when the scene was reasoned tile by tile."""

    plan: Plan
    templates: Sequence[Template]
    template: Template | None
    tiled: TiledRun | None = None


def answering_template(plan: Plan, templates: Sequence[Template], operators: Mapping[str, Operator]) -> Template | None:
    """The template ``plan`` was made with: one of ``templates`` by qualified name, or, for a constraint program
    compiled by :mod:`rscore.planner`, the template built from it; ``None`` when the plan names none (or is absent)."""
    template = next((t for t in templates if t.qualified_name == plan.template), None)
    if template is None and not plan.absent:
        from rscore.planner import template_for_plan

        template = template_for_plan(plan, operators)
    return template


def plan_scene(
    scene: Scene,
    request: Request,
    registry: Registry,
    *,
    plan: Plan | None = None,
    progress: ProgressCallback | None = None,
    timings: dict[str, float] | None = None,
) -> Planned:
    """Plan ``request`` on ``scene`` (already preprocessed) with the reasoner the options name; or take ``plan``,
    made before for the same query and kind of scene (the video engine plans once per run). ``timings`` receives
    ``reason_s`` (and the tiled path's ``segment_s``)."""
    opts = request.options
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    templates, chosen = registry.templates_for_scene(request.plugin, scene)
    tiled: TiledRun | None = None
    if plan is None:
        reasoner = backend(registry, "reasoner", str(opts["reasoner"]), opts)
        if should_tile(scene, reasoner, request):  # a VLM on a scene larger than its picture: tile by tile
            from rscore.engine import decoupled

            tiled = decoupled.segment_tiled(
                scene,
                request,
                templates,
                reasoner,
                segmenter=lambda: segmenter(registry, str(opts["segmenter"]), opts),
                progress=progress,
                max_mask_bytes=MAX_INSTANCE_MASK_BYTES,
                store_tile=int(opts["tile_size"]),
            )
            plan = tiled.plan
            timings.update(tiled.timings)
        else:
            plan = reasoner.plan(scene, request, templates)
            if plan.absent and len(templates) < len(registry.templates):  # --plugin (or the reader) chose a subset
                from rscore.engine.analytic import other_plugin_hint

                plan = other_plugin_hint(plan, request, scene, templates, registry.templates)
    if tiled is None:
        timings["reason_s"] = time.perf_counter() - t0
    pre_steps = tuple(Step(text=f"preprocess: {s}") for s in scene.metadata.get("preprocess", ()))
    if request.plugin is None and chosen:
        pre_steps += (Step(text=f"templates of plugin '{chosen}' (chosen from the reader '{scene.reader}' that opened "
                           "the input; pass --plugin to choose another)"),)
    if pre_steps:
        plan = dataclasses.replace(plan, steps=pre_steps + plan.steps)
    return Planned(plan, templates, answering_template(plan, templates, registry.operators), tiled)
