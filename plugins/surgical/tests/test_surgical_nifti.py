"""NIfTI volumes of DICOM series: the affine from the DICOM geometry agrees with the DICOM SEG's frame positions and
with nibabel's own reading of the orientation; the label volume holds the SEG's pixels; volumes in mL per segment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore import engine

SIZE = 40
Z = [10.0, 12.5, 15.0, 17.5, 20.0]


def _slices(n: int = len(Z)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stored values (HU + 1024): soft tissue, and a bone block (1000 HU) that moves with k and has a spur to the
    right on its top row (a flip or a swapped slice shows)."""
    stored, bone = [], []
    for k in range(n):
        hu = np.full((SIZE, SIZE), 40.0)
        b = np.zeros((SIZE, SIZE), bool)
        b[8 + 3 * k : 14 + 3 * k, 6:12] = True
        b[8 + 3 * k, 12:16] = True
        hu[b] = 1000.0
        stored.append((hu + 1024).astype(np.int16))
        bone.append(b)
    return stored, bone


def _seg_frames(path):
    import pydicom

    seg = pydicom.dcmread(path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    return [([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient], pixels[i].astype(bool))
            for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence)]  # fmt: skip


@pytest.mark.parametrize(
    ("orientation", "positions", "codes"),
    [
        ((1, 0, 0, 0, 1, 0), [(-16.0, -16.0, z) for z in Z], ("L", "P", "S")),  # axial
        ((0, 1, 0, 0, 0, -1), [(z, -16.0, 16.0) for z in Z], ("P", "I", "R")),  # sagittal: slices sorted along the normal -x (LPS) = towards R
    ],
)
def test_nifti_affine_matches_the_seg_and_nibabel(tmp_path, series_writer, orientation, positions, codes):
    import nibabel as nib

    stored, bone = _slices()
    series = series_writer(tmp_path / "ct", stored, positions, spacing=(0.8, 0.7), orientation=orientation,
                           extra={"WindowCenter": 40, "WindowWidth": 400})  # fmt: skip
    out = tmp_path / "out"
    res = engine.run(series, "bone", plugin="surgical", out_dir=out)
    assert {"nifti_segmentation", "nifti_image", "segments"} <= set(res.outputs)
    seg_img = nib.load(out / "segmentation.nii.gz")
    assert nib.aff2axcodes(seg_img.affine) == codes
    assert int(seg_img.header["qform_code"]) == int(seg_img.header["sform_code"]) == 1
    labels = np.asarray(seg_img.dataobj)
    assert labels.shape == (SIZE, SIZE, len(Z))  # (columns, rows, slices)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    # every SEG frame lies where the NIfTI affine puts the first voxel of its slice, and holds that slice's labels
    frames = _seg_frames(out / "segmentation.dcm")
    assert len(frames) == len(Z)
    normal = np.cross(orientation[:3], orientation[3:])
    order = sorted(range(len(Z)), key=lambda i: float(np.dot(positions[i], normal)))  # the series' slice order
    for ipp, pixels in frames:
        i = next(i for i, p in enumerate(positions) if np.allclose(p, ipp))  # the slice as written
        k = order.index(i)  # its index in the volume
        lps = ras_to_lps @ seg_img.affine @ np.array([0, 0, k, 1.0])
        assert lps[:3] == pytest.approx(ipp)
        assert np.array_equal(labels[:, :, k].T > 0, pixels)
        assert np.array_equal(pixels, bone[i])
    # a voxel one column / one row further is 0.7 / 0.8 mm along the DICOM row / column direction
    step_col = (ras_to_lps @ seg_img.affine @ [1, 0, 0, 1])[:3] - (ras_to_lps @ seg_img.affine @ [0, 0, 0, 1])[:3]
    assert step_col == pytest.approx(np.array(orientation[:3]) * 0.7)
    # the image volume: the series' HU, same grid
    image = nib.load(out / "image.nii.gz")
    assert np.allclose(image.affine, seg_img.affine)
    hu = np.asarray(image.dataobj)
    k0 = order.index(0)
    assert hu.dtype == np.int16 and hu[:, :, k0].T[bone[0]].tolist() == [1000] * int(bone[0].sum())
    # volumes in mL: voxels x 0.8 x 0.7 x 2.5 mm^3
    voxels = int(sum(b.sum() for b in bone))
    doc = json.loads((out / "segments.json").read_text())
    (seg,) = doc["segments"]
    assert seg["voxels"] == voxels and seg["volume_ml"] == pytest.approx(voxels * 0.8 * 0.7 * 2.5 / 1000, rel=1e-6)
    label = seg["label"]
    assert res.classes[label]["volume_ml"] == pytest.approx(seg["volume_ml"])
    assert json.loads((out / "result.json").read_text())["classes"][label]["volume_ml"] == pytest.approx(seg["volume_ml"])


def test_nifti_can_be_switched_off(tmp_path, series_writer):
    stored, _ = _slices(2)
    series = series_writer(tmp_path / "ct", stored, [(0.0, 0.0, z) for z in Z[:2]])
    res = engine.run(series, "bone", plugin="surgical", out_dir=tmp_path / "a", options={"nifti_image": "no"})
    assert "nifti_segmentation" in res.outputs and "nifti_image" not in res.outputs
    res = engine.run(series, "bone", plugin="surgical", out_dir=tmp_path / "b", options={"nifti": False})
    assert not list((tmp_path / "b").glob("*.nii.gz"))


def test_label_volume_for_notebooks_equals_the_nifti(tmp_path, series_writer):
    import nibabel as nib

    stored, _ = _slices(3)
    series = series_writer(tmp_path / "ct", stored, [(0.0, 0.0, z) for z in Z[:3]], spacing=(0.8, 0.7))
    scene = engine.open_scene(series, plugin="surgical")
    res = engine.segment(scene, "bone", plugin="surgical")
    labels, affine, names = res.to_label_volume(scene)
    engine.write_outputs(scene, res, tmp_path / "o")
    img = nib.load(tmp_path / "o" / "segmentation.nii.gz")
    assert np.array_equal(labels, np.asarray(img.dataobj)) and np.allclose(affine, img.affine)
    assert list(names) == [1] and names[1] == json.loads((tmp_path / "o" / "segments.json").read_text())[
        "segments"][0]["label"]


@pytest.mark.shared_data
def test_real_ct_nifti_places_dcmqis_liver_seg_frames(tmp_path):
    """On dcmqi's real 3-slice CT: the NIfTI affine puts each slice where dcmqi's liver SEG (a reference tool)
    says its frame lies, and dcmqi's liver pixels fall inside our soft-tissue labels of that slice, unflipped."""
    import nibabel as nib
    import pydicom

    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    folder = None if root is None else root / "medical" / "dicom" / "dcmqi_ct-3slice"
    if folder is None or not (folder / "liver_seg.dcm").exists():
        pytest.skip("shared data medical/dicom/dcmqi_ct-3slice not present")
    out = tmp_path / "real"
    engine.run(folder, "soft tissue", plugin="surgical", out_dir=out)
    img = nib.load(out / "segmentation.nii.gz")
    labels = np.asarray(img.dataobj)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    seg = pydicom.dcmread(folder / "liver_seg.dcm")
    frames = _seg_frames(folder / "liver_seg.dcm")
    assert len(frames) == labels.shape[2] == 3
    iop = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    spacing = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    col_step = (ras_to_lps @ img.affine @ [1, 0, 0, 0])[:3]
    row_step = (ras_to_lps @ img.affine @ [0, 1, 0, 0])[:3]
    assert col_step == pytest.approx(np.array(iop[:3]) * spacing[1], abs=1e-5)
    assert row_step == pytest.approx(np.array(iop[3:]) * spacing[0], abs=1e-5)
    origins = [(ras_to_lps @ img.affine @ [0, 0, k, 1])[:3] for k in range(3)]
    for ipp, liver in frames:
        k = int(np.argmin([np.abs(o - ipp).max() for o in origins]))
        assert origins[k] == pytest.approx(ipp, abs=1e-3)
        ours = labels[:, :, k].T > 0
        assert ours[liver].mean() > 0.7 and ours[::-1][liver].mean() < 0.6 and ours[:, ::-1][liver].mean() < 0.6
