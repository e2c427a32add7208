"""The pipeline's stages as pieces, each tested on its own (#19): request, hooks, plan, execute, finish, stitch,
backends; and ``segment`` = preprocess -> ``answer`` (plan -> execute -> finish) -> postprocess, which is what the
video engine composes per frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rscore import engine
from rscore.engine.backends import backend, segmenter
from rscore.engine.execute import Execution, execute
from rscore.engine.finish import finish_result, provenance, redact, result_caveats
from rscore.engine.hooks import postprocess, preprocess
from rscore.engine.pipeline import answer
from rscore.engine.plan import Planned, answering_template, plan_scene
from rscore.engine.request import make_request
from rscore.engine.stitch import merge_across_tiles, piece_from_instance, stitch_pieces
from rscore.errors import BackendUnavailable, OptionError
from rscore.plugins import Registry
from rscore.sdk import BackendSpec
from rscore.tiling import TiledArray
from rscore.types import ArraySource, Instance, Plan, Scene, Step, Window


def scene_of(img, **kw):
    return Scene(ArraySource(img), "image", ("gray",), **kw)


def test_segment_is_preprocess_then_answer_then_postprocess(demo_registry, disc_image):
    img, _ = disc_image
    opts = {"demo_invert": True}
    request = make_request("bright spots", plugin="demo", options=opts, registry=demo_registry)
    scene = preprocess(demo_registry, "demo", scene_of(img), request)
    assert np.array_equal(scene.read()[0], 255 - img)
    composed = postprocess(demo_registry, "demo", answer(scene, request, registry=demo_registry), scene)
    whole = engine.segment(scene_of(img), "bright spots", plugin="demo", options=opts, registry=demo_registry)
    assert np.array_equal(composed.mask, whole.mask) and composed.mask.any()
    assert [s.text for s in composed.plan.steps] == [s.text for s in whole.plan.steps]
    assert composed.plan.steps[0].text == "preprocess: inverted grey levels"
    assert composed.classes == whole.classes == {"demo": {"instances": len(whole.instances)}}
    # answer runs no hooks: the same request on the original pixels segments the original bright spots
    bare = answer(scene_of(img), request, registry=demo_registry)
    assert "demo" not in bare.classes
    assert np.array_equal(bare.mask, img >= 128)


def test_answer_takes_a_plan_made_before_instead_of_planning(demo_registry, disc_image):
    img, _ = disc_image
    # the query alone would be absent (a VLM-only template); the plan given is the bright template's
    request = make_request("the cat", plugin="demo", options={}, registry=demo_registry)
    assert answer(scene_of(img), request, registry=demo_registry).absent
    given = Plan(steps=(Step("planned once for the whole run"),), template="demo:bright", reasoner="analytic")
    res = answer(scene_of(img), request, registry=demo_registry, plan=given)
    assert not res.absent and res.plan.template == "demo:bright"
    assert res.plan.steps[0].text == "planned once for the whole run"
    assert np.array_equal(res.mask, img >= 128)


def test_plan_stage_names_the_answering_template(demo_registry, disc_image):
    img, _ = disc_image
    request = make_request("bright spots", plugin="demo", options={}, registry=demo_registry)
    timings: dict[str, float] = {}
    planned = plan_scene(scene_of(img), request, demo_registry, timings=timings)
    assert planned.template is not None and planned.template.qualified_name == "demo:bright"
    assert planned.tiled is None and "reason_s" in timings
    assert answering_template(Plan(absent=True, reason="no"), planned.templates, demo_registry.operators) is None


def test_execute_runs_nothing_for_an_absent_plan(demo_registry, disc_image):
    img, _ = disc_image
    request = make_request("the cat", plugin="demo", options={}, registry=demo_registry)
    planned = Planned(Plan(absent=True, reason="no"), (), None)
    done = execute(scene_of(img), request, planned, demo_registry)
    assert done.mask is None and done.instances == [] and done.segmenter_name is None


def test_finish_marks_an_empty_answer_absent_and_clears_trust(demo_registry):
    request = make_request("bright spots", plugin="demo", options={}, registry=demo_registry)
    template = dataclasses.replace(
        next(t for t in demo_registry.templates if t.qualified_name == "demo:bright"), caveats=("declared limit",)
    )
    plan = Plan(template="demo:bright", reasoner="analytic", match={"confidence": 0.8, "caveats": ["superset"]})
    planned = Planned(plan, (template,), template)
    scene = scene_of(np.zeros((20, 30), np.uint8))
    mask = np.zeros((20, 30), bool)
    empty = finish_result(scene, request, planned, Execution(plan, mask=mask.copy(), caveats=["met"]), demo_registry)
    assert empty.absent and "found no pixels" in empty.plan.reason
    assert empty.caveats == () and empty.confidence is None
    mask[5:10, 5:15] = True
    found = finish_result(scene, request, planned, Execution(plan, mask=mask, caveats=["met", "superset"]),
                          demo_registry)
    assert not found.absent and found.confidence == 0.8
    assert found.caveats == ("declared limit", "superset", "met")
    assert [i.area_px for i in found.instances] == [50]  # connected components of the template's mask
    assert result_caveats(Plan(absent=True, match={"caveats": ["x"]}), template) == ["x"]


def test_provenance_strips_credentials(demo_registry):
    scene = scene_of(np.zeros((4, 4), np.uint8))
    plan = Plan(reasoner="openai", match={"endpoint": "https://user:secret@llm.example/v1"})
    prov = provenance(demo_registry, "demo", scene, plan, None,
                      {"endpoint": "http://me:pw@host:8000/v1", "model": "m", "reasoner": "analytic"})
    assert prov["options"] == {"endpoint": "http://***@host:8000/v1", "model": "m"}  # defaults are left out
    assert prov["endpoint"] == "https://***@llm.example/v1"
    assert redact("https://host/v1?x=a@b") == "https://host/v1?x=a@b"  # an @ after the host is not a credential


def test_backend_lookup_names_what_is_missing_and_auto_falls_back(demo_registry):
    reg = Registry(demo_registry.pm)
    reg.backends = dict(demo_registry.backends)
    reg.backends[("segmenter", "sam2")] = BackendSpec(
        "segmenter", "sam2", lambda o: object(), "needs a module that is not here", modules=("no_such_module_h19",)
    )
    with pytest.raises(BackendUnavailable, match="no_such_module_h19"):
        backend(reg, "segmenter", "sam2", {})
    name, seg = segmenter(reg, "auto", {})
    assert name == "classical" and hasattr(seg, "segment")


def test_stitched_union_on_disk_equals_the_union_in_memory(monkeypatch):
    rng = np.random.default_rng(3)
    windows = [Window(0, 0, 64, 64), Window(0, 48, 64, 64), Window(48, 0, 64, 64), Window(48, 48, 64, 64)]
    pieces = []
    for k, win in enumerate(windows):
        for _ in range(3):
            m = np.zeros((64, 64), bool)
            y, x = rng.integers(0, 56, 2)
            m[y:y + 8 + k, x:x + 6] = True
            piece = piece_from_instance(Instance("blob", 0.5, (0, 0, 0, 0), 0, mask=m), k, win)
            assert piece is not None
            pieces.append(piece)
    merged, _ = merge_across_tiles(pieces, windows, 0.5)
    scene = scene_of(np.zeros((112, 112), np.uint8))
    insts, union, warnings = stitch_pieces(scene, merged, 256 << 20, 32)
    assert isinstance(union, np.ndarray) and warnings == ()
    assert all(i.mask is not None and i.mask.sum() == i.area_px for i in insts)
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000")
    insts_disk, union_disk, warnings_disk = stitch_pieces(scene, merged, 256 << 20, 32)
    assert isinstance(union_disk, TiledArray)
    assert np.array_equal(union_disk.read(None), union)
    assert all(i.mask is None for i in insts_disk) and warnings_disk  # says why instance masks are not kept
    assert [i.bbox for i in insts_disk] == [i.bbox for i in insts]


def test_request_is_checked_before_anything_runs(demo_registry):
    with pytest.raises(OptionError, match="tile_size must be at least 16"):
        make_request("bright spots", plugin="demo", options={"tile_size": 8}, registry=demo_registry)
    with pytest.raises(OptionError, match="unknown option"):
        make_request("bright spots", plugin="demo", options={"tile_sise": 64}, registry=demo_registry)
    req = make_request("  bright   spots ", plugin="demo", options={"tile_size": "64"}, registry=demo_registry)
    assert req.query == "bright spots" and req.options["tile_size"] == 64 and req.options["reasoner"] == "analytic"


def test_tiles_run_as_separate_tasks_compose_into_segments_answer(demo_registry, disc_image):
    """How a batch flow composes the stages when each tile is its own task: plan once, run_tile per tile (anywhere),
    stitch the cores and merge the notes (TileStitcher), then the one finish stage - the answer segment() gives."""
    from rscore.engine.program import TileStitcher
    from rscore.engine.tile import run_tile
    from rscore.tiling import iter_tiles

    img, _ = disc_image
    opts = {"template": "smooth-bright", "tile_size": 32}
    reg = demo_registry
    request = make_request("x", plugin="demo", options=opts, registry=reg)
    scene = preprocess(reg, "demo", scene_of(img), request)
    planned = plan_scene(scene, request, reg)
    template = planned.template
    assert template is not None and template.halo > 0
    h, w = scene.shape
    stitch = TileStitcher(h, w, 32)
    for tile in reversed(list(iter_tiles(h, w, 32, template.halo))):  # tasks finish in any order
        res = run_tile(scene, request, template, reg.operators, tile)
        assert res.score is not None and res.classes is not None
        stitch.add(res)
    mask, score, classes = stitch.finish()
    plan = dataclasses.replace(planned.plan, steps=planned.plan.steps + tuple(stitch.steps()))
    done = Execution(plan, mask=mask, score=score, classes=classes, caveats=stitch.caveats)
    composed = postprocess(reg, "demo", finish_result(scene, request, planned, done, reg), scene)
    whole = engine.segment(scene_of(img), "x", plugin="demo", options=opts, registry=reg)
    assert np.array_equal(composed.mask, whole.mask) and whole.mask.any()
    assert np.array_equal(composed.score, whole.score, equal_nan=True)
    assert np.array_equal(composed.class_map, whole.class_map)
    assert [(i.bbox, i.area_px, i.score, i.attributes) for i in composed.instances] == [
        (i.bbox, i.area_px, i.score, i.attributes) for i in whole.instances
    ]
    assert [s.text for s in composed.plan.steps] == [s.text for s in whole.plan.steps]
    assert composed.caveats == whole.caveats and composed.classes == whole.classes
    strip = lambda p: {k: v for k, v in p.items() if k != "created"}  # noqa: E731
    assert strip(composed.provenance) == strip(whole.provenance)
