"""DICOM files in the Deflated Explicit VR Little Endian transfer syntax, measured before pydicom reads them.

pydicom inflates such a file whole, in memory, as it opens it (``stop_before_pixels`` too): a 747 KB file took
1.6 GB. :func:`check_inflated_size` inflates it first in bounded pieces (1 MiB at a time), only counting, and refuses
(:class:`~rscore.errors.InputError`, exit 2 / HTTP 4xx, the file named) one that expands past the limit:
``RSCORE_MAX_EXTRACT_MB`` (MiB; the service's extraction limit for uploads, the same setting), 1024 MiB by default.
Other files cost a read of their first 4 KiB. The service's upload path does the same for uploads
(:func:`rscore.service.uploads.check_deflated_dicom`); this covers files the CLI, ``path`` inputs and folders name.
Both count with :func:`rscore.io.deflated.inflated_size`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rscore.errors import InputError
from rscore.io.deflated import DEFAULT_MAX_MB, DEFLATED, inflated_size, max_extract_bytes

__all__ = ["DEFLATED", "DEFAULT_MAX_MB", "DeflatedTooLarge", "max_inflated_bytes", "check_inflated_size"]

_MIB = 1 << 20
_HEAD = 4096  # the file meta group (where the transfer syntax is named) is small
_checked: dict[tuple[str, int, int], tuple[int, bool]] = {}  # -> (bytes counted, whole file counted)
_lock = threading.Lock()


class DeflatedTooLarge(InputError):
    """A deflated DICOM file that expands past the limit (HTTP 413, exit 2)."""

    http_status = 413


def max_inflated_bytes() -> int:
    """The limit in bytes: a service's ``max_extract_mb`` while it runs a request, else ``RSCORE_MAX_EXTRACT_MB`` (a
    positive number of MiB), else :data:`DEFAULT_MAX_MB` (:func:`rscore.io.deflated.max_extract_bytes`)."""
    return max_extract_bytes()


def check_inflated_size(path: str | os.PathLike[str], max_bytes: int | None = None) -> int:
    """The bytes ``path`` inflates to when it is a deflated DICOM file (0 for any other file); an InputError naming
    it when that is more than ``max_bytes`` (default :func:`max_inflated_bytes`). Memoised per (file, size, mtime)."""
    p = Path(path)
    try:
        with open(p, "rb") as fp:
            head = fp.read(_HEAD)
            if head[128:132] != b"DICM" or DEFLATED.encode("ascii") not in head:
                return 0
            st = os.fstat(fp.fileno())
            key = (os.path.realpath(p), st.st_size, st.st_mtime_ns)
            with _lock:
                known = _checked.get(key)
            limit = max_inflated_bytes() if max_bytes is None else max_bytes
            if known is None or (not known[1] and known[0] <= limit):  # unknown, or counted only up to a lower limit
                count = inflated_size(fp, limit)
                known = (count, count <= limit)
                with _lock:
                    _checked[key] = known
            known_bytes = known[0]
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=p) from None
    if known_bytes > limit:
        raise DeflatedTooLarge(
            f"a deflated DICOM file that expands to more than {limit / _MIB:g} MiB (RSCORE_MAX_EXTRACT_MB); "
            "pydicom would inflate it whole in memory", path=p
        )  # fmt: skip
    return known_bytes
