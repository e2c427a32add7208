"""Analytic tiles in worker processes (``-O workers=N``): the same outputs as one tile after another."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rscore.engine.program import run_program
from rscore.engine.parallel import PARALLEL_MIN_PIXELS, resolve_workers
from rscore.errors import InputError, OptionError
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.types import ArraySource, Request, Scene, Target

HALO = 6


def _program(ctx: OpContext) -> ProgramOutput:
    """A program whose every output depends on the tile: a 13x13 mean (needs the halo), its score, two classes,
    a note with a statistic, a target per bright blob and a caveat on some tiles."""
    grey = ctx.band("gray").astype(np.float32)
    smooth = ndimage.uniform_filter(grey, 2 * HALO + 1, mode="nearest")
    mask = smooth > 140
    classes = np.where(smooth > 170, 2, np.where(mask, 1, 0)).astype(np.uint8)
    ctx.note("mean of 13 x 13 > 140", share=float(mask[ctx.core_slices].mean()))
    targets = []
    labels, n = ndimage.label(mask[ctx.core_slices])
    for sl in ndimage.find_objects(labels)[:3]:
        y, x = sl
        r0, c0 = ctx.core.row_off - ctx.window.row_off, ctx.core.col_off - ctx.window.col_off
        targets.append(Target("blob", (x.start + c0, y.start + r0, x.stop + c0, y.stop + r0)))
    if float(grey.mean()) > 128:
        ctx.caveat("a bright tile")
    return ProgramOutput(mask=mask, score=smooth / 255.0, classes=classes, targets=tuple(targets))


def _failing(ctx: OpContext) -> ProgramOutput:
    if ctx.core.row_off >= 64 and ctx.core.col_off >= 64:
        raise InputError("unreadable block", path="dem.tif")
    return ProgramOutput(mask=np.zeros(ctx.shape, bool))


TEMPLATE = Template("blobs", "bright blob", "bright blobs", ("bright blobs",), program=_program, halo=HALO,
                    kinds=("image",))


def _scene() -> Scene:
    rng = np.random.default_rng(3)
    img = ndimage.gaussian_filter(rng.random((200, 232)) * 255, 6)
    img = ((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)
    valid = np.ones(img.shape, bool)
    valid[:20, 50:90] = False  # nodata
    return Scene(ArraySource(img, valid), "image", ("gray",))


def _run(scene: Scene, template: Template, workers) -> object:
    request = Request(query="bright blobs", plugin=None, options={"workers": workers})
    seen = []
    run = run_program(scene, request, template, {}, tile_size=64, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, run.tiles) for i in range(1, run.tiles + 1)]
    return run


def test_workers_give_the_same_outputs_as_one_by_one():
    scene = _scene()
    one = _run(scene, TEMPLATE, 1)
    two = _run(scene, TEMPLATE, 3)
    assert one.tiles == two.tiles == 16
    assert one.mask.any() and not one.mask.all()
    np.testing.assert_array_equal(one.mask, two.mask)
    np.testing.assert_array_equal(one.score, two.score)  # NaN where invalid, in both
    np.testing.assert_array_equal(one.classes, two.classes)
    assert np.isnan(one.score[:20, 50:90]).all()
    assert one.steps == two.steps and one.targets == two.targets and one.caveats == two.caveats
    assert one.targets and one.caveats == ["a bright tile"]


def _summary(ctx: OpContext) -> tuple[float, int, int]:
    """Writers' per-tile work (Template.tile_summary): the sum of the core's valid pixels, the number of bands the
    program had read already (cached in ctx), and the process that computed it."""
    import os

    core = ctx.band("gray")[ctx.core_slices]
    return float(np.nansum(core)), len(ctx._bands), os.getpid()


def test_tile_summaries_reach_the_run_in_tile_order_here_and_in_workers():
    import dataclasses
    import os

    from rscore.tiling import iter_tiles

    scene = _scene()
    template = dataclasses.replace(TEMPLATE, tile_summary=_summary)
    one, three = _run(scene, template, 1), _run(scene, template, 3)
    cores = [t.core for t in iter_tiles(200, 232, 64, HALO)]
    assert [c for c, _ in one.summaries] == cores == [c for c, _ in three.summaries]
    assert [v[:2] for _, v in one.summaries] == [v[:2] for _, v in three.summaries]
    assert all(n == 1 for _, (_, n, _) in one.summaries)  # after the program: the band it read is cached
    img = scene.read(None, ["gray"])[0].astype(np.float64)
    img[~scene.valid()] = np.nan
    assert sum(v[0] for _, v in one.summaries) == pytest.approx(np.nansum(img), rel=1e-6)  # each pixel once
    assert {pid for _, (_, _, pid) in three.summaries} - {os.getpid()}  # computed in the workers
    np.testing.assert_array_equal(one.mask, _run(scene, TEMPLATE, 1).mask)  # the outputs do not change
    assert _run(scene, TEMPLATE, 1).summaries == []  # a template without tile_summary: nothing


def test_an_error_in_a_worker_reaches_the_caller_as_itself():
    failing = Template("fail", "f", "f", ("f",), program=_failing, kinds=("image",))
    with pytest.raises(InputError, match="unreadable block"):
        _run(_scene(), failing, 2)


def test_a_program_that_cannot_be_pickled_runs_here():
    closure = Template("closure", "c", "c", ("c",), program=lambda ctx: _program(ctx), halo=HALO, kinds=("image",))
    one = _run(_scene(), TEMPLATE, 1)
    here = _run(_scene(), closure, 2)
    np.testing.assert_array_equal(one.mask, here.mask)


def test_worker_count():
    assert resolve_workers("auto", pixels=PARALLEL_MIN_PIXELS - 1, tiles=4) == 1  # small: start-up would dominate
    assert resolve_workers(None, pixels=PARALLEL_MIN_PIXELS, tiles=1) == 1
    assert resolve_workers("auto", pixels=PARALLEL_MIN_PIXELS, tiles=64) >= 1
    assert resolve_workers(8, pixels=10, tiles=3) == 3
    assert resolve_workers("2", pixels=10, tiles=3) == 2
    import multiprocessing

    proc = multiprocessing.current_process()
    old = proc.daemon
    proc._config["daemon"] = True  # as in a Dask worker or a multiprocessing.Pool worker: no children allowed
    try:
        assert resolve_workers(4, pixels=10, tiles=3) == 1
    finally:
        proc._config["daemon"] = old
    for bad in (0, -1, 1.5, "many", True):
        with pytest.raises(OptionError, match="workers"):
            resolve_workers(bad, pixels=10, tiles=3)


@pytest.mark.slow
def test_earth_landslide_with_workers_matches_sequential():
    """The real earth program on the plugin's example DEM (a lazy GeoTIFF reader, reopened in each worker)."""
    pytest.importorskip("rscore_earth")
    from rscore import engine
    from rscore_earth.synthetic import example_path

    path = example_path("dem")
    results = []
    for workers in (1, 2):
        scene = engine.open_scene(path, plugin="earth")
        res = engine.segment(scene, "landslide-prone areas", plugin="earth",
                             options={"workers": workers, "tile_size": 256, "matcher": "keyword"})
        assert res.plan.template == "earth:landslide"
        results.append(res)
    a, b = results
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    np.testing.assert_array_equal(np.asarray(a.score), np.asarray(b.score))
    assert a.plan.steps == b.plan.steps


_SLOW_RUN = r"""
import sys, time
import numpy as np
from rscore.engine.program import run_program
from rscore.sdk import ProgramOutput, Template
from rscore.types import ArraySource, Request, Scene

def slow(ctx):
    time.sleep(0.3)
    return ProgramOutput(mask=np.zeros(ctx.shape, bool))

scene = Scene(ArraySource(np.zeros((512, 512), np.uint8)), "image", ("gray",))
template = Template("slow", "slow", "sleeps on every tile", ("slow",), program=slow)
run_program(scene, Request(query="slow", plugin=None, options={"workers": 2}), template, {}, tile_size=32)
"""


def test_workers_end_with_their_parent_even_after_kill_9():
    """A ``kill -9`` of the process that owns the pool (``rscore run``) leaves no worker computing tiles: they are
    tied to their parent's life (Linux), so nothing keeps writing after the user stopped the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN])
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        workers: list = []
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in parent.children() if c.is_running()]
            time.sleep(0.05)
        assert len(workers) >= 2, "the pool never started its two workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived their parent: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("tiled", [False, True], ids=["in-memory", "tile-store"])
def test_scene_drainage_is_computed_once_with_workers(tmp_path, monkeypatch, tiled):
    """flood_prone needs the whole raster's flow accumulation: with two forked workers it is computed once (in the
    parent, during the first tile) and the workers use that one; the outputs equal the one-process run's. Calls are
    counted across processes in a file (the patched function is inherited by the forked workers). ``tile-store``:
    the drainage computed tile by tile into an on-disk store (drainage_max_px=0), which the workers read and leave."""
    pytest.importorskip("rscore_earth")
    import os

    from rscore import engine
    from rscore_earth import drainage_tiled, terrain
    from rscore_earth.synthetic import example_path

    calls = tmp_path / "calls.txt"
    module, name = (drainage_tiled, "tiled_flow_accumulation") if tiled else (terrain, "flow_accumulation")
    real = getattr(module, name)
    extra = {"drainage_max_px": 0, "drainage_tile": 128} if tiled else {}

    def counted(*args, **kwargs):
        with open(calls, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    results = []
    for workers in (1, 2):
        calls.write_text("")
        scene = engine.open_scene(example_path("dem"), plugin="earth")
        res = engine.segment(scene, "flood-prone areas", plugin="earth",
                             options={"workers": workers, "tile_size": 128, "matcher": "keyword", **extra})
        assert res.plan.template == "earth:flood_prone"
        assert calls.read_text().split() == [str(os.getpid())], f"workers={workers}"
        results.append(res)
    a, b = results
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    np.testing.assert_array_equal(np.asarray(a.score), np.asarray(b.score))
    assert a.plan.steps == b.plan.steps


_PROBE = '''
import numpy as np
from rscore.sdk import ProgramOutput
from rscore_earth import hydrology


def probe(ctx):
    """Score 1 where the scene's drainage was already in this process's cache when the tile started, else 0."""
    cached = bool(hydrology._per_scene(ctx.scene.source))
    acc = hydrology.whole_raster_accumulation(ctx)
    return ProgramOutput(mask=np.asarray(acc) > 2e4, score=np.full(ctx.shape, float(cached), np.float32))
'''


@pytest.mark.parametrize("tiled", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["in-memory", "tile-store"])
def test_spawned_workers_get_the_scene_drainage_and_the_same_outputs(tmp_path, monkeypatch, tiled):
    """Under the ``spawn`` start method (the default on macOS and Windows) workers inherit nothing: the job travels
    pickled, and the scene's drainage computed by the parent's first tile travels with it (the whole-raster array,
    or the on-disk tile store by name), so no worker computes it again. Outputs equal the one-process run's, and the
    parent's tile store outlives its workers."""
    pytest.importorskip("rscore_earth")
    from rscore import engine
    from rscore.engine import parallel
    from rscore_earth import hydrology
    from rscore_earth.synthetic import example_path

    if not hydrology.AVAILABLE:
        pytest.skip("numba is not installed")
    (tmp_path / "spawn_probe.py").write_text(_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get this process's sys.path
    import spawn_probe

    monkeypatch.setattr(parallel, "_start_method", lambda: "spawn")
    template = Template("probe", "drainage probe", "drainage probe", ("drainage probe",), program=spawn_probe.probe,
                        kinds=("dem",))
    extra = {"drainage_max_px": 0, "drainage_tile": 128} if tiled else {}
    runs = []
    for workers in (1, 2):
        scene = engine.open_scene(example_path("dem"), plugin="earth")
        request = Request(query="drainage probe", plugin="earth", options={"workers": workers, **extra})
        runs.append(run_program(scene, request, template, {}, tile_size=128))
        if tiled:  # the store the workers read is still there for the parent's own use
            store = next(iter(hydrology._per_scene(scene.source).values()))
            assert store.read().shape == (scene.height, scene.width)
    one, two = runs
    np.testing.assert_array_equal(np.asarray(one.mask), np.asarray(two.mask))
    assert np.asarray(two.mask).any()
    score = np.asarray(two.score)
    assert (score[:128, :128] == 0).all()  # the first tile, in the parent: computed there
    assert (score[:, 128:] == 1).all() and (score[128:, :] == 1).all()  # every worker tile found it


@pytest.mark.slow
def test_earth_flood_in_spawned_workers_matches_sequential(monkeypatch):
    """The real earth flood program (whole-raster drainage, lazy GeoTIFF reader reopened per worker) in spawned
    workers gives the one-process answer."""
    pytest.importorskip("rscore_earth")
    from rscore import engine
    from rscore.engine import parallel
    from rscore_earth.synthetic import example_path

    monkeypatch.setattr(parallel, "_start_method", lambda: "spawn")
    results = []
    for workers in (1, 2):
        scene = engine.open_scene(example_path("dem"), plugin="earth")
        results.append(engine.segment(scene, "flood-prone areas", plugin="earth",
                                      options={"workers": workers, "tile_size": 128, "matcher": "keyword"}))
    a, b = results
    assert b.plan.template == "earth:flood_prone"
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    np.testing.assert_array_equal(np.asarray(a.score), np.asarray(b.score))
    assert a.plan.steps == b.plan.steps


_UNIMPORTABLE = r"""
import sys
import numpy as np

if __name__ == "__main__":  # the program's module exists only in this process: a spawned worker cannot import it
    import importlib.util
    from rscore.engine import parallel

    parallel._start_method = lambda: "spawn"
    spec = importlib.util.spec_from_file_location("made_here", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["made_here"] = mod
    spec.loader.exec_module(mod)
    one = mod._run(mod._scene(), mod.TEMPLATE, 1)
    two = mod._run(mod._scene(), mod.TEMPLATE, 2)
    assert np.array_equal(np.asarray(one.mask), np.asarray(two.mask)) and np.asarray(one.mask).any()
    assert np.array_equal(np.asarray(one.score), np.asarray(two.score), equal_nan=True)
    print("same outputs")
"""


def test_spawned_workers_that_cannot_load_the_program_leave_the_tiles_here(tmp_path):
    """A program from a module a fresh interpreter cannot import (a notebook cell, a script's main block) cannot run
    in spawned workers: the run goes on in this process with the same outputs, not a BrokenProcessPool."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(_UNIMPORTABLE)
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).resolve())], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "same outputs" in proc.stdout
    assert "Traceback" not in proc.stderr
