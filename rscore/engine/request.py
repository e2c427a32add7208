"""Request: the query and the engine options checked once, before anything is read or computed.

``validate_query`` (empty, too long, NUL, unpaired surrogates), the option names checked against what the installed
plugins declare (:func:`rscore.options.check_known`), the core options converted (:func:`check_options`), and the
:class:`~rscore.types.Request` every later stage reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rscore.engine import tiling_options  # the options only: the tiled path (decoupled) loads when used (#22)
from rscore.errors import OptionError, QueryError
from rscore.options import check_known, parse_bool
from rscore.plugins import Registry
from rscore.types import Request

__all__ = ["MAX_QUERY_CHARS", "DEFAULTS", "validate_query", "check_options", "make_request"]

MAX_QUERY_CHARS = 2000
DEFAULTS: Mapping[str, Any] = {
    "reasoner": "analytic",
    "segmenter": "auto",
    "tile_size": 1024,
    "min_area_px": 1,
    "max_instances": 1000,
    # the decoupled path on large scenes (rscore.engine.decoupled.TilingOptions)
    **tiling_options.DEFAULTS,
}


def validate_query(query: str) -> str:
    """The query with its whitespace collapsed; :class:`~rscore.errors.QueryError` when it cannot be a question."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty: say what to segment, e.g. \"landslide-prone areas\"")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}")
    if "\x00" in query:
        raise QueryError("the query contains a NUL character")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the query is not valid text (it contains unpaired surrogate characters)") from None
    return " ".join(query.split())


def check_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert the core options in place; anything else belongs to plugins and passes through."""
    for name, low in (("tile_size", 16), ("min_area_px", 0), ("max_instances", 1)):
        value = opts[name]
        try:
            number = int(value)
            if number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise OptionError(f"option {name} must be a whole number, got {value!r}") from None
        if number < low:
            raise OptionError(f"option {name} must be at least {low}, got {number}")
        opts[name] = number
    for name in ("reasoner", "segmenter"):
        if not isinstance(opts[name], str) or not opts[name]:
            raise OptionError(f"option {name} must be a backend name, got {opts[name]!r}")
    return tiling_options.normalise_options(opts)  # reason_tiles, reason_tile, reason_overlap, ...


def make_request(
    query: str, *, plugin: str | None, options: Mapping[str, Any] | None, registry: Registry
) -> Request:
    """The checked :class:`~rscore.types.Request` of one image answer: the plugin exists, the query is a question,
    every option name is declared, the core options are converted over :data:`DEFAULTS`, a named segmenter exists
    and a configured detector can be built (errors even where none runs), ``strict`` is a bool."""
    registry.require_plugin(plugin)
    query = validate_query(query)
    check_known(options or {}, registry)
    opts = check_options({**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}})
    if opts["segmenter"] != "auto":
        registry.backend("segmenter", opts["segmenter"])
    from rscore.detectors import check_detector

    check_detector(opts, registry)  # --detector / detector_model: unknown backend or missing weights -> error now
    if "strict" in opts:
        opts["strict"] = parse_bool(opts["strict"], "strict")
    return Request(query=query, plugin=plugin, options=opts)
