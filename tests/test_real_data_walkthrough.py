"""A demanding user's walk-through of the surgical, underwater and safety plugins on real data (../shared/data).

Each test is a problem a radiologist, a marine scientist or a site-safety officer hit when running ``rscore run`` on
a real file (through the CLI, in a subprocess) and opening the outputs with their own tools: a confident answer that
should have been absent, an error about something the user did not ask, an error that did not say what is wrong.
Skipped when the data is absent.
"""

from __future__ import annotations

import json

import pytest

from rscore.testing import run_cli, shared_data_dir

real_data = pytest.mark.shared_data


def _run(tmp_path, plugin, path, query, *extra, name="out"):
    out = tmp_path / name
    cli = run_cli("run", "--plugin", plugin, path, query, "-o", out, "--json", *extra)
    return cli, out


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# ---------------------------------------------------------------------------------------------------- underwater
@real_data
def test_low_visibility_specks_on_a_clear_floor_are_absent_not_turbid_water(shared_data, tmp_path):
    """euvp_test_A_1.jpg is a ray on a clear, weedy sea floor. 'turbid water' answered two specks (18 and 4 px of
    65,536) at confidence 0.999; a region of poor visibility is at least one 15 px patch of the rule. Now absent,
    saying why; the distant hazy water of euvp_test_A_12.jpg still answers."""
    euvp = shared_data / "underwater" / "funie-gan_euvp"
    clear = _need(euvp / "euvp_test_A_1.jpg")
    for query in ("turbid water", "low visibility regions"):
        cli, out = _run(tmp_path, "underwater", clear, query, name=query.replace(" ", "_"))
        assert cli.exit_code == 0, cli.stderr
        doc = cli.json
        assert doc["template"] == "underwater:low_visibility"
        assert doc["absent"] is True and doc["instances"] == []
        assert "under 225 px" in doc["reason"] and "no low-visibility region" in doc["reason"]
    hazy = _need(euvp / "euvp_test_A_12.jpg")
    cli, out = _run(tmp_path, "underwater", hazy, "turbid water", name="hazy")
    assert cli.exit_code == 0, cli.stderr
    assert cli.json["absent"] is False
    assert min(i["area_px"] for i in cli.json["instances"]) >= 225
    # a pale fish in blue water (euvp_test_A_5.jpg) passes both thresholds: the answer says so
    cli, _ = _run(tmp_path, "underwater", _need(euvp / "euvp_test_A_5.jpg"), "turbid water", name="fish")
    assert cli.exit_code == 0 and cli.json["absent"] is False
    assert any("pale fish" in c and "dark channel prior" in c for c in cli.json["caveats"])
    # and 'open water' marked 45 % of the fish's flank (rows 140-180, cols 150-200) without a word
    cli, out = _run(tmp_path, "underwater", euvp / "euvp_test_A_5.jpg", "open water", name="fish_water")
    assert cli.exit_code == 0 and cli.json["absent"] is False
    assert any("flank of a fish" in c for c in cli.json["caveats"])
    assert json.loads((out / "result.json").read_text())["summary"]["mask_fraction"] > 0.2


# ------------------------------------------------------------------------------------------------------- safety
def _site_clip(shared_data):
    return _need(shared_data / "construction" / "intel_worker-zone-detection_from_gif.mp4")


@real_data
@pytest.mark.parametrize(
    ("query", "declined_by"),
    [
        # matched "danger area": exit 2 asking for a zones file; with one, the user's polygons were the "hazards"
        ("trip hazards", "restricted_zone"),
        ("fall hazards", "restricted_zone"),
        ("spills on the floor", "restricted_zone"),
        # matched "someone next to a moving vehicle" at confidence 0.986: with a detector, people near machinery
        ("moving people", "near_machinery"),
    ],
)
def test_site_questions_no_template_answers_are_absent_with_the_reason(shared_data, tmp_path, query, declined_by):
    cli, out = _run(tmp_path, "safety", _site_clip(shared_data), query)
    assert cli.exit_code == 0, cli.stderr
    doc = cli.json
    assert doc["absent"] is True and doc["template"] is None
    assert f"'{declined_by}'" in doc["reason"] and "does not answer" in doc["reason"]
    assert not (out / "overlay.mp4").exists()


# ------------------------------------------------------------------------------------------------------ medical
def _ct_series(shared_data):
    folder = shared_data / "medical" / "dicom" / "dcmqi_ct-3slice"
    if not (folder / "01.dcm").exists():
        pytest.skip(f"{folder} not present")
    return folder


@pytest.fixture(scope="module")
def ct_bone(tmp_path_factory):
    """'bone' on the 3-slice CT through the CLI once (a 160-column terminal): ``(series, cli, out)``, its printed
    table and its outputs, read by the three tests of what a radiologist sees of it (volumes, boxes, the table)."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("the shared real data is absent")
    ct = _ct_series(data)
    out = tmp_path_factory.mktemp("ct-bone") / "out"
    cli = run_cli("run", "--plugin", "surgical", ct, "bone", "-o", out, env={"COLUMNS": "160"})
    assert cli.exit_code == 0, cli.stderr
    return ct, cli, out


@real_data
def test_a_truncated_slice_is_named_as_truncated(shared_data, tmp_path):
    """A series copied over a network that dropped: one slice cut at 300 kB of 526 kB. The error was pydicom's
    'cannot reshape array of size 148907 into shape (512,512)'; now it says the file is truncated, by how much,
    and what to do - one line, exit 2, no outputs."""
    ct = _ct_series(shared_data)
    series = tmp_path / "series"
    series.mkdir()
    for name in ("01.dcm", "03.dcm"):
        (series / name).write_bytes((ct / name).read_bytes())
    (series / "02.dcm").write_bytes((ct / "02.dcm").read_bytes()[:300_000])
    cli, out = _run(tmp_path, "surgical", series, "bone")
    assert cli.exit_code == 2
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert "02.dcm" in lines[0] and "truncated" in lines[0] and "of the 524,288 bytes" in lines[0]
    assert "reshape" not in lines[0]
    assert not out.exists()


@real_data
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' __array__ copy keyword under NumPy 2
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_drawn_zone_is_the_same_polygon_on_every_frame(shared_data, tmp_path, mode):
    """A 200x120 px zone drawn over the Intel site clip, where a worker walks through it: the zone was propagated
    by the optical flow between re-detections like a moving object, shrinking to 18,248 px (76 %) on frame 4 and
    growing to 24,795 px later. A drawn zone does not move: every frame of the YouTube-VIS file (read with
    pycocotools) and of masks.json is now the polygon itself."""
    from pycocotools import mask as mask_utils

    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "loading bay"},
        "geometry": {"type": "Polygon", "coordinates": [[[100, 150], [300, 150], [300, 270], [100, 270], [100, 150]]]},
    }]}))
    cli, out = _run(tmp_path, "safety", _site_clip(shared_data), "restricted zone", "-O", f"zones={zones}",
                    "-O", f"mode={mode}")
    assert cli.exit_code == 0, cli.stderr
    ytvis = json.loads((out / "ytvis.json").read_text())
    (track,) = ytvis["annotations"]
    assert len(track["segmentations"]) == ytvis["videos"][0]["length"] == 71
    first = mask_utils.decode(track["segmentations"][0])
    assert first.sum() == 200 * 120 and first[150:270, 100:300].all()
    for rle in track["segmentations"]:
        assert (mask_utils.decode(rle) == first).all()
    assert set(track["areas"]) == {24000}


@real_data
def test_free_air_and_bowel_gas_are_answered_as_part_of_all_air_not_confidently(shared_data, tmp_path):
    """On the dcmqi abdominal CT, 'free air' and 'bowel gas' were answered with the air rule's mask - the lungs,
    airways and bowel gas together - at confidence 0.99 and no superset caveat: a radiologist asking for free air
    got the lungs. Now: the same mask, flagged as a superset, with a low confidence; 'lungs' is unchanged."""
    from rscore import engine

    ct = _ct_series(shared_data)
    cli, _ = _run(tmp_path, "surgical", ct, "free air")  # what the radiologist ran
    assert cli.exit_code == 0, cli.stderr
    doc = cli.json
    assert doc["template"] == "surgical:air_lung" and doc["absent"] is False
    assert any(c.startswith("superset: 'free air'") for c in doc["caveats"]), doc["caveats"]
    assert doc["confidence"] is not None and doc["confidence"] < 0.2
    # the other queries through the engine the CLI calls, in this process (the CLI's part is the run above)
    for query in ("bowel gas", "pneumothorax"):  # answered at 0.99 before, or absent naming another template
        res = engine.run(ct, query, plugin="surgical", out_dir=tmp_path / query.replace(" ", "_"))
        assert res.plan.template == "surgical:air_lung" and res.plan.absent is False
        assert any(c.startswith(f"superset: '{query}'") for c in res.caveats), res.caveats
        assert res.confidence is not None and res.confidence < 0.2
    res = engine.run(ct, "lungs", plugin="surgical", out_dir=tmp_path / "lungs")
    assert res.confidence > 0.9 and not any(c.startswith("superset") for c in res.caveats)


@real_data
def test_the_zone_itself_is_not_a_finding_in_the_zone(shared_data, tmp_path):
    """'restricted zone' with a zones file on the Intel clip: the compliance report's findings.json listed the
    zone's own mask as a warning, "restricted zone in zone 'loading bay' for 5 s, frames 0-70". The zone is where
    the rules look, not something found in it; the hi-vis and motion findings stay."""
    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "loading bay"},
        "geometry": {"type": "Polygon", "coordinates": [[[100, 150], [300, 150], [300, 270], [100, 270], [100, 150]]]},
    }]}))
    cli, out = _run(tmp_path, "safety", _site_clip(shared_data), "restricted zone", "-O", f"zones={zones}")
    assert cli.exit_code == 0, cli.stderr
    findings = json.loads((out / "safety" / "findings.json").read_text())
    rules = {f["rule"] for f in findings["findings"]}
    assert "restricted_zone_in_zone" not in rules and "restricted_zone_in_zone" not in findings["summary"]["by_rule"]
    assert {"hivis_in_zone", "motion_in_zone"} <= rules
    assert "restricted zone in zone" not in (out / "safety" / "report.html").read_text()


@real_data
def test_a_ct_given_to_the_safety_plugin_is_pointed_to_the_surgical_one(shared_data, tmp_path):
    """pydicom_CT_small.dcm with --plugin safety: the error advised '--bands to name the bands' and '--aux', which
    cannot make a CT a colour picture. Now it says what the input is and which plugin reads it."""
    ct = _need(shared_data / "medical" / "dicom" / "pydicom_CT_small.dcm")
    cli, out = _run(tmp_path, "safety", ct, "workers in hi-vis vests")
    assert cli.exit_code == 2
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ct.name in lines[0], cli.stderr
    assert "--plugin surgical" in lines[0] and "--bands" not in lines[0]
    assert not out.exists()


@real_data
def test_the_cli_prints_segment_volumes_in_ml_that_match_the_dicom_geometry_and_the_nifti(ct_bone):
    """'bone' on the 3-slice CT printed 42 per-slice areas in cm² and no volume: a radiologist had to open
    result.json for the mL. The CLI now prints each segment's voxels and volume; both agree with the NIfTI labels
    (nibabel) and with the voxel size from the DICOM headers (pydicom: PixelSpacing x slice spacing)."""
    import nibabel as nib
    import numpy as np
    import pydicom

    ct, cli, out = ct_bone
    zs = sorted(float(pydicom.dcmread(ct / f"0{k}.dcm").ImagePositionPatient[2]) for k in (1, 2, 3))
    first = pydicom.dcmread(ct / "01.dcm")
    voxel_ml = float(first.PixelSpacing[0]) * float(first.PixelSpacing[1]) * (zs[1] - zs[0]) / 1000.0
    labels = np.asarray(nib.load(out / "segmentation.nii.gz").dataobj)
    classes = json.loads((out / "result.json").read_text())["classes"]
    for value, name in enumerate(("trabecular bone (300-699 HU)", "cortical bone (>= 700 HU)"), start=1):
        voxels = int((labels == value).sum())
        assert classes[name]["voxels"] == voxels > 0
        ml = voxels * voxel_ml
        assert classes[name]["volume_ml"] == pytest.approx(ml, rel=1e-3)
        row = next(line for line in cli.stdout.splitlines() if name in line)
        assert f"{voxels:,}" in row and f"{ml:.2f} mL" in row


@real_data
def test_a_slice_cut_inside_its_header_is_not_silently_left_out_of_the_volume(shared_data, tmp_path):
    """The middle slice of the 3-slice CT cut at 1,000 bytes (inside its header, before Rows/Columns) was skipped
    as a 'non-image object': 'bone' answered on 2 of 3 slices, 2 mm apart, with no warning - a gap in the volume
    nobody was told of. Now the file is named as truncated (exit 2, no outputs); the pydicom File-set's complete
    but image-less CT objects (TINY_ALPHA) are still skipped as before."""
    ct = _ct_series(shared_data)
    series = tmp_path / "series"
    series.mkdir()
    for name in ("01.dcm", "03.dcm"):
        (series / name).write_bytes((ct / name).read_bytes())
    (series / "02.dcm").write_bytes((ct / "02.dcm").read_bytes()[:1000])
    cli, out = _run(tmp_path, "surgical", series, "bone")
    assert cli.exit_code == 2, cli.stdout
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "02.dcm" in lines[0] and "truncated" in lines[0] and "1,000 bytes" in lines[0]
    assert not out.exists()
    tiny = shared_data / "medical" / "dicom" / "pydicom_dicomdirtests"
    if tiny.exists():
        cli, _ = _run(tmp_path, "surgical", tiny, "bone", "-O", "series=5", name="tiny")
        assert cli.exit_code == 2 and "16x16 pixels" in cli.stderr and "truncated" not in cli.stderr


@real_data
def test_a_greyscale_photo_is_asked_for_its_colour_original(shared_data, tmp_path):
    """A black-and-white copy of a reef photo (euvp_test_A_12.jpg) with 'open water': the error advised --bands and
    --aux, neither of which gives a greyscale picture its colours back."""
    from PIL import Image

    grey = tmp_path / "reef_grey.png"
    Image.open(_need(shared_data / "underwater" / "funie-gan_euvp" / "euvp_test_A_12.jpg")).convert("L").save(grey)
    cli, out = _run(tmp_path, "underwater", grey, "open water")
    assert cli.exit_code == 2
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "reef_grey.png" in lines[0], cli.stderr
    assert "greyscale" in lines[0] and "colour original" in lines[0] and "--bands" not in lines[0]
    assert not out.exists()


@real_data
@pytest.mark.parametrize("plugin", ["underwater", "surgical"])
def test_a_folder_of_photos_with_a_stray_dicom_file_is_not_read_as_ct(shared_data, tmp_path, plugin):
    """Three EUVP photos and one CT slice in a folder: the DICOM reader claimed the folder and read the one CT
    slice, so 'open water' failed with 'this input has hu' (and the surgical plugin answered the CT, the photos
    unmentioned). Now one line says what the folder holds and to separate them."""
    folder = tmp_path / "dive"
    folder.mkdir()
    for k in (1, 5, 12):
        src = _need(shared_data / "underwater" / "funie-gan_euvp" / f"euvp_test_A_{k}.jpg")
        (folder / src.name).write_bytes(src.read_bytes())
    ct = _need(shared_data / "medical" / "dicom" / "pydicom_CT_small.dcm")
    (folder / ct.name).write_bytes(ct.read_bytes())
    cli, out = _run(tmp_path, plugin, folder, "open water" if plugin == "underwater" else "bone")
    assert cli.exit_code == 2
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds 3 pictures (.jpg) and 1 DICOM file(s) (pydicom_CT_small.dcm)" in lines[0]
    assert "separate them" in lines[0] and not out.exists()


@real_data
def test_zones_drawn_in_longitude_latitude_are_explained_not_just_absent(shared_data, tmp_path):
    """A zones file exported from a web map (lon/lat degrees) on the Intel site clip: the answer was 'absent: the
    restricted zone rule found no pixels in this input'. Now the reason says every zone lies outside the frame,
    that zones are in pixel coordinates, and that these look like longitude/latitude."""
    zones = tmp_path / "zones.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "bay"},
        "geometry": {"type": "Polygon", "coordinates": [[[-0.12, 51.5], [-0.11, 51.5], [-0.11, 51.51], [-0.12, 51.5]]]},
    }]}))
    cli, out = _run(tmp_path, "safety", _site_clip(shared_data), "restricted zone", "-O", f"zones={zones}")
    assert cli.exit_code == 0, cli.stderr
    doc = cli.json
    assert doc["absent"] is True
    assert "lies outside the 480x270 image" in doc["reason"] and "pixel coordinates" in doc["reason"]
    assert "longitude/latitude" in doc["reason"]


@real_data
def test_glare_on_a_site_frame_is_not_answered_with_endoscopy_confidence(shared_data, tmp_path):
    """'specular highlights' (an endoscopy rule) on a frame of the Intel site clip marked 73 white-wall and pillar
    spots at confidence 0.998. The frame is not tissue under an endoscope's light (its typical lit pixel is grey,
    not red-dominant): the mask stays, the confidence is withheld with the reason."""
    import av
    from PIL import Image

    with av.open(str(_site_clip(shared_data))) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == 30:
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp_path / "site.png")
                break
    cli, _ = _run(tmp_path, "surgical", tmp_path / "site.png", "specular highlights")
    assert cli.exit_code == 0, cli.stderr
    doc = cli.json
    assert doc["template"] == "surgical:specular" and doc["absent"] is False
    assert doc["confidence"] is None
    assert any("not the colours of tissue under an endoscope's light" in c for c in doc["caveats"])


@real_data
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' __array__ copy keyword under NumPy 2
def test_each_ct_instance_carries_its_box_on_its_own_slice(ct_bone):
    """result.json boxes of a series are in the stacked scene (slice 2 of 512 px slices: y = 1179-1382), which no
    DICOM viewer shows; each instance - a 3-D component across slices - lists per slice it lies on the box of its
    mask on that slice's own image, ``per_slice[].bbox_in_slice`` (checked against the instance's RLE decoded with
    pycocotools and cut to that slice), and its 3-D box ``bbox_3d`` holds them all."""
    from pycocotools import mask as mask_utils

    instances = json.loads((ct_bone[2] / "result.json").read_text())["instances"]  # what --json prints too
    assert {e["slice"] for i in instances for e in i["attributes"]["per_slice"]} == {0, 1, 2}
    for inst in instances:
        rle = dict(inst["rle"])
        rle["counts"] = rle["counts"].encode()
        full = mask_utils.decode(rle)
        x0, y0, z0, x1, y1, z1 = inst["attributes"]["bbox_3d"]
        assert [e["slice"] for e in inst["attributes"]["per_slice"]] == list(range(z0, z1))
        for entry in inst["attributes"]["per_slice"]:
            k, box = entry["slice"], entry["bbox_in_slice"]
            ys, xs = full[k * 512:(k + 1) * 512].nonzero()
            assert box == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            assert entry["area_px"] == len(xs) and x0 <= box[0] and box[2] <= x1 and y0 <= box[1] and box[3] <= y1


@real_data
def test_the_cli_table_shows_each_ct_box_on_its_own_slice(ct_bone):
    """The CLI's instance table printed the stacked-scene boxes (y up to 1476 on 512 px slices), which no viewer
    shows; it now prints each 3-D component's slices and its box on them (``bbox_3d``), with its volume."""
    import re

    _, cli, out = ct_bone
    text = " ".join(cli.stdout.split())
    rows = re.findall(r"│ (\d)-(\d) │ \((\d+), (\d+), (\d+), (\d+)\) │ ([\d,]+) │ ([\d.]+) mL", text)
    assert rows and {(a, b) for a, b, *_ in rows} <= {("0", "2"), ("0", "1"), ("1", "2")}
    assert all(int(v) <= 512 for _, _, *box, _, _ in rows for v in box), rows
    doc = json.loads((out / "result.json").read_text())
    first = doc["instances"][0]["attributes"]
    x0, y0, z0, x1, y1, z1 = first["bbox_3d"]
    assert rows[0][:6] == (str(z0), str(z1 - 1), str(x0), str(y0), str(x1), str(y1))
    assert float(rows[0][7]) == pytest.approx(first["volume_ml"], rel=0.01)


@real_data
def test_the_cli_numbers_a_one_slice_run_as_the_series_does(shared_data, tmp_path):
    """``-O slice=1`` reads one slice of the series: the table printed "slice 0" (the index in a one-slice scene)
    while the slice PNG and the viewer say slice 1; each box now carries the series' number."""
    import re

    cli = run_cli("run", "--plugin", "surgical", _ct_series(shared_data), "bone", "-O", "slice=1",
                  "-o", tmp_path / "out", env={"COLUMNS": "160"})
    assert cli.exit_code == 0, cli.stderr
    numbers = set(re.findall(r"slice (\d+): \(", cli.stdout))
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert numbers == {"1"} == {str(i["attributes"]["series_slice"]) for i in doc["instances"]}, numbers
