"""3-D instances of DICOM series (rscore_surgical.components3d): components across slices equal to scipy's 3-D
labelling, volumes in mL from anisotropic voxels, boxes and centroids in patient millimetres, specks left out,
the NIfTI / notebook label volumes unchanged, and the real CT series' lungs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.types import Instance, Plan, Result

from rscore_surgical.components3d import MIN_VOLUME_ML, instances_3d, label_slices

sys.path.insert(0, str(Path(__file__).parent))  # a sibling test module (the tests run with --import-mode=importlib)
from test_surgical_ct import hu_scene  # noqa: E402

# scipy.ndimage.label's structure for the connectivity used: 8 within a slice, the voxel straight above and below
STRUCTURE = np.zeros((3, 3, 3), bool)
STRUCTURE[1] = True
STRUCTURE[0, 1, 1] = STRUCTURE[2, 1, 1] = True


def _label_volume(vol: np.ndarray) -> np.ndarray:
    """label_slices' answer as a voxel label volume (1-based, 0 background)."""
    import cv2

    comps = label_slices(lambda k: vol[k], vol.shape[0])
    out = np.zeros(vol.shape, np.int64)
    for k in range(vol.shape[0]):
        _, lab = cv2.connectedComponents(vol[k].astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        ids = np.concatenate([[-1], comps.comp[comps.offsets[k] : comps.offsets[k] + lab.max()]])
        out[k] = ids[lab] + 1
    assert comps.n == (out.max() if out.size else 0)
    return out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label volumes split the voxels the same way (numbering aside)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


@pytest.mark.parametrize("shape", [(1, 9, 7), (2, 5, 5), (5, 16, 12), (8, 24, 24)])
@pytest.mark.parametrize("density", [0.25, 0.45, 0.6])
def test_components_equal_scipy_3d_labels(shape, density):
    from scipy import ndimage

    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    vol = rng.random(shape) < density
    ours = _label_volume(vol)
    theirs, n = ndimage.label(vol, STRUCTURE)
    assert ours.max() == n and _same_partition(ours, theirs)
    if shape[0] > 2 and density == 0.45:  # control: diagonal links between slices (26-connectivity) would differ
        full, m = ndimage.label(vol, np.ones((3, 3, 3), bool))
        assert m < n and not _same_partition(ours, full)


def _blobs() -> np.ndarray:
    """Four 30x30 slices: bone blobs A (slices 0-1) and B (slice 2, overlapping A's last slice), C and D touching
    only corner to corner across slices 0-1, E on slice 3 beside B."""
    hu = np.full((4 * 30, 30), -1000.0, np.float32)
    for k in range(4):
        hu[k * 30 + 1 : k * 30 + 29, 1:29] = 40.0  # a body on every slice
    hu[0 * 30 + 4 : 0 * 30 + 10, 4:10] = 500.0  # blob A on slices 0-1...
    hu[1 * 30 + 4 : 1 * 30 + 10, 4:10] = 500.0
    hu[2 * 30 + 8 : 2 * 30 + 14, 8:14] = 500.0  # ...and B on slice 2, overlapping A's last slice: one instance
    hu[0 * 30 + 20 : 0 * 30 + 24, 20:24] = 500.0  # C on slice 0 and D on slice 1 touch only corner to corner
    hu[1 * 30 + 24 : 1 * 30 + 28, 24:28] = 500.0
    hu[3 * 30 + 4 : 3 * 30 + 5, 4:10] = 500.0  # E on slice 3, rows 4 of columns 4-9: beside B's square, not under it
    return hu


def test_two_blobs_touching_across_slices_are_one_instance_and_diagonal_neighbours_are_not():
    hu = _blobs()
    res = engine.segment(hu_scene(hu, slices=4), "bone", plugin="surgical", options={"min_volume_ml": 0})
    got = sorted((i.attributes["slice_range"], i.area_px) for i in res.instances)
    assert got == [([0, 0], 16), ([0, 2], 108), ([1, 1], 16), ([3, 3], 6)]
    merged = next(i for i in res.instances if i.area_px == 108)
    assert merged.attributes["bbox_3d"] == [4, 4, 0, 14, 14, 3] and merged.bbox == (4, 4, 14, 74)
    assert [e["slice"] for e in merged.attributes["per_slice"]] == [0, 1, 2]
    assert merged.mask is not None and int(merged.mask.sum()) == 108 and "bbox_in_slice" not in merged.attributes
    alone = next(i for i in res.instances if i.attributes["slice_range"] == [1, 1])
    assert alone.attributes["bbox_in_slice"] == [24, 24, 28, 28] and alone.attributes["sop_instance_uid"] == "1.2.3.1"


def test_masks_are_the_same_when_the_slice_labels_are_not_kept(monkeypatch):
    """Within the byte budget the slices' labels are kept from the labelling pass; past it they are labelled again
    for the masks (a long series): one mask fits here (the best instance), and only one slice's labels."""
    from rscore_surgical import components3d

    hu = _blobs()
    full = engine.segment(hu_scene(hu, slices=4), "bone", plugin="surgical", options={"min_volume_ml": 0})
    monkeypatch.setattr(components3d, "MAX_MASK_BYTES", hu.size)
    res = engine.segment(hu_scene(hu, slices=4), "bone", plugin="surgical", options={"min_volume_ml": 0})
    assert [i.area_px for i in res.instances] == [i.area_px for i in full.instances]
    assert np.array_equal(res.instances[0].mask, full.instances[0].mask)
    assert all(i.mask is None for i in res.instances[1:])


SPACING = (0.8, 0.7)  # PixelSpacing: row spacing, column spacing (mm)
STEP = 2.5  # mm between slices


def _block_series(tmp_path, series_writer, speck=False):
    """Four 40x40 slices 2.5 mm apart, pixels 0.8 mm (rows) x 0.7 mm (columns): soft tissue, a bone block of
    10 x 12 px on slices 1-3 (rows 10-19, columns 5-16) and, with ``speck``, one 4x4 px bone speck on slice 0 (9 mm2:
    above the templates' 5 mm2 per slice, 0.022 mL in 3-D)."""
    stored = []
    for k in range(4):
        hu = np.full((40, 40), 40.0)
        if k >= 1:
            hu[10:20, 5:17] = 1000.0
        if speck and k == 0:
            hu[30:34, 30:34] = 1000.0
        stored.append((hu + 1024).astype(np.int16))
    return series_writer(tmp_path / "ct", stored, [(-16.0, -20.0, STEP * k) for k in range(4)], spacing=SPACING)


def test_volume_boxes_and_centroid_follow_the_anisotropic_dicom_geometry(tmp_path, series_writer):
    folder = _block_series(tmp_path, series_writer)
    res = engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "out", options={"hu_min": 300})
    (inst,) = res.instances
    a = inst.attributes
    dr, dc = SPACING
    voxel_ml = dr * dc * STEP / 1000
    assert inst.area_px == 360 and a["volume_ml"] == pytest.approx(360 * voxel_ml, rel=1e-4)
    assert inst.area_real == pytest.approx(360 * voxel_ml) and inst.area_unit == "mL"
    assert a["slice_range"] == [1, 3] and a["bbox_3d"] == [5, 10, 1, 17, 20, 4]
    assert a["size_mm"] == pytest.approx([12 * dc, 10 * dr, 3 * STEP])  # columns run along x at 0.7 mm
    assert a["centroid_voxel"] == pytest.approx([10.5, 14.5, 2.0])
    assert a["centroid_mm"] == pytest.approx([-16 + 10.5 * dc, -20 + 14.5 * dr, 2 * STEP], abs=0.01)
    assert a["centroid_ras_mm"] == pytest.approx([16 - 10.5 * dc, 20 - 14.5 * dr, 2 * STEP], abs=0.01)
    assert a["bbox_mm"]["min"] == pytest.approx([-16 + 4.5 * dc, -20 + 9.5 * dr, 0.5 * STEP], abs=0.01)
    assert a["bbox_mm"]["max"] == pytest.approx([-16 + 16.5 * dc, -20 + 19.5 * dr, 3.5 * STEP], abs=0.01)
    assert a["cut_by_series_end"] is True  # it reaches the last slice
    assert any("covers 4 slices (10 mm): its instance reaches its first or last slice" in c for c in res.caveats)
    # the segment's volume (classes, segments.json) is the same voxels x voxel volume
    doc = json.loads((tmp_path / "out" / "segments.json").read_text())
    assert sum(s["volume_ml"] for s in doc["segments"]) == pytest.approx(a["volume_ml"], rel=1e-4)


def test_specks_are_not_instances_but_stay_in_the_segmentation(tmp_path, series_writer):
    import nibabel as nib
    from scipy import ndimage

    folder = _block_series(tmp_path, series_writer, speck=True)
    scene = engine.open_scene(folder, plugin="surgical")
    res = engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "out", options={"hu_min": 300})
    speck_ml = 16 * SPACING[0] * SPACING[1] * STEP / 1000  # 0.0224 mL < 0.1
    assert speck_ml < MIN_VOLUME_ML and [i.area_px for i in res.instances] == [360]
    step = next(s.text for s in res.plan.steps if s.text.startswith("3-D instances"))
    assert f"1 component(s) under 0.1 mL ({speck_ml:.3g} mL in all) are specks, not instances" in step
    labels = np.asarray(nib.load(tmp_path / "out" / "segmentation.nii.gz").dataobj)
    assert int(np.count_nonzero(labels)) == 376  # the mask (and the SEG, the NIfTI) keep the speck
    nb_labels, _, _ = res.to_label_volume(scene)
    assert np.array_equal(nb_labels, labels)  # the notebook label volume is the NIfTI's
    # with the limit off, the instances are the label volume's components, as an independent labeller finds them
    kept = engine.segment(scene, "bone", plugin="surgical", options={"hu_min": 300, "min_volume_ml": 0})
    comps, n = ndimage.label(np.transpose(labels > 0, (2, 1, 0)), STRUCTURE)  # NIfTI (col, row, slice) -> (s, r, c)
    assert sorted(i.area_px for i in kept.instances) == sorted(np.bincount(comps.ravel())[1:].tolist()) == [16, 360]
    assert sum(i.attributes["volume_ml"] for i in kept.instances) == pytest.approx(
        float(res.classes["cortical bone (>= 700 HU)"]["volume_ml"]), rel=1e-3)
    for bad in ("-1", "lots"):
        with pytest.raises(OptionError, match="option min_volume_ml must be"):
            engine.segment(scene, "bone", plugin="surgical", options={"min_volume_ml": bad})


def test_several_labels_get_their_own_components():
    """A model naming two things (instances with masks, any slices): each label's masks are joined in 3-D."""
    scene = hu_scene(np.zeros((3 * 20, 20), np.float32), slices=3)
    masks = []
    for rows in ((2, 8), (22, 28), (42, 48)):  # the same square on slices 0, 1, 2: one 3-D vessel
        m = np.zeros(scene.shape, bool)
        m[rows[0] : rows[1], 2:8] = True
        masks.append(m)
    other = np.zeros(scene.shape, bool)
    other[30:36, 12:18] = True  # a clip on slice 1
    insts = [Instance("vessel", s, (0, 0, 1, 1), 36, m) for s, m in zip((0.9, 0.6, 0.6), masks)]
    insts.append(Instance("clip", 0.8, (12, 30, 18, 36), 36, other))
    result = Result("vessels and clips", "surgical", Plan(), tuple(insts), mask=np.any([*masks, other], axis=0),
                    options={"min_volume_ml": 0})
    out = instances_3d(result, scene)
    assert out is not None
    got = {(i.label, tuple(i.attributes["slice_range"]), i.area_px) for i in out.instances}
    assert got == {("vessel", (0, 2), 108), ("clip", (1, 1), 36)}
    vessel = next(i for i in out.instances if i.label == "vessel")
    assert vessel.score == pytest.approx(0.7)  # the mean of its voxels' scores


@pytest.mark.shared_data
def test_real_ct_lungs_are_two_3d_components_of_a_plausible_partial_volume(shared_data):
    """dcmqi's CT: three 1 mm slices at the lung bases (liver dome, 0.81 mm pixels). 'The lungs' gives the right
    and the left lung (LPS x < 0 is the patient's right) and the oesophagus' air; no speck under 0.1 mL.

    Plausible range: adult lungs hold 4-6 L over ~25 cm, i.e. 16-24 mL per mm of height on average and up to
    ~35 mL per mm (~350 cm2 of both lungs) at the widest level; near the bases far less. Three 1 mm slices:
    at most ~105 mL, so 20-105 mL for both lungs, each between 8 and 60 mL."""
    folder = shared_data / "medical" / "dicom" / "dcmqi_ct-3slice"
    if not folder.exists():
        pytest.skip(f"{folder} not present")
    res = engine.segment(engine.open_scene(folder, plugin="surgical"), "the lungs", plugin="surgical")
    big = [i for i in res.instances if i.attributes["volume_ml"] > 1]
    assert len(big) == 2 and all(i.attributes["slice_range"] == [0, 2] for i in big)
    right, left = sorted(big, key=lambda i: i.attributes["centroid_mm"][0])
    assert right.attributes["centroid_mm"][0] < -30 < 30 < left.attributes["centroid_mm"][0]
    total = sum(i.attributes["volume_ml"] for i in big)
    assert 20 < total < 105 and all(8 < i.attributes["volume_ml"] < 60 for i in big)
    assert all(i.attributes["cut_by_series_end"] for i in big)
    assert all(i.attributes["volume_ml"] >= MIN_VOLUME_ML for i in res.instances) and len(res.instances) <= 4
    seg_ml = res.classes["air inside the body (lungs, airways, bowel gas)"]["volume_ml"]
    assert total < seg_ml < total + 1.0  # the rest: the oesophagus' air and the specks left out of the instances


def test_a_series_stitched_on_disk_gets_the_same_3d_instances(monkeypatch):
    """A long series' mask is stitched to tiles on disk, where the engine lists no instances ("instances are not
    listed for scenes stitched on disk"); its 3-D components are found slice by slice all the same."""
    hu = _blobs()
    memory = engine.segment(hu_scene(hu, slices=4), "bone", plugin="surgical", options={"min_volume_ml": 0})
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "500")
    disk = engine.segment(hu_scene(hu, slices=4), "bone", plugin="surgical", options={"min_volume_ml": 0})
    assert not isinstance(disk.mask, np.ndarray)
    assert [(i.label, i.area_px, i.attributes["bbox_3d"]) for i in disk.instances] == [
        (i.label, i.area_px, i.attributes["bbox_3d"]) for i in memory.instances]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(disk.instances, memory.instances))
    assert not any("instances are not listed" in w for w in disk.warnings)
