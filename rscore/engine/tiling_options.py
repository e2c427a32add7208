"""The options of the tiled (decoupled) VLM path and the test whether a scene takes it, without the path itself.

:mod:`rscore.engine.request` checks these options on every request and :mod:`rscore.engine.plan` asks
:func:`should_tile` on every plan; the tiled path (:mod:`rscore.engine.decoupled`, which re-exports every name here)
is imported only when a scene takes it, so that an analytic run or ``rscore plugins list`` does not load it (#22).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rscore.errors import OptionError
from rscore.options import convert, parse_bool
from rscore.types import Request, Scene

log = logging.getLogger("rscore.engine.decoupled")

__all__ = ["DEFAULTS", "MODES", "MIN_TILE", "TilingOptions", "normalise_options", "tiling_options", "picture_side",
           "stacked_slice_rows", "should_tile"]  # fmt: skip

DEFAULTS: Mapping[str, Any] = {
    "reason_tiles": "auto",
    "reason_tile": 0,
    "reason_overlap": 128,
    "reason_merge_iou": 0.5,
    "reason_overview": True,
    "reason_concurrency": "auto",
}
MODES = ("auto", "on", "off")
MIN_TILE = 64


# -------------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class TilingOptions:
    """How a large scene is reasoned in tiles.

    - ``mode``: ``auto`` tiles scenes whose longer side exceeds ``tile``; ``on`` always goes through the tiled path
      (a scene smaller than one tile is one tile, no overview); ``off`` never (the whole scene, shrunk, as before).
    - ``tile``: tile side in scene pixels; 0 = twice the reasoner's picture side (``picture_side``, 1024 px by
      default: tiles of 2048 px, each shown to the model at half resolution instead of the whole scene at 1/10).
    - ``overlap``: least overlap between neighbouring tiles, px (tiles are spread evenly, so it can be more); an
      object that a tile border cuts is seen whole by the tiles' shared strip when it is narrower than this.
    - ``merge_iou``: pieces from two tiles are one object when their IoU inside the tiles' overlap is at least this.
    - ``overview``: a first pass on the whole scene downscaled to one picture, whose answer (labels, where) goes to
      every tile's prompt as one line of context. One request more; off saves it.
    - ``concurrency``: how many tiles' ``reasoner.plan`` calls may run at once (``auto``: the reasoner's
      ``max_concurrency`` when it declares one, else 1); see :func:`reason_concurrency`.
    """

    mode: str = "auto"
    tile: int = 0
    overlap: int = 128
    merge_iou: float = 0.5
    overview: bool = True
    concurrency: int | str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OptionError(f"option reason_tiles must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.tile != 0 and self.tile < MIN_TILE:
            raise OptionError(f"option reason_tile must be 0 (auto) or at least {MIN_TILE} px, got {self.tile}")
        if self.overlap < 0:
            raise OptionError(f"option reason_overlap must be at least 0 px, got {self.overlap}")
        if self.tile and self.overlap * 2 >= self.tile:
            raise OptionError(
                f"option reason_overlap ({self.overlap} px) must be less than half of reason_tile ({self.tile} px)"
            )
        if not 0.0 < self.merge_iou <= 1.0:
            raise OptionError(f"option reason_merge_iou must be in (0, 1], got {self.merge_iou}")
        c = self.concurrency
        if c != "auto" and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise OptionError(f"option reason_concurrency must be auto or a whole number >= 1, got {c!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TilingOptions:
        """From engine options (``reason_tiles``, ``reason_tile``, ``reason_overlap``, ``reason_merge_iou``,
        ``reason_overview``, ``reason_concurrency``), converted and checked; missing ones take :data:`DEFAULTS`."""
        o = {k: (options.get(k) if options.get(k) is not None else v) for k, v in DEFAULTS.items()}
        mode = o["reason_tiles"]
        if isinstance(mode, bool):
            mode = "on" if mode else "off"
        mode = str(mode).strip().lower()
        tile = o["reason_tile"]
        if isinstance(tile, str) and tile.strip().lower() == "auto":
            tile = 0
        return cls(
            mode=mode,
            tile=_whole("reason_tile", tile),
            overlap=_whole("reason_overlap", o["reason_overlap"]),
            merge_iou=convert(o["reason_merge_iou"], float, "reason_merge_iou"),
            overview=parse_bool(o["reason_overview"], "reason_overview"),
            concurrency=_concurrency(o["reason_concurrency"]),
        )

    def as_options(self) -> dict[str, Any]:
        return {
            "reason_tiles": self.mode,
            "reason_tile": self.tile,
            "reason_overlap": self.overlap,
            "reason_merge_iou": self.merge_iou,
            "reason_overview": self.overview,
            "reason_concurrency": self.concurrency,
        }


def _whole(name: str, value: Any) -> int:
    return convert(value, int, name)


def _concurrency(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _whole("reason_concurrency", value)
    except OptionError:
        raise OptionError(f"option reason_concurrency must be auto or a whole number >= 1, got {value!r}") from None


def normalise_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check and convert the tiling options in an engine options dict in place (``rscore.engine._check_options``)."""
    opts.update(TilingOptions.from_options(opts).as_options())
    return opts


def tiling_options(request: Request) -> TilingOptions:
    return TilingOptions.from_options(request.options)


def picture_side(reasoner: Any, request: Request) -> int:
    """The longest side (px) of the picture ``reasoner`` sends: its ``picture_side(request)`` when it has one (the
    built-in VLM reasoners do), else :data:`~rscore.reasoners.prompting.DEFAULT_MAX_SIDE`."""
    fn = getattr(reasoner, "picture_side", None)
    if callable(fn):
        try:
            side = int(fn(request))
            if side > 0:
                return side
        except (TypeError, ValueError):
            log.debug("reasoner %r: picture_side() gave no usable size", reasoner, exc_info=True)
    from rscore.reasoners.prompting import DEFAULT_MAX_SIDE

    return DEFAULT_MAX_SIDE


def _tile_side(options: TilingOptions, reasoner: Any, request: Request) -> int:
    return options.tile or 2 * picture_side(reasoner, request)


def stacked_slice_rows(scene: Scene) -> int | None:
    """Rows per slice when ``scene`` stacks several slices along its rows (a DICOM series: ``metadata["layout"] ==
    "stacked-rows"`` with ``metadata["slice_rows"]``), else ``None``."""
    rows = scene.metadata.get("slice_rows") if scene.metadata.get("layout") == "stacked-rows" else None
    try:
        rows = int(rows) if rows else 0
    except (TypeError, ValueError):
        return None
    return rows if 0 < rows < scene.height and scene.height % rows == 0 else None


def should_tile(scene: Scene, reasoner: Any, request: Request) -> bool:
    """Whether :func:`rscore.engine.segment` takes the tiled path: never for the ``analytic`` reasoner (its programs
    tile themselves) or one that says ``whole_scene = True``; with ``reason_tiles=auto`` when the scene's longer side
    exceeds the tile side, or when it stacks several slices (each slice is looked at on its own)."""
    o = tiling_options(request)
    if o.mode == "off" or getattr(reasoner, "name", "") == "analytic" or getattr(reasoner, "whole_scene", False):
        return False
    if o.mode == "on" or stacked_slice_rows(scene):
        return True
    return max(scene.height, scene.width) > _tile_side(o, reasoner, request)
