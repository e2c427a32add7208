"""The transformers reasoner with tiny random Qwen2.5-VL / Qwen3-VL models saved with save_pretrained and loaded
through the registry (--weights), and the decoupled engine path: reasoner -> parser -> SAM2 -> instances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rscore.errors import BackendUnavailable, OptionError
from rscore.types import ArraySource, Request, Scene

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rscore.hookspecs import hookimpl  # noqa: E402
from rscore.models.testing import save_tiny_hf_sam2, save_tiny_qwen_vl, targets_json, teach_answer  # noqa: E402
from rscore.reasoners.prompting import describe_scene  # noqa: E402
from rscore.reasoners.transformers_vlm import (  # noqa: E402
    THINK_ANSWER_SIDE,
    TransformersOptions,
    TransformersReasoner,
    clear_model_cache,
    make_transformers_reasoner,
)
from rscore.sdk import BackendSpec, Template  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    monkeypatch.delenv("RSCORE_DEVICE", raising=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A --weights folder with tiny models under registered names, as a user would lay out real ones."""
    root = tmp_path_factory.mktemp("weights")
    save_tiny_qwen_vl(root / "qwen2.5-vl-3b", "qwen2.5-vl")
    save_tiny_qwen_vl(root / "qwen3-vl-2b", "qwen3-vl")
    save_tiny_hf_sam2(root / "hf-sam2.1-hiera-tiny")
    yield root
    clear_model_cache()  # the taught model must not leak into other modules


def _scene() -> Scene:
    """160x120 RGB: a bright rectangle at x 40..100, y 30..80 on a dark background."""
    img = np.full((3, 120, 160), 20, np.uint8)
    img[:, 30:80, 40:100] = (230, 210, 60)[0]
    return Scene(ArraySource(img), "image", ("red", "green", "blue"))


BOX_TEMPLATE = Template(
    name="bright-box",
    label="bright box",
    description="bright rectangular objects",
    examples=("the bright box",),
    prompt="A bright box is a rectangle much lighter than its surroundings.",
    keywords=("bright", "box"),
    plugin="demo",
)


@pytest.fixture(scope="module")
def taught(weights):
    """The tiny Qwen2.5-VL taught (a few dozen Adam steps) to answer the bright-box request with one target."""
    reasoner = make_transformers_reasoner({"model": "qwen2.5-vl-3b", "weights": str(weights), "device": "cpu"})
    scene, request = _scene(), Request("the bright box", options={"matcher": "keyword"})
    sent = reasoner.fit(np.moveaxis(scene.read(), 0, -1))
    convo = reasoner.conversation(sent, request, [BOX_TEMPLATE], kind="image", context=describe_scene(scene, sent))
    sx, sy = sent.size[0] / 160, sent.size[1] / 120  # the model answers in pixels of the picture it was sent
    answer = targets_json(
        [{"label": "bright box", "box": [round(40 * sx), round(30 * sy), round(100 * sx), round(80 * sy)],
          "positive_points": [[round(70 * sx), round(55 * sy)]], "confidence": 0.9}],
        steps=["a light rectangle stands out"],
    )
    teach_answer(reasoner, reasoner.encode(convo.messages, sent), answer)
    return reasoner, scene, request, answer


# ------------------------------------------------------------------------------------------------------- reasoning
def test_taught_model_plans_targets_in_original_pixels(taught):
    reasoner, scene, request, answer = taught
    plan = reasoner.plan(scene, request, [BOX_TEMPLATE])
    assert not plan.absent and plan.reasoner == "transformers" and plan.template == "demo:bright-box"
    assert plan.raw == answer  # greedy decoding reproduces what the model learned
    (target,) = plan.targets
    assert target.label == "bright box" and target.confidence == pytest.approx(0.9)
    assert target.box == pytest.approx((40, 30, 100, 80), abs=1.5)  # mapped back from the sent picture
    assert target.points[0][:2] == pytest.approx((70, 55), abs=1.5) and target.points[0][2] == 1
    m = plan.match
    assert m["reasoner_model"] == "qwen2.5-vl-3b" and m["model_source"] == "weights" and m["coordinates"] == "pixels"
    assert m["device"] == "cpu" and m["dtype"] == "float32" and m["requests"] == 1 and not m["repaired"]
    assert m["tokens"]["completion_tokens"] == 2  # the answer (taught as one token) + end of turn
    assert m["image_original"] == [160, 120] and m["image_sent"][0] % 28 == 0 and m["image_sent"][1] % 28 == 0
    assert any("a light rectangle stands out" == s.text for s in plan.steps)
    assert any("domain knowledge" in s.text and "demo:bright-box" in s.text for s in plan.steps)


def test_decoupled_engine_path_reasoner_to_sam2(taught, weights):
    """The engine with the taught reasoner and transformers' SAM2: query -> plan -> masks -> result."""
    import rscore.reasoners.transformers_vlm as vlm
    import rscore.segmenters.sam2 as sam2_backends
    from rscore.engine import segment
    from rscore.plugins import get_plugin_manager, get_registry

    class Backends:
        @hookimpl
        def rscore_backends(self):
            return [BackendSpec("reasoner", "test-transformers", vlm.make_transformers_reasoner, "tiny qwen"),
                    BackendSpec("segmenter", "test-sam2-hf", sam2_backends.make_hf_sam2_segmenter, "tiny sam2")]

        @hookimpl
        def rscore_query_templates(self):
            return [BOX_TEMPLATE]

    reg = get_registry(get_plugin_manager(entry_points=False, extra=[("demo", Backends())]))
    _, scene, _, _ = taught
    options = {"reasoner": "test-transformers", "segmenter": "test-sam2-hf", "model": "qwen2.5-vl-3b",
               "weights": str(weights), "device": "cpu", "matcher": "keyword"}
    result = segment(scene, "the bright box", plugin="demo", options=options, registry=reg)
    assert not result.absent and result.plan.reasoner == "transformers"
    (inst,) = result.instances
    assert inst.label == "bright box" and inst.attributes["segmenter"] == "sam2-hf"
    assert inst.mask.shape == (120, 160) and np.array_equal(result.mask, inst.mask)
    assert 0 < inst.score <= 0.9
    assert result.provenance["segmenter"] == "test-sam2-hf"


def test_untrained_model_gets_a_repair_turn_then_a_clear_error(weights, monkeypatch):
    """Qwen3-VL (mm_token_type_ids, 32 px patches, 0-1000 coordinates) answering gibberish: one repair, then an error
    naming the model."""
    reasoner = make_transformers_reasoner({"model": "qwen3-vl-2b", "weights": str(weights),
                                           "transformers_max_new_tokens": 24})
    assert reasoner.model_type == "qwen3_vl"
    scene = _scene()
    request = Request("the bright box", options={"matcher": "keyword"})
    sent = reasoner.fit(np.moveaxis(scene.read(), 0, -1))
    assert sent.size[0] % 32 == 0 and sent.size[1] % 32 == 0
    convo = reasoner.conversation(sent, request, [BOX_TEMPLATE], kind="image")
    assert convo.frame == "norm1000" and "normalised to 0..1000" in convo.messages[0]["content"][0]["text"]
    inputs = reasoner.encode(convo.messages, sent)
    assert "mm_token_type_ids" in inputs and int(inputs["image_grid_thw"].prod()) > 0
    calls = []
    original = reasoner.generate
    monkeypatch.setattr(reasoner, "generate", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    with pytest.raises(BackendUnavailable) as exc:
        reasoner.plan(scene, request, [BOX_TEMPLATE])
    assert "transformers reasoner (qwen3-vl-2b): no usable answer" in str(exc.value)
    assert "after 1 repair attempt" in str(exc.value)
    assert len(calls) == 2 and calls[1][-2]["role"] == "assistant" and "could not be used" in calls[1][-1]["content"]


def test_think_answer_style_uses_its_own_prompt_and_picture(weights):
    reasoner = make_transformers_reasoner({"model": "qwen2.5-vl-3b", "weights": str(weights),
                                           "transformers": {"prompt_style": "think-answer"}})
    scene = _scene()
    sent = reasoner.fit(np.moveaxis(scene.read(), 0, -1))
    assert sent.size == (THINK_ANSWER_SIDE, THINK_ANSWER_SIDE) and sent.original_size == (160, 120)
    convo = reasoner.conversation(sent, Request("the bright box", options={"matcher": "keyword"}), [BOX_TEMPLATE])
    (message,) = convo.messages
    text = message["content"][1]["text"]
    assert convo.style == "think-answer" and convo.frame == "pixels"
    assert 'Please find "the bright box"' in text and "<answer>" in text and "Domain knowledge (bright box)" in text


def test_models_load_once_and_absent_weights_say_what_to_pull(weights):
    a = make_transformers_reasoner({"model": "qwen2.5-vl-3b", "weights": str(weights)})
    b = make_transformers_reasoner({"model": str(weights / "qwen2.5-vl-3b")})  # the same folder, named by path
    assert a.model is b.model and b.resolved.source == "path"
    with pytest.raises(BackendUnavailable) as exc:
        make_transformers_reasoner({"model": "qwen2.5-vl-7b", "weights": str(weights)})
    assert "`rscore models pull qwen2.5-vl-7b`" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BackendUnavailable, match=r"rscore models pull qwen3-vl-4b"):
        make_transformers_reasoner({})  # auto, nothing here
    auto = make_transformers_reasoner({"weights": str(weights)})  # auto: the best registered reasoner present
    assert auto.model_name == "qwen2.5-vl-3b"


def test_options():
    o = TransformersOptions.from_options({"model": "qwen3-vl-8b", "max_side": 768, "transformers_repairs": 0,
                                         "transformers": {"coords": "norm1000"}, "endpoint": "ignored"})
    assert (o.model, o.max_side, o.repairs, o.coords) == ("qwen3-vl-8b", 768, 0, "norm1000")
    with pytest.raises(OptionError, match="unknown transformers reasoner option"):
        TransformersOptions.from_options({"transformers_beam": 4})
    with pytest.raises(OptionError, match="temperature"):
        TransformersOptions.from_options({"temperature": 5})
    with pytest.raises(OptionError, match="max_new_tokens must be a whole number"):
        TransformersOptions.from_options({"transformers_max_new_tokens": "many"})


def test_taught_qwen3_answers_in_normalised_coordinates(tmp_path):
    """The same full path for Qwen3-VL, whose answers are 0-1000 normalised (the answer taught as one token: byte by
    byte took some 150 steps and a minute or two of the default suite on 2 cores for no extra check)."""
    save_tiny_qwen_vl(tmp_path / "qwen3-vl-4b", "qwen3-vl", seed=1)
    reasoner = make_transformers_reasoner({"model": "qwen3-vl-4b", "weights": str(tmp_path)})
    scene, request = _scene(), Request("the bright box", options={"matcher": "keyword"})
    sent = reasoner.fit(np.moveaxis(scene.read(), 0, -1))
    convo = reasoner.conversation(sent, request, [BOX_TEMPLATE], kind="image", context=describe_scene(scene, sent))
    answer = json.dumps({"targets": [{"label": "bright box", "box": [250, 250, 625, 667]}]}, separators=(",", ":"))
    teach_answer(reasoner, reasoner.encode(convo.messages, sent), answer)
    plan = reasoner.plan(scene, request, [BOX_TEMPLATE])
    assert plan.match["coordinates"] == "norm1000" and plan.raw == answer
    assert plan.targets[0].box == pytest.approx((40, 30, 100, 80), abs=1.0)
    assert isinstance(reasoner, TransformersReasoner)
