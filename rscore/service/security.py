"""Checks that stand between a client and the server's files: API keys, server-side paths, names, options.

Errors are classes of the :mod:`rscore.errors` tree with the HTTP status the service answers with.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rscore.errors import InputError, OptionError

__all__ = [
    "PathNotAllowed",
    "UploadTooLarge",
    "key_is_valid",
    "resolve_allowed",
    "safe_upload_name",
    "safe_relative_path",
    "parse_options",
    "check_options",
    "RESULT_ID",
    "SERVER_ONLY_OPTIONS",
]

RESULT_ID = re.compile(r"[0-9a-f]{32}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")

# Options a client may not set per request: they point the server at endpoints, weights or limits the operator owns.
SERVER_ONLY_OPTIONS = ("endpoint", "weights", "model", "max_pixels", "api_key")
# Options naming an input file: allowed only under the allowed roots, like ``path``.
PATH_OPTIONS = ("aux",)
_STR_OPTIONS = ("reasoner", "segmenter", "matcher", "template", "bands")
_INT_OPTIONS = {"tile_size": (64, 16384), "min_area_px": (0, 10**12), "max_instances": (1, 100_000)}


class PathNotAllowed(OptionError):
    """A server-side path outside the allowed roots (traversal, symlink escape, absolute elsewhere)."""

    http_status = 403


class UploadTooLarge(InputError):
    """An upload over ``RSCORE_MAX_UPLOAD_MB``."""

    http_status = 413


def key_is_valid(given: str | None, keys: Iterable[str]) -> bool:
    """Constant-time comparison of ``given`` against every configured key."""
    if not given:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))
    return ok


def resolve_allowed(raw: str, roots: tuple[Path, ...], *, what: str = "path") -> Path:
    """``raw`` resolved (symlinks followed, ``..`` collapsed), if it lies under one of ``roots``; else 403.

    A relative ``raw`` is taken relative to the first root. The check runs on the resolved path, so a symlink
    inside a root that points outside it is refused too.
    """
    if not roots:
        raise PathNotAllowed(
            f"{what}: server-side paths are disabled on this service (RSCORE_ALLOWED_ROOTS is not set); upload the file"
        )
    if not raw or not raw.strip() or "\x00" in raw:
        raise OptionError(f"{what}: empty or contains a NUL character")
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loops, names the file system cannot encode
        raise PathNotAllowed(f"{what} '{shown}' cannot be resolved inside the allowed folders") from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise PathNotAllowed(f"{what} '{shown}' is outside the folders this service may read")
    try:
        resolved.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # the reader reports a missing input (422) in its own words
    except ValueError:
        raise OptionError(f"{what} '{shown}' is not a valid file name here") from None
    except OSError as exc:  # name too long, permission denied, I/O error...
        raise InputError(f"{what} '{shown}' cannot be accessed ({exc.strerror or type(exc).__name__})") from None
    return resolved


def safe_upload_name(filename: str | None) -> str:
    """A file name safe to create on disk, from a client's: base name only, ``[A-Za-z0-9._-]``, no leading dot."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._")[:100]
    return base or "upload"


def safe_relative_path(name: str) -> Path | None:
    """``name`` as a relative path of safe segments (no ``..``, no hidden files, no odd characters), or ``None``."""
    parts = name.split("/")
    if not parts or any(not _SEGMENT.fullmatch(p) for p in parts):
        return None
    return Path(*parts)


def parse_options(text: str | None) -> dict[str, Any]:
    """The ``options`` form field: a JSON object, or empty."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OptionError(f"options: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
    if not isinstance(value, dict):
        raise OptionError(f"options: expected a JSON object, got {type(value).__name__}")
    return value


def check_options(options: Mapping[str, Any], roots: tuple[Path, ...]) -> dict[str, Any]:
    """Refuse server-only options, type-check the core ones, confine path options to the allowed roots."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in SERVER_ONLY_OPTIONS:
            raise OptionError(f"option '{key}' is set by the service operator and cannot be given per request")
        if key in PATH_OPTIONS:
            if not isinstance(value, str):
                raise OptionError(f"option '{key}' must be a path (string)")
            out[key] = str(resolve_allowed(value, roots, what=f"option '{key}'"))
        elif key in _STR_OPTIONS:
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise OptionError(f"option '{key}' must be a non-empty string of at most 200 characters")
            out[key] = value
        elif key in _INT_OPTIONS:
            lo, hi = _INT_OPTIONS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise OptionError(f"option '{key}' must be a whole number from {lo} to {hi}")
            try:
                number = int(value) if not isinstance(value, float) or value.is_integer() else None
            except (ValueError, OverflowError):
                number = None
            if number is None or not lo <= number <= hi:
                raise OptionError(f"option '{key}' must be a whole number from {lo} to {hi}, got {value!r}")
            out[key] = number
        else:
            out[key] = value
    return out
