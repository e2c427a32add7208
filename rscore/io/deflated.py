"""How far a DICOM file in the Deflated Explicit VR Little Endian transfer syntax inflates, counted in bounded pieces.

pydicom inflates such a file whole, in memory, as it opens it (a 747 KB file took 1.6 GB), so callers measure it
first: the surgical DICOM reader for files the CLI, ``path`` inputs and folders name
(:mod:`rscore_surgical.deflated`), and the service for uploads (:func:`rscore.service.uploads.check_deflated_dicom`).
Each raises its own error (exit 2 / 413) when :func:`inflated_size` passes its limit.

The limit (:func:`max_extract_bytes`) is one setting with one name, ``RSCORE_MAX_EXTRACT_MB``: a service's
``Settings.max_extract_mb`` (read from that variable by ``Settings.from_env``, or given directly) while the service
runs a request or job (:func:`extract_limit`, a context variable: one service's setting does not leak into another's
threads), else the environment variable, else :data:`DEFAULT_MAX_MB`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import BinaryIO

from rscore.errors import OptionError

__all__ = [
    "DEFLATED", "DEFAULT_MAX_MB", "ENV_VAR", "inflated_size", "max_extract_bytes", "env_max_extract_mb", "extract_limit",
]

DEFLATED = "1.2.840.10008.1.2.1.99"
DEFAULT_MAX_MB = 1024.0
ENV_VAR = "RSCORE_MAX_EXTRACT_MB"
_MIB = 1 << 20
_limit: ContextVar[int | None] = ContextVar("rscore_max_extract_bytes", default=None)


def max_extract_bytes() -> int:
    """The extraction limit in bytes: the one :func:`extract_limit` set for this context (a service's setting), else
    ``RSCORE_MAX_EXTRACT_MB`` (a positive number of MiB; anything else is an OptionError naming it), else
    :data:`DEFAULT_MAX_MB`."""
    given = _limit.get()
    return given if given is not None else int(env_max_extract_mb() * _MIB)


def env_max_extract_mb() -> float:
    """``RSCORE_MAX_EXTRACT_MB`` (a positive number of MiB; anything else is an OptionError naming it), else
    :data:`DEFAULT_MAX_MB`: the default of the service's ``Settings.max_extract_mb`` too."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_MB
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not mb > 0 or mb == float("inf"):
        raise OptionError(f"{ENV_VAR} must be a positive number of MiB, got {text!r}")
    return mb


@contextmanager
def extract_limit(max_bytes: int) -> Iterator[None]:
    """Within the block (this thread or task), readers measure deflated inputs against ``max_bytes``."""
    token = _limit.set(int(max_bytes))
    try:
        yield
    finally:
        _limit.reset(token)
_PIECE = 1 << 20  # inflate 1 MiB at a time
_DICM_OFFSET = 128


def inflated_size(fp: BinaryIO, limit: int) -> int:
    """The bytes the data set of the open DICOM file ``fp`` inflates to when it is deflated (0 for any other file or
    a header pydicom cannot read - the reader then says what is wrong in its own words); counting stops one piece past
    ``limit``, at the end of the deflate stream (pydicom pads after it) or at corrupt data."""
    fp.seek(0)
    if fp.read(_DICM_OFFSET + 4)[_DICM_OFFSET:] != b"DICM":
        return 0
    try:
        from pydicom.filereader import _read_file_meta_info, read_preamble
    except ImportError:  # pragma: no cover - nothing reads DICOM without pydicom
        return 0
    fp.seek(0)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:  # a broken header
        return 0
    if str(getattr(meta, "TransferSyntaxUID", "")) != DEFLATED:
        return 0
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fp.read(_PIECE):
            data = chunk
            while data:
                piece = inflater.decompress(data, _PIECE)
                total += len(piece)
                if total > limit:
                    return total
                if inflater.eof or (not piece and len(inflater.unconsumed_tail) >= len(data)):
                    return total  # the stream ended (or makes no progress): what follows is not inflated
                data = inflater.unconsumed_tail
    except zlib.error:
        return total  # corrupt: the reader says so when it reads it
    return total
