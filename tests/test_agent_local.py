"""The agent reasoner on a local VLM through transformers (tiny random Qwen2.5-VL saved with save_pretrained and
loaded through the registry): no endpoint, text tool calls, the same bounded loop."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import engine
from rscore.errors import BackendUnavailable
from rscore.plugins import get_plugin_manager, get_registry
from rscore.types import ArraySource, Request, Scene

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rscore.models.testing import save_tiny_qwen_vl, teach_answer  # noqa: E402
from rscore.reasoners.agent import _LocalClient, make_agent_reasoner  # noqa: E402
from rscore.reasoners.prompting import describe_scene  # noqa: E402
from rscore.reasoners.transformers_vlm import clear_model_cache  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for env in ("RSCORE_WEIGHTS", "RSCORE_DEVICE", "RSCORE_OPENAI_ENDPOINT", "RSCORE_OPENAI_MODEL"):
        monkeypatch.delenv(env, raising=False)


@pytest.fixture
def weights(tmp_path):
    save_tiny_qwen_vl(tmp_path / "weights" / "qwen2.5-vl-3b", "qwen2.5-vl")
    yield tmp_path / "weights"
    clear_model_cache()  # a taught model must not leak into other tests


def _scene() -> Scene:
    img = np.full((3, 56, 84), 30, np.uint8)
    img[:, 10:30, 20:50] = 220
    return Scene(ArraySource(img), "image", ("red", "green", "blue"))


OPTIONS = {"reasoner": "agent", "model": "qwen2.5-vl-3b", "device": "cpu", "segmenter": "classical",
           "transformers_max_new_tokens": 16}  # fmt: skip


def test_an_untrained_local_model_gets_one_repair_turn_then_a_clear_error(weights, monkeypatch):
    agent = make_agent_reasoner({**OPTIONS, "weights": str(weights)})
    assert agent.local is not None and agent.options.tool_format == "text"
    seen = []
    original = agent.local.chat
    monkeypatch.setattr(agent.local, "chat", lambda chat, sent, **k: seen.append((chat, k)) or original(chat, sent, **k))
    from rscore import builtin

    monkeypatch.setattr(builtin, "_agent", lambda options: agent)  # the engine builds this very reasoner
    reg = get_registry(get_plugin_manager(entry_points=False))
    with pytest.raises(BackendUnavailable, match=r"agent reasoner \(local qwen2.5-vl-3b\): .*broke the tool-call format"):
        engine.segment(_scene(), "the bright box", registry=reg, options={**OPTIONS, "weights": str(weights)})
    assert len(seen) == 2
    first_chat, kwargs = seen[0]
    assert len(kwargs["images"]) == 1 and [p["type"] for p in first_chat[1]["content"]] == ["image", "text"]
    assert '"name": "segment_phrase"' in first_chat[0]["content"][0]["text"]
    assert "could not be used" in seen[1][0][-1]["content"][0]["text"]


@pytest.mark.slow  # ~60 s on 2 cores: teaching the tiny model its answer to a ~3k-token prompt
def test_a_taught_local_model_answers_through_the_loop(weights):
    """Teach the tiny model one answer to the agent's first turn (a report_no_mask text call): the real generate,
    decode, text-call parsing and plan."""
    options = {**OPTIONS, "weights": str(weights)}
    agent = make_agent_reasoner(options)
    vlm, scene = agent.local, _scene()
    request = Request("the dog", options=options)
    sent = vlm.fit(np.moveaxis(scene.read(), 0, -1))
    tools, _ = agent.tools(scene, [], {}, None)
    messages = agent._opening(request, sent, describe_scene(scene, sent), tools, "pixels")
    chat, pictures = _LocalClient(vlm).chat_inputs(messages)
    answer = '<tool_call>{"name": "report_no_mask", "arguments": {"reason": "no dog here"}}</tool_call>'
    teach_answer(vlm, vlm.encode(chat, None, images=pictures), answer)
    plan = agent.plan(scene, request, [])
    assert plan.absent and "no dog here" in plan.reason
    assert plan.match["turns"] == 1 and plan.match["reasoner_model"] == "qwen2.5-vl-3b"


def test_a_local_model_reasons_one_tile_at_a_time_an_endpoint_as_many_as_asked(weights):
    from rscore.engine.decoupled import TilingOptions, reason_concurrency

    local = make_agent_reasoner({**OPTIONS, "weights": str(weights)})
    n, note = reason_concurrency(local, TilingOptions(concurrency=4), tiles=9)
    assert n == 1 and "capped at 1" in note and "max_concurrency=1" in note
    remote = make_agent_reasoner({"reasoner": "agent", "endpoint": "http://127.0.0.1:9/v1", "model": "m"})
    assert reason_concurrency(remote, TilingOptions(concurrency=4), tiles=9) == (4, "")
