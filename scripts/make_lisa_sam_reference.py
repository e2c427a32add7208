"""Make tests/data/lisa_sam_reference.json: what LISA's OWN segment_anything code computes on a tiny seeded SAM.

    python scripts/make_lisa_sam_reference.py /path/to/LISA/checkout [--out tests/data/lisa_sam_reference.json]

Needs a checkout of https://github.com/dvlab-research/LISA (its ``model/segment_anything`` package is imported from
there, nothing of it is copied here) and torch. The tiny SAM's weights are drawn by
:func:`rscore.models.testing.seeded_tensors` in the order of LISA's own state dict, so the test rebuilds exactly the
same checkpoint in LISA's key layout, loads it through rscore's key mapping into transformers' SamModel and must
reproduce these numbers: image embedding, the low-resolution mask logits of two ``text_embeds`` prompts, the IoU head
and the masks at the original picture size after ``postprocess_masks``.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

CONFIG = {"embed": 32, "depth": 2, "heads": 2, "prompt": 64, "image": 256, "patch": 16, "window": 4, "global": [1],
          "mask_in": 16, "dec_depth": 2, "dec_mlp": 128, "dec_heads": 8, "iou_hidden": 64, "seed": 0,
          "scale": 0.3, "text_scale": 3.0}
PICTURE = (200, 300)  # H, W: not square, so the padding and the resize back are checked


def picture() -> np.ndarray:
    h, w = PICTURE
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], -1).astype(np.uint8)
    img[(yy - 90) ** 2 + (xx - 170) ** 2 < 40 ** 2] = (250, 240, 30)
    return img


def sample_index(n: int, k: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lisa_repo", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tests/data/lisa_sam_reference.json"))
    args = ap.parse_args()
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch

    from rscore.models.testing import seeded_tensors

    sys.path.insert(0, str(args.lisa_repo))
    from model.segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from model.segment_anything.utils.transforms import ResizeLongestSide

    c = CONFIG
    grid = c["image"] // c["patch"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=c["depth"], embed_dim=c["embed"], img_size=c["image"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c["heads"], patch_size=c["patch"],
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=c["global"], window_size=c["window"],
            out_chans=c["prompt"]),
        prompt_encoder=PromptEncoder(embed_dim=c["prompt"], image_embedding_size=(grid, grid),
                                     input_image_size=(c["image"], c["image"]), mask_in_chans=c["mask_in"]),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=c["dec_depth"], embedding_dim=c["prompt"], mlp_dim=c["dec_mlp"], num_heads=c["dec_heads"]),
            transformer_dim=c["prompt"], iou_head_depth=3, iou_head_hidden_dim=c["iou_hidden"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    shapes = [(k, list(v.shape)) for k, v in sam.state_dict().items()]
    sam.load_state_dict(seeded_tensors(shapes, seed=c["seed"], scale=c["scale"]), strict=True)

    img = picture()
    transform = ResizeLongestSide(c["image"])
    resized = transform.apply_image(img)
    x = sam.preprocess(torch.from_numpy(resized).permute(2, 0, 1).contiguous().float())[None]
    text = seeded_tensors([("text", [2, c["prompt"]])], seed=c["seed"] + 1, scale=c["text_scale"])["text"]
    with torch.no_grad():
        emb = sam.image_encoder(x)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None, text_embeds=text.unsqueeze(1))
        low, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        full = sam.postprocess_masks(low, input_size=resized.shape[:2], original_size=img.shape[:2])[:, 0]
    e_idx = sample_index(emb.numel(), 256, 1)
    l_idx = sample_index(low.numel(), 256, 2)
    f_idx = sample_index(full.numel(), 256, 3)
    doc = {
        "made_by": "scripts/make_lisa_sam_reference.py with dvlab-research/LISA model/segment_anything",
        "config": c,
        "picture": list(PICTURE),
        "state_dict": shapes,
        "resized": list(resized.shape[:2]),
        "embedding": {"shape": list(emb.shape), "index": e_idx, "values": emb.flatten()[e_idx].tolist(),
                      "sum": float(emb.sum())},
        "low_res": {"shape": list(low.shape), "index": l_idx, "values": low.flatten()[l_idx].tolist()},
        "iou": iou.flatten().tolist(),
        "full": {"shape": list(full.shape), "index": f_idx, "values": full.flatten()[f_idx].tolist(),
                 "positive": [int((full[i] > 0).sum()) for i in range(full.shape[0])]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc))
    print(f"wrote {args.out}: low-res {tuple(low.shape)}, iou {doc['iou']}, positive px {doc['full']['positive']}")


if __name__ == "__main__":
    main()
