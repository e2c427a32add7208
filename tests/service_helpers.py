"""Starting and stopping real rscore services on loopback for the service tests (one copy, three suites)."""

from __future__ import annotations

import functools
import importlib.util
import io
import zipfile
from typing import Any

import httpx
import numpy as np
import pytest

from rscore.service import ServerThread, Settings, create_app


class Services:
    """``start(registry, **settings) -> httpx.Client`` bound to a fresh uvicorn thread; ``stop_all()`` at teardown.
    The client carries ``settings``, ``app`` and ``thread`` for tests that look inside."""

    def __init__(self) -> None:
        self.started: list[tuple[ServerThread, httpx.Client]] = []

    def start(self, registry: Any, **settings: Any) -> httpx.Client:
        s = Settings(**settings)
        app = create_app(s, registry=registry)
        thread = ServerThread(app)
        client = httpx.Client(base_url=thread.start(), timeout=30)
        client.settings, client.app, client.thread = s, app, thread  # type: ignore[attr-defined]
        self.started.append((thread, client))
        return client

    def stop_all(self) -> None:
        for thread, client in self.started:
            client.close()
            thread.stop()
        self.started.clear()


# ------------------------------------------------------------------------------- DICOM series for upload tests
# The skip marks of the service tests that read GeoTIFFs through the earth plugin: ``pytestmark = [*SERVICE_AND_EARTH]``
SERVICE_AND_EARTH = [
    pytest.mark.skipif(
        importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
        reason="the service needs fastapi, uvicorn and python-multipart",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rscore_earth") is None or importlib.util.find_spec("rasterio") is None,
        reason="needs the earth plugin and rasterio",
    ),
]

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def dicom_bytes(z: float, *, series_uid: str = "1.2.826.0.1.3680043.8.498.1", series_number: int = 1) -> bytes:
    """One 32 x 32 CT slice at height ``z``: air-ish background (0 HU) with a 12 x 12 block of bone (1376 HU)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("slice.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "1.2.3.4", series_uid
    ds.SeriesNumber, ds.FrameOfReferenceUID, ds.InstanceNumber = series_number, "1.2.3.5", int(z / 2.5) + 1
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.5
    ds.Rows, ds.Columns = 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    img = np.full((32, 32), 1024, np.int16)
    img[8:20, 8:20] = 2400
    ds.PixelData = img.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def series_slices() -> dict[str, bytes]:
    """Three slices of one series, 2.5 mm apart, named as in a scanner export's folder (needs pydicom)."""
    return {f"CT/IM{i:04d}": dicom_bytes(2.5 * i) for i in range(3)}


def zip_of(members: dict[str, bytes], *, mode: int | None = None, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()
