"""The built-in image reader: EXIF orientation, 16-bit, RGBA, grey, palettes, pixel limits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import ImageTooLarge, InputError
from rscore.io.images import ImageReader, scene_rgb8, stretch_to_uint8


def open_(path, **options):
    return engine.open_scene(path, options=options)


def test_rgb_png(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    scene = open_(tmp_path / "a.png")
    assert scene.band_roles == ("red", "green", "blue") and scene.shape == (30, 40) and scene.kind == "image"
    assert np.array_equal(np.moveaxis(scene.read(), 0, -1), arr)
    assert scene.valid() is None


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 50, 3), np.uint8)
    arr[:, :10] = 255  # bright stripe on the left of the stored pixels
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    scene = open_(tmp_path / "r.jpg")
    assert scene.shape == (50, 20)  # displayed upright: portrait
    top = scene.read()[0, :10].mean()
    bottom = scene.read()[0, -10:].mean()
    assert top > 200 and bottom < 50  # the stripe ends up at the top after a 90 degree clockwise turn


def test_sixteen_bit_grey_keeps_values(tmp_path):
    arr = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    scene = open_(tmp_path / "g16.png")
    assert scene.band_roles == ("gray",) and scene.source.dtype == "uint16"
    assert np.array_equal(scene.read()[0], arr)
    rgb = scene_rgb8(scene)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and rgb.max() == 255 and rgb.min() == 0


def test_rgba_alpha_becomes_validity(tmp_path):
    arr = np.full((10, 10, 4), 200, np.uint8)
    arr[:, :4, 3] = 0
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    scene = open_(tmp_path / "a.png")
    assert scene.band_roles == ("red", "green", "blue")
    assert not scene.valid()[:, :4].any() and scene.valid()[:, 4:].all()


def test_palette_and_bilevel(tmp_path):
    Image.new("P", (8, 6), 3).save(tmp_path / "p.png")
    Image.new("1", (8, 6), 1).save(tmp_path / "b.tif")
    assert open_(tmp_path / "p.png").band_roles == ("red", "green", "blue")
    s = open_(tmp_path / "b.tif")
    assert s.band_roles == ("gray",) and s.read().max() == 255


def test_multipage_tiff_warns(tmp_path):
    frames = [Image.new("L", (8, 8), v) for v in (10, 20, 30)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    scene = open_(tmp_path / "m.tif")
    assert scene.read().max() == 10 and "3 frames" in scene.warnings[0]


def test_pixel_limit_checked_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="300x200 = 60,000 pixels, over the limit of 50,000"):
        open_(tmp_path / "big.png", max_pixels=50_000)
    monkeypatch.setenv("RSCORE_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLarge):
        open_(tmp_path / "big.png")


def test_decompression_bomb_header_is_refused_without_allocating(tmp_path):
    """A PNG header claiming 100k x 100k pixels is refused from the header alone."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(ImageTooLarge, match="10,000,000,000 pixels"):
        open_(tmp_path / "bomb.png")


def test_truncated_image(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="t.jpg: not a readable image"):
        open_(tmp_path / "t.jpg")


def test_sniffing_beats_suffix(tmp_path):
    Image.new("RGB", (5, 5)).save(tmp_path / "really_png.jpg", format="PNG")
    assert open_(tmp_path / "really_png.jpg").metadata["format"] == "PNG"
    assert ImageReader().sniff(tmp_path, b"GIF89a....")


def test_stretch_handles_constant_and_nan():
    assert stretch_to_uint8(np.full((3, 3), 7.0)).max() == 0
    out = stretch_to_uint8(np.array([[np.nan, 0.0], [1.0, 2.0]]))
    assert out[0, 0] == 0 and out[1, 1] == 255
