"""A job's result document, written through a pinned input's link, names the real file afterwards
(:func:`rscore.service.pinning.real_names_in`, used by both job runners). The real folder's name goes into JSON
strings: a quote or a backslash in it must be escaped (replacing the link folder in the file's text made the
document invalid JSON). And a VRT source's folder that cannot be opened for want of descriptors is the server's
503, like the input's own folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rscore.service import pinning
from rscore.service.jobs import _real_names_in

pytestmark = pytest.mark.skipif(not pinning.pinning_available(), reason="pinning needs Linux (O_PATH, /proc)")


@pytest.mark.parametrize("folder", ['say "hi"', "back\\slash", "plain", "café"])
@pytest.mark.parametrize("rename", [pinning.real_names_in, _real_names_in], ids=["pinning", "in-process jobs"])
def test_the_result_document_names_the_real_file_and_stays_json(tmp_path: Path, folder: str, rename):
    root = (tmp_path / "roots").resolve()
    real = root / folder / "dem.tif"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"II*\x00")
    pin = pinning.pin_input(real, (root,), tmp_path / "staging")
    try:
        assert pin.path != real  # read through the staging link
        doc = tmp_path / "result.json"
        doc.write_text(json.dumps({"input": str(pin.path), "n": 1, "notes": [f"read {pin.path}"]}, indent=2))
        rename(doc, [pin])
        got = json.loads(doc.read_text(encoding="utf-8"))
        assert got == {"input": str(real), "n": 1, "notes": [f"read {real}"]}
    finally:
        pin.close()


def test_out_of_descriptors_while_pinning_a_vrt_source_is_busy_not_an_internal_error(tmp_path: Path, monkeypatch):
    """Opening a VRT source's allowed folder ran out of descriptors (many requests at once): a raw OSError (500,
    'internal error') - now the 503 'try again' that the input's own folders give, and nothing stays open."""
    import errno
    import os

    from rscore.errors import BackendUnavailable

    root = (tmp_path / "roots").resolve()
    (root / "tiles").mkdir(parents=True)
    (root / "tiles" / "a.tif").write_bytes(b"II*\x00")
    vrt = root / "mosaic.vrt"
    vrt.write_text('<VRTDataset rasterXSize="4" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
                   '<SourceFilename relativeToVRT="1">tiles/a.tif</SourceFilename></SimpleSource></VRTRasterBand>'
                   '</VRTDataset>')  # fmt: skip
    opened = os.open
    roots_opened = []

    def open_(path, flags, *args, dir_fd=None, **kwargs):
        if dir_fd is None and Path(path) == root:
            roots_opened.append(path)
            if len(roots_opened) == 2:  # the input's root opened; the VRT source's: no descriptor left
                raise OSError(errno.EMFILE, "Too many open files")
        return opened(path, flags, *args, dir_fd=dir_fd, **kwargs)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(BackendUnavailable, match="too many open files right now; try again"):
        pinning.pin_input(vrt, (root,), tmp_path / "staging")
    monkeypatch.undo()
    assert len(roots_opened) == 2 and len(os.listdir("/proc/self/fd")) == before
    pin = pinning.pin_input(vrt, (root,), tmp_path / "staging2")  # with descriptors: the source is pinned
    try:
        assert "/proc/" in pin.path.read_text() and "tiles/a.tif" not in pin.path.read_text()
    finally:
        pin.close()
