"""Prefect flows: landslide-risk mapping (tiled, resumable, on Dask) and scaffold compliance.

One ``prefect_test_harness`` per test session (the ``prefect_api`` fixture; the temporary server takes 8-12 s to
start); plain logic is tested through ``task.fn()`` and the helpers without any server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prefect")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rscore_earth")
pytest.importorskip("rscore_safety")
cv2 = pytest.importorskip("cv2")

from rscore.engine import default_registry  # noqa: E402
from rscore.errors import BackendUnavailable, InputError, OptionError  # noqa: E402
from rscore.io.outdir import MARKER  # noqa: E402

from rscore_flows import FLOW_NAMES  # noqa: E402
from rscore_flows import landslide_risk_mapping as lrm  # noqa: E402
from rscore_flows import scaffold_compliance as sc  # noqa: E402
from rscore_flows import _common  # noqa: E402
from rscore_flows._common import RESULTS_DIR, expand_inputs, make_task_runner  # noqa: E402
from rscore_flows.cli import flows_list, flows_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUERY = "landslide-prone areas"
TILE = 64
LANDSLIDE = "earth:landslide"


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def prefect_api(prefect_api_url):
    """The session's temporary Prefect server (tests/conftest.py)."""
    yield


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """A synthetic 10 m DEM of 200 x 264 px (not a multiple of the 64 px tile: edge tiles are partial) and the
    reference outputs of ``rscore run --tile-size 64`` on it."""
    from rscore_earth.synthetic import TerrainSpec, write_dem

    from rscore import engine

    folder = tmp_path_factory.mktemp("region")
    dem = write_dem(folder / "hills.tif", TerrainSpec(height=200, width=264, seed=3, valleys=1, relief=700.0))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCORE_MATCHER", "keyword")
        ref = engine.run(dem, QUERY, plugin="earth", out_dir=folder / "ref", options={"tile_size": TILE})
        # and without the minimum mapping unit (an earth postprocess): what the program's tiles themselves give
        engine.run(dem, QUERY, plugin="earth", out_dir=folder / "raw", options={"tile_size": TILE, "mmu_m2": 0})
    arrays = {name: _read(folder / "ref" / f"{name}.tif") for name in ("mask", "score", "classes")}
    arrays.update({f"raw_{name}": _read(folder / "raw" / f"{name}.tif") for name in ("mask", "score", "classes")})
    assert arrays["mask"].any() and (arrays["mask"] == 0).any(), "the reference region should be partly masked"
    assert not np.array_equal(arrays["classes"], arrays["raw_classes"]), "the MMU should change some classes"
    return {"dem": dem, "result": ref, **arrays}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _patch_program(monkeypatch, wrap):
    """Replace the landslide template's program in this process's registry with ``wrap(original)``."""
    reg = default_registry()
    patched = [
        dataclasses.replace(t, program=wrap(t.program)) if t.qualified_name == LANDSLIDE else t for t in reg.templates
    ]
    monkeypatch.setattr(reg, "templates", patched)


def _job(dem: Path, query: str = QUERY, tile_size: int = TILE) -> lrm.RegionJob:
    job = lrm.plan_region.fn("hills", str(dem), "earth", query, lrm.request_options(None, tile_size))
    assert isinstance(job, lrm.RegionJob)
    return job


# ------------------------------------------------------------------------------------------------------ plain logic
def test_batches_cover_every_tile_once():
    batches = lrm.split_batches(200, 264, 64, 2)
    tiles = [i for b in batches for i in b.tiles]
    assert sorted(tiles) == list(range(4 * 5)) and len(tiles) == len(set(tiles))
    assert len(batches) == 2 * 3
    last = batches[-1]
    assert (last.window.row_off, last.window.col_off, last.window.height, last.window.width) == (128, 256, 72, 8)
    assert sum(b.window.height * b.window.width for b in batches) == 200 * 264
    with pytest.raises(OptionError, match="batch_tiles"):
        lrm.split_batches(10, 10, 64, 0)


def test_cache_key_depends_on_input_window_query_and_versions(region, tmp_path):
    job = _job(region["dem"])
    assert job.template == LANDSLIDE and job.halo > 0 and (job.height, job.width) == (200, 264)
    b0, b1 = lrm.split_batches(job.height, job.width, job.tile_size, 2)[:2]
    key = lrm.batch_cache_key(job, b0)
    assert key == lrm.batch_cache_key(_job(region["dem"]), b0)  # stable across plans
    assert key.startswith("landslide-hills-b0-")
    assert key != lrm.batch_cache_key(job, b1)
    assert key != lrm.batch_cache_key(dataclasses.replace(job, query="steep landslide slopes"), b0)
    assert key != lrm.batch_cache_key(dataclasses.replace(job, versions=(("rscore", "9.9"),)), b0)
    assert key != lrm.batch_cache_key(dataclasses.replace(job, options=job.options + (("z_factor", 2),)), b0)
    changed = tmp_path / "hills.tif"
    changed.write_bytes(region["dem"].read_bytes() + b"\0")  # same name, different content
    assert lrm.batch_cache_key(_job(changed), b0) != key


def test_segment_batch_fn_equals_the_engine_and_records_bad_tiles(region, monkeypatch):
    job = _job(region["dem"])
    batch = lrm.split_batches(job.height, job.width, job.tile_size, 2)[4]
    res = lrm.segment_batch.fn(job, batch)
    assert not res.bad and sorted(t.index for t in res.tiles) == sorted(batch.tiles)
    for t in res.tiles:
        np.testing.assert_array_equal(t.mask.unpack(), region["raw_mask"][t.core.slices] == 1)
        np.testing.assert_array_equal(t.classes.unpack(), region["raw_classes"][t.core.slices])
        np.testing.assert_array_equal(t.score.unpack(), region["raw_score"][t.core.slices])

    bad_tile = batch.tiles[1]

    def wrap(program):
        def flaky(ctx):
            if ctx.core.row_off // TILE * 5 + ctx.core.col_off // TILE == bad_tile:
                raise ValueError("corrupt block in the DEM")
            return program(ctx)

        return flaky

    _patch_program(monkeypatch, wrap)
    res = lrm.segment_batch.fn(job, batch)
    assert [b.index for b in res.bad] == [bad_tile] and "ValueError: corrupt block" in res.bad[0].error
    assert len(res.tiles) == len(batch.tiles) - 1

    def always_oserror(program):
        def failing(ctx):
            raise OSError("network file system hiccup")

        return failing

    _patch_program(monkeypatch, always_oserror)
    with pytest.raises(OSError):  # transient: propagates so that Prefect retries the batch
        lrm.segment_batch.fn(job, batch)


def test_the_flow_map_is_drawn_from_the_tiles_previews(region, tmp_path, monkeypatch):
    """The batches carry each tile's ``tile_summary`` (the earth map's preview blocks), so the region's map.png is
    stitched from them as ``rscore run`` does, without a re-read of the DEM (they were dropped: the map re-read it);
    the same PNGs as the re-read."""
    from PIL import Image
    from rscore_earth import mapplot

    job = _job(region["dem"])
    stitch = lrm._Stitch(job)
    for batch in lrm.split_batches(job.height, job.width, job.tile_size, 2):
        res = lrm.segment_batch.fn(job, batch)
        assert all(isinstance(t.summary, mapplot.PreviewPiece) for t in res.tiles)
        stitch.add(res)
    scene = lrm.prepared_scene(job.path, job.plugin, job.options_dict, job.query)  # as _merge_region does
    result = stitch.result(scene, lrm._template(default_registry(), job.template), {})
    assert len(result.tile_summaries) == job.tiles
    with monkeypatch.context() as m:
        m.setattr(mapplot, "_read_float", lambda *a: pytest.fail("the map writer read the DEM again"))
        (tmp_path / "a").mkdir()
        tiles = mapplot.MapPngWriter().write(scene, result, tmp_path / "a")
    (tmp_path / "b").mkdir()
    reread = mapplot.MapPngWriter().write(scene, result.replace(tile_summaries=()), tmp_path / "b")
    for key in ("map_png", "basemap_png"):
        assert np.array_equal(np.asarray(Image.open(tiles[key])), np.asarray(Image.open(reread[key]))), key


def test_inputs_runner_and_cli_errors(tmp_path, region):
    assert expand_inputs([str(region["dem"].parent)], lrm.RASTER_SUFFIXES, "rasters") == [region["dem"]]
    joined = os.pathsep.join([str(region["dem"]), str(region["dem"].parent / "*.tif")])
    assert expand_inputs([joined], lrm.RASTER_SUFFIXES, "rasters") == [region["dem"]]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.tif")], lrm.RASTER_SUFFIXES, "rasters")
    with pytest.raises(InputError, match="folder has no rasters"):
        expand_inputs([str(tmp_path)], lrm.RASTER_SUFFIXES, "rasters")
    assert [f["name"] for f in flows_list()] == [*FLOW_NAMES, "segment-batch"]
    assert all(f["entrypoint"].startswith("rscore_flows.") for f in flows_list())
    assert all(bool(f["cron"]) == (f["name"] in FLOW_NAMES) for f in flows_list())  # only the scheduled ones
    with pytest.raises(OptionError, match="needs a query"):
        flows_run("segment-batch", [str(region["dem"])], tmp_path)
    with pytest.raises(OptionError, match="does not take dask_address"):
        flows_run("segment-batch", [str(region["dem"])], tmp_path, query="steep", dask_address="tcp://h:8786")
    with pytest.raises(OptionError, match="runs the 'earth' plugin's templates, not 'surgical'"):
        flows_run("landslide-risk-mapping", [str(region["dem"])], tmp_path, plugin="surgical")
    # checked before anything runs (exit 2 on the command line): flow parameters, typed, and the -O options
    with pytest.raises(OptionError, match="batch_tiles must be from 1"):
        flows_run("landslide-risk-mapping", [str(region["dem"])], tmp_path, batch_tiles=0)
    with pytest.raises(OptionError, match="stride must be a whole number"):
        flows_run("scaffold-compliance", [str(tmp_path)], tmp_path, params={"stride": "two"})
    with pytest.raises(OptionError, match="'tile_sise' \\(did you mean tile_size\\?\\)"):
        flows_run("segment-batch", [str(region["dem"])], tmp_path, query="steep", options={"tile_sise": 64})
    with pytest.raises(OptionError, match="option slope_min_deg must be in 0..90"):
        flows_run("segment-batch", [str(region["dem"])], tmp_path, query="steep", options={"slope_min_deg": 200})
    with pytest.raises(OptionError, match="unknown safety template 'hivs'"):
        flows_run("scaffold-compliance", [str(tmp_path)], tmp_path, templates=["hivs"])
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written
    with pytest.raises(InputError, match="matches nothing"):
        flows_run("segment-batch", [str(tmp_path / "*.nothing")], tmp_path, query="steep")
    with pytest.raises(OptionError, match="unknown flow"):
        flows_run("no-such-flow", [str(region["dem"])], tmp_path)
    with pytest.raises(OptionError, match="does not take zones"):
        flows_run("landslide-risk-mapping", [str(region["dem"])], tmp_path, zones="z.json")
    with pytest.raises(OptionError, match="reasoner"):
        lrm.request_options({"reasoner": "openai"}, 64)
    with pytest.raises(OptionError, match="either a Dask or a Ray"):
        make_task_runner("tcp://h:8786", None, "ray://h:10001")
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="pip install prefect-ray"):
            make_task_runner(ray_address="ray://head:10001")


def test_allocator_is_tuned_once_and_only_under_a_trim_threshold(monkeypatch):
    monkeypatch.setattr(_common, "_ALLOCATOR_CHECKED", False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert _common.tune_allocator() is False  # a plain process: glibc's dynamic threshold is left alone
    monkeypatch.setattr(_common, "_ALLOCATOR_CHECKED", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what Dask's nanny sets
    monkeypatch.setenv("RSCORE_TUNE_MALLOC", "0")
    assert _common.tune_allocator() is False
    monkeypatch.setattr(_common, "_ALLOCATOR_CHECKED", False)
    monkeypatch.delenv("RSCORE_TUNE_MALLOC")
    try:
        glibc = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # no such confstr name: not glibc
        glibc = False
    assert _common.tune_allocator() is glibc
    assert _common.tune_allocator() is False  # once per process


# ------------------------------------------------------------------------------------------------------------ flows
def test_tiled_flow_equals_rscore_run_and_reuses_results(prefect_api, region, tmp_path):
    """Also the flow's own --out folder: other files in it are left alone, its marker lists what the flow wrote, and
    a second run into it reuses the finished tiles and rewrites rscore's own summary and report."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    summary = flows_run("landslide-risk-mapping", [str(region["dem"])], out, tile_size=TILE, batch_tiles=2)
    assert summary["status"] == "ok"
    (r,) = summary["regions"]
    assert r["tiles"] == {"total": 20, "bad": 0, "computed": 20, "reused": 0}
    folder = out / "regions" / "hills"
    for name in ("mask", "score", "classes"):
        np.testing.assert_array_equal(_read(folder / f"{name}.tif"), region[name], err_msg=name)
    ref_classes = region["result"].classes
    assert r["classes"] == json.loads(json.dumps(ref_classes)) and set(ref_classes) == {"low", "medium", "high"}
    assert abs(sum(c["share"] for c in r["classes"].values()) - 1.0) < 1e-3
    assert r["classes"]["high"]["area_km2"] == pytest.approx(r["classes"]["high"]["pixels"] * 100 / 1e6)
    doc = json.loads((folder / "result.json").read_text())
    assert doc["summary"]["mask_area_px"] == int(region["mask"].sum())
    assert doc["provenance"]["flow"]["tile_size"] == TILE
    assert (folder / "polygons.gpkg").exists() and (folder / "polygons.geojson").exists()
    report = (out / "landslide-report.md").read_text()
    assert "| hills | ok | 20 / 0 / 0 |" in report and "high km2" in report
    assert json.loads((out / "landslide-summary.json").read_text())["status"] == "ok"

    ref_doc = json.loads((region["dem"].parent / "ref" / "result.json").read_text())
    assert set(doc["provenance"]) == set(ref_doc["provenance"]) | {"flow"}  # the engine's finish stage, not a copy
    for key in ("absent", "instances", "caveats", "confidence", "classes"):
        assert doc[key] == ref_doc[key], key

    marker = json.loads((out / MARKER).read_text())
    assert {"landslide-summary.json", "landslide-report.md"} <= set(marker["files"])
    assert "notes.txt" not in marker["files"]

    again = flows_run("landslide-risk-mapping", [str(region["dem"])], out, tile_size=TILE, batch_tiles=2)
    assert again["regions"][0]["tiles"] == {"total": 20, "bad": 0, "computed": 0, "reused": 20}
    np.testing.assert_array_equal(_read(folder / "mask.tif"), region["mask"])
    assert (out / "notes.txt").read_text() == "mine\n"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    secret = flows_run("landslide-risk-mapping", [str(region["dem"])], tmp_path / "secret", tile_size=TILE,
                       options={"endpoint": "https://user:hunter2@vlm.example/v1"})  # fmt: skip
    assert secret["status"] == "ok"
    text = (tmp_path / "secret" / "regions" / "hills" / "result.json").read_text()
    assert "hunter2" not in text and "https://***@vlm.example/v1" in text  # credentials redacted, as rscore run does


def test_segment_batch_runs_any_plugin_from_rscore_flows_run(prefect_api, region, tmp_path):
    """`rscore flows run segment-batch`: one output folder per input as `rscore run` writes it; a bad input is a
    failed item, the others succeed (status partial)."""
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    out = tmp_path / "out"
    summary = flows_run("segment-batch", [str(region["dem"]), str(bad)], out, query=QUERY, plugin="earth",
                        options={"tile_size": TILE}, retries=0)
    assert summary["status"] == "partial"
    good, failed = summary["items"]
    assert good["state"] == "succeeded" and failed["state"] == "failed" and "broken.tif" in failed["error"]
    np.testing.assert_array_equal(_read(out / "hills" / "mask.tif"), region["mask"])
    assert json.loads((out / "segment-batch-summary.json").read_text())["status"] == "partial"
    assert not (out / "broken").exists()


def test_bad_tile_is_reported_and_transient_errors_are_retried(prefect_api, region, tmp_path, monkeypatch):
    bad_tile, flaky_tile = 7, 12  # row 1 col 2, row 2 col 2 (5 tiles per row)
    attempts = {"flaky": 0}

    def wrap(program):
        def patched(ctx):
            index = ctx.core.row_off // TILE * 5 + ctx.core.col_off // TILE
            if index == bad_tile:
                raise ValueError("corrupt block in the DEM")
            if index == flaky_tile:
                attempts["flaky"] += 1
                if attempts["flaky"] == 1:
                    raise TimeoutError("storage timed out")
            return program(ctx)

        return patched

    _patch_program(monkeypatch, wrap)
    out = tmp_path / "out"
    summary = flows_run(
        "landslide-risk-mapping", [str(region["dem"])], out, tile_size=TILE, batch_tiles=1, retry_delay_s=0,
        options={"mmu_m2": 0},  # the minimum mapping unit would merge patches across the nodata tile's border
    )
    (r,) = summary["regions"]
    assert summary["status"] == "partial" and r["status"] == "partial"
    assert [b["tile"] for b in r["bad_tiles"]] == [bad_tile]
    assert r["bad_tiles"][0]["window"] == {"row": 64, "col": 128, "height": 64, "width": 64}
    assert attempts["flaky"] == 2  # failed once, retried once
    mask = _read(out / "regions" / "hills" / "mask.tif")
    assert (mask[64:128, 128:192] == 255).all()  # the bad tile is nodata
    good = np.ones(mask.shape, bool)
    good[64:128, 128:192] = False
    np.testing.assert_array_equal(mask[good], region["raw_mask"][good])
    assert "tile 7 (rows 64-127, cols 128-191): ValueError: corrupt block" in (out / "landslide-report.md").read_text()


KILLED_RUN = """
import dataclasses, os, signal, sys
from rscore.engine import default_registry
from rscore_flows.cli import flows_run

reg = default_registry()
i = next(i for i, t in enumerate(reg.templates) if t.qualified_name == "earth:landslide")
original = reg.templates[i].program
calls = [0]

def program(ctx):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of a tile, no clean-up
    return original(ctx)

reg.templates[i] = dataclasses.replace(reg.templates[i], program=program)
flows_run("landslide-risk-mapping", [sys.argv[1]], sys.argv[2], tile_size=64, batch_tiles=1, workers=1)
"""


def test_killed_run_resumes_without_recomputing_finished_tiles(prefect_api, region, tmp_path, monkeypatch):
    import prefect.settings

    out = tmp_path / "out"
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "RSCORE_MATCHER": "keyword",
    }
    kill_at = 6  # the 6th tile program call kills the process: 5 one-tile batches finished
    proc = subprocess.run(
        [sys.executable, str(script), str(region["dem"]), str(out), str(kill_at)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    persisted = {p.name for p in (out / RESULTS_DIR).iterdir() if p.name.startswith("landslide-")}
    assert len(persisted) == kill_at - 1
    assert not (out / "landslide-summary.json").exists()

    calls = []

    def wrap(program):
        def counted(ctx):
            calls.append((ctx.core.row_off, ctx.core.col_off))
            return program(ctx)

        return counted

    _patch_program(monkeypatch, wrap)
    summary = flows_run(
        "landslide-risk-mapping", [str(region["dem"])], out, tile_size=TILE, batch_tiles=1, workers=1
    )
    (r,) = summary["regions"]
    job = _job(region["dem"])
    batches = lrm.split_batches(job.height, job.width, TILE, 1)
    reused = {b.index for b in batches if lrm.batch_cache_key(job, b) in persisted}
    assert set(r["batches"]["reused"]) == reused and len(reused) == kill_at - 1
    assert set(r["batches"]["computed"]) == {b.index for b in batches} - reused
    assert len(calls) == 20 - len(reused)  # finished tiles were not recomputed
    assert r["tiles"] == {"total": 20, "bad": 0, "computed": 20 - len(reused), "reused": len(reused)}
    np.testing.assert_array_equal(_read(out / "regions" / "hills" / "mask.tif"), region["mask"])  # no tile lost


def test_dask_local_cluster_of_two_workers(prefect_api, region, tmp_path, monkeypatch):
    """Two Dask workers (threads of this process); the merge stitches on disk (as for regions over the in-memory
    limit), and the mask is still the engine's."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("prefect_dask")
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "10000")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        summary = flows_run(
            "landslide-risk-mapping", [str(region["dem"])], tmp_path / "out", tile_size=TILE, batch_tiles=1,
            dask_address=cluster.scheduler_address, options={"mmu_m2": 0},
        )  # fmt: skip  (the MMU of a map stitched on disk is sieved window by window: compared without it)
    assert summary["task_runner"] == f"dask {cluster.scheduler_address}"
    r = summary["regions"][0]
    assert r["tiles"]["computed"] == 20 and len(r["workers"]) == 2 and all(" dask " in w for w in r["workers"])
    assert any("stitched on disk" in w for w in r["warnings"])
    np.testing.assert_array_equal(_read(tmp_path / "out" / "regions" / "hills" / "mask.tif"), region["raw_mask"])


@pytest.mark.slow
def test_dask_local_cluster_of_two_processes(prefect_api, region, tmp_path):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("prefect_dask")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summary = flows_run(
            "landslide-risk-mapping", [str(region["dem"])], tmp_path / "out", tile_size=TILE, batch_tiles=1,
            dask_address=cluster.scheduler_address,
        )  # fmt: skip
    r = summary["regions"][0]
    assert r["tiles"]["computed"] == 20 and len({w.split()[0] for w in r["workers"]}) == 2  # two processes
    np.testing.assert_array_equal(_read(tmp_path / "out" / "regions" / "hills" / "mask.tif"), region["mask"])


# ------------------------------------------------------------------------------------------------ scaffold compliance
def _clip(path: Path, vest_frames: range, n: int = 40, fps: float = 10.0) -> Path:
    """A grey site clip (160 x 120) with a static orange traffic cone, where a worker in a fluorescent vest (30 x 40
    px, on a body with a head and legs) walks right during ``vest_frames``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.clip(rng.normal(110, 10, (120, 160, 3)), 0, 255).astype(np.uint8)
        img[96:116, 140:152] = (255, 110, 20)  # a traffic cone: hi-vis orange, static, not worn
        if i in vest_frames:
            x = 10 + 4 * (i - vest_frames.start)
            img[22:34, x + 9 : x + 21] = (200, 150, 120)  # head
            img[34:40, x : x + 30] = (40, 50, 90)  # shoulders
            img[80:112, x + 4 : x + 26] = (35, 40, 70)  # legs
            img[40:80, x : x + 30] = (200, 255, 40)
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_frame_sampling_and_days(tmp_path):
    clip = _clip(tmp_path / "c.avi", range(0), n=25)
    items = list(sc.sample_frames(clip, sample_fps=2.0))
    info = items[0][1]
    assert info["fps"] == pytest.approx(10.0) and info["stride"] == 5 and info["size_px"] == (160, 120)
    assert [(f, t) for f, t, _ in items[1:]] == [(0, 0.0), (5, 0.5), (10, 1.0), (15, 1.5), (20, 2.0)]
    assert items[1][2].shape == (120, 160, 3)
    assert [f for f, _, _ in list(sc.sample_frames(clip, stride=10))[1:]] == [0, 10, 20]
    (tmp_path / "x.avi").write_bytes(b"not a video" * 50)
    with pytest.raises(InputError, match="cannot be opened as a video"):
        list(sc.sample_frames(tmp_path / "x.avi"))
    from datetime import date

    assert sc.resolve_day("yesterday", today=date(2024, 3, 1)) == date(2024, 2, 29)
    assert sc.resolve_day(None) is None and sc.resolve_day("2024-05-06") == date(2024, 5, 6)
    with pytest.raises(OptionError, match="YYYY-MM-DD"):
        sc.resolve_day("last week")


def _png(path_or_bytes) -> np.ndarray:
    """A PNG decoded to RGB (raises on anything that is not a PNG)."""
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_representative_frames_box_the_finding_where_it_was_largest(tmp_path):
    from rscore.video.writers import track_colour

    clip = _clip(tmp_path / "m.avi", range(10, 25))
    zones = tmp_path / "zones.json"
    zones.write_text(json.dumps({"zones": [{"name": "crane", "polygon": [[80, 0], [160, 0], [160, 120], [80, 120]]}]}))
    job = sc.ClipJob(str(clip), "cam", "m", ("hivis", "restricted_zone"), None, str(zones), 5.0, None, "d", ())
    found = sc.analyse_clip.fn(job)
    fired = found.fired["hivis"]
    ev = found.evidence["hivis"]
    top = max(f["area_px"] for f in fired)
    assert ev["frame"] == next(f["frame"] for f in fired if f["area_px"] == top) and ev["area_px"] == top
    assert ev["t_s"] == pytest.approx(ev["frame"] / 10)
    x = 10 + 4 * (ev["frame"] - 10)  # the vest of that frame: x .. x + 30, rows 40 .. 80
    (box,) = ev["boxes"]
    assert abs(box["bbox"][0] - x) <= 1 and abs(box["bbox"][2] - (x + 30)) <= 1 and box["bbox"][1:4:2] == [40, 80]
    img = _png(ev["png"])
    assert img.shape == (120, 160, 3) and ev["size_px"] == [160, 120]
    x0, y0, x1, y1 = box["bbox"]
    colour = track_colour(1)
    assert tuple(img[60, x0]) == colour and tuple(img[60, x1 - 1]) == colour and tuple(img[y1 - 1, x0 + 15]) == colour
    assert tuple(img[60, x1 + 3]) != colour and tuple(img[20, 150]) != colour  # nothing drawn beside the vest
    # the vest inside the crane zone: the frame where most of it was inside (the last one), boxed inside the zone
    inside = found.evidence["hivis_in_restricted_zone"]
    assert inside["frame"] == 24
    assert inside["area_px"] == max(f["area_px"] for f in found.overlaps["hivis_in_restricted_zone"])
    assert inside["boxes"][0]["bbox"] == [80, 40, 96, 80]
    img = _png(inside["png"])
    assert tuple(img[60, 80]) == colour and tuple(img[60, 95]) == colour
    assert tuple(img[5, 80]) == (255, 255, 255)  # the zone's outline
    assert "png" not in found.as_dict()["evidence"]["hivis"]  # the picture goes next to the report, not into JSON


def test_evidence_is_drawn_small():
    from rscore.video.writers import track_colour
    from rscore_flows.compliance_frames import draw_evidence

    rgb = np.full((720, 1280, 3), 90, np.uint8)
    mask = np.zeros((720, 1280), bool)
    mask[200:400, 600:800] = True
    out, boxes = draw_evidence(rgb, [{"mask": mask, "label": "worker"}])
    assert out.shape == (360, 640, 3) and boxes[0]["bbox"] == [300, 100, 400, 200]
    assert tuple(out[150, 300]) == track_colour(1) and tuple(out[150, 399]) == track_colour(1)
    assert tuple(out[150, 250]) == (90, 90, 90)


def test_scaffold_compliance_daily_report(prefect_api, tmp_path):
    cam = tmp_path / "gate-3"
    cam.mkdir()
    _clip(cam / "morning.avi", range(10, 25))
    _clip(cam / "noon.avi", range(0))
    (cam / "broken.avi").write_bytes(b"not a video" * 50)
    zones = tmp_path / "zones.json"
    crane = {"name": "crane swing", "polygon": [[80, 0], [160, 0], [160, 120], [80, 120]]}  # right half of the view
    zones.write_text(json.dumps({"zones": [crane]}))
    out = tmp_path / "out"
    doc = flows_run("scaffold-compliance", [str(cam)], out, zones=zones, sample_fps=5.0, day="today",
                    query="workers without hard hats")  # fmt: skip
    assert doc["status"] == "partial" and doc["templates"] == ["hivis", "restricted_zone", "scaffold"]
    clips = {c["name"]: c for c in doc["clips"]}
    assert set(clips) == {"broken", "morning", "noon"} and {c["camera"] for c in clips.values()} == {"gate-3"}
    morning = clips["morning"]
    assert morning["stride"] == 2 and morning["sampled"] == 20 and morning["duration_s"] == pytest.approx(4.0)
    hivis = morning["fired"]["hivis"]
    assert [f["frame"] for f in hivis] == list(range(10, 25, 2))
    assert [f["t_s"] for f in hivis] == pytest.approx([f / 10 for f in range(10, 25, 2)])
    assert all(abs(f["area_px"] - 1200) <= 40 for f in hivis)
    inside = morning["overlaps"]["hivis_in_restricted_zone"]
    assert [f["frame"] for f in inside] == [22, 24]  # the vest's right edge passes x = 80 from frame 22 on
    assert morning["zone"]["share"] == pytest.approx(0.5)
    assert clips["noon"]["fired"]["hivis"] == [] and not clips["noon"]["overlaps"]  # the cone is not a worker
    assert "cannot be opened as a video" in clips["broken"]["error"]
    assert "detector_model" in morning["skipped"]["query"]  # the hard-hat rule runs on detections: none configured
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["hivis"]["state"] == "ran" and checks["hivis"]["frames_fired"] == 8
    assert checks["restricted_zone"]["state"] == "ran"
    assert checks["scaffold"]["state"] == "ran" and checks["scaffold"]["frames_fired"] == 0  # offline lattice cues
    for name in ("scaffold_bracing", "guardrails", "hard_hats", "workers_at_height"):
        assert checks[name]["state"] == "could not run", name
        assert "VLM" in checks[name]["why"] or "detector" in checks[name]["why"], checks[name]["why"]
    asked = [c for c in checks.values() if c["state"] == "could not run" and "detector" in c.get("why", "")]
    assert asked, "the hard-hat query's check must say it could not run without a detector"
    totals = doc["totals"]
    assert totals["hivis"]["frames"] == 8 and totals["hivis"]["clips"] == 1
    assert totals["hivis_in_restricted_zone"]["first"] == {"clip": "morning", "t_s": 2.2}
    day = doc["day"]
    assert (out / f"compliance-{day}.json").exists()
    md = (out / f"compliance-{day}.md").read_text()
    assert "| gate-3 | morning | hivis | 8 |" in md and "gate-3/broken" in md
    assert "| scaffold_bracing (scaffold bay missing cross bracing) | could not run |" in md
    ev = morning["evidence"]["hivis"]  # the representative frame: written next to the report, linked relatively
    assert ev["image"] == f"compliance-{day}-frames/gate-3-morning-hivis.png"
    assert _png(out / ev["image"]).shape == (120, 160, 3) and "png" not in ev
    assert f"![gate-3/morning hivis: frame {ev['frame']}, {ev['t_s']:g} s, 1" in md and f"]({ev['image']})" in md
    assert (out / morning["evidence"]["hivis_in_restricted_zone"]["image"]).is_file()
    assert clips["noon"]["evidence"] == {} and "noon-" not in md  # nothing fired: no frame

    again = flows_run("scaffold-compliance", [str(cam)], out, zones=zones, sample_fps=5.0,
                      query="workers without hard hats")  # fmt: skip
    assert {c["name"]: c["reused"] for c in again["clips"]} == {"broken": True, "morning": True, "noon": True}
    assert again["totals"] == doc["totals"]


# ------------------------------------------------------------------------------------------------------ deployments
def test_deployments_match_prefect_yaml(region, tmp_path):
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    from rscore_flows.deployments import DEPLOYMENTS, build_deployments, render_prefect_yaml

    assert {s.flow for s in DEPLOYMENTS} == set(FLOW_NAMES)  # every scheduled flow of the registry
    inputs = {lrm.FLOW_NAME: [str(region["dem"])], sc.FLOW_NAME: [str(tmp_path)]}
    deps = build_deployments(tmp_path / "flows-out", inputs, timezone="Europe/Rome", params={"zones": "z.json"})
    by_name = {d.name: d for d in deps}
    assert set(by_name) == {s.name for s in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        d = by_name[spec.name]
        (schedule,) = d.schedules
        assert schedule.schedule.cron == spec.cron and schedule.schedule.timezone == "Europe/Rome"
        assert d.parameters["out"] == str((tmp_path / "flows-out" / spec.flow).absolute())
        assert d.entrypoint == spec.entrypoint
    assert by_name["daily-report"].parameters["day"] == "today"
    assert by_name["daily-report"].parameters["zones"] == str(Path("z.json").absolute())
    assert "zones" not in by_name["nightly"].parameters  # only to flows that declare it
    with pytest.raises(OptionError, match="nothing to serve"):
        build_deployments(tmp_path)

    text = (REPO / "prefect.yaml").read_text()
    assert text == render_prefect_yaml(), "prefect.yaml is generated: rscore flows prefect-yaml > prefect.yaml"
    doc = yaml.safe_load(text)
    declared = {d["name"]: d for d in doc["deployments"]}
    assert set(declared) == {s.name for s in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        d = declared[spec.name]
        assert d["entrypoint"] == spec.entrypoint and d["schedules"][0]["cron"] == spec.cron
        assert d["description"] == spec.description
        module = lrm if spec.flow == lrm.FLOW_NAME else sc
        the_flow = getattr(module, spec.entrypoint.rsplit(".", 1)[1])
        assert load_flow_from_entrypoint(spec.entrypoint, use_placeholder_flow=False) is the_flow  # the package's own
