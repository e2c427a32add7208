"""scaffold-compliance with a detector (-O detector_model=PATH): the detection rules per sampled frame, and the
checks that cannot run listed with their reason. Plain logic through ``analyse_clip.fn`` (no Prefect server)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("prefect")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from rscore.detectors.testing import COLOURS, save_pattern_yolo_onnx  # noqa: E402
from rscore_flows import scaffold_compliance as sc  # noqa: E402


def _clip(path: Path, bare_frames: range, n: int = 10) -> Path:
    """A lossless 160 x 120 clip: worker A with a helmet throughout, worker B (no helmet) during ``bare_frames``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), 114, np.uint8)
        img[20:56, 20:36] = COLOURS[0]
        img[20:28, 24:32] = COLOURS[1]
        if i in bare_frames:
            img[60:96, 110:126] = COLOURS[0]
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _job(clip: Path, templates: tuple[str, ...], options: dict) -> sc.ClipJob:
    return sc.ClipJob(str(clip), "cam", clip.stem, templates, None, None, 10.0, 1, "d", (), tuple(options.items()))


def test_detection_rules_fire_on_the_frames_with_a_bare_head(tmp_path):
    model = save_pattern_yolo_onnx(tmp_path / "site.onnx", ("person", "helmet", "vest"))
    clip = _clip(tmp_path / "gate.avi", range(3, 7))
    opts = {"detector_model": str(model), "segmenter": "classical"}
    found = sc.analyse_clip.fn(_job(clip, ("hard_hats", "workers", "near_machinery"), opts))
    assert found.error is None and found.sampled == 10
    assert [f["frame"] for f in found.fired["hard_hats"]] == [3, 4, 5, 6]
    assert all(f["instances"] == 1 for f in found.fired["hard_hats"])
    assert [f["instances"] for f in found.fired["workers"]] == [1, 1, 1, 2, 2, 2, 2, 1, 1, 1]
    assert "near_machinery" not in found.fired
    assert "needs the detector to have a machinery" in found.skipped["near_machinery"]
    # the compliance report's representative frame: the bare-headed worker B (x 110..126, y 60..96) boxed
    ev = found.evidence["hard_hats"]
    assert ev["frame"] in (3, 4, 5, 6) and ev["area_px"] == max(f["area_px"] for f in found.fired["hard_hats"])
    (box,) = ev["boxes"]
    x0, y0, x1, y1 = box["bbox"]
    assert abs(x0 - 110) <= 2 and abs(x1 - 126) <= 2 and abs(y0 - 60) <= 2 and abs(y1 - 96) <= 2, box
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(ev["png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert img.shape == (120, 160, 3)
    assert tuple(img[(y0 + y1) // 2, x0]) == box["colour"] and tuple(img[(y0 + y1) // 2, x1 - 1]) == box["colour"]
    assert tuple(img[38, 28]) != box["colour"]  # worker A (helmet on) is not boxed as a violation


def test_without_a_detector_the_rules_are_listed_as_not_run(tmp_path):
    clip = _clip(tmp_path / "gate.avi", range(0), n=3)
    found = sc.analyse_clip.fn(_job(clip, ("hivis", "hard_hats"), {}))
    assert found.error is None and "hivis" in found.fired
    assert "no detector is configured" in found.skipped["hard_hats"]


def _scaffold_frame(with_ledgers: bool = True) -> np.ndarray:
    """A 240 x 320 view of a scaffold face: 4 standards (x 60, 120, 180, 240; 5 px tubes), 3 ledgers (y 60, 120,
    180) and 2 braces, dark on a light noisy wall."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(170, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
    for x in (60, 120, 180, 240):
        cv2.rectangle(img, (x, 30), (x + 4, 220), (70, 70, 75), -1)
    for y in (60, 120, 180) if with_ledgers else ():
        cv2.rectangle(img, (55, y), (250, y + 4), (70, 70, 75), -1)
    cv2.line(img, (64, 180), (118, 122), (70, 70, 75), 4)
    cv2.line(img, (184, 180), (238, 122), (70, 70, 75), 4)
    return img


def test_scaffold_lattice_cues_find_the_members_and_not_posts_or_noise():
    from rscore_safety.scaffold import find_lattices, lattice_mask

    img = _scaffold_frame()
    (lat,), counts = find_lattices(img)
    assert (len(lat.standards), len(lat.ledgers), len(lat.braces)) == (4, 3, 4)  # a brace's two edges: 2 segments
    assert lat.cells == 18  # 6 pairs of standards x 3 pairs of ledgers, every one a bay
    truth = (_scaffold_frame() < 100).all(axis=2)  # the drawn members (dark)
    m = lattice_mask(lat, img.shape)
    assert (m & truth).sum() / truth.sum() > 0.9 and (m & truth).sum() / m.sum() > 0.8  # recall, precision
    assert find_lattices(_scaffold_frame(with_ledgers=False))[0] == []  # posts and diagonals, no ledgers
    noise = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert find_lattices(noise)[0] == []


def _still_clip(path: Path, frame: np.ndarray, n: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (frame.shape[1], frame.shape[0]))
    for _ in range(n):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_scaffold_check_offline_cues_with_confidence_withheld(tmp_path):
    clip = _still_clip(tmp_path / "face.avi", _scaffold_frame())
    found = sc.analyse_clip.fn(_job(clip, ("scaffold",), {}))
    assert found.error is None and "scaffold" not in found.skipped
    assert [f["frame"] for f in found.fired["scaffold"]] == [0, 1, 2]
    assert all(f["instances"] == 1 for f in found.fired["scaffold"])
    assert found.confidence["scaffold"] is None
    assert any(c.startswith("confidence withheld") and "window grids" in c for c in found.caveats["scaffold"])
    assert any("offline structure cues" in c for c in found.caveats["scaffold"])
    ev = found.evidence["scaffold"]  # the representative frame: the lattice's members tinted, its box drawn
    (box,) = ev["boxes"]
    x0, y0, x1, y1 = box["bbox"]
    assert 55 <= x0 <= 60 and 30 <= y0 <= 31 and 245 <= x1 <= 251 and 220 <= y1 <= 222, box  # standards' extent
    assert "4 standards, 3 ledgers" in box["label"]
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(ev["png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    frame = _scaffold_frame()
    assert img.shape == frame.shape
    assert np.abs(img[100, 61:64].astype(int) - frame[100, 61:64]).sum() > 30  # a standard: its mask tinted
    assert np.abs(img[90, 85:95].astype(int) - frame[90, 85:95]).max() <= 8  # inside a bay: left as it was
    # nothing scaffold-like: the check ran and found nothing (not "could not run")
    plain = _still_clip(tmp_path / "plain.avi", np.full((120, 160, 3), 150, np.uint8))
    none = sc.analyse_clip.fn(_job(plain, ("scaffold",), {}))
    assert none.fired["scaffold"] == () and "scaffold" not in none.skipped


def test_scaffold_check_uses_a_detectors_scaffold_class(tmp_path):
    model = save_pattern_yolo_onnx(tmp_path / "site.onnx", ("person", "scaffold"))
    img = np.full((120, 160, 3), 114, np.uint8)
    img[30:70, 60:90] = COLOURS[1]  # a "scaffold" (class 1) box
    clip = _still_clip(tmp_path / "s.avi", img, n=2)
    found = sc.analyse_clip.fn(_job(clip, ("scaffold",), {"detector_model": str(model)}))
    assert [f["area_px"] for f in found.fired["scaffold"]] == [1200, 1200]
    assert any("detector yolo-onnx" in c for c in found.caveats["scaffold"])
    assert not any(c.startswith("confidence withheld") for c in found.caveats["scaffold"])


def test_a_vlm_reasoner_answers_the_checks_without_an_offline_program(tmp_path, monkeypatch):
    """-O reasoner=openai: scaffold (instead of its lattice cues) and guardrails are asked of the VLM on every sampled
    frame, over real HTTP to the loopback OpenAI-compatible test server, guided by each template's prompt."""
    import json

    from openai_stub_server import ScriptedOpenAIServer

    monkeypatch.delenv("RSCORE_OPENAI_API_KEY", raising=False)
    answer = json.dumps({"steps": ["a scaffold face"], "targets": [{"label": "scaffold", "box": [55, 30, 251, 221],
                                                                    "confidence": 0.8}]})  # fmt: skip
    clip = _still_clip(tmp_path / "face.avi", _scaffold_frame(), n=2)
    with ScriptedOpenAIServer([answer]) as srv:
        opts = {"reasoner": "openai", "endpoint": srv.url, "model": "test-vlm", "segmenter": "classical",
                "openai_backoff_s": 0.01, "timeout_s": 5}  # fmt: skip
        found = sc.analyse_clip.fn(_job(clip, ("scaffold", "guardrails"), opts))
    assert found.error is None and not found.skipped, found.skipped
    assert [f["frame"] for f in found.fired["scaffold"]] == [0, 1] == [f["frame"] for f in found.fired["guardrails"]]
    assert not any("offline structure cues" in c for c in found.caveats.get("scaffold", ()))
    prompts = [json.dumps(r.json["messages"]) for r in srv.chat_requests]
    assert len(prompts) == 4 and any("standards" in p for p in prompts) and any("toe board" in p for p in prompts)
    # with no reasoner the guardrail check cannot run offline, and says so
    offline = sc.analyse_clip.fn(_job(clip, ("guardrails",), {}))
    assert "VLM" in offline.skipped["guardrails"]


def test_check_states_know_a_detector_can_answer_the_rules_not_asked_for():
    from rscore.engine import default_registry

    reg = default_registry()
    clip = sc.ClipFindings("x.avi", "cam", "x", sampled=1, fired={"workers": ()})
    offline = {c["check"]: c for c in sc.check_states(reg, ("workers",), [clip])}
    assert offline["hard_hats_worn"]["state"] == "could not run" and "detector" in offline["hard_hats_worn"]["why"]
    with_model = {c["check"]: c for c in sc.check_states(reg, ("workers",), [clip], {"detector_model": "m.onnx"})}
    assert with_model["hard_hats_worn"]["state"] == "not requested"
    assert with_model["guardrails"]["state"] == "could not run"  # no detection program: still a VLM question
    assert "vests_worn" in sc.DETECTOR_TEMPLATES  # a person-only (COCO) model answers it from the torso's colour


def test_a_ladder_is_not_a_scaffold_for_the_scaffold_check(tmp_path):
    from rscore_safety.scaffold import scaffold_check

    model = save_pattern_yolo_onnx(tmp_path / "ladders.onnx", ("person", "ladder"))
    img = np.full((120, 160, 3), 114, np.uint8)
    img[30:70, 60:90] = COLOURS[1]  # a "ladder" box
    mask, items, how, caveat = scaffold_check(img, {"detector_model": str(model)})
    assert not mask.any() and "offline structure cues" in how and caveat  # no scaffold class: the lattice cues
