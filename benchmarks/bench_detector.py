"""Detector throughput: a YOLOv8n-sized ONNX model through rscore's ``yolo-onnx`` detector vs bare onnxruntime.

The model is :func:`rscore.detectors.testing.yolo_like_module` - random weights, YOLOv8n's size (about 3 M
parameters) and head layout ``(B, 84, 8400)`` at 640 px, batch-norm statistics taken on such frames and class biases
set so that, as with a trained model, a few dozen anchors per frame score over the 0.25 threshold (so NMS has work)
- exported with ``torch.onnx.export``.

Both sides get the same frames (``--frames`` synthetic 1280 x 720 site pictures) and the same kind of
onnxruntime session (same providers, default options):

- ``rscore``: ``get_detector({"detector_model": ...}).detect_batch(frames)`` (letterbox, normalise, run, decode,
  per-class NMS, boxes back to pixels), one frame per call (``--batch 1``, default) or batched;
- ``bare``: what a user writes around onnxruntime by hand: ``cv2.resize`` + ``copyMakeBorder`` letterbox,
  ``session.run``, numpy decode and ``cv2.dnn.NMSBoxesBatched``.

Runs alternate between the sides; the medians give frames/s and the ratio rscore / bare (target <= 1.10);
``ratio_best`` compares the fastest run of each (the one least disturbed on a shared machine) and ``in_run`` is
rscore's wall time over the time its own ``session.run`` calls took in the same run. ``--device cuda`` uses the
CUDA execution provider on both sides (onnxruntime-gpu).

``--model PATH`` times a real export instead (v5 / v8 / v11 layouts; the bare side decodes the same layout) and
``--video CLIP`` takes the first ``--frames`` frames of a real clip, so that a trained model's NMS has real people
to sort; a ``--model`` that is not there is skipped with a message.

``--keyframes`` measures the video engine instead: the keyframe pass of ``segment_video`` (``keyframe_samples``
= ``--frames`` candidates of a synthetic 1280 x 720 clip, template ``workers`` answered from detections, class 0
named ``person``) with ``detector_batch`` 1 and ``--batch`` N, alternating; it prints the pass's seconds, the
detector calls and the seconds inside ``session.run``, and checks that both give the same keyframe and candidate
scores.

``--tracking`` measures re-detection while tracking instead: the same clip of ``--frames`` frames, 2 keyframe
candidates, re-detection every ``--every`` frames of both passes (``redetect_every``), ``detector_batch`` 1 vs
``--batch`` N, alternating; it prints the propagation passes' seconds (``propagate_s``: flow, re-detection,
matching, recording), the detector calls of the whole run and the seconds inside ``session.run``, and checks that
both give the same record (tracks, scores, masks) on every frame.

::

    python benchmarks/bench_detector.py                     # CPU
    python benchmarks/bench_detector.py --device cuda --frames 200 --batch 8
    python benchmarks/bench_detector.py --model yolov5n-coco.onnx \
        --video ../shared/data/construction/cctv_generic/opencv_vtest.avi
    python benchmarks/bench_detector.py --keyframes --frames 16 --batch 8 --repeats 3
    python benchmarks/bench_detector.py --tracking --frames 24 --every 2 --batch 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def build_model(folder: Path, size: int, nc: int, per_frame: int = 30, names: dict[int, str] | None = None) -> Path:
    """Export the random YOLOv8n-sized net after giving it what training gives a detector: batch-norm statistics of
    real-looking frames, and class biases such that about ``per_frame`` anchors score over 0.25 on such a frame."""
    import torch

    from rscore.detectors.testing import export_onnx, yolo_like_module
    from rscore.detectors.yolo_onnx import letterbox

    module = yolo_like_module(nc=nc)
    pics = [letterbox(f, (size, size))[0] for f in frames(4)]
    x = torch.from_numpy(np.stack(pics).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    logits: list[torch.Tensor] = []
    hooks = [head[-1].register_forward_hook(lambda _m, _i, out: logits.append(out[:, 4:].flatten(2)))
             for head in module.heads]  # fmt: skip
    with torch.no_grad():
        module.train()(x)
        module.eval()
        logits.clear()
        module(x[:1])
        best = torch.cat(logits, 2)[0].amax(0)  # (anchors,) best class logit per anchor
        ranked = best.sort(descending=True).values
        cut = float(ranked[per_frame - 1] + ranked[per_frame]) / 2  # the threshold mid-way between two anchors
        shift = float(torch.log(torch.tensor(0.25 / 0.75))) - cut
        for head in module.heads:
            head[-1].bias[4:] += shift
    for h in hooks:
        h.remove()
    names = {i: f"class{i}" for i in range(nc)} | (names or {})
    return export_onnx(module, folder / "yolov8n-like.onnx", size, dynamic_batch=True,
                       metadata={"names": repr(names), "imgsz": repr([size, size])})  # fmt: skip


def frames(n: int, h: int = 720, w: int = 1280) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = np.clip(rng.normal(110, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        for _ in range(6):
            x, y = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 160))
            img[y : y + 160, x : x + 60] = rng.integers(0, 255, 3)
        out.append(img)
    return out


def video_frames(path: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of a clip, RGB."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not out:
        raise SystemExit(f"{path}: no frames could be read")
    return out


class Bare:
    """The hand-written baseline around one onnxruntime session."""

    def __init__(self, path: Path, providers: list[Any], size: int, conf: float = 0.25, iou: float = 0.45,
                 layout: str = "v8") -> None:  # fmt: skip
        import onnxruntime as ort

        self.layout = layout  # v8 / v11: (4 + nc, N); v5: (N, 5 + nc) with objectness

        self.session = ort.InferenceSession(str(path), providers=providers)
        self.name = self.session.get_inputs()[0].name
        self.size, self.conf, self.iou = size, conf, iou

    def detect(self, img: np.ndarray) -> list[tuple[int, float, tuple[float, ...]]]:
        h, w = img.shape[:2]
        r = min(self.size / h, self.size / w)
        nw, nh = round(w * r), round(h * r)
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        canvas = cv2.copyMakeBorder(cv2.resize(img, (nw, nh)), top, self.size - nh - top, left,
                                    self.size - nw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114))  # fmt: skip
        x = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255
        out = self.session.run(None, {self.name: x})[0][0]
        if self.layout == "v5":  # (N, 5 + nc): class scores times objectness
            scores = out[:, 5:] * out[:, 4:5]
        else:
            out = out if self.layout == "v8t" else out.T  # (N, 4 + nc)
            scores = out[:, 4:]
        cls = scores.argmax(1)
        best = scores[np.arange(len(cls)), cls]
        keep = best >= self.conf
        xywh, best, cls = out[keep, :4], best[keep], cls[keep]
        boxes = np.stack([xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2, xywh[:, 2], xywh[:, 3]], 1)
        idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), best.tolist(), cls.tolist(), self.conf, self.iou)
        res = []
        for i in np.asarray(idx).reshape(-1)[:300]:
            x0, y0 = (boxes[i, 0] - left) / r, (boxes[i, 1] - top) / r
            res.append((int(cls[i]), float(best[i]), (x0, y0, x0 + boxes[i, 2] / r, y0 + boxes[i, 3] / r)))
        return res


def keyframes(args: argparse.Namespace, tracking: bool = False) -> dict[str, Any]:
    """The video engine's keyframe pass (``tracking``: its propagation passes with re-detection every
    ``args.every`` frames), one frame per detector call against ``args.batch``, alternating."""
    from rscore.detectors import clear_detector_cache, get_detector
    from rscore.detectors import programs
    from rscore.video.engine import segment_video

    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name)
    path = args.model or build_model(folder, args.size, 80, names={0: "person"})
    clip = folder / "site.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (1280, 720))
    for img in frames(args.frames):
        writer.write(img)
    writer.release()
    base = {"detector_model": str(path), "device": args.device, "segmenter": "classical",
            "classical_iterations": 1, "classical_max_side": 128, "keyframe_samples": args.frames,
            "redetect_every": 0, "overlay": False, "flow_max_side": 160}  # fmt: skip
    if tracking:
        base.update(keyframe_samples=2, redetect_every=args.every)
    timing = "propagate_s" if tracking else "keyframe_select_s"
    what = "propagate_s" if tracking else "keyframe_pass_s"
    rows: dict[int, list[tuple[float, int, float]]] = {1: [], args.batch: []}
    answers: dict[int, Any] = {}
    for _ in range(args.repeats):
        for batch in (1, args.batch):
            clear_detector_cache()
            programs._CACHE.clear()  # every run detects afresh
            cv2.setRNGSeed(0)  # the classical segmenter's grabCut seeds its colour models from OpenCV's global RNG
            opts = {**base, "detector_batch": batch}
            det = get_detector(opts)
            real_run, spent, calls = det.session.run, [0.0], [0]

            def timed(*a: Any, _real: Any = real_run, _spent: list = spent, _calls: list = calls, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _real(*a, **k)
                finally:
                    _spent[0] += time.perf_counter() - t
                    _calls[0] += 1

            det.session.run = timed  # type: ignore[method-assign]
            res = segment_video(clip, "people on site", plugin="safety", options=opts)
            answers[batch] = (res.keyframe.get("frame"), [c["score"] for c in res.keyframe.get("candidates", [])])
            if tracking:
                answers[batch] = (answers[batch], list(res.log.iter_frames()))
            pass_s = float(res.timings.get(timing, float("nan")))
            if res.log is not None:
                res.log.close()
            rows[batch].append((pass_s, calls[0], spent[0]))
    one, many = rows[1], rows[args.batch]
    med = statistics.median
    return {
        "mode": "tracking" if tracking else "keyframes", "device": args.device,
        "frames" if tracking else "frames_sampled": args.frames, "batch": args.batch,
        **({"redetect_every": args.every} if tracking else {}),
        "same_answer": answers[1] == answers[args.batch],
        f"{what}_batch1": round(med(r[0] for r in one), 2),
        f"{what}_batch{args.batch}": round(med(r[0] for r in many), 2),
        "pass_ratio": round(med(r[0] for r in many) / med(r[0] for r in one), 3),
        "pass_ratio_best": round(min(r[0] for r in many) / min(r[0] for r in one), 3),  # least disturbed runs
        "detector_calls_batch1": one[0][1], f"detector_calls_batch{args.batch}": many[0][1],
        "session_s_batch1": round(med(r[2] for r in one), 2),
        f"session_s_batch{args.batch}": round(med(r[2] for r in many), 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1, help="frames per rscore call (the bare side runs one by one)")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--model", type=Path, help="an existing YOLO .onnx (v5 / v8 / v11 layout) instead of the random "
                    "YOLOv8n-sized one; skipped with a message when the file is not there")
    ap.add_argument("--video", type=Path, help="take the frames from this clip (its first --frames) instead of "
                    "synthetic ones: real people give a trained model's NMS its real work")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keyframes", action="store_true",
                    help="time the video engine's keyframe pass, batch 1 vs --batch")
    ap.add_argument("--tracking", action="store_true",
                    help="time the video engine's propagation passes with re-detection, batch 1 vs --batch")
    ap.add_argument("--every", type=int, default=2, help="--tracking: re-detect every N frames")
    args = ap.parse_args(argv)
    if args.keyframes or args.tracking:
        if args.batch < 2:
            ap.error("--keyframes / --tracking compare batch 1 with --batch N: give N >= 2")
        out = keyframes(args, tracking=args.tracking)
        print(json.dumps(out) if args.json else "\n".join(f"{k:>26}: {v}" for k, v in out.items()))
        return 0 if out["same_answer"] else 1

    import onnxruntime as ort

    from rscore.detectors import get_detector

    if args.model is not None and not args.model.is_file():
        print(f"skip: --model {args.model} is not there (see benchmarks/README.md for the real model measured)")
        return 0
    tmp = tempfile.TemporaryDirectory()
    path = args.model or build_model(Path(tmp.name), args.size, 80)
    providers: list[Any] = ["CPUExecutionProvider"]
    if args.device.startswith("cuda"):
        index = int(args.device.split(":")[1]) if ":" in args.device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    det = get_detector({"detector_model": str(path), "device": args.device, "detector_batch": args.batch})
    bare = Bare(path, providers, det.input_size[0], layout=det.layout)
    pics = video_frames(args.video, args.frames) if args.video else frames(args.frames)
    frame_wh = [pics[0].shape[1], pics[0].shape[0]]
    # same answers first: a fast wrong detector is no baseline
    ours = det.detect(pics[0])
    theirs = bare.detect(pics[0])
    agree = len(ours) == len(theirs) and all(
        o.class_id == t[0] and abs(o.score - t[1]) < 1e-4 and np.allclose(o.box, np.clip(t[2], 0, frame_wh * 2),
                                                                          atol=0.5)
        for o, t in zip(sorted(ours, key=lambda d: -d.score), sorted(theirs, key=lambda t: -t[1]))
    )  # fmt: skip

    session_time = 0.0
    real_run = det.session.run

    def timed_run(*a: Any, **k: Any) -> Any:
        nonlocal session_time
        t = time.perf_counter()
        try:
            return real_run(*a, **k)
        finally:
            session_time += time.perf_counter() - t

    det.session.run = timed_run  # type: ignore[method-assign]
    det.detect_batch(pics[:2])
    for p in pics[:2]:
        bare.detect(p)
    ours_t, bare_t, in_run = [], [], []
    for _ in range(args.repeats):
        session_time = 0.0
        t = time.perf_counter()
        det.detect_batch(pics)
        ours_t.append(time.perf_counter() - t)
        in_run.append(ours_t[-1] / session_time)
        t = time.perf_counter()
        for p in pics:
            bare.detect(p)
        bare_t.append(time.perf_counter() - t)
    n = len(pics)
    res = {
        "device": args.device, "providers": list(det.providers), "onnxruntime": ort.__version__,
        "model": "random YOLOv8n-sized" if args.model is None else str(args.model), "input": det.input_size,
        "frames": n, "batch": args.batch, "detections_frame0": len(ours), "same_detections": agree,
        "rscore_fps": round(n / statistics.median(ours_t), 2), "bare_fps": round(n / statistics.median(bare_t), 2),
        "ratio": round(statistics.median(ours_t) / statistics.median(bare_t), 3),
        "ratio_best": round(min(ours_t) / min(bare_t), 3),
        "in_run": round(statistics.median(in_run), 3),
    }  # fmt: skip
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>18}: {v}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
