"""Results in notebooks: the HTML a Jupyter cell shows, and conversions to COCO and GeoDataFrames."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from demo_plugin import write_demo

from rscore import engine
from rscore.errors import OptionError


def test_result_shows_overlay_instances_confidence_caveats_and_plan(demo_registry, disc_image, tmp_path):
    from PIL import Image

    img, disc = disc_image
    src = write_demo(tmp_path / "in.demo", img)
    scene = engine.open_scene(src, plugin="demo", registry=demo_registry)
    res = engine.segment(scene, "bright spots", plugin="demo", registry=demo_registry)
    res = res.replace(caveats=("bright <script> noise may pass",), confidence=0.75)
    page = res._repr_html_()
    assert "bright spots" in page and "confidence: <b>0.75</b>" in page
    assert "&lt;script&gt;" in page and "<script>" not in page  # escaped
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td>", page)
    assert len(rows) == len(res.instances) == 2
    steps = re.findall(r"<li>", page.split('class="rscore-plan"')[1])
    assert len(steps) == len(res.plan.steps) > 0
    # the overlay: the mask tinted, where the disc is
    data = re.search(r'src="data:image/png;base64,([^"]+)"', res.to_html(scene)).group(1)
    over = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    assert over.shape[:2] == img.shape
    red = over[..., 0].astype(int) - over[..., 2].astype(int) > 40
    assert red[disc].mean() > 0.95 and red[~res.mask].mean() < 0.01


def test_to_coco_is_what_pycocotools_reads(demo_registry, disc_image, tmp_path):
    from pycocotools.coco import COCO

    img, _ = disc_image
    scene = engine.open_scene(write_demo(tmp_path / "in.demo", img), plugin="demo", registry=demo_registry)
    res = engine.segment(scene, "bright spots", plugin="demo", registry=demo_registry)
    coco = COCO()
    coco.dataset = res.to_coco(scene)
    coco.createIndex()
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 2
    for ann, inst in zip(anns, res.instances):
        assert np.array_equal(coco.annToMask(ann).astype(bool), inst.mask)


def test_earth_result_to_geodataframe(tmp_path):
    pytest.importorskip("geopandas")
    from rscore_earth import synthetic

    from rscore.tiling import read_window

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    res = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    gdf = res.to_geodataframe(scene)
    assert gdf.crs.to_epsg() == 32633 and len(gdf) > 10
    assert set(gdf["class"]) <= {"medium", "high"}
    assert gdf["area_m2"].sum() == pytest.approx(np.count_nonzero(read_window(res.mask)) * 100.0)
    assert gdf.geometry.area.sum() == pytest.approx(gdf["area_m2"].sum())
    xmin, ymin, xmax, ymax = gdf.total_bounds
    t = scene.geo.transform
    assert xmin >= t[2] and ymax <= t[5] and xmax <= t[2] + t[0] * scene.width
    with pytest.raises(OptionError, match="georeferenced raster"):
        res.to_geodataframe(None)


def test_earth_result_html_shows_the_raster_under_the_mask():
    """A GeoTIFF result in a notebook: the DEM (its display band, stretched) under the tinted mask, not grey."""
    from PIL import Image

    from rscore_earth import synthetic

    from rscore.tiling import read_window

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    res = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    data = re.search(r'src="data:image/png;base64,([^"]+)"', res.to_html(scene)).group(1)
    over = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    mask = np.asarray(read_window(res.mask), bool)
    assert over.shape[:2] == mask.shape == (384, 384)
    outside = over[~mask]
    assert outside.std() > 20  # the terrain, not a flat background
    assert (np.abs(outside[:, 0] - outside[:, 2]) < 3).mean() > 0.99  # grey where nothing is marked
    tinted = over[mask]
    assert (tinted[:, 0] - tinted[:, 2] > 40).mean() > 0.95


def _overlay(page: str) -> np.ndarray:
    from PIL import Image

    data = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)


def test_a_bare_result_in_a_cell_shows_its_input_while_the_scene_is_held():
    """`res` alone in a Jupyter cell (what `_repr_html_` serves) shows the DEM under the mask, as `to_html(scene)`
    does; once the scene is gone it falls back to the mask on grey (nothing here keeps a scene alive)."""
    import gc

    from rscore_earth import synthetic

    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    res = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    bare = _overlay(res._repr_html_())
    assert np.array_equal(bare, _overlay(res.to_html(scene)))
    mask = bare[..., 0] - bare[..., 2] > 40
    assert bare[~mask].std() > 20  # the terrain, not a flat grey
    del scene
    gc.collect()
    alone = _overlay(res._repr_html_())
    assert alone[~mask].std() == 0  # the mask on grey: no scene was kept alive for it


def _ct_series(tmp_path):
    """dcmqi's three real GE CT slices (512 px, 1 mm apart) copied without the SEG beside them, and their datasets."""
    import pydicom

    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    folder = root / "medical" / "dicom" / "dcmqi_ct-3slice" if root else None
    if folder is None or not folder.is_dir():
        pytest.skip("shared data medical/dicom/dcmqi_ct-3slice not present")
    series = tmp_path / "ct"
    series.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        (series / name).write_bytes((folder / name).read_bytes())
    sets = sorted((pydicom.dcmread(series / n, stop_before_pixels=True) for n in ("01.dcm", "02.dcm", "03.dcm")),
                  key=lambda ds: float(ds.ImagePositionPatient[2]))  # fmt: skip
    return series, sets


def _cells(page: str, table: str) -> list[list[str]]:
    body = page.split(f'class="{table}"')[1].split("</table>")[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]]


@pytest.mark.shared_data
def test_real_ct_html_lists_3d_components_with_slices_boxes_volumes_and_centroids(tmp_path):
    """dcmqi's real three-slice CT, "bone": each instance is a 3-D component listed as the CLI lists it - its
    slices, the box on them, voxels, volume in mL, centroid in patient mm (LPS) - with its box on each of its own
    512 px slices; every figure is checked against the instance's mask and pydicom's geometry, not the attributes.
    The per-segment volumes agree with result.classes and the labels with NIfTI's."""
    pytest.importorskip("rscore_surgical")
    from rscore.units import figure

    series, sets = _ct_series(tmp_path)
    scene = engine.open_scene(series, plugin="surgical")
    res = engine.segment(scene, "bone", plugin="surgical")
    page = res._repr_html_()
    rows = _cells(page, "rscore-instances")
    assert len(rows) == len(res.instances) > 1
    dx, dy = (float(v) for v in sets[0].PixelSpacing)  # row spacing (y), column spacing (x)
    dz = float(sets[1].ImagePositionPatient[2]) - float(sets[0].ImagePositionPatient[2])
    assert dz == pytest.approx(1.0)
    spanning = 0
    for row, inst in zip(rows, res.instances):
        _, label, _, slices, box, voxels, volume, centre, per_slice = row
        assert label == "bone"
        vol = np.asarray(inst.mask, bool).reshape(3, 512, 512)  # the stacked scene, slice by slice
        on = [k for k in range(3) if vol[k].any()]
        spanning += len(on) > 1
        assert slices == (f"{on[0]}-{on[-1]}" if len(on) > 1 else str(on[0]))
        ys, xs = np.nonzero(vol.any(axis=0))
        assert box == str([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])  # on 512 px slices
        assert int(voxels.replace(",", "")) == int(vol.sum()) == inst.area_px
        assert volume == f"{figure(vol.sum() * dx * dy * dz / 1000)} mL"
        z, y, x = (c.mean() for c in np.nonzero(vol))
        ipp = np.array([float(v) for v in sets[0].ImagePositionPatient])  # axial: LPS x along columns, y along rows
        # shown to 0.1 mm (of a figure kept to 0.01 mm): within 0.056 mm of the mask's centre
        assert [float(v) for v in centre.split(", ")] == pytest.approx(ipp + [x * dy, y * dx, z * dz], abs=0.056)
        listed = re.findall(r"slice (\d): \[(\d+), (\d+), (\d+), (\d+)\] \(([\d,]+) px\)", per_slice)
        assert [int(e[0]) for e in listed] == on
        for k, x0, y0, x1, y1, px in listed:
            ys, xs = np.nonzero(vol[int(k)])
            assert [int(x0), int(y0), int(x1), int(y1)] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert int(px.replace(",", "")) == len(xs)
    assert spanning > 0  # 3-D components, not per-slice outlines
    for name, row in res.classes.items():
        cells = f"<td>{name.replace('>', '&gt;')}</td><td>{row['volume_ml']:.3g} mL ({row['voxels']:,} voxels)</td>"
        assert cells in page
    labels, affine, names = res.to_label_volume(scene)
    assert labels.shape == (512, 512, 3) and sorted(names.values()) == sorted(res.classes)
    assert affine[2, 2] == pytest.approx(1.0)  # 1 mm between the slices


@pytest.mark.shared_data
def test_real_ct_one_slice_html_gives_its_boxes_on_that_slice_and_areas_in_cm2(tmp_path):
    """One slice of the real CT (-O slice=1): no 3-D extent, so the table keeps the 2-D columns - each box on that
    slice (numbered as the series numbers it, as the slice PNG's name), areas in cm² from 1 cm² - and the boxes are
    the instances' masks' boxes."""
    pytest.importorskip("rscore_surgical")
    series, _ = _ct_series(tmp_path)
    scene = engine.open_scene(series, plugin="surgical", options={"slice": 1})
    res = engine.segment(scene, "bone", plugin="surgical", options={"slice": 1})
    rows = _cells(res._repr_html_(), "rscore-instances")
    assert len(rows) == min(50, len(res.instances)) > 1
    for row, inst in zip(rows, res.instances):
        _, _, _, px, area, box = row
        ys, xs = np.nonzero(np.asarray(inst.mask, bool))
        assert box == f"slice 1: {[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}"
        assert int(px.replace(",", "")) == len(xs)
        value, unit = float(area.split()[0].replace(",", "")), area.split()[1]
        assert (unit == "cm²" and value >= 1) or (unit == "mm²" and value < 100), area


@pytest.mark.shared_data
def test_a_video_result_shows_its_keyframe_and_when_each_track_is_seen(tmp_path):
    """Intel's worker clip through rscore.run: the cell shows the keyframe (frame and time) and each track's time
    span beside its box; the per-frame masks are in the output files, which the caption names."""
    pytest.importorskip("rscore_safety")
    import rscore
    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    clip = root / "construction" / "intel_worker-zone-detection_from_gif.mp4" if root else None
    if clip is None or not clip.is_file():
        pytest.skip("shared data construction/intel_worker-zone-detection_from_gif.mp4 not present")
    res = rscore.run(clip, "workers in hi-vis vests", plugin="safety", out_dir=tmp_path / "o",
                     options={"max_frames": 30})  # fmt: skip
    page = res._repr_html_()
    picture = _overlay(page)
    assert picture.shape[:2] == res.keyframe_image.shape[:2] == (270, 480)
    assert np.array_equal(picture, res.keyframe_image)
    caption = re.search(r"<figcaption>(.*?)</figcaption>", page).group(1)
    assert f"frame {res.keyframe['frame']} " in caption and "overlay.mp4" in caption
    spans = re.findall(r"at (\d+\.\d\d)-(\d+\.\d\d) s</td>", page)
    assert len(spans) == len(res.instances) > 0
    for (a, b), inst in zip(spans, res.instances):
        assert float(a) == pytest.approx(inst.attributes["first_s"], abs=0.006)
        assert float(b) == pytest.approx(inst.attributes["last_s"], abs=0.006)
