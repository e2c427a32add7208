"""Preprocess and postprocess: the plugin's processing hooks, chained.

``rscore_preprocess(scene, request)`` and ``rscore_postprocess(result, scene)`` run for the plugin in use and core
only, in pluggy's call order, each receiving the previous one's output (``None`` keeps the value). Stills call each
chain once per request (:func:`rscore.engine.segment`); the video engine once per processed frame.
"""

from __future__ import annotations

from typing import Any

from rscore.plugins import Registry
from rscore.types import Request, Result, Scene

__all__ = ["PROCESSING_HOOKS", "has_hooks", "preprocess", "postprocess"]

PROCESSING_HOOKS = ("rscore_preprocess", "rscore_postprocess")


def _chain(reg: Registry, hook: str, plugin: str | None, value: Any, **kwargs: Any) -> Any:
    for fn in reg.hookimpls_for(hook, plugin):
        out = fn(**{("scene" if hook == "rscore_preprocess" else "result"): value}, **kwargs)
        if out is not None:
            value = out
    return value


def has_hooks(reg: Registry, hook: str, plugin: str | None) -> bool:
    """Whether ``plugin`` (or core) implements the processing hook ``hook``."""
    return bool(reg.hookimpls_for(hook, plugin))


def preprocess(reg: Registry, plugin: str | None, scene: Scene, request: Request) -> Scene:
    """``scene`` through the ``rscore_preprocess`` chain of ``plugin`` and core."""
    return _chain(reg, "rscore_preprocess", plugin, scene, request=request)  # type: ignore[no-any-return]


def postprocess(reg: Registry, plugin: str | None, result: Result, scene: Scene) -> Result:
    """``result`` through the ``rscore_postprocess`` chain of ``plugin`` and core."""
    return _chain(reg, "rscore_postprocess", plugin, result, scene=scene)  # type: ignore[no-any-return]
