"""Progress in the unit of the work: tiles, frames or slices.

A :data:`rscore.types.ProgressCallback` is ``progress(done, total)``. A callback that also takes a keyword ``unit``
(``def progress(done, total, unit="")`` or ``**kwargs``) is told what it counts: ``"tiles"`` (rasters, analytic
program tiles, VLM tiles), ``"frames"`` (video; ``"frames read"`` for the first pass of an offline run, which reads
the video once to choose the keyframe) or ``"slices"`` (DICOM series). Its ``done`` / ``total`` are then in that unit,
so a unit-aware callback may see a count start again from 0 when the unit changes. A callback that takes no ``unit``
is called exactly as before, with the same numbers as before.

Library code reports through :func:`report`; ``rscore run`` formats a line with :func:`format_progress`.
"""

from __future__ import annotations

import inspect
from typing import Any

from rscore.types import ProgressCallback

__all__ = ["accepts_unit", "format_progress", "report"]

def accepts_unit(progress: Any) -> bool:
    """Whether ``progress`` can be called with a ``unit=`` keyword (a parameter named ``unit`` or ``**kwargs``)."""
    try:
        params = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: called the plain way
        return False
    return any(p.kind == p.VAR_KEYWORD or (p.name == "unit" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
               for p in params)


def report(progress: ProgressCallback | None, done: int, total: int, unit: str, *,
           plain: tuple[int, int] | None = None) -> None:
    """Call ``progress``: ``(done, total, unit=unit)`` when it takes a unit, else ``plain`` (the counts an older
    callback has always been given; ``(done, total)`` when None)."""
    if progress is None:
        return
    if accepts_unit(progress):
        progress(done, total, unit=unit)
    else:
        progress(*(plain or (done, total)))


def format_progress(unit: str, done: int, total: int | float | None, per_second: float | None = None) -> str:
    """``"tiles 12/64"``, ``"frames 300/795 (41 fps)"``, ``"slices 3/40"``; ``"frames 300"`` when the total is
    unknown (a live stream). The rate is shown for frames only, once it is known."""
    unit = unit or "steps"
    text = f"{unit} {int(done)}" if not total else f"{unit} {int(done)}/{int(total)}"
    if unit.startswith("frames") and per_second is not None and per_second > 0:
        text += f" ({per_second:.0f} fps)" if per_second >= 10 else f" ({per_second:.1f} fps)"
    return text
