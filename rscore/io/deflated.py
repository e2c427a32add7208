"""How far a DICOM file in the Deflated Explicit VR Little Endian transfer syntax inflates, counted in bounded pieces.

pydicom inflates such a file whole, in memory, as it opens it (a 747 KB file took 1.6 GB), so callers measure it
first: the surgical DICOM reader for files the CLI, ``path`` inputs and folders name
(:mod:`rscore_surgical.deflated`), and the service for uploads (:func:`rscore.service.uploads.check_deflated_dicom`).
Each raises its own error (exit 2 / 413) when :func:`inflated_size` passes its limit.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

__all__ = ["DEFLATED", "inflated_size"]

DEFLATED = "1.2.840.10008.1.2.1.99"
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
