"""The DICOM reader: series grouping, slice order along the normal, HU, padding, the stacked-rows layout, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rscore import engine
from rscore.errors import InputError, OptionError
from rscore.types import Window

from rscore_surgical.dicom import DicomReader, slice_count, slice_of_row, slice_spans, split_slices


def _slices(n: int, size: int = 12) -> list[np.ndarray]:
    """Slice k: stored value 1024 + 100 k everywhere (HU 100 k with intercept -1024), a marker at row k, col 0."""
    out = []
    for k in range(n):
        img = np.full((size, size), 1024 + 100 * k, np.int16)
        img[k, 0] = 0  # -1024 HU: says which slice this is, and that rows are not flipped
        out.append(img)
    return out


def test_slices_are_sorted_by_position_along_the_normal_not_by_file_name(tmp_path, series_writer):
    z = [10.0, 12.5, 15.0, 17.5, 20.0]
    folder = series_writer(tmp_path / "ct", _slices(5), [(0, 0, v) for v in z], file_order=[3, 0, 4, 1, 2])
    scene = engine.open_scene(folder, plugin="surgical")
    assert scene.kind == "volume" and scene.band_roles == ("hu",) and scene.reader == "dicom"
    assert scene.shape == (5 * 12, 12) and scene.metadata["slice_rows"] == 12 and slice_count(scene) == 5
    per_slice = split_slices(scene.read()[0], scene)
    for k in range(5):
        assert per_slice[k, 5, 5] == pytest.approx(100 * k)  # HU = stored + intercept
        assert per_slice[k, k, 0] == pytest.approx(-1024)
    assert [p[2] for p in scene.dicom.positions] == z
    assert scene.metadata["slice_spacing_mm"] == pytest.approx(2.5)
    assert scene.pixel_size == (0.7, 0.8) and scene.unit == "mm"  # (column spacing, row spacing)
    assert scene.dicom.pixel_spacing_mm == (0.8, 0.7) and scene.dicom.orientation == (1, 0, 0, 0, 1, 0)
    # file img000 holds slice 3: the UIDs follow the sorted order, not the files
    files = [Path(f).name for f in scene.metadata["slice_files"]]
    assert files == ["img001.dcm", "img003.dcm", "img004.dcm", "img000.dcm", "img002.dcm"]


def test_an_oblique_stack_is_ordered_by_projection_on_its_normal(tmp_path, series_writer):
    # sagittal: rows along +y, columns along -z, so the normal is row x col = (-1, 0, 0)
    xs = [5.0, -5.0, 0.0]
    folder = series_writer(
        tmp_path / "sag", _slices(3), [(x, 0, 0) for x in xs], orientation=(0, 1, 0, 0, 0, -1), file_order=[0, 1, 2]
    )
    scene = DicomReader().open(folder, {})
    # position . normal = -x: ascending order is x = 5, 0, -5 (a sort by x, or by file, would differ)
    assert [p[0] for p in scene.dicom.positions] == [5.0, 0.0, -5.0]
    values = split_slices(scene.read()[0], scene)[:, 5, 5]
    assert list(values) == [0.0, 200.0, 100.0]  # slices 0, 2, 1 of the input


def test_stacked_rows_helpers_map_rows_back_to_slices(tmp_path, series_writer):
    folder = series_writer(tmp_path / "ct", _slices(3, size=10), [(0, 0, z) for z in (0, 1, 2)])
    scene = DicomReader().open(folder, {})
    assert slice_of_row(scene, 0) == (0, 0) and slice_of_row(scene, 25) == (2, 5)
    with pytest.raises(IndexError):
        slice_of_row(scene, 30)
    spans = list(slice_spans(scene, Window(7, 0, 10, 10)))  # rows 7-16 touch slices 0 and 1
    assert spans == [(0, slice(0, 3), slice(7, 10)), (1, slice(3, 10), slice(0, 7))]
    mask = np.zeros(scene.shape, bool)
    mask[12, 3] = True
    assert np.argwhere(split_slices(mask, scene)).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError):
        split_slices(np.zeros((5, 5)), scene)


def test_the_stack_is_read_lazily_slice_by_slice(tmp_path, series_writer):
    folder = series_writer(tmp_path / "ct", _slices(4), [(0, 0, z) for z in range(4)])
    scene = DicomReader().open(folder, {})
    source = scene.source
    source._cache.clear()
    window = scene.read(Window(13, 2, 4, 5))  # rows 13-16 are in slice 1 only
    assert window.shape == (1, 4, 5) and set(source._cache) == {1}
    assert np.all(window == 100)


def test_one_slice_can_be_picked(tmp_path, series_writer):
    folder = series_writer(tmp_path / "ct", _slices(4), [(0, 0, z) for z in (3, 0, 2, 1)])
    scene = engine.open_scene(folder, plugin="surgical", options={"slice": 1})
    assert scene.kind == "image" and scene.shape == (12, 12)
    assert scene.metadata["slice_index"] == 1 and scene.metadata["series_slice_count"] == 4
    assert scene.dicom.positions == ((0.0, 0.0, 1.0),) and len(scene.dicom.sop_instance_uids) == 1
    assert scene.read()[0, 5, 5] == pytest.approx(300)  # sorted slice 1 is at z = 1: input slice 3
    with pytest.raises(OptionError, match="slice 9 is out of range"):
        engine.open_scene(folder, plugin="surgical", options={"slice": 9})
    with pytest.raises(OptionError, match="whole number"):
        engine.open_scene(folder, plugin="surgical", options={"slice": "middle"})


def test_several_series_need_a_choice(tmp_path, series_writer):
    a = series_writer(tmp_path / "mix" / "a", _slices(2), [(0, 0, 0), (0, 0, 1)], series_number=3)
    series_writer(tmp_path / "mix" / "b", _slices(3), [(0, 0, 0), (0, 0, 1), (0, 0, 2)], series_number=7)
    uid_a = DicomReader().open(a, {}).dicom.series_uid
    with pytest.raises(InputError, match="holds 2 image series; pick one with -O series=UID") as err:
        engine.open_scene(tmp_path / "mix", plugin="surgical")
    assert uid_a in str(err.value) and "#7, CT, 3 file(s)" in str(err.value)
    assert engine.open_scene(tmp_path / "mix", plugin="surgical", options={"series": uid_a}).metadata[
        "slice_count"
    ] == 2
    assert engine.open_scene(tmp_path / "mix", plugin="surgical", options={"series": 7}).metadata["slice_count"] == 3
    with pytest.raises(OptionError, match="series 9 is not in"):
        engine.open_scene(tmp_path / "mix", plugin="surgical", options={"series": 9})


def test_geometry_problems_are_input_errors(tmp_path, series_writer):
    dup = series_writer(tmp_path / "dup", _slices(3), [(0, 0, 0), (0, 0, 1), (0, 0, 1)])
    with pytest.raises(InputError, match="share a position"):
        DicomReader().open(dup, {})
    nogeo = series_writer(tmp_path / "nogeo", _slices(2), [None, None], orientation=None)
    with pytest.raises(InputError, match="cannot order 2 slices: ImagePositionPatient/ImageOrientationPatient missing"):
        DicomReader().open(nogeo, {})
    tilted = tmp_path / "tilted"
    series_writer(tilted, _slices(2), [(0, 0, 0), (0, 0, 1)], series_uid="1.2.3.4")
    from pydicom import dcmread

    ds = dcmread(tilted / "img001.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(tilted / "img001.dcm")
    with pytest.raises(InputError, match="different orientations"):
        DicomReader().open(tilted, {})


def test_uneven_spacing_is_a_warning(tmp_path, series_writer):
    folder = series_writer(tmp_path / "gap", _slices(4), [(0, 0, z) for z in (0, 1, 2, 5)])
    scene = DicomReader().open(folder, {})
    assert any("uneven slice spacing" in w for w in scene.warnings)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the deliberately broken header below
def test_mixed_sizes_and_broken_files(tmp_path, dicom_writer):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    dicom_writer(tmp_path / "mix" / "a.dcm", np.zeros((8, 8), np.int16), series_uid=uid)
    dicom_writer(tmp_path / "mix" / "b.dcm", np.zeros((6, 8), np.int16), series_uid=uid, position=(0, 0, 1))
    with pytest.raises(InputError, match="series mixes image sizes"):
        DicomReader().open(tmp_path / "mix", {})

    empty = dicom_writer(tmp_path / "nopixels.dcm", None)
    with pytest.raises(InputError, match="nopixels.dcm: pixel data cannot be decoded"):
        engine.open_scene(empty, plugin="surgical")

    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f" + b"x" * 40)
    with pytest.raises(InputError, match=r"garbage\.dcm: has no image pixel data"):
        engine.open_scene(garbage, plugin="surgical")

    whole = dicom_writer(tmp_path / "truncated.dcm", np.zeros((64, 64), np.int16)).read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(whole[: len(whole) - 4000])
    with pytest.raises(InputError, match=r"truncated\.dcm: the file is truncated: its pixel data holds 4,192 of "
                                         r"the 8,192"):
        engine.open_scene(tmp_path / "truncated.dcm", plugin="surgical")

    # a broken slice inside a series: the stack opens lazily, and reading that slice names its file
    folder = tmp_path / "withbad"
    dicom_writer(folder / "good.dcm", np.zeros((64, 64), np.int16), series_uid=uid, position=(0, 0, 0))
    whole = dicom_writer(folder / "bad.dcm", np.zeros((64, 64), np.int16), series_uid=uid, position=(0, 0, 1))
    whole.write_bytes(whole.read_bytes()[:-4000])
    scene = engine.open_scene(folder, plugin="surgical")
    assert scene.read(Window(0, 0, 64, 64)).shape == (1, 64, 64)
    with pytest.raises(InputError, match=r"bad\.dcm: the file is truncated"):
        scene.read()


def test_non_images_and_other_files_in_a_folder_are_skipped(tmp_path, dicom_writer):
    folder = tmp_path / "export"
    dicom_writer(folder / "ct.dcm", np.zeros((8, 8), np.int16))
    dicom_writer(folder / "seg.dcm", np.zeros((8, 8), np.int16), modality="SEG")
    (folder / "README.txt").write_text("not dicom")
    scene = engine.open_scene(folder, plugin="surgical")
    assert scene.metadata["slice_count"] == 1 and Path(scene.metadata["slice_files"][0]).name == "ct.dcm"
    only_seg = tmp_path / "seg"
    dicom_writer(only_seg / "seg.dcm", np.zeros((8, 8), np.int16), modality="SEG")
    with pytest.raises(InputError, match=r"holds no DICOM images with pixel data \(found only: seg.dcm \(modality SEG"):
        engine.open_scene(only_seg, plugin="surgical")
    with pytest.raises(InputError, match="has no image pixel data"):
        engine.open_scene(only_seg / "seg.dcm", plugin="surgical")


def test_padding_pixels_are_invalid(tmp_path, dicom_writer):
    img = np.full((8, 8), 1064, np.int16)  # +40 HU
    img[:, :2] = -2000  # outside the reconstruction circle
    scene = DicomReader().open(dicom_writer(tmp_path / "pad.dcm", img, padding=-2000), {})
    valid = scene.valid()
    assert valid is not None and not valid[:, :2].any() and valid[:, 2:].all()
    assert scene.read()[0, 0, 5] == pytest.approx(40)


def test_mr_monochrome1_and_colour(tmp_path, dicom_writer):
    mr = DicomReader().open(dicom_writer(tmp_path / "mr.dcm", np.full((8, 8), 300, np.uint16), modality="MR",
                                         slope=None, intercept=None), {})
    assert mr.band_roles == ("gray",) and mr.dicom.modality == "MR" and mr.read()[0, 0, 0] == 300
    inverted = DicomReader().open(
        dicom_writer(tmp_path / "cr.dcm", np.full((8, 8), 1000, np.uint16), modality="CR", slope=None,
                     intercept=None, photometric="MONOCHROME1"), {})
    assert inverted.read()[0, 0, 0] == 65535 - 1000 and any("MONOCHROME1" in w for w in inverted.warnings)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[2, 3] = (1, 2, 3)
    us = DicomReader().open(dicom_writer(tmp_path / "us.dcm", rgb, modality="US", spacing=None), {})
    assert us.band_roles == ("red", "green", "blue") and us.source.dtype == "uint8"
    assert us.read()[:, 2, 3].tolist() == [1, 2, 3] and us.read()[0, 0, 0] == 200
    assert us.pixel_size is None and any("no PixelSpacing" in w for w in us.warnings)


def test_raw_dicom_without_preamble_is_recognised(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "raw.dcm", np.full((8, 8), 1024, np.int16), preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    scene = engine.open_scene(path, plugin="surgical")
    assert scene.band_roles == ("hu",) and scene.read()[0, 0, 0] == 0


def test_a_dicomdir_opens_its_folder(tmp_path, dicom_writer):
    folder = tmp_path / "disc"
    dicom_writer(folder / "IMG" / "a", np.zeros((8, 8), np.int16))
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # the index itself is not read
    reader = DicomReader()
    assert reader.sniff(folder, b"")
    assert reader.open(folder / "DICOMDIR", {}).metadata["slice_count"] == 1


# ------------------------------------------------------------------------------------------ real data (shared)
@pytest.mark.shared_data
def test_real_ct_series_matches_the_reference_segmentation_geometry(shared_data):
    """dcmqi's CT slices and the liver SEG dcmqi made from them: same UIDs, positions and pixel grid as ours."""
    import pydicom

    folder = shared_data / "medical" / "dicom" / "dcmqi_ct-3slice"
    if not folder.exists():
        pytest.skip(f"{folder} not present")
    scene = engine.open_scene(folder, plugin="surgical")  # the SEG beside the slices is skipped, not fatal
    assert scene.kind == "volume" and scene.metadata["slice_count"] == 3 and scene.shape == (3 * 512, 512)
    zs = [p[2] for p in scene.dicom.positions]
    assert zs == sorted(zs) and zs[0] == pytest.approx(-128.69, abs=1e-3)
    assert scene.valid() is not None and not scene.valid().all()  # PixelPaddingValue -2000 outside the FOV
    seg = pydicom.dcmread(folder / "liver_seg.dcm")
    liver = seg.pixel_array > 0
    tissue = split_slices(engine.segment(scene, "soft tissue", plugin="surgical").mask, scene)
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = scene.dicom.sop_instance_uids.index(ref)
        seg_pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert seg_pos == pytest.approx(scene.dicom.positions[k], abs=1e-3)
        # the liver (45-65 HU) is soft tissue: most of dcmqi's liver is in our mask, and far less of it when flipped
        assert tissue[k][liver[i]].mean() > 0.7
        assert tissue[k][:, ::-1][liver[i]].mean() < 0.6 and tissue[k][::-1][liver[i]].mean() < 0.6


@pytest.mark.shared_data
def test_real_single_files_multiframe_and_colour(shared_data):
    d = shared_data / "medical" / "dicom"
    if not (d / "pydicom_CT_small.dcm").exists():
        pytest.skip(f"{d} not present")
    ct = engine.open_scene(d / "pydicom_CT_small.dcm", plugin="surgical")
    assert ct.kind == "image" and ct.band_roles == ("hu",) and ct.shape == (128, 128)
    assert ct.read().min() == pytest.approx(128 - 1024)
    mr = engine.open_scene(d / "pydicom_MR_small.dcm", plugin="surgical")
    assert mr.band_roles == ("gray",) and mr.dicom.modality == "MR"
    ect = engine.open_scene(d / "pydicom-data_eCT_Supplemental.dcm", plugin="surgical")  # enhanced CT, 2 frames
    # rows run along -x, so the normal is -z: frame 2 (z = -149) comes first, although frame 1 is first in the file
    assert ect.kind == "volume" and ect.metadata["slice_frames"] == [1, 0]
    assert [p[2] for p in ect.dicom.positions] == [-149.0, -159.0] and ect.pixel_size == (0.388672, 0.388672)
    assert ect.read().min() == pytest.approx(-1024)  # RescaleIntercept from the shared functional groups
    emri = engine.open_scene(d / "pydicom-data_emri_small.dcm", plugin="surgical")  # no geometry at all
    assert emri.metadata["slice_count"] == 10 and any("file's frame order" in w for w in emri.warnings)
    us = engine.open_scene(d / "pydicom-data_US1_UNCR.dcm", plugin="surgical")
    assert us.band_roles == ("red", "green", "blue") and us.shape == (480, 640)


@pytest.mark.shared_data
def test_real_dicomdir_tree_lists_its_series(shared_data):
    tree = shared_data / "medical" / "dicom" / "pydicom_dicomdirtests"
    if not tree.exists():
        pytest.skip(f"{tree} not present")
    with pytest.raises(InputError, match="image series; pick one with -O series=UID") as err:
        engine.open_scene(tree / "DICOMDIR", plugin="surgical")
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"  # "SmartScore - Gated 0.5 sec", 5 CT images
    assert uid in str(err.value)
    scene = engine.open_scene(tree, plugin="surgical", options={"series": uid})
    assert scene.dicom.modality == "CT" and scene.metadata["slice_count"] == 5
    along = [float(np.dot(p, np.cross(scene.dicom.orientation[:3], scene.dicom.orientation[3:])))
             for p in scene.dicom.positions]
    assert along == sorted(along)
