"""benchmarks/gpu_agent.py (the agent with real models on a lent GPU) on a CPU machine: its argument handling, the
one-line refusal naming everything missing (weights, vLLM, CUDA) before anything loads, and - with --allow-cpu
against the loopback OpenAI-compatible server and the classical segmenter - its demo run and figures end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_stub_server import ScriptedOpenAIServer
from test_agent_tiles import eyed_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_agent.py"


def cuda_here() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSCORE_OPENAI", "OPENAI_", "HF_"))}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HOME"] = str(cwd or Path.cwd()) + "/hf-empty"  # no cached weights leak in from the machine
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)  # fmt: skip


def test_help_and_bad_arguments_exit_2_with_the_reason(tmp_path):
    ok = script("--help", cwd=tmp_path)
    assert ok.returncode == 0 and "--serve {vllm,transformers,endpoint}" in ok.stdout and "--demo" in ok.stdout
    for args, why in (
        ((), "say what to run: --demo, --dataset PATH or --check"),
        (("--demo", "--serve", "endpoint"), "--serve endpoint needs --endpoint URL"),
        (("--demo", "--endpoint", "http://127.0.0.1:9/v1"), "--endpoint is for --serve endpoint"),
        (("--demo", "--check"), "not allowed with argument"),
        (("--demo", "-O", "agent_max_tiles"), "-O takes KEY=VALUE"),
        (("--demo", "--segmenter", "sam9"), "invalid choice: 'sam9'"),
    ):
        r = script(*args, cwd=tmp_path)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.skipif(cuda_here(), reason="checks the no-CUDA refusal")
def test_missing_weights_vllm_and_cuda_are_named_in_one_line_before_anything_loads(tmp_path):
    (tmp_path / "w").mkdir()
    r = script("--check", "--weights", str(tmp_path / "w"), "--vlm", "qwen3-vl-8b", "--segmenter", "sam3", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("gpu_agent: cannot run: (1) ")
    assert "'qwen3-vl-8b'" in line and "rscore models pull qwen3-vl-8b" in line and "DIR/qwen3-vl-8b/" in line
    assert "'sam3'" in line and "DIR/sam3/" in line
    assert "no CUDA device here" in line and "--allow-cpu" in line
    vllm_missing = "vLLM is not installed" in line
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert vllm_missing
    gone = script("--demo", "--weights", str(tmp_path / "nope"), cwd=tmp_path)
    assert gone.returncode == 2 and f"weights folder {tmp_path / 'nope'} not found" in gone.stderr
    data = script("--dataset", str(tmp_path / "none.jsonl"), "--serve", "endpoint", "--endpoint", "http://127.0.0.1:9/v1",
                  "--segmenter", "classical", "--allow-cpu", cwd=tmp_path)  # fmt: skip
    assert data.returncode == 2 and data.stderr.strip() == f"gpu_agent: cannot run: (1) dataset {tmp_path / 'none.jsonl'} not found"


def test_demo_runs_end_to_end_on_cpu_against_an_endpoint_and_prints_the_figures(tmp_path):
    out = tmp_path / "figures.json"
    with ScriptedOpenAIServer([eyed_model]) as srv:
        r = script("--serve", "endpoint", "--endpoint", srv.url, "--model", "test-vlm", "--segmenter", "classical",
                   "--demo", "--allow-cpu", "--large-side", "1024", "-O", "max_side=256", "--json", str(out),
                   cwd=tmp_path)  # fmt: skip
        requests = len(srv.chat_requests)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "gpu_agent: ready - device cpu" in r.stdout and "overhead_ratio" in r.stdout
    figures = json.loads(out.read_text())
    site, large = figures["demo"]
    # pictures of 256 px: tiles of 512 px, all examined after the overview (<= agent_max_tiles): 1024x768 in
    # 2 x 3 tiles, 1024x1024 in 3 x 3
    assert site["loops"] == 7 and site["iou"] > 0.8 and not site["absent"]
    assert large["loops"] == 10 and large["iou"] > 0.8
    assert requests == figures["warmup_turns"] + site["turns"] + large["turns"] and figures["warmup_turns"] == site["turns"]
    assert site["endpoint_s"] > 0 and site["overhead_ratio"] is not None
