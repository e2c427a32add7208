"""The VLM reasoner base class as a third party uses it: write ``generate`` only, get fitting, prompting, parsing,
the repair turn and the plan in original pixels.

The backend here answers from a script (what a model would write), so that the skeleton's behaviour is checked on
exact values; the built-in backends run the same skeleton against a real HTTP server (test_openai_reasoner.py) and
real transformers models (test_transformers_vlm.py, test_lisa.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from rscore.errors import BackendUnavailable
from rscore.reasoners.base import Generation, VLMReasoner
from rscore.types import ArraySource, Request, Scene


@dataclass(frozen=True)
class Opts:
    max_side: int = 64
    max_pixels: int = 64 * 64
    size_multiple: int = 16
    coords: str | None = "pixels"
    max_targets: int = 5
    repairs: int = 1


class Scripted(VLMReasoner):
    name = "scripted"
    model_name = "scripted-vlm"

    def __init__(self, answers: list[str]) -> None:
        self.options = Opts()
        self.answers = list(answers)
        self.seen: list[list[dict]] = []

    def generate(self, messages, prepared, options, session):
        self.seen.append(list(messages))
        return Generation(self.answers.pop(0), prompt_tokens=100, completion_tokens=20, seconds=0.01)


def scene(w: int = 256, h: int = 128) -> Scene:
    return Scene(ArraySource(np.zeros((3, h, w), np.uint8)), "image", ("red", "green", "blue"))


def test_the_answer_comes_back_in_original_pixels_with_the_run_recorded():
    r = Scripted(['{"steps": ["a box"], "targets": [{"label": "thing", "box": [8, 8, 24, 16]}]}'])
    plan = r.plan(scene(), Request(query="the thing"), [])
    (t,) = plan.targets
    assert t.box == (32.0, 32.0, 96.0, 64.0)  # the 256x128 scene was sent as 64x32: 4x in both directions
    assert plan.reasoner == "scripted" and plan.match["image_sent"] == [64, 32]
    assert plan.match["requests"] == 1 and plan.match["repaired"] is False
    assert plan.match["tokens"] == {"prompt_tokens": 100, "completion_tokens": 20}
    system, user = r.seen[0]
    assert "Input: an image of 256x128 pixels." in user["content"][1]["text"]  # describe_scene reached the prompt
    assert user["content"][0] == {"type": "image"} and system["role"] == "system"


def test_an_unusable_answer_gets_one_repair_turn_showing_the_model_its_words():
    r = Scripted(["I think it is on the left.", '{"absent": true, "reason": "no such thing"}'])
    plan = r.plan(scene(), Request(query="the thing"), [])
    assert plan.absent and "no such thing" in plan.reason and plan.match["repaired"] is True
    assert len(r.seen) == 2 and r.seen[1][-2] == {"role": "assistant", "content": "I think it is on the left."}
    assert r.seen[1][-1]["content"].startswith("Your answer could not be used: the answer contains no JSON object")
    assert "The picture is 64x32 pixels." in r.seen[1][-1]["content"]
    assert any("repaired" in s.text for s in plan.steps)


def test_still_unusable_after_the_repair_is_one_backend_error():
    r = Scripted(["no json", "still none"])
    with pytest.raises(BackendUnavailable, match=r"^scripted reasoner \(scripted-vlm\): no usable answer: "):
        r.plan(scene(), Request(query="the thing"), [])
