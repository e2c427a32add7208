"""CT tissue templates: HU ranges, the body component, whole-slice answers independent of tiling, CT-only."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.sdk import ProgramOutput
from rscore.types import ArraySource, DicomInfo, Scene, Window

from rscore_surgical import ct
from rscore_surgical.dicom import LAYOUT, split_slices


def hu_scene(hu: np.ndarray, *, slices: int = 1, modality: str = "CT", pixel: float = 1.0) -> Scene:
    """A CT scene over an HU array (slices stacked along rows when ``slices`` > 1)."""
    rows = hu.shape[0] // slices
    info = DicomInfo(modality, "1.2", "1.2.3", None, tuple(f"1.2.3.{k}" for k in range(slices)), (pixel, pixel),
                     1.0, (1, 0, 0, 0, 1, 0), tuple((0.0, 0.0, float(k)) for k in range(slices)))
    return Scene(
        source=ArraySource(hu.astype(np.float32)), kind="volume" if slices > 1 else "image",
        band_roles=("hu",) if modality == "CT" else ("gray",), pixel_size=(pixel, pixel), unit="mm", dicom=info,
        metadata={"layout": LAYOUT, "slice_rows": rows, "slice_count": slices, "slice_frames": [None] * slices},
    )


def template(name: str):
    return next(t for t in ct.TEMPLATES if t.name == name)


def run(ctx_factory, scene: Scene, name: str, options=None, window=None) -> ProgramOutput:
    return template(name).program(ctx_factory(scene, options, window))


def test_body_is_the_largest_component_with_holes_filled(make_ctx, phantom):
    hu = phantom(96)
    out = run(make_ctx, hu_scene(hu), "body")
    body = out.mask
    assert body[40, 48] and body[38, 31]  # soft tissue, and inside a lung (a hole, filled)
    assert not body[2, 2]  # air around the patient
    assert not body[83:86, 10:86].any()  # the table below is a separate component
    assert body.sum() == pytest.approx(np.pi * 0.33 * 0.42 * 96 * 96, rel=0.08)


def test_the_body_keeps_the_arms_and_drops_the_table(make_ctx):
    """An abdominal slice with the arms down beside the trunk (separate components across a gap of air) and a thick
    table below: 'the body' is trunk and both arms; the table is a thin band and not a body part."""
    size = 200
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    hu = np.full((size, size), -1000.0, np.float32)
    hu[((yy - 95) / 55) ** 2 + ((xx - 100) / 70) ** 2 <= 1] = 40.0  # trunk
    for cx in (14, 186):  # arms: 24 x 44 px ellipses
        hu[((yy - 95) / 22) ** 2 + ((xx - cx) / 12) ** 2 <= 1] = 40.0
    hu[170:178, 10:190] = 100.0  # the table: 8 mm thick, 18 cm wide
    out = run(make_ctx, hu_scene(hu, pixel=1.5), "body")  # 1.5 mm pixels: each arm is about 19 cm2
    assert out.mask[95, 100] and out.mask[95, 14] and out.mask[95, 186], "the trunk and both arms"
    assert not out.mask[170:178].any(), "the table is not the body"
    assert "other body part" in template("body").explain


def test_organ_level_queries_get_a_superset_caveat(tmp_path, series_writer, phantom):
    assert any("includes every organ" in c and "pancreas" in c for c in template("soft_tissue").caveats)
    assert any("superset" in c for c in template("body").caveats)
    assert any("vertebral canal" in c for c in template("bone").caveats)


def test_tissue_ranges_on_a_phantom(make_ctx, phantom):
    hu = phantom(96)
    scene = hu_scene(hu)
    bone = run(make_ctx, scene, "bone")
    vertebra = np.hypot(*np.mgrid[0:96, 0:96] - np.array([96 * 0.45 + 96 * 0.17, 48])[:, None, None]) <= 96 * 0.07
    assert bone.mask[vertebra].mean() > 0.95 and not bone.mask[~vertebra].any()
    assert set(np.unique(bone.classes[bone.mask])) == {1, 2}  # trabecular core, cortical ring
    assert bone.classes[int(96 * 0.62), 48] == 1 and bone.classes[int(96 * 0.62) + 5, 48] == 2

    lungs = run(make_ctx, scene, "air_lung")
    assert lungs.mask.sum() == pytest.approx(((hu == -850)).sum(), rel=0.02)
    assert lungs.classes[2, 2] == 1 and lungs.classes[38, 31] == 2  # outside air is class 1, not in the mask
    assert not lungs.mask[2, 2]

    fat = run(make_ctx, scene, "fat")
    assert fat.mask[hu == -100].mean() > 0.6 and not fat.mask[hu == 40].any()
    soft = run(make_ctx, scene, "soft_tissue")
    assert soft.mask[hu == 40].mean() > 0.95 and not soft.mask[hu == 100].any()  # the table is not in the body
    assert not run(make_ctx, scene, "metal").mask.any()


def test_fat_excludes_partial_volume_at_air_edges(make_ctx):
    hu = np.full((40, 40), 40.0, np.float32)  # soft tissue body
    hu[:, :3] = -1000.0  # air at the left edge...
    hu[:, 3] = -100.0  # ...with a partial-volume column of fat-like values next to it
    hu[15:25, 15:25] = -100.0  # real fat, inside
    fat = run(make_ctx, hu_scene(hu), "fat").mask
    assert not fat[:, 3].any() and fat[16:24, 16:24].all()


def test_answers_do_not_depend_on_tiles_or_leak_between_slices(make_ctx, phantom):
    a, b = phantom(64), np.fliplr(phantom(64))
    b[60:, :] = 40.0  # body of slice 1 touches its bottom edge, which meets slice 2's top edge below
    c = phantom(64)
    c[:4, :] = 40.0
    stack = np.concatenate([a, b, c])
    scene = hu_scene(stack, slices=3)
    whole = run(make_ctx, scene, "soft_tissue").mask
    for name in ("soft_tissue", "body", "air_lung"):
        full = run(make_ctx, scene, name).mask
        tiled = np.zeros_like(full)
        for r in range(0, 192, 40):  # windows that cut slices anywhere
            for c0 in range(0, 64, 24):
                w = Window(r, c0, min(40, 192 - r), min(24, 64 - c0))
                tiled[w.slices] = run(make_ctx, scene, name, window=w).mask
        assert np.array_equal(full, tiled), name
    per = split_slices(whole, scene)
    single = [run(make_ctx, hu_scene(s), "soft_tissue").mask for s in (a, b, c)]
    assert all(np.array_equal(per[k], single[k]) for k in range(3))


def test_engine_instances_stay_on_their_slice(tmp_path):
    hu = np.full((60, 20), -1000.0, np.float32)
    hu[2:19, 2:19] = 40.0  # slice 0 (rows 0-19): a body...
    hu[8:18, 5:15] = 500.0  # ...with a bone
    hu[24:40, 2:19] = 40.0  # slice 1: a body reaching its last row, with bone in its last two rows...
    hu[38:40, 5:15] = 500.0
    hu[40:56, 2:19] = 40.0  # slice 2: a body from its first row, with bone in its first two rows
    hu[40:42, 5:15] = 500.0  # (rows 39 and 40 are adjacent in the stack, not in the patient)
    scene = hu_scene(hu, slices=3)
    res = engine.segment(scene, "bone", plugin="surgical", options={"hu_min": 300, "min_volume_ml": 0})
    assert res.plan.template == "surgical:bone"
    by_slice = sorted((i.attributes["slice"], i.area_px, i.attributes["sop_instance_uid"]) for i in res.instances)
    assert by_slice == [(0, 100, "1.2.3.0"), (1, 20, "1.2.3.1"), (2, 20, "1.2.3.2")]
    top = next(i for i in res.instances if i.attributes["slice"] == 2)
    assert top.bbox == (5, 40, 15, 42) and top.attributes["row_in_slice"] == 0
    assert top.mask is not None and top.mask.sum() == 20 and top.attributes["volume_ml"] == pytest.approx(0.02)
    assert top.area_real == pytest.approx(0.02) and top.area_unit == "mL"  # 3-D instances of a series: their volume
    # by default the two 20-voxel pieces (0.02 mL, 1 mm voxels) are specks under 0.1 mL: not instances, still masked
    res = engine.segment(scene, "bone", plugin="surgical", options={"hu_min": 300})
    assert [i.area_px for i in res.instances] == [100] and int(res.mask.sum()) == 140
    assert any("2 component(s) under 0.1 mL (0.04 mL in all) are specks, not instances" in s.text
               for s in res.plan.steps)


def test_options_and_their_errors(make_ctx, phantom):
    scene = hu_scene(phantom(64))
    narrow = run(make_ctx, scene, "bone", {"hu_min": 900}).mask
    assert 0 < narrow.sum() < run(make_ctx, scene, "bone").mask.sum()
    with pytest.raises(OptionError, match="hu_min .* is above hu_max"):
        run(make_ctx, scene, "fat", {"hu_min": 10, "hu_max": -10})
    with pytest.raises(OptionError, match="option hu_max must be a number"):
        run(make_ctx, scene, "fat", {"hu_max": "lots"})
    with pytest.raises(OptionError, match="min_component_mm2 must be >= 0"):
        run(make_ctx, scene, "fat", {"min_component_mm2": -1})
    specks = phantom(64)
    specks[5, 5] = specks[5, 7] = 1000.0  # two single-pixel "bones" in the air
    kept = run(make_ctx, hu_scene(specks), "metal", {"hu_min": 900, "min_component_mm2": 0}).mask
    assert kept[5, 5] and kept[5, 7]
    assert not run(make_ctx, hu_scene(specks), "metal", {"hu_min": 900}).mask[5, 5]  # 1 mm2 < 5 mm2


def test_hu_templates_refuse_mr_and_rgb(make_ctx, tmp_path, series_writer):
    mr = hu_scene(np.zeros((16, 16)), modality="MR")
    for name in ("bone", "fat", "body"):
        with pytest.raises(OptionError, match=r"HU templates need CT \(this series is MR\)"):
            run(make_ctx, mr, name)
    rgb = Scene(ArraySource(np.zeros((3, 8, 8), np.uint8)), "image", ("red", "green", "blue"))
    with pytest.raises(OptionError, match="HU templates need CT Hounsfield units .*red, green, blue"):
        run(make_ctx, rgb, "bone")
    with pytest.raises(OptionError, match=r"this series is MR"):
        make_ctx(mr).op("surgical.hu")
    # through the whole pipeline: exit-2 class error, and no output folder left behind
    folder = series_writer(tmp_path / "mr", [np.full((8, 8), 500, np.int16)] * 2, [(0, 0, 0), (0, 0, 1)],
                           modality="MR")
    with pytest.raises(OptionError, match=r"HU templates need CT \(this series is MR\)"):
        engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ct_values_that_cannot_be_hu_are_refused(tmp_path, dicom_writer, phantom):
    """Unsigned stored values with no rescale cannot hold air (-1000 HU): read as HU, the air around the phantom is
    0 HU and 'the body' would be the whole frame. A LOCALIZER (scout) is a projection, not a slice. Both are refused
    naming the file; -O values_are_hu=true goes ahead; signed values without rescale are still taken as HU."""
    stored = (phantom(48) + 1024).astype(np.uint16)  # HU + 1024: air 24, tissue ~1064
    bare = dicom_writer(tmp_path / "bare.dcm", stored, slope=None, intercept=None)
    with pytest.raises(OptionError, match="bare.dcm: .*not HU.*unsigned stored values.*values_are_hu"):
        engine.segment(engine.open_scene(bare, plugin="surgical"), "the body", plugin="surgical")
    forced = engine.segment(engine.open_scene(bare, plugin="surgical"), "the body", plugin="surgical",
                            options={"values_are_hu": True})
    assert forced.mask.mean() > 0.99  # what the user would have got: everything (air at 24 'HU' is > -500)
    scout = dicom_writer(tmp_path / "scout.dcm", stored.astype(np.int16) - 1024,
                         extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    with pytest.raises(OptionError, match="scout.dcm: .*LOCALIZER"):
        engine.segment(engine.open_scene(scout, plugin="surgical"), "bone", plugin="surgical")
    signed = dicom_writer(tmp_path / "signed.dcm", stored.astype(np.int16) - 1024, slope=None, intercept=None)
    scene = engine.open_scene(signed, plugin="surgical")
    assert any("stored values taken as HU" in w for w in scene.warnings)
    assert 0.05 < engine.segment(scene, "the body", plugin="surgical").mask.mean() < 0.95


def test_end_to_end_on_a_synthetic_dicom_series(tmp_path, series_writer, phantom):
    slices = [(phantom(48) + 1024).astype(np.int16) for _ in range(3)]
    folder = series_writer(tmp_path / "ct", slices, [(0, 0, z) for z in (4.0, 0.0, 2.0)], spacing=(0.9, 0.9))
    res = engine.run(folder, "where are the lungs", plugin="surgical", out_dir=tmp_path / "out")
    assert res.plan.template == "surgical:air_lung" and not res.absent
    assert res.mask.shape == (3 * 48, 48)
    assert len(res.instances) == 2  # two lungs, each through the three slices
    assert all(i.attributes["slice_range"] == [0, 2] and i.area_unit == "mL" for i in res.instances)
    assert all(len(i.attributes["per_slice"]) == 3 for i in res.instances)
    assert any("HU <= -400" in s.text for s in res.plan.steps)
    assert (tmp_path / "out" / "result.json").exists() and (tmp_path / "out" / "overlay.png").exists()


@pytest.mark.shared_data
def test_real_ct_tissues(shared_data):
    d = shared_data / "medical" / "dicom"
    if not (d / "dcmqi_ct-3slice").exists():
        pytest.skip(f"{d} not present")
    scene = engine.open_scene(d / "dcmqi_ct-3slice", plugin="surgical")
    body = split_slices(engine.segment(scene, "the body", plugin="surgical").mask, scene)
    bone = engine.segment(scene, "bone", plugin="surgical")
    lungs = engine.segment(scene, "lungs", plugin="surgical")
    for k in range(3):
        assert 0.35 < body[k].mean() < 0.75  # an upper-abdomen cross-section in a 512x512 field of view
    assert 0.003 < bone.mask.mean() < 0.05 and {i.attributes.get("class") for i in bone.instances} >= {
        "cortical bone (>= 700 HU)"}
    assert not (split_slices(lungs.mask, scene) & ~body).any()
    small = engine.segment(engine.open_scene(d / "pydicom_CT_small.dcm", plugin="surgical"), "the body",
                           plugin="surgical")
    assert len(small.instances) == 1 and small.instances[0].area_px > 0.5 * 128 * 128
    mr = engine.open_scene(d / "pydicom_MR_small.dcm", plugin="surgical")
    with pytest.raises(OptionError, match=r"HU templates need CT \(this series is MR\)"):
        engine.segment(mr, "fat", plugin="surgical")
