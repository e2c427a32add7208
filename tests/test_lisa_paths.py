"""The ``lisa`` reasoner on the paths around the image engine: video keyframes end to end, a [REJ]-native checkpoint
through the CLI, the reasoner kept per options, and the ReasonSeg script (``benchmarks/bench_lisa.py reasonseg``):
its data loading on a tiny folder in LISA's layout and its one-line failures.

Checkpoints are tiny random ones in LISA's original key layout (:func:`rscore.models.testing.save_tiny_lisa`), as in
tests/test_lisa.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rscore.instances import mask_bbox

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- mask_bbox fast path
def test_mask_bbox_agrees_with_the_reductions_on_every_layout():
    """mask_bbox uses OpenCV's boundingRect on contiguous bool masks (the engine computes a box per LISA mask twice
    per call); it must give the numpy definition's box everywhere, views and empty masks included."""

    def reference(mask):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

    rng = np.random.default_rng(0)
    for _ in range(300):
        m = rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < rng.random() * 0.05
        for view in (m, m.T, m[::2, 1:], np.ascontiguousarray(m[1:, ::3])):
            assert mask_bbox(view) == reference(view)
    assert mask_bbox(np.zeros((0, 4), bool)) is None and mask_bbox(np.zeros((3, 4), bool)) is None
    box = mask_bbox(np.ones((5, 2), bool))
    assert box == (0, 0, 2, 5) and all(type(v) is int for v in box)


torch = pytest.importorskip("torch")
from rscore.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()
pytest.importorskip("transformers")

from rscore.cli import main as cli_main  # noqa: E402
from rscore.models.testing import save_tiny_clip_vision, save_tiny_lisa  # noqa: E402
from rscore.reasoners import lisa as lisa_reasoner  # noqa: E402
from rscore import rle  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip_vision(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory):
    return save_tiny_lisa(tmp_path_factory.mktemp("lisa-seg"), first_token="[SEG]")


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli_main(args)
    return exit_.value.code


def disc_frame(i: int, h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], -1).astype(np.uint8)
    img[(yy - 60) ** 2 + (xx - 50 - 3 * i) ** 2 < 25**2] = (250, 240, 30)
    return img


# ------------------------------------------------------------------------------------------------ the reasoner
def test_the_reasoner_is_kept_per_options_and_environment(seg_ckpt, clip_dir, monkeypatch, tmp_path):
    opts = {"model": str(seg_ckpt), "lisa_vision_tower": str(clip_dir), "device": "cpu", "lisa_max_new_tokens": 2}
    lisa_reasoner.clear_lisa_cache()
    a = lisa_reasoner.make_lisa_reasoner(opts)
    assert lisa_reasoner.make_lisa_reasoner(dict(opts)) is a  # the engine asks on every call: not located again
    other = lisa_reasoner.make_lisa_reasoner({**opts, "lisa_max_new_tokens": 3})
    assert other is not a and other.options.max_new_tokens == 3
    assert other.model is a.model  # one loaded checkpoint under both
    monkeypatch.setenv("RSCORE_WEIGHTS", str(tmp_path))  # where weights are looked for changed: located again
    assert lisa_reasoner.make_lisa_reasoner(opts) is not a
    monkeypatch.delenv("RSCORE_WEIGHTS")
    assert lisa_reasoner.make_lisa_reasoner(opts) is a
    lisa_reasoner.clear_lisa_cache()
    assert lisa_reasoner.make_lisa_reasoner(opts) is not a


# ------------------------------------------------------------------------------------------------------ video
def test_video_keyframe_with_lisa_end_to_end(seg_ckpt, clip_dir, tmp_path, monkeypatch):
    """`rscore run clip.avi QUERY --reasoner lisa`: LISA scores the sampled frames, segments the keyframe (its own
    masks, no segmenter), the masks are propagated over every frame with stable track ids, and the outputs are
    written."""
    h, w, n = 120, 160, 12
    clip = tmp_path / "disc.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(n):
        writer.write(cv2.cvtColor(disc_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()

    seen: list[np.ndarray] = []
    answers: list = []
    real_answer = lisa_reasoner.LisaReasoner.answer

    def counting(self, picture, query):
        seen.append(picture.copy())
        answers.append(real_answer(self, picture, query))
        return answers[-1]

    monkeypatch.setattr(lisa_reasoner.LisaReasoner, "answer", counting)
    out = tmp_path / "out"
    rc = run_cli(["run", str(clip), "the yellow disc", "--reasoner", "lisa", "--model", str(seg_ckpt),
                   "-O", f"lisa_vision_tower={clip_dir}", "-O", "lisa_max_new_tokens=2", "-O", "device=cpu",
                   "-O", "keyframe_samples=4", "-O", "overlay_codec=MJPG", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert len(seen) == 4 + 1  # the sampled frames, then the keyframe through the image engine
    doc = json.loads((out / "result.json").read_text())
    assert doc["scene"]["kind"] == "video" and doc["plan"]["reasoner"] == "lisa" and not doc["absent"]
    assert doc["provenance"]["segmenter"] is None  # LISA's own masks: no segmenter was loaded
    assert doc["plan"]["raw"] == "[SEG] [SEG]"
    masks = json.loads((out / "masks.json").read_text())
    kf = masks["keyframe"]
    assert kf["method"] == "lisa reasoner target confidence"
    assert any("best of 4 sampled frames by lisa reasoner" in s["text"] for s in doc["plan"]["steps"])
    frames = {f["frame"]: f for f in masks["frames"]}
    assert sorted(frames) == list(range(n)) and masks["video"]["frames_processed"] == n

    # the keyframe's instances are LISA's masks on that frame (the last call), one track per [SEG]
    keyframe_masks = [m for m in answers[-1].masks if m.any()]
    kf_instances = frames[kf["frame"]]["instances"]
    assert {i["source"] for i in kf_instances} == {"keyframe"}
    assert len(kf_instances) == len(keyframe_masks) == len(masks["tracks"]) == 2
    decoded = sorted((rle.decode(i["rle"]) for i in kf_instances), key=lambda m: int(m.sum()))
    for got, want in zip(decoded, sorted(keyframe_masks, key=lambda m: int(m.sum()))):
        assert np.array_equal(got, want)
    # propagated both ways over every other frame, ids stable
    ids = {t["id"] for t in masks["tracks"]}
    for i, rec in frames.items():
        assert {inst["track_id"] for inst in rec["instances"]} == ids, i
        if i != kf["frame"]:
            assert {inst["source"] for inst in rec["instances"]} == {"propagated"}, i
    assert all(t["first_frame"] == 0 and t["last_frame"] == n - 1 for t in masks["tracks"])
    assert (out / "overlay.avi").stat().st_size > 0 and (out / "keyframe.png").is_file()


# --------------------------------------------------------------------------------------------------- [REJ] native
def test_a_rej_token_is_absent_with_the_generated_text_through_the_cli(clip_dir, tmp_path):
    """A GSVA-style checkpoint (tokenizer with [SEG] and [REJ], as GSVA adds them) that answers [REJ]: the CLI
    writes an absent result whose reason quotes the generated text, and no mask."""
    ckpt = save_tiny_lisa(tmp_path / "gsva-like", first_token="[REJ]")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    added = {t["content"] for t in tok["added_tokens"]}
    assert {"[SEG]", "[REJ]"} <= added
    img = tmp_path / "disc.png"
    cv2.imwrite(str(img), cv2.cvtColor(disc_frame(0), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    rc = run_cli(["run", str(img), "the purple giraffe", "--reasoner", "lisa", "--model", str(ckpt),
                   "-O", f"lisa_vision_tower={clip_dir}", "-O", "lisa_max_new_tokens=2", "-O", "device=cpu",
                   "--out", str(out)])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["absent"] and doc["instances"] == []
    assert doc["reason"].startswith("LISA rejected the query ([REJ]): ") and "[REJ]" in doc["plan"]["raw"]
    assert doc["plan"]["raw"] in doc["reason"]


# ------------------------------------------------------------------------------------------ ReasonSeg script
def _bench():
    spec = importlib.util.spec_from_file_location("bench_lisa", ROOT / "benchmarks" / "bench_lisa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reasonseg_tree(root: Path) -> Path:
    """Two images in LISA's ReasonSeg tree (``reason_seg/ReasonSeg/val``): a short query and a sentence, a target,
    an ignore and a (deprecated) flag polygon, several texts per image."""
    val = root / "reason_seg" / "ReasonSeg" / "val"
    val.mkdir(parents=True)
    target = [[60, 40], [140, 40], [140, 100], [60, 100]]
    ignore = [[100, 70], [160, 70], [160, 120], [100, 120]]
    flag = [[0, 0], [40, 0], [40, 40]]
    for name, i, texts, sentence in (("a", 0, ["the yellow disc", "the sun"], False),
                                     ("b", 5, ["What would a bee visit in this picture?", "unused"], True)):
        cv2.imwrite(str(val / f"{name}.jpg"), cv2.cvtColor(disc_frame(i), cv2.COLOR_RGB2BGR))
        shapes = [{"label": "target", "points": target, "shape_type": "polygon"},
                  {"label": "ignore", "points": ignore, "shape_type": "polygon"},
                  {"label": "flag", "points": flag, "shape_type": "polygon"}]
        (val / f"{name}.json").write_text(json.dumps({"text": texts, "is_sentence": sentence, "shapes": shapes}))
    return val


def test_reasonseg_data_loading_follows_lisas_layout(tmp_path):
    from rscore.evaluation.manifest import load_dataset

    bench = _bench()
    val = reasonseg_tree(tmp_path / "data")
    for given in (tmp_path / "data", tmp_path / "data" / "reason_seg" / "ReasonSeg", val):
        assert bench.reasonseg_folder(given) == val
    folder = bench.reasonseg_folder(tmp_path / "data")
    manifest = bench.reasonseg_manifest(folder)
    assert [s.queries for s in manifest.samples] == [s.queries for s in load_dataset(folder).samples]
    a, b = sorted(manifest.samples, key=lambda s: s.id)
    assert (a.category, b.category) == ("short query", "long query")
    # worded as LISA's validation words them: by the annotation's is_sentence flag, not guessed
    assert a.options == {"lisa_query_form": "phrase"} and b.options == {"lisa_query_form": "sentence"}
    assert a.queries[0] == "the yellow disc" and b.queries[0].startswith("What would a bee")
    # LISA's get_mask_from_json: polygons drawn outline + fill, 'ignore' = 255, 'flag' skipped
    want = np.zeros((120, 160), np.uint8)
    for label, pts in (("target", [[60, 40], [140, 40], [140, 100], [60, 100]]),
                       ("ignore", [[100, 70], [160, 70], [160, 120], [100, 120]])):
        v = 255 if label == "ignore" else 1
        cv2.polylines(want, np.array([pts], np.int32), True, v, 1)
        cv2.fillPoly(want, np.array([pts], np.int32), v)
    gt, ignore = a.mask.load((120, 160))
    assert ignore is not None and not gt[0:40, 0:40].any()  # the flag shape is no target
    assert np.array_equal(ignore, want == 255)
    assert np.array_equal(gt & ~ignore, want == 1)
    opts = bench.reasonseg_options("lisa-7b-v1", "/w", "cuda", None, 5)
    assert opts["queries"] == "first" and opts["reason_tiles"] == "off" and opts["dtype"] == "bfloat16"
    assert opts["lisa_decode"] == "forced" and opts["lisa_prompt_style"] == "lisa-eval"


def test_reasonseg_script_runs_a_checkpoint_on_the_tiny_split(seg_ckpt, clip_dir, tmp_path, capsys):
    bench = _bench()
    reasonseg_tree(tmp_path / "data")
    rc = bench.reasonseg(None, str(tmp_path / "data"), "cpu", str(seg_ckpt), str(clip_dir), None)
    out = capsys.readouterr().out
    assert rc == 0, out
    figures = json.loads(out[out.index("{"):])
    assert figures["all"]["n_rows"] == 2 and figures["all"]["n"] == 2 and figures["all"]["n_failed"] == 0
    assert set(figures) == {"all", "long query", "short query"}
    # the same figures computed here: LISA (answer given) on each image's first query, worded by is_sentence,
    # IoU against LISA's polygon mask with the ignore region left out of both sides
    base = {"model": str(seg_ckpt), "lisa_vision_tower": str(clip_dir), "device": "cpu", "lisa_decode": "forced",
            "lisa_prompt_style": "lisa-eval"}  # fmt: skip
    val = tmp_path / "data" / "reason_seg" / "ReasonSeg" / "val"
    inter = union = 0
    ious = {}
    for name, query, form, cat in (("a", "the yellow disc", "phrase", "short query"),
                                   ("b", "What would a bee visit in this picture?", "sentence", "long query")):
        pic = cv2.cvtColor(cv2.imread(str(val / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        (pred,) = lisa_reasoner.make_lisa_reasoner({**base, "lisa_query_form": form}).answer(pic, query).masks
        gt = np.zeros(pic.shape[:2], np.uint8)
        for v, pts in ((1, [[60, 40], [140, 40], [140, 100], [60, 100]]), (255, [[100, 70], [160, 70], [160, 120],
                                                                                [100, 120]])):  # fmt: skip
            cv2.polylines(gt, np.array([pts], np.int32), True, v, 1)
            cv2.fillPoly(gt, np.array([pts], np.int32), v)
        keep = gt != 255
        i, u = int((pred & (gt == 1) & keep).sum()), int(((pred | (gt == 1)) & keep).sum())
        inter, union, ious[cat] = inter + i, union + u, i / u
    assert figures["short query"]["gIoU"] == pytest.approx(ious["short query"], abs=1e-6)
    assert figures["long query"]["gIoU"] == pytest.approx(ious["long query"], abs=1e-6)
    assert figures["all"]["gIoU"] == pytest.approx(np.mean(list(ious.values())), abs=1e-6)
    assert figures["all"]["cIoU"] == pytest.approx(inter / union, abs=1e-6)
    assert 0.0 < figures["all"]["gIoU"] < 1.0


def test_forced_decoding_is_lisas_validation_one_mask_from_the_prompts_last_state(clip_dir, tmp_path):
    """decode=forced: the answer "[SEG]." is given (LISA's validation); the [SEG] prompt is the last-layer state at
    the position before [SEG] in one pass over prompt + answer - even for a model that would itself answer with
    nothing (</s>) - with the validation's wording."""
    p = lisa_reasoner.lisa_prompt("the yellow disc", style="lisa-eval", form="phrase")
    assert p.endswith("USER: <im_start><image><im_end>\n What is the yellow disc in this image? "
                      "Please output segmentation mask. ASSISTANT:")
    long = "something a bee would visit"
    assert lisa_reasoner.lisa_prompt(long, style="lisa-eval", form="sentence").endswith(
        f"<im_end>\n {long} Please output segmentation mask. ASSISTANT:")
    assert "What is" in lisa_reasoner.lisa_prompt(long, form="phrase")

    silent = save_tiny_lisa(tmp_path / "eos", first_token="</s>")
    opts = {"model": str(silent), "lisa_vision_tower": str(clip_dir), "device": "cpu", "lisa_max_new_tokens": 2}
    pic = disc_frame(0)
    assert lisa_reasoner.make_lisa_reasoner(opts).answer(pic, "the yellow disc").masks == ()  # generates </s>
    r = lisa_reasoner.make_lisa_reasoner({**opts, "lisa_decode": "forced", "lisa_prompt_style": "lisa-eval"})
    a = r.answer(pic, "the yellow disc")
    assert a.text == "[SEG]." and len(a.masks) == 1 and not a.rejected

    m = r.model
    ids = lisa_reasoner.lisa_input_ids(p, m.tokenizer, m.image_token_id, m.image_seq_length)
    answer = m.tokenizer("[SEG].", add_special_tokens=False).input_ids
    assert answer[0] == m.seg_token_id  # no space token before the added [SEG], as LISA's tokenizer splits it
    seq = torch.tensor([ids + answer])
    with torch.no_grad():
        hidden = m.llava.model(input_ids=seq, pixel_values=lisa_reasoner._clip_pixels(pic, m.clip_size)
                               ).last_hidden_state[0]  # fmt: skip
        (t,) = lisa_reasoner.seg_hidden_positions(seq[0].tolist(), m.seg_token_id)
        expected = m.text_hidden_fcs(hidden[t : t + 1])
    torch.testing.assert_close(a.seg_embeddings, expected, rtol=1e-4, atol=1e-5)
    _, _, full = lisa_reasoner.decode_logits(m.sam, pic, expected)
    assert np.array_equal(a.masks[0], (full[0] > 0).numpy())
    plan = r.plan(_scene(pic), _request("the yellow disc"), [])
    assert not plan.absent and "was given the answer '[SEG].'" in plan.steps[0].text


def _scene(pic):
    from rscore.types import ArraySource, Scene

    return Scene(ArraySource(np.ascontiguousarray(np.moveaxis(pic, -1, 0))), "image", ("red", "green", "blue"))


def _request(query):
    from rscore.types import Request

    return Request(query=query)


def _one_line_failure(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_lisa.py"), "reasonseg", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    return lines[0]


def test_reasonseg_script_fails_in_one_line_without_cuda_or_weights(tmp_path):
    reasonseg_tree(tmp_path / "data")
    empty = tmp_path / "weights"
    empty.mkdir()
    if not torch.cuda.is_available():
        line = _one_line_failure(["--data", str(tmp_path / "data"), "--weights", str(empty), "--device", "cuda"])
        assert line.startswith("bench_lisa reasonseg: device 'cuda'") and "no CUDA GPU" in line
    line = _one_line_failure(["--data", str(tmp_path / "data"), "--weights", str(empty), "--device", "cpu"])
    assert "lisa-7b-v1" in line and "rscore models pull lisa-7b-v1" in line
    line = _one_line_failure(["--data", str(tmp_path / "nothing"), "--device", "cpu"])
    assert "holds no ReasonSeg split" in line and str(tmp_path / "nothing") in line
