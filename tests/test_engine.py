"""The engine contract on a small in-process plugin: plans, masks, instances, tiling, absent answers, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from demo_plugin import write_demo

from rscore import engine, rle
from rscore.errors import InputError, OptionError, PluginError, QueryError
from rscore.tiling import TiledArray, read_window
from rscore.types import ArraySource, Scene


def scene_of(img, **kw):
    return Scene(ArraySource(img), "image", ("gray",), **kw)


def test_segment_returns_mask_instances_and_plan(demo_registry, disc_image):
    img, disc = disc_image
    res = engine.segment(scene_of(img), "bright spots", plugin="demo", registry=demo_registry)
    assert not res.absent
    assert res.plan.template == "demo:bright"
    assert res.plan.match["method"] == "keyword" and res.plan.match["score"] >= 0.5
    assert np.array_equal(res.mask, img >= 128)
    # two blobs: the disc and the square, largest/brightest first
    assert len(res.instances) == 2
    disc_inst = next(i for i in res.instances if i.bbox[0] < 100)
    assert disc_inst.area_px == int(disc.sum())
    assert disc_inst.bbox == (40, 30, 81, 71)
    assert 0.8 < disc_inst.score <= 1.0
    texts = [s.text for s in res.plan.steps]
    assert any("rule: brightness >= 0.5" in t for t in texts)
    note = next(s for s in res.plan.steps if s.text == "brightness >= 0.5")
    assert note.stats["share"] == pytest.approx((img >= 128).mean(), rel=1e-6)
    assert res.classes["demo"] == {"instances": 2}  # postprocess hook ran
    assert {"reason_s", "segment_s", "total_s"} <= set(res.timings)
    assert res.provenance["template"] == "demo:bright" and res.provenance["reasoner"] == "analytic"


def test_unmatched_query_is_absent_with_closest_templates(demo_registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "the tallest giraffe", plugin="demo", registry=demo_registry)
    assert res.absent
    assert "matches no template" in res.plan.reason and "closest" in res.plan.reason
    assert not res.mask.any() and res.instances == ()
    assert len(res.plan.match["alternatives"]) == 3


def test_empty_result_is_absent(demo_registry):
    res = engine.segment(scene_of(np.zeros((32, 32), np.uint8)), "bright spots", plugin="demo", registry=demo_registry)
    assert res.absent and "found no pixels" in res.plan.reason


def test_vlm_only_template_is_not_answered_offline(demo_registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "the cat", plugin="demo", options={"template": "vlm-only"}, registry=demo_registry)
    assert res.absent and "needs a VLM reasoner" in res.plan.reason


def test_missing_band_is_a_clear_option_error(demo_registry, disc_image):
    import demo_plugin
    from rscore.sdk import Template

    t = Template("ndvi", "veg", "vegetation", ("vegetation",), program=demo_plugin._bright, requires=("nir", "red"))
    demo_registry.templates.append(t.__class__(**{**t.__dict__, "plugin": "demo"}))
    with pytest.raises(OptionError, match="needs band\\(s\\) nir, red"):
        engine.segment(scene_of(disc_image[0]), "vegetation", plugin="demo", options={"template": "ndvi"}, registry=demo_registry)


@pytest.mark.parametrize("tile", [16, 33, 64])
def test_tiled_run_is_seam_free(demo_registry, disc_image, tile):
    """A 9x9 neighbourhood program (halo 4) gives the same answer whatever the tile size."""
    img, _ = disc_image
    whole = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": 4096}, registry=demo_registry)
    tiled = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": tile}, registry=demo_registry)
    assert np.array_equal(whole.mask, tiled.mask)
    np.testing.assert_allclose(whole.score, tiled.score, atol=1e-6)
    assert np.array_equal(whole.class_map, tiled.class_map)
    assert whole.class_names == ("medium", "high")


def test_without_halo_tiles_would_show_seams(disc_image):
    """Guard for the test above: the same program with halo 0 differs at tile borders."""
    import dataclasses

    import demo_plugin
    from rscore.plugins import get_plugin_manager, get_registry

    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin)]))
    reg.templates = [dataclasses.replace(t, halo=0) for t in reg.templates]
    img, _ = disc_image
    a = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": 4096}, registry=reg)
    b = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": 16}, registry=reg)
    assert not np.allclose(a.score, b.score)


def test_large_scene_is_stitched_on_disk(demo_registry, disc_image, monkeypatch):
    img, _ = disc_image
    ref = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": 32}, registry=demo_registry)
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000")
    big = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "smooth-bright", "tile_size": 32}, registry=demo_registry)
    assert isinstance(big.mask, TiledArray) and isinstance(big.score, TiledArray)
    assert np.array_equal(read_window(big.mask), ref.mask)
    np.testing.assert_allclose(read_window(big.score), ref.score)
    assert any("stitched on disk" in w for w in big.warnings)


def test_invalid_pixels_never_in_mask(demo_registry):
    img = np.full((20, 20), 255, np.uint8)
    valid = np.ones((20, 20), bool)
    valid[:, :5] = False
    scene = Scene(ArraySource(img, valid), "image", ("gray",))
    res = engine.segment(scene, "bright spots", plugin="demo", registry=demo_registry)
    assert not res.mask[:, :5].any() and res.mask[:, 5:].all()
    assert np.isnan(res.score[:, :5]).all()


def test_preprocess_hook_changes_what_is_segmented(demo_registry, disc_image):
    img, _ = disc_image
    res = engine.segment(scene_of(img), "bright spots", plugin="demo", options={"demo_invert": True}, registry=demo_registry)
    assert np.array_equal(res.mask, (255 - img) >= 128)
    assert res.plan.steps[0].text == "preprocess: inverted grey levels"


def test_program_targets_go_through_the_classical_segmenter(demo_registry, disc_image):
    img, disc = disc_image
    res = engine.segment(scene_of(img), "x", plugin="demo", options={"template": "blob-boxes", "segmenter": "classical"}, registry=demo_registry)
    assert res.provenance["segmenter"] == "classical"
    assert len(res.instances) == 2
    best = max(res.instances, key=lambda i: np.logical_and(i.mask, disc).sum())
    iou = np.logical_and(best.mask, disc).sum() / np.logical_or(best.mask, disc).sum()
    assert iou > 0.8


def test_reasoner_backend_from_a_plugin(demo_registry, disc_image):
    img, disc = disc_image
    res = engine.segment(scene_of(img), "whatever", plugin="demo", options={"reasoner": "echo", "echo_box": [35, 25, 86, 76]}, registry=demo_registry)
    assert res.plan.reasoner == "echo" and len(res.instances) == 1
    assert res.instances[0].label == "echo"


def test_unknown_backend_and_plugin_are_clear(demo_registry, disc_image):
    with pytest.raises(PluginError, match="unknown reasoner 'nope' \\(available: agent, analytic, echo, lisa, openai, transformers\\)"):
        engine.segment(scene_of(disc_image[0]), "bright spots", plugin="demo", options={"reasoner": "nope"}, registry=demo_registry)
    with pytest.raises(PluginError, match="unknown plugin 'zzz'"):
        engine.segment(scene_of(disc_image[0]), "bright spots", plugin="zzz", registry=demo_registry)


@pytest.mark.parametrize("query", ["", "   ", "x" * 100_000])
def test_bad_queries(demo_registry, disc_image, query):
    with pytest.raises(QueryError):
        engine.segment(scene_of(disc_image[0]), query, plugin="demo", registry=demo_registry)


def test_run_writes_all_outputs_atomically(demo_registry, disc_image, tmp_path):
    img, _ = disc_image
    src = write_demo(tmp_path / "in.demo", img)
    out = tmp_path / "out"
    res = engine.run(src, "bright spots", plugin="demo", out_dir=out, registry=demo_registry)
    assert set(res.outputs) == {"mask", "overlay", "count", "coco", "coco_results", "result"}
    doc = json.loads((out / "result.json").read_text())
    assert doc["outputs"] == {"mask": "mask.png", "overlay": "overlay.png", "count": "count.txt", "coco": "coco.json",
                              "coco_results": "coco_results.json", "result": "result.json"}
    assert doc["instances"][0]["area"] == pytest.approx(doc["instances"][0]["area_px"] * 0.25)
    assert doc["instances"][0]["area_unit"] == "m2"
    assert (out / "count.txt").read_text() == "2"
    import cv2

    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == img.shape and set(np.unique(mask)) == {0, 255}
    # the same instances in COCO layout, as pycocotools reads them
    from pycocotools.coco import COCO

    gt = COCO(str(out / "coco.json"))
    dt = gt.loadRes(str(out / "coco_results.json"))
    assert len(gt.getAnnIds()) == len(dt.getAnnIds()) == len(doc["instances"]) == 2
    for ann, inst in zip(gt.loadAnns(gt.getAnnIds()), doc["instances"]):
        assert np.array_equal(gt.annToMask(ann).astype(bool), rle.decode(inst["rle"]))
        assert ann["area"] == inst["area_px"] and ann["bbox"][2] == inst["bbox"][2] - inst["bbox"][0]
    # a second run replaces the earlier output folder; no temporary folders are left
    engine.run(src, "bright spots", plugin="demo", out_dir=out, registry=demo_registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.demo", "out"]


def test_failed_writer_leaves_nothing(demo_registry, disc_image, tmp_path):
    img, _ = disc_image
    src = write_demo(tmp_path / "in.demo", img)

    class Boom(Exception):
        pass

    def explode(*a, **k):
        raise Boom()

    writer = next(w for p, w in demo_registry.writers if p == "demo")
    writer.write = explode
    with pytest.raises(Boom):
        engine.run(src, "bright spots", plugin="demo", out_dir=tmp_path / "a" / "b", registry=demo_registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.demo"]


def test_refuses_to_overwrite_a_foreign_folder(demo_registry, disc_image, tmp_path):
    src = write_demo(tmp_path / "in.demo", disc_image[0])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(OptionError, match="not an rscore output folder"):
        engine.run(src, "bright spots", plugin="demo", out_dir=tmp_path / "mine", registry=demo_registry)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_open_scene_errors(demo_registry, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "bad.demo").write_bytes(b"RSDEMO 10 10\nshort")
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path / "empty.png": "empty",
        tmp_path / "noise.png": "does not look like a .png",
        tmp_path: "is a directory",
        tmp_path / "bad.demo": "corrupt demo file",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as info:
            engine.open_scene(path, plugin="demo", registry=demo_registry)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"tile_size": 0}, "tile_size must be at least 16"),
        ({"tile_size": "abc"}, "tile_size must be a whole number"),
        ({"max_instances": 2.5}, "max_instances must be a whole number"),
        ({"reasoner": ""}, "reasoner must be a backend name"),
    ],
)
def test_core_options_are_validated(demo_registry, disc_image, options, message):
    with pytest.raises(OptionError, match=message):
        engine.segment(scene_of(disc_image[0]), "bright spots", plugin="demo", options=options, registry=demo_registry)


def test_unusable_paths_and_queries(demo_registry):
    with pytest.raises(InputError, match="cannot be opened"):
        engine.open_scene("x" * 5000 + ".png", registry=demo_registry)
    with pytest.raises(QueryError, match="unpaired surrogate"):
        engine.validate_query("bright \udcff spots")


def test_note_statistics_are_measured_over_tile_cores(demo_registry):
    """With a halo, a note's share must count each pixel once, so tiled and untiled stats agree."""
    img = np.zeros((64, 64), np.uint8)
    img[:, :20] = 255
    opts = {"template": "smooth-bright"}
    whole = engine.segment(scene_of(img), "x", plugin="demo", options={**opts, "tile_size": 4096}, registry=demo_registry)
    tiled = engine.segment(scene_of(img), "x", plugin="demo", options={**opts, "tile_size": 16}, registry=demo_registry)
    share = lambda r: next(s.stats["share"] for s in r.plan.steps if s.text.startswith("mean brightness"))  # noqa: E731
    assert share(whole) == pytest.approx(whole.mask.mean())
    assert share(tiled) == pytest.approx(share(whole))


def test_caveats_from_template_and_program_reach_the_result_once(demo_registry, disc_image, tmp_path):
    img, _ = disc_image
    # 32 px tiles: the program records its caveat in several tiles; the result lists it once, after the template's
    res = engine.segment(
        scene_of(img), "smoothed bright regions", plugin="demo", options={"tile_size": 32}, registry=demo_registry
    )
    assert res.plan.template == "demo:smooth-bright"
    assert res.caveats == (
        "brightness, not objects: any bright surface counts",
        "very bright neighbourhoods may be saturated",
    )
    dark = engine.segment(
        scene_of((img // 4).astype(np.uint8) + 100), "smoothed bright regions", plugin="demo", registry=demo_registry
    )
    assert "very bright neighbourhoods may be saturated" not in dark.caveats
    out = engine.write_outputs(scene_of(img), res, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["caveats"] == list(res.caveats) and "confidence" in doc
    absent = engine.segment(scene_of(np.zeros((32, 32), np.uint8)), "smoothed bright regions", plugin="demo",
                            registry=demo_registry)
    assert absent.absent and absent.caveats == ()
