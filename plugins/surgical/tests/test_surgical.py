from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import InputError, OptionError
from rscore.testing import shared_data_dir


@pytest.fixture(autouse=True)
def _keyword(monkeypatch):
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


def write_ct_series(folder, n=5, shuffle=True, series_uid=None, modality="CT"):
    """n axial 32x32 slices at z = 10, 12.5, ...; slice k holds HU 400 + 100 k in a 10x10 square, -1000 elsewhere."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    order = list(range(n))
    if shuffle:
        order = [3, 0, 4, 1, 2][:n] if n == 5 else order[::-1]
    for file_no, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"img{file_no:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study, series_uid
        ds.FrameOfReferenceUID = generate_uid()
        ds.InstanceNumber = file_no + 1  # deliberately NOT the spatial order
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 10 + 2.5 * k]
        ds.PixelSpacing = [0.8, 0.7]
        ds.SliceThickness = 2.5
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        img = np.full((32, 32), 24, np.int16)  # -1000 HU
        img[10:20, 10:20] = 1024 + 400 + 100 * k
        ds.PixelData = img.tobytes()
        ds.save_as(folder / f"img{file_no:03d}.dcm", enforce_file_format=True)
    return folder


def test_series_is_sorted_by_position_not_file_name(tmp_path):
    folder = write_ct_series(tmp_path / "ct")
    for k in range(5):
        scene = engine.open_scene(folder, plugin="surgical", options={"slice": k})
        assert scene.read()[0, 15, 15] == pytest.approx(400 + 100 * k)
        assert scene.band_roles == ("hu",) and scene.pixel_size == (0.7, 0.8) and scene.unit == "mm"
    assert [p[2] for p in scene.dicom.positions] == [10, 12.5, 15, 17.5, 20]
    assert scene.kind == "volume" and scene.metadata["slice_count"] == 5


def test_bone_on_a_synthetic_ct(tmp_path):
    folder = write_ct_series(tmp_path / "ct")
    res = engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "o", options={"slice": 0})
    assert res.plan.template == "surgical:bone"
    assert len(res.instances) == 1 and res.instances[0].area_px == 100
    assert res.instances[0].area_real == pytest.approx(100 * 0.56) and res.instances[0].area_unit == "mm2"


def test_two_series_need_a_choice(tmp_path):
    write_ct_series(tmp_path / "mix" / "a", shuffle=False)
    write_ct_series(tmp_path / "mix" / "b", shuffle=False)
    with pytest.raises(InputError, match="holds 2 series; pick one with -O series=UID"):
        engine.open_scene(tmp_path / "mix", plugin="surgical")


def test_mr_refuses_hu_templates(tmp_path):
    folder = write_ct_series(tmp_path / "mr", modality="MR")
    with pytest.raises(OptionError, match="Hounsfield-unit templates need CT; this input is MR"):
        engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_not_dicom_and_bad_slice(tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    with pytest.raises(InputError, match="fake.dcm"):
        engine.open_scene(tmp_path / "fake.dcm", plugin="surgical")
    folder = write_ct_series(tmp_path / "ct")
    with pytest.raises(OptionError, match="slice 9 is out of range"):
        engine.open_scene(folder, plugin="surgical", options={"slice": 9})


def test_specular_highlights_on_an_rgb_frame(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[...] = (170, 60, 50)  # tissue red
    img[5:12, 30:40] = (250, 248, 245)  # glare
    Image.fromarray(img).save(tmp_path / "endo.png")
    res = engine.run(tmp_path / "endo.png", "specular highlights", plugin="surgical", out_dir=tmp_path / "o")
    assert [i.bbox for i in res.instances] == [(30, 5, 40, 12)]


@pytest.mark.shared_data
def test_real_ct_slices(tmp_path):
    data = shared_data_dir()
    folder = data / "medical" / "dicom" / "dcmqi_ct-3slice" if data else None
    if folder is None or not folder.exists():
        pytest.skip("shared data not available")
    # the folder also holds the liver SEG, which has no ordinary pixel data for us: it must be skipped, not fatal
    scene = engine.open_scene(folder, plugin="surgical")
    assert scene.dicom.modality == "CT" and scene.metadata["slice_count"] == 3
    zs = [p[2] for p in scene.dicom.positions]
    assert zs == sorted(zs)
    res = engine.run(folder, "soft tissue", plugin="surgical", out_dir=tmp_path / "o")
    assert not res.absent and res.mask.mean() > 0.05
    bone = engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "b")
    assert not bone.absent and 0 < bone.mask.mean() < 0.2


@pytest.mark.shared_data
def test_real_small_ct_and_mr(tmp_path):
    data = shared_data_dir()
    if data is None or not (data / "medical" / "dicom" / "pydicom_CT_small.dcm").exists():
        pytest.skip("shared data not available")
    res = engine.run(data / "medical" / "dicom" / "pydicom_CT_small.dcm", "the body", plugin="surgical", out_dir=tmp_path / "o")
    assert res.plan.template == "surgical:body" and res.instances
    with pytest.raises(OptionError, match="need CT"):
        engine.run(data / "medical" / "dicom" / "pydicom_MR_small.dcm", "fat", plugin="surgical", out_dir=tmp_path / "m")
