"""``-O load_in=8bit|4bit``: the bitsandbytes configuration handed to ``from_pretrained`` / used for LISA, and the
one-line refusal (exit 2) where CUDA or bitsandbytes is missing - checked before any weight is looked for."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
from rscore.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()
pytest.importorskip("transformers")

from rscore.errors import BackendUnavailable, OptionError  # noqa: E402
from rscore.models import quantize  # noqa: E402

HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None
HAVE_CUDA = torch.cuda.is_available()


def test_8bit_config_is_llm_int8_with_the_skipped_modules():
    cfg = quantize.bnb_config("8bit", skip=("visual", "lm_head"))
    assert cfg.load_in_8bit and not cfg.load_in_4bit
    assert cfg.llm_int8_skip_modules == ["visual", "lm_head"] and cfg.llm_int8_threshold == 6.0
    assert quantize.bnb_config("none") is None


def test_4bit_config_is_nf4_double_quantised_in_the_run_dtype():
    cfg = quantize.bnb_config("4bit", compute_dtype=torch.float16)
    assert cfg.load_in_4bit and not cfg.load_in_8bit
    assert cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.float16
    assert quantize.bnb_config("4bit").bnb_4bit_compute_dtype == torch.bfloat16


def test_transformers_from_pretrained_gets_the_quantization_config_and_a_device_map():
    from rscore.reasoners.transformers_vlm import VISION_MODULES, from_pretrained_kwargs

    plain = from_pretrained_kwargs(device="cuda", dtype="bfloat16")
    assert "quantization_config" not in plain and "device_map" not in plain and plain["dtype"] == torch.bfloat16
    q = from_pretrained_kwargs(device="cuda:1", dtype="bfloat16", load_in="4bit")
    cfg = q["quantization_config"]
    assert cfg.load_in_4bit and cfg.bnb_4bit_compute_dtype == torch.bfloat16
    assert cfg.llm_int8_skip_modules == list(VISION_MODULES)  # the vision tower and the output layer stay unquantised
    assert q["device_map"] == {"": "cuda:1"} and q["local_files_only"] is True
    assert from_pretrained_kwargs(device="cuda", dtype="float16", load_in="8bit", device_map="auto")["device_map"] == "auto"


def test_load_in_values_are_checked():
    from rscore.reasoners.lisa import LisaOptions
    from rscore.reasoners.transformers_vlm import TransformersOptions

    with pytest.raises(OptionError, match="load_in must be one of none, 8bit, 4bit"):
        LisaOptions.from_options({"load_in": "16bit"})
    with pytest.raises(OptionError, match="load_in must be one of"):
        TransformersOptions.from_options({"transformers_load_in": "int8"})
    assert LisaOptions.from_options({"load_in": "4bit"}).load_in == "4bit"
    assert LisaOptions.from_options({"lisa": {"load_in": "8bit"}}).load_in == "8bit"


@pytest.mark.parametrize("cuda,bnb,device,expect,absent", [
    (False, False, "cpu", ["no CUDA device", "bitsandbytes is not installed"], []),
    (True, False, "cuda", ["bitsandbytes is not installed (pip install bitsandbytes)"], ["CUDA"]),
    (True, True, "cpu", ["the run is on cpu (pass --device cuda)"], ["bitsandbytes"]),
])  # fmt: skip
def test_require_names_exactly_what_is_missing(monkeypatch, cuda, bnb, device, expect, absent):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if bnb else None) if name == "bitsandbytes" else real(name, *a))  # fmt: skip
    with pytest.raises(BackendUnavailable) as info:
        quantize.require("8bit", device, "lisa reasoner")
    msg = str(info.value)
    assert msg.startswith("lisa reasoner: -O load_in=8bit needs a CUDA GPU and bitsandbytes: ") and "\n" not in msg
    assert all(e in msg.split(": ", 2)[2] for e in expect)
    assert not any(a in msg.split(": ", 2)[2] for a in absent)
    quantize.require("none", "cpu", "lisa reasoner")  # nothing to check


@pytest.mark.skipif(HAVE_CUDA and HAVE_BNB, reason="CUDA and bitsandbytes are both here: nothing is missing")
@pytest.mark.parametrize("reasoner", ["lisa", "transformers"])
def test_cli_refuses_quantised_loading_in_one_line_before_looking_for_weights(tmp_path, reasoner):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(path)
    env = {**os.environ, "RSCORE_MATCHER": "keyword", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = subprocess.run([sys.executable, "-m", "rscore", "run", str(path), "the bright thing", "--reasoner", reasoner,
                           "-O", "load_in=4bit", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"{reasoner} reasoner: -O load_in=4bit needs a CUDA GPU and bitsandbytes" in lines[0]
    if not HAVE_BNB:
        assert "bitsandbytes is not installed" in lines[0]
    assert "models pull" not in lines[0]  # refused before any weight was looked for
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (HAVE_CUDA and HAVE_BNB), reason="needs a CUDA GPU and bitsandbytes")
def test_lisa_in_8bit_on_a_gpu_keeps_the_masks(tmp_path):
    """On a GPU: the tiny LISA checkpoint loaded in 8 bit swaps the language model's linears for bitsandbytes' and
    still answers as in float16 (its zeroed output layer, left unquantised, makes the tokens the same)."""
    import bitsandbytes as bnb

    from rscore.models import lisa as lisa_models
    from rscore.models.testing import save_tiny_clip_vision, save_tiny_lisa
    from rscore.reasoners import lisa as lisa_reasoner

    clip = save_tiny_clip_vision(tmp_path / "clip")
    ckpt = save_tiny_lisa(tmp_path / "lisa", first_token="[SEG]")
    pic = np.zeros((64, 96, 3), np.uint8)
    pic[10:40, 20:60] = (250, 240, 30)
    answers = {}
    for load_in in ("none", "8bit"):
        model = lisa_models.load_lisa(ckpt, {"vision_tower": str(clip), "load_in": load_in}, device="cuda",
                                      dtype=torch.float16)  # fmt: skip
        lm = model.llava.model.language_model
        kinds = {type(m) for m in lm.modules()}
        assert (bnb.nn.Linear8bitLt in kinds) == (load_in == "8bit")
        r = lisa_reasoner.LisaReasoner.__new__(lisa_reasoner.LisaReasoner)
        r.options = lisa_reasoner.LisaOptions(max_new_tokens=3)
        r.model, r.model_name, r.device, r.dtype = model, "tiny-lisa", "cuda", "float16"
        answers[load_in] = r.answer(pic, "the yellow box")
    a, b = answers["none"], answers["8bit"]
    assert a.token_ids == b.token_ids and len(a.masks) == len(b.masks) >= 1
    assert all(m.shape == pic.shape[:2] for m in b.masks) and torch.isfinite(b.seg_embeddings).all()
