"""``rscore finetune --out`` replaces only a folder rscore wrote (real CLI subprocess, a tiny random Qwen2.5-VL):
a folder that holds an adapter document (``rscore_adapter.json``) but also a user's own files used to be replaced
whole, deleting those files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")
from rscore.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()  # peft imports transformers, which imports torchvision
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from rscore.models.testing import save_tiny_qwen_vl

    root = tmp_path_factory.mktemp("ft-out")
    qwen = save_tiny_qwen_vl(root / "qwen", "qwen2.5-vl")
    rows = []
    for i in range(2):
        img = np.zeros((64, 64, 3), np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        img[10 + 10 * i : 26 + 10 * i, 8:28] = (230, 200, 40)
        mask[10 + 10 * i : 26 + 10 * i, 8:28] = 255
        Image.fromarray(img).save(root / f"img{i}.png")
        Image.fromarray(mask).save(root / f"mask{i}.png")
        rows.append({"image": f"img{i}.png", "query": "the bright box", "mask": f"mask{i}.png"})
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"root": root, "qwen": qwen, "manifest": root / "train.jsonl"}


def finetune(tiny: dict[str, Path], out: Path) -> subprocess.CompletedProcess:
    args = ["finetune", "--dataset", str(tiny["manifest"]), "--out", str(out), "--model", str(tiny["qwen"]),
            "--device", "cpu", "--steps", "1", "-O", "matcher=keyword"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RSCORE_MATCHER": "keyword"}
    return subprocess.run([sys.executable, "-m", "rscore", *args], cwd=tiny["root"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft, as test_finetune
def test_adapter_folder_with_user_files_is_not_replaced(tiny, monkeypatch):
    from rscore.finetune import finetune_command

    adapter = tiny["root"] / "adapter"
    # the adapter folder is written in this process (what the CLI calls; saves a subprocess importing torch, peft
    # and transformers); the run that must refuse to replace it is the real CLI below
    monkeypatch.chdir(tiny["root"])
    _, code = finetune_command(None, tiny["manifest"], adapter, model=str(tiny["qwen"]), device="cpu", steps=1,
                               options={"matcher": "keyword"})
    assert code == 0
    assert (adapter / "rscore_adapter.json").is_file()
    (adapter / "my-notes.txt").write_text("which run this was")  # the user keeps notes in it
    before = sorted(p.name for p in adapter.iterdir())
    proc = finetune(tiny, adapter)  # refused before any training
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "my-notes.txt" in lines[0], proc.stderr
    assert (adapter / "my-notes.txt").read_text() == "which run this was"
    assert sorted(p.name for p in adapter.iterdir()) == before
    assert not [p.name for p in adapter.parent.iterdir() if p.name.startswith(".adapter.")]  # no staging left


@pytest.mark.slow
def test_an_adapter_folder_rscore_wrote_is_replaced(tiny):
    adapter = tiny["root"] / "own"
    for _ in range(2):
        proc = finetune(tiny, adapter)
        assert proc.returncode == 0, proc.stderr
    assert (adapter / "rscore_adapter.json").is_file()
