"""The agent reasoner over real HTTP: a loopback OpenAI-compatible server scripted to call tools the way an MLLM does
(segment, examine, reject, re-segment, compose a plugin operator with a mask, report no mask), and models that break
the format or never stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from openai_stub_server import Reply, ScriptedOpenAIServer, call, text_call

from rscore import engine
from rscore.errors import BackendUnavailable, OptionError
from rscore.plugins import get_registry
from rscore.reasoners.agent import parse_text_tool_calls
from rscore.types import ArraySource, Scene

W, H = 224, 168  # multiples of 28: the picture is sent at its own size, boxes are in its pixels


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for env in ("RSCORE_OPENAI_ENDPOINT", "RSCORE_OPENAI_MODEL", "RSCORE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(env, raising=False)


@pytest.fixture(scope="module")
def reg():
    return get_registry()


def site() -> tuple[Scene, np.ndarray, np.ndarray]:
    """Grey ground, a red disc (the hard hat), a blue square (a bucket), a fluorescent yellow-green patch (a vest)."""
    img = np.full((H, W, 3), 90, np.uint8)
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 50) ** 2 + (xx - 60) ** 2 <= 20**2
    img[disc] = (220, 30, 30)
    img[100:140, 150:190] = (30, 40, 210)
    vest = np.zeros((H, W), bool)
    vest[90:130, 40:80] = True
    img[vest] = (200, 255, 40)
    return Scene(ArraySource(img.transpose(2, 0, 1).copy()), "image", ("red", "green", "blue")), disc, vest


def segment(scene, srv, reg, plugin="safety", query="the hard hat", **options):
    opts = {"reasoner": "agent", "endpoint": srv.url, "model": "test-vlm", "segmenter": "classical",
            "openai_backoff_s": 0.01, **options}  # fmt: skip
    return engine.segment(scene, query, plugin=plugin, options=opts, registry=reg)


def iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_segment_examine_reject_resegment_select(reg):
    scene, disc, _ = site()
    script = [
        Reply(content="Looking for a helmet.", tool_calls=[call("segment_phrase", phrase="helmet", box=[140, 90, 200, 150])]),
        Reply(tool_calls=[call("examine_masks", mask_ids=[1])]),
        Reply(content="Mask 1 is a blue bucket, not a hat. Try the red round thing.",
              tool_calls=[call("segment_phrase", phrase="red hard hat", box=[36, 26, 84, 74])]),
        Reply(tool_calls=[call("examine_masks", mask_ids=[2])]),
        Reply(content="Mask 2 is the hat.", tool_calls=[call("select_masks", mask_ids=[2], label="hard hat")]),
    ]  # fmt: skip
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg)
        reqs = srv.chat_requests
    assert not res.plan.absent and res.plan.reasoner == "agent"
    assert len(res.instances) == 1 and res.instances[0].label == "hard hat"
    assert iou(res.mask, disc) > 0.8
    m = res.plan.match
    assert m["turns"] == 5 and m["tool_calls"] == 5 and m["tokens"] == 5 * 120 and m["selected"] == [2]
    assert 0 < m["endpoint_time_s"] <= m["agent_time_s"]
    texts = [s.text for s in res.plan.steps]
    assert any("model: Mask 1 is a blue bucket" in t for t in texts)
    assert any(t.startswith("turn 3: segment_phrase(") and "mask 2:" in t for t in texts)
    # the examined overlays went back to the model as pictures, after the tool result
    assert len(reqs[0].image_urls()) == 1 and len(reqs[2].image_urls()) == 2
    tool_msgs = [mm for mm in reqs[1].messages if mm["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["content"].startswith("mask 1:")
    overlay = reqs[2].images()[1]
    assert overlay.shape == (H, W, 3) and not np.array_equal(overlay, reqs[0].images()[0])


def test_tools_carry_the_plugin_operators_typed_schemas(reg):
    scene, _, _ = site()
    with ScriptedOpenAIServer([Reply(tool_calls=[call("report_no_mask", reason="no hat")])]) as srv:
        segment(scene, srv, reg)
        tools = {t["function"]["name"]: t["function"] for t in srv.chat_requests[0].json["tools"]}
    assert {"segment_phrase", "examine_masks", "select_masks", "report_no_mask", "combine_masks"} <= set(tools)
    hivis = tools["op_safety_hivis"]
    assert hivis["parameters"]["properties"]["compare"]["enum"] == ["<", "<=", ">", ">=", "in"]
    assert "template_hivis" in tools and not any(n.startswith("op_earth") for n in tools)


def test_compose_a_plugin_operator_with_a_mask(reg):
    """segment the worker's region, then keep the hi-vis colour inside it: an operator composed with a mask."""
    scene, _, vest = site()
    script = [
        Reply(tool_calls=[call("segment_phrase", phrase="worker", box=[30, 80, 100, 150])]),
        Reply(tool_calls=[call("op_safety_hivis", within=1)]),
        Reply(tool_calls=[call("select_masks", mask_ids=[2], label="hi-vis vest")]),
    ]
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg, query="the worker's hi-vis vest")
    assert np.array_equal(res.mask, vest & res.mask) and iou(res.mask, vest) > 0.95
    assert res.instances[0].attributes["source"].startswith("safety.hivis > 0 within mask 1")


def test_report_no_mask_is_absent_with_the_reason(reg):
    scene, _, _ = site()
    script = [Reply(tool_calls=[call("segment_phrase", phrase="dog", box=[0, 0, 40, 40])]),
              Reply(tool_calls=[call("examine_masks", mask_ids=[1])]),
              Reply(tool_calls=[call("report_no_mask", reason="mask 1 is bare ground; there is no dog")])]  # fmt: skip
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg, query="the dog")
    assert res.plan.absent and "there is no dog" in res.plan.reason and not res.mask.any()


def test_qwen_text_tool_calls_are_read_and_answered_in_kind(reg):
    scene, disc, _ = site()
    script = [
        "<think>The hat is red.</think>\n" + text_call("segment_phrase", phrase="hat", box=[36, 26, 84, 74]),
        text_call("select_masks", mask_ids=[1]),
    ]
    with ScriptedOpenAIServer(script, models=("Qwen/Qwen2.5-VL-7B-Instruct",)) as srv:
        res = segment(scene, srv, reg, model="Qwen/Qwen2.5-VL-7B-Instruct")
        second = srv.chat_requests[1].messages
    assert iou(res.mask, disc) > 0.8
    assert second[-1]["role"] == "user" and "<tool_response>" in second[-1]["content"]
    assert any("The hat is red" in s.text for s in res.plan.steps)


def test_qwen3_norm1000_boxes_map_to_pixels(reg):
    scene, disc, _ = site()
    box = [int(36 / W * 1000), int(26 / H * 1000), int(84 / W * 1000), int(74 / H * 1000)]
    script = [text_call("segment_phrase", phrase="hat", box=box), text_call("select_masks", mask_ids=[1])]
    with ScriptedOpenAIServer(script, models=("Qwen/Qwen3-VL-8B-Instruct",)) as srv:
        res = segment(scene, srv, reg, model="Qwen/Qwen3-VL-8B-Instruct")
    assert iou(res.mask, disc) > 0.8


def test_malformed_calls_get_one_repair_turn(reg):
    scene, disc, _ = site()
    script = [
        "I think the hat is at the top left.",  # no tool call at all
        Reply(tool_calls=[call("segment_phrase", phrase="hat", box=[36, 26, 84, 74])]),
        Reply(tool_calls=[{"id": "x", "type": "function", "function": {"name": "select_masks", "arguments": "{1"}}]),
        Reply(tool_calls=[call("select_masks", mask_ids=[7])]),  # a readable call with a wrong mask number: a tool error
        Reply(tool_calls=[call("select_masks", mask_ids=[1])]),
    ]
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg)
        repair = srv.chat_requests[1].messages[-1]["content"]
    assert iou(res.mask, disc) > 0.8 and res.plan.match["turns"] == 5
    assert "could not be used: no tool call in the reply" in repair
    texts = [s.text for s in res.plan.steps]
    assert any("unusable reply (the arguments are not JSON" in t for t in texts)
    assert any("error: there is no mask 7" in t for t in texts)


def test_a_model_that_keeps_breaking_format_is_a_clear_error(reg):
    scene, _, _ = site()
    with ScriptedOpenAIServer([text_call("paint_everything", colour="red")]) as srv:
        with pytest.raises(BackendUnavailable, match=r"broke the tool-call format \(there is no tool 'paint_everything'\) "
                                                      r"after 1 repair turn"):  # fmt: skip
            segment(scene, srv, reg)
        assert len(srv.chat_requests) == 2


def test_a_model_that_never_stops_hits_the_turn_limit(reg):
    scene, _, _ = site()
    loop = [Reply(tool_calls=[call("segment_phrase", phrase="hat", box=[36, 26, 84, 74])]),
            Reply(tool_calls=[call("examine_masks", mask_ids=[1])])]  # fmt: skip
    with ScriptedOpenAIServer(loop * 10) as srv:
        with pytest.raises(BackendUnavailable, match="no final answer after 4 turns .*agent_max_turns"):
            segment(scene, srv, reg, agent_max_turns=4)
        assert len(srv.chat_requests) == 4


def test_token_budget_is_a_bound(reg):
    scene, _, _ = site()
    big = Reply(tool_calls=[call("segment_phrase", phrase="hat", box=[36, 26, 84, 74])],
                usage={"prompt_tokens": 900, "completion_tokens": 100, "total_tokens": 1000})  # fmt: skip
    with ScriptedOpenAIServer([big]) as srv:
        with pytest.raises(BackendUnavailable, match="2000 tokens used without a final answer"):
            segment(scene, srv, reg, agent_max_total_tokens=2000)


def test_bad_bounds_are_option_errors(reg):
    scene, _, _ = site()
    with ScriptedOpenAIServer(["x"]) as srv:
        with pytest.raises(OptionError, match="agent reasoner: max_turns must be 1..100"):
            segment(scene, srv, reg, agent_max_turns=0)
        with pytest.raises(OptionError, match="unknown agent reasoner option"):
            segment(scene, srv, reg, agent={"max_turn": 3})


def test_text_call_parser():
    calls = parse_text_tool_calls('a <tool_call>{"name": "x", "arguments": {"a": 1}}</tool_call> b '
                                  '<tool_call>{"name": "y", "arguments": "{\\"b\\": 2}"}</tool_call>'
                                  "<tool_call>not json</tool_call>")  # fmt: skip
    assert [(c.name, c.arguments, c.error is None) for c in calls[:2]] == [("x", {"a": 1}, True), ("y", {"b": 2}, True)]
    assert calls[2].error and "not JSON" in calls[2].error
    assert json.loads(json.dumps([c.arguments for c in calls]))


def test_eval_runs_the_agent_and_reports_turns_tool_calls_and_latency(reg, tmp_path):
    from PIL import Image

    from rscore.evaluation import evaluate

    scene, disc, _ = site()
    Image.fromarray(scene.read().transpose(1, 2, 0)).save(tmp_path / "site.png")
    Image.fromarray(disc.astype(np.uint8) * 255).save(tmp_path / "hat.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "site.png", "query": "the hard hat", "mask": "hat.png"}))
    script = [Reply(tool_calls=[call("segment_phrase", phrase="hat", box=[36, 26, 84, 74])]),
              Reply(tool_calls=[call("select_masks", mask_ids=[1])])]  # fmt: skip
    with ScriptedOpenAIServer(script) as srv:
        report = evaluate("safety", tmp_path / "m.jsonl", {"reasoner": "agent", "segmenter": "classical",
                                                            "engine": {"endpoint": srv.url, "model": "test-vlm"}}, reg)
    (sample,) = report.samples
    assert sample["turns"] == 2 and sample["tool_calls"] == 2 and sample["time_s"] >= sample["endpoint_time_s"] > 0
    assert report.metrics["gIoU"] > 0.8


def test_a_scene_too_large_for_memory_is_refused_before_any_request(reg, monkeypatch):
    monkeypatch.setenv("RSCORE_IN_MEMORY_PIXELS", "1000")
    scene, _, _ = site()
    with ScriptedOpenAIServer(["x"]) as srv:
        with pytest.raises(OptionError, match="larger than RSCORE_IN_MEMORY_PIXELS"):
            segment(scene, srv, reg)
        assert not srv.chat_requests


def test_cli_runs_the_agent_and_fails_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    scene, disc, _ = site()
    Image.fromarray(scene.read().transpose(1, 2, 0)).save(tmp_path / "site.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSCORE_OPENAI", "OPENAI_"))}

    def rscore(*args):
        return subprocess.run([sys.executable, "-m", "rscore", "run", "--plugin", "safety", "site.png", "the hard hat",
                               "--reasoner", "agent", "--segmenter", "classical", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    missing = rscore("--out", "o1")
    assert missing.returncode == 2 and "reasoner 'agent' needs an endpoint" in missing.stderr
    script = [Reply(tool_calls=[call("segment_phrase", phrase="hat", box=[36, 26, 84, 74])]),
              Reply(tool_calls=[call("select_masks", mask_ids=[1])])]  # fmt: skip
    with ScriptedOpenAIServer(script) as srv:
        ok = rscore("--endpoint", srv.url, "--model", "test-vlm", "--out", "o2", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["plan"]["reasoner"] == "agent" and doc["plan"]["match"]["turns"] == 2 and len(doc["instances"]) == 1
    with ScriptedOpenAIServer(["no tools today"]) as srv:
        bad = rscore("--endpoint", srv.url, "--model", "test-vlm", "--out", "o3")
    assert bad.returncode == 2 and "broke the tool-call format" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "o3").exists()


class _RedPhraseSegmenter:
    """A text-prompted segmenter for the test: 'red ...' phrases are the red pixels (a real colour rule)."""

    name = "red-phrase"

    def segment_phrase(self, image, phrase):
        from rscore.instances import mask_bbox
        from rscore.types import Instance

        if not phrase.startswith("red"):
            return []
        mask = (image[..., 0] > 180) & (image[..., 1] < 80)
        return [Instance(phrase, 0.9, mask_bbox(mask), int(mask.sum()), mask)]

    def segment(self, image, targets):  # the box path, unused when a phrase segmenter is there
        raise AssertionError("segment_phrase should have been used")


def test_a_text_prompted_segmenter_from_the_request_registry_needs_no_box(tmp_path):
    import types

    from rscore import hookimpl
    from rscore.plugins import get_plugin_manager
    from rscore.sdk import BackendSpec

    plug = types.SimpleNamespace(rscore_backends=hookimpl(lambda: [
        BackendSpec("segmenter", "red-phrase", lambda options: _RedPhraseSegmenter(), "test phrase segmenter")]))  # fmt: skip
    reg = get_registry(get_plugin_manager(extra=[("phrasetest", plug)]))
    scene, disc, _ = site()
    script = [Reply(tool_calls=[call("segment_phrase", phrase="blue hat")]),  # nothing for that phrase
              Reply(tool_calls=[call("segment_phrase", phrase="red hat")]),
              Reply(tool_calls=[call("select_masks", mask_ids=[1])])]  # fmt: skip
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg, segmenter="red-phrase")
    assert np.array_equal(res.mask, disc) and res.instances[0].score == pytest.approx(0.9)
    assert any("no mask for 'blue hat'" in s.text for s in res.plan.steps)


def test_text_tool_format_describes_the_tools_in_the_prompt_for_servers_without_tools(reg):
    scene, disc, _ = site()
    script = [text_call("segment_phrase", phrase="hat", box=[36, 26, 84, 74]), text_call("select_masks", mask_ids=[1])]
    with ScriptedOpenAIServer(script) as srv:
        res = segment(scene, srv, reg, agent_tool_format="text")
        first = srv.chat_requests[0].json
    assert "tools" not in first and "tool_choice" not in first
    system = first["messages"][0]["content"]
    assert '"name": "segment_phrase"' in system and '"name": "op_safety_hivis"' in system
    assert iou(res.mask, disc) > 0.8


def test_a_server_refusing_tools_gets_a_hint(reg):
    scene, _, _ = site()
    refusal = Reply(status=400, content='"auto" tool choice requires --enable-auto-tool-choice')
    with ScriptedOpenAIServer([refusal]) as srv:
        with pytest.raises(BackendUnavailable, match="HTTP 400.*enable-auto-tool-choice.*-O agent_tool_format=text"):
            segment(scene, srv, reg)
