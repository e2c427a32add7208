"""Fine-tuning: a tiny random Qwen2.5-VL (LoRA through peft) and a tiny transformers SAM2 (mask decoder, BCE + Dice)
trained on 4 samples for a few CPU steps; the loss goes down, the adapter folder saves, reloads, and changes what the
models output. Plus the supervision derived from masks, the augmentations, and the errors users can cause."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from PIL import Image

from rscore import hookimpl
from rscore.errors import BackendUnavailable, InputError, OptionError
from rscore.reasoners.parsing import parse_answer
from rscore.sdk import AdapterSpec, Template

pytest.importorskip("torch")
pytest.importorskip("transformers")
from rscore.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()  # peft imports transformers, which imports torchvision
pytest.importorskip("peft")

from rscore.finetune import (  # noqa: E402
    FinetuneOptions,
    apply_reasoner_adapter,
    apply_segmenter_adapter,
    finetune_command,
    read_adapter,
)
from rscore.finetune.augment import AUGMENTATIONS, augment  # noqa: E402
from rscore.finetune.supervision import answer_text, mask_components  # noqa: E402
from rscore.plugins import get_plugin_manager, get_registry  # noqa: E402

STEPS = 10
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft


class FtPlugin:
    @hookimpl
    def rscore_query_templates(self):
        return [Template("box", "bright box", "bright rectangular objects", ("the bright box",),
                         prompt="A bright box is a rectangle much lighter than its surroundings.",
                         keywords=("bright", "box"))]

    @hookimpl
    def rscore_adapters(self):
        return [AdapterSpec("ft-lora", "test defaults", target_modules=("q_proj", "v_proj"), lora_rank=4,
                            augmentations=("hflip", "not_a_real_aug"))]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny models, a 4-sample manifest of 64x64 pictures (one yellow box each, a mask for it), and one fine-tuning
    run of both the reasoner LoRA and the SAM2 mask decoder."""
    import huggingface_hub.constants as hub

    from rscore.models.testing import save_tiny_hf_sam2, save_tiny_qwen_vl

    root = tmp_path_factory.mktemp("ft")
    old_cache, hub.HF_HUB_CACHE = hub.HF_HUB_CACHE, str(root / "hf-cache")
    qwen = save_tiny_qwen_vl(root / "qwen", "qwen2.5-vl")
    sam = save_tiny_hf_sam2(root / "sam")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        img = rng.integers(0, 40, (64, 64, 3)).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        y, x = 6 + 10 * i, 4 + 9 * i
        img[y : y + 16, x : x + 20] = (230, 200, 40)
        mask[y : y + 16, x : x + 20] = 255
        Image.fromarray(img).save(root / f"img{i}.png")
        Image.fromarray(mask).save(root / f"mask{i}.png")
        rows.append({"image": f"img{i}.png", "query": "the bright box", "mask": f"mask{i}.png"})
    manifest = root / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    registry = get_registry(get_plugin_manager(entry_points=False, extra=[("ft", FtPlugin())]))
    out = root / "adapter"
    text, code = finetune_command(
        "ft", manifest, out, model=str(qwen), device="cpu", steps=STEPS, lr=1e-2, segmenter="sam2-hf",
        registry=registry,
        options={"segmenter_model": str(sam), "segmenter_steps": STEPS, "segmenter_lr": 1e-2, "dropout": 0.0,
                 "matcher": "keyword"},
    )
    yield types.SimpleNamespace(root=root, qwen=qwen, sam=sam, manifest=manifest, registry=registry, out=out,
                                text=text, code=code)
    hub.HF_HUB_CACHE = old_cache


def _mean(values, part):
    return float(np.mean(values[:3] if part == "head" else values[-3:]))


def test_losses_go_down_and_adapter_folder_is_complete(setup):
    assert setup.code == 0 and f"use it with --adapter {setup.out}" in setup.text
    log = json.loads((setup.out / "training_log.json").read_text())
    reasoner, decoder = log["reasoner"]["losses"], log["segmenter"]["losses"]
    assert len(reasoner) == len(decoder) == STEPS
    assert _mean(reasoner, "tail") < _mean(reasoner, "head") - 0.05
    assert _mean(decoder, "tail") < _mean(decoder, "head") - 0.05
    info = read_adapter(setup.out)
    r, s = info.reasoner, info.segmenter
    assert info.plugin == "ft" and info.spec == "ft-lora"
    assert r["rank"] == 4 and r["alpha"] == 8.0 and r["target_modules"] == ["q_proj", "v_proj"]  # the plugin's defaults
    assert r["model_type"] == "qwen2_5_vl" and r["base_files"]["model.safetensors"]
    assert info.document["augmentations"] == ["hflip"] and info.document["augmentations_skipped"] == ["not_a_real_aug"]
    assert "not_a_real_aug" in setup.text
    assert (info.reasoner_dir / "adapter_model.safetensors").is_file() and info.decoder_file.is_file()
    assert s["backend"] == "sam2-hf" and len(s["sha256"]) == 64
    assert not list(setup.out.parent.glob(".adapter.tmp-*"))  # the temporary folder was moved into place


def _example(reasoner, setup, i=0):
    """The tokenised training example of sample ``i`` without augmentation, exactly as training builds it."""
    from rscore.evaluation import load_dataset
    from rscore.finetune.data import SceneLoader, training_items
    from rscore.finetune.lora import build_example

    manifest = load_dataset(setup.manifest)
    loader = SceneLoader(manifest, "ft", setup.registry, {"matcher": "keyword"})
    prepared = loader.load(training_items(manifest)[i])
    return build_example(reasoner, prepared, setup.registry.templates_for("ft"), rng=np.random.default_rng(0))


def test_reasoner_adapter_reloads_and_changes_outputs(setup):
    import torch

    from rscore.finetune.lora import load_base_reasoner
    from rscore.reasoners.transformers_vlm import TransformersOptions

    options = TransformersOptions(model=str(setup.qwen), device="cpu")
    base = load_base_reasoner(options)
    example = _example(base, setup)
    assert json.loads(example.answer)["targets"][0]["label"] == "bright box"
    with torch.no_grad():
        base_out = base.model(**example.inputs, labels=example.labels)
    adapted = load_base_reasoner(options)
    adapted.model = apply_reasoner_adapter(adapted.model, setup.out, merge=False)
    merged = load_base_reasoner(options)
    merged.model = apply_reasoner_adapter(merged.model, setup.out)
    assert type(merged.model) is type(base.model)  # merged: a plain transformers model again
    with torch.no_grad():
        lora_out = adapted.model(**example.inputs, labels=example.labels)
        merged_out = merged.model(**example.inputs, labels=example.labels)
    assert not torch.allclose(lora_out.logits, base_out.logits, atol=1e-4)  # the adapter changes the outputs
    assert torch.allclose(merged_out.logits, lora_out.logits, atol=1e-4)  # merging keeps them
    assert float(lora_out.loss) < float(base_out.loss) - 0.05  # what was learned came back from disk


def test_segmenter_adapter_reloads_and_changes_outputs(setup):
    import torch

    from rscore.finetune.sam2_decoder import load_base_segmenter, seg_loss

    img = np.array(Image.open(setup.root / "img1.png"))
    truth = np.asarray(Image.open(setup.root / "mask1.png")) > 0
    (target, comp), = mask_components(truth, "box")
    boxes, points = np.array([target.box], np.float32), np.array([target.points[0][:2]], np.float32)

    def loss_and_logits(trainer):
        import cv2

        with torch.no_grad():
            logits, ious = trainer.decode(img, boxes, points)
        h, w = logits.shape[-2:]
        soft = torch.from_numpy(cv2.resize(comp.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA))[None]
        best, mse = seg_loss(logits, soft, ious)
        return float(best.mean() + mse), logits

    before, base_logits = loss_and_logits(load_base_segmenter("sam2-hf", str(setup.sam), device="cpu"))
    tuned = load_base_segmenter("sam2-hf", str(setup.sam), device="cpu")
    apply_segmenter_adapter(tuned.model, setup.out)
    after, tuned_logits = loss_and_logits(tuned)
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4) and after < before


# -------------------------------------------------------------------------------------------------- supervision
def test_mask_components_and_answers_round_trip_through_the_parser():
    mask = np.zeros((40, 60), bool)
    mask[5:15, 10:30] = True  # 200 px
    mask[25:35, 40:45] = True  # 50 px
    mask[0, 0] = True  # 1 px: below min_area_px
    comps = mask_components(mask, "thing", min_area_px=4)
    assert [t.box for t, _ in comps] == [(10, 5, 30, 15), (40, 25, 45, 35)]
    for t, comp in comps:
        x, y, flag = t.points[0]
        assert flag == 1 and comp[int(y), int(x)] and comp.sum() in (200, 50)
    targets = [t for t, _ in comps]
    for frame, sent in (("pixels", (120, 80)), ("norm1000", (56, 28))):
        text = answer_text(targets, image_size=(60, 40), sent_size=sent, frame=frame)
        parsed = parse_answer(text, sent, frame=frame)
        assert [t.label for t in parsed.targets] == ["thing", "thing"] and not parsed.absent
        sx, sy = sent[0] / 60, sent[1] / 40
        assert parsed.targets[0].box == pytest.approx((10 * sx, 5 * sy, 30 * sx, 15 * sy), abs=sx * 20)
    absent = parse_answer(answer_text([], image_size=(60, 40), sent_size=(60, 40)), (60, 40))
    assert absent.absent and not absent.targets


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentations_keep_mask_and_picture_aligned(name):
    rng = np.random.default_rng(1)
    img = np.zeros((48, 64, 3), np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[5:20, 8:30] = True
    img[mask] = (250, 250, 250)
    out, out_mask, applied = augment(img, mask, [name], rng, {"tile_size": 32}, p=1.0)
    assert applied == (name,) and out.dtype == np.uint8 and out.shape[:2] == out_mask.shape
    if name in ("hflip", "vflip", "rot90", "tile_crop"):
        assert np.array_equal(out[..., 0] > 128, out_mask)  # the mask moved with the picture
        assert out_mask.sum() <= mask.sum() and (name == "tile_crop" or out_mask.sum() == mask.sum())
    else:
        assert np.array_equal(out_mask, mask) and not np.array_equal(out, img)


# ------------------------------------------------------------------------------------------------------- errors
def test_bad_options_and_folders(setup, tmp_path):
    with pytest.raises(OptionError, match="steps must be"):
        FinetuneOptions(steps=0)
    with pytest.raises(OptionError, match="nothing to train"):
        FinetuneOptions.from_options({"train_reasoner": "false"})
    with pytest.raises(OptionError, match="finetune option lr="):
        FinetuneOptions.from_options({"lr": "fast"})
    with pytest.raises(OptionError, match="segmenter must be"):
        FinetuneOptions.from_options({"segmenter": "grabcut"})
    with pytest.raises(InputError, match="not an adapter folder"):
        read_adapter(tmp_path)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(OptionError, match="not an rscore adapter folder"):
        finetune_command("ft", setup.manifest, occupied, model=str(setup.qwen), device="cpu", steps=1,
                         registry=setup.registry)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    other = types.SimpleNamespace(config=types.SimpleNamespace(model_type="qwen3_vl"))
    with pytest.raises(BackendUnavailable, match="trained on a qwen2_5_vl model"):
        apply_reasoner_adapter(other, setup.out)
    with pytest.raises(BackendUnavailable, match="no SAM2 mask decoder"):
        apply_segmenter_adapter(object(), setup.out)


def test_bad_manifest_row_names_file_and_line(setup, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "nope.png", "query": "the bright box", "mask": None}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl: line 1: image 'nope.png' does not exist"):
        finetune_command("ft", bad, tmp_path / "o", model=str(setup.qwen), device="cpu", steps=1,
                         registry=setup.registry)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_meta_sam2_mask_decoder_tuning(setup, tmp_path):
    """Meta's sam2 package (hiera-tiny, random weights, 1024 px input): a few steps, then the decoder reloads."""
    pytest.importorskip("sam2")
    import torch

    from rscore.models.testing import save_tiny_sam2_checkpoint
    from rscore.segmenters.sam2 import build_sam2_model

    ckpt = save_tiny_sam2_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    text, _ = finetune_command(
        "ft", setup.manifest, tmp_path / "a", device="cpu", steps=3, segmenter="sam2", registry=setup.registry,
        options={"train_reasoner": False, "segmenter_model": str(ckpt), "augmentations": "none"},
    )
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())["segmenter"]
    assert len(log["losses"]) == 3 and all(np.isfinite(log["losses"]))
    model = build_sam2_model("configs/sam2.1/sam2.1_hiera_t.yaml")
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    before = {k: v.clone() for k, v in model.sam_mask_decoder.state_dict().items()}
    apply_segmenter_adapter(model, tmp_path / "a")
    after = model.sam_mask_decoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert "sam2 mask decoder" in text


def test_adapter_option_loads_through_the_user_facing_reasoner(setup):
    """`--adapter DIR` reaches the transformers reasoner: its model is the base model with the LoRA merged in."""
    import torch

    from rscore.reasoners.transformers_vlm import make_transformers_reasoner

    base = make_transformers_reasoner({"model": str(setup.qwen), "device": "cpu"})
    tuned = make_transformers_reasoner({"model": str(setup.qwen), "device": "cpu", "adapter": str(setup.out)})
    assert tuned.model is not base.model  # cached separately per adapter
    base_params = dict(base.model.named_parameters())
    changed = [n for n, p in tuned.model.named_parameters() if not torch.equal(p, base_params[n])]
    assert changed and all("proj" in n for n in changed)  # only the LoRA target projections moved


def test_adapter_option_loads_the_tuned_decoder_into_the_sam2_hf_segmenter(setup):
    """`--adapter DIR` reaches the sam2-hf segmenter: only mask-decoder weights differ from the base model."""
    import torch

    from rscore.segmenters.sam2 import _load_hf, make_hf_sam2_segmenter

    base = make_hf_sam2_segmenter({"sam2_model": str(setup.sam), "device": "cpu"})
    tuned = make_hf_sam2_segmenter({"sam2_model": str(setup.sam), "device": "cpu", "adapter": str(setup.out)})
    assert tuned.options.adapter == str(setup.out) and base.options.adapter is None
    base_model, _ = _load_hf(setup.sam, "cpu")
    tuned_model, _ = _load_hf(setup.sam, "cpu", str(setup.out))
    assert tuned_model is not base_model
    base_params = dict(base_model.named_parameters())
    changed = [n for n, p in tuned_model.named_parameters() if not torch.equal(p, base_params[n])]
    assert changed and all("mask_decoder" in n for n in changed)
