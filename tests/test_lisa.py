"""The ``lisa`` reasoner: LISA checkpoints in their original key layout, [SEG] hidden states -> SAM masks.

The SAM numbers are the ones LISA's own ``segment_anything`` code computed on the same seeded weights
(tests/data/lisa_sam_reference.json, made by scripts/make_lisa_sam_reference.py): the key mapping and the
pre/postprocessing are checked against the reference implementation, not against themselves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from rscore.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()  # before transformers is first imported (CPU torch with a CUDA torchvision wheel)
pytest.importorskip("transformers")

from rscore import engine  # noqa: E402
from rscore.errors import BackendUnavailable  # noqa: E402
from rscore.models import lisa as lisa_models  # noqa: E402
from rscore.models.testing import (  # noqa: E402
    LISA_SAM_REFERENCE,
    save_tiny_clip_vision,
    save_tiny_lisa,
    seeded_tensors,
)
from rscore.reasoners import lisa as lisa_reasoner  # noqa: E402
from rscore.types import ArraySource, Scene  # noqa: E402

REF = json.loads(LISA_SAM_REFERENCE.read_text())


def reference_picture() -> np.ndarray:
    h, w = REF["picture"]
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], -1).astype(np.uint8)
    img[(yy - 90) ** 2 + (xx - 170) ** 2 < 40 ** 2] = (250, 240, 30)
    return img


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip_vision(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def seg3(tmp_path_factory):
    return save_tiny_lisa(tmp_path_factory.mktemp("lisa-seg"), first_token="[SEG]")


@pytest.fixture(scope="module")
def loaded(seg3, clip_dir):
    return lisa_models.load_lisa(seg3, {"vision_tower": str(clip_dir)})


def reasoner_for(model, max_new_tokens=3):
    r = lisa_reasoner.LisaReasoner.__new__(lisa_reasoner.LisaReasoner)
    r.options = lisa_reasoner.LisaOptions(max_new_tokens=max_new_tokens)
    r.model, r.model_name, r.device, r.dtype = model, "tiny-lisa", "cpu", "float32"
    return r


# ------------------------------------------------------------------------------------------------------ key mapping
def test_every_segment_anything_key_maps_onto_transformers_sam_exactly():
    from transformers import SamModel

    shapes = {k: tuple(s) for k, s in REF["state_dict"]}
    cfg = lisa_models._sam_config(shapes)
    own = {k: tuple(v.shape) for k, v in SamModel(cfg).state_dict().items()}
    mapped: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        part, keys = lisa_models.split_lisa_key(f"model.visual_model.{key}")
        assert part == "sam" and keys, key
        for k in keys:
            assert k not in mapped, f"two SAM keys map to {k}"
            mapped[k] = shape
    assert set(mapped) == set(own)  # nothing left unfilled, nothing extra
    assert all(mapped[k] == own[k] for k in own)


def test_sam_config_is_read_off_the_weights():
    cfg = lisa_models._sam_config({k: tuple(s) for k, s in REF["state_dict"]})
    c = REF["config"]
    v = cfg.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size, v.window_size) == (
        c["embed"], c["depth"], c["image"], c["patch"], c["window"])
    assert v.num_attention_heads == c["heads"] and list(v.global_attn_indexes) == c["global"]
    assert cfg.mask_decoder_config.hidden_size == c["prompt"] and cfg.mask_decoder_config.mlp_dim == c["dec_mlp"]


def test_language_side_keys_and_projection_keys():
    assert lisa_models.split_lisa_key("model.layers.3.self_attn.q_proj.weight") == (
        "llava", ["model.language_model.layers.3.self_attn.q_proj.weight"])
    assert lisa_models.split_lisa_key("model.embed_tokens.weight") == ("llava", ["model.language_model.embed_tokens.weight"])
    assert lisa_models.split_lisa_key("model.norm.weight") == ("llava", ["model.language_model.norm.weight"])
    assert lisa_models.split_lisa_key("lm_head.weight") == ("llava", ["lm_head.weight"])
    assert lisa_models.split_lisa_key("model.mm_projector.weight") == ("llava", ["model.multi_modal_projector.linear_1.weight"])
    assert lisa_models.split_lisa_key("model.mm_projector.2.bias") == ("llava", ["model.multi_modal_projector.linear_2.bias"])
    assert lisa_models.split_lisa_key("model.text_hidden_fcs.0.2.weight") == ("proj", ["2.weight"])
    assert lisa_models.split_lisa_key("model.text_hidden_fcs.1.0.weight") is None
    assert lisa_models.split_lisa_key("model.visual_model.image_encoder.blocks.0.attn.qkv.weight") == (
        "sam", ["vision_encoder.layers.0.attn.qkv.weight"])
    assert lisa_models.clip_key("vision_model.encoder.layers.0.mlp.fc1.weight") == [
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"]
    assert lisa_models.clip_key("text_model.encoder.layers.0.mlp.fc1.weight") == []


# ------------------------------------------------------------------------------------ SAM against LISA's own code
def test_sam_reproduces_lisas_segment_anything_numbers():
    from transformers import SamModel

    c = REF["config"]
    shapes = REF["state_dict"]
    weights = seeded_tensors(shapes, seed=c["seed"], scale=c["scale"])
    sam = SamModel(lisa_models._sam_config({k: tuple(s) for k, s in shapes})).eval()
    sd = {}
    for key, tensor in weights.items():
        _, keys = lisa_models.split_lisa_key(f"model.visual_model.{key}")
        sd.update({k: tensor for k in keys})
    sam.load_state_dict(sd, strict=True)
    text = seeded_tensors([("text", [2, c["prompt"]])], seed=c["seed"] + 1, scale=c["text_scale"])["text"]
    pic = reference_picture()

    pixels, resized = lisa_reasoner.sam_input(pic, c["image"])
    assert list(resized) == REF["resized"]
    with torch.no_grad():
        emb = sam.get_image_embeddings(pixels)
    assert list(emb.shape) == REF["embedding"]["shape"]
    np.testing.assert_allclose(emb.flatten()[REF["embedding"]["index"]].numpy(), REF["embedding"]["values"],
                               rtol=1e-4, atol=1e-4)
    low, iou, full = lisa_reasoner.decode_logits(sam, pic, text)
    np.testing.assert_allclose(low.flatten()[REF["low_res"]["index"]].numpy(), REF["low_res"]["values"],
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(iou.numpy(), REF["iou"], rtol=1e-4, atol=1e-4)
    assert list(full.shape) == REF["full"]["shape"]  # the original picture's size: padding and resize undone
    np.testing.assert_allclose(full.flatten()[REF["full"]["index"]].numpy(), REF["full"]["values"], rtol=1e-3,
                               atol=1e-3)
    positive = [int((full[i] > 0).sum()) for i in range(full.shape[0])]
    assert all(abs(a - b) <= 0.001 * full[0].numel() for a, b in zip(positive, REF["full"]["positive"]))


# ----------------------------------------------------------------------------------------------- loading the model
def test_loading_fills_every_part_from_the_original_layout(seg3, loaded):
    shards = {}
    for f in sorted(seg3.glob("pytorch_model-*.bin")):
        shards.update(torch.load(f, weights_only=True))
    lm = loaded.llava.state_dict()
    assert torch.equal(lm["model.language_model.layers.1.mlp.down_proj.weight"], shards["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(lm["model.multi_modal_projector.linear_1.weight"], shards["model.mm_projector.weight"])
    eye = lm["model.multi_modal_projector.linear_2.weight"]
    assert torch.equal(eye, torch.eye(eye.shape[0]))  # a LLaVA-v1 linear projector is exact through two layers
    n = shards["model.embed_tokens.weight"].shape[0]
    assert torch.equal(lm["model.language_model.embed_tokens.weight"][:n], shards["model.embed_tokens.weight"])
    assert lm["model.language_model.embed_tokens.weight"].shape[0] == n + 1  # <image> added, one row
    assert torch.equal(loaded.text_hidden_fcs.state_dict()["2.weight"], shards["model.text_hidden_fcs.0.2.weight"])
    sam = loaded.sam.state_dict()
    assert torch.equal(sam["mask_decoder.iou_prediction_head.proj_out.weight"],
                       shards["model.visual_model.mask_decoder.iou_prediction_head.layers.2.weight"])
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.seg_token_id) == "[SEG]"


def test_corrupted_checkpoints_are_refused_naming_the_keys(tmp_path, clip_dir):
    bad = save_tiny_lisa(tmp_path / "renamed", shards=1)
    f = next(bad.glob("pytorch_model-*.bin"))
    sd = torch.load(f, weights_only=True)
    sd["model.layers.0.self_attn.qq_proj.weight"] = sd.pop("model.layers.0.self_attn.q_proj.weight")
    torch.save(sd, f)
    with pytest.raises(BackendUnavailable, match=r"map to nothing.*model\.layers\.0\.self_attn\.qq_proj\.weight"):
        lisa_models.load_lisa(bad, {"vision_tower": str(clip_dir)})

    short = save_tiny_lisa(tmp_path / "short", shards=1)
    f = next(short.glob("pytorch_model-*.bin"))
    sd = torch.load(f, weights_only=True)
    del sd["model.text_hidden_fcs.0.0.bias"]
    torch.save(sd, f)
    with pytest.raises(BackendUnavailable, match=r"missing from the checkpoint.*proj:0\.bias"):
        lisa_models.load_lisa(short, {"vision_tower": str(clip_dir)})

    wrong = save_tiny_lisa(tmp_path / "shape", shards=1)
    f = next(wrong.glob("pytorch_model-*.bin"))
    sd = torch.load(f, weights_only=True)
    sd["model.visual_model.mask_decoder.iou_token.weight"] = torch.zeros(1, 3)
    torch.save(sd, f)
    with pytest.raises(BackendUnavailable, match=r"iou_token\.weight has shape \(1, 3\)"):
        lisa_models.load_lisa(wrong, {"vision_tower": str(clip_dir)})


def test_missing_vision_tower_says_what_to_fetch(seg3, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BackendUnavailable, match=r"clip-vit-large-patch14.*rscore models pull clip-vit-large-patch14"):
        lisa_models.load_lisa(seg3, {})


# ---------------------------------------------------------------------------------------------------- inference
def test_each_seg_token_is_one_mask_from_the_hidden_state_that_produced_it(loaded):
    r = reasoner_for(loaded, max_new_tokens=3)
    pic = reference_picture()[:90, :150].copy()
    a = r.answer(pic, "the yellow disc")
    assert a.text == "[SEG] [SEG] [SEG]" and len(a.masks) == 3 and len(a.scores) == 3
    assert all(m.shape == pic.shape[:2] and m.dtype == bool for m in a.masks)

    # independently: one prefill over prompt + answer; the state at position t that predicted [SEG] at t + 1
    m = loaded
    ids = lisa_reasoner.lisa_input_ids(lisa_reasoner.lisa_prompt("the yellow disc"), m.tokenizer, m.image_token_id,
                                       m.image_seq_length)
    seq = torch.tensor([ids + list(a.token_ids)])
    clip = lisa_reasoner._clip_pixels(pic, m.clip_size)
    with torch.no_grad():
        hidden = m.llava.model(input_ids=seq, pixel_values=clip).last_hidden_state[0]
        positions = [t for t in range(seq.shape[1] - 1) if seq[0, t + 1] == m.seg_token_id]
        expected = m.text_hidden_fcs(hidden[positions])
    assert len(positions) == 3
    torch.testing.assert_close(a.seg_embeddings, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a.seg_embeddings[0], a.seg_embeddings[1])  # three prompts, not one repeated

    low, iou, full = lisa_reasoner.decode_logits(m.sam, pic, expected)
    for k in range(3):
        assert np.array_equal(a.masks[k], (full[k] > 0).numpy())
        assert a.scores[k] == pytest.approx(float(iou[k]))


def test_prompt_is_lisas_llava_v1_conversation():
    p = lisa_reasoner.lisa_prompt("the yellow disc")
    assert p.endswith("USER: <im_start><image><im_end>\nWhat is the yellow disc in this image? "
                      "Please output segmentation mask. ASSISTANT:")
    assert lisa_reasoner.lisa_prompt("Which part would a surgeon cut first?").endswith(
        "first? Please output segmentation mask. ASSISTANT:")


def test_no_seg_token_and_rejection_are_absent_with_the_text(tmp_path, clip_dir):
    scene = rgb_scene(reference_picture())
    silent = lisa_models.load_lisa(save_tiny_lisa(tmp_path / "eos", first_token="</s>"), {"vision_tower": str(clip_dir)})
    plan = reasoner_for(silent).plan(scene, engine_request("the disc"), [])
    assert plan.absent and "no [SEG]" in plan.reason and plan.reasoner == "lisa"

    rej = lisa_models.load_lisa(save_tiny_lisa(tmp_path / "rej", first_token="[REJ]"), {"vision_tower": str(clip_dir)})
    assert rej.rej_token_id is not None
    plan = reasoner_for(rej).plan(scene, engine_request("the disc"), [])
    assert plan.absent and "rejected" in plan.reason and "[REJ]" in plan.raw


def rgb_scene(pic):
    return Scene(ArraySource(np.ascontiguousarray(np.moveaxis(pic, -1, 0))), "image", ("red", "green", "blue"))


def engine_request(query):
    from rscore.types import Request

    return Request(query=query)


def test_engine_runs_lisa_end_to_end_without_a_segmenter(seg3, clip_dir, tmp_path):
    pic = reference_picture()
    scene = rgb_scene(pic)
    res = engine.segment(scene, "the yellow disc", options={
        "reasoner": "lisa", "model": str(seg3), "lisa_vision_tower": str(clip_dir), "lisa_max_new_tokens": 2,
        "device": "cpu", "min_area_px": 1,
    })
    assert not res.absent and res.plan.reasoner == "lisa"
    assert res.provenance["segmenter"] is None  # the masks came from LISA, no segmenter was loaded
    assert res.provenance["reasoner_model"] == seg3.name
    assert 1 <= len(res.instances) <= 2
    assert all(i.mask is not None and i.mask.shape == pic.shape[:2] for i in res.instances)
    assert np.array_equal(res.mask, np.logical_or.reduce([i.mask for i in res.instances]))
    out = tmp_path / "out"
    engine.write_outputs(scene, res, out)
    doc = json.loads((out / "result.json").read_text())
    assert doc["plan"]["reasoner"] == "lisa" and doc["plan"]["targets"][0]["mask"] is True
    assert doc["plan"]["raw"] == "[SEG] [SEG]"


def test_large_scenes_are_reasoned_tile_by_tile_with_lisas_masks(seg3, clip_dir):
    pic = np.tile(reference_picture(), (2, 2, 1))  # 400 x 600: larger than twice the tiny SAM's 256 px side
    res = engine.segment(rgb_scene(pic), "the yellow disc", options={
        "reasoner": "lisa", "model": str(seg3), "lisa_vision_tower": str(clip_dir), "lisa_max_new_tokens": 1,
        "device": "cpu", "reason_overview": False, "min_area_px": 1,
    })
    tiles = next(s.stats["tiles"] for s in res.plan.steps if s.operator == "tiles" and "tiles" in s.stats)
    assert tiles == 2  # 600 px wide, 512 px tiles (twice SAM's 256 px side)
    assert sum("LISA (" in s.text and "answered" in s.text for s in res.plan.steps) == tiles  # one call per tile
    assert any("the reasoner’s own masks" in s.text for s in res.plan.steps)
    assert res.provenance["segmenter"] is None and res.instances
    assert all(i.mask is None or i.mask.shape == pic.shape[:2] for i in res.instances)
    assert res.mask.shape == pic.shape[:2] and res.mask.any()


def test_eval_harness_scores_lisa_like_any_reasoner(seg3, clip_dir, tmp_path):
    import cv2

    from rscore.evaluation.runner import evaluate

    pic = reference_picture()
    cv2.imwrite(str(tmp_path / "a.png"), pic[:, :, ::-1])
    gt = np.zeros(pic.shape[:2], np.uint8)
    gt[50:130, 130:210] = 255
    cv2.imwrite(str(tmp_path / "a_mask.png"), gt)
    rows = [{"image": "a.png", "query": "the yellow disc", "mask": "a_mask.png"},
            {"image": "a.png", "query": "a giraffe", "mask": None, "negative": True}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = evaluate(None, tmp_path / "data.jsonl", {
        "reasoner": "lisa", "model": str(seg3), "lisa_vision_tower": str(clip_dir), "lisa_max_new_tokens": 1,
        "device": "cpu",
    })
    assert report.metrics["n_rows"] == 2 and report.metrics["n_failed"] == 0
    assert 0.0 <= report.metrics["gIoU"] <= 1.0


# ------------------------------------------------------------------------------------------------------ fine-tuning
def _training_set(tmp_path):
    import cv2

    pic = reference_picture()
    cv2.imwrite(str(tmp_path / "a.png"), pic[:, :, ::-1])
    gt = np.zeros(pic.shape[:2], np.uint8)
    gt[55:125, 135:205] = 255  # the yellow disc's box
    cv2.imwrite(str(tmp_path / "a_mask.png"), gt)
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "a.png", "query": "the yellow disc",
                                                      "mask": "a_mask.png"}) + "\n")
    return tmp_path / "train.jsonl"


def test_finetune_lisa_writes_an_adapter(seg3, clip_dir, tmp_path):
    pytest.importorskip("peft")
    from rscore.finetune import finetune_command, read_adapter
    from rscore.finetune.lisa_train import HEADS_FILE

    text, code = finetune_command(None, _training_set(tmp_path), tmp_path / "adapter", reasoner="lisa",
                                  model=str(seg3), device="cpu", steps=10, lr=2e-3,
                                  # the tiny model says [SEG] at once (zeroed head): teach that answer
                                  options={"lisa_vision_tower": str(clip_dir), "rank": 4, "lisa_answer": "[SEG]"})
    assert code == 0 and "adapter written" in text
    info = read_adapter(tmp_path / "adapter")
    r = info.reasoner
    assert r["backend"] == "lisa" and r["trained"] == ["lora", "text_hidden_fcs", "sam.mask_decoder"]
    assert r["answer"] == "[SEG]" and r["rank"] == 4
    assert (info.reasoner_dir / HEADS_FILE).is_file() and (info.reasoner_dir / "adapter_config.json").is_file()
    log = json.loads((tmp_path / "adapter" / "training_log.json").read_text())["reasoner"]
    first, last = log["parts"][0], log["parts"][-1]
    assert {"ce", "bce", "dice"} <= set(first)  # the answer's [SEG] was decoded into a mask and scored
    assert last["bce"] + last["dice"] < first["bce"] + first["dice"]  # the mask loss went down
    # (the tiny checkpoint's zeroed lm_head fixes the cross-entropy at log(vocab): only the mask loss can move)


def test_a_saved_lisa_adapter_reproduces_the_trained_model(seg3, clip_dir, tmp_path):
    pytest.importorskip("peft")
    from rscore.engine import default_registry
    from rscore.evaluation.manifest import load_dataset
    from rscore.finetune.adapter import ADAPTER_FILE, FORMAT, FORMAT_VERSION, REASONER_DIR
    from rscore.finetune.data import SceneLoader, training_items
    from rscore.finetune.lisa_train import apply_lisa_adapter, save_lisa_adapter, train_lisa

    manifest = load_dataset(_training_set(tmp_path))
    trained = lisa_models.load_lisa(seg3, {"vision_tower": str(clip_dir)})
    before = {k: v.clone() for k, v in trained.sam.mask_decoder.state_dict().items()}
    train_lisa(trained, training_items(manifest), SceneLoader(manifest, None, default_registry(), {}), rank=4,
               steps=4, lr=1e-2, answer="[SEG]")
    assert any(not torch.equal(before[k], v) for k, v in trained.sam.mask_decoder.state_dict().items())
    folder = tmp_path / "adapter"
    save_lisa_adapter(trained, folder / REASONER_DIR)
    (folder / ADAPTER_FILE).write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                                                   "reasoner": {"backend": "lisa", "base_model": "tiny"}}))
    reloaded = apply_lisa_adapter(lisa_models.load_lisa(seg3, {"vision_tower": str(clip_dir)}), folder)

    pic = reference_picture()
    a = reasoner_for(trained, 1).answer(pic, "the yellow disc")  # LoRA unmerged (peft), heads in memory
    b = reasoner_for(reloaded, 1).answer(pic, "the yellow disc")  # LoRA merged from disk, heads from the file
    torch.testing.assert_close(a.seg_embeddings, b.seg_embeddings, rtol=1e-4, atol=1e-5)
    _, _, la = lisa_reasoner.decode_logits(trained.sam, pic, a.seg_embeddings)
    _, _, lb = lisa_reasoner.decode_logits(reloaded.sam, pic, b.seg_embeddings)
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4)
    base = reasoner_for(lisa_models.load_lisa(seg3, {"vision_tower": str(clip_dir)}), 1).answer(pic, "the yellow disc")
    assert not torch.allclose(base.seg_embeddings, b.seg_embeddings)  # the adapter changed what runs


def test_an_adapter_of_another_backend_is_refused(loaded, tmp_path):
    from rscore.finetune.adapter import ADAPTER_FILE, FORMAT, FORMAT_VERSION
    from rscore.finetune.lisa_train import apply_lisa_adapter

    (tmp_path / "reasoner").mkdir()
    (tmp_path / "reasoner" / "adapter_config.json").write_text("{}")
    (tmp_path / ADAPTER_FILE).write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                                                     "reasoner": {"base_model": "qwen2.5-vl-3b"}}))
    from rscore.errors import InputError

    with pytest.raises(InputError, match="not trained with --reasoner lisa"):
        apply_lisa_adapter(loaded, tmp_path)
