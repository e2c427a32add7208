"""benchmarks/bench_vlm_requests.py (issue 22, the GPU path): VLM requests/s through rscore's ``openai`` reasoner beside
a bare client. Run briefly against the loopback OpenAI-compatible server (real HTTP): both rows and the ratio come
back, both sides read the answer's box, and both sent byte-identical requests for each picture. No timing asserts."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from openai_stub_server import Reply, ScriptedOpenAIServer  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vlm_requests", ROOT / "benchmarks" / "bench_vlm_requests.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_both_sides_send_the_same_requests_and_read_the_answer(bench):
    pictures = bench.synthetic_pictures(3, seed=1)
    with ScriptedOpenAIServer([Reply(content=bench.STUB_ANSWER)]) as srv:
        out = bench.measure(srv.url, "test-vlm", pictures, concurrency=(1, 2), repeat=1)
        chats = srv.chat_requests
    sides = [(r["side"], r["concurrency"]) for r in out["rows"]]
    assert sides == [("bare", 1), ("rscore", 1), ("bare", 2), ("rscore", 2)]
    for row in out["rows"]:
        assert row["requests"] == 3 and row["requests_per_s"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0
        assert row["boxes_per_request"] == 1.0  # the one scripted target, read by either client
    assert [r["concurrency"] for r in out["ratios"]] == [1, 2]
    assert all(r["ratio"] > 0 for r in out["ratios"])
    # the same N requests: per picture, every body sent (bare and rscore, every round) is the same JSON
    bodies: dict[str, set[str]] = defaultdict(set)
    for req in chats:
        bodies[req.image_urls()[0]].add(json.dumps(req.json, sort_keys=True))
    assert len(bodies) == 3
    assert all(len(b) == 1 for b in bodies.values())
    assert len(chats) == 2 + 2 * 2 * 3  # warm-up pair, then 2 sides x 2 concurrencies x 3 pictures


def test_bare_client_reads_rscore_and_qwen_answers(bench):
    assert bench.bare_boxes(bench.STUB_ANSWER) == [[96, 120, 212, 430]]
    qwen = 'Here:\n```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "vest"}]\n```'
    assert bench.bare_boxes(qwen) == [[1, 2, 30, 40]]
    assert bench.bare_boxes("no JSON here") == []


def test_script_prints_both_rows_and_the_ratio(bench, capsys):
    assert bench.main(["--requests", "2", "--concurrency", "1", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    assert "loopback stub" in text and "ratio" in text
    assert any(line.split()[:2] == ["bare", "1"] for line in text.splitlines())
    assert any(line.split()[:2] == ["rscore", "1"] for line in text.splitlines())
