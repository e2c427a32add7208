"""Fixtures for the surgical plugin tests: synthetic DICOM files written with pydicom, operator contexts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rscore.sdk import OpContext
from rscore.types import Request, Scene

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture(autouse=True)
def _keyword_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, model-free template matching for these tests."""
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] | None = (0.8, 0.7),
    instance_number: int = 1,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    photometric: str | None = None,
    padding: int | None = None,
    preamble: bool = True,
    rows_cols: tuple[int, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one DICOM image. ``pixels``: (rows, cols) int16/uint16, or (rows, cols, 3) uint8; None = no PixelData."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    colour = pixels is not None and pixels.ndim == 3
    sop_class = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "US": US_IMAGE_STORAGE}.get(modality, CT_IMAGE_STORAGE)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if preamble else ImplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = generate_uid()
    ds.InstanceNumber = instance_number
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.5
    rows, cols = rows_cols or (pixels.shape[:2] if pixels is not None else (8, 8))
    ds.Rows, ds.Columns = rows, cols
    if colour:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        signed = pixels is None or pixels.dtype.kind == "i"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric or "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
        if slope is not None:
            ds.RescaleSlope = slope
        if intercept is not None:
            ds.RescaleIntercept = intercept
        if padding is not None:
            ds.PixelPaddingValue = padding
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # "raw" DICOM as old exporters write it: no preamble, no DICM magic, no file meta
        ds.preamble = None
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def write_series(
    folder: Path,
    slices: Sequence[np.ndarray],
    positions: Sequence[Sequence[float]],
    *,
    file_order: Sequence[int] | None = None,
    **kw: Any,
) -> Path:
    """One series: ``slices[k]`` at ``positions[k]``, written to files named in ``file_order`` (default shuffled)."""
    from pydicom.uid import generate_uid

    study, series = kw.pop("study_uid", None) or generate_uid(), kw.pop("series_uid", None) or generate_uid()
    extra = dict(kw.pop("extra", None) or {})
    extra.setdefault("FrameOfReferenceUID", generate_uid())  # one frame of reference per series, as scanners write
    kw["extra"] = extra
    n = len(slices)
    order = list(file_order) if file_order is not None else [(3 * i + 1) % n for i in range(n)]
    if sorted(order) != list(range(n)):
        order = list(range(n))[::-1]
    for file_no, k in enumerate(order):
        write_dicom(
            folder / f"img{file_no:03d}.dcm", slices[k], position=positions[k], study_uid=study, series_uid=series,
            instance_number=n - file_no, **kw,
        )
    return folder


@pytest.fixture
def dicom_writer() -> Callable[..., Path]:
    return write_dicom


@pytest.fixture
def series_writer() -> Callable[..., Path]:
    return write_series


@pytest.fixture
def make_ctx() -> Callable[..., OpContext]:
    """``make_ctx(scene, options=None, window=None)``: an operator context with every registered operator."""
    from rscore.plugins import get_registry

    operators = get_registry().operators

    def make(scene: Scene, options: Mapping[str, Any] | None = None, window: Any = None) -> OpContext:
        request = Request("test", plugin="surgical", options=dict(options or {}))
        return OpContext(scene, request, operators, window, params=request.options)

    return make


def ct_phantom(size: int = 96) -> np.ndarray:
    """An axial CT slice in HU: air around an elliptic body of soft tissue (+40) with a fat rim (-100), two lungs
    (-850), a vertebra (cortical ring +1000 around trabecular +400), and a table (+100) below, not touching the body.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size * 0.45, size * 0.5
    img = np.full((size, size), -1000.0, np.float32)
    outer = ((yy - cy) / (size * 0.33)) ** 2 + ((xx - cx) / (size * 0.42)) ** 2 <= 1
    inner = ((yy - cy) / (size * 0.28)) ** 2 + ((xx - cx) / (size * 0.37)) ** 2 <= 1
    img[outer] = -100.0
    img[inner] = 40.0
    for lx in (cx - size * 0.17, cx + size * 0.17):
        lung = ((yy - cy + size * 0.05) / (size * 0.14)) ** 2 + ((xx - lx) / (size * 0.09)) ** 2 <= 1
        img[lung] = -850.0
    r = np.hypot(yy - (cy + size * 0.17), xx - cx)
    img[r <= size * 0.07] = 1000.0
    img[r <= size * 0.045] = 400.0
    img[int(size * 0.86) : int(size * 0.86) + 3, int(size * 0.1) : int(size * 0.9)] = 100.0  # the table
    return img


@pytest.fixture
def phantom() -> Callable[[int], np.ndarray]:
    return ct_phantom
