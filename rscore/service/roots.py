"""The allowed-roots primitives every service check shares: :class:`PathNotAllowed` (403) and whether a resolved path
lies under an allowed root and outside the service's private folders. Kept apart from
:mod:`rscore.service.security` so that the checks it calls (:mod:`rscore.service.linked`) need not import it back."""

from __future__ import annotations

import re
from pathlib import Path

from rscore.errors import OptionError

__all__ = ["PathNotAllowed", "RESULT_ID"]

RESULT_ID = re.compile(r"[0-9a-f]{32}")


class PathNotAllowed(OptionError):
    """A server-side path outside the allowed roots (traversal, symlink escape, absolute elsewhere)."""

    http_status = 403


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _private(path: Path, private: tuple[Path, ...]) -> bool:
    """Whether ``path`` is, or lies in, what the service keeps for itself under one of ``private`` (its output
    root): the root itself, a result folder (a result id), the upload staging, hidden lock and staging folders."""
    for root in private:
        if path == root:
            return True
        if path.is_relative_to(root):
            first = path.relative_to(root).parts[0]
            if RESULT_ID.fullmatch(first) or first.startswith("."):
                return True
    return False


def _allowed(path: Path, roots: tuple[Path, ...], private: tuple[Path, ...] = ()) -> bool:
    return _under(path, roots) and not _private(path, private)
