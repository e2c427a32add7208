"""Without --plugin, the plugin whose template answers is the plugin in use (#18, h8e's walk-through): its reader,
processing hooks and writers run exactly as with ``--plugin`` that name (``rscore.engine.pipeline.route_plugin``).
Before, ``rscore run region.tif "landslide-prone areas"`` read the GeoTIFF as a picture and answered absent, and a CT
series asked "bone" answered with surgical's template but wrote no DICOM SEG, NIfTI or slices.

Each test runs the same input twice, once naming the plugin and once not, and compares what was written: the same
files, the same result.json but for the timings, the creation time and the one plan step that says how the plugin
was chosen, the same rasters / features / segments / masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rscore.cli import app

EXAMPLE_DEM = Path(__file__).resolve().parents[1] / "plugins" / "earth" / "src" / "rscore_earth" / "data" / \
    "example_dem.tif"


def _cli(*args: str):
    res = CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _doc(out: Path) -> dict:
    doc = json.loads((out / "result.json").read_text())
    doc.pop("timings", None)
    doc["provenance"].pop("created", None)
    video = doc["provenance"].get("video")
    if isinstance(video, dict):  # per-stage seconds of the video engine
        video.pop("timings", None)
    return doc


def _same_answer(routed: Path, named: Path, plugin: str) -> dict:
    """The routed run's result.json equals the named run's once its first plan step (how the plugin was chosen) is
    taken out; returns it."""
    assert _files(routed) == _files(named)
    a, b = _doc(routed), _doc(named)
    first = a["plan"]["steps"].pop(0)["text"]
    assert first.startswith(f"plugin '{plugin}' (no --plugin given): its template ") and "as with --plugin" in first
    assert a == b
    assert a["plugin"] == plugin
    return a


def test_a_dem_without_plugin_is_read_and_written_as_with_plugin_earth(tmp_path):
    pytest.importorskip("rscore_earth")
    import rasterio
    from pyogrio import read_dataframe

    query = "landslide-prone areas"
    routed = _cli(str(EXAMPLE_DEM), query, "--out", str(tmp_path / "a"))
    _cli("--plugin", "earth", str(EXAMPLE_DEM), query, "--out", str(tmp_path / "b"))
    assert "without --plugin" not in routed.output  # the CLI's warning is for answers still without their plugin
    doc = _same_answer(tmp_path / "a", tmp_path / "b", "earth")
    assert doc["scene"]["reader"] == "geotiff" and doc["scene"]["kind"] == "raster"  # not a picture any more
    assert not doc["absent"] and doc["classes"]["high"]["area_km2"] > 0  # earth's postprocess ran
    for name in ("classes.tif", "score.tif", "mask.tif", "map.png", "map.pgw", "classes.qml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with rasterio.open(tmp_path / "a" / "classes.tif") as src:
        assert src.crs is not None and src.nodata == 255
    a = read_dataframe(tmp_path / "a" / "polygons.gpkg")  # the GeoPackage's own timestamps differ, not its features
    b = read_dataframe(tmp_path / "b" / "polygons.gpkg")
    assert len(a) == len(b) > 0
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry")) and a.geometry.equals(b.geometry)


def test_without_plugin_an_absent_answer_keeps_no_plugin(tmp_path):
    pytest.importorskip("rscore_earth")
    res = _cli(str(EXAMPLE_DEM), "giraffes", "--out", str(tmp_path / "a"))
    doc = json.loads((tmp_path / "a" / "result.json").read_text())
    assert doc["absent"] and doc["plugin"] is None and "no --plugin given" not in res.output
    assert not (tmp_path / "a" / "classes.tif").exists()


def test_sdk_segment_without_plugin_runs_the_answering_plugins_postprocess():
    pytest.importorskip("rscore_earth")
    import rscore

    scene = rscore.open_scene(EXAMPLE_DEM, plugin="earth")
    routed = rscore.segment(scene, "steep terrain")
    named = rscore.segment(scene, "steep terrain", plugin="earth")
    assert routed.plugin == named.plugin == "earth"
    assert routed.classes == named.classes and routed.classes  # earth's class summary (its postprocess)
    assert np.array_equal(np.asarray(routed.mask), np.asarray(named.mask))
    assert routed.plan.steps[1:] == named.plan.steps


@pytest.mark.shared_data
def test_a_ct_series_without_plugin_writes_seg_and_nifti_as_with_plugin_surgical(shared_data, tmp_path):
    pytest.importorskip("rscore_surgical")
    import nibabel
    import pydicom

    ct = shared_data / "medical" / "dicom" / "dcmqi_ct-3slice"
    if not (ct / "01.dcm").exists():
        pytest.skip(f"{ct} not present")
    series = tmp_path / "ct"
    series.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):  # the slices, not the SEG that lies beside them
        (series / name).write_bytes((ct / name).read_bytes())
    routed = _cli(str(series), "bone", "--out", str(tmp_path / "a"))
    _cli("--plugin", "surgical", str(series), "bone", "--out", str(tmp_path / "b"))
    assert "without --plugin" not in routed.output
    doc = _same_answer(tmp_path / "a", tmp_path / "b", "surgical")
    assert {"segmentation.dcm", "segmentation.nii.gz", "image.nii.gz"} <= set(_files(tmp_path / "a"))
    assert all("volume_ml" in c for c in doc["classes"].values())  # surgical's postprocess ran
    seg_a, seg_b = (pydicom.dcmread(tmp_path / d / "segmentation.dcm") for d in "ab")  # new UIDs each run
    assert seg_a.Modality == "SEG" and np.array_equal(seg_a.pixel_array, seg_b.pixel_array)
    assert [s.SegmentLabel for s in seg_a.SegmentSequence] == [s.SegmentLabel for s in seg_b.SegmentSequence]
    nii_a, nii_b = (nibabel.load(tmp_path / d / "segmentation.nii.gz") for d in "ab")
    assert np.array_equal(nii_a.get_fdata(), nii_b.get_fdata()) and np.allclose(nii_a.affine, nii_b.affine)
    for name in _files(tmp_path / "a"):
        if name.endswith(".png"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.shared_data
def test_a_video_without_plugin_is_colour_corrected_as_with_plugin_underwater(shared_data, tmp_path):
    """A dive clip opened by the core video reader, asked an underwater question: the underwater plugin's
    preprocess (colour correction of every frame) runs, as with --plugin underwater; same masks, same plan."""
    pytest.importorskip("rscore_underwater")
    import cv2

    from rscore.engine import run

    folder = shared_data / "underwater" / "funie-gan_euvp"
    names = ("euvp_test_A_1.jpg", "euvp_test_A_5.jpg")
    if not all((folder / n).exists() for n in names):
        pytest.skip("the EUVP images of ../shared/data/underwater are absent")
    clip = tmp_path / "dive.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (256, 256))
    for name in names:
        img = cv2.imread(str(folder / name))
        for k in range(3):
            writer.write(np.roll(img, 3 * k, axis=1))
    writer.release()
    query, opts = "low-visibility regions", {"overlay_codec": "mp4v"}
    routed = run(clip, query, out_dir=tmp_path / "a", options=opts)
    named = run(clip, query, plugin="underwater", out_dir=tmp_path / "b", options=opts)
    assert routed.plugin == named.plugin == "underwater"
    _same_answer(tmp_path / "a", tmp_path / "b", "underwater")
    masks = (tmp_path / "a" / "masks.json").read_text()
    assert masks == (tmp_path / "b" / "masks.json").read_text()
    frames = json.loads(masks)["frames"]
    assert len(frames) == 6 and all(f["preprocess"][0].startswith("underwater: ") for f in frames)
