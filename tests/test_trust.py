"""How far to trust an answer, end to end: routing confidence and superset caveats reach the Result and
result.json; without --plugin the templates come from the plugin whose reader opened the input."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from demo_plugin import _bright, write_demo

from rscore import engine, hookimpl
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import Template
from rscore.types import ArraySource, Scene

OTHER = types.SimpleNamespace(
    rscore_query_templates=hookimpl(lambda: [
        Template("moonlight", "moonlit area", "bright areas lit by the moon", ("bright moonlit areas",),
                 program=_bright, kinds=("image",), includes=("the full moon disc",),
                 excludes=("street lamps",)),
    ])
)  # fmt: skip


@pytest.fixture
def registry():
    import demo_plugin

    return get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin), ("other", OTHER)]))


def scene_of(arr: np.ndarray, reader: str = "demo") -> Scene:
    return Scene(ArraySource(arr), "image", ("gray",), reader=reader)


def test_confidence_is_in_the_result_and_result_json(registry, disc_image, tmp_path):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "bright spots", plugin="demo", registry=registry)
    assert not res.absent and res.plan.template == "demo:bright"
    assert 0 < res.confidence < 1 and res.confidence == res.plan.match["confidence"]
    engine.write_outputs(scene_of(img), res, tmp_path / "out", registry=registry)
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["confidence"] == res.confidence
    nothing = engine.segment(scene_of(img), "giraffes", plugin="demo", registry=registry)
    assert nothing.absent and nothing.confidence is None and nothing.caveats == ()


def test_a_superset_answer_carries_a_machine_readable_caveat(registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "the full moon disc", plugin="other", registry=registry)
    assert not res.absent and res.plan.template == "other:moonlight"
    assert res.plan.match["specificity"] == {"decision": "superset", "text": "the full moon disc"}
    assert any(c.startswith("superset:") and "the full moon disc" in c for c in res.caveats)
    plain = engine.segment(scene_of(img), "bright moonlit areas", plugin="other", registry=registry)
    assert not any(c.startswith("superset:") for c in plain.caveats)
    assert plain.confidence > res.confidence or plain.plan.match["features"]["superset"] == 0
    excluded = engine.segment(scene_of(img), "street lamps", plugin="other", registry=registry)
    assert excluded.absent and "does not answer 'street lamps'" in excluded.plan.reason


def test_without_plugin_the_reader_chooses_the_templates(registry, disc_image, tmp_path):
    img, _ = disc_image
    path = write_demo(tmp_path / "disc.demo", img)
    scene = engine.open_scene(path, registry=registry)
    assert scene.reader == "demo"
    res = engine.segment(scene, "bright moonlit areas", registry=registry)
    # the demo reader opened it: only demo's templates compete, the other plugin's exact example does not
    assert all(a["template"].startswith("demo:") for a in res.plan.match["alternatives"])
    # and the plugin in use is demo, as with plugin="demo" (its hooks and writers), which the first step says
    assert res.plugin == "demo" and "its reader 'demo' having opened the input" in res.plan.steps[0].text
    pooled = engine.segment(scene_of(img, reader="image"), "bright moonlit areas", registry=registry)
    assert pooled.plan.template == "other:moonlight"  # a core reader: every plugin's templates
    assert pooled.plugin == "other" and pooled.plan.steps[0].text.startswith("plugin 'other' (no --plugin given)")


def test_plan_match_explains_the_decision(registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "bright spots", plugin="demo", registry=registry)
    m = res.plan.match
    assert {"score", "margin", "runner_up", "polarity", "specificity", "features", "confidence"} <= set(m)
    assert m["polarity"]["query"] == "plain"
    negated = engine.segment(scene_of(img), "areas that are not bright spots", plugin="demo", registry=registry)
    assert negated.absent and negated.plan.match["polarity"]["query"] == "negated"


def test_vlm_only_template_is_named_in_the_absent_reason(registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "the cat", plugin="demo", registry=registry)
    assert res.absent and res.plan.match["needs_vlm"] == "demo:vlm-only"
    assert "`vlm-only`" in res.plan.reason and "--reasoner" in res.plan.reason


def test_flow_reports_carry_confidence_and_caveats():
    from rscore_flows import landslide_risk_mapping as lrm
    from rscore_flows import scaffold_compliance as sc

    region = {"name": "r1", "status": "ok", "tiles": {"computed": 1, "reused": 0, "bad": 0}, "classes": {},
              "confidence": 0.83, "caveats": ["NDVI on raw digital numbers, not reflectance"]}  # fmt: skip
    md = lrm.render_report({"created": "today", "query": "landslides", "tile_size": 512, "batch_tiles": 2,
                            "task_runner": "thread", "status": "ok", "regions": [region]})  # fmt: skip
    assert "confidence 0.83" in md and "- NDVI on raw digital numbers, not reflectance" in md
    clip = sc.ClipFindings("a.mp4", "gate", "a", fired={"hivis": ()},
                           caveats={"hivis": ("colour rule: cones share these colours",)}, confidence={"hivis": 0.9})
    doc = {"stride": 1, "sample_fps": 1.0, "zones": None, "day": "today", "cameras": ["gate"], "templates": ["hivis"],
           "status": "ok", "clips": [clip.as_dict()]}  # fmt: skip
    assert "- hivis: colour rule: cones share these colours" in sc.render_report(doc)
