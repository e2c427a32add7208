"""The one exception tree of rscore.

Every error the library raises on purpose derives from :class:`RscoreError`. The CLI maps the tree to exit codes in
one place (``rscore.cli.main``); the service maps it to HTTP status codes. Anything else that escapes is a bug and
exits 1.

::

    RscoreError                      exit 1   (base; never raised bare)
    ├── UserError                    exit 2   problems the user can fix; printed as one line, no traceback
    │   ├── InputError                        an input file: missing, empty, a directory, corrupt, unsupported
    │   │   └── ImageTooLarge                 more pixels than the configured limit (decompression bombs)
    │   ├── QueryError                        empty, too long, or unusable query text
    │   ├── PluginError                       unknown plugin, plugin that fails to import, invalid hook implementation
    │   ├── BackendUnavailable                a reasoner/segmenter that is not installed, has no weights, or no endpoint
    │   └── OptionError                       a bad option value (bands, thresholds, output folder, ...)
    └── InternalError                exit 1   an invariant broke inside rscore (a bug: please report it)

Messages name the file or thing and the problem, e.g. ``region.tif: not a readable raster (TIFF header is corrupt)``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

__all__ = [
    "shorten",
    "RscoreError",
    "UserError",
    "InputError",
    "ImageTooLarge",
    "QueryError",
    "PluginError",
    "BackendUnavailable",
    "OptionError",
    "InternalError",
]


class RscoreError(Exception):
    """Base of every error rscore raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class UserError(RscoreError):
    """Something the user can fix. One line on stderr, exit code 2, HTTP 4xx."""

    exit_code = 2
    http_status = 400


class InputError(UserError):
    """An input file is missing, empty, a directory, corrupt or of a kind no reader handles."""

    http_status = 422


class ImageTooLarge(InputError):
    """The input has more pixels than the configured limit (``--max-pixels`` / ``RSCORE_MAX_PIXELS``)."""

    http_status = 413


class QueryError(UserError):
    """The query text is empty, too long, or cannot be used."""


class PluginError(UserError):
    """An unknown plugin was asked for, a plugin failed to load, or a hook implementation is invalid."""


class BackendUnavailable(UserError):
    """A reasoner, segmenter or propagator cannot run here: not installed, no weights, endpoint unreachable."""

    http_status = 503


class OptionError(UserError):
    """An option has a value rscore cannot use (bands, thresholds, output folder, ...)."""


class InternalError(RscoreError):
    """An invariant broke inside rscore. This is a bug."""


def shorten(message: str, limit: int = 1000) -> str:
    """``message`` on one line of at most about ``limit`` characters: a longer one (an error naming thousands of bands
    or files) keeps its start and its end - where the hint on what to do usually is - around the count cut out."""
    line = " ".join(str(message).split())
    if len(line) <= limit:
        return line
    tail = limit // 4
    head = limit - tail - 40
    return f"{line[:head]} ... [{len(line) - head - tail} more characters] ... {line[-tail:]}"
