"""LISA-family checkpoints in their original key layout, loaded into transformers' Llava and SAM classes.

A LISA checkpoint (``xinlai/LISA-7B-v1``, ``xinlai/LISA-13B-llama2-v1`` and their ``-explanatory`` variants, saved by
LISA's ``merge_lora_weights_and_save_hf_model.py``) holds three parts under one state dict, all with LISA's own key
names (``LISAForCausalLM``, a LLaVA-v1 ``LlavaLlamaForCausalLM`` with two extra modules):

================================================  ==============================================================
LISA key                                          here
================================================  ==============================================================
``model.embed_tokens`` / ``model.layers.N`` /     ``LlavaForConditionalGeneration.model.language_model.*``
``model.norm`` / ``lm_head``                      (LLaMA, same sub-names) and ``lm_head``
``model.mm_projector.{weight,bias}`` (linear)     ``model.multi_modal_projector.linear_1``; ``linear_2`` is the
                                                  identity and the activation ``linear``, so the product is exact
``model.mm_projector.{0,2}.*`` (mlp2x_gelu)       ``linear_1`` / ``linear_2`` with GELU
``model.visual_model.*`` (segment_anything SAM)   ``transformers.SamModel`` (:func:`sam_key`: the renames of
                                                  transformers' own SAM conversion)
``model.text_hidden_fcs.0.{0,2}.*``               :attr:`LisaModel.text_hidden_fcs` (Linear, ReLU, Linear):
                                                  the [SEG] hidden state -> SAM prompt embedding
================================================  ==============================================================

The CLIP vision tower is *not* in a LISA checkpoint (LISA's merge script drops every ``vision_tower`` key); it loads
from the checkpoint's ``vision_tower`` (``openai/clip-vit-large-patch14``): a folder given as ``vision_tower``, the
``--weights`` folder, or the Hugging Face cache (registry name ``clip-vit-large-patch14``), never downloaded.

Loading maps every key once, explicitly. A checkpoint with a key that maps nowhere, or a model parameter that no key
fills, is refused with :class:`~rscore.errors.BackendUnavailable` naming the first offending keys - a corrupted or
foreign checkpoint never runs with random weights. Shards are read one at a time and copied into the model, so the
state dict is never held twice (peak memory ~ the model plus one shard).

LISA writes ``<image>`` as a placeholder id (-200) outside the vocabulary; transformers' Llava needs a real token, so
``<image>`` is added to the tokenizer (and one embedding row, never generated) when the checkpoint lacks it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rscore.errors import BackendUnavailable, InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "LisaModel",
    "load_lisa",
    "sam_key",
    "llava_key",
    "split_lisa_key",
    "read_lisa_config",
    "iter_checkpoint",
    "SEG_TOKEN",
    "IMAGE_TOKEN",
    "IM_START",
    "IM_END",
    "REJ_TOKEN",
    "HEADS_FILE",
    "apply_lisa_adapter",
]

HEADS_FILE = "lisa_heads.safetensors"  # an adapter's tuned [SEG] projection + SAM mask decoder (rscore finetune)
SEG_TOKEN = "[SEG]"
REJ_TOKEN = "[REJ]"  # GSVA-style rejection token, where a checkpoint has one
IMAGE_TOKEN = "<image>"
IM_START = "<im_start>"
IM_END = "<im_end>"
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Buffers that old checkpoints saved and current modules recompute: skipped on purpose, never "unexpected".
_IGNORED = (re.compile(r".*\.rotary_emb\.inv_freq$"), re.compile(r".*position_ids$"))


# ----------------------------------------------------------------------------------------------------- key mapping
_SAM_RENAMES: tuple[tuple[str, str], ...] = (
    # (regex on the segment_anything key, replacement) - applied in order, each at most once per key
    (r"^image_encoder\.", "vision_encoder."),
    (r"^vision_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^vision_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
    (r"^vision_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^vision_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^vision_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^vision_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
)
_SAM_MLP = re.compile(r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\.(.*)$")
_SAM_PE = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def sam_key(key: str, mlp_depth: int = 3) -> list[str]:
    """transformers ``SamModel`` key(s) for one segment_anything key (``[]`` when it maps nowhere).

    The random-Fourier positional matrix is shared by the prompt encoder and the image positional embedding in
    transformers, so it fills two keys. The decoder's MLPs (``layers.0..d-1``) become ``proj_in``, ``layers.i-1``,
    ``proj_out``.
    """
    if key == _SAM_PE:
        return ["shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding"]
    m = _SAM_MLP.match(key)
    if m:
        head, i, rest = m.group(1), int(m.group(2)), m.group(3)
        if i == 0:
            name = "proj_in"
        elif i == mlp_depth - 1:
            name = "proj_out"
        else:
            name = f"layers.{i - 1}"
        return [f"mask_decoder.{head}.{name}.{rest}"]
    out = key
    for pattern, repl in _SAM_RENAMES:
        out = re.sub(pattern, repl, out, count=1)
    if not out.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.")):
        return []
    return [out]


def llava_key(key: str) -> list[str]:
    """``LlavaForConditionalGeneration`` key(s) for one LLaVA-v1/LISA language-side key (``[]`` = maps nowhere).

    ``model.mm_projector.weight`` (a single linear layer, LLaVA-v1) maps to ``linear_1``; the loader sets
    ``linear_2`` to the identity. ``model.vision_tower.vision_tower.vision_model.*`` (a checkpoint that kept CLIP)
    maps to the vision tower.
    """
    if key == "lm_head.weight":
        return [key]
    m = re.match(r"^model\.(embed_tokens|layers\.\d+|norm)\.(.*)$", key)
    if m:
        return [f"model.language_model.{m.group(1)}.{m.group(2)}"]
    m = re.match(r"^model\.mm_projector\.(weight|bias)$", key)
    if m:
        return [f"model.multi_modal_projector.linear_1.{m.group(1)}"]
    m = re.match(r"^model\.mm_projector\.([02])\.(weight|bias)$", key)
    if m:
        return [f"model.multi_modal_projector.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"]
    m = re.match(r"^model\.vision_tower\.vision_tower\.vision_model\.(.*)$", key)
    if m:
        return [f"model.vision_tower.{m.group(1)}"]
    return []


def clip_key(key: str) -> list[str]:
    """Vision tower key(s) for a key of a CLIP checkpoint: ``vision_model.*`` (``CLIPModel``, e.g.
    openai/clip-vit-large-patch14) or the bare ``embeddings.* / encoder.* / ...`` of a saved ``CLIPVisionModel``;
    the text side maps to nothing."""
    key = key[len("vision_model."):] if key.startswith("vision_model.") else key
    if key.startswith(("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")):
        return [f"model.vision_tower.{key}"]
    return []


def split_lisa_key(key: str, mlp_depth: int = 3) -> tuple[str, list[str]] | None:
    """Which part a LISA key belongs to and its key(s) there: ``("llava" | "sam" | "proj", [keys])``, or ``None``."""
    if key.startswith("model.visual_model."):
        keys = sam_key(key[len("model.visual_model."):], mlp_depth)
        return ("sam", keys) if keys else None
    m = re.match(r"^model\.text_hidden_fcs\.0\.([02])\.(weight|bias)$", key)
    if m:
        return "proj", [f"{m.group(1)}.{m.group(2)}"]
    keys = llava_key(key)
    return ("llava", keys) if keys else None


# -------------------------------------------------------------------------------------------------- reading files
def read_lisa_config(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` (LISA's LLaVA-LLaMA config with ``out_dim``, ``mm_*`` and ``vision_tower``)."""
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"{path}: not a readable LISA config.json ({exc})") from None
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in cfg]
    if missing:
        raise BackendUnavailable(f"{path}: not a LISA/LLaVA-LLaMA config (no {', '.join(missing)})")
    return cfg


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise BackendUnavailable(f"{index}: unreadable shard index ({exc})") from None
            files = [folder / s for s in shards]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise BackendUnavailable(f"{folder}: shard(s) listed in {index_name} are missing: {', '.join(absent[:3])}")
            return files
    for pattern in ("*.safetensors", "pytorch_model*.bin", "*.bin"):
        files = sorted(folder.glob(pattern))
        if files:
            return files
    raise BackendUnavailable(f"{folder}: no weights (*.safetensors or pytorch_model*.bin)")


def iter_checkpoint(folder: Path) -> Iterator[dict[str, torch.Tensor]]:
    """The checkpoint's state dict, one shard at a time (``.bin`` files are read with ``weights_only=True``)."""
    import torch

    for f in _weight_files(folder):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:  # memory-mapped: pages are read as tensors are copied
                yield {k: sf.get_tensor(k) for k in sf.keys()}
        else:
            # mmap: the shard's storage stays in the page cache instead of the heap, and leaves with the mapping
            yield torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)


# ------------------------------------------------------------------------------------------------------ the model
@dataclass
class LisaModel:
    """A loaded LISA checkpoint: the Llava model, SAM, the [SEG] projection, tokenizer and token ids."""

    llava: Any  # transformers.LlavaForConditionalGeneration
    sam: Any  # transformers.SamModel
    text_hidden_fcs: Any  # torch.nn.Sequential(Linear, ReLU, Linear)
    tokenizer: Any
    seg_token_id: int
    rej_token_id: int | None
    image_token_id: int
    image_seq_length: int
    clip_size: int
    use_im_start_end: bool
    config: Mapping[str, Any]
    device: Any
    dtype: Any
    path: Path


def _sam_config(sam_shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """A ``SamConfig`` read off the checkpoint's own tensor shapes (ViT-H, -L, -B or a tiny test model)."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import SamConfig
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    def shape(k: str) -> tuple[int, ...]:
        try:
            return sam_shapes[k]
        except KeyError:
            raise BackendUnavailable(f"LISA checkpoint has no SAM key 'model.visual_model.{k}'") from None

    embed, _, patch, _ = shape("image_encoder.patch_embed.proj.weight")
    pos = shape("image_encoder.pos_embed")
    grid = pos[1]
    blocks = sorted({int(m.group(1)) for k in sam_shapes if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    rel = {b: shape(f"image_encoder.blocks.{b}.attn.rel_pos_h")[0] for b in blocks}
    head_dim = shape(f"image_encoder.blocks.{blocks[0]}.attn.rel_pos_h")[1]
    window = (min(rel.values()) + 1) // 2
    global_idx = [b for b, n in rel.items() if n == 2 * grid - 1 and n != 2 * window - 1]
    mlp_dim = shape(f"image_encoder.blocks.{blocks[0]}.mlp.lin1.weight")[0]
    prompt_dim = shape("prompt_encoder.no_mask_embed.weight")[1]
    mask_in = shape("prompt_encoder.mask_downscaling.3.weight")[0]
    layers = sorted({int(m.group(1)) for k in sam_shapes
                     if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))})
    dec_mlp = shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0]
    downsample = prompt_dim // shape("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    iou_hidden = shape("mask_decoder.iou_prediction_head.layers.0.weight")[0]
    iou_depth = 1 + max(int(m.group(1)) for k in sam_shapes
                        if (m := re.match(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.", k)))
    vision = SamVisionConfig(
        hidden_size=embed, output_channels=prompt_dim, num_hidden_layers=len(blocks),
        num_attention_heads=embed // head_dim, global_attn_indexes=global_idx, image_size=grid * patch,
        patch_size=patch, window_size=window, mlp_dim=mlp_dim, num_pos_feats=prompt_dim // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=prompt_dim, image_size=grid * patch, patch_size=patch, mask_input_channels=mask_in,
    )
    decoder = SamMaskDecoderConfig(
        # head counts are not in the weights: SAM's two-way transformer always has 8 (segment_anything build_sam)
        hidden_size=prompt_dim, num_hidden_layers=len(layers), num_attention_heads=8, mlp_dim=dec_mlp,
        attention_downsample_rate=downsample, iou_head_hidden_dim=iou_hidden, iou_head_depth=iou_depth,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def _vision_tower_folder(cfg: Mapping[str, Any], options: Mapping[str, Any]) -> Path:
    explicit = options.get("vision_tower")
    if explicit:
        path = Path(str(explicit)).expanduser()
        if not (path / "config.json").is_file():
            raise BackendUnavailable(f"{path}: not a CLIP model folder (no config.json) for option vision_tower")
        return path
    from rscore.models.registry import resolve

    return resolve("clip-vit-large-patch14", weights=options.get("weights")).path


def load_lisa(
    folder: Path, options: Mapping[str, Any] | None = None, *, device: Any = "cpu", dtype: Any = None
) -> LisaModel:
    """Build the Llava + SAM + projection modules from the checkpoint's shapes and fill them from its shards."""
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SamModel

    options = dict(options or {})
    folder = Path(folder)
    cfg = read_lisa_config(folder)
    dtype = dtype or torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
    except Exception as exc:  # tokenizers raise many types; the message is what matters
        raise BackendUnavailable(f"{folder}: cannot load the LISA tokenizer ({type(exc).__name__}: {exc})") from None
    seg_ids = tokenizer(SEG_TOKEN, add_special_tokens=False).input_ids
    if len(seg_ids) != 1:
        raise BackendUnavailable(f"{folder}: the tokenizer has no single {SEG_TOKEN} token: not a LISA checkpoint")
    rej_ids = tokenizer(REJ_TOKEN, add_special_tokens=False).input_ids
    rej = rej_ids[0] if len(rej_ids) == 1 and REJ_TOKEN in tokenizer.get_vocab() else None
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    vt_folder = _vision_tower_folder(cfg, options)
    vision_cfg = CLIPVisionConfig.from_pretrained(str(vt_folder), local_files_only=True)
    llama_fields = {k: v for k, v in cfg.items() if k in LlamaConfig().to_dict() and k not in ("architectures", "model_type",
                                                                                              "transformers_version")}
    text_cfg = LlamaConfig(**llama_fields)
    vocab = max(text_cfg.vocab_size, len(tokenizer))
    text_cfg.vocab_size = vocab
    select_layer = int(cfg.get("mm_vision_select_layer", -2))
    projector = str(cfg.get("mm_projector_type", "linear"))
    if projector not in ("linear", "mlp2x_gelu"):
        raise BackendUnavailable(f"{folder}: mm_projector_type '{projector}' is not supported (linear, mlp2x_gelu)")
    llava_cfg = LlavaConfig(
        text_config=text_cfg,
        vision_config=vision_cfg,
        image_token_id=image_id,
        projector_hidden_act="linear" if projector == "linear" else "gelu",
        vision_feature_layer=select_layer,
        vision_feature_select_strategy="default",
        image_seq_length=(vision_cfg.image_size // vision_cfg.patch_size) ** 2,
        multimodal_projector_bias=True,
    )

    # SAM's architecture comes from the tensor shapes, read without loading any tensor twice: one pass over the
    # shards collects shapes (safetensors reads headers only; .bin shards are loaded anyway for the copy below).
    shapes = _sam_shapes(folder)
    sam_cfg = _sam_config(shapes)
    iou_depth = sam_cfg.mask_decoder_config.iou_head_depth
    hyper_depth = 3

    from transformers.initialization import no_init_weights

    with no_init_weights():
        llava = LlavaForConditionalGeneration(llava_cfg)
        sam = SamModel(sam_cfg)
    hidden, out_dim = text_cfg.hidden_size, int(cfg.get("out_dim", sam_cfg.prompt_encoder_config.hidden_size))
    proj = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim))
    targets = {"llava": llava, "sam": sam, "proj": proj}
    expected = {part: set(m.state_dict()) for part, m in targets.items()}
    filled: dict[str, set[str]] = {part: set() for part in targets}
    unexpected: list[str] = []
    with torch.no_grad():
        for shard in iter_checkpoint(folder):
            per_part: dict[str, dict[str, torch.Tensor]] = {part: {} for part in targets}
            for key, tensor in shard.items():
                if any(p.match(key) for p in _IGNORED):
                    continue
                depth = iou_depth if ".iou_prediction_head." in key else hyper_depth
                where = split_lisa_key(key, depth)
                if where is None or not all(k in expected[where[0]] for k in where[1]):
                    unexpected.append(key)
                    continue
                part, keys = where
                for k in keys:
                    per_part[part][k] = tensor
            for part, sd in per_part.items():
                if sd:
                    _copy_into(targets[part], sd, folder, extra_rows=vocab - cfg["vocab_size"])
                    filled[part] |= set(sd)
            del shard, per_part
        _load_vision_tower(llava, vt_folder, filled["llava"])
        if projector == "linear":
            lin2 = llava.model.multi_modal_projector.linear_2
            lin2.weight.copy_(torch.eye(lin2.weight.shape[0], dtype=lin2.weight.dtype))
            lin2.bias.zero_()
            filled["llava"] |= {"model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias"}
        new_rows = vocab - cfg["vocab_size"]
        if new_rows > 0:  # <image> added: its embedding is replaced by image features, its logit never wins
            emb = llava.get_input_embeddings().weight
            emb[-new_rows:] = emb[: cfg["vocab_size"]].mean(0)
            llava.lm_head.weight[-new_rows:] = 0
            filled["llava"] |= {"model.language_model.embed_tokens.weight", "lm_head.weight"}
    if unexpected:
        raise BackendUnavailable(
            f"{folder}: {len(unexpected)} checkpoint key(s) map to nothing in a LISA model, first: "
            f"{', '.join(sorted(unexpected)[:5])} - not a LISA checkpoint, or a corrupted one"
        )
    missing = sorted(f"{part}:{k}" for part in targets for k in expected[part] - filled[part])
    if missing:
        raise BackendUnavailable(
            f"{folder}: {len(missing)} model weight(s) missing from the checkpoint, first: {', '.join(missing[:5])}"
        )
    load_in = str(options.get("load_in") or "none")
    if load_in == "none":
        for m in targets.values():
            m.to(device=device, dtype=dtype).eval()
    else:  # bitsandbytes: cast first, swap the language model's linear layers, quantise on the move to the GPU
        from rscore.models.quantize import bnb_config, quantize_linear_layers

        for m in targets.values():
            m.to(dtype=dtype)
        quantize_linear_layers(llava.model.language_model, bnb_config(load_in, compute_dtype=dtype))
        for m in targets.values():
            m.to(device=device).eval()
    return LisaModel(
        llava=llava, sam=sam, text_hidden_fcs=proj, tokenizer=tokenizer, seg_token_id=int(seg_ids[0]),
        rej_token_id=rej, image_token_id=int(image_id), image_seq_length=int(llava_cfg.image_seq_length),
        clip_size=int(vision_cfg.image_size), use_im_start_end=bool(cfg.get("mm_use_im_start_end", True)),
        config=cfg, device=device, dtype=dtype, path=folder,
    )


def _sam_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    prefix = "model.visual_model."
    shapes: dict[str, tuple[int, ...]] = {}
    for f in _weight_files(folder):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    if k.startswith(prefix):
                        shapes[k[len(prefix):]] = tuple(sf.get_slice(k).get_shape())
        else:
            import torch

            sd = torch.load(str(f), map_location="meta", weights_only=True, mmap=True)
            shapes.update({k[len(prefix):]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)})
    if not shapes:
        raise BackendUnavailable(f"{folder}: no SAM weights (model.visual_model.*): not a LISA checkpoint")
    return shapes


_VOCAB_KEYS = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def _copy_into(module: Any, sd: Mapping[str, Any], folder: Path, extra_rows: int = 0) -> None:
    """Copy tensors into ``module``'s parameters; the vocabulary matrices may have ``extra_rows`` more rows in the
    model (``<image>`` added at load), filled by the caller."""
    own = module.state_dict()
    for k, v in sd.items():
        target = own[k]
        if k in _VOCAB_KEYS and extra_rows and tuple(v.shape) == (target.shape[0] - extra_rows, *target.shape[1:]):
            target = target[: v.shape[0]]
        if tuple(target.shape) != tuple(v.shape):
            raise BackendUnavailable(
                f"{folder}: weight for {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}"
            )
        target.copy_(v)


def _load_vision_tower(llava: Any, folder: Path, filled: set[str]) -> None:
    """Fill the CLIP vision tower from its own folder (unless the LISA checkpoint carried it)."""
    expected = {k for k in llava.state_dict() if k.startswith("model.vision_tower.")}
    if expected <= filled:
        return
    got: dict[str, Any] = {}
    for shard in iter_checkpoint(folder):
        for key, tensor in shard.items():
            if any(p.match(key) for p in _IGNORED):
                continue
            for k in clip_key(key):
                if k in expected:
                    got[k] = tensor
        _copy_into(llava, got, folder)
        filled |= set(got)
        got.clear()


def apply_lisa_adapter(model: LisaModel, adapter: str | Path) -> LisaModel:
    """Merge an ``rscore finetune --reasoner lisa`` adapter into a loaded LISA model (returns it)."""
    from rscore.models.adapter import read_adapter  # a leaf module: reading the adapter's description

    info = read_adapter(adapter)
    if info.reasoner is None or info.reasoner.get("backend") != "lisa":
        raise InputError("was not trained with --reasoner lisa (no LISA reasoner section)", path=info.path)
    heads_file = info.reasoner_dir / HEADS_FILE
    if not heads_file.is_file():
        raise InputError(f"reasoner/{HEADS_FILE} is missing (incomplete adapter)", path=info.path)
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from peft import PeftModel
    from safetensors.torch import load_file

    heads = load_file(str(heads_file), device="cpu")
    for prefix, module in (("text_hidden_fcs.", model.text_hidden_fcs), ("mask_decoder.", model.sam.mask_decoder)):
        own = module.state_dict()
        part = {k[len(prefix):]: v for k, v in heads.items() if k.startswith(prefix)}
        wrong = [k for k in own if k not in part or tuple(part[k].shape) != tuple(own[k].shape)]
        if wrong:
            raise BackendUnavailable(
                f"{info.path}: the adapter's {prefix.rstrip('.')} does not fit this LISA model (first: {wrong[0]}); "
                f"it was trained on {info.reasoner.get('base_model')}"
            )
        module.load_state_dict({k: part[k].to(own[k].dtype) for k in own})
    try:
        model.llava = PeftModel.from_pretrained(model.llava, str(info.reasoner_dir), is_trainable=False).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise BackendUnavailable(
            f"{info.path}: the LoRA does not fit this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    for m in (model.llava, model.sam, model.text_hidden_fcs):
        m.to(device=model.device, dtype=model.dtype).eval()
    return model
