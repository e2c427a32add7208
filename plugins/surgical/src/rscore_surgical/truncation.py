"""DICOM files cut short (an interrupted copy or download), told apart from other undecodable or image-less files:
the error says what happened and what to do, and a slice cut inside its header is not skipped as a non-image object
(the series would be answered with a gap nobody was told of)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["truncated_pixels", "cut_short"]


def truncated_pixels(path: Path) -> str | None:
    """Why an uncompressed file's pixels cannot be decoded when the file was cut short (an interrupted copy or
    download: pydicom reads the shorter pixel data and fails reshaping it), else ``None``."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed or "PixelData" not in ds:
            return None
        frames = int(ds.get("NumberOfFrames") or 1)
        need = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * frames * ds.BitsAllocated // 8
        have = len(ds.PixelData)
    except Exception:  # noqa: BLE001 - only a better message is at stake: fall back to the decoder's
        return None
    if have >= need:
        return None
    return (f"the file is truncated: its pixel data holds {have:,} of the {need:,} bytes that {frames} frame(s) of "
            f"{ds.Rows}x{ds.Columns} {ds.BitsAllocated}-bit pixels need (an interrupted copy or download? copy it "
            "again from the archive)")


def cut_short(path: Path, ds: Any) -> str | None:
    """Why a file that says it is an image (its SOP class is an "... Image Storage") has no Rows/Columns: it was cut
    short before them (an interrupted copy); ``None`` otherwise. In a series folder it was skipped as a non-image
    object, and the volume answered on the other slices with a gap nobody was told of."""
    sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = str(getattr(sop, "name", "") or "")
    if not name.endswith("Image Storage") or ("Rows" in ds and "Columns" in ds):
        return None
    try:  # cut short = its last element claims more bytes than the file has (pydicom reads what there is)
        import pydicom

        last = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        tags = list(last.keys())
        raw = last.get_item(tags[-1]) if tags else None
        length, at = getattr(raw, "length", None), getattr(raw, "value_tell", None)
        if length is None or at is None or length == 0xFFFFFFFF or at + length <= path.stat().st_size:
            return None  # complete (a non-conformant object without an image is a non-image, as before)
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None
    return (f"the file is truncated: a {name} object that ends after {path.stat().st_size:,} bytes, before its image "
            "size (Rows/Columns) and pixel data (an interrupted copy or download? copy it again from the archive)")
