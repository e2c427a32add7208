""":func:`rscore.service.pinning.pin_input` on its own (Linux pinning; no server): what a pin holds open and which
side-car files it carries to the reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rscore.service.pinning import MAX_SIDECARS, pin_input

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd") or not hasattr(os, "O_PATH"), reason="pinning is Linux's"
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_deep_input_holds_one_descriptor_not_one_per_folder(tmp_path: Path):
    """Each concurrent request holds its pins for the whole run: one descriptor per folder on the way would let a
    deep path (or many requests) reach the open-file limit."""
    root = tmp_path / "data"
    deep = root.joinpath(*(f"d{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (deep / "dem.tif").write_bytes(b"II*\x00")
    before = _open_fds()
    with pin_input(deep / "dem.tif", (root,), tmp_path / "staging") as pin:
        assert (tmp_path / "staging" / "dem.tif").read_bytes() == b"II*\x00"
        assert _open_fds() - before == 1
        assert pin.real == deep / "dem.tif"
    assert _open_fds() == before
    assert not (tmp_path / "staging" / "dem.tif").exists()


def test_the_inputs_own_side_cars_reach_the_reader_in_a_folder_of_many_bands(tmp_path: Path):
    """A folder of one scene's bands (scene.b01.tif ... scene.b40.tif): the side-cars of the band asked for
    (its world file, its .aux.xml) are pinned, not crowded out by the other bands' files."""
    root = tmp_path / "data"
    root.mkdir()
    for i in range(1, MAX_SIDECARS + 9):
        (root / f"scene.b{i:02d}.tif").write_bytes(b"II*\x00")
    name = f"scene.b{MAX_SIDECARS + 8:02d}.tif"
    (root / f"{name}.aux.xml").write_text("<PAMDataset/>")
    (root / f"scene.b{MAX_SIDECARS + 8:02d}.tfw").write_text("1\n0\n0\n-1\n0\n0\n")
    with pin_input(root / name, (root,), tmp_path / "staging"):
        staged = {p.name for p in (tmp_path / "staging").iterdir()}
    assert {name, f"{name}.aux.xml", f"scene.b{MAX_SIDECARS + 8:02d}.tfw"} <= staged


def test_out_of_descriptors_is_the_servers_503_not_the_inputs_422(tmp_path: Path):
    """With the process out of file descriptors (many requests at once), the pin fails as the service's condition
    (503, try again), not as a fault of the client's file; a deep path needs no more descriptors than a shallow one."""
    import resource

    from rscore.errors import BackendUnavailable

    root = tmp_path / "data"
    deep = root.joinpath(*(f"d{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (deep / "dem.tif").write_bytes(b"II*\x00")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(n) for n in os.listdir("/proc/self/fd"))
    filler: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        while True:  # every descriptor below the limit taken...
            try:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        for _ in range(3):  # ...then exactly 3 free: the root's, a folder's and the next one's
            os.close(filler.pop())
        with pin_input(deep / "dem.tif", (root,), tmp_path / "staging") as pin:
            assert pin.real == deep / "dem.tif"
            filler += [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]  # the pin holds one: none is left
            with pytest.raises(BackendUnavailable, match="dem.tif.*open files"):
                pin_input(deep / "dem.tif", (root,), tmp_path / "staging2")
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("name", ["dem.ers", "label.img"])
def test_a_header_naming_its_data_file_beside_it_still_reads_through_the_pin(tmp_path: Path, name):
    """An ERMapper header or PDS label naming a data file beside it under another name: the reader opens the pinned
    link, so the data file must be pinned beside it too (it failed: 'not recognized' / 'No such file')."""
    rasterio = pytest.importorskip("rasterio")
    pytest.importorskip("httpx")
    import numpy as np
    from test_service_linked_files import ERS, PDS  # the headers the linked-files tests build

    header = ERS.format(datafile='\tDataFile = "values.bin"\n') if name.endswith(".ers") else PDS.format(
        datafile="values.bin"
    )
    root = tmp_path / "data"
    root.mkdir()
    (root / "values.bin").write_bytes(np.full((16, 16), 3.0, np.float32).tobytes())
    (root / name).write_text(header)
    with pin_input(root / name, (root,), tmp_path / "staging") as pin:
        with rasterio.open(pin.path) as ds:
            assert float(ds.read(1)[0, 0]) == 3.0
