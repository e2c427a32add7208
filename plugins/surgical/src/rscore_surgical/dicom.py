"""DICOM reader: single files (incl. multi-frame) and folders holding one series.

Slices are ordered along the slice normal (the cross product of the two ImageOrientationPatient direction cosines)
by ``ImagePositionPatient . normal`` - never by file name or InstanceNumber, which scanners and exporters do not
keep consistent. A folder with several series is an error listing them unless ``-O series=UID`` picks one.

CT pixel values are converted to Hounsfield units with RescaleSlope/RescaleIntercept (band role ``hu``); other
modalities keep their stored values (role ``gray``), colour images (ultrasound RGB, YBR) become ``red/green/blue``.

A scene is **one slice** of the series: ``-O slice=N`` (0-based, in sorted order; default the middle slice). The
scene's :class:`~rscore.types.DicomInfo` still describes the whole series (all SOP instance UIDs and positions in
sorted order) and ``metadata["slice_index"]`` says which slice it is, so outputs can reference the source instance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.sdk import Reader
from rscore.types import ArraySource, DicomInfo, Scene

log = logging.getLogger(__name__)

NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})


@dataclass(frozen=True)
class _Slice:
    path: Path
    frame: int | None  # frame index within a multi-frame file
    position: tuple[float, float, float] | None
    sop_uid: str


def _read(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", path=path) from None


def _normal(ds: Any) -> np.ndarray | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    n = np.cross(row, col)
    return n / (np.linalg.norm(n) or 1.0)


def _position(ds: Any) -> tuple[float, float, float] | None:
    ipp = getattr(ds, "ImagePositionPatient", None)
    return None if ipp is None or len(ipp) != 3 else tuple(float(v) for v in ipp)


class DicomReader(Reader):
    name = "dicom"
    suffixes = (".dcm", ".dicom", ".ima")
    accepts_directories = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if path.is_dir():
            return (path / "DICOMDIR").exists() or any(_is_dicom(p) for p in _files(path, limit=50))
        return head[128:132] == b"DICM"

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        files = _files(path) if path.is_dir() else [path]
        headers = []
        for f in files:
            if not _is_dicom(f):
                continue
            ds = _read(f, stop_before_pixels=True)
            modality = str(getattr(ds, "Modality", ""))
            if "Rows" not in ds or "Columns" not in ds or modality in NON_IMAGE_MODALITIES:
                # segmentations, structured reports, DICOMDIRs... sit beside images in exported folders
                if f == path:
                    raise InputError(f"has no image pixel data (modality {modality or 'unknown'})", path=path)
                continue
            headers.append((f, ds))
        if not headers:
            raise InputError("contains no DICOM images with pixel data", path=path)
        series: dict[str, list[tuple[Path, Any]]] = {}
        for f, ds in headers:
            series.setdefault(str(getattr(ds, "SeriesInstanceUID", "unknown")), []).append((f, ds))
        wanted = options.get("series")
        if wanted:
            if wanted not in series:
                raise OptionError(f"series {wanted} is not in {path} (have: {', '.join(series)})")
            chosen = series[wanted]
        elif len(series) > 1:
            listing = "; ".join(f"{uid} ({len(v)} files, {getattr(v[0][1], 'Modality', '?')})" for uid, v in series.items())
            raise InputError(f"holds {len(series)} series; pick one with -O series=UID: {listing}", path=path)
        else:
            chosen = next(iter(series.values()))
        return self._scene(path, chosen, options)

    def _scene(self, path: Path, files: list[tuple[Path, Any]], options: Mapping[str, Any]) -> Scene:
        first = files[0][1]
        slices: list[_Slice] = []
        for f, ds in files:
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            if frames > 1:
                slices += [_Slice(f, i, _frame_position(ds, i), str(ds.SOPInstanceUID)) for i in range(frames)]
            else:
                slices.append(_Slice(f, None, _position(ds), str(getattr(ds, "SOPInstanceUID", ""))))
        normal = _normal(first)
        if len(slices) > 1:
            if normal is None or any(s.position is None for s in slices):
                raise InputError("series lacks ImageOrientationPatient/ImagePositionPatient: slices cannot be ordered",
                                 path=path)
            slices.sort(key=lambda s: float(np.dot(s.position, normal)))
        index = options.get("slice")
        index = len(slices) // 2 if index is None else int(index)
        if not 0 <= index < len(slices):
            raise OptionError(f"slice {index} is out of range: the series has {len(slices)} slices (0-{len(slices) - 1})")
        sl = slices[index]
        ds = _read(sl.path)
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises several kinds for unsupported transfer syntaxes / corrupt data
            raise InputError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})", path=sl.path) from None
        if sl.frame is not None:
            pixels = pixels[sl.frame]
        modality = str(getattr(ds, "Modality", "OT"))
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
        if pixels.ndim == 3 and pixels.shape[-1] == 3:
            if photometric.startswith("YBR"):
                from pydicom.pixels import convert_color_space

                pixels = convert_color_space(pixels, photometric, "RGB")
            array, roles = np.moveaxis(pixels, -1, 0).copy(), ("red", "green", "blue")
        elif modality == "CT":
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
            array, roles = (pixels.astype(np.float32) * slope + intercept)[None], ("hu",)
        else:
            array = pixels.astype(np.float32 if photometric == "MONOCHROME1" else pixels.dtype)
            if photometric == "MONOCHROME1":
                array = array.max() - array
            array, roles = array[None], ("gray",)
        spacing = getattr(ds, "PixelSpacing", None) or getattr(first, "PixelSpacing", None)
        pixel_size = (float(spacing[1]), float(spacing[0])) if spacing else None
        info = DicomInfo(
            modality=modality,
            study_uid=str(getattr(ds, "StudyInstanceUID", "")),
            series_uid=str(getattr(ds, "SeriesInstanceUID", "")),
            frame_of_reference_uid=getattr(ds, "FrameOfReferenceUID", None),
            sop_instance_uids=tuple(s.sop_uid for s in slices),
            pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
            slice_thickness_mm=float(ds.SliceThickness) if getattr(ds, "SliceThickness", None) else None,
            orientation=tuple(float(v) for v in ds.ImageOrientationPatient) if getattr(ds, "ImageOrientationPatient", None) else None,
            positions=tuple(s.position for s in slices if s.position is not None),
        )
        warnings = () if pixel_size else (f"{sl.path.name}: no PixelSpacing; areas in pixels only",)
        window = _file_window(ds)
        return Scene(
            source=ArraySource(array),
            kind="volume" if len(slices) > 1 else "image",
            band_roles=roles,
            path=path,
            reader=self.name,
            pixel_size=pixel_size,
            unit="mm" if pixel_size else None,
            dicom=info,
            warnings=warnings,
            metadata={"slice_index": index, "slice_count": len(slices), "slice_file": str(sl.path),
                      "modality": modality, "window": window},
        )


def _frame_position(ds: Any, i: int) -> tuple[float, float, float] | None:
    try:
        return tuple(float(v) for v in ds.PerFrameFunctionalGroupsSequence[i].PlanePositionSequence[0].ImagePositionPatient)
    except (AttributeError, IndexError):
        return None


def _file_window(ds: Any) -> tuple[float, float] | None:
    c, w = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if c is None or w is None:
        return None
    first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
    return first(c), first(w)


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _files(folder: Path, limit: int | None = None) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "DICOMDIR":
            out.append(p)
            if limit and len(out) >= limit:
                break
    return out
