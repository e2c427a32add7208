"""The model registry: where weights are found (--weights layouts, the Hugging Face cache), what absent weights say,
verification, listing, pulling without network, and device choice. Uses tiny models saved the way users save them."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from rscore.errors import BackendUnavailable, OptionError
from rscore.models import (
    MODELS,
    find_model,
    get_model,
    list_command,
    list_models,
    model_rows,
    pull,
    pull_command,
    resolve,
    resolve_auto,
    verify,
    verify_command,
)


@pytest.fixture(autouse=True)
def isolated_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and no RSCORE_WEIGHTS, whatever the machine has."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("RSCORE_WEIGHTS", raising=False)
    monkeypatch.delenv("RSCORE_DEVICE", raising=False)
    return cache


def _cache_entry(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "0" * 40) -> Path:
    """Lay out files the way huggingface_hub stores a download (refs/main -> snapshots/<commit>/...)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


def _qwen_folder(folder: Path, model_type: str = "qwen2_5_vl") -> Path:
    """A transformers-format folder without loading transformers: config + one safetensors file."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


# --------------------------------------------------------------------------------------------------- the registry
def test_registry_entries_are_complete_and_sam2_configs_exist():
    names = [m.name for m in list_models()]
    assert len(names) == len(set(names)) == len(MODELS)
    kinds = {m.kind for m in MODELS.values()}
    assert kinds == {"reasoner", "segmenter", "detector", "component"}  # component: the CLIP tower LISA loads
    for spec in MODELS.values():
        assert spec.repo_id.count("/") == 1 and spec.params_m > 0 and spec.download_mb > 0, spec.name
        assert spec.files and spec.allow_patterns and spec.description
    sam2_sizes = {m.size for m in list_models(backend="sam2")}
    assert sam2_sizes == {"tiny", "small", "base-plus", "large"}
    if importlib.util.find_spec("sam2") is not None:
        from importlib.resources import files

        for spec in list_models(backend="sam2"):
            assert (files("sam2") / spec.config).is_file(), spec.config
    for spec in list_models(backend="sam2"):  # the checkpoint names are Meta's: sam2.1_hiera_base_plus.pt etc.
        assert spec.files[0].startswith(spec.family.replace("-", "_") + "_hiera_") and spec.files[0].endswith(".pt")


def test_find_model_names_sizes_repo_ids_and_errors(tmp_path):
    assert find_model("tiny", "sam2").name == "sam2.1-hiera-tiny"
    assert find_model("base+", "sam2").name == "sam2.1-hiera-base-plus"
    assert find_model("large", "sam2-hf").name == "hf-sam2.1-hiera-large"
    assert find_model("Qwen/Qwen2.5-VL-7B-Instruct", "transformers").name == "qwen2.5-vl-7b"
    assert find_model("someorg/some-vl", "transformers").repo_id == "someorg/some-vl"
    folder = _qwen_folder(tmp_path / "my-finetune")
    local = find_model(str(folder), "transformers")
    assert local.local and local.repo_id == str(folder)
    with pytest.raises(OptionError, match="for the sam2 backend, not transformers"):
        find_model("sam2.1-hiera-tiny", "transformers")
    with pytest.raises(OptionError, match="did you mean qwen2.5-vl-7b"):
        get_model("qwen2.5-vl-7")


# ------------------------------------------------------------------------------------------------- absent weights
def test_absent_weights_say_exactly_what_to_run_or_provide(tmp_path):
    with pytest.raises(BackendUnavailable) as exc:
        resolve("sam2.1-hiera-tiny")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "`rscore models pull sam2.1-hiera-tiny`" in msg
    assert "put sam2.1_hiera_tiny.pt in DIR/sam2.1-hiera-tiny/" in msg and "--weights DIR" in msg
    with pytest.raises(BackendUnavailable) as exc:
        resolve("qwen2.5-vl-3b", weights=tmp_path)
    msg = str(exc.value)
    assert f"not in --weights {tmp_path}" in msg and "`rscore models pull qwen2.5-vl-3b`" in msg
    assert "DIR/qwen2.5-vl-3b/" in msg and "Qwen/Qwen2.5-VL-3B-Instruct" in msg
    with pytest.raises(BackendUnavailable, match=r"rscore models pull qwen3-vl-4b.*other choices: qwen3-vl-8b"):
        resolve_auto("transformers", recommend="qwen3-vl-4b")
    with pytest.raises(OptionError, match="weights path .* does not exist"):
        resolve("qwen2.5-vl-3b", weights=tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ --weights layouts
def test_weights_folder_layouts(tmp_path):
    ckpt = b"not read by resolve"
    # DIR/NAME/file
    a = tmp_path / "a"
    (a / "sam2.1-hiera-tiny").mkdir(parents=True)
    (a / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt").write_bytes(ckpt)
    found = resolve("sam2.1-hiera-tiny", weights=a)
    assert found.source == "weights" and found.path == a / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt"
    # DIR/file, and the file itself as --weights
    b = tmp_path / "b"
    b.mkdir()
    (b / "sam2.1_hiera_large.pt").write_bytes(ckpt)
    assert resolve("sam2.1-hiera-large", weights=b).path == b / "sam2.1_hiera_large.pt"
    assert resolve("sam2.1-hiera-large", weights=b / "sam2.1_hiera_large.pt").path == b / "sam2.1_hiera_large.pt"
    # transformers: DIR/NAME, DIR/<repo folder>, DIR itself
    c = tmp_path / "c"
    _qwen_folder(c / "qwen2.5-vl-3b")
    _qwen_folder(c / "Qwen3-VL-2B-Instruct", "qwen3_vl")
    assert resolve("qwen2.5-vl-3b", weights=c).path == c / "qwen2.5-vl-3b"
    assert resolve("qwen3-vl-2b", weights=c).path == c / "Qwen3-VL-2B-Instruct"
    assert resolve("qwen2.5-vl-7b", weights=c / "qwen2.5-vl-3b").path == c / "qwen2.5-vl-3b"
    with pytest.raises(BackendUnavailable):  # a model folder given as --weights serves its own family only
        resolve("qwen3-vl-8b", weights=c / "qwen2.5-vl-3b")
    assert resolve_auto("transformers", weights=c / "qwen2.5-vl-3b", recommend="qwen3-vl-4b").name == "qwen2.5-vl-7b"
    # a folder missing its weights is not a model
    (c / "qwen3-vl-8b").mkdir()
    (c / "qwen3-vl-8b" / "config.json").write_text("{}")
    with pytest.raises(BackendUnavailable):
        resolve("qwen3-vl-8b", weights=c)
    # RSCORE_WEIGHTS stands in for --weights
    os.environ["RSCORE_WEIGHTS"] = str(a)
    try:
        assert resolve("sam2.1-hiera-tiny").source == "weights"
    finally:
        del os.environ["RSCORE_WEIGHTS"]


def test_hf_cache_lookup_is_offline_and_checks_shards(isolated_hub, tmp_path):
    snap = _cache_entry(isolated_hub, "facebook/sam2.1-hiera-small", {"sam2.1_hiera_small.pt": b"x"})
    found = resolve("sam2.1-hiera-small")
    assert found.source == "hf-cache" and found.path == snap / "sam2.1_hiera_small.pt"
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {"config.json": b'{"model_type": "qwen2_5_vl"}', "model.safetensors.index.json": json.dumps(index).encode(),
             "model-00001-of-00002.safetensors": b"x"}
    snap = _cache_entry(isolated_hub, "Qwen/Qwen2.5-VL-7B-Instruct", files)
    with pytest.raises(BackendUnavailable, match="rscore models pull qwen2.5-vl-7b"):  # second shard missing
        resolve("qwen2.5-vl-7b")
    (snap / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert resolve("qwen2.5-vl-7b").path == snap
    # a Hugging Face cache folder copied from another machine works as --weights
    other = tmp_path / "copied-cache"
    _cache_entry(other, "facebook/sam2.1-hiera-large", {"sam2.1_hiera_large.pt": b"x"})
    assert resolve("sam2.1-hiera-large", weights=other).source == "weights"
    # auto prefers the largest SAM2 that is here
    assert resolve_auto("sam2", recommend="sam2.1-hiera-tiny", weights=other).name == "sam2.1-hiera-large"
    assert resolve_auto("sam2", recommend="sam2.1-hiera-tiny").name == "sam2.1-hiera-small"


# ------------------------------------------------------------------------------------------------------ verifying
def test_verify_transformers_folder(tmp_path):
    pytest.importorskip("transformers")
    from rscore.models.testing import save_tiny_qwen_vl

    save_tiny_qwen_vl(tmp_path / "qwen2.5-vl-3b", "qwen2.5-vl")
    report = verify("qwen2.5-vl-3b", weights=tmp_path)
    assert report.ok, report.problems
    assert report.config["model_type"] == "qwen2_5_vl" and report.config["class"] == "Qwen2_5_VLConfig"
    assert "model.safetensors" in report.files and report.files["config.json"] > 0
    text, code = verify_command("qwen2.5-vl-3b", weights=tmp_path)
    assert code == 0 and text.startswith("qwen2.5-vl-3b: ok (weights:")
    # the same folder is not a Qwen3-VL: given as --weights itself it is not taken for one; named as one, verify says
    report = verify("qwen3-vl-2b", weights=tmp_path / "qwen2.5-vl-3b")
    assert not report.ok and "rscore models pull qwen3-vl-2b" in report.problems[0]
    (tmp_path / "qwen2.5-vl-3b").rename(tmp_path / "qwen3-vl-2b")
    report = verify("qwen3-vl-2b", weights=tmp_path)
    assert not report.ok and "model_type 'qwen2_5_vl' is not a qwen3-vl model" in report.problems[0]
    (tmp_path / "qwen3-vl-2b").rename(tmp_path / "qwen2.5-vl-3b")
    # a truncated weight file is reported, not raised
    weights = tmp_path / "qwen2.5-vl-3b" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    report = verify("qwen2.5-vl-3b", weights=tmp_path)
    assert any("not a readable safetensors file" in p for p in report.problems)
    text, code = verify_command("qwen2.5-vl-3b", weights=tmp_path, as_json=True)
    assert code == 2 and json.loads(text)["ok"] is False


def test_verify_absent_and_sam2_checkpoint_mismatch(tmp_path):
    text, code = verify_command("sam2.1-hiera-tiny")
    assert code == 2 and "rscore models pull sam2.1-hiera-tiny" in text
    pytest.importorskip("sam2")
    import torch

    from rscore.segmenters.sam2 import build_sam2_model

    # part of a tiny checkpoint under the small model's name: verify compares it with the small config
    tiny = build_sam2_model("configs/sam2.1/sam2.1_hiera_t.yaml").state_dict()
    part = {k: v for k, v in tiny.items() if k.startswith("sam_mask_decoder.")}  # a small file, still a checkpoint
    (tmp_path / "sam2.1-hiera-small").mkdir()
    torch.save({"model": part}, tmp_path / "sam2.1-hiera-small" / "sam2.1_hiera_small.pt")
    report = verify("sam2.1-hiera-small", weights=tmp_path)
    assert not report.ok and "does not fit this SAM2 config" in report.problems[0]
    assert "missing tensor" in report.problems[0]
    (tmp_path / "sam2.1-hiera-small" / "sam2.1_hiera_small.pt").write_bytes(b"garbage")
    report = verify("sam2.1-hiera-small", weights=tmp_path)
    assert "not a readable torch checkpoint" in report.problems[0]


# ------------------------------------------------------------------------------------------------------- listing
def test_list_command_reports_what_is_here(tmp_path):
    (tmp_path / "sam2.1-hiera-tiny").mkdir()
    (tmp_path / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt").write_bytes(b"x")
    text, code = list_command(as_json=True, weights=tmp_path)
    doc = json.loads(text)
    assert code == 0 and len(doc["models"]) == len(MODELS)
    here = [r["name"] for r in doc["models"] if r["available"]]
    assert here == ["sam2.1-hiera-tiny"]
    row = next(r for r in doc["models"] if r["name"] == "sam2.1-hiera-tiny")
    assert row["source"] == "weights" and row["path"].endswith("sam2.1_hiera_tiny.pt") and row["download_mb"] == 156
    text, code = list_command()
    assert code == 0 and "qwen2.5-vl-7b" in text and "0 of" in text.splitlines()[-1]
    assert {r["kind"] for r in model_rows(kind="reasoner")} == {"reasoner"}


def test_pull_without_network_names_repo_and_the_offline_route(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(BackendUnavailable) as exc:
        pull("sam2.1-hiera-tiny", cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert "could not download facebook/sam2.1-hiera-tiny" in msg
    assert "rscore models pull sam2.1-hiera-tiny --to DIR" in msg and "\n" not in msg
    with pytest.raises(OptionError):
        pull_command("no-such-model")


# -------------------------------------------------------------------------------------------------------- devices
def test_device_and_dtype_choice(monkeypatch):
    torch = pytest.importorskip("torch")
    from rscore.models.device import autocast, placement, resolve_device, resolve_dtype

    assert resolve_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == expected
    monkeypatch.setenv("RSCORE_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"
    with pytest.raises(OptionError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
            resolve_device("cuda:0")
    assert resolve_dtype("cpu") == "float32"
    assert resolve_dtype("cpu", "bf16") == "bfloat16"
    with pytest.raises(OptionError, match="float16 is not supported on CPU"):
        resolve_dtype("cpu", "fp16")
    with pytest.raises(OptionError, match="unknown dtype"):
        resolve_dtype("cpu", "int3")
    where = placement({"device": "cpu"})
    assert where.device == "cpu" and where.dtype == "float32" and not where.is_gpu
    with autocast(where):  # a no-op on CPU float32
        assert not torch.is_autocast_enabled()


def test_lisa_checkpoints_are_registered_with_their_vision_tower(tmp_path):
    lisa = [m.name for m in list_models(backend="lisa")]
    assert lisa[0] == "lisa-13b-llama2-v1" and "lisa-7b-v1" in lisa and len(lisa) == 4
    assert all("*.bin" in m.weight_globs for m in list_models(backend="lisa"))  # LISA ships .bin shards
    clip = MODELS["clip-vit-large-patch14"]
    assert clip.kind == "component" and clip.repo_id == "openai/clip-vit-large-patch14"
    spec = find_model(str(tmp_path), "lisa")  # a local folder is a LISA reasoner, .bin weights accepted
    assert spec.kind == "reasoner" and spec.family == "lisa" and "*.bin" in spec.weight_globs
