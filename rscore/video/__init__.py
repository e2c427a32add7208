"""Video: CCTV / stream ingest, text-guided keyframe segmentation with propagation, tracks and per-frame outputs.

::

    from rscore.video import segment_video, run_video
    result = segment_video("site.mp4", "workers in hi-vis vests", plugin="safety")   # a VideoResult
    run_video("rtsp://cam/stream", "workers in hi-vis vests", plugin="safety", out_dir="out",
              options={"max_duration_s": 60})

- :mod:`rscore.video.reader` - files, image folders, GIFs, stream URLs (reconnect, stuck detection, sampling);
  :class:`VideoReader` is the ``rscore_readers`` reader.
- :mod:`rscore.video.engine` - :func:`segment_video` / :func:`run_video` (offline and online modes; the plugin's
  ``rscore_preprocess`` runs once per processed frame, ``rscore_postprocess`` once per frame's result).
- :mod:`rscore.video.propagate` - optical-flow and SAM 2 video propagators.
- :mod:`rscore.video.writers` - masks.json (per-frame COCO RLE), overlay video, events.json, keyframe.png.
- :mod:`rscore.video.mjpeg` - a loopback MJPEG server for tests, benchmarks and demos.
- :mod:`rscore.video.rtsp` - a loopback RTSP server (GStreamer's gst-rtsp-server in a child process) for tests
  and demos.

Imports are lazy: ``import rscore.video`` loads nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "segment_video",
    "run_video",
    "VideoOptions",
    "VideoResult",
    "TrackSummary",
    "FrameLog",
    "VideoReader",
    "ReaderOptions",
    "Frame",
    "open_video",
    "open_video_scene",
    "is_stream_url",
    "is_video_input",
    "video_readers",
    "video_writers",
]

_WHERE = {
    "segment_video": "engine",
    "run_video": "engine",
    "VideoOptions": "options",
    "VideoResult": "results",
    "TrackSummary": "results",
    "FrameLog": "results",
    "VideoReader": "reader",
    "ReaderOptions": "reader",
    "Frame": "reader",
    "open_video": "reader",
    "open_video_scene": "reader",
    "is_stream_url": "reader",
    "is_video_input": "reader",
    "video_writers": "writers",
}


def video_readers() -> list[Any]:
    """The video reader, for ``rscore_readers`` (list it before the image reader: animated GIFs are video)."""
    from rscore.video.reader import VideoReader

    return [VideoReader()]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"rscore.video.{_WHERE[name]}"), name)
    raise AttributeError(name)
