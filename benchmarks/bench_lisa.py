"""LISA backend figures: engine overhead vs the bare forward, and peak memory of the loading path.

    python benchmarks/bench_lisa.py overhead [--repeat 5]      # tiny random LISA on CPU
    python benchmarks/bench_lisa.py memory [--hidden 1024 --layers 8 --shards 4]
    python benchmarks/bench_lisa.py reasonseg --data ReasonSeg/ --weights DIR [--model lisa-7b-v1] [--device cuda]

``overhead``: the same picture and query through (a) the bare forward - ``llava.generate`` with the engine's own
decoding settings (greedy, ``<image>`` suppressed, hidden states), the [SEG] projection and SAM's image encoder + mask
decoder called directly - and (b) ``rscore.engine.segment`` with ``--reasoner lisa`` (reasoner look-up, picture
conversion, prompt, plan, instances, union mask, provenance). Prints both medians and their ratio (target <= 1.10),
and (c) the engine with two earlier fixes undone (scene_rgb8's numpy channel copy; generate settings as keyword
arguments), interleaved with (a) and (b) in the same run. Each series is timed in this process's CPU time (what the
work costs, little moved by other processes on a shared machine) and in wall time.

``memory``: loads a larger tiny checkpoint (``--hidden``/``--layers``) in a fresh process and prints the peak RSS
growth during ``load_lisa`` against the checkpoint's size on disk: about 1x + one shard when shards are copied into
the model one at a time, 2x if the state dict were held beside the model.

``reasonseg``: gIoU / cIoU of a real checkpoint on ReasonSeg val (LISA's json + image layout under ``--data``),
through ``rscore eval`` (ReasonSeg importer, LISA's validation protocol: first query per image worded by its
``is_sentence`` flag, the answer ``[SEG].`` given rather than generated, ignore polygons left out, the whole picture
in one call, bf16), overall and per short/long query, for a lent GPU. No CUDA, no weights or no
data: one line naming what is missing, exit 2, before any weight is read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    img[100:300, 200:420] = (250, 240, 30)
    return img


def overhead(repeat: int) -> None:
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    import torch

    from rscore import engine
    from rscore.models.lisa import load_lisa
    from rscore.models.testing import save_tiny_clip_vision, save_tiny_lisa
    from rscore.reasoners import lisa as R
    from rscore.types import ArraySource, Scene

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lisa-"))
    ckpt = save_tiny_lisa(tmp / "lisa", hidden=64)
    clip = save_tiny_clip_vision(tmp / "clip")
    m = load_lisa(ckpt, {"vision_tower": str(clip)})
    pic = _picture()
    query = "the yellow box"
    new_tokens = 4

    def bare() -> None:
        ids = R.lisa_input_ids(R.lisa_prompt(query), m.tokenizer, m.image_token_id, m.image_seq_length)
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            # the engine's own decoding settings (greedy, <image> suppressed, hidden states): the same work
            out = m.llava.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   pixel_values=R._clip_pixels(pic, m.clip_size),
                                   generation_config=R._generation_config(m, new_tokens))
            new = out.sequences[0, input_ids.shape[1]:].tolist()
            steps = [j for j, t in enumerate(new) if t == m.seg_token_id]
            emb = m.text_hidden_fcs(torch.stack([out.hidden_states[j][-1][0, -1] for j in steps]))
        R.decode_masks(m.sam, pic, emb)

    scene = Scene(ArraySource(np.ascontiguousarray(np.moveaxis(pic, -1, 0))), "image", ("red", "green", "blue"))
    opts = {"reasoner": "lisa", "model": str(ckpt), "lisa_vision_tower": str(clip), "lisa_max_new_tokens": new_tokens,
            "device": "cpu", "reason_tiles": "off"}  # one call on the whole picture, like the bare forward
    engine.segment(scene, query, options=opts)  # load once (cached per process), as a service would

    def through_engine() -> None:
        engine.segment(scene, query, options=opts)

    from rscore.io import images

    fast = images.channels_last

    def numpy_copy(bands: np.ndarray) -> np.ndarray:  # what scene_rgb8 did before it used cv2.merge
        return np.ascontiguousarray(np.moveaxis(bands, 0, -1))

    new_answer = R.LisaReasoner.answer

    def old_answer(self, picture, query_):  # the generate call before the prebuilt GenerationConfig: settings as kwargs
        mm = self.model
        ids = R.lisa_input_ids(R.lisa_prompt(query_), mm.tokenizer, mm.image_token_id, mm.image_seq_length)
        input_ids = torch.tensor([ids])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = mm.llava.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    pixel_values=R._clip_pixels(picture, mm.clip_size),
                                    max_new_tokens=self.options.max_new_tokens, do_sample=False, num_beams=1,
                                    suppress_tokens=[mm.image_token_id], output_hidden_states=True,
                                    return_dict_in_generate=True, pad_token_id=mm.tokenizer.eos_token_id)
        generate_s = time.perf_counter() - t0
        new = out.sequences[0, input_ids.shape[1]:].tolist()
        seg = [j for j, t in enumerate(new) if t == mm.seg_token_id]
        with torch.inference_mode():
            emb = mm.text_hidden_fcs(torch.stack([out.hidden_states[j][-1][0, -1] for j in seg]))
        masks, scores = R.decode_masks(mm.sam, picture, emb)
        return R.LisaAnswer(mm.tokenizer.decode(new), tuple(new), emb, masks, scores, False, generate_s, 0.0)

    def through_engine_before() -> None:  # this session's two fixes undone
        images.channels_last, R.LisaReasoner.answer = numpy_copy, old_answer
        try:
            engine.segment(scene, query, options=opts)
        finally:
            images.channels_last, R.LisaReasoner.answer = fast, new_answer

    series = (("bare", bare), ("engine", through_engine), ("engine before", through_engine_before))
    wall: dict[str, list[float]] = {name: [] for name, _ in series}
    cpu: dict[str, list[float]] = {name: [] for name, _ in series}
    for _ in range(repeat):  # interleaved, so that load from other processes falls on every series alike
        for name, fn in series:
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    print(f"tiny LISA, 640x480 picture, {new_tokens} new tokens ([SEG] each), torch on 1 thread, {repeat} runs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("medians; CPU = this process's CPU time (what the work costs; wall time also holds waits for a CPU that "
          "other processes hold)")
    for label, times in (("CPU", cpu), ("wall", wall)):
        med = {name: statistics.median(t) for name, t in times.items()}
        b = med["bare"]
        print(f"[{label}] bare forward (generate + [SEG] projection + SAM):        {b * 1000:6.1f} ms")
        print(f"[{label}] rscore engine.segment --reasoner lisa:                   {med['engine'] * 1000:6.1f} ms  "
              f"engine / bare: {med['engine'] / b:.3f} (target <= 1.10)")
        print(f"[{label}]   before (numpy (C,H,W)->(H,W,C) copy, generate kwargs): "
              f"{med['engine before'] * 1000:6.1f} ms  engine / bare: {med['engine before'] / b:.3f}")


_MEMORY_CHILD = r"""
import json, sys
from pathlib import Path
from rscore.compat import ensure_torchvision
ensure_torchvision()
import torch, transformers  # imports counted before the measurement starts
from transformers import CLIPVisionModel, LlamaConfig, LlavaForConditionalGeneration, SamModel  # their modules too
from rscore.models.lisa import load_lisa
def rss():
    d = dict(l.split(':', 1) for l in open('/proc/self/status'))
    return int(d['VmRSS'].split()[0]) * 1024, int(d['VmHWM'].split()[0]) * 1024
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
before, _ = rss()
m = load_lisa(Path(sys.argv[1]), {'vision_tower': sys.argv[2]})
after, peak = rss()
print(json.dumps({'before': before, 'after': after, 'peak': peak}))
"""


def memory(hidden: int, layers: int, shards: int) -> None:
    from rscore.models.testing import save_tiny_clip_vision, save_tiny_lisa

    tmp = Path(tempfile.mkdtemp(prefix="bench-lisa-mem-"))
    ckpt = save_tiny_lisa(tmp / "lisa", hidden=hidden, layers=layers, shards=shards, zero_lm_head=False)
    clip = save_tiny_clip_vision(tmp / "clip")
    size = sum(f.stat().st_size for f in ckpt.glob("*.bin"))
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(ckpt), str(clip)], capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    grow, held = r["peak"] - r["before"], r["after"] - r["before"]
    mb = 1024 * 1024
    print(f"checkpoint {size / mb:.0f} MB in {shards} .bin shard(s), hidden {hidden}, {layers} layers")
    print(f"RSS growth: peak {grow / mb:.0f} MB, after loading {held / mb:.0f} MB")
    print(f"peak / checkpoint size: {grow / size:.2f} (1 + 1/shards = {1 + 1 / shards:.2f} if one shard is held "
          f"beside the model; 2.0 if the whole state dict were); kept after loading: {held / size:.2f}")


def reasonseg_folder(data: Path) -> Path:
    """The ReasonSeg split folder under ``data``: ``data`` itself when it holds the ``*.json`` + image pairs, else
    ``data/val``, ``data/ReasonSeg/val`` or ``data/reason_seg/ReasonSeg/val`` (LISA's dataset tree)."""
    for folder in (data, data / "val", data / "ReasonSeg" / "val", data / "reason_seg" / "ReasonSeg" / "val"):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    from rscore.errors import InputError

    raise InputError("holds no ReasonSeg split (NAME.json + NAME.jpg pairs here or in val/, ReasonSeg/val/)", path=data)


def reasonseg_manifest(folder: Path) -> Any:
    """The split as ``rscore eval`` samples (:func:`rscore.evaluation.importers.import_reasonseg`), each row worded
    as LISA's validation words it: a sentence when the annotation's ``is_sentence`` says so (category ``long query``),
    "What is X in this image?" otherwise."""
    from rscore.evaluation.importers import import_reasonseg
    from rscore.evaluation.manifest import Manifest, parse_rows

    rows = import_reasonseg(folder)
    for row in rows:
        row["options"] = {"lisa_query_form": "sentence" if row["category"] == "long query" else "phrase"}
    return Manifest(folder, tuple(parse_rows(rows, folder)), "reasonseg")


def reasonseg_options(model: str, weights: str | None, device: str, vision_tower: str | None,
                      limit: int | None) -> dict[str, Any]:  # fmt: skip
    """``rscore eval`` options of LISA's own ReasonSeg validation (``train_ds.py validate``): the first query of each
    image, the answer ``[SEG].`` given (``decode=forced``: one mask per query), its prompt wording, the whole picture
    in one call (no tiling), bf16 on a GPU."""
    opts: dict[str, Any] = {"reasoner": "lisa", "queries": "first", "on_error": "raise", "hash_weights": False,
                            "model": model, "device": device, "reason_tiles": "off", "lisa_decode": "forced",
                            "lisa_prompt_style": "lisa-eval",
                            "dtype": "bfloat16" if device.startswith("cuda") else "float32"}  # fmt: skip
    if weights:
        opts["weights"] = weights
    if vision_tower:
        opts["lisa_vision_tower"] = vision_tower
    if limit:
        opts["limit"] = limit
    return opts


def reasonseg(weights: str | None, data: str, device: str, model: str, vision_tower: str | None,
              limit: int | None) -> int:  # fmt: skip
    """gIoU / cIoU of ``model`` on a ReasonSeg split. Everything that would stop the run (no CUDA, no weights, no
    data) is checked before any weight is read and reported in one line (exit 2)."""
    from rscore.errors import RscoreError

    try:
        from rscore.compat import ensure_torchvision

        ensure_torchvision()
        from rscore.evaluation.runner import evaluate
        from rscore.models.device import resolve_device
        from rscore.models.registry import find_model, resolve

        dev = resolve_device(device)
        folder = reasonseg_folder(Path(data))
        manifest = reasonseg_manifest(folder)
        resolve(find_model(model, "lisa"), weights=weights)
        t0 = time.perf_counter()
        report = evaluate(None, manifest, reasonseg_options(model, weights, dev, vision_tower, limit))
    except RscoreError as exc:
        print(f"bench_lisa reasonseg: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    keys = ("gIoU", "cIoU", "n", "n_rows", "n_failed")
    print(f"{model} on {folder} ({dev}, {time.perf_counter() - t0:.0f} s)")
    print(json.dumps({"all": {k: report.metrics.get(k) for k in keys},
                      **{c: {k: m.get(k) for k in keys} for c, m in sorted(report.per_category.items())}},
                     indent=1))  # fmt: skip
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--repeat", type=int, default=5)
    m = sub.add_parser("memory")
    m.add_argument("--hidden", type=int, default=1024)
    m.add_argument("--layers", type=int, default=8)
    m.add_argument("--shards", type=int, default=4)
    r = sub.add_parser("reasonseg")
    r.add_argument("--data", required=True, help="ReasonSeg folder (LISA's tree, its val/ split, or any split)")
    r.add_argument("--weights", help="folder holding the checkpoint (else $RSCORE_WEIGHTS / the Hugging Face cache)")
    r.add_argument("--model", default="lisa-7b-v1", help="registered LISA checkpoint or a checkpoint folder")
    r.add_argument("--vision-tower", help="CLIP ViT-L/14 folder, when not under --weights or in the cache")
    r.add_argument("--device", default="cuda")
    r.add_argument("--limit", type=int, help="only the first N images")
    a = ap.parse_args()
    if a.cmd == "overhead":
        overhead(a.repeat)
    elif a.cmd == "memory":
        memory(a.hidden, a.layers, a.shards)
    else:
        sys.exit(reasonseg(a.weights, a.data, a.device, a.model, a.vision_tower, a.limit))


if __name__ == "__main__":
    main()
