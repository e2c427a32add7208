"""Replay a matrix of bad inputs against the ``rscore`` CLI and print one line per case.

Each case runs ``python -m rscore ...`` as a real subprocess in its own folder (with its own ``TMPDIR``), and prints:
its exit code, the first line of stderr, and what it left behind (files or folders that were not there before,
other than the output folder of a successful run; ``rscore-*`` folders in its ``TMPDIR``). A case whose exit code is
not one of those expected, that prints a traceback, or that leaves anything behind is marked ``!!``. The last line
is a summary. Categories: empty, truncated, garbage, bombs (per format), odd DICOM series, dead streams, hostile
paths, bad options, signals, concurrency, and uploads: hostile DICOM series archives posted to the HTTP service
(``python scripts/adversarial.py --upload FILE...`` starts the service on loopback in that process, posts the file(s)
to ``/v1/segment`` and exits 0 for 200, 2 for a 4xx, 1 for a 5xx or anything left in the service's staging folder;
``--allowed DIR --path NAME`` posts a server-side path instead), and the roots cases of ``adversarial_roots.py``
(files that name files outside the allowed roots, video frames over the pixel limit, the extraction limit).

    python scripts/adversarial.py                 # all cases, 2 at a time
    python scripts/adversarial.py -k dicom -j 1   # the cases whose name contains "dicom"
    python scripts/adversarial.py --keep /tmp/adv # keep the case folders for a look

Needs the four plugins installed; cases whose plugin, module or shared data is missing are reported as skipped.
Real data: ``RSCORE_SHARED_DATA`` or ``<repo>/../shared/data`` (a truncated copy of a real clip).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Case:
    name: str
    category: str
    setup: Callable[[Path], list[str]]  # builds inputs in the case folder, returns the CLI arguments
    expect: tuple[int, ...] = (2,)
    needs: tuple[str, ...] = ()  # modules that must be importable
    signal_after: tuple[int, str] | None = None  # (signal, glob that must exist under the folder or TMPDIR first)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 180
    concurrent: int = 1  # run this many copies at once (concurrency cases)
    upload: bool = False  # the arguments are for --upload (a request to the HTTP service), not for the rscore CLI


# ------------------------------------------------------------------------------------------------ input makers
def png_bytes(h: int = 40, w: int = 40) -> bytes:
    import io

    from PIL import Image

    img = np.zeros((h, w, 3), np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = 250
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def image_bytes(fmt: str) -> bytes:
    import io

    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def png_bomb(w: int, h: int) -> bytes:
    """A valid PNG header declaring w x h (greyscale) with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (w + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    return b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02D\x01\x00;"


def bmp_bomb() -> bytes:
    header = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def jpeg_bomb() -> bytes:
    data = bytearray(image_bytes("JPEG"))
    i = data.find(b"\xff\xc0")  # SOF0: precision(1) height(2) width(2)
    data[i + 5: i + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def write_tif(path: Path, n: int, *, sparse: bool = False, crs: bool = True, dtype: str = "float32") -> Path:
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=n, height=n, count=1, dtype=dtype, tiled=True, blockxsize=256,
                   blockysize=256)
    if crs:
        profile.update(crs="EPSG:32617", transform=from_origin(700000, 9600000, 10, 10))
    if sparse:
        profile.update(sparse_ok=True, compress="deflate")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.ones((1, 256, 256), dtype), window=rasterio.windows.Window(0, 0, 256, 256))
        return path
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    dem = np.sin(x / 50) * 80 + np.cos(y / 70) * 60 + x * 0.3
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(dem[None].astype(dtype))
    return path


def write_dicom(path: Path, pixels: np.ndarray | None, *, series_uid: str | None = None, series_number: int = 1,
                z: float = 0.0, rows_cols: tuple[int, int] | None = None, modality: str = "CT",
                study_uid: str | None = None, instance: int = 1) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid or "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 2.5
    rows, cols = rows_cols or (pixels.shape if pixels is not None else (32, 32))
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct(n: int = 32) -> np.ndarray:
    img = np.full((n, n), 1024, np.int16)
    img[8:20, 8:20] = 2400
    return img


def shared_clip() -> Path | None:
    root = os.environ.get("RSCORE_SHARED_DATA") or str(REPO.parent / "shared" / "data")
    p = Path(root) / "construction" / "intel_worker-zone-detection_from_gif.mp4"
    return p if p.is_file() else None


class SilentServer:
    """A TCP listener that accepts and never answers (a stream that is up but dead)."""

    def __init__(self, reply: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.reply:
                try:
                    conn.recv(4096)
                    conn.sendall(self.reply)
                    conn.close()
                except OSError:
                    pass


# ------------------------------------------------------------------------------------------------------ cases
def cases(servers: dict[str, SilentServer]) -> list[Case]:
    Q = "bright spots"
    out: list[Case] = []

    def add(name: str, category: str, setup: Callable[[Path], list[str]], expect: tuple[int, ...] = (2,), **kw) -> None:
        out.append(Case(name, category, setup, expect, **kw))

    def file_case(fname: str, data: bytes | Callable[[], bytes], *extra: str, query: str = Q) -> Callable[[Path], list[str]]:
        def setup(d: Path) -> list[str]:
            (d / fname).write_bytes(data() if callable(data) else data)
            return ["run", str(d / fname), query, *extra, "--out", str(d / "out")]
        return setup

    # empty
    for suffix in ("png", "jpg", "tif", "gif", "bmp", "webp", "mp4", "avi", "dcm", "npy"):
        add(f"empty .{suffix}", "empty", file_case(f"empty.{suffix}", b""))
    add("empty folder", "empty", lambda d: (d.joinpath("f").mkdir(), ["run", str(d / "f"), Q])[1])
    add("empty query", "empty", lambda d: (d.joinpath("a.png").write_bytes(png_bytes()), ["run", str(d / "a.png"), "  "])[1])
    add("empty DICOM folder", "empty", lambda d: (d.joinpath("s").mkdir(), ["run", "-p", "surgical", str(d / "s"), "bone"])[1],
        needs=("rscore_surgical",))

    # truncated
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tif")):
        add(f"truncated .{suffix} (half)", "truncated",
            file_case(f"half.{suffix}", lambda fmt=fmt: image_bytes(fmt)[: len(image_bytes(fmt)) // 2]), expect=(2,))
    add("truncated GeoTIFF (earth)", "truncated",
        lambda d: (d.joinpath("t.tif").write_bytes(write_tif(d / "full.tif", 512).read_bytes()[:20000]),
                   (d / "full.tif").unlink(), ["run", "-p", "earth", str(d / "t.tif"), "steep slopes", "--out", str(d / "out")])[2],
        needs=("rscore_earth",))
    add("truncated DICOM", "truncated",
        lambda d: (d.joinpath("t.dcm").write_bytes(write_dicom(d / "x.dcm", ct()).read_bytes()[:700]), (d / "x.dcm").unlink(),
                   ["run", "-p", "surgical", str(d / "t.dcm"), "bone", "--out", str(d / "out")])[2], needs=("rscore_surgical",))
    clip = shared_clip()
    if clip is not None:
        for cut in (90_000, 30_000, 2_000):
            add(f"truncated mp4 ({cut} B)", "truncated", file_case(f"cut{cut}.mp4", lambda cut=cut: clip.read_bytes()[:cut],
                                                                    query="workers in hi-vis vests"),
                expect=(0, 2))
            add(f"truncated mp4 ({cut} B) --strict", "truncated",
                file_case(f"cuts{cut}.mp4", lambda cut=cut: clip.read_bytes()[:cut], "--strict", query="workers in hi-vis vests"))

    # garbage
    rng = np.random.default_rng(7)
    for suffix in ("png", "jpg", "tif", "gif", "mp4", "dcm", "bmp", "webp", "mov"):
        add(f"random bytes .{suffix}", "garbage", file_case(f"noise.{suffix}", rng.bytes(20_000)))
    add("text named .png", "garbage", file_case("notes.png", b"hello, not an image\n" * 100))
    add("PNG magic + garbage", "garbage", file_case("broken.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(5000)))
    add("TIFF magic + garbage", "garbage", file_case("broken.tif", b"II*\x00" + rng.bytes(5000)))
    add("TIFF magic + garbage (earth)", "garbage",
        lambda d: (d.joinpath("b.tif").write_bytes(b"II*\x00" + rng.bytes(5000)), ["run", "-p", "earth", str(d / "b.tif"), "steep slopes"])[1],
        needs=("rscore_earth",))
    add("DICM magic + garbage", "garbage",
        lambda d: (d.joinpath("b.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(3000)), ["run", "-p", "surgical", str(d / "b.dcm"), "bone"])[1],
        needs=("rscore_surgical",))
    add("mp4 ftyp + garbage", "garbage", file_case("b.mp4", b"\x00\x00\x00\x18ftypisom" + rng.bytes(8000)))
    add("GIF magic + garbage", "garbage", file_case("b.gif", b"GIF89a" + rng.bytes(3000)))

    # bombs
    add("PNG 100k x 100k header", "bomb", file_case("bomb.png", lambda: png_bomb(100_000, 100_000)))
    add("PNG 20k x 20k under --max-pixels 1e6", "bomb", file_case("b.png", lambda: png_bomb(20_000, 20_000), "--max-pixels", "1000000"))
    add("JPEG 65k x 65k header", "bomb", file_case("bomb.jpg", jpeg_bomb))
    add("GIF 65k x 65k screen", "bomb", file_case("bomb.gif", gif_bomb))
    add("BMP 100k x 100k header", "bomb", file_case("bomb.bmp", bmp_bomb))
    add("sparse TIFF 100k x 100k (image reader)", "bomb",
        lambda d: (write_tif(d / "b.tif", 100_000, sparse=True, crs=False), ["run", str(d / "b.tif"), Q])[1], needs=("rasterio",))
    add("sparse GeoTIFF 100k x 100k (earth)", "bomb",
        lambda d: (write_tif(d / "b.tif", 100_000, sparse=True), ["run", "-p", "earth", str(d / "b.tif"), "landslide-prone areas"])[1],
        needs=("rscore_earth",))
    add("GeoTIFF over RSCORE_MAX_PIXELS", "bomb",
        lambda d: (write_tif(d / "b.tif", 600), ["run", "-p", "earth", str(d / "b.tif"), "steep slopes"])[1],
        needs=("rscore_earth",), env={"RSCORE_MAX_PIXELS": "100000"})
    add("DICOM 30000 x 30000 header", "bomb",
        lambda d: (write_dicom(d / "big.dcm", None, rows_cols=(30000, 30000)), ["run", "-p", "surgical", str(d / "big.dcm"), "bone"])[1],
        needs=("rscore_surgical",))
    add("image folder of 2000 frames", "bomb",
        lambda d: ([d.joinpath("frames").mkdir()] + [d.joinpath("frames", f"{i:05d}.png").write_bytes(png_bytes(16, 16)) for i in range(2000)],
                   ["run", str(d / "frames"), Q, "-O", "max_frames=5", "--out", str(d / "out")])[1], expect=(0, 2))

    # odd DICOM series
    def series(d: Path, kind: str) -> list[str]:
        s = d / "series"
        if kind == "mixed series":
            for i in range(3):
                write_dicom(s / f"a{i}.dcm", ct(), series_uid="1.2.3.10", series_number=1, z=i * 2.5, instance=i + 1)
                write_dicom(s / f"b{i}.dcm", ct(), series_uid="1.2.3.11", series_number=2, z=i * 2.5, instance=i + 1)
        elif kind == "ambiguous SeriesNumber":
            for i in range(2):
                write_dicom(s / f"a{i}.dcm", ct(), series_uid="1.2.3.20", series_number=7, z=i * 2.5)
                write_dicom(s / f"b{i}.dcm", ct(), series_uid="1.2.3.21", series_number=7, z=i * 2.5)
            return ["run", "-p", "surgical", str(s), "bone", "-O", "series=7", "--out", str(d / "out")]
        elif kind == "unknown series":
            for i in range(2):
                write_dicom(s / f"a{i}.dcm", ct(), series_number=1, z=i * 2.5)
            return ["run", "-p", "surgical", str(s), "bone", "-O", "series=99", "--out", str(d / "out")]
        elif kind == "mixed sizes":
            write_dicom(s / "a.dcm", ct(32), series_uid="1.2.3.30", z=0)
            write_dicom(s / "b.dcm", ct(48), series_uid="1.2.3.30", z=2.5)
        elif kind == "duplicate positions":
            for i in range(3):
                write_dicom(s / f"a{i}.dcm", ct(), series_uid="1.2.3.40", z=0.0, instance=i + 1)
        elif kind == "no pixel data":
            for i in range(2):
                write_dicom(s / f"a{i}.dcm", None, series_uid="1.2.3.50", z=i * 2.5)
        elif kind == "one slice":
            write_dicom(s / "a.dcm", ct(), z=0)
        elif kind == "DICOM among junk":
            write_dicom(s / "a.dcm", ct(), series_uid="1.2.3.60", z=0)
            write_dicom(s / "b.dcm", ct(), series_uid="1.2.3.60", z=2.5)
            (s / "notes.txt").write_text("scanner export notes")
            (s / "junk.dcm").write_bytes(b"not dicom at all" * 10)
        return ["run", "-p", "surgical", str(s), "bone", "--out", str(d / "out")]

    for kind, expect in (("mixed series", (0, 2)), ("ambiguous SeriesNumber", (2,)), ("unknown series", (2,)),
                         ("mixed sizes", (0, 2)), ("duplicate positions", (0, 2)), ("no pixel data", (2,)),
                         ("one slice", (0,)), ("DICOM among junk", (0, 2))):
        add(f"DICOM {kind}", "dicom", lambda d, kind=kind: series(d, kind), expect=expect, needs=("rscore_surgical", "pydicom"))

    # dead streams
    add("rtsp closed port", "stream", lambda d: ["run", "rtsp://127.0.0.1:9/live", Q, "-O", "open_timeout_s=3", "--out", str(d / "out")],
        timeout_s=120)
    add("http closed port", "stream", lambda d: ["run", "http://127.0.0.1:9/cam.mjpg", Q, "-O", "open_timeout_s=3", "--out", str(d / "out")],
        timeout_s=120)
    add("rtsp silent server", "stream",
        lambda d: ["run", f"rtsp://127.0.0.1:{servers['silent'].port}/live", Q, "-O", "open_timeout_s=3", "-O",
                   "read_timeout_s=3", "--out", str(d / "out")], timeout_s=120)
    add("http garbage server", "stream",
        lambda d: ["run", f"http://127.0.0.1:{servers['garbage'].port}/cam.mjpg", Q, "-O", "open_timeout_s=3",
                   "--out", str(d / "out")], timeout_s=120)
    add("rtsp unresolvable host", "stream", lambda d: ["run", "rtsp://no-such-host.invalid/live", Q, "-O", "open_timeout_s=3"],
        timeout_s=120)
    add("ftp scheme", "stream", lambda d: ["run", "ftp://127.0.0.1/x.mp4", Q])

    # hostile paths
    def with_png(d: Path) -> Path:
        (d / "a.png").write_bytes(png_bytes())
        return d / "a.png"

    add("missing file", "path", lambda d: ["run", str(d / "nope.png"), Q])
    add("directory as input", "path", lambda d: (d.joinpath("dir").mkdir(), ["run", str(d / "dir"), Q])[1])
    add("symlink loop", "path", lambda d: (d.joinpath("loop.png").symlink_to(d / "loop.png"), ["run", str(d / "loop.png"), Q])[1])
    add("broken symlink", "path", lambda d: (d.joinpath("dangling.png").symlink_to(d / "gone.png"), ["run", str(d / "dangling.png"), Q])[1])
    add("FIFO input", "path", lambda d: (os.mkfifo(d / "pipe.png"), ["run", str(d / "pipe.png"), Q])[1], timeout_s=60)
    add("/dev/zero input", "path", lambda d: ["run", "/dev/zero", Q], timeout_s=60)
    add("newline in name", "path", lambda d: ["run", str(_touch_png(d, "a\nb.png")), Q, "--out", str(d / "out")], expect=(0,))
    add("300-char name", "path", lambda d: ["run", str(d / ("x" * 300 + ".png")), Q])
    add("non-UTF-8 name", "path", lambda d: ["run", os.fsdecode(bytes(d) + b"/\xff\xfe.png"), Q])
    add("--out is a file", "path", lambda d: (d.joinpath("f.txt").write_text("mine"), ["run", str(with_png(d)), Q, "--out", str(d / "f.txt")])[1])
    add("--out holds user files", "path",
        lambda d: (d.joinpath("o").mkdir(), d.joinpath("o", "thesis.tex").write_text("x"), ["run", str(with_png(d)), Q, "--out", str(d / "o")])[2])
    add("--out with result.json {} + user files", "path",
        lambda d: (d.joinpath("o").mkdir(), d.joinpath("o", "result.json").write_text("{}"), d.joinpath("o", "data.csv").write_text("1"),
                   ["run", str(with_png(d)), Q, "--out", str(d / "o")])[3])
    add("--out under a read-only folder", "path",
        lambda d: (d.joinpath("ro").mkdir(), os.chmod(d / "ro", 0o500), ["run", str(with_png(d)), Q, "--out", str(d / "ro" / "o")])[2],
        expect=(0, 2) if os.geteuid() == 0 else (2,))
    add("--out deep new path", "path", lambda d: ["run", str(with_png(d)), Q, "--out", str(d / "a" / "b" / "c")], expect=(0,))
    add("--out is a broken symlink", "path",
        lambda d: (d.joinpath("o").symlink_to(d / "nowhere"), ["run", str(with_png(d)), Q, "--out", str(d / "o")])[1])
    add("--aux missing (earth)", "path",
        lambda d: (write_tif(d / "dem.tif", 256), ["run", "-p", "earth", str(d / "dem.tif"), "steep slopes", "--aux", str(d / "nope.tif")])[1],
        needs=("rscore_earth",))
    add("zones=/etc/passwd (safety)", "path",
        lambda d: ["run", "-p", "safety", str(with_png(d)), "restricted zone", "-O", "zones=/etc/passwd"], needs=("rscore_safety",))
    add("zones missing (safety)", "path",
        lambda d: ["run", "-p", "safety", str(with_png(d)), "restricted zone", "-O", f"zones={d / 'nope.json'}"], needs=("rscore_safety",))
    add("--out's lock name is a user file", "path",
        lambda d: (d.joinpath(".o.lock").write_text("my notes"), ["run", str(with_png(d)), Q, "--out", str(d / "o")])[1])
    add("--out's lock name links to a user file", "path",
        lambda d: (d.joinpath("mine.txt").write_text("keep"), d.joinpath(".o.lock").symlink_to(d / "mine.txt"),
                   ["run", str(with_png(d)), Q, "--out", str(d / "o")])[2])
    add("--out is a symlink to an empty folder", "path",
        lambda d: (d.joinpath("t").mkdir(), d.joinpath("o").symlink_to(d / "t"), ["run", str(with_png(d)), Q, "--out", str(d / "o")])[2])

    def eval_over_report(d: Path) -> list[str]:
        (d / "mask.png").write_bytes(png_bytes())
        with_png(d)
        (d / "m.jsonl").write_text(json.dumps({"image": "a.png", "query": Q, "mask": "mask.png"}) + "\n")
        (d / "report.md").write_text("# my report\n")
        return ["eval", "--dataset", str(d / "m.jsonl"), "--out", str(d)]

    add("eval --out over a user's report.md", "path", eval_over_report)

    # bad options
    for label, args in (
        ("--max-pixels -1", ["--max-pixels", "-1"]), ("--max-pixels 0", ["--max-pixels", "0"]),
        ("--tile-size 10", ["--tile-size", "10"]), ("-O tile_size=abc", ["-O", "tile_size=abc"]),
        ("-O novalue", ["-O", "novalue"]), ("--plugin nosuch", ["--plugin", "nosuch"]),
        ("--reasoner nosuch", ["--reasoner", "nosuch"]), ("--segmenter nosuch", ["--segmenter", "nosuch"]),
        ("-O strict=maybe", ["-O", "strict=maybe", "--plugin", "safety"]), ("--template nosuch", ["--template", "nosuch"]),
        ("RSCORE_MAX_PIXELS=-5", []), ("100 KB query", []),
    ):
        def setup(d: Path, args=args, label=label) -> list[str]:
            query = "x" * 100_000 if label == "100 KB query" else Q
            return ["run", str(with_png(d)), query, *args, "--out", str(d / "out")]
        env = {"RSCORE_MAX_PIXELS": "-5"} if label.startswith("RSCORE_MAX") else {}
        add(label, "option", setup, env=env)
    add("-O aux_bands=7 (earth)", "option",
        lambda d: (write_tif(d / "dem.tif", 256), ["run", "-p", "earth", str(d / "dem.tif"), "steep slopes", "-O", "aux_bands=7"])[1],
        needs=("rscore_earth",))

    # signals (a run that takes a while: a DEM with its tiles on disk)
    def dem_run(d: Path, out: str = "out") -> list[str]:
        if not (d / "dem.tif").exists():
            write_tif(d / "dem.tif", 2048)
        return ["run", "-p", "earth", str(d / "dem.tif"), "landslide-prone areas", "--tile-size", "256", "--out", str(d / out)]

    slow_env = {"RSCORE_IN_MEMORY_PIXELS": "100000"}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        add(f"{signal.Signals(sig).name} mid-run", "signal", dem_run, expect=(128 + sig,), needs=("rscore_earth",),
            signal_after=(sig, "tmp/rscore-tiles-*"), env=slow_env)
    add("SIGKILL mid-run", "signal", dem_run, expect=(-9,), needs=("rscore_earth",),
        signal_after=(signal.SIGKILL, "tmp/rscore-tiles-*"), env=slow_env)

    def after_kill(d: Path) -> list[str]:  # a stale tiles folder of a dead process, then a quick run: it is swept
        p = subprocess.Popen([PY, "-c", "pass"])
        p.wait()
        stale = d / "tmp" / f"rscore-tiles-{p.pid}-stale1"
        stale.mkdir(parents=True)
        (stale / ".rscore-temp").write_text(json.dumps({"pid": p.pid, "format": 1}))
        return ["run", str(with_png(d)), Q, "--out", str(d / "out")]

    add("rerun after kill -9 sweeps stale tiles", "signal", after_kill, expect=(0,))

    # concurrency
    add("2 runs into one --out", "concurrency", dem_run, expect=(0, 2, 130), concurrent=2, needs=("rscore_earth",),
        env=slow_env, timeout_s=400)
    add("3 quick runs into one --out", "concurrency", lambda d: ["run", str(with_png(d)), Q, "--out", str(d / "out")],
        expect=(0, 2), concurrent=3)
    upload_cases(add)
    from adversarial_roots import roots_cases  # server-side paths, files naming other files, frame sizes, limits

    roots_cases(add)
    return out


# ------------------------------------------------------------------------------------- uploads to the service
def _series_members(d: Path, n: int = 3, **kw) -> dict[str, bytes]:
    kw.setdefault("series_uid", "1.2.3.80")
    return {f"CT/IM{i:04d}": write_dicom(d / "src" / f"{kw.get('series_uid', 's')}{i}.dcm", ct(), z=i * 2.5,
                                          instance=i + 1, **kw).read_bytes() for i in range(n)}  # fmt: skip


def _zip(path: Path, members: dict[str, bytes], *, mode: int | None = None, method: int = 8) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _zero_bomb(path: Path, mib: int, *, lie: bool) -> Path:
    """One member: a DICOM preamble then ``mib`` MiB of zeros (deflate: ~1000:1). ``lie``: both headers then declare
    1000 bytes, so the sizes the archive states cannot be trusted to stop it."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("IM0000")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            out.write(b"\0" * 128 + b"DICM")
            for _ in range(mib):
                out.write(bytes(1 << 20))
    if lie:
        data = bytearray(path.read_bytes())
        local, central = data.find(b"PK\x03\x04"), data.rfind(b"PK\x01\x02")
        data[local + 22: local + 26] = struct.pack("<I", 1000)  # uncompressed size in the local header
        data[central + 24: central + 28] = struct.pack("<I", 1000)  # and in the central directory
        path.write_bytes(bytes(data))
    return path


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def upload_cases(add: Callable[..., None]) -> None:
    """Hostile DICOM series archives (and several files) posted to the service's /v1/segment."""
    needs = ("rscore_surgical", "pydicom", "fastapi", "httpx")

    def case(name: str, build: Callable[[Path], list[Path]], expect: tuple[int, ...] = (2,), extract_mb: float = 64):
        def setup(d: Path) -> list[str]:
            (d / "svc").mkdir()  # the service's output root (made first: it is not a leftover)
            files = build(d)
            return ["--root", str(d / "svc"), "--extract-mb", str(extract_mb), *map(str, files)]
        add(name, "upload", setup, expect, needs=needs, upload=True, timeout_s=120)

    one = lambda d: _series_members(d, 1)["CT/IM0000"]  # noqa: E731
    case("zip: series (control)", lambda d: [_zip(d / "ct.zip", _series_members(d))], expect=(0,))
    case("zip: ../../../evil.dcm (zip-slip)", lambda d: [_zip(d / "z.zip", {**_series_members(d), "../../../evil.dcm": one(d)})])
    case("zip: absolute /tmp member", lambda d: [_zip(d / "z.zip", {"/tmp/rscore-evil.dcm": one(d)})])
    case("zip: C:\\ drive member", lambda d: [_zip(d / "z.zip", {"C:\\evil.dcm": one(d)})])
    case("zip: ..\\..\\ backslash member", lambda d: [_zip(d / "z.zip", {"..\\..\\..\\evil.dcm": one(d)})])
    case("zip: symlink member to /etc/passwd", lambda d: [_zip(d / "z.zip", {"IM0": b"/etc/passwd"}, mode=0o120777)])
    case("zip: non-DICOM member", lambda d: [_zip(d / "z.zip", {**_series_members(d), "CT/notes.txt": b"notes\n" * 50})])
    case("zip: nested zip", lambda d: [_zip(d / "z.zip", {"inner.zip": _zip(d / "inner.zip", _series_members(d)).read_bytes()})])
    case("zip: member named twice", lambda d: [_zip(d / "z.zip", {"IM0": one(d), "im0": one(d)})])
    case("zip: two series", lambda d: [_zip(d / "z.zip", {**_series_members(d, 2, series_uid="1.2.3.70"),
                                                           **{f"B/{k}": v for k, v in _series_members(d, 2, series_uid="1.2.3.71",
                                                                                                     series_number=2).items()}})])
    case("zip: odd member names (kept flat)", lambda d: [_zip(d / "z.zip", {("x" * 250) + "/IM\n1": one(d),
                                                                           "sp ace/\u00e9\u4e2d.dcm": _series_members(d, 2)["CT/IM0001"]})],
         expect=(0, 2))

    def encrypted(d: Path) -> list[Path]:
        z = _zip(d / "z.zip", {"IM0": one(d)})
        data = bytearray(z.read_bytes())
        for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            data[data.find(sig) + at] |= 1
        z.write_bytes(bytes(data))
        return [z]

    def crc(d: Path) -> list[Path]:
        z = _zip(d / "z.zip", {"IM0": one(d)}, method=0)
        data = bytearray(z.read_bytes())
        data[data.find(b"DICM") + 300] ^= 0xFF
        z.write_bytes(bytes(data))
        return [z]

    case("zip: encrypted member", encrypted)
    case("zip: CRC mismatch", crc)
    def written(path: Path, data: bytes) -> list[Path]:
        path.write_bytes(data)
        return [path]

    case("zip: truncated archive (half)", lambda d: written(d / "t.zip", _half(_zip(d / "f.zip", _series_members(d)).read_bytes())))
    case("zip: PK magic + garbage", lambda d: written(d / "g.zip", b"PK\x03\x04" + os.urandom(4000)))
    case("zip: empty archive", lambda d: [_zip(d / "e.zip", {})])

    def deflated_bomb(d: Path) -> list[Path]:  # ~130 KB on disk, 122 MiB once pydicom inflates it whole (limit: 64)
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        import pydicom

        path = write_dicom(d / "deflated.dcm", np.zeros((8000, 8000), np.int16))
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        return [path]

    case("deflated DICOM bomb", deflated_bomb)
    case("zip: 10001 members", lambda d: [_zip(d / "m.zip", {f"d{i}/": b"" for i in range(10_001)}, method=0)])
    case("zip: 256 MiB bomb, limit 64 MiB", lambda d: [_zero_bomb(d / "b.zip", 256, lie=False)])
    case("zip: bomb with lying sizes", lambda d: [_zero_bomb(d / "b.zip", 256, lie=True)])
    def several_with_junk(d: Path) -> list[Path]:
        _series_members(d)
        (d / "notes.txt").write_text("x" * 300)
        return [*sorted((d / "src").glob("*.dcm")), d / "notes.txt"]

    case("files: series + one non-DICOM", several_with_junk)
    case("files: series (control)", lambda d: (_series_members(d), sorted((d / "src").glob("*.dcm")))[1], expect=(0,))


def upload_main(argv: list[str]) -> int:
    """``--upload [--root DIR] [--extract-mb N] FILE...``: one request to a fresh service (see the module docstring)."""
    import httpx

    from rscore.service import ServerThread, Settings, create_app

    parser = argparse.ArgumentParser(prog="adversarial.py --upload")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--extract-mb", type=float, default=64)
    parser.add_argument("--allowed", type=Path, help="an allowed root (RSCORE_ALLOWED_ROOTS) for --path / path options")
    parser.add_argument("--path", help="a server-side input under --allowed instead of uploaded files")
    parser.add_argument("--options", default="", help="the request's options (JSON)")
    parser.add_argument("--plugin", default="surgical")
    parser.add_argument("--query", default="bone")
    parser.add_argument("--swap", action="append", default=[], help="SRC=TARGET: after the pin, SRC becomes a link")
    parser.add_argument("--rewrite", action="append", default=[], help="SRC=FILE: after the pin, SRC gets FILE's bytes")
    parser.add_argument("--expect-px", type=int, help="a 200 must have this mask area (else: read something else)")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    from adversarial_roots import after_the_pin  # noqa: E402 (a sibling module)

    after_the_pin(args.swap, args.rewrite)
    import warnings

    warnings.filterwarnings("ignore", module="rasterio")  # NotGeoreferencedWarning: the first stderr line is the answer
    settings = Settings(output_root=args.root, workers=1, queue_size=1, job_runner="inprocess",
                        max_extract_mb=args.extract_mb, request_timeout_s=90,
                        allowed_roots=(args.allowed,) if args.allowed else ())  # fmt: skip
    thread = ServerThread(create_app(settings))
    handles = [open(f, "rb") for f in args.files]
    try:
        base = thread.start()
        if len(handles) == 1:
            parts = [("file", (args.files[0].name, handles[0], "application/octet-stream"))]
        else:
            parts = [("files", (f.name, h, "application/octet-stream")) for f, h in zip(args.files, handles)]
        data = {"query": args.query, "plugin": args.plugin, "options": args.options, **({"path": args.path} if args.path else {})}
        r = httpx.post(f"{base}/v1/segment", files=parts or None, data=data, timeout=100)
    finally:
        for h in handles:
            h.close()
        thread.stop()
    staging = args.root / ".staging"
    left = sorted(str(p.relative_to(args.root)) for p in staging.rglob("*")) if staging.exists() else []
    results = [p.name for p in args.root.iterdir() if p.name != ".staging"]
    if r.status_code == 200:
        px = r.json()["result"].get("summary", {}).get("mask_area_px")
        print(f"HTTP 200: {len(r.json()['result'].get('instances', []))} instance(s), {px} px", file=sys.stderr)
        if args.expect_px is not None and px != args.expect_px:
            print(f"read something other than what was checked: {px} px, not {args.expect_px}", file=sys.stderr)
            return 1
    else:
        print(f"HTTP {r.status_code}: {r.json().get('error', r.text[:200])}", file=sys.stderr)
    if left or (r.status_code != 200 and results):
        print(f"left behind in the service's folders: {', '.join(left + results)[:300]}", file=sys.stderr)
        return 1
    return 0 if r.status_code == 200 else 2 if 400 <= r.status_code < 500 else 1


def _touch_png(d: Path, name: str) -> Path:
    (d / name).write_bytes(png_bytes())
    return d / name


# ------------------------------------------------------------------------------------------------------ running
def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def run_case(case: Case, root: Path) -> tuple[str, bool]:
    missing = [m for m in case.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"SKIP  {case.category:<11} {case.name:<44} needs {', '.join(missing)}", True
    d = root / "".join(c if c.isalnum() else "_" for c in case.name)
    d.mkdir(parents=True)
    (d / "tmp").mkdir()
    env = {**os.environ, "RSCORE_MATCHER": "keyword", "TMPDIR": str(d / "tmp"), **case.env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    try:
        args = case.setup(d)
    except Exception as exc:  # noqa: BLE001 - a case that cannot be built is reported, not fatal
        return f"ERR   {case.category:<11} {case.name:<44} setup failed: {type(exc).__name__}: {exc}", False
    before = snapshot(d)
    command = [PY, str(Path(__file__).resolve()), "--upload"] if case.upload else [PY, "-m", "rscore"]
    procs = [subprocess.Popen([*command, *args], cwd=d, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(case.concurrent)]
    if case.signal_after:
        sig, pattern = case.signal_after
        deadline = time.monotonic() + case.timeout_s
        while not list(d.glob(pattern)) and procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs[0].poll() is None:
            procs[0].send_signal(sig)
    codes, first = [], ""
    traceback = False
    for p in procs:
        try:
            _, err = p.communicate(timeout=case.timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            codes.append(None)
            first = first or f"(timed out after {case.timeout_s:g} s)"
            continue
        codes.append(p.returncode)
        text = err.decode("utf-8", "replace")
        traceback |= "Traceback" in text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and not first:
            first = lines[0]
    after = snapshot(d)
    new = sorted(after - before)
    ok_out = any(c == 0 for c in codes)
    left = [n for n in new if "/" not in n or n.startswith("tmp/")]  # top-level things and temp folders
    if ok_out:  # a successful run's output folder (or the new folders above it) is what it should leave
        left = [n for n in left if not (d / n).is_dir() or not any((d / n).rglob(".rscore-output.json"))]
    left = [n for n in left if not (n.startswith("tmp/") and n.count("/") > 1)]
    if case.name.startswith("SIGKILL"):
        left = [n for n in left if not n.startswith("tmp/rscore-tiles-")]  # expected: swept by the next run
        left = [n for n in left if not n.startswith(".out.")]
    unexpected = any(c not in case.expect for c in codes) or traceback or bool(left)
    if case.name.endswith("--out under a read-only folder"):
        os.chmod(d / "ro", 0o700)
    code_text = ",".join("T" if c is None else str(c) for c in codes)
    mark = "!!" if unexpected else "ok"
    line = (f"{mark:<5} {case.category:<11} {case.name:<44} exit {code_text:<7} "
            f"{(first[:110] or '(no stderr)')!s:<110}  leftovers: {', '.join(left) or 'none'}")
    return line, not unexpected


def main() -> int:
    if sys.argv[1:2] == ["--upload"]:
        return upload_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only cases whose name or category contains this")
    parser.add_argument("-j", type=int, default=2, help="cases run at the same time (default 2)")
    parser.add_argument("--keep", type=Path, help="put the case folders here and keep them")
    args = parser.parse_args()
    servers = {"silent": SilentServer(), "garbage": SilentServer(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\n\r\n" + os.urandom(5000))}
    chosen = [c for c in cases(servers) if args.k.lower() in (c.name + " " + c.category).lower()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="rscore-adversarial-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results: list[tuple[str, bool]] = []
    try:
        with ThreadPoolExecutor(max(1, args.j)) as pool:
            for line, ok in pool.map(lambda c: run_case(c, root), chosen):
                print(line, flush=True)
                results.append((line, ok))
    finally:
        if args.keep is None:
            for p in root.rglob("*"):
                if p.is_dir() and not p.is_symlink():
                    os.chmod(p, 0o700)
            shutil.rmtree(root, ignore_errors=True)
    skipped = sum(1 for line, _ in results if line.startswith("SKIP"))
    bad = [line for line, ok in results if not ok]
    ran = len(results) - skipped
    print(f"SUMMARY: {ran} cases run ({skipped} skipped), {ran - len(bad)} as expected, {len(bad)} unexpected "
          f"(wrong exit code, traceback or leftovers), {time.monotonic() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
