"""DICOM SEG output: round trip through pydicom and highdicom, geometry against dcmqi's SEG, dciodvfy, slice PNGs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.errors import InputError, OptionError
from rscore.testing import shared_data_dir

from rscore_surgical.dicom import split_slices

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SIZE = 48
Z = [30.0, 32.5, 35.0, 37.5]  # slice positions; the files are written in another order


def bone_slices(n: int = len(Z)) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Stored values (HU + 1024) of ``n`` slices: a soft-tissue body, and in slice k a cortical block (1000 HU)
    whose place depends on k and is asymmetric (a flip or a swapped slice moves it), plus a trabecular block
    (400 HU) on slices 1 and 3 only. Returns (stored slices, cortical masks, trabecular masks)."""
    stored, cortical, trabecular = [], [], []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for k in range(n):
        hu = np.full((SIZE, SIZE), -1000.0)
        hu[((yy - 24) / 20.0) ** 2 + ((xx - 24) / 21.0) ** 2 <= 1] = 40.0
        c = np.zeros((SIZE, SIZE), bool)
        c[12 + 3 * k : 18 + 3 * k, 12:18] = True  # moves down with k, on the left
        c[12 + 3 * k, 18:21] = True  # a spur to the right on its top row: a left-right or up-down flip shows
        t = np.zeros((SIZE, SIZE), bool)
        if k % 2:
            t[28:33, 26 + k : 34 + k] = True
        hu[c], hu[t] = 1000.0, 400.0
        stored.append((hu + 1024).astype(np.int16))
        cortical.append(c)
        trabecular.append(t)
    return stored, cortical, trabecular


@pytest.fixture
def bone_series(tmp_path, series_writer) -> Path:
    stored, _, _ = bone_slices()
    extra = {"PatientName": "Test^Phantom", "PatientID": "RS-1", "StudyID": "1", "AccessionNumber": "A1",
             "StudyDate": "20240101", "StudyTime": "120000", "ReferringPhysicianName": "", "PatientBirthDate": "",
             "PatientSex": "O", "WindowCenter": 40, "WindowWidth": 400}
    return series_writer(tmp_path / "ct", stored, [(-24.0, -24.0, z) for z in Z], file_order=[2, 0, 3, 1],
                         spacing=(0.8, 0.8), extra=extra)


def _sources(folder: Path) -> dict[str, object]:
    import pydicom

    out = {}
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        if ds.Modality != "SEG":
            out[str(ds.SOPInstanceUID)] = ds
    return out


def _frames(seg_path: Path) -> list[dict[str, object]]:
    """Per SEG frame, read with pydicom only: segment number, referenced SOP instance (and frame), IPP, pixels."""
    import pydicom

    seg = pydicom.dcmread(seg_path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    out = []
    shared = seg.SharedFunctionalGroupsSequence[0]
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        ident = item if "SegmentIdentificationSequence" in item else shared  # shared when there is one segment
        out.append({
            "segment": int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            "sop": str(src.ReferencedSOPInstanceUID),
            "frame": int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else None,
            "ipp": [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            "pixels": pixels[i].astype(bool),
        })
    return out


# ------------------------------------------------------------------------------------------ synthetic round trip
def test_seg_round_trip_frames_lie_on_their_source_slices(tmp_path, bone_series):
    import highdicom as hd
    import pydicom

    out = tmp_path / "out"
    res = engine.run(bone_series, "bone", plugin="surgical", out_dir=out)
    assert res.outputs["dicom_seg"] == "segmentation.dcm"
    seg_path = out / "segmentation.dcm"
    seg = pydicom.dcmread(seg_path)
    sources = _sources(bone_series)
    first = next(iter(sources.values()))
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.PatientID == "RS-1"
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert (seg.Rows, seg.Columns) == (SIZE, SIZE)
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.8, 0.8]

    # segments: one per class present (trabecular, cortical), bone tissue codes, rscore + template as algorithm
    segs = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segs[n].SegmentLabel for n in (1, 2)] == ["trabecular bone (300-699 HU)", "cortical bone (>= 700 HU)"]
    for s in segs.values():
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        assert (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) \
            == ("85756007", "3138006")  # SCT Tissue / Bone tissue
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        assert alg.AlgorithmName == "rscore surgical:bone" and "template=surgical:bone" in alg.AlgorithmParameters

    # the referenced series and instances are the source's
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence} == set(sources)

    # every frame: on its source slice (IPP), and its pixels are exactly that slice's block - not flipped, not
    # another slice's (the blocks move from slice to slice)
    _, cortical, trabecular = bone_slices()
    by_z = {z: k for k, z in enumerate(Z)}
    frames = _frames(seg_path)
    assert len(frames) == len(Z) + 2  # cortical on every slice, trabecular on slices 1 and 3 (empty frames omitted)
    seen = set()
    for f in frames:
        src = sources[f["sop"]]
        assert f["ipp"] == pytest.approx([float(v) for v in src.ImagePositionPatient])
        k = by_z[float(src.ImagePositionPatient[2])]
        expected = cortical[k] if f["segment"] == 2 else trabecular[k]
        assert np.array_equal(f["pixels"], expected), f"segment {f['segment']} on slice {k}"
        seen.add((f["segment"], k))
    assert seen == {(2, k) for k in range(4)} | {(1, 1), (1, 3)}

    # highdicom reads it back the same way, by source instance
    hseg = hd.seg.segread(seg_path)
    assert hseg.get_segment_numbers() == [1, 2]
    for uid, src in sources.items():
        k = by_z[float(src.ImagePositionPatient[2])]
        arr = hseg.get_pixels_by_source_instance([uid], segment_numbers=[2], ignore_spatial_locations=False)
        assert np.array_equal(arr[0, :, :, 0].astype(bool), cortical[k])


def test_seg_of_one_picked_slice_and_the_slice_pngs(tmp_path, bone_series):
    out = tmp_path / "one"
    res = engine.run(bone_series, "bone", plugin="surgical", out_dir=out, options={"slice": 2, "window": "bone"})
    frames = _frames(out / "segmentation.dcm")
    _, cortical, trabecular = bone_slices()
    assert len(frames) == 1 and frames[0]["segment"] == 1  # slice 2 has no trabecular block: one segment
    import pydicom

    labels = [s.SegmentLabel for s in pydicom.dcmread(out / "segmentation.dcm").SegmentSequence]
    assert labels == ["cortical bone (>= 700 HU)"]
    assert np.array_equal(frames[0]["pixels"], cortical[2]) and frames[0]["ipp"][2] == pytest.approx(Z[2])
    # the PNG is named by the slice's index in the series, shows the bone window, and the mask in its colour
    assert sorted(p.name for p in (out / "slices").iterdir()) == ["slice_002.png"]
    assert "slice_png_002" in res.outputs
    png = np.asarray(Image.open(out / "slices" / "slice_002.png"))
    assert png.shape == (SIZE, SIZE, 3)
    from rscore_surgical.windowing import apply_window

    body = float(apply_window(np.array([40.0]), 400, 1800)[0])  # soft tissue (40 HU) in the bone window
    assert png[40, 24].tolist() == [body] * 3 and png[2, 2].tolist() == [0, 0, 0]  # body; air outside
    from rscore_surgical.segments import COLOURS
    from rscore_surgical.writers import ALPHA

    white = float(apply_window(np.array([1000.0]), 400, 1800)[0])
    tinted = np.rint((1 - ALPHA) * white + ALPHA * np.asarray(COLOURS[0], float))
    assert png[20, 14].tolist() == tinted.tolist()  # inside the block (rows 18-23, cols 12-17): tinted
    assert png[18, 12].tolist() == list(COLOURS[0])  # its outline in the segment's colour


def test_slice_pngs_of_a_series_follow_slice_order_and_the_window(tmp_path, bone_series):
    out = tmp_path / "all"
    res = engine.run(bone_series, "soft tissue", plugin="surgical", out_dir=out, options={"window": "lung"})
    tissue = split_slices(res.mask, engine.open_scene(bone_series, plugin="surgical"))
    names = sorted(p.name for p in (out / "slices").iterdir())
    assert names == [f"slice_{k:03d}.png" for k in range(4)]
    from rscore_surgical.windowing import apply_window

    _, cortical, trabecular = bone_slices()
    for k in range(4):
        png = np.asarray(Image.open(out / "slices" / f"slice_{k:03d}.png"))
        # slice k's bone blocks (1000 and 400 HU) are white in the lung window (W1500/L-600), and nothing else is;
        # the corners of the blocks, which the 3x3 median of the soft-tissue rule puts in the mask, are tinted
        bright = (png == 255).all(axis=2)
        blocks = cortical[k] | trabecular[k]
        assert np.array_equal(bright, blocks & ~tissue[k]), k
        assert bright.sum() >= 0.8 * blocks.sum()
        assert png[2, 2, 0] == apply_window(np.array([-1000.0]), -600, 1500)[0]


def test_no_seg_when_switched_off_absent_or_not_dicom(tmp_path, bone_series):
    res = engine.run(bone_series, "bone", plugin="surgical", out_dir=tmp_path / "a",
                     options={"dicom_seg": False, "slice_pngs": "no"})
    assert "dicom_seg" not in res.outputs and not (tmp_path / "a" / "slices").exists()
    res = engine.run(bone_series, "metal implants", plugin="surgical", out_dir=tmp_path / "b")
    assert res.absent and not (tmp_path / "b" / "segmentation.dcm").exists()
    assert len(list((tmp_path / "b" / "slices").iterdir())) == 4  # the slices are still shown
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "x.png")
    res = engine.run(tmp_path / "x.png", "glare", plugin="surgical", out_dir=tmp_path / "c")
    assert not any(k.startswith(("dicom_seg", "slice_png")) for k in res.outputs)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"window": "liver"}, OptionError, "option window must be one of auto, file, soft_tissue"),
        ({"dicom_seg": "maybe"}, OptionError, "option dicom_seg must be true or false"),
        ({"slice_pngs": 3}, OptionError, "option slice_pngs must be true or false"),
    ],
)
def test_bad_options_are_one_line_errors_and_leave_nothing(tmp_path, bone_series, options, error, match):
    out = tmp_path / "bad"
    with pytest.raises(error, match=match) as info:
        engine.run(bone_series, "bone", plugin="surgical", out_dir=out, options=options)
    assert "\n" not in str(info.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ct"]  # no partial output, no temp folder


@pytest.mark.parametrize(("name", "value"), [("dicom_seg", "maybe"), ("slice_pngs", 2)])
def test_bad_output_flags_fail_before_segmentation_whatever_the_scene(tmp_path, bone_series, monkeypatch, name,
                                                                      value):
    """``dicom_seg`` / ``slice_pngs`` are checked by the preprocess hook: before a reasoner is even built, and also
    where the writers would never look at them (an absent result, a scene of another reader, no output folder)."""
    import rscore.engine as core_engine

    built = []
    monkeypatch.setattr(core_engine, "_backend", lambda *a, **k: built.append(a) or pytest.fail("reasoner built"))
    png = tmp_path / "frame.png"
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(png)
    match = rf"^option {name} must be true or false \(or yes/no, on/off, 1/0\), got {value!r}$"
    for path, query in ((bone_series, "bone"), (bone_series, "metal implants"), (png, "glare")):
        scene = engine.open_scene(path, plugin="surgical")
        with pytest.raises(OptionError, match=match):
            engine.segment(scene, query, plugin="surgical", options={name: value})
        out = tmp_path / f"out-{path.name}"
        with pytest.raises(OptionError, match=match):
            engine.run(path, query, plugin="surgical", out_dir=out, options={name: value})
        assert not out.exists()
    assert not built


class _FakeVlm:
    """A model reasoner without a model: keeps the picture it is shown and answers "absent" for template metal."""

    name = "fake-vlm"
    whole_scene = True  # no per-slice tiling: one picture of the whole stack

    def __init__(self, seen: list[np.ndarray]) -> None:
        self.seen = seen

    def plan(self, scene, request, templates):
        from rscore.io.images import scene_rgb8
        from rscore.types import Plan

        self.seen.append(scene_rgb8(scene))
        return Plan(absent=True, reason="no implant seen", template="surgical:metal", reasoner=self.name)


def test_slice_pngs_show_the_window_the_model_saw_else_the_matched_templates(tmp_path, bone_series):
    """The rule (rscore_surgical.windowing, "Which window, when"): ``-O window`` wins; else the PNGs reuse the window
    a model was shown; else (analytic) the matched template's window. result.json states both."""
    import json

    from rscore.plugins import get_registry
    from rscore.sdk import BackendSpec

    from rscore_surgical.windowing import apply_window

    seen: list[np.ndarray] = []
    reg = get_registry()
    reg.backends[("reasoner", "fake-vlm")] = BackendSpec("reasoner", "fake-vlm", lambda o: _FakeVlm(seen), "test",
                                                         plugin="test")
    scene = engine.open_scene(bone_series, plugin="surgical")
    hu = scene.read(None, ["hu"])[0]
    soft = float(apply_window(np.array([40.0]), 40, 400)[0])  # the body (40 HU) in the file's W400/L40
    bone = float(apply_window(np.array([40.0]), 400, 1800)[0])
    lung = float(apply_window(np.array([40.0]), -600, 1500)[0])
    assert len({soft, bone, lung}) == 3

    def run(name, **options):
        out = tmp_path / name
        res = engine.run(bone_series, "metal implants", plugin="surgical", out_dir=out, options=options, registry=reg)
        doc = json.loads((out / "result.json").read_text())
        body = np.asarray(Image.open(out / "slices" / "slice_000.png"))[40, 24].tolist()
        return res, doc, body

    # a model reasoner: "metal implants" names no window, so the model is shown the file's window before the
    # template is matched; the PNGs show that same picture, not the metal template's bone window
    res, doc, body = run("vlm", reasoner="fake-vlm")
    assert res.plan.template == "surgical:metal" and len(seen) == 1
    assert np.array_equal(seen[0][..., 0], apply_window(hu, 40, 400))
    assert body == [soft] * 3
    windows = doc["provenance"]["display_windows"]
    assert {k: windows["model"][k] for k in ("name", "center", "width", "source")} == \
        {"name": "file", "center": 40.0, "width": 400.0, "source": "file"}
    assert {k: windows["slice_pngs"][k] for k in ("name", "center", "width", "source")} == \
        {"name": "file", "center": 40.0, "width": 400.0, "source": "model"}
    steps = [s["text"] for s in doc["plan"]["steps"]]
    assert "preprocess: CT shown to the model in the file window (W400/L40): the series' own WindowCenter/" \
        "WindowWidth" in steps
    assert any(t.startswith("slice PNGs in the file window (W400/L40): the window the model was shown") for t in steps)

    # the analytic reasoner reads HU, no model sees a picture: the PNGs take the matched template's window
    res, doc, body = run("analytic")
    assert res.plan.template == "surgical:metal" and body == [bone] * 3
    windows = doc["provenance"]["display_windows"]
    assert windows["model"] is None
    assert (windows["slice_pngs"]["name"], windows["slice_pngs"]["source"]) == ("bone", "template")
    assert "slice PNGs in the bone window (W1800/L400): suits template metal" in [s["text"] for s in
                                                                                  doc["plan"]["steps"]]

    # -O window wins for both, whatever the reasoner
    res, doc, body = run("forced", reasoner="fake-vlm", window="lung")
    assert np.array_equal(seen[-1][..., 0], apply_window(hu, -600, 1500)) and body == [lung] * 3
    windows = doc["provenance"]["display_windows"]
    assert [windows[k]["name"] for k in ("model", "slice_pngs")] == ["lung", "lung"]
    assert [windows[k]["source"] for k in ("model", "slice_pngs")] == ["option", "option"]
    res, doc, body = run("forced-analytic", window="lung")
    assert body == [lung] * 3 and doc["provenance"]["display_windows"]["slice_pngs"]["source"] == "option"

    # no PNGs: nothing to state for them
    res = engine.run(bone_series, "metal implants", plugin="surgical", out_dir=tmp_path / "none",
                     options={"slice_pngs": False}, registry=reg)
    assert res.provenance["display_windows"]["slice_pngs"] is None
    assert not any(s.text.startswith("slice PNGs") for s in res.plan.steps)


def test_a_source_highdicom_refuses_is_an_input_error_and_leaves_nothing(tmp_path, series_writer):
    stored, _, _ = bone_slices(2)
    folder = series_writer(tmp_path / "ct", stored, [(0, 0, 0), (0, 0, 2.5)],
                           extra={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"})  # Secondary Capture: not a CT image
    import pydicom

    for f in folder.iterdir():  # a CT series of Secondary Capture objects without a Frame of Reference
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    out = tmp_path / "o"
    with pytest.raises(InputError, match="cannot write a DICOM SEG .*dicom_seg=false") as info:
        engine.run(folder, "bone", plugin="surgical", out_dir=out)
    assert "\n" not in str(info.value) and not out.exists()
    res = engine.run(folder, "bone", plugin="surgical", out_dir=out, options={"dicom_seg": False})
    assert "dicom_seg" not in res.outputs and (out / "slices" / "slice_000.png").exists()


def test_slices_in_different_frames_of_reference_fail_the_run_with_an_input_error(tmp_path, series_writer):
    import pydicom
    from pydicom.uid import generate_uid

    stored, _, _ = bone_slices(2)
    folder = series_writer(tmp_path / "ct", stored, [(0, 0, 0), (0, 0, 2.5)])
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = generate_uid()
        ds.save_as(f)
    with pytest.raises(InputError, match="2 different FrameOfReferenceUIDs .*dicom_seg=false"):
        engine.run(folder, "bone", plugin="surgical", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_cli_writes_seg_and_pngs_with_its_options(tmp_path, bone_series, rscore_cli):
    from rscore.testing import assert_result_document

    code, out, err, doc = rscore_cli("run", "--plugin", "surgical", bone_series, "bone", "--json", "--out",
                                     tmp_path / "cli", "-O", "window=lung", "-O", "slice=3",
                                     env={"RSCORE_MATCHER": "keyword"})
    assert code == 0, err
    assert_result_document(doc)
    assert doc["outputs"]["dicom_seg"] == "segmentation.dcm" and doc["outputs"]["slice_png_003"] == \
        "slices/slice_003.png"
    assert doc["provenance"]["options"]["window"] == "lung"
    png = np.asarray(Image.open(tmp_path / "cli" / "slices" / "slice_003.png"))
    assert png[2, 2, 0] == 60  # -1000 HU in the lung window: ((-1000 + 600.5) / 1499 + 0.5) * 255 = 59.54
    code, out, err, _ = rscore_cli("run", "--plugin", "surgical", bone_series, "bone", "--out", tmp_path / "bad",
                                   "-O", "window=wide", env={"RSCORE_MATCHER": "keyword"})
    assert code == 2 and len(err.strip().splitlines()) == 1 and "option window must be one of" in err
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------------- dciodvfy
def _dciodvfy(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) is not on PATH")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.strip()]


def test_dciodvfy_finds_no_errors_in_the_seg(tmp_path, bone_series):
    engine.run(bone_series, "bone", plugin="surgical", out_dir=tmp_path / "out")
    lines = _dciodvfy(tmp_path / "out" / "segmentation.dcm")
    assert "Segmentation" in lines  # dciodvfy recognised the IOD
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(errors)
    warnings = [line for line in lines if line.startswith("Warning")]
    assert not warnings, "\n".join(warnings)  # a clean source gives a SEG without warnings too


# ------------------------------------------------------------------------------------------ real data (shared)
def _dcmqi() -> Path:
    root = shared_data_dir()
    folder = None if root is None else Path(root) / "medical" / "dicom" / "dcmqi_ct-3slice"
    if folder is None or not (folder / "liver_seg.dcm").exists():
        pytest.skip("shared data medical/dicom/dcmqi_ct-3slice not present")
    return folder


def test_real_ct_seg_has_dcmqis_geometry(tmp_path):
    """Our SEG of dcmqi's CT series against the liver SEG dcmqi (a reference tool) made from it: same orientation,
    spacing, referenced instances and per-instance positions; and dcmqi's liver lies inside our soft tissue frame
    by frame, read from both files with pydicom only."""
    import pydicom

    folder = _dcmqi()
    out = tmp_path / "real"
    res = engine.run(folder, "soft tissue", plugin="surgical", out_dir=out)
    ours, ref = pydicom.dcmread(out / "segmentation.dcm"), pydicom.dcmread(folder / "liver_seg.dcm")

    def shared(ds, group, key):
        return [float(v) for v in getattr(ds.SharedFunctionalGroupsSequence[0][group][0], key)]

    assert shared(ours, "PlaneOrientationSequence", "ImageOrientationPatient") == pytest.approx(
        shared(ref, "PlaneOrientationSequence", "ImageOrientationPatient"))
    assert shared(ours, "PixelMeasuresSequence", "PixelSpacing") == pytest.approx(
        shared(ref, "PixelMeasuresSequence", "PixelSpacing"))
    assert (ours.Rows, ours.Columns) == (ref.Rows, ref.Columns)
    assert ours.FrameOfReferenceUID == ref.FrameOfReferenceUID and ours.StudyInstanceUID == ref.StudyInstanceUID

    def instances(ds):
        s = ds.ReferencedSeriesSequence[0]
        return s.SeriesInstanceUID, {str(i.ReferencedSOPInstanceUID) for i in s.ReferencedInstanceSequence}

    assert instances(ours) == instances(ref) and len(instances(ours)[1]) == 3
    mine = {f["sop"]: f for f in _frames(out / "segmentation.dcm")}
    theirs = {f["sop"]: f for f in _frames(folder / "liver_seg.dcm")}
    assert set(mine) == set(theirs)
    scene = engine.open_scene(folder, plugin="surgical")
    tissue = split_slices(res.mask, scene)
    sources = _sources(folder)
    for uid, f in mine.items():
        assert f["ipp"] == pytest.approx(theirs[uid]["ipp"], abs=1e-4)
        assert f["ipp"] == pytest.approx([float(v) for v in sources[uid].ImagePositionPatient], abs=1e-4)
        k = scene.dicom.sop_instance_uids.index(uid)
        assert np.array_equal(f["pixels"], tissue[k])  # the frame is our mask of that slice
        liver = theirs[uid]["pixels"]
        assert f["pixels"][liver].mean() > 0.7  # and dcmqi's liver is in it, on the same slice, unflipped
        assert f["pixels"][:, ::-1][liver].mean() < 0.6 and f["pixels"][::-1][liver].mean() < 0.6
    lines = _dciodvfy(out / "segmentation.dcm")
    assert not [line for line in lines if line.startswith("Error")], lines
    # the only warning is the source's own patient name, which dcmqi's SEG carries too
    assert all("Patient's Name" in line for line in lines if line.startswith("Warning")), lines


def test_real_enhanced_ct_seg_references_frames(tmp_path):
    root = shared_data_dir()
    path = None if root is None else Path(root) / "medical" / "dicom" / "pydicom-data_eCT_Supplemental.dcm"
    if path is None or not path.exists():
        pytest.skip("shared data medical/dicom/pydicom-data_eCT_Supplemental.dcm not present")
    import pydicom

    out = tmp_path / "ect"
    # a perfusion map (Rescale Type US, values in ml/100ml/s): HU templates refuse it unless told to go ahead,
    # which this test of the SEG frame references does
    res = engine.run(path, "the body", plugin="surgical", out_dir=out, options={"values_are_hu": True})
    scene = engine.open_scene(path, plugin="surgical")
    body = split_slices(res.mask, scene)
    src = pydicom.dcmread(path, stop_before_pixels=True)
    frames = _frames(out / "segmentation.dcm")
    assert sorted(f["frame"] for f in frames) == [1, 2]
    for f in frames:
        assert f["sop"] == src.SOPInstanceUID
        pff = src.PerFrameFunctionalGroupsSequence[f["frame"] - 1]
        assert f["ipp"] == pytest.approx([float(v) for v in pff.PlanePositionSequence[0].ImagePositionPatient])
        k = scene.metadata["slice_frames"].index(f["frame"] - 1)  # scene order is along the normal, not file order
        assert np.array_equal(f["pixels"], body[k])
    assert scene.metadata["slice_frames"] == [1, 0]  # so the mapping above was exercised, not the identity
    lines = _dciodvfy(out / "segmentation.dcm")
    assert not [line for line in lines if line.startswith("Error")], lines


# ------------------------------------------------------------------------------------------------ segments, codes
def test_property_codes_for_templates_and_free_labels():
    from rscore_surgical.segments import property_codes

    def values(template, label):
        category, kind = property_codes(template, label).coded()
        return category.value, kind.value

    assert values("surgical:bone", "cortical bone (>= 700 HU)") == ("85756007", "3138006")
    assert values("surgical:air_lung", "air inside the body") == ("105590001", "74947009")
    assert values("surgical:fat", "fat") == ("85756007", "55603005")
    assert values("surgical:soft_tissue", "soft tissue") == ("85756007", "87784001")
    assert values("surgical:body", "body") == ("91723000", "38266002")
    assert values(None, "the left lung") == ("91723000", "39607008")
    assert values(None, "hepatic artery") == ("85756007", "51114001")
    assert values(None, "blood vessels") == ("85756007", "59820001")
    assert values(None, "instrument holding the needle") == ("260787004", "57134006")
    assert values(None, "active bleeding") == ("49755003", "50960005")
    assert values("surgical:specular", "specular highlight") == ("85756007", "85756007")  # Tissue fallback
    assert values("other:bone", "x") == ("85756007", "85756007")  # another plugin's template is not ours


def test_a_vlm_result_with_several_labels_gets_one_segment_per_label(tmp_path, bone_series):
    from rscore.types import Instance, Plan, Result

    from rscore_surgical.segments import build_segments

    scene = engine.open_scene(bone_series, plugin="surgical")
    a = np.zeros(scene.shape, bool)
    a[SIZE + 5 : SIZE + 9, 3:7] = True  # slice 1
    b = np.zeros(scene.shape, bool)
    b[3 * SIZE + 20 : 3 * SIZE + 22, 30:40] = True  # slice 3
    c = np.zeros(scene.shape, bool)
    c[2:4, 2:4] = True  # slice 0, same label as a
    insts = tuple(Instance(label, 0.9, (0, 0, 1, 1), int(m.sum()), m) for label, m in
                  (("liver", a), ("hepatic artery", b), ("liver", c)))
    res = Result("liver and its artery", "surgical", Plan(reasoner="openai"), instances=insts, mask=a | b | c)
    segs = build_segments(scene, res)
    assert [s.label for s in segs] == ["liver", "hepatic artery"]
    assert np.array_equal(segs[0].mask, split_slices(a | c, scene)) and np.array_equal(segs[1].mask,
                                                                                      split_slices(b, scene))
    seg_path = tmp_path / "seg"
    seg_path.mkdir()
    from rscore_surgical.dicom_seg import DicomSegWriter

    written = DicomSegWriter().write(scene, res, seg_path)
    frames = _frames(written["dicom_seg"])
    assert sorted((f["segment"], f["ipp"][2]) for f in frames) == [(1, Z[0]), (1, Z[1]), (2, Z[3])]
    import pydicom

    alg = pydicom.dcmread(written["dicom_seg"]).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
