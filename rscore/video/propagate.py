"""Mask propagators: carry each track's mask from one frame to the next.

A propagator is anchored on a frame with the current masks (:meth:`reset`), then asked for the masks on each next
frame in processing order (:meth:`step`); the offline engine runs one per direction, feeding the backward pass
frames in descending order. The engine re-anchors it after every re-detection.

- ``flow`` (:class:`FlowPropagator`, no weights): dense optical flow (OpenCV's Farneback polynomial expansion) from
  the new frame back to the previous one, computed on a copy at most ``flow_max_side`` px on its longer side; each
  mask is warped by that flow (``cv2.remap``, bilinear, kept where >= 0.5). Flow drifts over long gaps and cannot
  see an object re-appear, hence the periodic re-detection.
- ``sam2`` (:class:`Sam2VideoPropagator`): SAM 2's video predictor (transformers' ``Sam2VideoModel`` in streaming
  mode, prompted with the track masks), when its weights are here (a ``facebook/sam2.1-hiera-*`` folder, which is
  the ``sam2_video`` model type; see ``rscore models list``). Its memory is pruned to the frames SAM 2 attends to,
  so memory stays bounded on endless streams.
- ``none`` (:class:`NullPropagator`): no propagation; masks come from detections only (the engine then detects on
  every frame).

``step`` returns ``{track_id: (mask, score)}``: ``mask`` a full-frame bool array, ``score`` the propagator's own
0-1 confidence that the object is still there (flow: photometric consistency; SAM 2: its object score), or ``None``
when it has none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rscore.errors import BackendUnavailable, OptionError
from rscore.video.reader import Frame

log = logging.getLogger(__name__)

__all__ = ["Propagator", "FlowPropagator", "NullPropagator", "Sam2VideoPropagator", "make_propagator", "PROPAGATORS"]

PROPAGATORS = ("auto", "flow", "sam2", "none")


class Propagator(Protocol):
    name: str
    description: str

    def reset(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> None: ...

    def step(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float | None]]: ...

    def close(self) -> None: ...


class NullPropagator:
    """No propagation: tracks exist only where detections put them."""

    name = "none"
    description = "no propagation (masks from detections on every frame)"

    def reset(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> None:
        pass

    def step(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float | None]]:
        return {}

    def close(self) -> None:
        pass


FLOW_METHODS = ("dis", "farneback")
# DIS settings by name: OpenCV's preset, then parameters set on it. "fine" (the default): the ultrafast preset's
# patch search (no variational refinement) down to the pyramid level nearest FINE_SIDE px on the longer side
# (OpenCV's presets stop at a fixed level: 1/4 of the copy for ultrafast, which loses small or slow objects). On
# the propagation tests and the real worker clip it tracks as well as Farneback or better (bench_video.py flow), at
# a fraction of the time.
_DIS_PRESETS: dict[str, tuple[str, dict[str, int]]] = {
    "fine": ("DISOPTICAL_FLOW_PRESET_ULTRAFAST", {}),
    "ultrafast": ("DISOPTICAL_FLOW_PRESET_ULTRAFAST", {}),
}
FINE_SIDE = 192
FLOW_CHOICES = ("dis", "dis-ultrafast", "farneback")  # the video option flow_method ("dis": DIS "fine")
DEFAULT_FLOW = "dis"


class FlowPropagator:
    """Warp masks along dense optical flow: ``method`` ``dis`` (default; OpenCV's DIS flow, ``dis_preset``
    ``fine`` or the coarser ``ultrafast``: a few ms a frame at 384 px) or ``farneback`` (~20 ms; parameters are
    ``calcOpticalFlowFarneback``'s: pyramid ``levels`` halving the size each (``pyr_scale``), averaging window
    ``winsize`` px, ``iterations`` per level, polynomial neighbourhood ``poly_n`` px with Gaussian ``poly_sigma``).

    Each warped mask gets a **photometric score**: the previous frame warped by the same flow should look like the
    new one inside the mask; with ``err`` the mean absolute grey-level difference there (on the flow's copy), the
    score is ``max(0, 1 - err / error_scale)`` (``error_scale`` = 40 grey levels). An object that left, or was
    covered, leaves a mask over pixels that do not match it: a low score, which the engine treats as "not seen".
    """

    name = "flow"

    def __init__(
        self,
        max_side: int = 384,
        *,
        method: str = "dis",
        dis_preset: str = "fine",
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
        error_scale: float = 40.0,
    ) -> None:
        if max_side < 32:
            raise OptionError(f"flow_max_side must be >= 32 px, got {max_side}")
        if method not in FLOW_METHODS:
            raise OptionError(f"flow_method must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
        if dis_preset not in _DIS_PRESETS:
            raise OptionError(f"dis_preset must be one of {', '.join(_DIS_PRESETS)}, got {dis_preset!r}")
        self.max_side = int(max_side)
        self.method = method
        self.dis_preset = dis_preset
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)
        self.error_scale = float(error_scale)
        self._dis = None
        if method == "dis":
            self._dis = self._new_dis()
        name = f"DIS, {dis_preset}" if method == "dis" else "Farneback"
        self.description = f"dense optical flow ({name}, computed at <= {self.max_side} px) warping each mask"
        self._prev: np.ndarray | None = None
        self._small_grid: tuple[np.ndarray, np.ndarray] | None = None
        # frame index -> (grey, flow, error), computed ahead; flow and error None while no track needed them
        self._ready: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
        self._flow_wanted = True  # the last step had masks to move: the thread ahead computes flows, not only greys

    def _small_grey(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return grey

    def reset(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> None:
        ready = self._ready.pop(frame.index, None)  # computed ahead for a frame the tracker anchors on instead
        self._prev = ready[0] if ready is not None else self._small_grey(frame.image)
        self._flow_wanted = bool(masks)

    @staticmethod
    def _meshgrid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return gx, gy

    def _new_dis(self) -> Any:
        import cv2

        preset, params = _DIS_PRESETS[self.dis_preset]
        dis = cv2.DISOpticalFlow_create(getattr(cv2, preset))
        for key, value in params.items():
            getattr(dis, f"set{key}")(value)
        return dis

    def _between(self, cur: np.ndarray, prev: np.ndarray, dis: Any, grid: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Flow from ``cur`` back to ``prev`` (copy-sized greys) and the photometric error (see :meth:`flow`)."""
        import cv2

        if dis is not None:
            if self.dis_preset == "fine":
                dis.setFinestScale(max(0, int(np.log2(max(cur.shape) / FINE_SIDE + 1e-9))))
            flow = dis.calc(cur, prev, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(cur, prev, None, *self.params)
        gx, gy = grid
        predicted = cv2.remap(prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return flow, cv2.absdiff(cur, predicted).astype(np.float32)

    def _grid_of(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if self._small_grid is None or self._small_grid[0].shape != shape:
            self._small_grid = self._meshgrid(*shape)
        return self._small_grid

    def flow(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """The flow at the copy's size (``(sh, sw, 2)`` float32, in copy pixels: where each pixel of ``frame`` was in
        the previous frame) and the absolute difference (copy-sized, float32) between ``frame`` and the previous
        frame warped by it. Advances the propagator to ``frame``. Computed ahead by :meth:`lookahead` when the
        frames come through it."""
        ready = self._ready.pop(frame.index, None)
        if ready is not None and self._prev is not None and ready[1] is not None:
            cur, flow, error = ready
            self._prev = cur
            return flow, error  # type: ignore[return-value]
        cur = ready[0] if ready is not None else self._small_grey(frame.image)
        prev = self._prev if self._prev is not None and self._prev.shape == cur.shape else cur
        self._prev = cur
        return self._between(cur, prev, self._dis, self._grid_of(cur.shape))

    def lookahead(self, first: Frame, frames: Iterable[Frame], depth: int = 4) -> Iterator[Frame]:
        """``frames`` (a pass that starts after ``first``), their flows computed in a background thread up to
        ``depth`` frames ahead: the flow between two frames depends on their pictures only, so it need not wait
        for the tracking of the one before (OpenCV releases the GIL). Same results as computing them in
        :meth:`step`. While the tracker has nothing to move (``step`` with no masks) only the grey copies are made
        ahead: a clip where the query finds nothing costs no optical flow; once masks come, the frames already
        ahead get their flow in :meth:`step`, later ones in the thread again."""
        from rscore.video.reader import decode_ahead

        def compute() -> Iterator[Frame]:
            dis = self._new_dis() if self._dis is not None else None  # OpenCV's DIS object is not shared
            prev = self._small_grey(first.image)
            grid = self._meshgrid(*prev.shape)
            for f in frames:
                cur = self._small_grey(f.image)
                if cur.shape == prev.shape and self._flow_wanted:
                    self._ready[f.index] = (cur, *self._between(cur, prev, dis, grid))
                elif cur.shape == prev.shape:
                    self._ready[f.index] = (cur, None, None)
                prev = cur
                yield f

        return decode_ahead(compute(), depth)

    def _maps(self, flow: np.ndarray, full: tuple[int, int], y0: int, y1: int, x0: int, x1: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution sampling maps for the box ``[y0:y1, x0:x1]``: the copy's flow upsampled bilinearly
        (pixel centres aligned, as ``cv2.resize``) and scaled to full-resolution pixels, plus the pixel grid."""
        import cv2

        (h, w), (sh, sw) = full, flow.shape[:2]
        gx = np.arange(x0, x1, dtype=np.float32)
        gy = np.arange(y0, y1, dtype=np.float32)
        if (sh, sw) == (h, w):
            fx, fy = flow[y0:y1, x0:x1, 0], flow[y0:y1, x0:x1, 1]
        else:
            ux = np.broadcast_to((gx + 0.5) * (sw / w) - 0.5, (y1 - y0, x1 - x0)).astype(np.float32)
            uy = np.broadcast_to(((gy + 0.5) * (sh / h) - 0.5)[:, None], (y1 - y0, x1 - x0)).astype(np.float32)
            up = cv2.remap(flow, ux, uy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            fx, fy = up[..., 0] * (w / sw), up[..., 1] * (h / sh)
        return gx[None, :] + fx, gy[:, None] + fy

    def step(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float | None]]:
        import cv2

        self._flow_wanted = bool(masks)
        if not masks:
            ready = self._ready.pop(frame.index, None)
            self._prev = ready[0] if ready is not None else self._small_grey(frame.image)
            return {}
        flow, error = self.flow(frame)
        h, w = frame.image.shape[:2]
        sh, sw = error.shape
        # a pixel can only land in a mask from as far as the largest displacement: warp each mask's box plus that
        # (bilinear upsampling never exceeds the copy's largest value)
        margin = int(np.ceil(float(np.abs(flow).max(initial=0.0)) * max(w / sw, h / sh))) + 2
        # the copy's pixel (i, j) looks at full-resolution pixel (ny[i], nx[j]), as cv2.resize INTER_NEAREST
        ny = np.minimum((np.arange(sh) * (h / sh)).astype(np.intp), h - 1)
        nx = np.minimum((np.arange(sw) * (w / sw)).astype(np.intp), w - 1)
        out: dict[int, tuple[np.ndarray, float | None]] = {}
        for tid, mask in masks.items():
            rows = np.flatnonzero(mask.any(axis=1))
            warped = np.zeros((h, w), bool)
            err = self.error_scale
            if rows.size:
                cols = np.flatnonzero(mask.any(axis=0))
                y0, y1 = max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)
                x0, x1 = max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)
                map_x, map_y = self._maps(flow, (h, w), y0, y1, x0, x1)
                warped[y0:y1, x0:x1] = cv2.remap(
                    mask.astype(np.uint8) * 255, map_x, map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0,
                ) >= 128
                # photometric error over the copy's pixels that fall in the warped mask (only its box can)
                iy = np.flatnonzero((ny >= y0) & (ny < y1))
                ix = np.flatnonzero((nx >= x0) & (nx < x1))
                if iy.size and ix.size:
                    small = warped[ny[iy][:, None], nx[ix][None, :]]
                    if small.any():
                        err = float(error[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1][small].mean())
            out[tid] = (warped, max(0.0, 1.0 - err / self.error_scale))
        return out

    def close(self) -> None:
        self._prev = None
        self._small_grid = None
        self._ready.clear()


# ---------------------------------------------------------------------------------------------------------- SAM 2
_SAM2_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}


def _load_sam2_video(folder: Path, device: str) -> tuple[Any, Any]:
    key = (str(folder.resolve()), device)
    if key in _SAM2_CACHE:
        return _SAM2_CACHE[key]
    import json

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "sam2_video":
        raise BackendUnavailable(
            f"{folder}: the SAM 2 video propagator needs a sam2_video checkpoint (config.json model_type "
            f"'sam2_video', as in facebook/sam2.1-hiera-*), found {model_type!r}"
        )
    from rscore.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import Sam2VideoModel, Sam2VideoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = Sam2VideoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        processor = Sam2VideoProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a folder transformers cannot load is the folder's problem
        raise BackendUnavailable(f"{folder}: cannot load a SAM 2 video model ({type(exc).__name__}: {exc})") from None
    _SAM2_CACHE[key] = (model, processor)
    log.info("loaded SAM 2 video model from %s on %s", folder, device)
    return model, processor


class Sam2VideoPropagator:
    """SAM 2 video propagation in streaming mode (see the module docstring). ``model``: ``auto`` (the best
    ``hf-sam2*`` weights here), a registered name or a folder; ``weights``/``device``/``dtype`` as for the
    segmenters. ``keep_frames``: frames of memory kept (SAM 2 attends to the last 6 plus object pointers of the
    last 16; older ones are dropped)."""

    name = "sam2"

    def __init__(
        self,
        model: str = "auto",
        *,
        weights: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        keep_frames: int = 16,
    ) -> None:
        from rscore.models import registry
        from rscore.models.device import placement

        if model == "auto":
            resolved = registry.resolve_auto("sam2-hf", weights=weights, recommend="hf-sam2.1-hiera-tiny")
            folder = resolved.path
            self.model_name = resolved.spec.name
        elif Path(model).expanduser().is_dir():
            folder = Path(model).expanduser()
            self.model_name = folder.name
        else:
            resolved = registry.resolve(model, backend="sam2-hf", weights=weights)
            folder = resolved.path
            self.model_name = resolved.spec.name
        self.placement = placement(device=device, dtype=dtype)
        self.model, self.processor = _load_sam2_video(Path(folder), self.placement.device)
        self.keep_frames = max(8, int(keep_frames))
        self.description = f"SAM 2 video predictor ({self.model_name}, streaming memory of {self.keep_frames} frames)"
        self.session: Any = None
        self._k = 0
        self._ids: list[int] = []

    def _pixels(self, frame: Frame) -> Any:
        return self.processor(images=frame.image, device=self.placement.device, return_tensors="pt")

    def reset(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> None:
        import torch

        self.session = self.processor.init_video_session(
            inference_device=self.placement.device, dtype=torch.float32
        )
        self._k = 0
        self._ids = [int(i) for i in masks]
        if not masks:
            return
        inputs = self._pixels(frame)
        self.processor.add_inputs_to_inference_session(
            self.session,
            frame_idx=0,
            obj_ids=list(self._ids),  # transformers consumes this list in place
            input_masks=[np.asarray(m, bool) for m in masks.values()],
        )
        with torch.inference_mode():
            self.model(inference_session=self.session, frame_idx=0, frame=inputs.pixel_values[0])

    def step(self, frame: Frame, masks: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float | None]]:
        import torch

        if self.session is None or not self._ids:
            return {}
        self._k += 1
        inputs = self._pixels(frame)
        with torch.inference_mode():
            out = self.model(inference_session=self.session, frame_idx=self._k, frame=inputs.pixel_values[0])
            pred = self.processor.post_process_masks(
                [out.pred_masks], original_sizes=inputs.original_sizes, binarize=True
            )[0]
            scores = torch.sigmoid(out.object_score_logits.float().reshape(-1)).cpu().numpy()
        pred = pred.cpu().numpy().astype(bool)
        self._prune()
        return {int(obj): (pred[i, 0], float(scores[i])) for i, obj in enumerate(out.object_ids)}

    def _prune(self) -> None:
        """Drop what SAM 2 will no longer use: the pixels of every frame but the current one (memory lives in the
        stored outputs), and non-conditioning outputs and tracking marks older than ``keep_frames`` (SAM 2 attends
        to the last 6 frames' memories and 16 object pointers; the conditioning frame 0 stays)."""
        s = self.session
        for idx in [i for i in (s.processed_frames or {}) if i != self._k]:
            del s.processed_frames[idx]
        oldest = self._k - self.keep_frames
        if oldest <= 0:
            return
        for per_obj in s.output_dict_per_obj.values():
            store = per_obj["non_cond_frame_outputs"]
            for idx in [i for i in store if i < oldest]:
                del store[idx]
        for tracked in s.frames_tracked_per_obj.values():
            for idx in [i for i in tracked if 0 < i < oldest]:
                del tracked[idx]

    def close(self) -> None:
        self.session = None


def make_propagator(name: str, options: Mapping[str, Any]) -> Propagator:
    """Build the propagator ``name`` (``auto``: SAM 2 when its weights and packages are here, else flow; the
    plan records which one ran). Options: ``flow_max_side``, ``sam2_video_model``, ``weights``, ``device``,
    ``dtype``."""
    if name not in PROPAGATORS:
        raise OptionError(f"unknown propagator '{name}' (choose {', '.join(PROPAGATORS)})")
    flow_side = int(options.get("flow_max_side") or 384)
    method, _, preset = str(options.get("flow_method") or DEFAULT_FLOW).partition("-")
    flow_kw = {"method": method, **({"dis_preset": preset} if preset else {})}
    if name == "flow":
        return FlowPropagator(flow_side, **flow_kw)
    if name == "none":
        return NullPropagator()
    kwargs = {
        "model": str(options.get("sam2_video_model") or "auto"),
        "weights": options.get("weights"),
        "device": options.get("device"),
        "dtype": options.get("dtype"),
    }
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if name == "sam2":
        if missing:
            raise BackendUnavailable(f"the sam2 propagator needs Python package(s) {', '.join(missing)}")
        return Sam2VideoPropagator(**kwargs)
    if missing:
        return FlowPropagator(flow_side, **flow_kw)
    try:
        return Sam2VideoPropagator(**kwargs)
    except BackendUnavailable as exc:
        log.info("SAM 2 video propagator unavailable (%s); using optical flow", exc)
        return FlowPropagator(flow_side, **flow_kw)
