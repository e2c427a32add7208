"""The per-source checks of a GDAL VRT (:mod:`rscore.service.linked`) stay cheap without losing what they refuse
(real GDAL files, real uvicorn on loopback; the cost itself is measured by ``benchmarks/bench_vrt_check.py``):

- a VRT of GeoTIFF / PNG / JPEG tiles among clean folders is checked without opening any tile with GDAL;
- still refused (403): a tile whose GDAL side-car (``.aux.xml``, world file) is a symbolic link leading outside the
  roots, an HDF5 file whose user block starts like a TIFF and links outside, an ERMapper header naming a data file
  outside, given as VRT sources; a clean VRT of tiles still opens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service_helpers import SERVICE_AND_EARTH
from test_service_linked_files import client, registry  # noqa: F401 - the same loopback service fixtures

pytestmark = SERVICE_AND_EARTH
QUERY = "elevation above 100 m"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data" / "tiles").mkdir(parents=True)
    return tmp_path / "data"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "private").mkdir()
    return tmp_path / "private"


def tiles(root: Path, n: int = 4, driver: str = "GTiff", ext: str = "tif") -> list[str]:
    """``n`` 16 x 16 tiles side by side (a ramp: 0..310 m over the mosaic's 16 * n columns) under ``root/tiles``."""
    import rasterio

    names = []
    for i in range(n):
        name = f"tiles/t{i}.{ext}"
        x = (np.mgrid[0:16, 0:16][1] + 16 * i) * (320 / (16 * n))
        dtype = "float32" if driver == "GTiff" else "uint8"
        with rasterio.open(root / name, "w", driver=driver, width=16, height=16, count=1, dtype=dtype) as ds:
            ds.write(np.minimum(x, 255 if dtype == "uint8" else 1e9).astype(dtype)[None])
        names.append(name)
    return names


def vrt(root: Path, sources: list[str], name: str = "mosaic.vrt") -> str:
    body = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{s}</SourceFilename><SourceBand>1</SourceBand>'
        f'<DstRect xOff="{16 * i}" yOff="0" xSize="16" ySize="16"/></SimpleSource>'
        for i, s in enumerate(sources)
    )
    (root / name).write_text(f'<VRTDataset rasterXSize="{16 * len(sources)}" rasterYSize="16"><VRTRasterBand '
                             f'dataType="Float32" band="1">{body}</VRTRasterBand></VRTDataset>')  # fmt: skip
    return name


def post_path(client: httpx.Client, path: str) -> httpx.Response:
    return client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": path,
                                            "options": json.dumps({"bands": "elevation"})})  # fmt: skip


def refused(response: httpx.Response, name: str, tmp_path: Path) -> None:
    assert response.status_code == 403, response.text
    message = response.json()["error"]
    assert name in message and "outside the folders this service may read" in message and "\n" not in message
    assert str(tmp_path) not in message and "private" not in message, message


@pytest.fixture
def gdal_opens(monkeypatch) -> list[Path]:
    """The files the check opens with GDAL for their file list (the real function, counted)."""
    from rscore.service import linked

    opened: list[Path] = []
    real = linked.gdal_file_list

    def counted(path: Path) -> list[str]:
        opened.append(Path(path))
        return real(path)

    monkeypatch.setattr(linked, "gdal_file_list", counted)
    return opened


@pytest.mark.parametrize("driver, ext", [("GTiff", "tif"), ("PNG", "png"), ("JPEG", "jpg")])
def test_tiles_that_name_no_other_file_are_not_opened_with_gdal(root: Path, gdal_opens, driver, ext):
    from rscore.service.security import check_linked

    name = vrt(root, tiles(root, 12, driver, ext))
    check_linked(root / name, (root,), shown=name)
    assert gdal_opens == []


def test_a_header_naming_its_data_file_is_still_opened_with_gdal(root: Path, outside: Path, gdal_opens):
    from rscore.service.security import check_linked
    from test_service_linked_files import ERS

    (root / "tiles" / "a.ers").write_text(ERS.format(datafile=""))
    (root / "tiles" / "a").write_bytes(np.zeros((16, 16), np.float32).tobytes())
    name = vrt(root, ["tiles/a.ers"])
    check_linked(root / name, (root,), shown=name)
    assert [p.name for p in gdal_opens] == ["a.ers"]


@pytest.mark.parametrize("sidecar", ["t1.tif.aux.xml", "t1.tfw"])
def test_a_tile_whose_side_car_links_outside_is_still_refused(client, root, outside, tmp_path, sidecar):
    names = tiles(root)
    (outside / "leak").write_text(
        "<PAMDataset><PAMRasterBand band=\"1\"><NoDataValue>0</NoDataValue></PAMRasterBand></PAMDataset>"
        if sidecar.endswith(".xml") else "10\n0\n0\n-10\n700000\n9600000\n"
    )
    assert post_path(client, vrt(root, names)).status_code == 200  # clean: opens
    (root / "tiles" / sidecar).symlink_to(outside / "leak")
    refused(post_path(client, vrt(root, names, "again.vrt")), "again.vrt", tmp_path)


def test_an_hdf5_file_starting_like_a_tiff_is_still_checked_as_hdf5(client, root, outside, tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(outside / "s.h5", "w") as f:
        f["data"] = np.full((16, 16), 777.0, np.float32)
    path = root / "tiles" / "x.nc"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["data"] = h5py.ExternalLink(str(outside / "s.h5"), "/data")
    with open(path, "r+b") as fh:
        fh.write(b"II*\x00")  # the user block is free for anything: here a TIFF's first bytes
    refused(post_path(client, vrt(root, ["tiles/x.nc"])), "mosaic.vrt", tmp_path)


def test_a_header_source_naming_a_data_file_outside_is_still_refused(client, root, outside, tmp_path):
    from test_service_linked_files import ERS

    (outside / "raw.bin").write_bytes(np.full((16, 16), 777.0, np.float32).tobytes())
    (root / "tiles" / "h.ers").write_text(ERS.format(datafile='\tDataFile = "../../private/raw.bin"\n'))
    refused(post_path(client, vrt(root, ["tiles/h.ers"])), "mosaic.vrt", tmp_path)


def test_a_file_outside_the_roots_beside_the_tiles_folders_means_the_full_check(root, tmp_path, gdal_opens):
    """GDAL's metadata readers look beside a tile and one folder up: a file there outside the roots (here in the
    root's parent) sends every tile of that folder to the full GDAL check; a symbolic link staying inside does not."""
    from rscore.service.security import check_linked

    names = [n.replace("tiles/", "") for n in tiles(root, 3)]
    for n in names:
        (root / "tiles" / n).rename(root / n)
    (root / "t0.tif.aux.xml").symlink_to(root / "tiles")  # stays inside the root: no reason for the full check
    check_linked(root / vrt(root, names), (root,), shown="mosaic.vrt")
    assert gdal_opens == []
    (tmp_path / "notes.txt").write_text("beside the root, outside it")
    check_linked(root / vrt(root, names), (root,), shown="mosaic.vrt")
    assert sorted(p.name for p in gdal_opens) == sorted(names)


def test_a_side_car_beside_a_linked_tiles_name_is_checked(client, root, outside, tmp_path):
    """GDAL looks for a source's side-cars beside the name the VRT gives (``a/t0.tif``, a symbolic link to
    ``tiles/t0.tif``), not beside the file it leads to: a side-car there leading outside is refused (it was not)."""
    names = tiles(root, 1)
    (root / "a").mkdir()
    (root / "a" / "t0.tif").symlink_to(root / names[0])
    assert post_path(client, vrt(root, ["a/t0.tif"])).status_code == 200
    (outside / "leak.xml").write_text("<PAMDataset><PAMRasterBand band=\"1\"><NoDataValue>0</NoDataValue>"
                                      "</PAMRasterBand></PAMDataset>")  # fmt: skip
    (root / "a" / "t0.tif.aux.xml").symlink_to(outside / "leak.xml")
    refused(post_path(client, vrt(root, ["a/t0.tif"], "again.vrt")), "again.vrt", tmp_path)
