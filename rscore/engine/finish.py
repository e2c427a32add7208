"""Finish: the execution's masks and instances as one :class:`~rscore.types.Result`.

- the union mask: the stitched program mask, or the instances' masks unioned (in memory up to
  ``RSCORE_IN_MEMORY_PIXELS``); a template's ``refine`` (:class:`rscore.sdk.Template`, e.g. the landslide map's
  minimum mapping unit) changes the stitched mask and classes first - a template field, not a new plugin hook: it
  belongs to how that template's map is defined, runs wherever finish runs (segment, the flows, video) and lets the
  instances below be derived once from the final mask instead of again in ``rscore_postprocess``;
- instances: the segmenter's / reasoner's, or, for a template answer without them, the connected components of the
  mask (:func:`rscore.instances.instances_from_mask`: label, score, class, area in real units);
- absent when a plan that was not absent found no pixels (with the reason: the program's note marked
  ``explains=EXPLAINS_EMPTY`` when it answers nothing on purpose, else "the rule found no pixels");
- trust: ``caveats`` (the template's declared limits, the routing's, what the program met) and ``confidence``
  (the routing's; ``None`` when a caveat withholds it, :func:`answer_confidence`), both cleared on an absent answer;
- provenance: versions, plugin, backends, template, matcher, reader, input and the options that differ from the
  defaults, with credentials stripped from URLs (:func:`redact`).
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from rscore.engine.execute import Execution
from rscore.engine.plan import MAX_INSTANCE_MASK_BYTES, Planned
from rscore.engine.request import DEFAULTS
from rscore.plugins import Registry
from rscore.sdk import CONFIDENCE_WITHHELD, EXPLAINS_EMPTY, Template
from rscore.tiling import TiledArray, in_memory_pixel_limit
from rscore.types import Plan, Request, Result, Scene

__all__ = ["answer_confidence", "finish_result", "result_caveats", "provenance", "redact"]


def answer_confidence(plan: Plan, caveats: Sequence[str]) -> float | None:
    """How far to trust an answer planned as ``plan`` with these ``caveats``: the routing's confidence (calibrated on
    the routing benchmark: the right rule was chosen), or ``None`` - "cannot say" - when the plan is absent or a
    caveat withholds it (:data:`rscore.sdk.CONFIDENCE_WITHHELD`: the input lies outside what the rule was made for,
    e.g. reflectance thresholds on raw digital numbers, and no measurement says how often the mask is still right).
    """
    if plan.absent or any(c.startswith(CONFIDENCE_WITHHELD) for c in caveats):
        return None
    return plan.match.get("confidence")


def result_caveats(plan: Plan, template: Template | None, found: Sequence[str] = ()) -> list[str]:
    """The caveats of an answer planned as ``plan``: the answering template's declared limits, the routing's (a
    superset answer...) and ``found`` (what the program met), each once; none for an absent plan."""
    caveats: list[str] = list(template.caveats) if template is not None and not plan.absent else []
    caveats += [c for c in plan.match.get("caveats", ()) if c not in caveats]
    caveats += [c for c in found if c not in caveats]
    return caveats


def finish_result(scene: Scene, request: Request, planned: Planned, done: Execution, registry: Registry) -> Result:
    """The :class:`~rscore.types.Result` of ``done`` (see the module docstring); no hooks, no timings."""
    opts = request.options
    plan, template = done.plan, planned.template
    caveats = result_caveats(planned.plan, template, done.caveats)
    label = template.label if template else "target"
    mask, score, classes = done.mask, done.score, done.classes
    if template is not None and template.refine is not None and not plan.absent and mask is not None:
        # the template's whole-map step (Template.refine) before the instances, so they are derived once
        refined = template.refine(scene, opts, mask, score, classes)
        if refined is not None:
            mask, classes, step = refined
            plan = dataclasses.replace(plan, steps=tuple(plan.steps) + (step,))
    instances = list(done.instances)
    if mask is None and scene.height * scene.width <= in_memory_pixel_limit():
        mask = np.zeros(scene.shape, bool)
    if isinstance(mask, np.ndarray):
        for inst in instances:
            if inst.mask is not None:
                mask |= inst.mask
        if template is not None and not instances and not plan.absent:
            from rscore.instances import instances_from_mask

            instances = instances_from_mask(
                mask,
                label=label,
                score=score if isinstance(score, np.ndarray) else None,
                classes=classes if isinstance(classes, np.ndarray) else None,
                class_names=template.class_names,
                pixel_size=scene.pixel_size,
                unit=scene.unit,
                min_area_px=int(opts["min_area_px"]),
                max_instances=int(opts["max_instances"]),
                # rasters answer with the union mask, score/class rasters and polygons: no per-instance masks
                keep_masks=scene.kind != "raster",
                max_mask_bytes=MAX_INSTANCE_MASK_BYTES,
            )
    if not plan.absent and isinstance(mask, np.ndarray) and not mask.any():
        # a program that answers nothing on purpose says why in a note marked explains=EXPLAINS_EMPTY
        because = [s.text for s in plan.steps if (s.stats or {}).get("explains") == EXPLAINS_EMPTY]
        why = (
            because[-1]
            if because
            else f"the {label} rule found no pixels in this input"
            if plan.reasoner == "analytic"
            else f"the {plan.reasoner} reasoner's targets gave no mask pixels"
        )
        plan = dataclasses.replace(plan, absent=True, reason=why)

    tiled = planned.tiled
    warnings = tuple(scene.warnings) + (tiled.warnings if tiled is not None else ())
    if isinstance(mask, TiledArray) and tiled is None:
        warnings += ("instances are not listed for scenes stitched on disk; see the vector outputs",)
    return Result(
        query=request.query,
        plugin=request.plugin,
        plan=plan,
        instances=tuple(instances),
        mask=mask,
        score=score,
        class_map=classes,
        class_names=template.class_names if template else (),
        warnings=warnings,
        options=opts,
        caveats=tuple(caveats) if not plan.absent else (),
        confidence=answer_confidence(plan, caveats),
        provenance=provenance(registry, request.plugin, scene, plan, done.segmenter_name, opts),
        tile_summaries=tuple(done.tile_summaries),
    )


def provenance(
    reg: Registry, plugin: str | None, scene: Scene, plan: Plan, segmenter: str | None, opts: Mapping[str, Any]
) -> dict[str, Any]:
    """Where an answer came from: versions, plugin (distribution and version), reasoner, segmenter, template,
    matcher, reasoner model and endpoint, reader, input, the options that differ from :data:`DEFAULTS` (credentials
    redacted), Python and platform, and when."""
    from rscore import __version__

    info = {p.name: p for p in reg.plugins()}
    plug = info.get(plugin) if plugin else None
    return {
        "rscore": __version__,
        "plugin": {"name": plugin, "distribution": plug.distribution, "version": plug.version} if plug else None,
        "reasoner": plan.reasoner,
        "segmenter": segmenter,
        "template": plan.template,
        "matcher": {k: plan.match.get(k) for k in ("method", "model", "score") if k in plan.match},
        "reasoner_model": plan.match.get("reasoner_model"),
        "endpoint": redact(plan.match.get("endpoint")),
        "reader": scene.reader,
        "input": str(scene.path) if scene.path else None,
        "options": {
            k: redact(v) for k, v in opts.items() if isinstance(v, (str, int, float, bool)) and DEFAULTS.get(k) != v
        },
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def redact(value: Any) -> Any:
    """Strip credentials from URLs (``https://user:secret@host``) before they reach result.json."""
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value
