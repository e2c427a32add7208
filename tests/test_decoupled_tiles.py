"""Large scenes on the decoupled path (rscore.engine.decoupled): per-tile reasoning with scene-level context, per-tile
segmentation, and the merge of objects that cross tile borders (IoU inside the overlap).

The model is the real loopback OpenAI server of tests/openai_stub_server.py with a scripted "seeing" answer: it
decodes the picture the client sent, finds the bright blobs in it and boxes them in the sent picture's pixels (or
answers absent), so every tile gets the answer a perfect model would give for *that* tile. Masks come from the
classical segmenter.
"""

from __future__ import annotations

import json
import re
import threading
import weakref

import cv2
import numpy as np
import pytest
from openai_stub_server import RecordedRequest, Reply, ScriptedOpenAIServer

from rscore import engine, hookimpl
from rscore.engine import decoupled
from rscore.engine.decoupled import TilePiece, merge_across_tiles, piece_from_instance, tile_windows
from rscore.errors import BackendUnavailable, OptionError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.reasoners.openai import OpenAIReasoner, make_openai_reasoner
from rscore.sdk import BackendSpec, Template
from rscore.segmenters.classical import ClassicalSegmenter
from rscore.types import ArraySource, Instance, Request, Scene, Window

H, W = 2100, 3100
TILE, OVERLAP = 1100, 100  # -> columns at x 0, 1000, 2000 and rows at y 0, 1000: 6 tiles, 100 px overlaps
STRADDLE = (900, 300, 1250, 520)  # x0, y0, x1, y1: across the border of tiles 1 and 2, wider than their overlap
SINGLE = (2400, 1400, 2600, 1600)  # inside tile 6 only
QUERY = "the bright boxes"


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for name in ("RSCORE_OPENAI_API_KEY", "OPENAI_API_KEY", "RSCORE_OPENAI_ENDPOINT", "RSCORE_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


def rect_mask(box, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def big_rgb() -> np.ndarray:
    """3100x2100 noisy dark picture with two bright yellow rectangles."""
    rng = np.random.default_rng(3)
    img = rng.integers(20, 70, (H, W, 3)).astype(np.uint8)
    for box in (STRADDLE, SINGLE):
        img[rect_mask(box)] = (235, 215, 60)
    return img


def big_scene() -> Scene:
    return Scene(ArraySource(np.moveaxis(big_rgb(), -1, 0).copy()), "image", ("red", "green", "blue"))


def bright_boxes(picture: np.ndarray) -> list[tuple[int, int, int, int]]:
    """What a perfect model answers: one box per bright blob of the picture it was sent (sent pixels)."""
    bright = ((picture[..., 0] > 150) & (picture[..., 1] > 150)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    return [
        (int(x), int(y), int(x + w), int(y + h))
        for x, y, w, h, area in stats[1:]
        if area >= 4
    ]


def seeing_model(req: RecordedRequest) -> str:
    boxes = bright_boxes(req.images()[0])
    if not boxes:
        return json.dumps({"steps": ["everything is dark here"], "targets": [], "absent": True,
                           "reason": "no bright box in this picture"})
    return json.dumps(
        {
            "steps": [f"{len(boxes)} bright rectangle(s) stand out"],
            "targets": [
                {"label": "bright box", "box": list(b), "positive_points": [[(b[0] + b[2]) // 2, (b[1] + b[3]) // 2]],
                 "confidence": 0.9}
                for b in boxes
            ],
        }
    )


def always_absent(req: RecordedRequest) -> str:
    return json.dumps(
        {"steps": ["I see no such thing"], "targets": [], "absent": True, "reason": "nothing bright here"}
    )


class _TilesPlugin:
    @hookimpl
    def rscore_query_templates(self):
        return [Template("bright-box", "bright box", "bright rectangles", (QUERY,), prompt="Bright boxes are light.")]


@pytest.fixture
def registry():
    return get_registry(get_plugin_manager(entry_points=False, extra=[("tiles-test", _TilesPlugin())]))


def run(scene, srv, registry, progress=None, **options):
    base = {"reasoner": "openai", "segmenter": "classical", "endpoint": srv.url, "model": "test-vlm",
            "openai_backoff_s": 0.01, "timeout_s": 10}
    return engine.segment(scene, QUERY, plugin="tiles-test", registry=registry, options={**base, **options},
                          progress=progress)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------ the whole path
def test_large_scene_is_reasoned_per_tile_and_the_straddling_object_merged(registry):
    calls = []
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(big_scene(), srv, registry, progress=lambda d, t, unit: calls.append((d, t, unit)),
                  reason_tile=TILE, reason_overlap=OVERLAP)
        requests = srv.chat_requests
    windows = tile_windows(H, W, TILE, OVERLAP)
    assert [(w.col_off, w.row_off) for w in windows] == [(0, 0), (1000, 0), (2000, 0), (0, 1000), (1000, 1000),
                                                          (2000, 1000)]
    # one overview request, then one per tile, each prompt saying which part of the whole scene it shows
    assert len(requests) == 1 + 6
    overview = requests[0].text()
    assert "The picture shows the whole of it, downscaled" in overview and "3100x2100 pixels" in overview
    assert max(requests[0].images()[0].shape[:2]) <= 1024
    for k, (req, win) in enumerate(zip(requests[1:], windows)):
        text = req.text()
        x0, y0 = win.col_off, win.row_off
        assert "Input: an image of 3100x2100 pixels." in text
        assert f"the part x {x0}..{x0 + TILE}, y {y0}..{y0 + TILE} of it (tile {k + 1} of 6" in text
        assert "Overview of the whole scene: a first look at the whole scene shrunk 3.0x found 2 candidate(s)" in text
        assert max(req.images()[0].shape[:2]) <= 1024  # each tile fitted to the model's picture size
    # a unit-aware callback counts tiles, the overview pass not among them (plain callbacks: 1..7 of 7, tested below)
    assert calls == [(i, 6, "tiles") for i in range(0, 7)]

    plan = res.plan
    assert not res.absent and plan.reasoner == "openai" and plan.template == "tiles-test:bright-box"
    tiling = plan.match["tiling"]
    assert tiling["tiles"] == 6 and tiling["grid"] == [2, 3] and tiling["tiles_with_targets"] == [1, 2, 6]
    assert tiling["merged_across_tiles"] == 1 and plan.match["requests"] == 7
    assert plan.match["image_original"] == [3100, 2100]
    # targets in scene pixels: tile 2's part of the straddling box starts at its left edge (x 1000)
    starts = sorted(round(t.box[0]) for t in plan.targets)
    assert len(plan.targets) == 3
    assert starts[0] == pytest.approx(900, abs=3) and starts[1] == pytest.approx(1000, abs=3)
    texts = [s.text for s in plan.steps]
    assert any(t.startswith("the 3100x2100 scene is larger than one reasoning picture: it was reasoned in 6 tile(s)")
               for t in texts)
    assert any(t.startswith("tile 3 (x 2000..3100, y 0..1100): absent - no bright box in this picture") for t in texts)
    assert any(t.startswith("tile 1 (x 0..1100, y 0..1100): 1 bright rectangle(s) stand out") for t in texts)
    assert any(t.startswith("merged across tiles 1, 2: 'bright box'") for t in texts)
    assert sum("domain knowledge" in t for t in texts) == 1  # shared steps are not repeated per tile
    assert plan.raw.startswith("[overview]\n") and "[tile 6: x 2000..3100, y 1000..2100]" in plan.raw

    assert len(res.instances) == 2
    straddle, single = sorted(res.instances, key=lambda i: i.bbox[0])
    truth = rect_mask(STRADDLE)
    assert straddle.attributes["tiles"] == [1, 2] and straddle.attributes["merged"] == 2
    assert straddle.bbox == pytest.approx(STRADDLE, abs=3)
    assert straddle.mask.shape == (H, W) and iou(straddle.mask, truth) > 0.95
    # both halves: the part only tile 1 saw and the part only tile 2 saw
    assert (straddle.mask & truth)[:, :1000].sum() > 0.95 * truth[:, :1000].sum()
    assert (straddle.mask & truth)[:, 1100:].sum() > 0.95 * truth[:, 1100:].sum()
    assert single.attributes["tiles"] == [6] and "merged" not in single.attributes
    assert single.bbox == pytest.approx(SINGLE, abs=3) and iou(single.mask, rect_mask(SINGLE)) > 0.95
    assert np.array_equal(res.mask, straddle.mask | single.mask)
    assert res.provenance["segmenter"] == "classical" and res.provenance["reasoner"] == "openai"
    assert res.provenance["options"]["reason_tile"] == TILE
    assert {"reason_s", "segment_s", "total_s"} <= set(res.timings)


def test_every_tile_absent_is_absent_with_the_tiles_reason(registry):
    with ScriptedOpenAIServer([always_absent]) as srv:
        res = run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP)
        assert len(srv.chat_requests) == 7
    assert res.absent and res.instances == () and not res.mask.any()
    assert res.plan.reason == "none of the 6 tiles shows it: nothing bright here"
    assert res.plan.match["tiling"]["tiles_with_targets"] == []
    steps = [s.text for s in res.plan.steps]
    assert any("overview: absent - nothing bright here" == t for t in steps)
    assert any("found nothing that answers the request" in t for t in steps)  # what the tiles were told


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_tile_without_a_usable_answer_is_reported_not_fatal(registry, concurrency):
    def model(req: RecordedRequest) -> str:
        return "I cannot say." if "(tile 2 of 6" in req.text() else seeing_model(req)

    with ScriptedOpenAIServer([model]) as srv:
        res = run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP,
                  reason_concurrency=concurrency)
        assert len(srv.chat_requests) == 1 + 6 + 1  # tile 2 got its repair turn
    tiling = res.plan.match["tiling"]
    assert tiling["tiles_failed"] == [2] and tiling["tiles_with_targets"] == [1, 6]
    assert any(s.text.startswith("tile 2 (x 1000..2100, y 0..1100): could not be reasoned - openai reasoner")
               for s in res.plan.steps)
    assert any(w.startswith("1 of 6 tile(s) could not be reasoned and are not covered: tile 2") for w in res.warnings)
    straddle = min(res.instances, key=lambda i: i.bbox[0])
    assert straddle.attributes["tiles"] == [1] and straddle.bbox == pytest.approx((900, 300, 1100, 520), abs=3)


def test_a_dead_endpoint_fails_fast_instead_of_once_per_tile(registry):
    with ScriptedOpenAIServer([Reply(status=500, content="model crashed")]) as srv:
        with pytest.raises(BackendUnavailable, match="HTTP 500: model crashed"):
            run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP, openai_max_retries=0)
        assert len(srv.chat_requests) == 2  # the overview and tile 1, then it gives up


def test_overview_can_be_switched_off(registry):
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP, reason_overview=False)
        texts = [r.text() for r in srv.chat_requests]
    assert len(texts) == 6 and not any("Overview of the whole scene" in t for t in texts)
    assert "tile 1 of 6" in texts[0] and len(res.instances) == 2 and not res.plan.match["tiling"]["overview"]


def test_small_scene_keeps_the_single_view_path(registry):
    rng = np.random.default_rng(0)
    img = rng.integers(20, 70, (480, 640, 3)).astype(np.uint8)
    img[100:200, 300:420] = (235, 215, 60)
    scene = Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"))
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(scene, srv, registry)
        (req,) = srv.chat_requests
    text = req.text()
    assert "Input: an image of 640x480 pixels." in text
    assert "The picture shows only the part" not in text and "Overview" not in text
    assert "tiling" not in res.plan.match and not any(s.operator == "tiles" for s in res.plan.steps)
    (inst,) = res.instances
    assert inst.bbox == pytest.approx((300, 100, 420, 200), abs=2) and "tiles" not in inst.attributes


def test_off_sends_the_whole_large_scene_shrunk(registry):
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(big_scene(), srv, registry, reason_tiles="off")
        (req,) = srv.chat_requests
    assert max(req.images()[0].shape[:2]) <= 1024 and "The picture shows only the part" not in req.text()
    assert "tiling" not in res.plan.match and len(res.instances) == 2


def test_auto_tiles_only_scenes_larger_than_twice_the_picture_side():
    def request(**o):
        return Request(QUERY, options={**decoupled.DEFAULTS, **o})

    r = make_openai_reasoner({"endpoint": "http://127.0.0.1:9/v1", "model": "m"})
    small = Scene(ArraySource(np.zeros((3, 1500, 2000), np.uint8)), "image", ("red", "green", "blue"))
    assert decoupled.picture_side(r, request()) == 1024
    assert not decoupled.should_tile(small, r, request())  # 2000 <= 2 x 1024
    assert decoupled.should_tile(big_scene(), r, request())  # 3100 > 2048
    assert decoupled.should_tile(small, r, request(max_side=512))  # 2000 > 2 x 512
    assert decoupled.should_tile(small, r, request(reason_tiles="on"))
    assert not decoupled.should_tile(big_scene(), r, request(reason_tiles="off"))

    class Analytic:
        name = "analytic"

    assert not decoupled.should_tile(big_scene(), Analytic(), request(reason_tiles="on"))


# ------------------------------------------------------------------------------------------- non-8-bit and lazy
class LazySource:
    """A uint16 raster that must be read window by window: a whole read is an error, reads are recorded."""

    def __init__(self, array):
        self.array, self.reads = array, []
        self.count, self.height, self.width = array.shape
        self.dtype = str(array.dtype)

    def read(self, window=None, bands=None):
        if window is None:
            raise AssertionError("the whole raster was read at once")
        self.reads.append(window)
        arr = self.array[(slice(None), *window.slices)]
        return arr if bands is None else arr[list(bands)]

    def valid(self, window=None):
        return None


def test_lazy_16bit_raster_is_read_by_window_and_shown_with_one_stretch(registry):
    """A uint16 raster: background 1000..1100, one 400 px square at 30000 (2.5 % of the pixels, so the 98th
    percentile of the whole scene lies on it). One stretch for the whole scene shows the background dark in every
    tile; a per-tile stretch would blow an empty tile's noise up to 0..255 and show the model texture."""
    big = (2300, 1300, 2700, 1700)  # inside tile 6 only
    rng = np.random.default_rng(5)
    dem = rng.integers(1000, 1100, (1, H, W)).astype(np.uint16)
    dem[0][rect_mask(big)] = 30000
    source = LazySource(dem)
    scene = Scene(source, "raster", ("gray",), pixel_size=(10.0, 10.0), unit="m")
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(scene, srv, registry, reason_tile=TILE, reason_overlap=OVERLAP)
        pictures = [r.images()[0] for r in srv.chat_requests]
        texts = [r.text() for r in srv.chat_requests]
    assert source.reads and all(w.height * w.width <= 1100 * 1100 for w in source.reads)  # never the whole raster
    assert len(pictures) == 7 and all(p.max() < 10 for k, p in enumerate(pictures) if k not in (0, 6))
    assert pictures[6].max() == 255 and pictures[0].max() > 200  # the square, in its tile and in the overview
    assert "greyscale of the 'gray' band" in texts[1] and "One input pixel is 10x10 m" in texts[1]
    assert res.plan.match["tiling"]["tiles_with_targets"] == [6]
    (inst,) = res.instances
    assert inst.bbox == pytest.approx(big, abs=3) and inst.attributes["tiles"] == [6]
    assert inst.area_unit == "m2" and inst.area_real == pytest.approx(inst.area_px * 100.0)


# ------------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "options,message",
    [
        ({"reason_tiles": "sometimes"}, "reason_tiles must be one of auto, on, off"),
        ({"reason_tile": 10}, "reason_tile must be 0 \\(auto\\) or at least 64"),
        ({"reason_tile": 1000, "reason_overlap": 500}, "less than half of reason_tile"),
        ({"reason_overlap": -1}, "reason_overlap must be at least 0"),
        ({"reason_overlap": 1.5}, "reason_overlap must be a whole number"),
        ({"reason_merge_iou": 0}, "reason_merge_iou must be in \\(0, 1\\]"),
        ({"reason_merge_iou": "high"}, "reason_merge_iou must be a number"),
        ({"reason_overview": "maybe"}, "reason_overview must be true or false"),
        ({"reason_concurrency": 0}, "reason_concurrency must be auto or a whole number >= 1"),
        ({"reason_concurrency": "many"}, "reason_concurrency must be auto or a whole number >= 1"),
        ({"reason_concurrency": 1.5}, "reason_concurrency must be auto or a whole number >= 1"),
        ({"reason_concurrency": True}, "reason_concurrency must be auto or a whole number >= 1"),
    ],
)
def test_tiling_options_are_validated(registry, options, message):
    with pytest.raises(OptionError, match=message):
        engine.segment(big_scene(), QUERY, plugin="tiles-test", registry=registry, options=options)


def test_tiling_options_are_converted():
    opts = decoupled.normalise_options({"reason_tiles": True, "reason_tile": "1536", "reason_overlap": 64.0,
                                       "reason_merge_iou": "0.6", "reason_overview": "off"})
    assert opts == {"reason_tiles": "on", "reason_tile": 1536, "reason_overlap": 64, "reason_merge_iou": 0.6,
                    "reason_overview": False, "reason_concurrency": "auto"}
    assert decoupled.normalise_options({"reason_tile": "auto"})["reason_tile"] == 0
    assert decoupled.normalise_options({"reason_concurrency": "3"})["reason_concurrency"] == 3
    assert decoupled.normalise_options({"reason_concurrency": " Auto "})["reason_concurrency"] == "auto"


# ------------------------------------------------------------------------------------------------------ the grid
@pytest.mark.parametrize("height,width,tile,overlap", [(2100, 3100, 1100, 100), (3000, 2000, 1024, 128),
                                                       (500, 700, 1024, 128), (4097, 1025, 1024, 0)])
def test_tile_windows_cover_the_scene_and_overlap(height, width, tile, overlap):
    windows = tile_windows(height, width, tile, overlap)
    cover = np.zeros((height, width), np.int32)
    for w in windows:
        assert (w.height, w.width) == (min(tile, height), min(tile, width))  # every tile full size
        cover[w.slices] += 1
    assert cover.min() >= 1
    cols = sorted({w.col_off for w in windows})
    rows = sorted({w.row_off for w in windows})
    for starts, side in ((cols, min(tile, width)), (rows, min(tile, height))):
        for a, b in zip(starts, starts[1:]):
            assert side - (b - a) >= overlap  # neighbours share at least `overlap` px
    with pytest.raises(OptionError):
        tile_windows(100, 100, 64, 32)


# ------------------------------------------------------------------------------------------- the overlap merge
def tile_instance(window: Window, box, label="thing", score=0.5) -> Instance:
    """An instance as a segmenter returns it for one tile: a tile-sized mask, tile pixels."""
    x0, y0, x1, y1 = box
    mask = np.zeros((window.height, window.width), bool)
    mask[y0:y1, x0:x1] = True
    return Instance(label, score, (x0, y0, x1, y1), int(mask.sum()), mask)


def pieces_of(windows, items) -> list[TilePiece]:
    return [piece_from_instance(tile_instance(windows[t], box, **kw), t, windows[t]) for t, box, kw in items]


def test_overlap_iou_merges_a_cut_object_that_whole_box_iou_would_not():
    windows = [Window(0, 0, 100, 100), Window(0, 80, 100, 100)]  # columns 0..100 and 80..180: overlap x 80..100
    # tile 0 sees scene x 60..100 of an object at x 60..110; tile 1 sees x 80..110 of it (local 0..30)
    a, b = pieces_of(windows, [(0, (60, 20, 100, 40), {"score": 0.4}), (1, (0, 20, 30, 40), {"label": "other"})])
    assert a.bbox == (60, 20, 100, 40) and b.bbox == (80, 20, 110, 40) and b.instance.attributes["tiles"] == [2]
    whole_box_iou = 400 / (800 + 600 - 400)
    assert whole_box_iou < 0.5  # a whole-box IoU would keep the two halves apart
    (merged,), groups = merge_across_tiles([a, b], windows, iou=0.5)
    inst = merged.instance
    assert inst.bbox == (60, 20, 110, 40) and inst.area_px == 50 * 20 and merged.crop.all()
    assert inst.score == 0.5 and inst.label == "other"  # the best member's label (labels may differ per tile)
    assert inst.attributes["tiles"] == [1, 2] and inst.attributes["merged"] == 2 and inst.mask is None
    assert groups == [{"label": "other", "tiles": [1, 2], "pieces": 2, "bbox": [60, 20, 110, 40], "iou": 1.0}]


def test_overlap_iou_below_threshold_and_same_tile_pieces_stay_apart():
    windows = [Window(0, 0, 100, 100), Window(0, 80, 100, 100)]
    # two neighbours side by side in the overlap: scene x 85..100 (tile 0) and x 80..88 (tile 1): IoU 3/20 there
    a, b = pieces_of(windows, [(0, (85, 60, 100, 80), {}), (1, (0, 60, 8, 80), {})])
    out, groups = merge_across_tiles([a, b], windows, iou=0.5)
    assert len(out) == 2 and groups == []
    assert len(merge_across_tiles([a, b], windows, iou=0.1)[0]) == 1  # the threshold decides
    # identical pieces of the same tile are merge_instances_iou's business, not this merge's
    c, d = pieces_of(windows, [(0, (10, 10, 30, 30), {}), (0, (10, 10, 30, 30), {})])
    assert len(merge_across_tiles([c, d], windows)[0]) == 2


def test_overlap_merge_is_transitive_over_three_tiles_and_ignores_far_tiles():
    windows = [Window(0, 0, 100, 100), Window(0, 80, 100, 100), Window(0, 160, 100, 100)]
    # an object at scene x 50..230, y 40..60 seen in three tiles
    parts = pieces_of(windows, [(0, (50, 40, 100, 60), {}), (1, (0, 40, 100, 60), {}), (2, (0, 40, 70, 60), {})])
    (merged,), groups = merge_across_tiles(parts, windows)
    assert merged.bbox == (50, 40, 230, 60) and merged.instance.area_px == 180 * 20
    assert merged.instance.attributes["tiles"] == [1, 2, 3] and groups[0]["pieces"] == 3
    # tiles 1 and 3 do not overlap: equal boxes there never merge directly
    far = [Window(0, 0, 100, 100), Window(0, 200, 100, 100)]
    e, f = pieces_of(far, [(0, (90, 0, 100, 10), {}), (1, (0, 0, 10, 10), {})])
    assert len(merge_across_tiles([e, f], far)[0]) == 2


def test_piece_from_instance_rejects_a_mask_of_the_wrong_size():
    with pytest.raises(OptionError, match="mask for a 100x100 tile picture"):
        piece_from_instance(Instance("x", 1.0, (0, 0, 5, 5), 25, np.ones((50, 50), bool)), 0, Window(0, 0, 100, 100))
    empty = Instance("x", 1.0, (0, 0, 5, 5), 0, np.zeros((100, 100), bool))
    assert piece_from_instance(empty, 0, Window(0, 0, 100, 100)) is None


def test_big_scene_keeps_the_union_on_disk_and_instances_without_masks(registry, monkeypatch):
    from rscore.tiling import TiledArray, read_window

    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000000")
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP, reason_overview=False)
    assert isinstance(res.mask, TiledArray)
    union = read_window(res.mask)
    assert iou(union, rect_mask(STRADDLE) | rect_mask(SINGLE)) > 0.95
    assert len(res.instances) == 2 and all(i.mask is None for i in res.instances)
    assert any("instance masks are not kept" in w for w in res.warnings)
    assert not any("instances are not listed" in w for w in res.warnings)
    res.mask.close()


def test_steps_name_the_tile_windows_in_scene_pixels(registry):
    """The window text in the steps and the prompts is the same window, in whole-scene pixels."""
    with ScriptedOpenAIServer([seeing_model]) as srv:
        res = run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP, reason_overview=False)
        prompts = [r.text() for r in srv.chat_requests]
    spans = [m.group(1) for t in prompts for m in [re.search(r"the part (x \d+\.\.\d+, y \d+\.\.\d+)", t)]]
    step_spans = sorted({m.group(1) for s in res.plan.steps for m in [re.match(r"tile \d+ \((.*?)\)", s.text)] if m})
    assert sorted(spans) == step_spans and len(spans) == 6


# ------------------------------------------------------------------------------------------ a local model (tiny)
@pytest.mark.slow
def test_tiled_loop_with_the_tiny_transformers_reasoner(tmp_path, monkeypatch):
    """The tiled path with the local transformers reasoner (a tiny random Qwen2.5-VL taught one answer on the first
    tile's prompt, ~30 s on CPU): overview + 6 tiles reasoned, targets offset by their tiles, tile 1's mask at the
    object."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import huggingface_hub.constants as hub

    import rscore.reasoners.transformers_vlm as vlm
    from rscore.models.testing import save_tiny_qwen_vl, targets_json, teach_answer
    from rscore.reasoners.prompting import ReasoningView, describe_scene
    from rscore.sdk import BackendSpec

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    save_tiny_qwen_vl(tmp_path / "w" / "qwen2.5-vl-3b", "qwen2.5-vl")
    template = Template("bright-box", "bright box", "bright rectangles", ("the bright box",), prompt="Light.",
                        keywords=("bright", "box"), plugin="demo")

    class Plugin:
        @hookimpl
        def rscore_backends(self):
            return [BackendSpec("reasoner", "tiny-transformers", vlm.make_transformers_reasoner, "tiny qwen")]

        @hookimpl
        def rscore_query_templates(self):
            return [template]

    rng = np.random.default_rng(0)
    img = rng.integers(10, 40, (3, 300, 500)).astype(np.uint8)
    img[:, 40:100, 150:260] = 230
    scene = Scene(ArraySource(img), "image", ("red", "green", "blue"))
    opts = {"reasoner": "tiny-transformers", "segmenter": "classical", "model": "qwen2.5-vl-3b",
            "weights": str(tmp_path / "w"), "device": "cpu", "matcher": "keyword", "max_side": 112,
            "reason_tiles": "on", "reason_tile": 224, "reason_overlap": 32}
    windows = tile_windows(300, 500, 224, 32)
    assert len(windows) == 6
    try:
        reasoner = vlm.make_transformers_reasoner(opts)
        request = Request("the bright box", options=engine._check_options({**engine.DEFAULTS, **opts}))
        view = ReasoningView((500, 300), windows[0], tile=0, tiles=6, band_roles=scene.band_roles)
        first = Scene(ArraySource(img[:, :224, :224].copy()), "image", scene.band_roles,
                      metadata={"reasoning_view": view})
        sent = reasoner.fit(np.moveaxis(first.read(), 0, -1))
        assert sent.size == (112, 112)
        convo = reasoner.conversation(sent, request, [template], kind="image", context=describe_scene(first, sent))
        # tile 1 shows the object at x 150..224, y 40..100: half that in the 112 px picture
        teach_answer(reasoner, reasoner.encode(convo.messages, sent),
                     targets_json([{"label": "bright box", "box": [75, 20, 112, 50], "confidence": 0.9}]))
        calls = []
        original = reasoner.generate
        monkeypatch.setattr(reasoner, "generate", lambda *a, **k: calls.append(a[1].size) or original(*a, **k))
        monkeypatch.setattr(vlm, "make_transformers_reasoner", lambda options: reasoner)
        reg = get_registry(get_plugin_manager(entry_points=False, extra=[("demo", Plugin())]))
        res = engine.segment(scene, "the bright box", plugin="demo", options=opts, registry=reg)
    finally:
        vlm.clear_model_cache()  # the taught model must not leak into other tests
    assert len(calls) == 7  # the overview and six tiles, one generate each (every answer parsed)
    tiling = res.plan.match["tiling"]
    assert tiling["tiles"] == 6 and tiling["overview"] and res.plan.reasoner == "transformers"
    boxes = sorted((round(t.box[0]), round(t.box[1])) for t in res.plan.targets)
    assert boxes == sorted((w.col_off + 150, w.row_off + 40) for w in windows)  # the same answer, offset per tile
    hit = [i for i in res.instances if 1 in i.attributes["tiles"]]
    assert hit and hit[0].bbox == pytest.approx((150, 40, 224, 100), abs=3)


def test_stacked_slices_are_reasoned_one_slice_at_a_time(registry):
    """A DICOM-like stack (slices along the rows) is looked at slice by slice: no tile shows two slices, no overview
    of the sliver, and the same object on two neighbouring slices stays two per-slice instances."""
    rows, n_slices, width = 300, 4, 400
    rng = np.random.default_rng(5)
    img = rng.integers(20, 70, (rows * n_slices, width, 3)).astype(np.uint8)
    # a box at the bottom of slice 1 and one at the top of slice 2: touching across the slice border
    boxes = [(100, rows - 60, 200, rows), (100, rows, 200, rows + 60)]
    for box in boxes:
        img[rect_mask(box, img.shape[:2])] = (235, 215, 60)
    scene = Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"),
                  metadata={"layout": "stacked-rows", "slice_rows": rows})
    assert decoupled.scene_tile_windows(scene, 2048, 128) == [Window(s * rows, 0, rows, width) for s in range(4)]
    calls = []
    with ScriptedOpenAIServer([seeing_model]) as srv:  # auto: a 1200 x 400 scene would not be tiled by size alone
        res = run(scene, srv, registry, progress=lambda d, t, unit="": calls.append((d, t, unit)))
        requests = srv.chat_requests
    assert calls == [(i, n_slices, "slices") for i in range(1, n_slices + 1)]
    assert len(requests) == n_slices  # one per slice, no overview
    for req in requests:  # each picture is one slice (resized by the client to its size rule), not a stack
        h, w = req.images()[0].shape[:2]
        assert abs(w / h - width / rows) < 0.15
    assert not res.plan.absent and len(res.instances) == 2
    got = sorted(i.bbox for i in res.instances)
    for box, bbox in zip(sorted(boxes), got):
        assert max(abs(a - b) for a, b in zip(box, bbox)) <= 3


class WindowedCTSource:
    """Like the surgical plugin's DisplaySource: float HU plus a 'gray' band that reads back as uint8 when read alone."""

    def __init__(self, hu):
        self.hu = hu.astype(np.float32)
        self.count, self.height, self.width = 2, *hu.shape
        self.dtype = "float32"

    def shown(self, window=None):
        hu = self.hu if window is None else self.hu[window.slices]
        return np.clip((hu + 160) / 400 * 255, 0, 255).astype(np.uint8)  # soft-tissue window W400/L40

    def read(self, window=None, bands=None):
        bands = [0, 1] if bands is None else list(bands)
        if bands == [1]:
            return self.shown(window)[None]
        hu = self.hu if window is None else self.hu[window.slices]
        return np.stack([hu if b == 0 else self.shown(window).astype(np.float32) for b in bands])

    def valid(self, window=None):
        return None


def test_an_8bit_display_band_of_a_float_scene_is_sent_without_a_second_stretch(registry):
    """The window a plugin chose (CT soft tissue) is what the model sees on every tile: no percentile re-stretch."""
    rows, width = 280, 280  # multiples of 28: the client sends each slice at its own size
    rng = np.random.default_rng(9)
    hu = rng.normal(40, 30, (2 * rows, width))  # soft tissue: a narrow spread a percentile stretch would widen
    hu[60:120, 60:140] = 900  # bone, saturated in this window
    src = WindowedCTSource(hu)
    scene = Scene(src, "image", ("hu", "gray"), metadata={"layout": "stacked-rows", "slice_rows": rows})
    with ScriptedOpenAIServer([seeing_model]) as srv:
        run(scene, srv, registry, openai_image_format="png")
        requests = srv.chat_requests
    assert len(requests) == 2
    for k, req in enumerate(requests):
        sent = req.images()[0]
        assert sent.shape[:2] == (rows, width)
        expected = src.shown(Window(k * rows, 0, rows, width))
        np.testing.assert_array_equal(sent[..., 0], expected)


# ------------------------------------------------------------------------------------------ concurrent reasoning
def slow_seeing_model(req: RecordedRequest) -> Reply:
    """The seeing model, answering after 0.3 s (the stub serves every request on its own thread)."""
    return Reply(content=seeing_model(req), delay_s=0.3)


class InFlight:
    """Wraps ``OpenAIReasoner.plan`` to count the calls in flight at once and the threads they ran on."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.threads: list[int] = []

    def wrap(self, plan):
        def wrapped(*args, **kwargs):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.threads.append(threading.get_ident())
            try:
                return plan(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        return wrapped


@pytest.fixture
def in_flight(monkeypatch):
    """A fresh recorder per run: ``in_flight()`` patches ``OpenAIReasoner.plan`` (subclasses included) anew."""
    original = OpenAIReasoner.plan

    def start() -> InFlight:
        rec = InFlight()
        monkeypatch.setattr(OpenAIReasoner, "plan", rec.wrap(original))
        return rec

    return start


@pytest.fixture
def tile_pictures(monkeypatch):
    """Counts the tile pictures alive whenever a new one is read (``most``), and records the segmenter's thread."""
    state = {"alive": 0, "most": 0, "segment_threads": []}
    original_tile, original_segment = decoupled._tile_scene, ClassicalSegmenter.segment

    def gone():
        state["alive"] -= 1

    def tile_scene(*args, **kwargs):
        sub = original_tile(*args, **kwargs)
        state["alive"] += 1
        state["most"] = max(state["most"], state["alive"])
        weakref.finalize(sub.source, gone)
        return sub

    def segment(self, *args, **kwargs):
        state["segment_threads"].append(threading.get_ident())
        return original_segment(self, *args, **kwargs)

    monkeypatch.setattr(decoupled, "_tile_scene", tile_scene)
    monkeypatch.setattr(ClassicalSegmenter, "segment", segment)
    return state


def outcome(res) -> dict:
    """Everything a run answers except timings and the concurrency it ran with."""
    plan = res.plan
    tiling = {k: v for k, v in plan.match["tiling"].items() if k != "concurrency"}
    return {
        "steps": [(s.text, s.operator, dict(s.params), dict(s.stats)) for s in plan.steps],
        "targets": plan.targets,
        "raw": plan.raw,
        "absent": plan.absent,
        "tiling": tiling,
        "requests": plan.match["requests"],
        "instances": [(i.label, i.score, i.bbox, i.area_px, dict(i.attributes), i.mask.tobytes())
                      for i in res.instances],
        "mask": res.mask.tobytes(),
        "warnings": res.warnings,
    }


def test_tiles_are_reasoned_concurrently_with_the_same_result(registry, in_flight, tile_pictures):
    thread = threading.get_ident()
    runs, recorders, progress_calls = {}, {}, {}
    for concurrency in ("auto", 3):
        calls = []
        recorders[concurrency] = in_flight()
        tile_pictures.update(most=0, segment_threads=[])
        with ScriptedOpenAIServer([slow_seeing_model]) as srv:
            runs[concurrency] = run(
                big_scene(), srv, registry, progress=lambda d, t: calls.append((d, t, threading.get_ident())),
                reason_tile=TILE, reason_overlap=OVERLAP, reason_concurrency=concurrency,
            )
            assert len(srv.chat_requests) == 7
        progress_calls[concurrency] = calls
        # tiles are segmented on the calling thread; at most `concurrency` tile pictures are held besides the one
        # being segmented
        assert set(tile_pictures["segment_threads"]) == {thread} and len(tile_pictures["segment_threads"]) == 3
        assert tile_pictures["most"] <= (2 if concurrency == "auto" else 3 + 1)

    sequential, concurrent = recorders["auto"], recorders[3]
    assert sequential.most == 1 and set(sequential.threads) == {thread}  # auto: the openai reasoner declares nothing
    assert 2 <= concurrent.most <= 3
    assert concurrent.threads[0] == thread and thread not in concurrent.threads[1:]  # the overview, then the tiles
    assert runs["auto"].plan.match["tiling"]["concurrency"] == 1
    assert runs[3].plan.match["tiling"]["concurrency"] == 3
    # progress: from the calling thread, `done` counting up by one, however the tiles came back
    for calls in progress_calls.values():
        assert [(d, t) for d, t, _ in calls] == [(i, 7) for i in range(1, 8)]
        assert {tid for _, _, tid in calls} == {thread}

    assert outcome(runs[3]) == outcome(runs["auto"])
    texts = [s.text for s in runs[3].plan.steps]
    tile_steps = [int(m.group(1)) for t in texts for m in [re.match(r"tile (\d+) \(", t)] if m]
    assert tile_steps == sorted(tile_steps) and set(tile_steps) == {1, 2, 3, 4, 5, 6}  # in tile order
    straddle = min(runs[3].instances, key=lambda i: i.bbox[0])
    assert straddle.attributes["tiles"] == [1, 2] and straddle.bbox == pytest.approx(STRADDLE, abs=3)
    assert len(runs[3].instances) == 2


def test_a_dead_endpoint_still_fails_fast_with_concurrent_tiles(registry):
    with ScriptedOpenAIServer([Reply(status=500, content="model crashed")]) as srv:
        with pytest.raises(BackendUnavailable, match="HTTP 500: model crashed"):
            run(big_scene(), srv, registry, reason_tile=TILE, reason_overlap=OVERLAP, openai_max_retries=0,
                reason_concurrency=3)
        assert 2 <= len(srv.chat_requests) <= 1 + 3  # the overview and at most one round of tiles, then it gives up


class _NamedReasoner(OpenAIReasoner):
    """The openai reasoner under a local reasoner's name (the transformers reasoner needs weights and a model)."""

    name = "transformers"


class _DeclaringReasoner(OpenAIReasoner):
    """A reasoner that declares how many plan calls it serves at once."""

    max_concurrency = 2


class _BackendsPlugin(_TilesPlugin):
    @hookimpl
    def rscore_backends(self):
        return [
            BackendSpec("reasoner", "named-local", lambda o: _NamedReasoner(make_openai_reasoner(o).options), "test"),
            BackendSpec("reasoner", "declaring", lambda o: _DeclaringReasoner(make_openai_reasoner(o).options), "test"),
        ]


@pytest.mark.parametrize(
    "backend,asked,most,note",
    [
        ("named-local", 3, 1, "reason_concurrency=3 was capped at 1: the local transformers reasoner"),
        ("declaring", "auto", 2, None),
        ("declaring", 5, 2, "reason_concurrency=5 was capped at 2: the openai reasoner declares max_concurrency=2"),
    ],
)
def test_reasoner_caps_and_declared_concurrency(in_flight, backend, asked, most, note):
    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("tiles-test", _BackendsPlugin())]))
    rec = in_flight()
    with ScriptedOpenAIServer([slow_seeing_model]) as srv:
        res = run(big_scene(), srv, reg, reason_tile=TILE, reason_overlap=OVERLAP, reason_overview=False,
                  reasoner=backend, reason_concurrency=asked)
    assert rec.most == most and res.plan.match["tiling"]["concurrency"] == most
    assert len(res.instances) == 2
    if note is None:
        assert not any("reason_concurrency" in w for w in res.warnings)
    else:
        assert any(w.startswith(note) for w in res.warnings)
        assert res.plan.steps[1].text.startswith(note) and res.plan.steps[1].operator == "tiles"


def test_reason_concurrency_resolution():
    def opts(c):
        return decoupled.TilingOptions(concurrency=c)

    class Plain:
        pass

    class Declares:
        max_concurrency = 4

    class Local:
        name = "transformers"
        max_concurrency = 4

    openai = make_openai_reasoner({"endpoint": "http://127.0.0.1:9/v1", "model": "m"})
    assert decoupled.reason_concurrency(openai, opts("auto")) == (1, "")  # built-ins declare nothing: sequential
    assert decoupled.reason_concurrency(openai, opts(8), tiles=6) == (6, "")  # never more than the tiles
    assert decoupled.reason_concurrency(Plain(), opts("auto")) == (1, "")
    assert decoupled.reason_concurrency(Declares(), opts("auto")) == (4, "")
    assert decoupled.reason_concurrency(Declares(), opts("auto"), tiles=2) == (2, "")
    assert decoupled.reason_concurrency(Declares(), opts(2)) == (2, "")
    n, note = decoupled.reason_concurrency(Declares(), opts(8))
    assert n == 4 and "declares max_concurrency=4" in note
    n, note = decoupled.reason_concurrency(Local(), opts("auto"))
    assert n == 1 and "local transformers reasoner" in note
    assert decoupled.reason_concurrency(Local(), opts(1)) == (1, "")
