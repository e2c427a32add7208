"""Backend lookup: a registered reasoner / segmenter / propagator by name, built with the request's options.

The one place that turns a name into a backend object, for the image pipeline, the tiled path, the video engine and
the reasoners that call a segmenter themselves (the agent). A backend whose Python packages are missing is a
:class:`~rscore.errors.BackendUnavailable` naming them; ``segmenter=auto`` takes the first of
:data:`AUTO_SEGMENTERS` that is available.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from rscore.errors import BackendUnavailable
from rscore.plugins import Registry

log = logging.getLogger(__name__)

__all__ = ["AUTO_SEGMENTERS", "backend", "segmenter"]

AUTO_SEGMENTERS = ("sam2", "sam2-hf", "sam3", "classical")  # best first: SAM 2, SAM 3 (box prompts), GrabCut


def backend(reg: Registry, kind: str, name: str, options: Mapping[str, Any]) -> Any:
    """The ``kind`` backend ``name`` built with ``options`` (unknown name: :class:`~rscore.errors.PluginError`
    with a did-you-mean; missing packages: :class:`~rscore.errors.BackendUnavailable`)."""
    spec = reg.backend(kind, name)
    missing = spec.missing_modules()
    if missing:
        raise BackendUnavailable(
            f"{kind} '{name}' needs Python package(s) {', '.join(missing)}: install them (see README, 'Backends')"
        )
    return spec.factory(options)


def segmenter(reg: Registry, name: str, options: Mapping[str, Any]) -> tuple[str, Any]:
    """``(name, segmenter)``: the one named, or for ``auto`` the first available of :data:`AUTO_SEGMENTERS`."""
    if name != "auto":
        return name, backend(reg, "segmenter", name, options)
    reasons = []
    for candidate in AUTO_SEGMENTERS:
        if ("segmenter", candidate) not in reg.backends:
            continue
        try:
            return candidate, backend(reg, "segmenter", candidate, options)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            log.info("segmenter %s unavailable: %s", candidate, exc)
    raise BackendUnavailable("no segmenter is available: " + "; ".join(reasons))
