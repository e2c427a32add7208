"""Safety rules over time (masks in zones -> findings) and the compliance report (JSON + HTML with thumbnails)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rscore.errors import OptionError
from rscore.testing import shared_data_dir
from rscore_safety.report import SafetyReportWriter, write_report
from rscore_safety.rules import (
    DEFAULT_RULES,
    Rule,
    SafetyMonitor,
    analyse_video,
    group_parts,
    label_rule,
)
from rscore_safety.zones import load_zones

WORKER = "construction/intel_worker-zone-detection_from_gif.mp4"
VTEST = "construction/cctv_generic/opencv_vtest.avi"


def real(name: str) -> Path:
    data = shared_data_dir()
    path = data / name if data else None
    if path is None or not path.exists():
        pytest.skip(f"shared data {name} not available")
    return path


@pytest.fixture
def zones_file(tmp_path):
    def make(name: str, polygon: list[list[float]]) -> Path:
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps({"zones": [{"name": name, "polygon": polygon}]}))
        return path

    return make


def person(x: int) -> np.ndarray:
    """A 'moving person' mask on a 100x120 frame: torso at columns x..x+12, legs below with a gap (as motion masks
    split walkers)."""
    m = np.zeros((100, 120), bool)
    m[20:45, x : x + 12] = True  # torso
    m[50:70, x + 1 : x + 5] = True  # left leg
    m[50:70, x + 7 : x + 11] = True  # right leg
    return m


def test_episodes_gaps_durations_and_the_message(zones_file):
    zones = load_zones(zones_file("crane swing", [[10, 10], [60, 10], [60, 80], [10, 80]]))
    rule = DEFAULT_RULES[0]  # a moving person without hi-vis
    monitor = SafetyMonitor(zones, [rule], camera="cam-1")
    empty = np.zeros((100, 120), bool)
    present = [*range(0, 31), *range(35, 41), *range(61, 71)]  # gap of 0.4 s (merged), then 2 s (split)
    for i in range(80):
        motion = person(20) if i in present else empty
        monitor.update(i, i / 10, {"motion": motion, "hivis": empty})
    findings = monitor.finish()
    assert len(findings) == 1  # frames 61-70 last 0.9 s < 2 s
    f = findings[0]
    assert (f.start_frame, f.end_frame, f.frames) == (0, 40, 37)
    assert f.duration_s == pytest.approx(4.0) and f.severity == "violation"
    assert f.message == "person in zone 'crane swing' without hi-vis for 4 s, frames 0-40, camera cam-1"


def test_the_without_signal_and_the_zone_decide(zones_file):
    zones = load_zones(zones_file("bay", [[10, 10], [60, 10], [60, 80], [10, 80]]))
    vest = np.zeros((100, 120), bool)
    vest[25:40, 22:30] = True  # on the torso of person(20)
    monitor = SafetyMonitor(zones, DEFAULT_RULES, camera="c")
    for i in range(40):
        monitor.update(i, i / 10, {"motion": person(20), "hivis": vest})
    rules = {f.rule for f in monitor.finish()}
    assert rules == {"hivis_in_zone", "motion_in_zone"}  # wearing hi-vis: no violation
    monitor = SafetyMonitor(zones, DEFAULT_RULES, camera="c")
    for i in range(40):  # the same person outside the zone
        monitor.update(i, i / 10, {"motion": person(90), "hivis": np.zeros((100, 120), bool)})
    assert monitor.finish() == []


def test_group_parts_joins_a_walkers_pieces():
    m = person(20) | person(80)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    assert n == 7
    groups = group_parts(stats)
    assert len({int(g) for g in groups[1:]}) == 2  # two people, each torso + two legs


def test_rules_are_checked(zones_file):
    zones = load_zones(zones_file("z", [[0, 0], [5, 0], [5, 5]]))
    with pytest.raises(OptionError, match="names zone"):
        SafetyMonitor(zones, [Rule("r", "motion", "m", zones=("nowhere",))])
    with pytest.raises(OptionError, match="severity"):
        Rule("r", "motion", "m", severity="catastrophic")
    assert label_rule("worker without a hard hat").severity == "violation"
    assert label_rule("missing guardrail or toe board").severity == "violation"
    assert label_rule("hi-vis clothing").severity == "warning"
    with pytest.raises(OptionError, match="time order"):
        monitor = SafetyMonitor(zones, [label_rule("worker without a hard hat")])
        monitor.update(5, 1.0, {"worker without a hard hat": np.zeros((8, 8), bool)})
        monitor.update(6, 0.5, {"worker without a hard hat": np.zeros((8, 8), bool)})


# ------------------------------------------------------------------------------------------------- real clips
@pytest.mark.shared_data
def test_worker_in_hivis_crossing_a_zone_is_compliant(zones_file, tmp_path):
    zones = zones_file("left bay", [[0, 0], [200, 0], [200, 270], [0, 270]])
    report = analyse_video(real(WORKER), zones, camera="intel")
    by_rule = {f.rule: f for f in report.findings}
    assert report.compliant and "no_hivis_in_zone" not in by_rule
    seen = by_rule["hivis_in_zone"]
    # the worker walks in from the right: his vest reaches the bay after a few frames and stays to the end
    assert 3 <= seen.start_frame <= 20 and seen.end_frame == 70 and seen.zone == "left bay"
    assert "motion_in_zone" in by_rule and report.frames == 71
    written = write_report(report, tmp_path / "report")
    doc = json.loads(written["safety_findings"].read_text())
    assert doc["compliant"] is True and doc["summary"]["violations"] == 0
    # offline, the hard-hat, scaffold and guardrail checks need a VLM or a detector: listed as not run, and the
    # verdict never says plain "compliant" for them
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["hivis"]["state"] == "ran" and checks["restricted_zone"]["state"] == "ran"
    assert checks["hard_hats"]["state"] == "could not run" and "VLM" in checks["hard_hats"]["why"]
    assert doc["complete"] is False and "scaffold_bracing" in doc["summary"]["checks_not_run"]
    page = written["safety_report"].read_text()
    assert "NO VIOLATION IN THE CHECKS THAT RAN" in page and ">COMPLIANT<" not in page
    assert 'src="thumbs/finding-001.jpg"' in page
    thumb = cv2.imread(str(tmp_path / "report" / doc["findings"][0]["thumbnail"]))
    assert thumb is not None and max(thumb.shape[:2]) <= 360


@pytest.mark.shared_data
def test_pedestrians_on_the_road_without_hivis(zones_file, tmp_path):
    road = zones_file("road", [[0, 190], [768, 130], [768, 480], [340, 330], [0, 300]])
    lawn = zones_file("lawn", [[0, 330], [330, 345], [420, 576], [0, 576]])
    report = analyse_video(real(VTEST), road, camera="pets", options={"max_frames": 80})
    violations = [f for f in report.findings if f.rule == "no_hivis_in_zone"]
    assert not report.compliant and len(violations) == 1
    assert violations[0].message.startswith("person in zone 'road' without hi-vis for ")
    assert violations[0].thumbnail and violations[0].thumbnail[:2] == b"\xff\xd8"  # a JPEG
    quiet = analyse_video(real(VTEST), lawn, camera="pets", options={"max_frames": 80})
    assert not [f for f in quiet.findings if f.rule != "hivis_in_zone"]  # nobody walks on the lawn


@pytest.mark.shared_data
def test_report_writer_after_a_video_run(zones_file, tmp_path):
    from rscore.plugins import get_registry
    from rscore.video import run_video, video_writers

    zones = zones_file("left bay", [[0, 0], [200, 0], [200, 270], [0, 270]])
    reg = get_registry()
    if "safety" not in reg.plugin_names:
        pytest.skip("rscore-safety is not installed")
    reg.writers.extend(("core", w) for w in video_writers())
    reg.writers.append(("safety", SafetyReportWriter()))
    res = run_video(real(WORKER), "workers in hi-vis vests", plugin="safety", registry=reg,
                    out_dir=tmp_path / "o", options={"zones": str(zones), "camera": "gate-2", "overlay": False})
    assert {"safety_report", "safety_findings", "masks"} <= set(res.outputs)
    doc = json.loads((tmp_path / "o" / res.outputs["safety_findings"]).read_text())
    rules = {f["rule"] for f in doc["findings"]}
    assert "hi-vis_clothing_in_zone" in rules  # the run's own track label became a rule subject
    assert doc["compliant"] is True  # hi-vis clothing in the bay is worth a warning, not a violation
    assert all(f["camera"] == "gate-2" for f in doc["findings"])
    assert "overlay_video" not in res.outputs


@pytest.mark.shared_data
def test_stream_results_replay_their_labels(zones_file):
    from rscore.video import segment_video
    from rscore.video.mjpeg import MjpegServer, jpeg_frames_of

    zones = zones_file("left bay", [[0, 0], [200, 0], [200, 270], [0, 270]])
    with MjpegServer(jpeg_frames_of(real(WORKER)), fps=20) as server:  # real time: 71 frames in 3.5 s
        res = segment_video(server.url, "workers in hi-vis vests", plugin="safety",
                            options={"reconnect_attempts": 0, "overlay": False})
    # the person cue of a live stream needs 8 analysed frames of background first (detection every 5 frames), so
    # the worker's track covers the clip's last ~1.8 s: a 1 s rule on its label
    from rscore_safety.rules import label_rule

    assert any("cannot be re-read" in w for w in analyse_video(res.source, zones, result=res).warnings)
    report = analyse_video(res.source, zones, result=res, rules=[label_rule("hi-vis clothing", min_duration_s=1.0)])
    assert [f.rule for f in report.findings] == ["hi-vis_clothing_in_zone"]
    assert report.findings[0].start_wall_time is not None and report.findings[0].thumbnail is None
