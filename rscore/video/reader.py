"""Video input: files, image folders, animated GIFs and live stream URLs, frame by frame with timestamps.

Sources (:func:`open_video`):

- **files** (``.mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .ts .wmv .flv`` and animated ``.gif``) through OpenCV's
  FFmpeg backend. Timestamps are the container's presentation times (``CAP_PROP_POS_MSEC``), falling back to
  ``index / fps`` where a container has none. Files are seekable: :meth:`FrameReader.frames` reads a range and
  :meth:`FrameReader.reverse` walks backwards in chunks (memory: ``reverse_chunk`` decoded frames).
- **image folders**: every ``.png .jpg .jpeg .bmp .webp`` file in the folder in natural order (``f2`` before
  ``f10``), at ``frame_rate`` frames per second (default 1).
- **stream URLs** (``rtsp:// rtsps:// rtmp:// http:// https:// udp:// tcp:// srt://``): live, read in order only.
  A connection that fails or drops is retried with exponential backoff (``reconnect_backoff_s`` doubling up to
  ``reconnect_backoff_max_s``) for at most ``reconnect_attempts`` retries and ``reconnect_budget_s`` seconds; a
  URL that never delivers a frame raises :class:`rscore.errors.InputError` naming the URL (defaults: about 8 s for
  a refused connection, never more than 20 s). A stream lost for good after it delivered frames ends, with a
  warning. Timestamps are wall-clock seconds since the first frame (gaps while reconnecting show as jumps), and
  every frame also carries its epoch ``wall_time``. An HTTP URL that serves a finite file (a frame count is known)
  ends at its last frame like a file.

Sampling (all sources): ``stride`` keeps every n-th decoded frame; ``target_fps`` keeps the first frame of every
``1 / target_fps`` second interval of the timestamps (so it also thins variable-frame-rate input correctly); one or
the other. ``max_frames`` stops after that many kept frames, ``max_duration_s`` at that timestamp.

A **stuck** source repeats the same picture: when ``stuck_frames`` kept frames in a row differ from their
predecessor by at most ``stuck_tolerance`` grey levels (mean absolute difference of 32x32 thumbnails), the reader
records a ``stuck`` event and, by ``stuck_action``: ``reconnect`` (streams' default: reopen the URL; a stream stuck
``reconnect_attempts + 1`` times in a row raises :class:`~rscore.errors.InputError`), ``warn`` (files' default:
record it and go on), ``drop`` (stop yielding the repeats until the picture changes) or ``error``. Static scenes
encoded with skip frames also repeat exactly; raise ``stuck_frames`` for such cameras.

FFmpeg's and OpenCV's own console messages (printed from C) are silenced at the first capture unless
``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL`` are set; problems reach the caller as log records, events and
:class:`~rscore.errors.InputError`.

Frames are ``(H, W, 3)`` uint8 **RGB** arrays. Readers hold one frame at a time (plus ``reverse_chunk`` frames when
walking backwards); events and warnings are kept in bounded deques.

The module is split along its seams (names from all three are importable from here, as before):
:mod:`rscore.video.inputs` (URLs and what counts as a video input), :mod:`rscore.video.framereader` (options,
frames, sampling, stuck handling, reverse walks, decoding ahead) and :mod:`rscore.video.capture` (the OpenCV
sources); this module opens a source and is the ``video`` reader of ``rscore_readers``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import ImageTooLarge, InputError
from rscore.sdk import Reader
from rscore.types import ArraySource, Scene, VideoInfo
from rscore.video.capture import (  # noqa: F401 - re-exported: the old home of these names
    _capture,
    _cv2,
    _FileReader,
    _finite_count,
    _FolderReader,
    _fourcc,
    _quiet_native_logs,
    _StreamReader,
    _to_rgb,
)
from rscore.video.framereader import (  # noqa: F401 - re-exported
    _END,
    MAX_EVENTS,
    Frame,
    FrameReader,
    ReaderOptions,
    SourceInfo,
    _thumb,
    decode_ahead,
)
from rscore.video.inputs import (  # noqa: F401 - re-exported
    _URL,
    IMAGE_SUFFIXES,
    STREAM_SCHEMES,
    VIDEO_SUFFIXES,
    _folder_images,
    _is_animated_gif,
    _is_image_folder,
    _natural_key,
    _sniff_video,
    is_stream_url,
    is_video_input,
    normalise_url,
    redact_url,
)

log = logging.getLogger(__name__)

__all__ = [
    "STREAM_SCHEMES",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Frame",
    "SourceInfo",
    "ReaderOptions",
    "FrameReader",
    "VideoReader",
    "open_video",
    "open_video_scene",
    "decode_ahead",
    "is_stream_url",
    "normalise_url",
    "redact_url",
    "is_video_input",
]


# ---------------------------------------------------------------------------------------------------- opening
def open_video(
    source: str | os.PathLike[str],
    options: ReaderOptions | Mapping[str, Any] | None = None,
    *,
    limits: Mapping[str, Any] | None = None,
) -> FrameReader:
    """Open a video file, animated GIF, image folder or stream URL (see the module docstring).

    Frames larger than the pixel limit (:func:`rscore.io.images.max_pixels` of ``limits``, else of ``options`` when it
    is a mapping: the ``max_pixels`` option, else ``RSCORE_MAX_PIXELS``, else the still-image default) are refused
    from the container's header, before the frames are decoded (:func:`_check_frame_size`). A caller that gives only
    :class:`ReaderOptions` reopens a source that was checked when it was first opened (the overlay writer), and is
    not checked again."""
    opts = options if isinstance(options, ReaderOptions) else ReaderOptions.from_options(options)
    reader = _open_source(source, opts)
    if limits is not None or not isinstance(options, ReaderOptions):
        try:
            _check_frame_size(reader, limits if limits is not None else options)  # type: ignore[arg-type]
            if hasattr(reader, "frame_limits"):  # a stream checks its frames again when it reconnects
                reader.frame_limits = dict(limits if limits is not None else options or {})  # type: ignore[arg-type]
        except BaseException:
            reader.close()
            raise
    return reader


def _check_frame_size(reader: FrameReader, options: Mapping[str, Any] | None) -> None:
    """Refuse (ImageTooLarge: exit 2, HTTP 413) a source whose frames (width x height from its header) exceed the
    still-image pixel limit: every frame would be decoded whole, like an image (a decompression bomb per frame)."""
    from rscore.io.images import check_pixel_limit

    info = reader.info
    if normalise_url(info.uri) is None:
        check_pixel_limit(Path(info.uri), int(info.width), int(info.height), options, kind="video frame")
        return
    try:
        check_pixel_limit(None, int(info.width), int(info.height), options, kind="video frame")
    except ImageTooLarge as exc:  # a stream: name its (redacted) URL
        raise ImageTooLarge(f"{info.uri}: {exc.message}") from None


def _open_source(source: str | os.PathLike[str], opts: ReaderOptions) -> FrameReader:
    url = normalise_url(source)
    if url is not None:
        return _StreamReader(url, opts)
    path = Path(source)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be opened ({exc})", path=path) from None
    if not exists:
        raise InputError("no such file or directory", path=path)
    if is_dir:
        return _FolderReader(path, opts)
    try:
        if path.stat().st_size == 0:
            raise InputError("the file is empty (0 bytes)", path=path)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=path) from None
    return _FileReader(path, opts)


def _first_frame(reader: FrameReader) -> Frame:
    for frame in reader.frames(0, 1) if reader.seekable else iter(reader):
        return frame
    raise InputError(f"{reader.info.uri}: has no decodable frame")


def open_video_scene(source: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Scene:
    """A ``kind="video"`` :class:`~rscore.types.Scene`: its pixels are the first frame (so the scene opens cheaply
    and image tools can show it), ``scene.video`` has the rate and frame count, and ``metadata["video"]`` the
    source description that :func:`rscore.video.engine.segment_video` reopens."""
    opts = ReaderOptions.from_options(options)
    with open_video(source, options if options is not None else {}) as reader:  # a mapping: max_pixels (else default)
        first = _first_frame(reader)
        info = reader.info
        warnings = tuple(reader.warnings)
    url = normalise_url(source)
    path = None if url is not None else Path(source)
    return Scene(
        source=ArraySource(np.moveaxis(first.image, -1, 0).copy()),
        kind="video",
        band_roles=("red", "green", "blue"),
        path=path,
        reader="video",
        video=VideoInfo(fps=info.fps, frame_count=info.frame_count),
        warnings=warnings,
        metadata={
            "video": {
                "uri": url if url is not None else str(path),
                "display": info.uri,
                "kind": info.kind,
                "codec": info.codec,
                "duration_s": info.duration_s,
                "width": info.width,
                "height": info.height,
            }
        },
    )


class VideoReader(Reader):
    """The ``video`` reader (register it before the image reader so that animated GIFs open as video).

    Opens video files by content (MP4/MOV, AVI, Matroska/WebM, MPEG-PS/TS, FLV, ASF), animated GIFs, and folders
    whose files are all images (two or more). The scene holds the first frame; the video engine reads the rest.
    """

    name = "video"
    suffixes = VIDEO_SUFFIXES
    accepts_directories = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head:
            return path.is_dir() and _is_image_folder(path)
        if head.startswith((b"GIF87a", b"GIF89a")):
            return _is_animated_gif(path)
        return _sniff_video(head)

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        return open_video_scene(path, options)
