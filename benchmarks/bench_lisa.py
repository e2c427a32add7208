"""LISA backend figures: engine overhead vs the bare forward, and peak memory of the loading path.

    python benchmarks/bench_lisa.py overhead [--repeat 5]      # tiny random LISA on CPU
    python benchmarks/bench_lisa.py memory [--hidden 1024 --layers 8 --shards 4]
    python benchmarks/bench_lisa.py reasonseg --weights DIR --data DIR [--device cuda]   # a lent GPU, real LISA

``overhead``: the same picture and query through (a) the bare forward - ``llava.generate`` with hidden states, the
[SEG] projection and SAM's image encoder + mask decoder called directly - and (b) ``rscore.engine.segment`` with
``--reasoner lisa`` (prompt building, plan, instances, union mask). Prints both medians and their ratio
(target <= 1.10), and (c) the engine as it was before two fixes (scene_rgb8's numpy channel copy; LISA's generate
settings passed as keyword arguments, which makes transformers build and validate a GenerationConfig every call),
interleaved with (a) and (b) in the same run.

``memory``: loads a larger tiny checkpoint (``--hidden``/``--layers``) in a fresh process and prints the peak RSS
growth during ``load_lisa`` against the checkpoint's size on disk: about 1x + one shard when shards are copied into
the model one at a time, 2x if the state dict were held beside the model.

``reasonseg``: gIoU / cIoU of a real checkpoint on ReasonSeg val (LISA's json + image layout under ``--data``),
through ``rscore eval``'s metrics, for a lent GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
            out = m.llava.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   pixel_values=R._clip_pixels(pic, m.clip_size), max_new_tokens=new_tokens,
                                   do_sample=False, output_hidden_states=True, return_dict_in_generate=True,
                                   pad_token_id=m.tokenizer.eos_token_id)
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
    times: dict[str, list[float]] = {name: [] for name, _ in series}
    for _ in range(repeat):  # interleaved, so that load from other processes falls on every series alike
        for name, fn in series:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    b = med["bare"]
    print(f"tiny LISA, 640x480 picture, {new_tokens} new tokens ([SEG] each), CPU 1 thread, {repeat} runs")
    print(f"bare forward (generate + [SEG] projection + SAM):        median {b * 1000:.1f} ms")
    print(f"rscore engine.segment --reasoner lisa:                   median {med['engine'] * 1000:.1f} ms  "
          f"engine / bare: {med['engine'] / b:.3f} (target <= 1.10)")
    print(f"  before (numpy (C,H,W)->(H,W,C) copy, generate kwargs): median {med['engine before'] * 1000:.1f} ms  "
          f"engine / bare: {med['engine before'] / b:.3f}")


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


def reasonseg(weights: str, data: str, device: str) -> None:
    from rscore.evaluation.runner import evaluate

    manifest = Path(data) / "rscore_manifest.jsonl"
    if not manifest.is_file():
        sys.exit(f"{manifest}: write ReasonSeg val as an rscore manifest first (image, query, mask polygons)")
    report = evaluate(None, manifest, {"reasoner": "lisa", "weights": weights, "device": device})
    print(json.dumps({k: report.metrics.get(k) for k in ("gIoU", "cIoU", "n_rows", "n_failed")}, indent=1))


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
    r.add_argument("--weights", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--device", default="cuda")
    a = ap.parse_args()
    if a.cmd == "overhead":
        overhead(a.repeat)
    elif a.cmd == "memory":
        memory(a.hidden, a.layers, a.shards)
    else:
        reasonseg(a.weights, a.data, a.device)


if __name__ == "__main__":
    main()
