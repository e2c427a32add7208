"""Writers of video results (register them through ``rscore_writers``; each applies to :class:`VideoResult` only).

- ``masks.json`` (:class:`VideoMasksWriter`): per processed frame, in frame order::

      {"video": {...}, "query": ..., "keyframe": {...}, "tracks": [...],
       "frames": [{"frame": 12, "timestamp_s": 0.8, "instances": [
           {"track_id": 1, "label": "hi-vis clothing", "score": 0.93, "source": "propagated",
            "bbox": [x0, y0, x1, y1], "area_px": 812, "rle": {"size": [h, w], "counts": "..."}}]}]}

  ``rle`` is COCO's compressed RLE (:mod:`rscore.rle`, pycocotools-compatible); ``source`` says whether the mask
  came from the ``keyframe`` segmentation, a re-``detected`` frame or was ``propagated``. Written frame by frame.
- ``overlay.mp4`` (:class:`VideoOverlayWriter`): every processed frame with each track tinted in its own colour,
  outlined and labelled ``#id label``, at the source's size and frame rate; codec ``overlay_codec``: ``h264``
  (default: H.264 MP4 with faststart, through PyAV; plays in browsers), ``vp9`` (.webm, PyAV), or through OpenCV
  ``mp4v`` (.mp4, does not play in browsers), ``MJPG`` (.avi), ``VP90`` / ``VP80`` (.webm). Offline results re-read
  the source; online results were drawn while processing. Option ``overlay=false`` skips it; a run with no
  processed frame (an absent answer) writes no video at all. Option ``input_video=true`` also writes ``input.mp4``
  (link ``input_video``): the same frames without the overlay (:class:`OverlaySink` ``plain``), what the web viewer
  plays under masks.json's masks.
- ``ytvis.json`` / ``ytvis_results.json`` (:class:`VideoYtvisWriter`): the same masks in YouTube-VIS layout
  (:mod:`rscore.io.coco`), for the tools of that field.
- ``events.json`` (:class:`VideoEventsWriter`): reader events (connected, dropped, reconnect, stuck, lost, end)
  and one event per track (first/last frame and time).
- ``keyframe.png`` (:class:`KeyframePngWriter`): the keyframe with its masks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rscore import rle
from rscore.errors import OptionError
from rscore.sdk import Writer
from rscore.types import Result, Scene
from rscore.video.results import VideoResult

log = logging.getLogger(__name__)

__all__ = [
    "OVERLAY_CODECS",
    "OverlaySink",
    "draw_overlay",
    "write_masks_json",
    "write_events_json",
    "write_overlay_video",
    "VideoMasksWriter",
    "VideoOverlayWriter",
    "VideoEventsWriter",
    "VideoYtvisWriter",
    "KeyframePngWriter",
    "video_writers",
]

#: Overlay codecs and the container each is written in. ``h264`` (the default) and ``vp9`` are encoded through
#: PyAV (its wheels bundle FFmpeg with libx264 / libvpx): they play in every browser. The others go through OpenCV
#: and are kept for old option files: ``mp4v`` does not play in browsers.
OVERLAY_CODECS = {"h264": ".mp4", "vp9": ".webm", "mp4v": ".mp4", "MJPG": ".avi", "VP90": ".webm", "VP80": ".webm"}
_SUFFIX = OVERLAY_CODECS
_PYAV = {"h264": "libx264", "vp9": "libvpx-vp9"}


def _pyav_can(codec: str) -> bool:
    try:
        import av
    except ImportError:  # pragma: no cover - av is a core dependency
        return False
    return _PYAV[codec] in av.codecs_available


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per track id (golden-ratio hue steps)."""
    import colorsys

    h = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(rgb: np.ndarray, instances: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The frame (RGB) with each instance's mask (``rle`` or ``mask``) tinted, outlined and labelled.

    Work is confined to each instance's box (``bbox``, end-exclusive; the mask's own box where it has none), so a
    frame with many small tracks costs little more than a copy of it."""
    import cv2

    from rscore.instances import mask_bbox

    img = np.array(rgb, np.uint8, copy=True)
    h, w = img.shape[:2]
    masks = []
    for item in instances:
        mask = item["mask"] if "mask" in item else rle.decode(item["rle"])
        box = item.get("bbox") or mask_bbox(mask)
        if box is None:
            continue
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(box[2])), min(h, int(box[3]))
        m = np.asarray(mask[y0:y1, x0:x1], bool)
        roi = img[y0:y1, x0:x1]
        colour = np.array(track_colour(int(item.get("track_id", 0))), np.float32)
        roi[m] = np.clip(0.55 * roi[m].astype(np.float32) + 0.45 * colour, 0, 255).astype(np.uint8)
        masks.append((m, (x0, y0), item))
    for m, offset, item in masks:
        colour = track_colour(int(item.get("track_id", 0)))
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
        cv2.drawContours(img, contours, -1, colour, 1)
        x0, y0 = int(item["bbox"][0]), int(item["bbox"][1])
        text = f"#{item.get('track_id', '?')} {item.get('label', '')}"
        cv2.putText(img, text, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, text, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return img


class OverlaySink:
    """An overlay video written frame by frame (``add(rgb, instances)``), then :meth:`close`.

    ``codec`` is one of :data:`OVERLAY_CODECS`, at ``fps`` frames per second (kept as an exact rational, e.g.
    30000/1001) and ``size`` ``(width, height)`` equal to the source's. ``h264`` is H.264 (yuv420p, x264 ultrafast
    at CRF 26) in an MP4 with its index first (``movflags=faststart``) so browsers start playing before the download
    ends; H.264 4:2:0 needs even sizes, so an odd-sized source is written as ``vp9`` in a WebM instead (same size,
    plays in browsers). Where PyAV or the encoder is missing: VP9 through OpenCV, then MJPG in an ``.avi``. ``path``
    follows the codec actually used.

    The file is created with the first frame: a sink closed without frames leaves nothing on disk (``frames == 0``,
    :attr:`written` False) rather than a header-only file no player can open.

    ``plain``: also write the same frames without the overlay to ``input`` + the suffix beside it (option
    ``input_video``: what the web viewer plays under masks.json's masks, frame for frame the overlay's timeline).
    """

    def __init__(self, path: Path, codec: str, fps: float, size: tuple[int, int], plain: bool = False) -> None:
        if codec not in OVERLAY_CODECS:
            raise OptionError(f"overlay_codec must be one of {', '.join(OVERLAY_CODECS)}, got {codec!r}")
        fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 10.0
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size = (int(size[0]), int(size[1]))
        if codec == "h264" and (self.size[0] % 2 or self.size[1] % 2):
            log.info("%s: H.264 4:2:0 needs an even size, %dx%d is not; writing VP9/WebM", path, *self.size)
            codec = "vp9"
        if codec in _PYAV and not _pyav_can(codec):
            log.info("%s: %s cannot be encoded here (PyAV); using VP90 through OpenCV", path, codec)
            codec = "VP90"
        self.codec = codec
        self.path = Path(path).with_suffix(OVERLAY_CODECS[codec])
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None
        self._cv: Any = None
        self.plain: OverlaySink | None = None
        if plain:
            self.plain = OverlaySink(self.path.with_name("input" + self.path.suffix), codec, fps, size)

    @property
    def written(self) -> bool:
        return self.frames > 0

    @staticmethod
    def suffix_for(codec: str) -> str:
        return OVERLAY_CODECS.get(codec, ".mp4")

    # -- opening (with the first frame)
    def _open(self) -> None:
        if self.codec in _PYAV:
            self._open_pyav()
        else:
            self._open_cv()

    def _open_pyav(self) -> None:
        import av

        w, h = self.size
        opts = {"movflags": "+faststart"} if self.codec == "h264" else {}
        self._container = av.open(str(self.path), "w", options=opts)
        stream = self._container.add_stream(_PYAV[self.codec], rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if self.codec == "h264":
            # ultrafast at crf 26: the picture quality of veryfast at crf 23 (PSNR 37.1 vs 36.9 dB on vtest.avi) for
            # 45 % of its CPU (3.4 vs 7.6 ms per 768x576 frame), files ~1.9x larger; the overlay is encoded while
            # the engine tracks, on the same two cores (issue 22)
            stream.options = {"crf": "26", "preset": "ultrafast"}
        else:
            stream.options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        self._stream = stream

    def _open_cv(self) -> None:
        import cv2

        fps = float(self.fps)
        self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.codec), fps, self.size)
        if not self._cv.isOpened():
            log.info("%s: codec %s cannot be written here; using MJPG", self.path.name, self.codec)
            self._cv.release()
            self.path = self.path.with_suffix(".avi")
            self.codec = "MJPG"
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), fps, self.size)
            if not self._cv.isOpened():
                raise OSError(f"cannot write an overlay video at {self.path} (no usable codec)")

    # -- frames
    def add(self, rgb: np.ndarray, instances: Sequence[Mapping[str, Any]]) -> None:
        import cv2

        if self.plain is not None:
            self.plain.add(rgb, ())
        img = draw_overlay(rgb, instances) if instances else rgb
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        if self.frames == 0:
            self._open()
        if self._stream is not None:
            import av

            img = np.ascontiguousarray(img, dtype=np.uint8)
            if img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0:
                # to the stream's yuv420p by OpenCV (BT.601, limited range, as libswscale's default): ~1 ms less
                # CPU per 768x576 frame than letting the encoder convert the RGB (issue 22)
                frame = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        else:
            self._cv.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Flush and close; with no frame added nothing was created and nothing is left."""
        if self.plain is not None:
            self.plain.close()
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._stream = self._container = None
        elif self._cv is not None:
            self._cv.release()
            self._cv = None

    def abort(self) -> None:
        """Stop and remove the partial file (only one this sink created)."""
        if self.plain is not None:
            self.plain.abort()
        created = self.frames > 0
        try:
            if self._container is not None:
                self._container.close()
            if self._cv is not None:
                self._cv.release()
        except Exception:  # noqa: BLE001 - the file is being dropped anyway
            pass
        self._stream = self._container = self._cv = None
        if created:
            try:
                self.path.unlink()
            except OSError:
                pass


# ------------------------------------------------------------------------------------------------------ documents
def _video_header(result: VideoResult) -> dict[str, Any]:
    h, w = result.frame_size
    return {
        "source": result.source,
        "mode": result.mode,
        "width": w,
        "height": h,
        "fps": result.video.fps if result.video else None,
        "frame_count": result.video.frame_count if result.video else None,
        "frames_processed": result.log.frame_count if result.log else 0,
    }


def write_masks_json(result: VideoResult, path: Path) -> Path:
    """Write ``masks.json`` (see the module docstring) streaming, one frame record at a time."""
    head = {
        "video": _video_header(result),
        "query": result.query,
        "plugin": result.plugin,
        "template": result.plan.template,
        "keyframe": {k: v for k, v in result.keyframe.items() if k != "candidates"},
        "tracks": [t.to_dict() for t in result.tracks],
    }
    text = json.dumps(head, indent=1)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text[: text.rindex("}")].rstrip() + ',\n "frames": [\n')
        first = True
        for record in result.log.iter_frames() if result.log else ():
            fh.write(("" if first else ",\n") + "  " + json.dumps(record, separators=(",", ":")))
            first = False
        fh.write("\n ]\n}\n")
    return path


def write_events_json(result: VideoResult, path: Path, extra: Sequence[Mapping[str, Any]] = ()) -> Path:
    events = list(result.log.iter_events()) if result.log else []
    doc = {"source": result.source, "query": result.query, "events": events + list(extra)}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def _records_by_frame(result: VideoResult) -> Iterator[dict[str, Any]]:
    return result.log.iter_frames() if result.log else iter(())


def write_overlay_video(result: VideoResult, path: Path, codec: str = "h264", plain: bool = False) -> Path | None:
    """Draw the overlay video by re-reading the (seekable) source; returns the path written (its suffix follows
    the codec actually used), or None when there was no processed frame to draw (nothing is written then)."""
    from rscore.video.reader import ReaderOptions, open_video

    h, w = result.frame_size
    fps_src = result.video.fps if result.video else 10.0
    ropts = ReaderOptions(**{k: v for k, v in result.reader_options.items() if k in ReaderOptions.__dataclass_fields__})
    fps = ropts.target_fps or fps_src / ropts.stride
    records = _records_by_frame(result)
    pending = next(records, None)
    if pending is None:
        return None
    sink = OverlaySink(path, codec, fps, (w, h), plain=plain)
    try:
        with open_video(result.source, ropts) as reader:
            for frame in reader.frames(0, None):
                if pending is None:
                    break
                if frame.index < pending["frame"]:
                    continue
                sink.add(frame.image, pending["instances"])
                pending = next(records, None)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return sink.path if sink.written else None


# --------------------------------------------------------------------------------------------------------- writers
class _VideoWriter(Writer):
    def applies(self, scene: Scene, result: Result) -> bool:
        return isinstance(result, VideoResult) and result.log is not None


class VideoMasksWriter(_VideoWriter):
    name = "video-masks"
    description = "per-frame masks as COCO RLE with frame index, timestamp and track id (masks.json)"

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        assert isinstance(result, VideoResult)
        return {"masks": write_masks_json(result, out_dir / "masks.json")}


class VideoEventsWriter(_VideoWriter):
    name = "video-events"
    description = "reader and track events (events.json)"

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        assert isinstance(result, VideoResult)
        return {"events": write_events_json(result, out_dir / "events.json")}


class VideoOverlayWriter(_VideoWriter):
    name = "video-overlay"
    description = "the video with tracks tinted, outlined and labelled (overlay.mp4 / .avi / .webm)"

    def applies(self, scene: Scene, result: Result) -> bool:
        if not super().applies(scene, result):
            return False
        value = result.options.get("overlay", True)
        return str(value).lower() not in ("0", "false", "no", "off")

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        assert isinstance(result, VideoResult) and result.log is not None
        codec = str(result.options.get("overlay_codec") or "h264")
        plain = str(result.options.get("input_video", False)).lower() in ("1", "true", "yes", "on")
        if result.log.overlay_path is not None:  # drawn while processing (online, or offline while tracking)
            src = result.log.overlay_path
            if not src.exists() or src.stat().st_size == 0:
                return {}
            dst = out_dir / ("overlay" + src.suffix)
            shutil.copyfile(src, dst)
            out = {"overlay_video": dst}
            twin = src.with_name("input" + src.suffix)  # option input_video: the same frames without the overlay
            if plain and twin.is_file() and twin.stat().st_size:
                out["input_video"] = out_dir / twin.name
                shutil.copyfile(twin, out["input_video"])
            return out
        if result.mode == "online" or not os.path.exists(result.source):
            return {}
        written = write_overlay_video(result, out_dir / "overlay.mp4", codec, plain=plain)
        if written is None:
            return {}
        twin = written.with_name("input" + written.suffix)
        return {"overlay_video": written, **({"input_video": twin} if plain and twin.is_file() else {})}


class VideoYtvisWriter(_VideoWriter):
    name = "video-ytvis"
    description = "the tracks' masks as YouTube-VIS JSON (ytvis.json dataset, ytvis_results.json results)"

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from rscore.io.coco import write_ytvis

        assert isinstance(result, VideoResult)
        return write_ytvis(result, out_dir)


class KeyframePngWriter(_VideoWriter):
    name = "video-keyframe"
    description = "the keyframe with its masks (keyframe.png)"

    def applies(self, scene: Scene, result: Result) -> bool:
        return super().applies(scene, result) and getattr(result, "keyframe_image", None) is not None

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        import cv2

        assert isinstance(result, VideoResult) and result.keyframe_image is not None
        index = result.keyframe.get("frame")
        items: list[dict[str, Any]] = []
        for record in result.log.iter_frames() if result.log else ():
            if record["frame"] == index:
                items = record["instances"]
                break
        img = draw_overlay(result.keyframe_image, items) if items else result.keyframe_image
        path = out_dir / "keyframe.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        return {"keyframe": path}


def video_writers() -> list[Writer]:
    """The video writers, for ``rscore_writers``."""
    return [VideoMasksWriter(), VideoYtvisWriter(), VideoOverlayWriter(), VideoEventsWriter(), KeyframePngWriter()]
