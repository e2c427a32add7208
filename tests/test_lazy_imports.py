"""#22: short CLI calls load only what they use. An analytic run and ``rscore plugins list`` do not import the tiled
VLM path (rscore.engine.decoupled), the video engine or the agent reasoner; ``plugins list`` and a run whose program
needs no scipy do not import scipy (the plugins' operator modules import it in the functions that use it); every old
import path of what moved to load lazily still works and names the same object. The CLI lets idle OpenBLAS threads
sleep at once (``OPENBLAS_THREAD_TIMEOUT``) unless the user chose otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAZY = ("rscore.engine.decoupled", "rscore.video.engine", "rscore.reasoners.agent")


def _loaded_after_cli(argv: list[str], tmp_path, watch: tuple[str, ...] = LAZY,
                      env: dict[str, str | None] | None = None) -> tuple[int, list[str]]:
    """Run ``rscore ARGV`` in a fresh interpreter (as ``python -m rscore`` does) and return its exit code and which of
    ``watch`` (module names; ``env:NAME`` for the value of an environment variable) it had at the end. ``env``: more
    environment variables (None: removed)."""
    code = (
        "import json, os, runpy, sys\n"
        f"sys.argv = ['rscore', *{argv!r}]\n"
        "rc = 0\n"
        "try:\n"
        "    runpy.run_module('rscore', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code or 0\n"
        f"watch = {watch!r}\n"
        "had = [m for m in watch if m in sys.modules]\n"
        "had += [m + '=' + os.environ.get(m[4:], '') for m in watch if m.startswith('env:')]\n"
        "print('LOADED=' + json.dumps(had))\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "RSCORE_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr[-2000:]
    return proc.returncode, json.loads(line[-1][len("LOADED="):])


def test_analytic_run_imports_no_tiled_path_video_engine_or_agent(tmp_path):
    img = tmp_path / "img64.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    rc, loaded = _loaded_after_cli(
        ["run", str(img), "where is the sea floor", "-p", "underwater", "--matcher", "keyword", "-o", str(out)], tmp_path
    )
    assert rc == 0
    assert (out / "result.json").is_file() and (out / "mask.png").is_file()
    assert loaded == []


def test_plugins_list_imports_no_tiled_path_video_engine_or_agent(tmp_path):
    rc, loaded = _loaded_after_cli(["plugins", "list"], tmp_path)
    assert rc == 0
    assert loaded == []


def test_plugins_list_imports_no_scipy(tmp_path):
    # scipy.ndimage costs ~0.25 CPU-s to import (scipy 1.17): the operator modules of earth (terrain), surgical (ct)
    # and underwater (water) import it inside the functions that filter, label or morph
    rc, loaded = _loaded_after_cli(["plugins", "list"], tmp_path, watch=("scipy", "scipy.ndimage", "numpy"))
    assert rc == 0
    assert loaded == ["numpy"]  # (numpy is still imported: the check watches what it says it watches)


def test_a_run_whose_program_needs_no_scipy_imports_none(tmp_path):
    img = tmp_path / "img64.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    rc, loaded = _loaded_after_cli(
        ["run", str(img), "specular highlights", "-p", "surgical", "--matcher", "keyword", "-o", str(out)], tmp_path,
        watch=("scipy", "scipy.ndimage", "rscore_underwater.water", "rscore_earth.terrain", "rscore_surgical.ct"),
    )
    assert rc == 0
    assert json.loads((out / "result.json").read_text())["plan"]["template"] == "surgical:specular"
    # every plugin's operator modules were loaded (their templates competed), none of them loaded scipy
    assert loaded == ["rscore_underwater.water", "rscore_earth.terrain", "rscore_surgical.ct"]


def test_underwater_and_ct_runs_import_no_scipy(tmp_path):
    # their filters (box mean, patch minimum, median, openings, erosion, labels, hole filling) are OpenCV's
    # (rscore.cvfilters), equal to the scipy.ndimage calls they replaced (tests/test_cvfilters.py and the plugins'
    # *_cv2_equivalence tests)
    img = tmp_path / "img64.png"
    rgb = np.random.default_rng(0).random((64, 64, 3)) * [60, 160, 200]  # blue-green, as under water
    rgb[40:] = np.random.default_rng(1).random((24, 64, 3)) * 255  # a textured bottom
    Image.fromarray(rgb.astype(np.uint8)).save(img)
    runs = [(img, "underwater", query, "underwater:" + template, ["cv2"])
            for query, template in (("where is the sea floor", "sea_floor"), ("open water", "open_water"),
                                    ("low visibility regions", "low_visibility"))]
    from rscore.testing import shared_data_dir

    data = shared_data_dir()
    ct = data / "medical" / "dicom" / "pydicom_CT_small.dcm" if data else None
    if ct is not None and ct.exists():  # (a CT series needs the shared data; the underwater runs do not)
        # (nibabel, for the NIfTI output, imports the bare scipy package, ~0.01 s; not scipy.ndimage, ~0.26 CPU-s)
        runs += [(ct, "surgical", q, "surgical:" + t, ["scipy", "cv2"])
                 for q, t in (("the body", "body"), ("fat", "fat"))]
    watch = ("scipy", "scipy.ndimage", "cv2")
    for k, (path, plugin, query, template, expected) in enumerate(runs):
        out = tmp_path / f"out{k}"
        rc, loaded = _loaded_after_cli(["run", str(path), query, "-p", plugin, "--matcher", "keyword", "-o", str(out)],
                                       tmp_path, watch=watch)
        assert rc == 0, (plugin, query)
        assert json.loads((out / "result.json").read_text())["plan"]["template"] == template
        assert loaded == expected, (plugin, query)  # the rules ran, on OpenCV


def test_small_earth_landslide_and_steep_runs_import_no_scipy(tmp_path):
    # the README example DEM (384 px square, one polygon window): terrain from numpy, polygons labelled by OpenCV
    # (rscore.cvfilters.label, equal to scipy.ndimage.label: plugins/earth/tests/test_earth_cv2_equivalence.py), and
    # no cross-window merge, so no scipy.sparse either; all the earth writers ran
    from rscore_earth import terrain

    dem = os.path.join(os.path.dirname(terrain.__file__), "data", "example_dem.tif")
    watch = ("scipy", "scipy.ndimage", "scipy.sparse", "rscore_earth.polygons", "cv2")
    for k, (query, template) in enumerate((("landslide-prone areas", "earth:landslide"),
                                           ("steep terrain", "earth:steep_terrain"))):
        out = tmp_path / f"out{k}"
        rc, loaded = _loaded_after_cli(["run", "--plugin", "earth", dem, query, "-o", str(out)], tmp_path, watch=watch)
        assert rc == 0, query
        doc = json.loads((out / "result.json").read_text())
        assert doc["plan"]["template"] == template
        polys = json.loads((out / "polygons.geojson").read_text())["features"]
        assert polys and (out / "mask.tif").exists()  # not vacuous: the polygons were labelled and written
        assert loaded == ["rscore_earth.polygons", "cv2"], query


def test_cli_lets_idle_openblas_threads_sleep_unless_the_user_chose(tmp_path):
    watch = ("env:OPENBLAS_THREAD_TIMEOUT",)
    rc, had = _loaded_after_cli(["plugins", "list"], tmp_path, watch=watch, env={"OPENBLAS_THREAD_TIMEOUT": None})
    assert rc == 0 and had == ["env:OPENBLAS_THREAD_TIMEOUT=4"]
    rc, had = _loaded_after_cli(["plugins", "list"], tmp_path, watch=watch, env={"OPENBLAS_THREAD_TIMEOUT": "20"})
    assert rc == 0 and had == ["env:OPENBLAS_THREAD_TIMEOUT=20"]


def test_old_import_paths_still_work_and_name_the_same_objects():
    code = (
        "import rscore.engine as e\n"
        "from rscore.engine import tiling_options as t\n"
        "from rscore.engine import decoupled as d\n"
        "assert e.decoupled is d and d.TilingOptions is t.TilingOptions and d.DEFAULTS is t.DEFAULTS\n"
        "assert d.should_tile is t.should_tile and callable(d.segment_tiled)\n"
        "from rscore.reasoners.agent import AgentOptions\n"
        "from rscore.reasoners.agent_options import AgentOptions as A2, TILE_MODES\n"
        "from rscore.reasoners.agent_tiles import TILE_MODES as T2\n"
        "assert AgentOptions is A2 and TILE_MODES is T2\n"
        "from rscore.video.engine import VideoOptions\n"
        "from rscore.video import VideoOptions as V2\n"
        "from rscore.video.options import VideoOptions as V3\n"
        "assert VideoOptions is V2 is V3\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_core_options_still_list_tiling_agent_and_video_options():
    from rscore.builtin import core_options
    from rscore.errors import OptionError
    from rscore.reasoners.agent_options import AgentOptions
    from rscore.video.options import VideoOptions

    names = {p.name for p in core_options()}
    assert {"reason_tiles", "reason_concurrency", "agent_max_turns", "agent_tiles", "keyframe_samples",
            "propagator", "overlay_codec"} <= names  # fmt: skip
    # the moved classes still check their values (the checks that import lazily included)
    for bad in ({"propagator": "magic"}, {"flow_method": "magic"}, {"overlay_codec": "magic"}):
        with pytest.raises(OptionError, match="video: "):
            VideoOptions.from_options(bad)
    with pytest.raises(OptionError, match="tiles must be one of auto, all, selected"):
        AgentOptions(tiles="magic")


def test_serve_keeps_openblas_threads_spinning_between_calls(tmp_path):
    # a long-lived service does BLAS work call after call: letting its threads sleep at once made a loop of 384 x 384
    # float32 products ~10 % slower (1.51 -> 1.67-1.71 s wall side by side, 2 loaded cores); its start-up CPU is moot
    watch = ("env:OPENBLAS_THREAD_TIMEOUT",)
    rc, had = _loaded_after_cli(["-v", "serve", "--help"], tmp_path, watch=watch, env={"OPENBLAS_THREAD_TIMEOUT": None})
    assert rc == 0 and had == ["env:OPENBLAS_THREAD_TIMEOUT="]
