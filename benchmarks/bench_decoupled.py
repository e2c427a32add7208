"""The decoupled path's overhead and SAM2 throughput: what rscore adds around the models.

``overhead`` (default; CPU is enough)
    The engine (``rscore.engine.segment``: preprocess hooks, template matching, picture fitting, prompt, chat
    template, generate, parse, plan, SAM2 embedding + batched decoding, instances, union mask, postprocess hooks) on
    tiny models - a Qwen2.5-VL of 0.1 M parameters taught to answer with K boxes, and SAM2.1 hiera-tiny (the real
    architecture, random weights) - against the raw forward time of the same models on the same inputs
    (``model.generate`` + ``SAM2ImagePredictor.set_image`` + one batched ``predict``). Runs alternate between the
    two sides; reports the medians and the ratio engine / raw (target <= 1.10), and the same for the fastest run of
    each side (``ratio_best``: on a shared machine the run least disturbed by other work), and ``ratio_in_run``: the
    engine's wall time over the time spent inside the model calls (``generate``, ``set_image``, ``predict``) of the
    same run, which machine load cannot skew. SAM2's embedding cache is cleared before every engine run so both
    sides embed the picture.

``sam2`` (meant for a GPU)
    Images per second for SAM2.1 tiny, small, base+ and large through rscore's segmenter vs the bare predictor
    (``set_image`` + one batched ``predict`` of the same K boxes), on ``--images`` different pictures. Uses the
    registry's weights (``--weights DIR`` or the Hugging Face cache) and, with ``--random-weights``, random weights
    built from the yaml configs where a checkpoint is absent (same speed: only values differ).

``tiles``
    Tiles per second end to end through the tiled decoupled path (``rscore.engine.decoupled``): one ``segment`` call
    on a picture of ``--grid`` x ``--grid`` tiles of ``--tile`` px with ``reason_tiles=on`` (overview pass, per-tile
    reasoning with the window in the prompt, per-tile segmentation, cross-tile merge), with the taught tiny reasoner
    and the best SAM2 available (or hiera-tiny with random weights; ``--segmenter classical`` for none); and, as the
    baseline, the same tiles cut by hand and sent through the engine one scene each.

::

    python benchmarks/bench_decoupled.py                                   # overhead, CPU
    python benchmarks/bench_decoupled.py sam2 --random-weights --images 50 # on a GPU machine
    python benchmarks/bench_decoupled.py tiles --random-weights --json
    python benchmarks/bench_decoupled.py tiles --segmenter classical --tile 512 --grid 3 --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rscore import hookimpl
from rscore.sdk import BackendSpec, Template
from rscore.types import ArraySource, Request, Scene, Target

QUERY = "the bright boxes"
TEMPLATE = Template(
    name="bright-box",
    label="bright box",
    description="bright rectangular objects",
    examples=(QUERY,),
    prompt="A bright box is a rectangle much lighter than its surroundings.",
    keywords=("bright", "box"),
)


class BenchBackends:
    """The transformers reasoner and SAM2 segmenters under bench names, so the benchmark does not depend on which
    backends rscore.builtin registers."""

    @hookimpl
    def rscore_backends(self) -> list[BackendSpec]:
        from rscore.reasoners.transformers_vlm import make_transformers_reasoner
        from rscore.segmenters.sam2 import make_sam2_segmenter

        return [
            BackendSpec("reasoner", "bench-transformers", make_transformers_reasoner, "transformers reasoner"),
            BackendSpec("segmenter", "bench-sam2", make_sam2_segmenter, "sam2 package segmenter"),
        ]

    @hookimpl
    def rscore_query_templates(self) -> list[Template]:
        return [TEMPLATE]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _picture(size: int, boxes: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A noisy dark RGB picture with ``boxes`` bright rectangles; returns it and the rectangles (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    rects = []
    for _ in range(boxes):
        w, h = rng.integers(size // 10, size // 4, 2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(180, 255, 3)
        rects.append((int(x0), int(y0), int(x0 + w), int(y0 + h)))
    return img, rects


def _scene(img: np.ndarray) -> Scene:
    return Scene(ArraySource(np.moveaxis(img, -1, 0)), "image", ("red", "green", "blue"))


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


# -------------------------------------------------------------------------------------------------------- setup
def _tiny_weights(root: Path, *, sam2: bool = True) -> Path:
    from rscore.models.testing import save_tiny_qwen_vl, save_tiny_sam2_checkpoint

    save_tiny_qwen_vl(root / "qwen2.5-vl-3b", "qwen2.5-vl")
    if sam2:
        save_tiny_sam2_checkpoint(root / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt")
    return root


def _teach(options: dict[str, Any], img: np.ndarray, rects: list[tuple[int, int, int, int]]) -> Any:
    """Build the reasoner as the engine will and teach it to answer the bench query with the rectangles."""
    from rscore.models.testing import targets_json, teach_answer
    from rscore.reasoners.prompting import describe_scene
    from rscore.reasoners.transformers_vlm import make_transformers_reasoner

    reasoner = make_transformers_reasoner(options)
    scene = _scene(img)
    request = Request(QUERY, options={"matcher": "keyword"})
    sent = reasoner.fit(img)
    convo = reasoner.conversation(sent, request, [TEMPLATE], kind="image", context=describe_scene(scene, sent))
    sx, sy = sent.size[0] / img.shape[1], sent.size[1] / img.shape[0]
    boxes = [[round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)] for x0, y0, x1, y1 in rects]
    answer = targets_json([{"label": "bright box", "box": box, "confidence": 0.9} for box in boxes])
    teach_answer(reasoner, reasoner.encode(convo.messages, sent), answer)
    return reasoner, convo, sent


# ------------------------------------------------------------------------------------------------------ overhead
def bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rscore.engine import segment
    from rscore.plugins import get_plugin_manager, get_registry
    from rscore.segmenters.sam2 import make_sam2_segmenter

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = _tiny_weights(Path(tmp))
        img, rects = _picture(args.size, args.boxes, seed=0)
        options = {"reasoner": "bench-transformers", "segmenter": "bench-sam2", "model": "qwen2.5-vl-3b",
                   "weights": str(weights), "matcher": "keyword", "device": args.device}
        reasoner, convo, sent = _teach(options, img, rects)
        segmenter = make_sam2_segmenter(options)
        reg = get_registry(get_plugin_manager(entry_points=False, extra=[("bench", BenchBackends())]))
        scene = _scene(img)

        # time spent inside the models during engine runs (generate, set_image, predict), measured in the same run
        forward = {"s": 0.0}

        def timed(obj: Any, attr: str) -> None:
            inner = getattr(obj, attr)

            def wrapper(*a: Any, **k: Any) -> Any:
                _sync()
                t0 = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    _sync()
                    forward["s"] += time.perf_counter() - t0

            setattr(obj, attr, wrapper)

        def engine() -> Any:
            segmenter.session.view = None  # embed the picture on every run, as the raw side does
            return segment(scene, QUERY, plugin="bench", options=options, registry=reg)

        result = engine()  # warm-up, and a check that the path works
        assert len(result.instances) == len(rects), f"expected {len(rects)} instances, got {len(result.instances)}"

        inputs = reasoner.encode(convo.messages, sent)
        config = reasoner.model.generation_config
        config.max_new_tokens = 64
        predictor = segmenter.predictor
        boxes = np.array(rects, np.float32)

        def raw_reason() -> Any:
            with torch.inference_mode():
                return reasoner.model.generate(**inputs, generation_config=config, do_sample=False)

        def raw_segment() -> Any:
            with torch.inference_mode():
                predictor.set_image(img)
                return predictor.predict(box=boxes, multimask_output=True)

        raw_reason(), raw_segment()  # warm-up
        # interleaved, so that a change in machine load affects both sides alike
        r_reason_t, r_segment_t, e_times, in_run = [], [], [], []
        for _ in range(args.repeats):
            r_reason_t.append(_median_time(raw_reason, 1)[0])
            r_segment_t.append(_median_time(raw_segment, 1)[0])
            for obj, attr in ((reasoner.model, "generate"), (predictor, "set_image"), (predictor, "predict")):
                timed(obj, attr)
            forward["s"] = 0.0
            e_times.append(_median_time(engine, 1)[0])
            in_run.append(e_times[-1] / forward["s"])
            for obj, attr in ((reasoner.model, "generate"), (predictor, "set_image"), (predictor, "predict")):
                delattr(obj, attr)  # back to the class's method
        r_reason, r_segment = statistics.median(r_reason_t), statistics.median(r_segment_t)
        raw = statistics.median(a + b for a, b in zip(r_reason_t, r_segment_t))
        e_total = statistics.median(e_times)
        timings = engine().timings
    return {
        "benchmark": "overhead",
        "device": segmenter.placement.device,
        "picture_px": args.size,
        "targets": len(rects),
        "repeats": args.repeats,
        "raw_generate_s": round(r_reason, 4),
        "raw_sam2_s": round(r_segment, 4),
        "raw_total_s": round(raw, 4),
        "engine_s": round(e_total, 4),
        "engine_runs_s": [round(t, 4) for t in e_times],
        "engine_stage_s": {k: v for k, v in timings.items() if k in ("reason_s", "segment_s", "total_s")},
        "overhead_s": round(e_total - raw, 4),
        "ratio": round(e_total / raw, 3),
        # the fastest run of each side: the least disturbed by other work on a shared machine
        "raw_best_s": round(min(a + b for a, b in zip(r_reason_t, r_segment_t)), 4),
        "engine_best_s": round(min(e_times), 4),
        "ratio_best": round(min(e_times) / min(a + b for a, b in zip(r_reason_t, r_segment_t)), 3),
        # engine wall time / time inside the models in the same run: insensitive to load changing between runs
        "ratio_in_run": round(statistics.median(in_run), 4),
        "target_ratio": 1.10,
    }


# ---------------------------------------------------------------------------------------------------------- sam2
def _sam2_checkpoint(name: str, weights: Path | None, scratch: Path, random_weights: bool) -> tuple[Any, str]:
    from rscore.errors import BackendUnavailable
    from rscore.models import get_model, resolve
    from rscore.models.testing import save_tiny_sam2_checkpoint

    spec = get_model(name)
    try:
        return resolve(name, weights=weights), "pretrained"
    except BackendUnavailable:
        if not random_weights:
            raise
    save_tiny_sam2_checkpoint(scratch / spec.name / spec.files[0], spec.config)
    return resolve(name, weights=scratch), "random"


def bench_sam2(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rscore.compat import ensure_torchvision

    ensure_torchvision()  # before sam2 imports torchvision (CPU torch + CUDA torchvision wheel)
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from rscore.errors import BackendUnavailable
    from rscore.models.device import autocast, placement
    from rscore.segmenters.sam2 import Sam2Options, Sam2Segmenter, clear_model_cache

    where = placement(device=args.device)
    if not where.device.startswith("cuda") and not args.allow_cpu:
        return {"benchmark": "sam2", "skipped": f"no CUDA GPU (device {where.device}); pass --allow-cpu to run anyway"}
    pictures = [_picture(args.size, args.boxes, seed=i) for i in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            name = f"sam2.1-hiera-{size}"
            try:
                resolved, kind = _sam2_checkpoint(name, args.weights, Path(tmp), args.random_weights)
            except BackendUnavailable as exc:
                rows.append({"model": name, "skipped": str(exc)})
                continue
            weights = str(resolved.path)
            seg = Sam2Segmenter(Sam2Options(model=weights, device=args.device))
            bare = SAM2ImagePredictor(seg.predictor.model)

            def run_rscore(seg: Sam2Segmenter = seg) -> None:
                for img, rects in pictures:
                    seg.segment(img, [Target("box", box=r) for r in rects])

            def run_bare(bare: SAM2ImagePredictor = bare) -> None:
                for img, rects in pictures:
                    with torch.inference_mode(), autocast(where):
                        bare.set_image(img)
                        bare.predict(box=np.array(rects, np.float32), multimask_output=True)

            run_rscore(), run_bare()  # warm-up (CUDA kernels, allocator)
            t_rscore, _ = _median_time(run_rscore, args.repeats)
            t_bare, _ = _median_time(run_bare, args.repeats)
            rows.append({"model": name, "weights": kind, "rscore_images_per_s": round(args.images / t_rscore, 2),
                         "bare_images_per_s": round(args.images / t_bare, 2), "ratio": round(t_rscore / t_bare, 3)})
            del seg, bare
            clear_model_cache()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {"benchmark": "sam2", "device": where.device, "dtype": where.dtype, "picture_px": args.size,
            "boxes_per_image": args.boxes, "images": args.images, "models": rows}


# --------------------------------------------------------------------------------------------------------- tiles
def _teach_tile(
    reasoner: Any, big: np.ndarray, tile: int, overlap: int, rects: list[tuple[int, int, int, int]]
) -> None:
    """Teach the reasoner the first tile's answer on the prompt the tiled path gives tile 1 (window in the text)."""
    from rscore.engine.decoupled import tile_windows
    from rscore.models.testing import targets_json, teach_answer
    from rscore.reasoners.prompting import ReasoningView, describe_scene

    windows = tile_windows(big.shape[0], big.shape[1], tile, overlap)
    first = windows[0]
    view = ReasoningView((big.shape[1], big.shape[0]), first, tile=0, tiles=len(windows),
                         band_roles=("red", "green", "blue"))
    crop = big[first.slices]
    scene = Scene(ArraySource(np.moveaxis(crop, -1, 0)), "image", ("red", "green", "blue"),
                  metadata={"reasoning_view": view})
    request = Request(QUERY, options={"matcher": "keyword"})
    sent = reasoner.fit(crop)
    convo = reasoner.conversation(sent, request, [TEMPLATE], kind="image", context=describe_scene(scene, sent))
    sx, sy = sent.size[0] / crop.shape[1], sent.size[1] / crop.shape[0]
    boxes = [[round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)] for x0, y0, x1, y1 in rects]
    answer = targets_json([{"label": "bright box", "box": box, "confidence": 0.9} for box in boxes])
    teach_answer(reasoner, reasoner.encode(convo.messages, sent), answer)


def bench_tiles(args: argparse.Namespace) -> dict[str, Any]:
    """Tiles per second through the engine's tiled decoupled path (rscore.engine.decoupled): one ``segment`` call on
    a picture of ``grid`` x ``grid`` tiles with ``reason_tiles=on`` - overview pass, per-tile reasoning with the
    window in the prompt, per-tile segmentation, cross-tile merge, union mask - against the same tiles cut out by
    hand and sent through the engine one scene each (``separate``: no overview, no overlap, no merge)."""
    from rscore.engine import segment
    from rscore.plugins import get_plugin_manager, get_registry

    tile = args.tile
    big, _ = _picture(tile * args.grid, 0, seed=7)
    tiles = []
    for r in range(args.grid):
        for c in range(args.grid):
            crop, rects = _picture(tile, args.boxes, seed=100 + r * args.grid + c)
            big[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = crop
            tiles.append((crop, rects))
    with tempfile.TemporaryDirectory() as tmp:
        weights = _tiny_weights(Path(tmp), sam2=False)
        options = {"reasoner": "bench-transformers", "segmenter": "bench-sam2", "model": "qwen2.5-vl-3b",
                   "weights": str(weights), "matcher": "keyword", "device": args.device}
        sam2_kind = "none"
        if args.segmenter == "classical":
            options["segmenter"] = "classical"
        else:
            if args.weights is not None:
                options["sam2_weights"] = str(args.weights)
            try:
                from rscore.models import resolve_auto

                resolve_auto("sam2", weights=args.weights, recommend="sam2.1-hiera-tiny")
                sam2_kind = "pretrained"
            except Exception:
                if not args.random_weights:
                    raise
                from rscore.models.testing import save_tiny_sam2_checkpoint

                save_tiny_sam2_checkpoint(Path(tmp) / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt")
                options["sam2_weights"] = str(tmp)
                sam2_kind = "random"
        # one taught answer per tile is not possible for one model: teach the first tile's, others answer the same;
        # taught on both prompts the first tile is given: as a scene of its own and as tile 1 of the large picture
        reasoner, _, _ = _teach(options, tiles[0][0], tiles[0][1])
        _teach_tile(reasoner, big, tile, args.overlap, tiles[0][1])
        reg = get_registry(get_plugin_manager(entry_points=False, extra=[("bench", BenchBackends())]))
        tiled_options = {**options, "reason_tiles": "on", "reason_tile": tile, "reason_overlap": args.overlap,
                         "reason_overview": not args.no_overview}
        big_scene = _scene(big)
        last: dict[str, Any] = {}

        def run_tiled() -> None:
            last["result"] = segment(big_scene, QUERY, plugin="bench", options=tiled_options, registry=reg)

        def run_separate() -> int:
            found = 0
            for crop, _ in tiles:
                found += len(segment(_scene(crop), QUERY, plugin="bench", options=options, registry=reg).instances)
            return found

        run_tiled(), run_separate()  # warm-up
        t_tiled, runs = _median_time(run_tiled, args.repeats)
        t_separate, _ = _median_time(run_separate, args.repeats)
        result = last["result"]
        tiling = result.plan.match["tiling"]
    n = int(tiling["tiles"])
    requests = n + (1 if tiling["overview"] else 0)
    return {
        "benchmark": "tiles",
        "device": args.device,
        "picture_px": tile * args.grid,
        "tile_px": tile,
        "overlap_px": tiling["overlap_px"],
        "segmenter": options["segmenter"],
        "sam2_weights": sam2_kind,
        "tiled_tiles": n,
        "tiled_requests": requests,
        "tiled_s": round(t_tiled, 4),
        "tiled_runs_s": [round(t, 4) for t in runs],
        "tiled_tiles_per_s": round(n / t_tiled, 3),
        "tiled_seconds_per_tile": round(t_tiled / n, 4),
        "tiled_stage_s": {k: v for k, v in result.timings.items() if k in ("reason_s", "segment_s", "total_s")},
        "tiled_instances": len(result.instances),
        # model calls (a repair turn counts) and generated tokens: more than one per picture means unusable answers
        "tiled_model_requests": result.plan.match.get("requests"),
        "tiled_tokens": result.plan.match.get("tokens"),
        "merged_across_tiles": tiling["merged_across_tiles"],
        "separate_tiles": len(tiles),
        "separate_s": round(t_separate, 4),
        "separate_tiles_per_s": round(len(tiles) / t_separate, 3),
        # per model request: the tiled path's cost of one reasoned picture (tile or overview) vs one separate scene
        "tiled_s_per_request": round(t_tiled / requests, 4),
        "separate_s_per_tile": round(t_separate / len(tiles), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", nargs="?", default="overhead", choices=("overhead", "sam2", "tiles"))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--size", type=int, default=512, help="picture side, px")
    p.add_argument("--boxes", type=int, default=4, help="targets per picture")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=20, help="sam2: pictures per timed run")
    p.add_argument("--sizes", nargs="+", default=["tiny", "small", "base-plus", "large"])
    p.add_argument("--weights", type=Path, default=None, help="a --weights folder with SAM2 checkpoints")
    p.add_argument("--random-weights", action="store_true", help="random weights where a checkpoint is absent")
    p.add_argument("--allow-cpu", action="store_true", help="sam2: run without a GPU too")
    p.add_argument("--tile", type=int, default=1024, help="tiles: tile side, px")
    p.add_argument("--grid", type=int, default=2, help="tiles: the picture is grid x grid tiles")
    p.add_argument("--overlap", type=int, default=128, help="tiles: reason_overlap, px")
    p.add_argument("--no-overview", action="store_true", help="tiles: reason_overview=false")
    p.add_argument("--segmenter", default="sam2", choices=("sam2", "classical"), help="tiles: the segmenter")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)
    report = {"overhead": bench_overhead, "sam2": bench_sam2, "tiles": bench_tiles}[args.which](args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "models":
            for row in value:
                print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
        else:
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
