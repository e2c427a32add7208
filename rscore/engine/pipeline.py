"""``segment``: the image pipeline composed from its stages, one module each (see ``docs/architecture.md``)::

    request   rscore.engine.request     query checked, options declared and converted      -> Request
    preprocess rscore.engine.hooks      rscore_preprocess chain (plugin + core)            -> Scene
    plan      rscore.engine.plan        templates for the scene, reasoner.plan (or given)  -> Planned
    execute   rscore.engine.execute     template program per tile (rscore.engine.program,   -> Execution
              + stitch                  .tile, .parallel) | segmenter on targets;
                                        VLM on a large scene: per tile, merged across tile
                                        borders (rscore.engine.decoupled, rscore.engine.stitch)
    finish    rscore.engine.finish      union mask, instances, absent, caveats, provenance  -> Result
    postprocess rscore.engine.hooks     rscore_postprocess chain                           -> Result

:func:`answer` is the hook-free middle (plan -> execute -> finish) on a scene that is already preprocessed: what
:func:`segment` runs between its hooks and what the video engine (:mod:`rscore.video.engine`) runs on each frame,
whose hooks it calls itself once per frame. Opening (:mod:`rscore.engine.scene`) and writing
(:mod:`rscore.engine.write`) are the stages around it; :func:`rscore.runner.run` composes them all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rscore.engine.execute import execute
from rscore.engine.finish import finish_result
from rscore.engine.hooks import postprocess, preprocess
from rscore.engine.plan import plan_scene
from rscore.engine.request import make_request
from rscore.notebook import remember_scene
from rscore.plugins import Registry, default_registry, set_request_registry
from rscore.types import Plan, ProgressCallback, Request, Result, Scene

__all__ = ["segment", "answer"]


def segment(
    scene: Scene,
    query: str,
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Answer ``query`` on ``scene``: masks, instances, scores and the plan, or ``absent`` with the reason."""
    reg = registry or default_registry()
    request = make_request(query, plugin=plugin, options=options, registry=reg)
    set_request_registry(reg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    given = scene  # the caller's scene (the notebook shows it under the mask; preprocess may return a new one)
    scene = preprocess(reg, plugin, scene, request)
    timings["preprocess_s"] = time.perf_counter() - t0
    result = answer(scene, request, registry=reg, progress=progress, timings=timings)
    t0 = time.perf_counter()
    result = postprocess(reg, plugin, result, scene)
    timings["postprocess_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    result = result.replace(timings={**result.timings, **{k: round(v, 4) for k, v in timings.items()}})
    remember_scene(result, given)  # a bare `result` in a notebook shows the input under the mask
    return result


def answer(
    scene: Scene,
    request: Request,
    *,
    registry: Registry,
    plan: Plan | None = None,
    progress: ProgressCallback | None = None,
    timings: dict[str, float] | None = None,
) -> Result:
    """Plan, execute (per tile, stitched) and finish ``request`` on ``scene``, which the preprocess hooks have seen
    already; no processing hooks run here. ``plan``: a plan made before for this query (the video engine's, once per
    run) instead of asking the reasoner again. ``timings`` receives ``reason_s`` and ``segment_s`` (not attached to
    the result: :func:`segment` does that)."""
    set_request_registry(registry)  # for current_registry(); the next request in this thread sets its own
    timings = {} if timings is None else timings
    planned = plan_scene(scene, request, registry, plan=plan, progress=progress, timings=timings)
    t0 = time.perf_counter()
    done = execute(scene, request, planned, registry, progress=progress)
    if planned.tiled is None and not planned.plan.absent:
        timings["segment_s"] = time.perf_counter() - t0
    return finish_result(scene, request, planned, done, registry)
