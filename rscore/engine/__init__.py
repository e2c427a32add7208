"""The image engine: one ``segment(scene, query)`` contract over pluggable reasoners and segmenters.

The pipeline's stages are public functions, one module each (the picture, with the module of every stage, is in
``docs/architecture.md`` and :mod:`rscore.engine.pipeline`)::

    open_scene(path)  rscore.engine.scene     --reader (plugin first, sniffing before suffix)--> Scene
    segment(scene, q) rscore.engine.pipeline  = request -> preprocess -> plan -> execute (per tile) -> stitch
                                                -> finish -> postprocess                          --> Result
    write_outputs(scene, result, out_dir)     rscore.engine.write --writers, atomically--> files + result.json

``run(path, query)`` (path in, files out; stills, video and streams) sits above this package and the video engine,
in :mod:`rscore.runner`; ``rscore.engine.run`` forwards to it. Strategies are chosen by options: ``reasoner``
(``analytic`` default; others come through the backends hook), ``segmenter`` (``auto`` = the best available,
``classical`` always available).

This module only re-exports: every name here keeps the import path it had before the stages were split out (#19).
"""

from __future__ import annotations

from typing import Any

from rscore.engine.backends import AUTO_SEGMENTERS, backend as _backend, segmenter as _segmenter
from rscore.engine.finish import finish_result, provenance as _provenance, redact as _redact
from rscore.engine.hooks import _chain
from rscore.engine.pipeline import answer, segment
from rscore.engine.plan import MAX_INSTANCE_MASK_BYTES
from rscore.engine.request import DEFAULTS, MAX_QUERY_CHARS, check_options as _check_options, validate_query
from rscore.engine.scene import open_scene
from rscore.engine.write import default_out_dir, write_outputs
from rscore.plugins import _REQUEST_REGISTRY, CORE, Registry, current_registry, default_registry

__all__ = [
    "open_scene", "segment", "answer", "finish_result", "write_outputs", "run", "validate_query", "default_registry",
    "current_registry", "DEFAULTS",
]  # fmt: skip

# kept importable from here (#19 moved them into the stage modules)
_KEPT = (AUTO_SEGMENTERS, MAX_INSTANCE_MASK_BYTES, MAX_QUERY_CHARS, Registry, _backend, _segmenter, _chain,
         _check_options, _provenance, _redact, _REQUEST_REGISTRY, default_out_dir)

# the core plugin's name, re-exported for callers that compare against it
CORE_PLUGIN = CORE


def __getattr__(name: str) -> Any:
    """``rscore.engine.run`` forwards to :func:`rscore.runner.run`, which sits above this package and the video
    engine (so that nothing here imports :mod:`rscore.video`). ``rscore.engine.decoupled`` (the tiled VLM path) is
    imported on first use, not with this package: an analytic run never needs it (#22)."""
    if name == "run":
        from rscore.runner import run

        return run
    if name == "decoupled":
        import importlib

        return importlib.import_module("rscore.engine.decoupled")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
