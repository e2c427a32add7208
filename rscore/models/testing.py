"""Tiny randomly initialised models for tests and benchmarks: the real classes, built from configs, saved in the
layouts users provide (``save_pretrained`` folders, SAM2 ``{"model": state_dict}`` checkpoints), so that tests load
them through the same registry and loading code as real weights. Nothing is downloaded.

- :func:`save_tiny_qwen_vl` - Qwen2.5-VL or Qwen3-VL with a byte-level tokenizer (every UTF-8 byte is a token) and a
  Qwen-style chat template; about 0.1 M parameters, generates in milliseconds.
- :func:`teach_answer` - a few optimiser steps that make such a model answer one prompt with a given text (greedy
  decoding then reproduces it), so a test can drive the whole reasoner -> parser -> segmenter path through a real
  ``generate``.
- :func:`save_tiny_sam2_checkpoint` - a SAM2 hiera-tiny (the ``sam2`` package's own yaml config, random weights,
  38.9 M parameters: SAM2's predictor fixes the 1024 px input and its feature sizes) saved as a checkpoint.
- :func:`save_tiny_hf_sam2` - transformers' Sam2Model at 256 px input with a few-thousand-parameter backbone.

Needs torch and transformers (and sam2 for the SAM2 checkpoint); imported only by tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "save_tiny_qwen_vl",
    "teach_answer",
    "save_tiny_sam2_checkpoint",
    "save_tiny_hf_sam2",
    "targets_json",
    "seeded_tensors",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The shape of Qwen's chat template (ChatML with vision tokens), small enough to read."""

_SPECIALS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
             "<|video_pad|>")


def _tokenizer() -> Any:
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = sorted(bytes_to_unicode().values(), key=ord)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": list(_SPECIALS[2:])})
    return tok


def save_tiny_qwen_vl(folder: str | Path, family: str = "qwen2.5-vl", *, seed: int = 0, hidden: int = 64,
                      layers: int = 2) -> Path:
    """Save a tiny random ``family`` (``qwen2.5-vl`` | ``qwen3-vl``) model, its processor and chat template to
    ``folder`` with ``save_pretrained``; returns the folder."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import Qwen2VLImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    torch.manual_seed(seed)
    tok = _tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in _SPECIALS}
    token_ids = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                     vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    heads = max(2, hidden // 16)
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=8192,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    head_dim = hidden // heads
    section = [head_dim // 8, head_dim // 8, head_dim // 2 - 2 * (head_dim // 8)]
    if family == "qwen2.5-vl":
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLVideoProcessor,
        )

        patch = 14
        config = Qwen2_5_VLConfig(
            text_config={**text, "rope_parameters": {
                "rope_type": "default", "mrope_section": section, "rope_theta": 10000.0}},
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                               patch_size=patch, window_size=56, fullatt_block_indexes=[1]),
            **token_ids,
        )
        model = Qwen2_5_VLForConditionalGeneration(config)
        processor_cls, video = Qwen2_5_VLProcessor, Qwen2VLVideoProcessor(patch_size=patch)
    elif family == "qwen3-vl":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

        patch = 16
        config = Qwen3VLConfig(
            text_config={**text, "head_dim": head_dim, "rope_parameters": {
                "rope_type": "default", "mrope_section": section, "mrope_interleaved": True, "rope_theta": 10000.0}},
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                               patch_size=patch, num_position_embeddings=64, deepstack_visual_indexes=[0]),
            **token_ids,
        )
        model = Qwen3VLForConditionalGeneration(config)
        processor_cls, video = Qwen3VLProcessor, Qwen3VLVideoProcessor(patch_size=patch)
    else:
        raise ValueError(f"unknown tiny family {family!r} (qwen2.5-vl or qwen3-vl)")
    image = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                  min_pixels=(2 * patch) ** 2 * 4, max_pixels=(2 * patch) ** 2 * 1024)
    processor = processor_cls(image_processor=image, tokenizer=tok, video_processor=video, chat_template=CHAT_TEMPLATE)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def teach_answer(reasoner: Any, inputs: Mapping[str, Any], answer: str, *, one_token: bool = True, steps: int = 300,
                 lr: float = 1e-2, seed: int = 0) -> int:
    """Train ``reasoner.model`` in place until greedy decoding of ``inputs`` (from ``reasoner.encode``) yields
    ``answer`` followed by the end-of-turn token; returns the optimiser steps taken. Raises ``AssertionError`` when
    ``steps`` were not enough (a test built on it must not go on with a model that did not learn).

    With ``one_token`` the answer is first added to the tokenizer as one (non-special) token and the embeddings are
    resized, so the model learns two tokens (a few steps) instead of one per byte (a hundred steps and more); the
    decoded text is the same. Only for tiny test models: full-parameter Adam on one sequence.
    """
    import torch

    from rscore.finetune.lora import append_answer

    model, tok = reasoner.model, reasoner.processor.tokenizer
    torch.manual_seed(seed)
    if one_token:
        tok.add_tokens([answer])
        model.resize_token_embeddings(len(tok))
        target = torch.tensor([[tok.convert_tokens_to_ids(answer)]], device=model.device)
    else:
        target = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    end = torch.tensor([[tok.convert_tokens_to_ids("<|im_end|>")]], device=model.device)
    target = torch.cat([target, end], dim=1)
    prompt_len = int(inputs["input_ids"].shape[1])
    full, labels = append_answer(inputs, target)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    check = 5 if one_token else 10
    model.train()
    try:
        for taken in range(1, steps + 1):
            loss = model(**full, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if taken % check == 0:
                with torch.no_grad():
                    logits = model(**full).logits[0, prompt_len - 1 : -1]
                if bool((logits.argmax(-1) == target[0]).all()):
                    return taken
    finally:
        model.eval()
    raise AssertionError(f"the tiny model did not learn the answer in {steps} steps (loss {float(loss):.3f})")


def save_tiny_sam2_checkpoint(
    path: str | Path, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", *, seed: int = 0
) -> Path:
    """Build the SAM2 model of a ``sam2`` package yaml config with random weights and save ``{"model": state_dict}``
    to ``path`` (the layout of Meta's checkpoints); returns the path."""
    import torch

    from rscore.models.sam2_build import build_sam2_model

    torch.manual_seed(seed)
    model = build_sam2_model(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


def save_tiny_hf_sam2(folder: str | Path, *, image_size: int = 256, seed: int = 0, video: bool = False) -> Path:
    """Save a tiny random transformers ``Sam2Model`` (``image_size`` px input) and its ``Sam2Processor`` to
    ``folder`` with ``save_pretrained``; returns the folder. With ``video``, save a ``Sam2VideoModel`` and a
    ``Sam2VideoProcessor`` instead: the layout of the ``facebook/sam2.1-hiera-*`` repositories."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    s = image_size
    torch.manual_seed(seed)
    config = Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model", image_size=[s, s], hidden_size=8, blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[8, 4, 4, 4], global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    folder = Path(folder)
    image = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    if video:
        from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor

        parts = config.to_dict()
        video_config = Sam2VideoConfig(vision_config=parts["vision_config"], image_size=s,
                                       prompt_encoder_config=parts["prompt_encoder_config"],
                                       mask_decoder_config=parts["mask_decoder_config"])
        Sam2VideoModel(video_config).save_pretrained(folder)
        frames = Sam2VideoVideoProcessor(size={"height": s, "width": s})
        Sam2VideoProcessor(image_processor=image, video_processor=frames, target_size=s).save_pretrained(folder)
        return folder
    Sam2Model(config).save_pretrained(folder)
    Sam2Processor(image_processor=image).save_pretrained(folder)
    return folder


def targets_json(targets: Sequence[Mapping[str, Any]], steps: Sequence[str] = ("look",)) -> str:
    """An answer in rscore's schema (compact JSON), for :func:`teach_answer`."""
    import json

    return json.dumps({"steps": list(steps), "targets": list(targets)}, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------------- LISA
def seeded_tensors(shapes: Sequence[tuple[str, Sequence[int]]], seed: int = 0, scale: float = 0.05) -> dict[str, Any]:
    """Reproducible random tensors for ``(key, shape)`` pairs, drawn in the given order from one seeded generator
    (the same on every machine with the same torch): how a checkpoint in a foreign key layout is made in tests."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(int(d) for d in shape), generator=g) * scale for k, shape in shapes}


LISA_SAM_REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "data" / "lisa_sam_reference.json"


def save_tiny_clip_vision(folder: str | Path, *, seed: int = 0, hidden: int = 32, image_size: int = 28,
                          patch_size: int = 14) -> Path:
    """A tiny random ``CLIPVisionModel`` saved as a CLIP folder (``vision_model.*`` keys), LISA's vision tower."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=patch_size, projection_dim=hidden)
    folder = Path(folder)
    CLIPVisionModel(cfg).save_pretrained(str(folder))
    return folder


def _lisa_tokenizer(first: str, words: Sequence[str]) -> Any:
    """A word-level LLaMA-like tokenizer (``<s>`` prepended) whose id 0 is ``first``, with LISA's added tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "[SEG]", "<im_start>", "<im_end>", "[REJ]"]
    vocab_list = [first] + [t for t in specials if t != first]
    for w in words:
        if w not in vocab_list:
            vocab_list.append(w)
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_tokens(["[SEG]", "[REJ]"])  # LISA: tokenizer.add_tokens("[SEG]") (GSVA adds [REJ])
    fast.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return fast


def save_tiny_lisa(
    folder: str | Path,
    *,
    first_token: str = "[SEG]",
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    mm_hidden: int = 32,
    projector: str = "linear",
    shards: int = 2,
    zero_lm_head: bool = True,
    words: Sequence[str] = (),
) -> Path:
    """A tiny random checkpoint in LISA's ORIGINAL key layout, as LISA's merge script writes it: ``config.json``
    (LLaVA-LLaMA fields + ``out_dim``, ``mm_*``, ``vision_tower``), a tokenizer with ``[SEG]``, ``<im_start>``,
    ``<im_end>``, and ``pytorch_model-0000k-of-0000n.bin`` shards with an index. The SAM part is the seeded tiny SAM
    of ``tests/data/lisa_sam_reference.json`` (whose numbers LISA's own code produced).

    ``zero_lm_head`` makes greedy decoding emit token id 0 every step, and ``first_token`` chooses that token
    (``[SEG]``: one mask per generated token; ``</s>``: an empty answer; ``[REJ]``: a rejection) - how a test drives a
    random language model to a known answer."""
    import json

    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rscore.reasoners.lisa import SYSTEM

    ref = json.loads(LISA_SAM_REFERENCE.read_text())
    prompt_words = (SYSTEM + " USER : ASSISTANT What is in this image ? Please output segmentation mask .").split()
    tokenizer = _lisa_tokenizer(first_token, [*prompt_words, *words])
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    llama_cfg = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                            num_attention_heads=2, num_key_value_heads=2, vocab_size=vocab,
                            max_position_embeddings=512, rms_norm_eps=1e-6)
    lm = LlamaForCausalLM(llama_cfg)
    sd: dict[str, Any] = {k: v.clone() for k, v in lm.state_dict().items()}  # LISA's LLM keys are LLaMA's
    if zero_lm_head:
        sd["lm_head.weight"].zero_()
    g = torch.Generator().manual_seed(seed + 7)
    if projector == "linear":
        sd["model.mm_projector.weight"] = torch.randn(hidden, mm_hidden, generator=g) * 0.2
        sd["model.mm_projector.bias"] = torch.randn(hidden, generator=g) * 0.2
    else:
        sd["model.mm_projector.0.weight"] = torch.randn(hidden, mm_hidden, generator=g) * 0.2
        sd["model.mm_projector.0.bias"] = torch.zeros(hidden)
        sd["model.mm_projector.2.weight"] = torch.randn(hidden, hidden, generator=g) * 0.2
        sd["model.mm_projector.2.bias"] = torch.zeros(hidden)
    out_dim = int(ref["config"]["prompt"])
    sd["model.text_hidden_fcs.0.0.weight"] = torch.randn(hidden, hidden, generator=g) * 0.5
    sd["model.text_hidden_fcs.0.0.bias"] = torch.randn(hidden, generator=g) * 0.5
    sd["model.text_hidden_fcs.0.2.weight"] = torch.randn(out_dim, hidden, generator=g) * 0.5
    sd["model.text_hidden_fcs.0.2.bias"] = torch.randn(out_dim, generator=g) * 0.5
    sam = seeded_tensors(ref["state_dict"], seed=ref["config"]["seed"], scale=ref["config"]["scale"])
    sd.update({f"model.visual_model.{k}": v for k, v in sam.items()})

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(v.numel() for v in sd.values())
    parts: list[dict[str, Any]] = [{} for _ in range(shards)]
    done = 0
    for k, v in sd.items():  # shards of about equal bytes, keys in order, as save_pretrained splits them
        parts[min(shards - 1, done * shards // max(1, total))][k] = v
        done += v.numel()
    weight_map = {}
    for i, part in enumerate(p for p in parts if p):
        name = f"pytorch_model-{i + 1:05d}-of-{sum(1 for p in parts if p):05d}.bin"
        torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        **{k: v for k, v in llama_cfg.to_dict().items() if k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act", "rope_theta")},
        "architectures": ["LISAForCausalLM"], "model_type": "llava", "out_dim": out_dim,
        "mm_vision_tower": "openai/clip-vit-large-patch14", "vision_tower": "openai/clip-vit-large-patch14",
        "mm_hidden_size": mm_hidden, "mm_vision_select_layer": -2, "mm_use_im_start_end": True,
        "mm_projector_type": projector, "train_mask_decoder": True,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(str(folder))
    return folder
