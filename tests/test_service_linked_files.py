"""Files that lead GDAL to other files, besides VRTs, cannot make the service read outside its allowed roots (real
uvicorn on loopback, real GDAL; :mod:`rscore.service.linked`):

- HDF5 / netCDF-4 files (built here with h5py; skipped without it) with an external link, external storage or a
  virtual dataset reading a file outside the roots, directly or through another HDF5 file under the root: 403 naming
  the file (GDAL's netCDF driver returned the other file's values);
- text headers naming their data file (ERMapper ``.ers`` ``DataFile``, a PDS label's ``^IMAGE``) outside the roots,
  given by path or uploaded: 403; one naming its data file beside it still opens;
- GDAL's subdataset syntax given as a ``path`` is a missing file (422), never a way to open another file.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service_helpers import SERVICE_AND_EARTH, Services

pytestmark = SERVICE_AND_EARTH
needs_h5py = pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="builds HDF5 files with h5py")
QUERY = "elevation above 100 m"
SECRET_VALUE = 777.0


@pytest.fixture(scope="module")
def registry():
    from rscore.engine import default_registry

    return default_registry()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """Files outside the roots: an HDF5 dataset and raw float32 bytes, both 16 x 16 of 777."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "raw.bin").write_bytes(np.full((16, 16), SECRET_VALUE, np.float32).tobytes())
    if importlib.util.find_spec("h5py") is not None:
        import h5py

        with h5py.File(folder / "s.h5", "w") as f:
            f["data"] = np.full((16, 16), SECRET_VALUE, np.float32)
    return folder


@pytest.fixture
def client(tmp_path: Path, root: Path, registry) -> Iterator[httpx.Client]:
    services = Services()
    yield services.start(registry, output_root=tmp_path / "out", allowed_roots=(root,), workers=1, queue_size=2,
                         request_timeout_s=60, job_runner="inprocess")  # fmt: skip
    services.stop_all()


def refused(response: httpx.Response, name: str, tmp_path: Path) -> str:
    assert response.status_code == 403, response.text
    message = response.json()["error"]
    assert name in message and "outside the folders this service may read" in message and "\n" not in message
    assert str(tmp_path) not in message and "private" not in message, message
    return message


def post_path(client: httpx.Client, path: str) -> httpx.Response:
    return client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": path})


def post_aux(client: httpx.Client, root: Path, aux: str) -> httpx.Response:
    """``aux`` as the elevation band beside a 16 x 16 ramp (the earth reader opens an aux raster with any GDAL
    driver, on the same grid when neither has a CRS): the answer shows whose values were read."""
    import rasterio

    _, x = np.mgrid[0:16, 0:16].astype(np.float32)
    with rasterio.open(root / "base.tif", "w", driver="GTiff", width=16, height=16, count=1, dtype="float32") as ds:
        ds.write((x * 20)[None])
    return client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "base.tif",
                                            "options": json.dumps({"aux": aux, "bands": "other,elevation"})})  # fmt: skip


# ---------------------------------------------------------------------------------------------------- HDF5
def _h5(path: Path, build: Callable) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        build(f)
    return path


@needs_h5py
@pytest.mark.parametrize("kind", ["external link", "external storage", "virtual dataset"])
def test_netcdf4_leading_outside_the_roots_is_refused(client, root: Path, private: Path, tmp_path: Path, kind):
    import h5py

    def build(f):
        if kind == "external link":
            f["data"] = h5py.ExternalLink(str(private / "s.h5"), "/data")
        elif kind == "external storage":
            f.create_dataset("data", shape=(16, 16), dtype="f4", external=[(str(private / "raw.bin"), 0, 1024)])
        else:
            layout = h5py.VirtualLayout(shape=(16, 16), dtype="f4")
            layout[:] = h5py.VirtualSource(str(private / "s.h5"), "data", shape=(16, 16))
            f.create_virtual_dataset("data", layout)

    _h5(root / "dem.nc", build)
    message = refused(post_aux(client, root, "dem.nc"), "dem.nc", tmp_path)  # GDAL read 777s from private/
    assert "HDF5" in message and "'/data'" in message and "aux" in message
    refused(post_path(client, "dem.nc"), "dem.nc", tmp_path)
    # uploaded, the same file is refused the same way
    upload = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth"},
                         files={"file": ("up.nc", (root / "dem.nc").read_bytes())})  # fmt: skip
    refused(upload, "up.nc", tmp_path)
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]


@needs_h5py
def test_a_link_through_another_hdf5_file_under_the_root_is_followed_by_the_check(client, root, private, tmp_path):
    import h5py

    _h5(root / "inner.h5", lambda f: f.__setitem__("data", h5py.ExternalLink(str(private / "s.h5"), "/data")))
    _h5(root / "outer.nc", lambda f: f.__setitem__("data", h5py.ExternalLink(str(root / "inner.h5"), "/data")))
    refused(post_aux(client, root, "outer.nc"), "outer.nc", tmp_path)


@needs_h5py
def test_hdf5_links_that_stay_under_the_root_are_not_refused(client, root: Path, private: Path):
    import h5py

    _h5(root / "inner.h5", lambda f: f.__setitem__("data", np.arange(256, dtype=np.float32).reshape(16, 16)))
    _h5(root / "ok.nc", lambda f: f.__setitem__("data", h5py.ExternalLink(str(root / "inner.h5"), "/data")))
    r = post_aux(client, root, "ok.nc")
    assert r.status_code == 200, r.text
    assert 0 < r.json()["result"]["summary"]["mask_area_px"] < 256  # 0-255 m: only part above 100 m


def test_gdal_subdataset_syntax_is_not_a_way_in(client, root: Path, private: Path):
    for given in (f'HDF5:"{private / "s.h5"}"://data', f"NETCDF:{private / 's.h5'}:data", 'NETCDF:"dem.nc":data'):
        r = post_path(client, given)
        assert r.status_code in (403, 422), r.text
        assert str(SECRET_VALUE) not in r.text


# ------------------------------------------------------------------------------------ headers naming a file
ERS = """DatasetHeader Begin
\tVersion = "6.0"
\tDataSetType = ERStorage
\tDataType = Raster
\tByteOrder = LSBFirst
{datafile}\tCoordinateSpace Begin
\t\tDatum = "RAW"
\t\tProjection = "RAW"
\t\tCoordinateType = RAW
\tCoordinateSpace End
\tRasterInfo Begin
\t\tCellType = IEEE4ByteReal
\t\tNrOfLines = 16
\t\tNrOfCellsPerLine = 16
\t\tNrOfBands = 1
\tRasterInfo End
DatasetHeader End
"""
PDS = """PDS_VERSION_ID = PDS3
RECORD_TYPE = FIXED_LENGTH
RECORD_BYTES = 64
FILE_RECORDS = 16
^IMAGE = ("{datafile}", 1)
OBJECT = IMAGE
  LINES = 16
  LINE_SAMPLES = 16
  SAMPLE_TYPE = PC_REAL
  SAMPLE_BITS = 32
  BANDS = 1
END_OBJECT = IMAGE
END
"""


@pytest.mark.parametrize("name, header", [
    ("dem.ers", ERS.format(datafile='\tDataFile = "../private/raw.bin"\n')),
    ("dem.img", PDS.format(datafile="../private/raw.bin")),
])  # fmt: skip
def test_a_header_naming_a_data_file_outside_the_roots_is_refused(client, root, private, tmp_path, name, header):
    (root / name).write_text(header)
    message = refused(post_aux(client, root, name), name, tmp_path)  # GDAL read 777s from private/
    assert "names another file" in message
    refused(post_path(client, name), name, tmp_path)
    # uploaded: the header lies in the request's staging folder, three levels below the output root's parent
    upload = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth"},
                         files={"file": (name, header.replace("../private", "../../../private").encode())})  # fmt: skip
    refused(upload, name, tmp_path)


def test_a_header_naming_a_url_is_refused_before_gdal_opens_it(client, root, tmp_path):
    (root / "web.ers").write_text(ERS.format(datafile='\tDataFile = "/vsicurl/http://127.0.0.1:9/x.bin"\n'))
    r = post_aux(client, root, "web.ers")
    assert r.status_code == 403 and "URL or a /vsi name" in r.json()["error"], r.text


def test_a_header_with_its_data_file_beside_it_still_opens(client, root: Path):
    _, x = np.mgrid[0:16, 0:16].astype(np.float32)
    (root / "ramp").write_bytes((x * 20).astype(np.float32).tobytes())  # ERMapper's default data file: the stem
    (root / "ramp.ers").write_text(ERS.format(datafile=""))
    r = post_aux(client, root, "ramp.ers")
    assert r.status_code == 200, r.text
    assert 0 < r.json()["result"]["summary"]["mask_area_px"] < 256  # 20 m steps: only columns above 100 m


@needs_h5py
def test_a_vrt_whose_source_is_such_a_file_is_refused(client, root: Path, private: Path, tmp_path: Path):
    import h5py

    _h5(root / "x.nc", lambda f: f.__setitem__("data", h5py.ExternalLink(str(private / "s.h5"), "/data")))
    (root / "x.vrt").write_text(
        '<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">x.nc</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand></VRTDataset>"
    )
    refused(post_path(client, "x.vrt"), "x.vrt", tmp_path)


# HDF5 looks for a linked file (external link, virtual dataset source) as given when absolute, then - by its base
# name when that is absolute and missing - beside the linking file, then from the working folder (h5py 3 / HDF5 2.0,
# probed 2026-12). The check follows that order: the working folder counts only where a file is found there.
@needs_h5py
@pytest.mark.parametrize("kind", ["external link", "virtual dataset"])
def test_a_relative_hdf5_link_to_a_file_beside_it_is_not_refused_when_the_service_runs_elsewhere(
    root: Path, tmp_path: Path, monkeypatch, kind
):
    import h5py

    from rscore.service.linked import check_hdf5

    _h5(root / "inner.h5", lambda f: f.__setitem__("data", np.zeros((4, 4), np.float32)))

    def build(f):
        if kind == "external link":
            f["data"] = h5py.ExternalLink("inner.h5", "/data")
        else:
            layout = h5py.VirtualLayout(shape=(4, 4), dtype="f4")
            layout[:] = h5py.VirtualSource("inner.h5", "data", shape=(4, 4))
            f.create_virtual_dataset("data", layout)

    _h5(root / "ok.nc", build)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the service's working folder, outside the roots (the usual case)
    check_hdf5(root / "ok.nc", (root,), what="path", shown="ok.nc")


@needs_h5py
def test_an_absolute_hdf5_link_to_a_missing_file_is_refused_when_hdf5_would_find_its_name_outside(
    root: Path, private: Path, monkeypatch
):
    """A missing absolute target (even one under the root) makes HDF5 look for its base name beside the file and
    then in the working folder: here the service's working folder holds a private s.h5, which h5py read."""
    import h5py

    from rscore.service.linked import check_hdf5
    from rscore.service.security import PathNotAllowed

    _h5(root / "abs.nc", lambda f: f.__setitem__("data", h5py.ExternalLink(str(root / "gone" / "s.h5"), "/data")))
    monkeypatch.chdir(private)
    with h5py.File(root / "abs.nc", "r") as f:
        assert float(f["data"][0, 0]) == SECRET_VALUE  # what a reader would get
    with pytest.raises(PathNotAllowed, match="abs.nc"):
        check_hdf5(root / "abs.nc", (root,), what="path", shown="abs.nc")


@pytest.mark.parametrize("doc", [
    {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "name": "crane swing", "source": "https://example.org/site-plan.pdf"},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]}}]},
    {"zones": [{"name": "see http://example.org/zones", "polygon": [[0, 0], [10, 0], [10, 10]]}]},
])  # fmt: skip
def test_a_json_zones_file_mentioning_a_url_is_not_refused(root: Path, doc):
    """A path option naming a GeoJSON / zones JSON (read with json, never by GDAL as a raster) is not a text
    header: a URL in one of its properties is no reason for a 403 (it was: 'a text header naming a URL')."""
    from rscore.service.security import resolve_allowed

    (root / "zones.geojson").write_text(json.dumps(doc))
    assert resolve_allowed("zones.geojson", (root,), what="option 'zones'") == root / "zones.geojson"


def test_a_stac_item_collection_naming_a_url_is_still_refused(root: Path):
    """GDAL opens a STAC ItemCollection (a GeoJSON FeatureCollection) as a raster and fetches its assets' URLs: unlike
    a zones file it is refused before any open, however far into the file its STAC keys come."""
    from rscore.service.security import PathNotAllowed, resolve_allowed

    item = {"type": "Feature", "properties": {"note": "x" * 20_000, "proj:epsg": 4326, "proj:shape": [16, 16],
                                              "proj:transform": [0.0625, 0, 0, 0, -0.0625, 1]},
            "stac_version": "1.0.0", "id": "a", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
            "assets": {"B1": {"href": "http://127.0.0.1:9/x.tif", "type": "image/tiff; application=geotiff"}}}
    (root / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    with pytest.raises(PathNotAllowed, match="items.json.*URL"):
        resolve_allowed("items.json", (root,), what="option 'aux'")
