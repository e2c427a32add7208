"""Progress in the unit of the work: the formatting, the callback surface (old ``progress(done, total)`` callbacks
unchanged), and ``rscore run`` on a terminal showing tiles for a tiled raster and frames for a video."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest

from rscore.progress import accepts_unit, format_progress, report

ENV = {**os.environ, "RSCORE_MATCHER": "keyword", "TERM": "xterm-256color", "COLUMNS": "160"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

needs_earth = pytest.mark.skipif(
    importlib.util.find_spec("rscore_earth") is None or importlib.util.find_spec("rasterio") is None,
    reason="needs the earth plugin and rasterio",
)
needs_surgical = pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None,
                                    reason="needs the surgical plugin")


# ------------------------------------------------------------------------------------------------ formatting
def test_format_progress_names_the_unit_and_frames_get_a_rate():
    assert format_progress("tiles", 12, 64) == "tiles 12/64"
    assert format_progress("tiles", 12, 64, 3.0) == "tiles 12/64"  # a rate only for frames
    assert format_progress("frames", 300, 795, 41.2) == "frames 300/795 (41 fps)"
    assert format_progress("frames", 3, 795, 2.46) == "frames 3/795 (2.5 fps)"
    assert format_progress("frames read", 10, 795, 120.0) == "frames read 10/795 (120 fps)"
    assert format_progress("frames", 300, None, None) == "frames 300"  # a live stream: no total
    assert format_progress("frames", 300, 0, 0.0) == "frames 300"
    assert format_progress("slices", 3, 40) == "slices 3/40"
    assert format_progress("", 1, 2) == "steps 1/2"


def test_report_gives_the_unit_only_to_callbacks_that_take_it():
    seen: list[tuple] = []

    def plain(done, total):
        seen.append(("plain", done, total))

    def with_unit(done, total, unit=""):
        seen.append((unit, done, total))

    def kwargs(done, total, **kw):
        seen.append((kw["unit"], done, total))

    assert not accepts_unit(plain) and accepts_unit(with_unit) and accepts_unit(kwargs)
    report(plain, 1, 8, "slices", plain=(5, 20))
    report(with_unit, 1, 8, "slices", plain=(5, 20))
    report(kwargs, 2, 8, "tiles")
    report(lambda d, t: seen.append(("lambda", d, t)), 3, 4, "tiles")
    report(None, 1, 1, "tiles")
    assert seen == [("plain", 5, 20), ("slices", 1, 8), ("tiles", 2, 8), ("lambda", 3, 4)]


# --------------------------------------------------------------------------------------------------- library
def write_dem(path: Path, n: int) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    dem = np.sin(x / 50) * 80 + np.cos(y / 70) * 60 + x * 0.3
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32", crs="EPSG:32617",
                       transform=from_origin(700000, 9600000, 10, 10)) as ds:
        ds.write(dem[None])
    return path


@needs_earth
def test_old_callbacks_see_the_same_counts_and_new_ones_see_tiles(tmp_path):
    from rscore import engine

    dem = write_dem(tmp_path / "dem.tif", 256)
    opts = {"tile_size": 128}
    old: list[tuple[int, int]] = []
    new: list[tuple[int, int, str]] = []
    engine.run(dem, "steep slopes", plugin="earth", out_dir=tmp_path / "a", options=opts,
               progress=lambda done, total: old.append((done, total)))
    engine.run(dem, "steep slopes", plugin="earth", out_dir=tmp_path / "b", options=opts,
               progress=lambda done, total, unit="": new.append((done, total, unit)))
    assert old == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert new == [(1, 4, "tiles"), (2, 4, "tiles"), (3, 4, "tiles"), (4, 4, "tiles")]


# ------------------------------------------------------------------------------------------------------- CLI
def run_on_terminal(*args: str, cwd: Path, timeout: float = 180) -> tuple[int, str, str]:
    """``rscore`` with stderr on a pseudo-terminal (what a user sees); returns (code, stdout, stderr as text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "rscore", *args], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child's end is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        reader.join(10)
        os.close(master)
    return proc.returncode, out.decode(), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@needs_earth
def test_cli_counts_tiles_on_a_terminal_and_nothing_through_a_pipe(tmp_path):
    dem = write_dem(tmp_path / "dem.tif", 512)
    args = ("run", str(dem), "steep slopes", "--plugin", "earth", "--tile-size", "128")
    code, out, err = run_on_terminal(*args, "--out", str(tmp_path / "tty"), cwd=tmp_path)
    assert code == 0, err
    assert "tiles 16/16" in err, err
    assert not re.search(r"frames|slices", err)
    assert "outputs in" in out  # the summary stays on stdout
    piped = subprocess.run([sys.executable, "-m", "rscore", *args, "--out", str(tmp_path / "pipe")], cwd=tmp_path,
                           env=ENV, capture_output=True, text=True, timeout=180)
    assert piped.returncode == 0, piped.stderr
    assert "tiles" not in piped.stderr  # stderr is not a terminal: no progress, as before


def endoscopy_clip(path: Path, n: int = 12) -> Path:
    """Pinkish tissue with one white specular spot moving right (what the surgical plugin's template finds)."""
    import cv2

    w, h = 96, 64
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (120, 50, 150)  # B, G, R
        img[(xx - 20 - 4 * i) ** 2 + (yy - 30) ** 2 <= 9] = 255
        writer.write(img)
    writer.release()
    return path


@needs_surgical
def test_cli_counts_frames_on_a_terminal(tmp_path):
    clip = endoscopy_clip(tmp_path / "clip.avi")
    code, out, err = run_on_terminal("run", "--plugin", "surgical", str(clip), "specular highlights",
                                     "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert code == 0, err
    # the offline run reads the clip once to choose the keyframe, then segments every frame
    assert re.search(r"frames read 12/12\b", err), err
    assert re.search(r"frames 12/12\b", err), err
    assert not re.search(r"tiles \d", err)


def test_a_stacked_dicom_like_scene_counts_slices(make_scene):
    """A series stacks its slices along the rows (``layout: stacked-rows``): an analytic program's tiles are reported
    as slices fully done; old callbacks still count tiles."""
    from rscore.engine.program import run_program
    from rscore.sdk import ProgramOutput, Template
    from rscore.types import Request

    scene = make_scene(height=128, width=32, metadata={"layout": "stacked-rows", "slice_rows": 32})  # 4 slices
    template = Template("bright", "bright", "bright pixels", ("bright pixels",),
                        program=lambda ctx: ProgramOutput(mask=ctx.band("red") > 0.5))
    request = Request(query="bright pixels", plugin=None, options={})
    old: list[tuple[int, int]] = []
    new: list[tuple[int, int, str]] = []
    run_program(scene, request, template, {}, tile_size=16, progress=lambda d, t: old.append((d, t)))
    run_program(scene, request, template, {}, tile_size=16, progress=lambda d, t, unit: new.append((d, t, unit)))
    assert old == [(d, 16) for d in range(1, 17)]  # 8 bands of 2 tiles
    assert new == [(d // 4, 4, "slices") for d in range(1, 17)]  # a slice is 2 bands


@needs_surgical
@pytest.mark.shared_data
def test_cli_counts_slices_of_a_real_ct_series(tmp_path, shared_data):
    series = shared_data / "medical" / "dicom" / "dcmqi_ct-3slice"  # 3 CT slices 512x512 (+ a SEG, not read)
    if not series.is_dir():
        pytest.skip("needs medical/dicom/dcmqi_ct-3slice in the shared data")
    code, out, err = run_on_terminal("run", "--plugin", "surgical", str(series), "bone", "--tile-size", "256",
                                     "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert code == 0, err
    assert "slices 3/3" in err and not re.search(r"tiles \d", err), err
