"""Cases for ``scripts/adversarial.py`` (category ``roots``): inputs a client gives the HTTP service that would make it
read outside its allowed roots, and frames / expansions past the service's limits; plus the CLI's video frame check.

Each service case builds, in its folder, ``data/`` (the one allowed root), ``private/`` beside it (what must not be
read: 16 x 16 float32 of 777 as raw bytes and as an HDF5 dataset) and ``svc/`` (the output root), then runs
``adversarial.py --upload --allowed data ...``: exit 0 for 200, 2 for a 4xx, 1 for a 5xx or leftovers.
The swap-a-link-between-check-and-open races need a fixed point inside the service: ``--swap SRC=TARGET`` and
``--rewrite SRC=FILE`` make the change when the engine starts reading (after the check and the pin, in the service's
process: :func:`after_the_pin`), and ``--expect-px N`` makes a 200 whose mask is not the checked file's an exit 1.
The swap before the pin, and jobs on both runners, are tests (``tests/test_service_roots_race.py``,
``test_service_folder_pinning.py``, ``test_service_prefect_pinning.py``).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

ERS = ('DatasetHeader Begin\n\tVersion = "6.0"\n\tDataSetType = ERStorage\n\tDataType = Raster\n\tByteOrder = LSBFirst\n'
       '{datafile}\tCoordinateSpace Begin\n\t\tDatum = "RAW"\n\t\tProjection = "RAW"\n\t\tCoordinateType = RAW\n'
       '\tCoordinateSpace End\n\tRasterInfo Begin\n\t\tCellType = IEEE4ByteReal\n\t\tNrOfLines = 16\n'
       '\t\tNrOfCellsPerLine = 16\n\t\tNrOfBands = 1\n\tRasterInfo End\nDatasetHeader End\n')  # fmt: skip
PDS = ('PDS_VERSION_ID = PDS3\nRECORD_TYPE = FIXED_LENGTH\nRECORD_BYTES = 64\nFILE_RECORDS = 16\n'
       '^IMAGE = ("../private/raw.bin", 1)\nOBJECT = IMAGE\n  LINES = 16\n  LINE_SAMPLES = 16\n  SAMPLE_TYPE = PC_REAL\n'
       '  SAMPLE_BITS = 32\n  BANDS = 1\nEND_OBJECT = IMAGE\nEND\n')  # fmt: skip


def _layout(d: Path) -> tuple[Path, Path]:
    data, private = d / "data", d / "private"
    for folder in (data, private, d / "svc"):
        folder.mkdir(exist_ok=True)
    (private / "raw.bin").write_bytes(np.full((16, 16), 777, np.float32).tobytes())
    if importlib.util.find_spec("h5py") is not None:
        import h5py

        with h5py.File(private / "s.h5", "w") as f:
            f["data"] = np.full((16, 16), 777, np.float32)
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no georeferencing: on purpose
        with rasterio.open(data / "base.tif", "w", driver="GTiff", width=16, height=16, count=1, dtype="float32") as ds:
            ds.write(np.tile(np.arange(16, dtype=np.float32) * 20, (16, 1))[None])
    return data, private


def _h5(path: Path, kind: str, private: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        if kind == "external link":
            f["data"] = h5py.ExternalLink(str(private / "s.h5"), "/data")
        elif kind == "external storage":
            f.create_dataset("data", shape=(16, 16), dtype="f4", external=[(str(private / "raw.bin"), 0, 1024)])
        else:
            layout = h5py.VirtualLayout(shape=(16, 16), dtype="f4")
            layout[:] = h5py.VirtualSource(str(private / "s.h5"), "data", shape=(16, 16))
            f.create_virtual_dataset("data", layout)


def _avi(path: Path, w: int, h: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for i in range(3):
        img = np.full((h, w, 3), 40, np.uint8)
        img[h // 4 : h // 2, 4 + 4 * i : w // 4 + 4 * i] = 240
        writer.write(img)
    writer.release()
    return path


def _header_bomb(path: Path, side: int = 16000) -> Path:
    """A 7 KB MJPEG AVI whose headers claim ``side`` x ``side`` frames (every header and JPEG SOF0 patched)."""
    b = bytearray(_avi(path.with_name("small.avi"), 64, 64).read_bytes())
    struct.pack_into("<II", b, b.find(b"avih") + 40, side, side)
    struct.pack_into("<ii", b, b.find(b"strf") + 12, side, side)
    struct.pack_into("<hhhh", b, b.find(b"strh") + 56, 0, 0, side, side)
    k = 0
    while (k := b.find(b"\xff\xc0", k)) >= 0:
        struct.pack_into(">HH", b, k + 5, side, side)
        k += 2
    path.with_name("small.avi").unlink()
    path.write_bytes(bytes(b))
    return path


def after_the_pin(swaps: list[str], rewrites: list[str]) -> None:
    """Wrap the engine's run (in the ``--upload`` process) so that, before it reads, each ``SRC=TARGET`` of ``swaps``
    is moved aside (``SRC.moved`` in ``TARGET``'s folder, outside the root) and replaced by a link to ``TARGET``, and
    each ``SRC=FILE`` of ``rewrites`` is rewritten in place (same inode) with ``FILE``'s bytes."""
    if not swaps and not rewrites:
        return
    from rscore import engine

    run = engine.run

    def changed_then_run(*args, **kwargs):
        for spec in swaps:
            src, target = (Path(v) for v in spec.split("=", 1))
            src.rename((target if target.is_dir() else target.parent) / (src.name + ".moved"))  # (kept, beside it)
            src.symlink_to(target, target_is_directory=target.is_dir())
        for spec in rewrites:
            src, data = (Path(v) for v in spec.split("=", 1))
            with open(src, "r+b") as fh:
                fh.truncate(0)
                fh.write(data.read_bytes())
        return run(*args, **kwargs)

    engine.run = changed_then_run


def _slices(folder: Path, n: int = 3, fill: int | None = None) -> None:
    """``n`` 32 x 32 CT slices (a 12 x 12 bone block each, or all ``fill``) in ``folder``."""
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import pydicom
    from service_helpers import dicom_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = dicom_bytes(2.5 * i)
        if fill is not None:
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.PixelData = np.full((32, 32), fill, np.int16).tobytes()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            data = buf.getvalue()
        (folder / f"IM{i}.dcm").write_bytes(data)


def roots_cases(add: Callable[..., None]) -> None:
    earth = ("rscore_earth", "rasterio", "fastapi", "httpx")

    def request(name: str, build: Callable[[Path], list[str]], expect: tuple[int, ...] = (2,),
                needs: tuple[str, ...] = earth) -> None:  # fmt: skip
        def setup(d: Path) -> list[str]:
            _layout(d)
            return ["--root", str(d / "svc"), "--allowed", str(d / "data"), "--plugin", "earth",
                    "--query", "elevation above 100 m", *build(d)]  # fmt: skip
        add(name, "roots", setup, expect, needs=needs, upload=True, timeout_s=120)

    def aux(name: str) -> list[str]:  # the earth reader opens an aux raster with any GDAL driver
        return ["--path", "base.tif", "--options", json.dumps({"aux": name, "bands": "other,elevation"})]

    request("aux: plain GeoTIFF under the root (control)", lambda d: aux("base.tif"), expect=(0,))
    for kind in ("external link", "external storage", "virtual dataset"):
        def nc(d: Path, kind: str = kind) -> list[str]:
            _h5(d / "data" / "x.nc", kind, d / "private")
            return aux("x.nc")

        request(f"aux: netCDF-4 {kind} out of the root", nc, needs=(*earth, "h5py"))
        request(f"path: netCDF-4 {kind} out of the root", lambda d, nc=nc: nc(d)[:0] + ["--path", "x.nc"],
                needs=(*earth, "h5py"))  # fmt: skip

    def upload_nc(d: Path) -> list[str]:
        _h5(d / "up.nc", "external link", d / "private")
        return [str(d / "up.nc")]

    request("upload: netCDF-4 external link out", upload_nc, needs=(*earth, "h5py"))

    def chained(d: Path) -> list[str]:
        import h5py

        with h5py.File(d / "data" / "inner.h5", "w") as f:
            f["data"] = h5py.ExternalLink(str(d / "private" / "s.h5"), "/data")
        with h5py.File(d / "data" / "outer.nc", "w") as f:
            f["data"] = h5py.ExternalLink(str(d / "data" / "inner.h5"), "/data")
        return aux("outer.nc")

    request("aux: HDF5 link via a file under the root", chained, needs=(*earth, "h5py"))

    def ers(d: Path) -> list[str]:
        (d / "data" / "x.ers").write_text(ERS.format(datafile='\tDataFile = "../private/raw.bin"\n'))
        return aux("x.ers")

    def pds(d: Path) -> list[str]:
        (d / "data" / "x.img").write_text(PDS)
        return aux("x.img")

    def ers_url(d: Path) -> list[str]:
        (d / "data" / "x.ers").write_text(ERS.format(datafile='\tDataFile = "/vsicurl/http://127.0.0.1:9/x"\n'))
        return aux("x.ers")

    def ers_ok(d: Path) -> list[str]:
        (d / "data" / "ramp").write_bytes(np.tile(np.arange(16, dtype=np.float32) * 20, (16, 1)).tobytes())
        (d / "data" / "ramp.ers").write_text(ERS.format(datafile=""))
        return aux("ramp.ers")

    request("aux: ERS header DataFile ../private", ers)
    request("aux: PDS label ^IMAGE ../private", pds)
    request("aux: ERS header naming a /vsicurl URL", ers_url)
    request("aux: ERS with its data file beside it (control)", ers_ok, expect=(0,))
    request("path: HDF5:\"..\"://data subdataset syntax", lambda d: ["--path", f'HDF5:"{d / "private" / "s.h5"}"://data'])
    request("path: NETCDF:file:var subdataset syntax", lambda d: ["--path", f"NETCDF:{d / 'private' / 's.h5'}:data"])

    # changed after the check and the pin, while the engine reads (see the module docstring)
    def private_tif(d: Path) -> Path:
        """``private/base.tif``: ``base.tif``'s grid, all 777 (256 px above 100 m, the checked ramp's far fewer)."""
        import rasterio

        (d / "private" / "base.tif").write_bytes((d / "data" / "base.tif").read_bytes())
        with rasterio.open(d / "private" / "base.tif", "r+") as ds:
            ds.write(np.full((1, 16, 16), 777, np.float32))
        return d / "private" / "base.tif"

    def vrt_out(d: Path) -> Path:
        (d / "vrt.xml").write_text(
            f'<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
            f"<SourceFilename>{private_tif(d)}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>"
            "</VRTRasterBand></VRTDataset>"
        )
        return d / "vrt.xml"

    def folder_swapped(d: Path) -> list[str]:
        private_tif(d)
        (d / "data" / "survey").mkdir()
        (d / "data" / "base.tif").rename(d / "data" / "survey" / "base.tif")
        return ["--path", "survey/base.tif", "--swap", f"{d / 'data' / 'survey'}={d / 'private'}", "--expect-px", "160"]

    request("path: its folder swapped for a link out, after the pin", folder_swapped, expect=(0,))
    def vrt_source_swapped(d: Path) -> list[str]:
        private_tif(d)
        (d / "data" / "tiles").mkdir()
        (d / "data" / "tiles" / "base.tif").write_bytes((d / "data" / "base.tif").read_bytes())
        (d / "data" / "m.vrt").write_text(
            '<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
            '<SourceFilename relativeToVRT="1">tiles/base.tif</SourceFilename><SourceBand>1</SourceBand>'
            "</SimpleSource></VRTRasterBand></VRTDataset>"
        )
        return ["--path", "m.vrt", "--options", json.dumps({"bands": "elevation"}), "--expect-px", "160",
                "--swap", f"{d / 'data' / 'tiles'}={d / 'private'}"]  # fmt: skip

    request("path: a VRT source's folder swapped for a link, after the pin", vrt_source_swapped, expect=(0,))
    request("path: GeoTIFF rewritten in place into a VRT leading out",
            lambda d: ["--path", "base.tif", "--rewrite", f"{d / 'data' / 'base.tif'}={vrt_out(d)}"])
    dicom = (*earth, "rscore_surgical", "pydicom")

    def series(d: Path, swap: str | None = None, fifo: bool = False) -> list[str]:
        _slices(d / "data" / "ct")
        _slices(d / "private" / "ct", fill=2400)
        (d / "private" / "ct" / "sub").mkdir()
        if fifo:
            import os

            os.mkfifo(d / "data" / "ct" / "notes")
        args = ["--plugin", "surgical", "--query", "bone", "--path", "ct", "--expect-px", str(3 * 144)]
        if swap:
            args += ["--swap", f"{d / 'data' / 'ct' / swap}={d / 'private' / 'ct' / swap}"]
        return args

    request("series: a slice swapped for a link out, after the pin", lambda d: series(d, "IM1.dcm"), (0,), dicom)
    request("series: a FIFO among the slices", lambda d: series(d, fifo=True), (0,), dicom)

    # limits: the service's extraction limit for a path input; video frames over the pixel limit
    def deflated(d: Path) -> list[str]:
        from rscore.testing import deflated_dicom

        (d / "data" / "ct.dcm").write_bytes(deflated_dicom())  # 16 MiB once inflated
        return ["--extract-mb", "4", "--plugin", "surgical", "--query", "bone", "--path", "ct.dcm"]

    request("path: deflated DICOM over the service's 4 MiB", deflated, needs=(*earth, "rscore_surgical", "pydicom"))
    request("upload: video with 16000x16000 frames (header)",
            lambda d: ["--plugin", "", "--query", "bright spots", str(_header_bomb(d / "bomb.avi"))],
            needs=("cv2", "fastapi", "httpx"))  # fmt: skip

    def cli(name: str, setup: Callable[[Path], list[str]]) -> None:
        add(name, "roots", setup, (2,), needs=("cv2",))

    cli("video 16000x16000 frames (header), default limit",
        lambda d: ["run", str(_header_bomb(d / "bomb.avi")), "bright spots", "--out", str(d / "out")])
    cli("video 640x480 frames, --max-pixels 1e5",
        lambda d: ["run", str(_avi(d / "v.avi", 640, 480)), "bright spots", "--max-pixels", "100000", "--out",
                   str(d / "out")])  # fmt: skip
