"""Safety rules over detections: synthetic scenes with known answers, then the templates end to end through the
engine with a YOLO-layout ONNX model built in the test (it finds solid colour rectangles: red = person, green =
helmet, blue = vest)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.detectors import Detection
from rscore.errors import BackendUnavailable, OptionError
from rscore_safety.detections import (RuleOptions, hard_hats, head_region, in_zones, near_machinery, no_hard_hats,
                                      no_vests, role_of, vests, with_detection_rules, workers)  # fmt: skip

OPTS = RuleOptions()
PERSON = Detection("Person", 0.9, (100, 100, 140, 200))  # 100 px tall: head region y 90..125


def det(label, box, score=0.8):
    return Detection(label, score, tuple(float(v) for v in box))


def test_roles_read_the_usual_class_names():
    assert role_of("NO-Hardhat") == "no_helmet" and role_of("Hardhat") == "helmet" and role_of("hard_hat") == "helmet"
    assert role_of("NO-Safety Vest") == "no_vest" and role_of("Safety Vest") == "vest"
    assert role_of("machinery") == role_of("Dump Truck") == "machinery" and role_of("Safety Cone") is None
    assert role_of("casco", RuleOptions(extra_classes="helmet:casco")) == "helmet"
    with pytest.raises(OptionError, match="extra_classes"):
        RuleOptions(extra_classes="hat")
    with pytest.raises(OptionError, match="torso_top < torso_bottom"):
        RuleOptions(torso_top=0.8, torso_bottom=0.2)
    with pytest.raises(OptionError, match="unknown safety rule option"):
        RuleOptions.from_options({"rules_head": 0.3})
    assert RuleOptions.from_options({"rules_near_heights": "2.5"}).near_heights == 2.5


def test_helmet_in_the_head_region_or_not():
    helmet = det("Hardhat", (110, 92, 130, 108))  # sticks 8 px over the box top, inside the raised head region
    assert head_region(PERSON.box, OPTS) == (100, 90, 140, 125)
    assert [h.box for h in hard_hats([PERSON, helmet], OPTS)] == [PERSON.box]
    assert no_hard_hats([PERSON, helmet], OPTS) == []
    # the same helmet carried at the hip is not worn
    carried = det("Hardhat", (110, 150, 130, 166))
    missing = no_hard_hats([PERSON, carried], OPTS)
    assert [h.box for h in missing] == [PERSON.box] and "no helmet in the head region" in missing[0].why
    assert no_hard_hats([PERSON], OPTS)[0].label == "worker without a hard hat"
    # half the helmet inside the head region is the declared limit
    edge = det("Hardhat", (110, 115, 130, 135))  # 10 of 20 rows inside y < 125
    assert no_hard_hats([PERSON, edge], OPTS) == []
    assert len(no_hard_hats([PERSON, edge], RuleOptions(part_overlap=0.6))) == 1
    # a low-scoring helmet does not count
    assert len(no_hard_hats([PERSON, det("Hardhat", (110, 92, 130, 108), 0.1)], OPTS)) == 1


def test_the_models_own_no_hardhat_class():
    head = det("NO-Hardhat", (112, 100, 128, 118))
    hits = no_hard_hats([PERSON, head], OPTS)  # one person, one bare head: one violation, both agree
    assert len(hits) == 1 and "agrees" in hits[0].why
    alone = det("NO-Hardhat", (300, 50, 320, 70))  # a head the person detector missed still counts
    hits = no_hard_hats([PERSON, det("Hardhat", (110, 92, 130, 108)), alone], OPTS)
    assert [h.box for h in hits] == [alone.box]


def test_vests_in_the_torso_band():
    vest = det("Safety Vest", (102, 120, 138, 170))
    assert [h.box for h in vests([PERSON, vest], OPTS)] == [PERSON.box] and no_vests([PERSON, vest], OPTS) == []
    shoes = det("Safety Vest", (102, 185, 138, 200))  # below the torso band (y 115..175)
    assert len(no_vests([PERSON, shoes], OPTS)) == 1
    assert [h.box for h in no_vests([det("NO-Safety Vest", (0, 0, 10, 10))], OPTS)] == [(0, 0, 10, 10)]


def test_near_machinery_in_person_heights():
    truck_close = det("dump truck", (190, 120, 300, 200))  # gap 50 px = 0.5 heights
    truck_far = det("dump truck", (290, 120, 400, 200))  # gap 150 px = 1.5 heights
    hits = near_machinery([PERSON, truck_close], OPTS)
    assert len(hits) == 1 and "0.50 person heights from dump truck" in hits[0].why
    assert near_machinery([PERSON, truck_far], OPTS) == []
    assert len(near_machinery([PERSON, truck_far], RuleOptions(near_heights=2))) == 1
    assert near_machinery([PERSON], OPTS) == []
    assert len(workers([PERSON, truck_close, det("person", (0, 0, 5, 10), 0.2)], OPTS)) == 1  # 0.2 < min_score


def test_people_inside_a_zone_by_their_feet(tmp_path):
    from rscore_safety.zones import load_zones

    path = tmp_path / "z.json"
    path.write_text(json.dumps({"zones": [{"name": "crane swing", "polygon": [[90, 150], [200, 150], [200, 260],
                                                                              [90, 260]]}]}))  # fmt: skip
    zones = load_zones(path)
    inside = in_zones([PERSON], OPTS, zones)  # feet at (120, 200): inside
    assert len(inside) == 1 and "crane swing" in inside[0].why
    leaning = Detection("person", 0.9, (100, 60, 140, 140))  # box reaches into nothing; feet at y 140 < 150
    assert in_zones([leaning], OPTS, zones) == []


def test_templates_registered_and_hard_hats_keeps_its_vlm_prompt():
    from rscore.plugins import get_registry

    names = {t.name: t for t in get_registry().templates_for("safety") if t.plugin == "safety"}
    assert {"workers", "hard_hats", "hard_hats_worn", "no_vests", "near_machinery", "people_in_zone",
            "at_height"} <= set(names)
    assert names["hard_hats"].program is not None and "hard hat" in names["hard_hats"].prompt
    assert len(with_detection_rules(list(names.values()))) == len(names)  # idempotent


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def site_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from rscore.detectors.testing import save_pattern_yolo_onnx

    return save_pattern_yolo_onnx(tmp_path_factory.mktemp("m") / "site.onnx", ("person", "helmet", "vest"))


@pytest.fixture
def site(tmp_path):
    from rscore.detectors.testing import COLOURS

    img = np.full((128, 256, 3), 114, np.uint8)
    img[20:80, 40:60] = COLOURS[0]  # worker A (x 40-60) ...
    img[20:30, 44:56] = COLOURS[1]  # ... with a helmet
    img[60:120, 180:200] = COLOURS[0]  # worker B, bare-headed
    path = tmp_path / "site.png"
    Image.fromarray(img).save(path)
    return path


def test_hard_hat_rule_end_to_end(site_model, site, tmp_path):
    opts = {"detector_model": str(site_model), "segmenter": "classical"}
    res = engine.run(site, "workers without hard hats", plugin="safety", out_dir=tmp_path / "o", options=opts)
    assert res.plan.template == "safety:hard_hats" and not res.absent
    assert [(i.label, i.bbox) for i in res.instances] == [("worker without a hard hat", (180, 60, 200, 120))]
    steps = " ".join(s.text for s in res.plan.steps)
    assert "detector yolo-onnx (site.onnx, sha256 " in steps and "3 detection(s) (person 2, helmet 1)" in steps
    assert "head_fraction=0.25" in steps and "part_overlap=0.5" in steps  # thresholds recorded in the plan
    assert any("yolo-onnx detections" in c for c in res.caveats)
    worn = engine.segment(engine.open_scene(site), "workers wearing hard hats", plugin="safety", options=opts)
    assert worn.plan.template == "safety:hard_hats_worn"
    assert [i.bbox for i in worn.instances] == [(40, 20, 60, 80)]
    # tiles: the same single answer however the scene is cut
    tiled = engine.segment(engine.open_scene(site), "workers without hard hats", plugin="safety",
                           options={**opts, "tile_size": 64})  # fmt: skip
    assert [i.bbox for i in tiled.instances] == [(180, 60, 200, 120)]


def test_without_a_detector_the_rule_does_not_run(site_model, site, tmp_path):
    res = engine.segment(engine.open_scene(site), "workers without hard hats", plugin="safety")
    assert res.absent and not res.instances  # never "nobody found": absent, naming what would answer
    assert res.plan.template == "safety:hard_hats" and "-O detector_model=" in res.plan.reason
    assert res.plan.match["needs_detector"] == "safety:hard_hats"
    with pytest.raises(BackendUnavailable, match="answers from detections: no detector is configured"):
        engine.segment(engine.open_scene(site), "x", plugin="safety", options={"template": "hard_hats"})
    with pytest.raises(BackendUnavailable, match="needs the detector to have a machinery"):
        engine.segment(engine.open_scene(site), "people near machinery", plugin="safety",
                       options={"detector_model": str(site_model)})  # fmt: skip


def test_people_in_zone_end_to_end(site_model, site, tmp_path):
    zones = tmp_path / "z.json"
    zones.write_text(json.dumps({"zones": [{"name": "pit", "polygon": [[150, 100], [256, 100], [256, 128],
                                                                       [150, 128]]}]}))  # fmt: skip
    res = engine.segment(engine.open_scene(site), "people inside the restricted zone", plugin="safety",
                         options={"detector_model": str(site_model), "zones": str(zones), "segmenter": "classical"})
    assert res.plan.template == "safety:people_in_zone"
    assert [i.bbox for i in res.instances] == [(180, 60, 200, 120)]  # worker B's feet (y 120) are in the pit


def test_detect_ahead_batches_frames_and_the_rules_reuse_them(site_model, site, monkeypatch):
    from rscore.detectors import get_detector
    from rscore_safety import detections as dm

    opts = {"detector_model": str(site_model), "detector_batch": 2, "segmenter": "classical"}
    detector = get_detector(opts)
    frame = np.asarray(Image.open(site).convert("RGB"))
    frames = [(None, {"fps": 1}, None)] + [(i, float(i), np.roll(frame, i, axis=1)) for i in range(5)]
    calls = []
    real = detector.detect_batch
    monkeypatch.setattr(detector, "detect_batch", lambda imgs, phrases=None: calls.append(len(imgs)) or real(imgs))
    out = list(dm.detect_ahead(iter(frames), opts))
    assert [f[0] for f in out] == [None, 0, 1, 2, 3, 4] and calls == [2, 2, 1]
    monkeypatch.setattr(detector, "detect", lambda *a, **k: pytest.fail("detections were not reused"))
    from rscore.types import ArraySource, Scene

    scene = Scene(ArraySource(np.moveaxis(out[3][2], -1, 0).copy()), "image", ("red", "green", "blue"))
    res = engine.segment(scene, "workers without hard hats", plugin="safety", options=opts)
    assert [i.bbox for i in res.instances] == [(182, 60, 202, 120)]  # frame 2: shifted right by 2 px
    assert list(dm.detect_ahead(iter(frames[:2]), {})) == frames[:2]  # no detector: passed through untouched


def test_workers_at_height_on_a_scaffold():
    from rscore_safety.detections import at_height

    scaffold = det("Scaffolding", (50, 20, 300, 400))
    up = Detection("person", 0.9, (100, 100, 140, 200))  # feet 200 px = 2 heights above the base (y 400)
    down = Detection("person", 0.9, (200, 310, 240, 390))  # feet 10 px = 0.125 heights above the base
    beside = Detection("person", 0.9, (400, 100, 440, 200))  # outside the scaffold's columns
    hits = at_height([scaffold, up, down, beside], OPTS)
    assert [h.box for h in hits] == [up.box] and "2.0 person heights above the base of the Scaffolding" in hits[0].why
    assert len(at_height([scaffold, up, down], RuleOptions(height_above=0.1))) == 2
    assert at_height([up, down], OPTS) == []  # no scaffold detected: nobody is "at height"
    assert role_of("scaffolding") == "scaffold"


def test_vests_worn_is_the_positive_of_the_hivis_rule(site_model, tmp_path):
    """"workers wearing hi-vis": the person boxes with a vest box in their torso band, not the bare one."""
    from rscore.detectors.testing import COLOURS

    img = np.full((128, 256, 3), 114, np.uint8)
    img[20:110, 40:64] = COLOURS[0]  # worker A (x 40-64, y 20-110) ...
    img[45:75, 42:62] = COLOURS[2]  # ... with a vest on the torso (rows 45..75 of a 90 px body)
    img[20:110, 180:204] = COLOURS[0]  # worker B, no vest
    img[100:116, 120:136] = COLOURS[2]  # a vest lying on the ground, on nobody
    Image.fromarray(img).save(tmp_path / "vests.png")
    opts = {"detector": str(site_model), "segmenter": "classical"}
    res = engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers wearing hi-vis", plugin="safety",
                         options=opts)  # fmt: skip
    assert res.plan.template == "safety:vests_worn" and not res.absent
    assert [(i.label, i.bbox) for i in res.instances] == [("worker wearing hi-vis", (40, 20, 64, 110))]
    steps = " ".join(s.text for s in res.plan.steps)
    assert "rule 'vests_worn'" in steps and "torso_top=" in steps
    assert any("a person or vest the detector misses is not counted" in c for c in res.caveats)
    # its negative answers the other worker
    bare = engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers without vests", plugin="safety",
                          options=opts)  # fmt: skip
    assert bare.plan.template == "safety:no_vests" and [i.bbox for i in bare.instances] == [(180, 20, 204, 110)]
    # without a detector, a still image has no person cue: nothing, saying what would answer (not an error)
    still = engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers wearing hi-vis", plugin="safety")
    assert still.plan.template == "safety:vests_worn" and still.absent and not still.instances
    assert any("needs a person cue" in s.text and "--detector" in s.text for s in still.plan.steps)


def test_vests_worn_with_a_person_only_detector_reads_the_torso_colour(tmp_path):
    """A COCO-style model (people, no vest class): "workers wearing hi-vis" = person boxes whose torso band is hi-vis
    coloured (the colour rule); a hi-vis patch on nobody and a worker without one are not answered; the negative
    ("without vests") still refuses, rather than call every dim vest missing."""
    from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx

    model = save_pattern_yolo_onnx(tmp_path / "coco.onnx", ("car", "person"))  # people are green (COLOURS[1])
    img = np.full((128, 256, 3), 114, np.uint8)
    img[20:110, 40:64] = COLOURS[1]  # worker A (x 40-64, y 20-110) ...
    img[45:75, 42:62] = (200, 255, 40)  # ... in a fluorescent yellow-green vest (600 px)
    img[20:110, 180:204] = COLOURS[1]  # worker B, no vest
    img[100:116, 110:150] = (200, 255, 40)  # a hi-vis sheet on the ground, on nobody
    Image.fromarray(img).save(tmp_path / "vests.png")
    opts = {"detector": str(model), "segmenter": "classical"}
    res = engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers wearing hi-vis", plugin="safety",
                         options=opts)  # fmt: skip
    assert res.plan.template == "safety:vests_worn" and not res.absent
    assert [(i.label, i.bbox) for i in res.instances] == [("worker wearing hi-vis", (40, 20, 64, 110))]
    steps = " ".join(s.text for s in res.plan.steps)
    share = re.search(r"hi-vis colour covers (\d+)% of the torso band", steps)
    assert "has no vest class" in steps and share and 40 <= int(share.group(1)) <= 55  # 600 px of a ~1250 px band
    assert any("the detector has no vest class" in c for c in res.caveats)
    # the share is a declared threshold: above A's, nobody
    strict = engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers wearing hi-vis", plugin="safety",
                            options={**opts, "rules_vest_colour_share": 0.5})  # fmt: skip
    assert not strict.instances
    with pytest.raises(BackendUnavailable, match="needs the detector to have a vest"):
        engine.segment(engine.open_scene(tmp_path / "vests.png"), "workers without vests", plugin="safety",
                       options=opts)  # fmt: skip


def test_every_detection_template_labels_its_instances_with_its_own_label(tmp_path):
    """The instances of a template answered from detections carry that template's label ("worker wearing hi-vis",
    not the rule's "worker with a vest"), as a mask program's instances do: a compliance report matches track labels
    to its checks by label. One scene where every rule finds someone: worker A (hard hat, vest), worker B (bare, in
    the zone), worker C (bare, up on a scaffold)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx
    from rscore.plugins import get_registry

    model = save_pattern_yolo_onnx(tmp_path / "site4.onnx", ("person", "helmet", "vest", "scaffold"))
    img = np.full((256, 256, 3), 114, np.uint8)
    img[20:80, 20:44] = COLOURS[0]  # A: 60 px tall
    img[16:32, 24:40] = COLOURS[1]  # ... hard hat on the head, sticking out 4 px over it
    img[35:60, 22:42] = COLOURS[2]  # ... vest on the torso
    img[20:80, 120:144] = COLOURS[0]  # B: bare
    img[150:210, 170:230] = COLOURS[3]  # a scaffold, base at y 210 ...
    img[160:190, 190:206] = COLOURS[0]  # ... C on it: feet 20 px = 0.67 of C's height above the base
    Image.fromarray(img).save(tmp_path / "all.png")
    zones = tmp_path / "z.json"
    zones.write_text(json.dumps({"zones": [{"name": "pit", "polygon": [[100, 60], [160, 60], [160, 100],
                                                                       [100, 100]]}]}))  # fmt: skip
    a, b, c = (20, 20, 44, 80), (120, 20, 144, 80), (190, 160, 206, 190)
    expected = {"workers": [a, b, c], "hard_hats_worn": [a], "hard_hats": [b, c], "vests_worn": [a],
                "no_vests": [b, c], "near_machinery": [c], "at_height": [c], "people_in_zone": [b]}  # fmt: skip
    templates = {t.name: t for t in get_registry().templates_for("safety") if t.plugin == "safety"}
    answered = {n for n, t in templates.items() if getattr(t.program, "detector_phrases", None) is not None}
    assert set(expected) == answered  # every template that reads detections is checked
    scene = engine.open_scene(tmp_path / "all.png")
    base = {"detector_model": str(model), "segmenter": "classical", "zones": str(zones)}
    for name, boxes in expected.items():
        extra = {"rules_extra_classes": "machinery:scaffold"} if name == "near_machinery" else {}  # C is next to it
        res = engine.segment(scene, "x", plugin="safety", options={**base, **extra, "template": name})
        assert res.plan.template == f"safety:{name}" and not res.absent, name
        assert sorted(i.bbox for i in res.instances) == sorted(boxes), name
        assert {i.label for i in res.instances} == {templates[name].label}, name
        steps = " ".join(s.text for s in res.plan.steps)
        assert f"{templates[name].label} at (" in steps, name  # the plan names each hit as the instances do


def test_at_height_with_a_person_only_detector_takes_the_scaffold_from_structure_cues(tmp_path, monkeypatch):
    """A COCO-style model has people but no scaffold class: the at-height rule takes the scaffold from the offline
    lattice cues (standards and ledgers), its base as the ground, with the confidence withheld."""
    import cv2

    from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx

    model = save_pattern_yolo_onnx(tmp_path / "coco.onnx", ("car", "person"))  # people are green (COLOURS[1])
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(170, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
    for x in (60, 120, 180, 240):  # a scaffold face: 4 standards (y 30-220), 3 ledgers
        cv2.rectangle(img, (x, 30), (x + 4, 220), (70, 70, 75), -1)
    for y in (60, 120, 180):
        cv2.rectangle(img, (55, y), (250, y + 4), (70, 70, 75), -1)
    img[80:120, 135:155] = COLOURS[1]  # worker A standing on the middle ledger (feet at y 120)
    img[185:225, 275:295] = COLOURS[1]  # worker B on the ground beside the scaffold
    Image.fromarray(img).save(tmp_path / "face.png")
    opts = {"detector": str(model), "segmenter": "classical"}
    res = engine.segment(engine.open_scene(tmp_path / "face.png"), "people working at height", plugin="safety",
                         options=opts)  # fmt: skip
    assert res.plan.template == "safety:at_height"
    assert [i.bbox for i in res.instances] == [(135, 80, 155, 120)]
    steps = " ".join(s.text for s in res.plan.steps)
    assert "no scaffold class: 1 scaffold lattice(s)" in steps and "person heights above the base" in steps
    assert res.confidence is None and any("window grids" in c for c in res.caveats)
    # tiled (a 4K frame is 8 tiles at the default size): the same answer, the whole picture's lattice found once
    from rscore_safety import detections, scaffold

    detections._LATTICES.clear()
    calls = []
    original = scaffold.find_lattices
    monkeypatch.setattr(scaffold, "find_lattices", lambda rgb: calls.append(rgb.shape) or original(rgb))
    tiled = engine.segment(engine.open_scene(tmp_path / "face.png"), "people working at height", plugin="safety",
                           options={**opts, "tile_size": 128})  # fmt: skip
    assert [i.bbox for i in tiled.instances] == [(135, 80, 155, 120)] and tiled.confidence is None
    assert calls == [(240, 320, 3)]
