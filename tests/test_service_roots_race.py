"""The service reads the server-side input it checked, not whatever its name leads to when a reader opens it
(real uvicorn on loopback, real GDAL; Linux pinning, :mod:`rscore.service.pinning`).

Between the allowed-roots check and the reader's open, another process that may write under a root can swap a
folder on the way, or the file itself, for a symbolic link leading out of the roots. The swap is made at a fixed
point of the request (a wrapper around the check, or around the engine's run), not by a timing race:

- swapped after the check, before the service pins the input: 403 naming the file, nothing outside read;
- swapped after the pin, before the reader opens it: the answer is the checked file's, not the linked one's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service_helpers import SERVICE_AND_EARTH, Services

pytestmark = [
    *SERVICE_AND_EARTH,
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd") or not hasattr(os, "O_PATH"), reason="pinning is Linux's"),
]

QUERY = "elevation above 100 m"


@pytest.fixture(scope="module")
def registry():
    from rscore.engine import default_registry

    return default_registry()


@pytest.fixture
def server(tmp_path: Path, registry) -> Iterator[Callable[..., httpx.Client]]:
    services = Services()
    root = tmp_path / "data"
    root.mkdir()

    def start() -> httpx.Client:
        return services.start(registry, output_root=tmp_path / "out", allowed_roots=(root,), workers=1,
                              queue_size=2, request_timeout_s=60, job_runner="inprocess")  # fmt: skip

    yield start
    services.stop_all()


def write_dem(path: Path, offset: float) -> Path:
    """A 64 x 64 ramp, 0-189 m plus ``offset``: with offset 0 about half is above 100 m, with 1000 all of it."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    _, x = np.mgrid[0:64, 0:64].astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32", crs="EPSG:32617",
                       transform=from_origin(700000, 9600000, 10, 10)) as ds:  # fmt: skip
        ds.write((x * 3 + offset)[None])
    return path


def masked_pixels(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["result"]["summary"]["mask_area_px"])


def staging_empty(out: Path) -> bool:
    staging = out / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def run_job(client: httpx.Client, path: str) -> dict:
    """A one-input job of ``path`` submitted and waited for (two minutes at most): its final status."""
    import time

    r = client.post("/v1/jobs", json={"inputs": [path], "query": QUERY, "plugin": "earth"})
    assert r.status_code in (200, 201, 202), r.text
    deadline = time.monotonic() + 120
    while (job := client.get(r.json()["url"]).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def swap_folder_for_link(folder: Path, target: Path) -> None:
    folder.rename(folder.with_name(folder.name + ".old"))
    folder.symlink_to(target, target_is_directory=True)


def test_a_folder_swapped_for_a_link_after_the_check_is_refused(server, tmp_path: Path, monkeypatch):
    root = tmp_path / "data"
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    client = server()
    from rscore.service.routes import segment as route

    checked = route.resolve_allowed

    def check_then_swap(*args, **kwargs):
        result = checked(*args, **kwargs)
        swap_folder_for_link(root / "survey", tmp_path / "private")  # after the check, before anything opens it
        return result

    monkeypatch.setattr(route, "resolve_allowed", check_then_swap)
    r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "survey/dem.tif"})
    assert r.status_code == 403, r.text
    message = r.json()["error"]
    assert "survey/dem.tif" in message and "symbolic link" in message and "\n" not in message
    assert str(tmp_path) not in message and "private" not in message
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    assert staging_empty(out)  # the request's links are gone


@pytest.mark.parametrize("swap", ["folder", "file"])
def test_a_link_swapped_in_after_the_pin_is_not_followed(server, tmp_path: Path, monkeypatch, swap):
    root = tmp_path / "data"
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    client = server()
    baseline = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "survey/dem.tif"})
    expected = masked_pixels(baseline)
    assert 0 < expected < 64 * 64  # the checked file: about half above 100 m (the private one: all of it)

    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):  # after the check and the pin, before the reader opens the input
        if swap == "folder":
            swap_folder_for_link(root / "survey", tmp_path / "private")
        else:
            target = root / "survey" / "dem.tif"
            target.rename(target.with_name("dem.tif.old"))
            target.symlink_to(tmp_path / "private" / "dem.tif")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "survey/dem.tif"})
    if swap == "file":  # renaming the file changes its change time, which no writer can set back: refused (the
        # same change time would be left by a rewrite in place whose modification time was set back), nothing kept
        assert r.status_code == 403 and "changed while it was being read" in r.json()["error"], r.text[:300]
        kept = {p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")}
        assert kept == {baseline.json()["id"]}  # only the first request's result
        return
    assert masked_pixels(r) == expected  # read the checked file; the private one would give 4096
    doc = r.json()["result"]
    text = json.dumps(doc)
    assert "/proc/" not in text and ".staging" not in text  # the document names the input as before
    assert doc["scene"]["path"] == str(root / "survey" / "dem.tif"), doc["scene"]
    assert staging_empty(tmp_path / "out")


def test_side_car_files_still_reach_the_reader(server, tmp_path: Path):
    """A GDAL side-car beside the input (here ``dem.tif.aux.xml`` declaring the nodata value) is pinned with it."""
    root = tmp_path / "data"
    dem = write_dem(root / "dem.tif", 0)
    (root / "dem.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>0</NoDataValue></PAMRasterBand></PAMDataset>'
    )
    client = server()
    r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "dem.tif"})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["scene"]["nodata"] == 0.0  # from the side-car (the GeoTIFF itself declares none)
    assert dem.is_file()


def test_an_aux_raster_swapped_for_a_link_after_the_pin_is_not_followed(server, tmp_path: Path, monkeypatch):
    """Path options (here ``aux``, read as the elevation band) are pinned like the input."""
    root = tmp_path / "data"
    write_dem(root / "dem.tif", 0)
    write_dem(root / "survey" / "aux.tif", 0)
    write_dem(tmp_path / "private" / "aux.tif", 1000)
    client = server()
    data = {"query": QUERY, "plugin": "earth", "path": "dem.tif",
            "options": json.dumps({"aux": "survey/aux.tif", "bands": "other,elevation"})}  # fmt: skip
    expected = masked_pixels(client.post("/v1/segment", data=data))
    assert 0 < expected < 64 * 64

    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):
        swap_folder_for_link(root / "survey", tmp_path / "private")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    r = client.post("/v1/segment", data=data)
    assert masked_pixels(r) == expected  # the private aux would give 4096
    doc = r.json()["result"]
    assert doc["provenance"]["options"]["aux"] == str(root / "survey" / "aux.tif")  # named as before, not the pin
    assert staging_empty(tmp_path / "out")


def test_a_job_input_swapped_for_a_link_before_it_runs_is_not_followed(server, tmp_path: Path, monkeypatch):
    """A job's inputs are checked when it is submitted and read later: the in-process runner pins each one when its
    turn comes (a swap before that is refused like a request's; after it, not followed)."""
    root = tmp_path / "data"
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    client = server()
    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):
        if (root / "survey").is_dir() and not (root / "survey").is_symlink():
            swap_folder_for_link(root / "survey", tmp_path / "private")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    (item,) = run_job(client, "survey/dem.tif")["items"]
    assert item["state"] == "succeeded", item
    doc = client.get(item["links"]["result"]).json()
    assert doc["summary"]["mask_area_px"] == 1920  # the checked file (the private one: 4096)
    assert doc["scene"]["path"] == str(root / "survey" / "dem.tif") and "/proc/" not in json.dumps(doc)
    assert staging_empty(tmp_path / "out")


def test_an_upload_with_a_pinned_path_option_beside_it(server, tmp_path: Path):
    """The pins live in hidden folders of the request's staging folder: an upload named like them still stages."""
    root = tmp_path / "data"
    dem = write_dem(tmp_path / "upload.tif", 0)
    write_dem(root / "aux.tif", 0)
    client = server()
    for name in ("options", "input", "dem.tif"):
        r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth",
                                             "options": json.dumps({"aux": "aux.tif", "bands": "other,elevation"})},
                        files={"file": (name, dem.read_bytes())})  # fmt: skip
        assert masked_pixels(r) == 1920, name
        assert r.json()["result"]["provenance"]["options"]["aux"] == str(root / "aux.tif")
    assert staging_empty(tmp_path / "out")


def test_a_job_input_rewritten_into_a_vrt_leading_out_before_it_runs_is_refused(server, tmp_path: Path, monkeypatch):
    """A job waits in the queue between its check (at submission) and its run: a writer under the root can rewrite
    the checked GeoTIFF, in place, into a VRT whose source lies outside the roots. Pinning keeps the inode, not its
    content, so the runner checks what the file leads to again once pinned: the item fails, nothing private read."""
    from rscore.service import pinning

    root = tmp_path / "data"
    write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    vrt = (f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
           f'<SourceFilename>{tmp_path / "private" / "dem.tif"}</SourceFilename><SourceBand>1</SourceBand>'
           f'</SimpleSource></VRTRasterBand></VRTDataset>')  # fmt: skip
    pin = pinning.pin_input

    def rewrite_then_pin(resolved, *args, **kwargs):
        if resolved.name == "dem.tif" and resolved.read_bytes()[:1] != b"<":
            with open(resolved, "r+b") as fh:  # the same inode, new content
                fh.truncate(0)
                fh.write(vrt.encode())
        return pin(resolved, *args, **kwargs)

    monkeypatch.setattr(pinning, "pin_input", rewrite_then_pin)
    client = server()
    (item,) = run_job(client, "survey/dem.tif")["items"]
    assert item["state"] == "failed", item  # it read the private ramp (mask 4096) before
    assert "outside the folders this service may read" in item["error"] and "private" not in item["error"], item
    assert staging_empty(tmp_path / "out")


def private_vrt(tmp_path: Path) -> bytes:
    """A VRT of the same size whose source is the private 1000 m DEM (outside the roots)."""
    return (f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
            f'<SourceFilename>{tmp_path / "private" / "dem.tif"}</SourceFilename><SourceBand>1</SourceBand>'
            f'</SimpleSource></VRTRasterBand></VRTDataset>').encode()  # fmt: skip


def rewrite_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as fh:  # the same inode, new content
        fh.truncate(0)
        fh.write(data)


@pytest.mark.parametrize("when", ["after the check", "while it is read"])
def test_a_request_input_rewritten_in_place_into_a_vrt_leading_out_is_refused(server, tmp_path: Path, monkeypatch,
                                                                              when):  # fmt: skip
    """Pinning keeps the inode, not its content: a GeoTIFF rewritten in place into a VRT whose source lies outside
    the roots, after the check (before the pin) or after the pin (while the engine reads it), would lead the reader
    out. The file's identity (inode, size, change times) at the check must still hold after the read: else 403,
    and no result is kept or returned."""
    from rscore import engine
    from rscore.service import pinning

    root = tmp_path / "data"
    dem = write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    if when == "after the check":
        pin = pinning.pin_input

        def rewrite_then_pin(resolved, *args, **kwargs):
            if resolved.name == "dem.tif" and resolved.read_bytes()[:1] != b"<":
                rewrite_in_place(resolved, private_vrt(tmp_path))
            return pin(resolved, *args, **kwargs)

        from rscore.service.routes import segment as route

        monkeypatch.setattr(route, "pin_input", rewrite_then_pin)
    else:
        run = engine.run

        def rewrite_then_run(path, *args, **kwargs):
            rewrite_in_place(dem, private_vrt(tmp_path))
            return run(path, *args, **kwargs)

        monkeypatch.setattr(engine, "run", rewrite_then_run)
    client = server()
    r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "survey/dem.tif"})
    assert r.status_code == 403, r.text[:300]  # 200 with the private ramp's 4096 px before
    message = r.json()["error"]
    assert "survey/dem.tif" in message and "changed" in message and "private" not in message, message
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []  # no result kept
    assert staging_empty(out)


def test_a_job_input_rewritten_in_place_while_it_is_read_fails_and_keeps_nothing(server, tmp_path: Path, monkeypatch):
    from rscore import engine

    root = tmp_path / "data"
    dem = write_dem(root / "survey" / "dem.tif", 0)
    write_dem(tmp_path / "private" / "dem.tif", 1000)
    run = engine.run

    def rewrite_then_run(path, *args, **kwargs):  # after the pin and its check, while the engine reads the input
        rewrite_in_place(dem, private_vrt(tmp_path))
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", rewrite_then_run)
    client = server()
    (item,) = run_job(client, "survey/dem.tif")["items"]
    assert item["state"] == "failed" and "changed while it was being read" in item["error"], item  # succeeded, 4096 px
    assert "private" not in item["error"]
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    assert staging_empty(out)


def test_a_vrt_sources_folder_swapped_for_a_link_after_the_pin_is_not_followed(server, tmp_path: Path, monkeypatch):
    root = tmp_path / "data"
    write_dem(root / "tiles" / "t.tif", 0)
    write_dem(tmp_path / "private" / "t.tif", 1000)
    (root / "mosaic.vrt").write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">tiles/t.tif</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand></VRTDataset>"
    )
    client = server()
    data = {"query": QUERY, "plugin": "earth", "path": "mosaic.vrt", "options": json.dumps({"bands": "elevation"})}
    assert masked_pixels(client.post("/v1/segment", data=data)) == 1920
    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):
        swap_folder_for_link(root / "tiles", tmp_path / "private")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    assert masked_pixels(client.post("/v1/segment", data=data)) == 1920  # the private source: 4096


def mosaic(root: Path, name: str, source: str) -> str:
    (root / name).write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand></VRTDataset>"
    )
    return name


@pytest.mark.parametrize("swap", ["source file", "nested VRT's source folder"])
def test_more_vrt_sources_swapped_after_the_pin_are_not_followed(server, tmp_path: Path, monkeypatch, swap):
    root = tmp_path / "data"
    write_dem(root / "tiles" / "t.tif", 0)
    write_dem(tmp_path / "private" / "t.tif", 1000)
    name = mosaic(root, "mosaic.vrt", "tiles/t.tif")
    if swap != "source file":
        (root / "sub").mkdir()
        name = mosaic(root / "sub", "outer.vrt", "../mosaic.vrt")
        name = "sub/outer.vrt"
    client = server()
    data = {"query": QUERY, "plugin": "earth", "path": name, "options": json.dumps({"bands": "elevation"})}
    first = client.post("/v1/segment", data=data)
    assert masked_pixels(first) == 1920
    from rscore import engine

    run = engine.run

    def swap_then_run(path, *args, **kwargs):
        if swap == "source file":
            (root / "tiles" / "t.tif").rename(root / "t.tif.old")
            (root / "tiles" / "t.tif").symlink_to(tmp_path / "private" / "t.tif")
        else:
            swap_folder_for_link(root / "tiles", tmp_path / "private")
        return run(path, *args, **kwargs)

    monkeypatch.setattr(engine, "run", swap_then_run)
    r = client.post("/v1/segment", data=data)
    assert masked_pixels(r) == 1920  # the private source: 4096
    doc = r.json()["result"]
    text = json.dumps(doc)
    assert doc["scene"]["path"] == str(root / name) and ".vrt/d" not in text and "/proc/" not in text
    assert staging_empty(tmp_path / "out")


def test_a_vrt_source_swapped_after_the_check_is_refused_and_a_missing_one_named(server, tmp_path: Path, monkeypatch):
    from rscore.service.routes import segment as route

    root = tmp_path / "data"
    write_dem(root / "tiles" / "t.tif", 0)
    write_dem(tmp_path / "private" / "t.tif", 1000)
    mosaic(root, "mosaic.vrt", "tiles/t.tif")
    (root / "other").mkdir()
    mosaic(root, "gone.vrt", "other/missing.tif")
    pin = route.pin_input

    def swap_then_pin(resolved, *args, **kwargs):
        if resolved.name == "mosaic.vrt" and not (root / "tiles").is_symlink():
            swap_folder_for_link(root / "tiles", tmp_path / "private")
        return pin(resolved, *args, **kwargs)

    monkeypatch.setattr(route, "pin_input", swap_then_pin)
    client = server()
    data = {"query": QUERY, "plugin": "earth", "options": json.dumps({"bands": "elevation"})}
    r = client.post("/v1/segment", data={**data, "path": "mosaic.vrt"})
    assert r.status_code == 403, r.text[:300]
    message = r.json()["error"]
    assert "mosaic.vrt" in message and "outside the folders this service may read" in message, message  # 200 before
    assert "private" not in message and str(tmp_path) not in message
    r = client.post("/v1/segment", data={**data, "path": "gone.vrt"})
    assert r.status_code == 422, r.text[:300]
    message = r.json()["error"]
    assert "gone.vrt" in message and "other/missing.tif" in message and ".staging" not in message, message
    assert staging_empty(tmp_path / "out")
