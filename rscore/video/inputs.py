"""What is a video input: stream URLs (parsed, repaired, redacted), video files by content, animated GIFs and
folders of images. Part of the video reader (:mod:`rscore.video.reader`, which re-exports every name here)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/(?P<slash>/?)(?P<rest>.*)$", re.S)


# ------------------------------------------------------------------------------------------------------- URLs
def normalise_url(value: str | os.PathLike[str]) -> str | None:
    """The stream URL ``value`` names, or ``None`` when it is not one.

    ``rtsp:/host/x`` (what :class:`pathlib.Path` makes of ``rtsp://host/x``) is repaired to ``rtsp://host/x``.
    """
    text = os.fspath(value) if not isinstance(value, str) else value
    m = _URL.match(text.strip())
    if not m or m["scheme"].lower() not in STREAM_SCHEMES or not m["rest"]:
        return None
    return f"{m['scheme'].lower()}://{m['rest']}"


def is_stream_url(value: str | os.PathLike[str]) -> bool:
    """``True`` for ``rtsp://``, ``http(s)://`` and the other stream URL schemes of :data:`STREAM_SCHEMES`."""
    return normalise_url(value) is not None


def redact_url(url: str) -> str:
    """``rtsp://user:secret@cam/x`` -> ``rtsp://***@cam/x``: URLs in messages and outputs carry no credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, tail = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{tail}"


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _folder_images(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )


def _is_image_folder(path: Path) -> bool:
    """A folder whose visible files are all images (at least two): frames, not a DICOM series or a raster stack."""
    try:
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return False
    return len(files) >= 2 and all(p.suffix.lower() in IMAGE_SUFFIXES for p in files)


def _sniff_video(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp"  # MP4 / MOV / M4V
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM (EBML)
        or head[:4] == b"\x00\x00\x01\xba"  # MPEG program stream
        or (len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47)  # MPEG transport stream
        or head[:3] == b"FLV"
        or head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # ASF / WMV
    )


def _is_animated_gif(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False))
    except Exception:  # not a readable GIF: the image reader will say so
        return False


def is_video_input(value: str | os.PathLike[str]) -> bool:
    """``True`` for a stream URL, a video file (by content), an animated GIF, or a folder of images."""
    if is_stream_url(value):
        return True
    path = Path(value)
    try:
        if path.is_dir():
            return _is_image_folder(path)
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _is_animated_gif(path)
    return _sniff_video(head)
