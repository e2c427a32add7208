"""The ``openai`` reasoner against a real HTTP server on loopback with scripted answers (tests/openai_stub_server.py).

Covers every accepted answer format, the repair turn, absent answers, timeouts, retries with backoff, the total
time bound, error messages naming the endpoint, the picture sent (data URL, max side, multiples) and the mapping of
coordinates back to original pixels, then the whole path through ``rscore.engine.segment`` with the classical
segmenter and through the CLI (exit 2, one line).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from openai_stub_server import RecordedRequest, Reply, ScriptedOpenAIServer

from rscore import engine, hookimpl
from rscore.errors import BackendUnavailable, OptionError
from rscore.plugins import get_plugin_manager, get_registry
from rscore.reasoners.openai import OpenAIOptions, OpenAIReasoner, make_openai_reasoner, normalise_endpoint
from rscore.sdk import Template
from rscore.types import ArraySource, Request, Scene

H, W = 480, 640
DISC_C, DISC_R = (420, 200), 60  # (x, y) centre and radius of the red disc, original pixels
HELMET_PROMPT = "A hard hat is a rigid dome-shaped helmet, usually yellow, white or red, worn on the head."


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for name in ("RSCORE_OPENAI_API_KEY", "OPENAI_API_KEY", "RSCORE_OPENAI_ENDPOINT", "RSCORE_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


def disc_rgb() -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 noisy grey-green picture with a red disc; returns (H, W, 3) uint8 and the disc mask."""
    rng = np.random.default_rng(1)
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = rng.integers(40, 90, (H, W))
    img[..., 1] = rng.integers(70, 120, (H, W))
    img[..., 2] = rng.integers(40, 90, (H, W))
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - DISC_C[0]) ** 2 + (yy - DISC_C[1]) ** 2 <= DISC_R**2
    img[disc] = (220, 30, 30)
    return img, disc


def disc_scene() -> Scene:
    img, _ = disc_rgb()
    return Scene(ArraySource(np.moveaxis(img, -1, 0).copy()), "image", ("red", "green", "blue"))


def red_box(picture: np.ndarray) -> tuple[int, int, int, int]:
    """What a perfect model would answer: the box of the red pixels of the picture it was sent."""
    red = (picture[..., 0] > 150) & (picture[..., 1] < 100)
    ys, xs = np.nonzero(red)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def seeing_model(fmt: str = "rscore") -> callable:
    """A scripted reply that looks at the picture sent and answers in ``fmt`` in the sent picture's pixels."""

    def answer(req: RecordedRequest) -> str:
        x0, y0, x1, y1 = red_box(req.images()[0])
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        if fmt == "rscore":
            return json.dumps(
                {
                    "steps": ["the red round thing is the hard hat", "it is right of centre"],
                    "targets": [
                        {
                            "label": "hard hat",
                            "box": [x0, y0, x1, y1],
                            "positive_points": [[cx, cy]],
                            "negative_points": [[5, 5]],
                            "confidence": 0.9,
                        }
                    ],
                }
            )
        if fmt == "qwen":
            item = {"bbox_2d": [x0, y0, x1, y1], "point_2d": [cx, cy], "label": "hat"}
            return f"Here it is:\n```json\n[{json.dumps(item)}]\n```"
        if fmt == "segzero":
            return (
                f"<think>The helmet is the red dome. It sits on the right.</think>"
                f"<answer>{{'bbox': [{x0},{y0},{x1},{y1}], 'points_1': [{cx},{cy}], "
                f"'points_2': [{cx},{cy + 5}]}}</answer>"
            )
        if fmt == "visionreasoner":
            return (
                f'<think>Only one object matches.</think>\n<answer>[{{"bbox_2d": [{x0},{y0},{x1},{y1}], '
                f'"point_2d": [{cx},{cy}]}}]</answer>'
            )
        raise ValueError(fmt)

    return answer


GOOD = json.dumps({"steps": ["found it"], "targets": [{"label": "hat", "box": [10, 10, 60, 60], "confidence": 0.8}]})


def reasoner(url: str, **opts) -> OpenAIReasoner:
    base = {
        "endpoint": url,
        "model": "test-vlm",
        "openai_backoff_s": 0.01,
        "timeout_s": 5,
        "openai_total_timeout_s": 20,
    }
    return make_openai_reasoner({**base, **opts})


def plan_with(r: OpenAIReasoner, query: str = "the hard hat", templates=(), **options):
    return r.plan(disc_scene(), Request(query, options=options), list(templates))


# --------------------------------------------------------------------------------------------- picture & formats
def test_picture_is_a_resized_data_url_and_boxes_map_back(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    monkeypatch.setenv("RSCORE_OPENAI_API_KEY", "sk-test-123")
    with ScriptedOpenAIServer([seeing_model("rscore")]) as srv:
        plan = plan_with(reasoner(srv.url, max_side=320))
    req = srv.chat_requests[0]
    assert req.headers["authorization"] == "Bearer sk-test-123"  # RSCORE_ key wins over OPENAI_API_KEY
    assert req.json["model"] == "test-vlm" and req.json["temperature"] == 0.0
    url = req.image_urls()[0]
    assert url.startswith("data:image/png;base64,")
    sent = req.images()[0]
    assert max(sent.shape[:2]) <= 320
    assert sent.shape[0] % 28 == 0 and sent.shape[1] % 28 == 0
    assert plan.match["image_sent"] == [sent.shape[1], sent.shape[0]] and plan.match["image_original"] == [W, H]
    # the answer was in sent pixels; the plan is in original pixels, within one sent pixel of the truth
    (t,) = plan.targets
    sx, sy = W / sent.shape[1], H / sent.shape[0]
    truth = (DISC_C[0] - DISC_R, DISC_C[1] - DISC_R, DISC_C[0] + DISC_R + 1, DISC_C[1] + DISC_R + 1)
    for got, want, s in zip(t.box, truth, (sx, sy, sx, sy), strict=True):
        assert abs(got - want) <= 1.5 * s
    (px, py, flag), (nx, ny, nflag) = t.points
    assert flag == 1 and nflag == 0
    assert (px - DISC_C[0]) ** 2 + (py - DISC_C[1]) ** 2 < (DISC_R / 2) ** 2
    assert t.label == "hard hat" and t.confidence == pytest.approx(0.9)
    assert plan.reasoner == "openai" and not plan.absent
    assert [s.text for s in plan.steps][-2:] == ["the red round thing is the hard hat", "it is right of centre"]
    assert plan.match["reasoner_model"] == "test-vlm" and plan.match["endpoint"] == srv.url
    assert plan.match["answer_format"] == "rscore" and plan.match["repaired"] is False
    assert plan.match["tokens"] == {"prompt_tokens": 100, "completion_tokens": 20}


def test_jpeg_and_pixel_budget():
    with ScriptedOpenAIServer([seeing_model("rscore")]) as srv:
        plan_with(reasoner(srv.url, openai_image_format="jpeg", openai_max_pixels=200 * 150, openai_size_multiple=1))
    req = srv.chat_requests[0]
    assert req.image_urls()[0].startswith("data:image/jpeg;base64,")
    h, w = req.images()[0].shape[:2]
    assert h * w <= 200 * 150 and abs(w / h - W / H) < 0.02


@pytest.mark.parametrize(
    "fmt,name", [("qwen", "qwen-grounding"), ("segzero", "seg-zero"), ("visionreasoner", "seg-zero")]
)
def test_each_accepted_format_over_http(fmt, name):
    with ScriptedOpenAIServer([seeing_model(fmt)]) as srv:
        plan = plan_with(reasoner(srv.url))
    (t,) = plan.targets
    assert plan.match["answer_format"] == name
    assert t.box[0] == pytest.approx(DISC_C[0] - DISC_R, abs=4) and t.box[3] == pytest.approx(DISC_C[1] + DISC_R, abs=4)
    if fmt != "qwen":
        assert "<think>" in plan.raw  # the model's own words, reasoning included
        assert any("helmet" in s.text or "matches" in s.text for s in plan.steps)
    if fmt == "segzero":
        assert len(t.points) == 2 and all(f == 1 for _, _, f in t.points)


def test_separate_reasoning_content_becomes_steps():
    with ScriptedOpenAIServer(
        [
            Reply(
                content=GOOD.replace('"steps": ["found it"], ', ""),
                reasoning="First I look for hats. Then I pick the red one.",
            )
        ]
    ) as srv:
        plan = plan_with(reasoner(srv.url))
    assert plan.raw.startswith("<think>First I look for hats.")
    assert [s.text for s in plan.steps][-2:] == ["First I look for hats.", "Then I pick the red one."]


def test_qwen3_vl_names_answer_in_0_1000():
    answer = '[{"bbox_2d": [500, 250, 750, 500], "label": "hat"}]'
    with ScriptedOpenAIServer([answer], models=("Qwen/Qwen3-VL-8B-Instruct",)) as srv:
        plan = plan_with(reasoner(srv.url, model=None))  # model looked up from /v1/models
    assert "normalised to 0..1000" in srv.chat_requests[0].text()
    assert srv.chat_requests[0].json["model"] == "Qwen/Qwen3-VL-8B-Instruct"
    assert plan.match["coordinates"] == "norm1000"
    assert plan.targets[0].box == pytest.approx((320, 120, 480, 240), abs=0.01)


def test_template_expansion_reaches_the_model():
    templates = [
        Template(
            "helmet",
            "hard hat",
            "hard hats worn by workers",
            ("hard hat", "helmet"),
            prompt=HELMET_PROMPT,
            plugin="safety",
        ),
        Template(
            "ladder", "ladder", "ladders on scaffolds", ("ladder",), prompt="Ladders have rungs.", plugin="safety"
        ),
    ]
    with ScriptedOpenAIServer([GOOD, GOOD]) as srv:
        matched = plan_with(reasoner(srv.url), "the hard hat", templates)
        unmatched = plan_with(reasoner(srv.url), "the tallest giraffe", templates)
    first, second = srv.chat_requests
    assert HELMET_PROMPT in first.text() and "Ladders have rungs" not in first.text()
    assert matched.template == "safety:helmet" and matched.match["template"] == "safety:helmet"
    assert "Request: the hard hat" in first.text()
    assert HELMET_PROMPT in second.text() and "Ladders have rungs" in second.text()  # no match: all listed briefly
    assert unmatched.template is None and "listed to the model" in unmatched.steps[0].text


def test_json_schema_response_format_is_sent():
    with ScriptedOpenAIServer([GOOD]) as srv:
        plan_with(reasoner(srv.url, openai_response_format="json_schema", openai_max_tokens=300))
    body = srv.chat_requests[0].json
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["targets"]["type"] == "array"
    assert body["max_tokens"] == 300


# ---------------------------------------------------------------------------------------------- repair & absent
def test_malformed_then_good_is_repaired():
    with ScriptedOpenAIServer(["I think the hat is somewhere on the right.", GOOD]) as srv:
        plan = plan_with(reasoner(srv.url))
    first, second = srv.chat_requests
    assert len(second.messages) == len(first.messages) + 2
    assistant, repair = second.messages[-2:]
    assert assistant == {"role": "assistant", "content": "I think the hat is somewhere on the right."}
    assert repair["role"] == "user" and "no JSON" in repair["content"] and '"targets"' in repair["content"]
    assert second.image_urls() == first.image_urls()  # the conversation keeps its picture
    assert plan.match["repaired"] is True and plan.match["requests"] == 2 and len(plan.targets) == 1
    assert any("repaired" in s.text for s in plan.steps)


def test_always_malformed_fails_clearly_after_one_repair():
    with ScriptedOpenAIServer(['{"bbox_2d": [1, 2']) as srv:
        with pytest.raises(BackendUnavailable) as info:
            plan_with(reasoner(srv.url))
    msg = str(info.value)
    assert srv.url in msg and "test-vlm" in msg and "cut off" in msg and "after 1 repair" in msg
    assert "\n" not in msg
    assert len(srv.chat_requests) == 2


def test_absent_answer():
    with ScriptedOpenAIServer(
        ['{"steps": ["no helmets anywhere"], "absent": true, "reason": "nobody wears one"}']
    ) as srv:
        plan = plan_with(reasoner(srv.url))
    assert plan.absent and plan.reason == "nobody wears one" and plan.targets == ()
    assert plan.steps[-1].text == "no helmets anywhere"


# ------------------------------------------------------------------------------------- timeouts, retries, limits
def test_slow_once_then_answer_is_retried():
    with ScriptedOpenAIServer([Reply(content=GOOD, delay_s=2.0), GOOD]) as srv:
        t0 = time.monotonic()
        plan = plan_with(reasoner(srv.url, timeout_s=0.3))
        elapsed = time.monotonic() - t0
    assert len(plan.targets) == 1 and len(srv.chat_requests) == 2 and elapsed < 2.0


def test_always_slow_is_bounded_by_the_total_time_limit():
    with ScriptedOpenAIServer([Reply(content=GOOD, delay_s=5.0)]) as srv:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            plan_with(reasoner(srv.url, timeout_s=0.3, max_retries=10, openai_total_timeout_s=1.0))
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed  # 1 s budget; slack for a loaded test machine
    msg = str(info.value)
    assert srv.url in msg and "timed out" in msg and "total" in msg
    assert 2 <= len(srv.chat_requests) <= 5


def test_500_then_success_is_retried_with_backoff():
    with ScriptedOpenAIServer([Reply(status=500, content="CUDA out of memory"), Reply(status=503), GOOD]) as srv:
        plan = plan_with(reasoner(srv.url, openai_backoff_s=0.1))
    a, b, c = srv.chat_requests
    assert len(plan.targets) == 1
    assert b.received_at - a.received_at >= 0.1 and c.received_at - b.received_at >= 0.2  # doubling


def test_always_500_fails_naming_the_endpoint():
    with ScriptedOpenAIServer([Reply(status=500, content="engine dead")]) as srv:
        with pytest.raises(BackendUnavailable) as info:
            plan_with(reasoner(srv.url, max_retries=2))
    msg = str(info.value)
    assert msg.startswith(f"openai reasoner: {srv.url} (model 'test-vlm'): HTTP 500: engine dead (3 attempts")
    assert len(srv.chat_requests) == 3


def test_429_retry_after_is_honoured():
    with ScriptedOpenAIServer([Reply(status=429, headers={"Retry-After": "0.3"}), GOOD]) as srv:
        plan_with(reasoner(srv.url))
    a, b = srv.chat_requests
    assert b.received_at - a.received_at >= 0.3


def test_dropped_connection_is_retried():
    with ScriptedOpenAIServer([Reply(drop=True), GOOD]) as srv:
        plan = plan_with(reasoner(srv.url))
    assert len(plan.targets) == 1 and len(srv.chat_requests) == 2


def test_401_is_not_retried_and_names_the_key_variable(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with ScriptedOpenAIServer([Reply(status=401, content="invalid api key")]) as srv:
        with pytest.raises(
            BackendUnavailable, match="HTTP 401: invalid api key; check the API key \\(OPENAI_API_KEY\\)"
        ):
            plan_with(reasoner(srv.url))
    assert len(srv.chat_requests) == 1
    assert srv.chat_requests[0].headers["authorization"] == "Bearer sk-wrong"


def test_nothing_listening_fails_naming_the_endpoint():
    with ScriptedOpenAIServer([GOOD]) as srv:
        url = srv.url
    with pytest.raises(BackendUnavailable, match=f"{url}.*connection failed.*2 attempts"):
        plan_with(reasoner(url, max_retries=1))


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_endpoint_with_or_without_v1(suffix):
    with ScriptedOpenAIServer([GOOD]) as srv:
        plan_with(reasoner(srv.root + suffix))
    assert [r.path for r in srv.requests] == ["/v1/chat/completions"]


def test_model_lookup():
    with ScriptedOpenAIServer([GOOD], models=("only-one",)) as srv:
        r = reasoner(srv.url, model=None)
        plan_with(r)
        plan_with(r)  # looked up once per endpoint
    assert [r.path for r in srv.requests] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert srv.chat_requests[0].json["model"] == "only-one"
    with ScriptedOpenAIServer([GOOD], models=("a", "b")) as srv:
        with pytest.raises(BackendUnavailable, match="pass --model NAME \\(the endpoint serves 2 models: a, b\\)"):
            plan_with(reasoner(srv.url, model=None))


def test_request_options_override_the_factory_options():
    with ScriptedOpenAIServer([GOOD]) as srv:
        r = reasoner(srv.url, max_side=1024)
        plan_with(r, max_side=112)
    assert max(srv.chat_requests[0].images()[0].shape[:2]) <= 112


# ------------------------------------------------------------------------------------------------------ options
def test_options():
    assert normalise_endpoint("http://h:8000") == "http://h:8000/v1"
    assert normalise_endpoint("https://api.example.com/v1beta/openai/") == "https://api.example.com/v1beta/openai"
    with pytest.raises(BackendUnavailable, match="needs an endpoint: pass --endpoint"):
        make_openai_reasoner({"reasoner": "openai"})
    with pytest.raises(OptionError, match="not an http"):
        make_openai_reasoner({"endpoint": "localhost:8000"})
    with pytest.raises(OptionError, match="unknown openai reasoner option\\(s\\) max_sides"):
        make_openai_reasoner({"endpoint": "http://x", "openai_max_sides": 3})
    with pytest.raises(OptionError, match="timeout_s must be > 0"):
        make_openai_reasoner({"endpoint": "http://x", "timeout_s": 0})
    with pytest.raises(OptionError, match="max_retries must be a whole number"):
        make_openai_reasoner({"endpoint": "http://x", "max_retries": "many"})
    o = OpenAIOptions.from_options(
        {"endpoint": "http://x", "timeout_s": "7", "openai_timeout_s": 9, "openai": {"max_side": 512}}
    )
    assert o.timeout_s == 9.0 and o.max_side == 512  # prefixed beats flat, values converted


# ------------------------------------------------------------------------------------------- through the engine
class _OpenAITestPlugin:
    """A plugin with one template; the openai reasoner itself comes from rscore's core registration."""

    @hookimpl
    def rscore_query_templates(self):
        return [
            Template("helmet", "hard hat", "hard hats worn by workers", ("hard hat", "helmet"), prompt=HELMET_PROMPT)
        ]


@pytest.fixture
def openai_registry():
    return get_registry(get_plugin_manager(entry_points=False, extra=[("openai-test", _OpenAITestPlugin())]))


def test_engine_segments_the_boxes_the_model_returns(openai_registry):
    _, disc = disc_rgb()
    with ScriptedOpenAIServer([seeing_model("qwen")]) as srv:
        res = engine.segment(
            disc_scene(),
            "the hard hat",
            plugin="openai-test",
            registry=openai_registry,
            options={
                "reasoner": "openai",
                "segmenter": "classical",
                "endpoint": srv.url,
                "model": "test-vlm",
                "max_side": 448,
            },
        )
    assert not res.absent and res.plan.reasoner == "openai" and res.plan.template == "openai-test:helmet"
    assert res.provenance["reasoner"] == "openai" and res.provenance["segmenter"] == "classical"
    assert HELMET_PROMPT in srv.chat_requests[0].text()
    (inst,) = res.instances
    iou = (inst.mask & disc).sum() / (inst.mask | disc).sum()
    assert iou > 0.9 and inst.label == "hat"
    assert np.array_equal(res.mask, inst.mask)


def test_engine_absent_answer_gives_an_empty_absent_result(openai_registry):
    with ScriptedOpenAIServer(["<think>No helmet is visible.</think><answer>none</answer>"]) as srv:
        res = engine.segment(
            disc_scene(),
            "the hard hat",
            plugin="openai-test",
            registry=openai_registry,
            options={"reasoner": "openai", "segmenter": "classical", "endpoint": srv.url, "model": "m"},
        )
    assert res.absent and res.plan.reason == "No helmet is visible." and not res.mask.any() and res.instances == ()


def test_cli_exit_2_with_one_line_naming_the_endpoint(openai_registry, monkeypatch, tmp_path, capsys):
    from PIL import Image

    from rscore import cli

    img, _ = disc_rgb()
    path = tmp_path / "site.png"
    Image.fromarray(img).save(path)
    monkeypatch.setattr(engine, "default_registry", lambda: openai_registry)
    with ScriptedOpenAIServer([Reply(status=500, content="model crashed")]) as srv:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(
                [
                    "run",
                    str(path),
                    "the hard hat",
                    "--reasoner",
                    "openai",
                    "--segmenter",
                    "classical",
                    "--endpoint",
                    srv.url,
                    "--model",
                    "test-vlm",
                    "--out",
                    str(tmp_path / "out"),
                    "-O",
                    "max_retries=1",
                    "-O",
                    "openai_backoff_s=0.01",
                ]
            )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and srv.url in err and "HTTP 500: model crashed" in err
    assert not (tmp_path / "out").exists()

    with ScriptedOpenAIServer([seeing_model("rscore")]) as srv:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(
                [
                    "run",
                    str(path),
                    "the hard hat",
                    "--plugin",
                    "openai-test",
                    "--reasoner",
                    "openai",
                    "--segmenter",
                    "classical",
                    "--endpoint",
                    srv.url,
                    "--model",
                    "test-vlm",
                    "--out",
                    str(tmp_path / "out"),
                    "--json",
                ]
            )
    assert exit_info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"]["reasoner"] == "openai" and doc["plan"]["match"]["endpoint"] == srv.url
    assert doc["plan"]["raw"] and len(doc["instances"]) == 1
