"""Tiny detector and text-prompted segmenter models for tests and benchmarks: real model code, nothing downloaded.

- :func:`save_pattern_yolo_onnx` - a YOLO-layout ONNX model (torch.onnx export) whose fixed weights find solid
  colour rectangles: class ``i`` answers to pure ``COLOURS[i]`` pixels; each anchor (stride 8) reports the exact
  extent of the blob around it (max-pooled coordinate maps) and its coverage of that colour as the class score. So
  boxes, NMS (many anchors report each blob), letterboxing and class names can be checked exactly.
- :func:`yolo_like_module` - a random convolutional net of YOLOv8n's size with a v8 head (for benchmarks).
- :func:`save_tiny_owlv2`, :func:`save_tiny_grounding_dino`, :func:`save_tiny_sam3` - random transformers models
  from small configs with small local tokenizers, saved with ``save_pretrained`` (the layout users provide).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLOURS", "save_pattern_yolo_onnx", "yolo_like_module", "export_onnx", "save_tiny_owlv2",
           "save_tiny_grounding_dino", "save_tiny_sam3"]

COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # the class colours of the pattern model (RGB)


def _pattern_module(nc: int, size: int, reach: int, layout: str) -> Any:
    import torch

    class Pattern(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                    indexing="ij")  # fmt: skip
            self.register_buffer("xs", xs[None, None])
            self.register_buffer("ys", ys[None, None])
            self.register_buffer("colours", torch.tensor(COLOURS[:nc], dtype=torch.float32)[:, :, None, None] / 255)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            k, big = 2 * reach + 1, 1.0e4

            def pool(v: torch.Tensor, *_: Any) -> torch.Tensor:  # a k x k max filter, as two 1-D passes
                v = torch.nn.functional.max_pool2d(v, (1, k), 1, (0, reach))
                return torch.nn.functional.max_pool2d(v, (k, 1), 1, (reach, 0))

            # (B, nc, H, W): pixels within 0.15 of a class colour in every channel
            diff = (x[:, None] - self.colours[None]).abs().amax(2)
            m = (diff < 0.15).float()
            x0 = -pool(-(self.xs * m + big * (1 - m)), k, 1, reach)
            y0 = -pool(-(self.ys * m + big * (1 - m)), k, 1, reach)
            x1 = pool(self.xs * m - big * (1 - m), k, 1, reach) + 1
            y1 = pool(self.ys * m - big * (1 - m), k, 1, reach) + 1
            score = torch.nn.functional.avg_pool2d(m, 8, 8)  # (B, nc, H/8, W/8): coverage of each anchor cell
            boxes = torch.stack([x0, y0, x1, y1], 2)[:, :, :, 4::8, 4::8]  # (B, nc, 4, H/8, W/8) at cell centres
            b = x.shape[0]
            scores = score.flatten(2)  # (B, nc, N)
            boxes = boxes.flatten(3)  # (B, nc, 4, N)
            best = scores.argmax(1, keepdim=True)  # (B, 1, N)
            box = torch.gather(boxes, 1, best[:, :, None].expand(b, 1, 4, best.shape[-1]))[:, 0]  # (B, 4, N)
            cxcywh = torch.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2,
                                  box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], 1)  # fmt: skip
            if layout == "v5":  # (B, N, 5 + nc): objectness = best class score, class probabilities = one-hot-ish
                obj = scores.amax(1, keepdim=True)
                probs = (scores >= obj).float() * (obj > 0).float()
                return torch.cat([cxcywh, obj, probs], 1).transpose(1, 2)
            out = torch.cat([cxcywh, scores], 1)  # (B, 4 + nc, N)
            return out.transpose(1, 2) if layout == "v8t" else out  # v8t: a transposed export, (B, N, 4 + nc)

    return Pattern().eval()


def export_onnx(module: Any, path: str | Path, size: int, *, dynamic_batch: bool = False,
                metadata: dict[str, str] | None = None) -> Path:
    """``torch.onnx.export`` (TorchScript exporter) of ``module`` on a ``(1, 3, size, size)`` input named ``images``,
    output ``output0`` (Ultralytics' names), with ``metadata`` as the model's ``metadata_props``."""
    import io

    import onnx
    import torch

    import warnings

    buf = io.BytesIO()
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: needs no onnxscript
        torch.onnx.export(module, (torch.zeros(1, 3, size, size),), buf, input_names=["images"],
                          output_names=["output0"], dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    path = Path(path)
    onnx.save(model, str(path))
    return path


def save_pattern_yolo_onnx(path: str | Path, names: Sequence[str] | None = ("person", "helmet", "vest"), *,
                           size: int = 128, reach: int = 32, layout: str = "v8", dynamic_batch: bool = True,
                           nc: int | None = None) -> Path:
    """Save the colour-pattern YOLO model (see the module docstring). ``names`` go into the ``names`` metadata the
    way Ultralytics writes it (``None``: no metadata; then ``nc`` classes). ``reach`` (px on the network canvas) is
    how far an anchor sees: blobs must be smaller than it and further apart than it. ``layout``: ``v8`` (also
    YOLO11's), ``v8t`` (v8 transposed) or ``v5``."""
    count = len(names) if names else int(nc or 3)
    meta = {"names": repr(dict(enumerate(names or ()))), "imgsz": repr([size, size]), "stride": "8", "task": "detect"}
    return export_onnx(_pattern_module(count, size, reach, layout), path, size, dynamic_batch=dynamic_batch,
                       metadata=meta if names else {})  # fmt: skip


def yolo_like_module(nc: int = 80, width: float = 1.35, seed: int = 0) -> Any:
    """A random conv net shaped like YOLOv8n (about 3 M parameters, about 8 GFLOPs at 640 px): strided conv stages
    to strides 8 / 16 / 32 and a head per stride, concatenated into the v8 layout ``(B, 4 + nc, 8400)``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def conv(c1: int, c2: int, s: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    def stage(c1: int, c2: int, n: int) -> nn.Module:
        return nn.Sequential(conv(c1, c2, 2), *[conv(c2, c2) for _ in range(n)])

    c = [int(v * width) for v in (16, 32, 64, 128, 256)]

    class YoloLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = conv(3, c[0], 2)
            self.s2 = stage(c[0], c[1], 1)
            self.s3 = stage(c[1], c[2], 2)
            self.s4 = stage(c[2], c[3], 2)
            self.s5 = stage(c[3], c[4], 1)
            self.heads = nn.ModuleList(
                nn.Sequential(conv(ch, 64), conv(64, 64), nn.Conv2d(64, 4 + nc, 1)) for ch in (c[2], c[3], c[4])
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p3 = self.s3(self.s2(self.stem(x)))
            p4 = self.s4(p3)
            p5 = self.s5(p4)
            outs = []
            for feat, head, stride in zip((p3, p4, p5), self.heads, (8, 16, 32)):
                o = head(feat)
                b, _, h, w = o.shape
                ys, xs = torch.meshgrid(torch.arange(h, dtype=o.dtype), torch.arange(w, dtype=o.dtype), indexing="ij")
                cx = (xs.reshape(1, -1) + 0.5 + o[:, 0].flatten(1).tanh()) * stride
                cy = (ys.reshape(1, -1) + 0.5 + o[:, 1].flatten(1).tanh()) * stride
                wh = o[:, 2:4].flatten(2).sigmoid() * stride * 8
                cls = o[:, 4:].flatten(2).sigmoid()
                outs.append(torch.cat([cx[:, None], cy[:, None], wh, cls], 1))
            return torch.cat(outs, 2)

    return YoloLike().eval()


# ------------------------------------------------------------------------------------------- transformers models
def _clip_tokenizer(max_length: int) -> Any:
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = sorted(bytes_to_unicode().values(), key=ord)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _prepare() -> Any:
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return torch


def save_tiny_owlv2(folder: str | Path, *, seed: int = 0, image_size: int = 64) -> Path:
    """A random OWLv2 (one layer per tower, 32 wide, ``image_size`` px, patch 16) with a byte-level CLIP tokenizer."""
    torch = _prepare()
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tok = _clip_tokenizer(16)
    ids = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    cfg = Owlv2Config(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=ids[0], eos_token_id=ids[1],
                         pad_token_id=ids[1]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(cfg).eval()
    proc = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}),
                          tokenizer=tok)  # fmt: skip
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_tiny_grounding_dino(folder: str | Path, *, seed: int = 0) -> Path:
    """A random Grounding DINO (Swin backbone 16 wide, BERT text tower 32 wide, 20 queries) with a word-level BERT
    tokenizer that knows the site vocabulary (person, hard hat, helmet, vest, ...)."""
    torch = _prepare()
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor)  # fmt: skip

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "the", "person", "worker", "hard", "hat",
             "helmet", "vest", "car", "truck", "excavator", "cone", "fish", "diver"]  # fmt: skip
    words += list("abcdefghijklmnopqrstuvwxyz") + ["##" + ch for ch in "abcdefghijklmnopqrstuvwxyz"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    cfg = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                             window_size=4, image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, max_text_len=32,
        encoder_n_points=2, decoder_n_points=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(cfg).eval()
    proc = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tok
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_tiny_sam3(folder: str | Path, *, seed: int = 0) -> Path:
    """A random SAM 3 (2-layer ViT 32 wide at 112 px, one layer per DETR / geometry block, 10 queries) with a
    byte-level CLIP tokenizer."""
    torch = _prepare()
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tok = _clip_tokenizer(32)
    ids = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    h = 32
    cfg = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, image_size=112, patch_size=14,
                                 window_size=4, global_attn_indexes=[1], pretrain_image_size=56),
            fpn_hidden_size=h, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, projection_dim=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=ids[0], eos_token_id=ids[1], pad_token_id=ids[1]),
        geometry_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=h, num_layers=1, num_queries=10, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=h, num_upsampling_stages=3, num_attention_heads=2),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Sam3Model(cfg).eval()
    proc = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": 112, "width": 112},
                                                            mask_size={"height": 32, "width": 32}), tokenizer=tok)
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
