"""A client cannot make the service read outside ``RSCORE_ALLOWED_ROOTS`` through a file that names other files
(real uvicorn on loopback, real GDAL):

- a GDAL VRT (uploaded, or a server-side ``path`` / ``aux`` / job input under a root) whose sources lie outside the
  roots, are URLs (``/vsicurl/``: the server would fetch them) or use GDAL's special syntaxes is refused before GDAL
  opens it; a VRT whose sources are under the roots still works;
- a server-side folder under a root holding a symbolic link that leads out of the roots is refused (the DICOM folder
  reader would follow it);
- options naming files the backends load: ``sam2_config`` (a yaml that Hydra *instantiates*: any ``_target_``
  callable would run) takes only a config of the sam2 package, ``lisa_vision_tower`` is confined like ``path``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from service_helpers import Services

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
    reason="the service needs fastapi, uvicorn and python-multipart",
)
needs_earth = pytest.mark.skipif(
    importlib.util.find_spec("rscore_earth") is None or importlib.util.find_spec("rasterio") is None,
    reason="needs the earth plugin and rasterio",
)


@pytest.fixture(scope="module")
def registry():
    from rscore.engine import default_registry

    return default_registry()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def server(tmp_path: Path, roots: Path, registry) -> Iterator[Callable[..., httpx.Client]]:
    services = Services()

    def start(**overrides) -> httpx.Client:
        kwargs = {"output_root": tmp_path / "out", "allowed_roots": (roots,), "workers": 1, "queue_size": 2,
                  "request_timeout_s": 60, "job_runner": "inprocess"}
        return services.start(registry, **{**kwargs, **overrides})

    yield start
    services.stop_all()


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server recording every request path: where an SSRF would land."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], hits
    srv.shutdown()
    srv.server_close()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


def write_dem(path: Path, scale: float = 3.0) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    _, x = np.mgrid[0:64, 0:64].astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32", crs="EPSG:32617",
                       transform=from_origin(700000, 9600000, 10, 10)) as ds:  # fmt: skip
        ds.write((x * scale)[None])
    return path


def vrt_of(source: str, *, relative: bool = False) -> str:
    return (f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32617</SRS>'
            "<GeoTransform>700000, 10, 0, 9600000, 0, -10</GeoTransform>"
            '<VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
            f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename><SourceBand>1</SourceBand>'
            "</SimpleSource></VRTRasterBand></VRTDataset>")  # fmt: skip


def _no_result_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [] if out.exists() else True


# ----------------------------------------------------------------------------------------------- GDAL VRT files
@needs_earth
def test_uploaded_vrt_naming_a_server_raster_is_refused(server, tmp_path: Path):
    secret = write_dem(tmp_path / "private_dem.tif")
    client = server()
    for name in ("x.vrt", "x.tif"):  # sniffed by content: the name does not matter
        r = client.post("/v1/segment", data={"query": "elevation above 100 m", "plugin": "earth"},
                        files={"file": (name, vrt_of(str(secret)).encode())})  # fmt: skip
        message = error_of(r, 403)
        assert name in message and "outside the folders this service may read" in message
        assert str(secret) not in message and str(tmp_path) not in message
    _no_result_folders(tmp_path)


@needs_earth
def test_vrt_under_a_root_with_a_source_outside_is_refused_and_one_inside_works(server, roots: Path, tmp_path: Path):
    secret = write_dem(tmp_path / "private_dem.tif")
    write_dem(roots / "dem.tif")
    (roots / "out.vrt").write_text(vrt_of(str(secret)))
    (roots / "dotdot.vrt").write_text(vrt_of("../private_dem.tif", relative=True))
    (roots / "in.vrt").write_text(vrt_of("dem.tif", relative=True))
    (roots / "nested.vrt").write_text(vrt_of("out.vrt", relative=True))
    (roots / "link.tif").symlink_to(secret)
    (roots / "vialink.vrt").write_text(vrt_of("link.tif", relative=True))
    client = server()
    for name in ("out.vrt", "dotdot.vrt", "nested.vrt", "vialink.vrt"):
        r = client.post("/v1/segment", data={"query": "elevation above 100 m", "plugin": "earth", "path": name})
        message = error_of(r, 403)
        assert name in message and str(tmp_path) not in message and "private_dem" not in message, message
    r = client.post("/v1/segment", data={"query": "elevation above 100 m", "plugin": "earth", "path": "in.vrt"})
    assert r.status_code == 200, r.text
    # the same VRT as an aux raster, and as a job input
    r = client.post("/v1/segment", data={"query": "elevation above 100 m", "plugin": "earth", "path": "dem.tif",
                                         "options": json.dumps({"aux": "out.vrt"})})  # fmt: skip
    assert "out.vrt" in error_of(r, 403)
    r = client.post("/v1/jobs", json={"inputs": ["in.vrt", "out.vrt"], "query": "elevation above 100 m",
                                      "plugin": "earth"})  # fmt: skip
    assert "out.vrt" in error_of(r, 403)


@needs_earth
@pytest.mark.parametrize("source", [
    "/vsicurl/http://127.0.0.1:{port}/meta/x.tif", "http://127.0.0.1:{port}/x.tif", "/vsicurl?url=http://127.0.0.1:{port}/q",
    'GTIFF_DIR:1:{secret}', "vrt://{secret}",
])  # fmt: skip
def test_vrt_sources_that_are_urls_or_gdal_syntax_are_refused_without_a_request(server, tmp_path, listener, source):
    port, hits = listener
    secret = write_dem(tmp_path / "private_dem.tif")
    client = server()
    given = source.format(port=port, secret=secret)
    r = client.post("/v1/segment", data={"query": "elevation above 100 m", "plugin": "earth"},
                    files={"file": ("x.vrt", vrt_of(given).encode())})  # fmt: skip
    assert r.status_code in (403, 422), r.text
    assert "x.vrt" in r.json()["error"] and str(tmp_path) not in r.text
    time.sleep(0.2)
    assert hits == []


def test_vrt_with_a_doctype_is_refused(server):
    client = server()
    body = '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + vrt_of("&e;")
    r = client.post("/v1/segment", data={"query": "elevation above 100 m"}, files={"file": ("x.vrt", body.encode())})
    assert r.status_code in (403, 422), r.text
    assert "root:" not in r.text


# ------------------------------------------------------------------------------- folders with links leading out
def test_folder_input_with_a_link_leading_out_is_refused(server, roots: Path, tmp_path: Path):
    from service_helpers import dicom_bytes

    pytest.importorskip("pydicom")
    series = roots / "series"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}.dcm").write_bytes(dicom_bytes(2.5 * i))
    outside = tmp_path / "other_patient.dcm"
    outside.write_bytes(dicom_bytes(7.5))
    client = server()
    r = client.post("/v1/segment", data={"query": "bone", "path": "series"})
    assert r.status_code == 200, r.text
    (series / "IM3.dcm").symlink_to(outside)
    r = client.post("/v1/segment", data={"query": "bone", "path": "series"})
    message = error_of(r, 403)
    assert "series" in message and str(tmp_path) not in message and "other_patient" not in message
    # a DICOMDIR names its folder tree: the reader reads the folder it is in
    (series / "DICOMDIR").write_bytes(dicom_bytes(0.0))
    r = client.post("/v1/segment", data={"query": "bone", "path": "series/DICOMDIR"})
    assert "other_patient" not in error_of(r, 403)


# ------------------------------------------------------------------------------------ options naming model files
def test_sam2_config_takes_only_a_config_of_the_sam2_package(server, roots: Path, tmp_path: Path):
    png = roots / "a.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(png)
    evil = "model:\n  _target_: os.system\n  command: touch pwned\n"
    (tmp_path / "evil.yaml").write_text(evil)
    (roots / "evil.yaml").write_text(evil)
    client = server()
    for options in ({"sam2_config": str(tmp_path / "evil.yaml")}, {"sam2": {"config": str(tmp_path / "evil.yaml")}},
                    {"sam2_config": "evil.yaml"}, {"sam2_config": "configs/../../../../evil.yaml"},
                    {"sam2_config": str(tmp_path / "missing.yaml")}):  # fmt: skip
        r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png", "options": json.dumps(options)})
        message = error_of(r, 400)
        assert "sam2 package" in message and str(tmp_path) not in message, message
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png",
                                         "options": json.dumps({"sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml"})})
    assert r.status_code == 200, r.text


def test_lisa_vision_tower_is_confined_like_path(server, roots: Path, tmp_path: Path):
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(roots / "a.png")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    client = server()
    messages = set()
    for given in (str(tmp_path / "clip"), str(tmp_path / "missing")):
        for options in ({"lisa_vision_tower": given}, {"lisa": {"vision_tower": given}}):
            r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png",
                                                 "options": json.dumps(options)})  # fmt: skip
            messages.add(error_of(r, 403).replace(given, "<given>"))
    assert len(messages) == 2 and all("outside the folders" in m for m in messages), messages  # flat / nested


# ---------------------------------------------------------------------------------------------------- retention
def test_retention_keeps_a_result_folder_holding_files_rscore_did_not_write(server, roots: Path, tmp_path: Path):
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(roots / "a.png")
    client = server(result_ttl_s=1)
    ids = []
    for _ in range(2):
        r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    kept, plain = (tmp_path / "out" / i for i in ids)
    (kept / "my-notes.txt").write_text("an operator's notes about this result")
    deadline = time.monotonic() + 20
    while plain.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not plain.exists()  # the sweep ran past both folders' age
    time.sleep(1.5)
    assert (kept / "my-notes.txt").read_text() == "an operator's notes about this result"
    assert (kept / "result.json").is_file()


# ------------------------------------------------------------------------------------------- bounded error lines
@needs_earth
def test_an_error_naming_thousands_of_bands_is_one_bounded_line(server, tmp_path: Path):
    from test_cli_errors_long import many_bands

    data = many_bands(tmp_path / "bands.tif").read_bytes()
    client = server()
    r = client.post("/v1/segment", data={"query": "steep terrain", "plugin": "earth"},
                    files={"file": ("bands.tif", data)})  # fmt: skip
    message = error_of(r, 400)
    assert message.startswith("bands.tif: ") and len(message) <= 1100 and "more characters" in message, len(message)


# ------------------------------------------------------------------- the output root inside an allowed root
def test_results_and_uploads_of_other_clients_are_not_readable_by_path(server, roots: Path, tmp_path: Path):
    """An operator may put RSCORE_OUTPUT_ROOT inside an allowed root (``RSCORE_ALLOWED_ROOTS=.`` and the default
    ``./rscore-out/service``): results and staged uploads of other clients must still not be inputs."""
    from PIL import Image

    img = np.zeros((32, 32, 3), np.uint8)
    img[4:12, 4:12] = 250
    Image.fromarray(img).save(roots / "a.png")
    client = server(output_root=roots / "results")
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    (roots / "results" / ".staging" / ("e" * 32)).mkdir(parents=True)
    (roots / "results" / "data").mkdir()  # a folder of the operator's that happens to be there
    Image.fromarray(img).save(roots / "results" / "data" / "b.png")
    (roots / "link_to_results").symlink_to(roots / "results" / rid)
    for given in (f"results/{rid}/mask.png", f"results/{rid}", "results", "results/.staging", "link_to_results/mask.png",
                  str(roots / "results" / rid / "overlay.png")):  # fmt: skip
        r = client.post("/v1/segment", data={"query": "bright regions", "path": given})
        assert "outside the folders this service may read" in error_of(r, 403), given
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png",
                                         "options": json.dumps({"aux": f"results/{rid}/mask.png"})})  # fmt: skip
    assert error_of(r, 403)
    r = client.post("/v1/jobs", json={"inputs": [f"results/{rid}/mask.png"], "query": "bright regions"})
    assert error_of(r, 403)
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "results/data/b.png"})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------- DNS rebinding and cross-site requests
def test_a_keyless_loopback_service_refuses_foreign_host_names_and_origins(server, roots: Path):
    """Without API keys the service listens on loopback only, but a web page can still reach it: by DNS rebinding
    (its own name resolving to 127.0.0.1: the browser then lets the page read the answers) or by a cross-site form
    POST. Only loopback host names and origins are served then."""
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(roots / "a.png")
    client = server()
    form = {"query": "bright regions", "path": "a.png"}
    for headers in ({"Host": "attacker.example"}, {"Host": "attacker.example:8000"},
                    {"Origin": "http://attacker.example"}, {"Origin": "null"}):  # fmt: skip
        r = client.post("/v1/segment", data=form, headers=headers)
        assert "RSCORE_API_KEYS" in error_of(r, 403), headers
        assert client.get("/v1/plugins", headers=headers).status_code == 403
    port = client.thread.port  # type: ignore[attr-defined]
    for headers in ({}, {"Host": f"localhost:{port}"}, {"Origin": f"http://127.0.0.1:{port}"},
                    {"Origin": f"http://localhost:{port}", "Host": f"[::1]:{port}"}):  # fmt: skip
        r = client.post("/v1/segment", data=form, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    keyed = server(api_keys=("k" * 24,))  # with keys, the key is what protects it: any host name is served
    r = keyed.post("/v1/segment", data=form, headers={"Host": "rscore.example.org", "X-API-Key": "k" * 24})
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- options that size server resources
def test_a_client_cannot_ask_for_more_worker_processes_than_the_server_has_cores(server, roots: Path):
    from PIL import Image

    from rscore.engine.parallel import available_cores

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(roots / "a.png")
    client = server()
    for workers in (available_cores() + 1, 10_000, "10000", 0, -3, "many", True):
        r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png",
                                             "options": json.dumps({"workers": workers})})  # fmt: skip
        assert "workers" in error_of(r, 400), workers
    for workers in ("auto", 1, available_cores()):
        r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png",
                                             "options": json.dumps({"workers": workers})})  # fmt: skip
        assert r.status_code == 200, (workers, r.text)


@pytest.mark.parametrize("options", [
    {"decode_ahead": 100_000}, {"drainage_max_px": 10**12}, {"drainage_tile": 60_000}, {"openai_max_side": 100_000},
    {"sam2": {"batch_size": 10_000}}, {"detector_batch": "5000"}, {"keyframe_samples": 1e9},
])  # fmt: skip
def test_options_that_size_memory_have_a_ceiling_on_the_service(server, roots: Path, options):
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(roots / "a.png")
    client = server()
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png", "options": json.dumps(options)})
    assert "may be at most" in error_of(r, 400)


def test_resource_options_at_their_defaults_are_accepted(server, roots: Path):
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(roots / "a.png")
    client = server()
    options = {"decode_ahead": 8, "drainage_tile": 1024, "openai_max_side": 1024, "sam2_batch_size": 16}
    r = client.post("/v1/segment", data={"query": "bright regions", "path": "a.png", "options": json.dumps(options)})
    assert r.status_code == 200, r.text
