"""rscore: reasoning segmentation for real verticals.

The library API, for SDK users::

    import rscore
    scene = rscore.open_scene("region.tif", plugin="earth")
    result = rscore.segment(scene, "landslide-prone areas", plugin="earth")
    rscore.write_outputs(scene, result, "out/")

Plugin authors: see :mod:`rscore.hookspecs`, :mod:`rscore.sdk` and ``docs/plugin-guide.md``.
"""

from __future__ import annotations

from typing import Any

from rscore.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl", "open_scene", "segment", "write_outputs", "run"]


def __getattr__(name: str) -> Any:  # lazy: importing rscore stays cheap (the pytest plugin imports it)
    if name in ("open_scene", "segment", "write_outputs", "run"):
        from rscore import engine

        return getattr(engine, name)
    raise AttributeError(name)
