"""The agent reasoner on scenes larger than its picture, over real HTTP to the loopback OpenAI-compatible server: an
overview loop, loops on the tiles (all of them, or those the overview points at), masks merged across tile borders by
the engine's tiled path, bounded cost, and operator tools that measure original values, never a stretched picture.

The scripted "model" looks at the picture it is sent (red pixels = the target) and answers with tool calls in that
picture's own pixels, as an MLLM with perfect eyes would: what each loop sees decides what it does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from openai_stub_server import Reply, ScriptedOpenAIServer, call

from rscore import engine
from rscore.errors import OptionError
from rscore.plugins import get_registry
from rscore.types import ArraySource, Scene

TILING = {"max_side": 112, "reason_tile": 224, "reason_overlap": 32}  # tiles of 224 px, sent at 112 px


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for env in ("RSCORE_OPENAI_ENDPOINT", "RSCORE_OPENAI_MODEL", "RSCORE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(env, raising=False)


@pytest.fixture(scope="module")
def reg():
    return get_registry()


def disc_scene(width: int, height: int, cx: int, cy: int, r: int) -> tuple[Scene, np.ndarray]:
    img = np.full((height, width, 3), 90, np.uint8)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    img[disc] = (220, 30, 30)
    return Scene(ArraySource(img.transpose(2, 0, 1).copy()), "image", ("red", "green", "blue")), disc


def turn(req) -> int:
    return sum(m["role"] == "assistant" for m in req.messages)


def eyed_model(req) -> Reply:
    """Segment the red thing it sees (a box in the sent picture's pixels), select it; nothing red: no mask."""
    if turn(req):
        return Reply(tool_calls=[call("select_masks", mask_ids=[1], label="red disc")])
    pic = req.images()[0].astype(int)
    red = (pic[..., 0] > 150) & (pic[..., 1] < 100)
    if not red.any():
        return Reply(content="Nothing red here.", tool_calls=[call("report_no_mask", reason="no red disc")])
    ys, xs = np.nonzero(red)
    box = [int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max()) + 3, int(ys.max()) + 3]
    return Reply(content="A red disc.", tool_calls=[call("segment_phrase", phrase="red disc", box=box)])


def segment(scene, srv, reg, plugin=None, query="the red disc", **options):
    opts = {"reasoner": "agent", "endpoint": srv.url, "model": "test-vlm", "segmenter": "classical",
            "openai_backoff_s": 0.01, **TILING, **options}  # fmt: skip
    return engine.segment(scene, query, plugin=plugin, options=opts, registry=reg)


def iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_every_tile_gets_a_loop_and_a_disc_across_the_border_is_one_instance(reg):
    scene, disc = disc_scene(416, 224, 208, 112, 44)  # 2 tiles (x 0..224, 192..416); the disc spans the overlap
    with ScriptedOpenAIServer([eyed_model]) as srv:
        res = segment(scene, srv, reg)
        reqs = srv.chat_requests
    assert len(reqs) == 6  # overview + 2 tiles, 2 turns each
    assert not res.plan.absent and len(res.instances) == 1 and iou(res.mask, disc) > 0.85
    tiling = res.plan.match["tiling"]
    assert tiling["tiles"] == 2 and tiling["overview"] and tiling["merged_across_tiles"] == 1
    assert tiling["tiles_with_targets"] == [1, 2] and tiling["tiles_skipped"] == []
    assert res.plan.match["turns"] == 6 and res.plan.match["tool_calls"] == 6
    # each tile's loop is told where it is and what the overview found
    first_tile = reqs[2].messages[1]["content"][1]["text"]
    assert "tile 1 of 2" in first_tile and "'red disc' around x" in first_tile
    texts = [s.text for s in res.plan.steps]
    assert any(t.startswith("tile 2 (x 192..416") and "segment_phrase(" in t for t in texts)
    assert any("merged across tiles 1, 2" in t for t in texts)


def test_large_scene_loops_only_on_the_tiles_the_overview_points_at(reg):
    scene, disc = disc_scene(800, 224, 90, 112, 30)  # 4 tiles, the disc in the first only; budget 2 tiles
    with ScriptedOpenAIServer([eyed_model]) as srv:
        res = segment(scene, srv, reg, agent_max_tiles=2)
        reqs = srv.chat_requests
    assert len(reqs) == 4  # overview + tile 1; tiles 2-4 cost nothing
    assert "tile 1 of 4" in reqs[2].messages[1]["content"][1]["text"]
    assert len(res.instances) == 1 and iou(res.mask, disc) > 0.85
    assert res.plan.match["tiling"]["tiles_skipped"] == [2, 3, 4]
    assert any(t.startswith("tiles not reasoned (2, 3, 4)") for t in (s.text for s in res.plan.steps))
    (note,) = [c for c in res.caveats if "3 of 4 tiles were not examined" in c]
    assert "agent_tiles=all" in note and "may be missed" in note


def test_overview_that_sees_nothing_is_absent_with_the_reason_not_a_guess(reg):
    scene, _ = disc_scene(800, 224, 90, 112, 30)
    scene = Scene(ArraySource(np.full((3, 224, 800), 90, np.uint8)), "image", ("red", "green", "blue"))
    with ScriptedOpenAIServer([eyed_model]) as srv:
        res = segment(scene, srv, reg, agent_max_tiles=2)
        assert len(srv.chat_requests) == 1
    assert res.plan.absent and not res.instances
    assert "no red disc" in res.plan.reason and "no tile was examined at full resolution" in res.plan.reason


def test_every_tile_beyond_the_budget_is_refused_before_any_turn(reg):
    scene, _ = disc_scene(800, 224, 90, 112, 30)
    with ScriptedOpenAIServer([eyed_model]) as srv:
        with pytest.raises(OptionError, match=r"4 tiles and agent_tiles=all would run 4 agent loops .*max_tiles=2"):
            segment(scene, srv, reg, agent_tiles="all", agent_max_tiles=2)
        with pytest.raises(OptionError, match="reason_overview=false"):
            segment(scene, srv, reg, agent_max_tiles=2, reason_overview=False)
        assert srv.chat_requests == []
    with pytest.raises(OptionError, match="tiles must be one of auto, all, selected"):
        segment(scene, srv, reg, agent_tiles="some")


def test_operator_tools_on_a_tile_measure_original_values_not_the_stretched_picture(reg):
    """A float DEM shown to the model stretched to 8 bits: elevation > 2000 m must still be measured in metres, on the
    tile's own window, and stitched across the tile border exactly; the overview (averaged, stretched) has no
    operator tools at all."""
    h, w = 224, 416
    elev = np.tile(np.linspace(1000.0, 3000.0, w, dtype=np.float32), (h, 1))
    scene = Scene(ArraySource(elev[None].copy()), "raster", ("elevation",), pixel_size=(30.0, 30.0), unit="m")

    def dem_model(req) -> Reply:
        tools = {t["function"]["name"] for t in req.json["tools"]}
        text = req.messages[1]["content"][1]["text"]
        if "(tile " not in text:  # the overview
            assert not any(n.startswith("op_") for n in tools)
            return Reply(tool_calls=[call("report_no_mask", reason="cannot tell heights from a picture")])
        assert "op_earth_elevation" in tools
        if turn(req) == 0:
            return Reply(tool_calls=[call("op_earth_elevation", compare=">", value=2000)])
        return Reply(tool_calls=[call("select_masks", mask_ids=[1], label="above 2000 m")])

    with ScriptedOpenAIServer([dem_model]) as srv:
        res = segment(scene, srv, reg, plugin="earth", query="land above 2000 m", planner=False)
        n = len(srv.chat_requests)
    assert n == 5  # the overview's one turn, two per tile
    assert np.array_equal(res.mask, elev > 2000) and len(res.instances) == 1
    steps = [s.text for s in res.plan.steps]
    assert [t for t in steps if "answer: mask(s) 1 (earth.elevation > 2000) as 'above 2000 m'" in t] == [
        "tile 1 (x 0..224, y 0..224): answer: mask(s) 1 (earth.elevation > 2000) as 'above 2000 m'",
        "tile 2 (x 192..416, y 0..224): answer: mask(s) 1 (earth.elevation > 2000) as 'above 2000 m'",
    ], json.dumps(steps)[:2000]


def test_tiles_reasoned_concurrently_give_the_same_answer(reg):
    """``reason_concurrency=2``: two tiles' loops at once over HTTP (each loop has its own client and state)."""
    scene, disc = disc_scene(640, 224, 208, 112, 44)  # 4 tiles starting at x 0, 139, 277, 416
    answers = []
    for concurrency in (1, 2):
        with ScriptedOpenAIServer([eyed_model]) as srv:
            res = segment(scene, srv, reg, reason_concurrency=concurrency)
        answers.append(res)
        assert res.plan.match["tiling"]["concurrency"] == concurrency
    one, two = answers
    assert np.array_equal(one.mask, two.mask) and iou(one.mask, disc) > 0.85
    assert [i.bbox for i in one.instances] == [i.bbox for i in two.instances] and len(one.instances) == 1
    assert one.plan.match["turns"] == two.plan.match["turns"]


def counting_model(req) -> Reply:
    """One segment_phrase per red blob it sees (several calls in one turn), then selects every mask it got."""
    import re

    import cv2

    if turn(req):
        got = [int(n) for m in req.messages if m["role"] == "tool" for n in re.findall(r"mask (\d+):", m["content"])]
        return Reply(tool_calls=[call("select_masks", mask_ids=got, label="red disc")])
    pic = req.images()[0].astype(int)
    red = ((pic[..., 0] > 150) & (pic[..., 1] < 100)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(red)
    if n == 1:
        return Reply(tool_calls=[call("report_no_mask", reason="no red disc")])
    return Reply(tool_calls=[call("segment_phrase", f"c{k}", phrase="red disc", box=[int(x) - 2, int(y) - 2, int(x + w) + 3,
                                                                                   int(y + h) + 3])
                             for k, (x, y, w, h, _) in enumerate(stats[1:])])  # fmt: skip


def test_more_tiles_pointed_at_than_the_budget_keeps_the_most_covered_and_says_so(reg):
    scene, small = disc_scene(800, 224, 90, 112, 20)  # tile 1: a small disc
    big = disc_scene(800, 224, 700, 112, 50)[1]  # tile 4: a big one
    img = scene.read()
    img[:, big] = np.array([220, 30, 30], np.uint8)[:, None]
    scene = Scene(ArraySource(img), "image", ("red", "green", "blue"))
    with ScriptedOpenAIServer([counting_model]) as srv:
        res = segment(scene, srv, reg, agent_max_tiles=1)
        assert len(srv.chat_requests) == 4  # the overview's 2 turns, tile 4's 2
    tiling = res.plan.match["tiling"]
    assert tiling["tiles_skipped"] == [1, 2, 3] and tiling["tiles_with_targets"] == [4]
    assert len(res.instances) == 1 and iou(res.mask, big) > 0.85 and not (res.mask & small).any()
    (note,) = [c for c in res.caveats if "3 of 4 tiles were not examined" in c]
    assert "reached 2 tiles, more than agent_max_tiles=1, so the least covered were dropped" in note
    overview = [s.text for s in res.plan.steps if s.text.startswith("overview: turn 1: segment_phrase")]
    assert len(overview) == 2  # one call per blob, both in the overview's first turn
