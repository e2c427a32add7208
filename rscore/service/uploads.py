"""Uploaded inputs onto the service's disk: one file, a DICOM series as a ``.zip``, or several DICOM files.

Everything lands in the request's staging folder (``<output root>/.staging/<result id>/``, removed by the caller when
the request ends, whatever happens); nothing is ever created from a client's path:

- **one file** (:func:`copy_upload`): copied under a safe base name (:func:`~rscore.service.security.
  safe_upload_name`), the upload limit enforced on the bytes actually there;
- **a zip archive** (sniffed by its signature, not its name, and claimed by no installed reader - a plugin may read
  a zip-based format itself; :func:`extract_dicom_zip`): the members of one DICOM
  series, written *flat* into one folder as ``<index>_<safe base name>`` - the client's folders are never
  recreated. The whole central directory is checked before a byte is written, and the archive is refused (4xx, the
  member named) when a member's name is absolute, has a drive letter, a ``..`` segment or a NUL (zip-slip), is a
  symbolic link or special file, is encrypted, is stored with a method this Python cannot read, or is named twice;
  when it has more than :data:`MAX_MEMBERS` members, or declares or *actually* expands to more than the extraction
  limit (``RSCORE_MAX_EXTRACT_MB``; counted while decompressing, so a lying header does not help a zip bomb); and,
  while extracting, when a member is not a DICOM Part 10 file (no ``DICM`` at byte 128) or fails its CRC.
  Directory entries, ``__MACOSX/`` resource forks and hidden files (``.DS_Store``) are skipped, as the DICOM folder
  reader skips hidden files;
- **several files** (:func:`stage_series_files`): the same rules per file (DICOM, safe flat names).

The folder is then read by the plugin whose reader claims it (the surgical plugin's DICOM reader groups the files by
SeriesInstanceUID: one series gives one volume; several series are refused naming them unless the ``series`` option
picks one).
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from rscore.errors import InputError
from rscore.io.deflated import inflated_size
from rscore.service.security import UploadTooLarge, safe_upload_name
from rscore.service.settings import MIB

__all__ = [
    "ZIP_SIGNATURES",
    "MAX_MEMBERS",
    "UnsafeArchive",
    "copy_upload",
    "is_zip",
    "extract_dicom_zip",
    "stage_series_files",
    "check_deflated_dicom",
]

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record
MAX_MEMBERS = 10_000
DICM_OFFSET = 128
_CHUNK = MIB


class UnsafeArchive(InputError):
    """An uploaded archive that would write outside its folder, or holds what a DICOM series may not (HTTP 422)."""


def _shown(name: str) -> str:
    """A client's name as it may appear in a one-line answer: printable, at most 120 characters."""
    text = "".join(c if c.isprintable() else "?" for c in name)
    return text if len(text) <= 120 else text[:117] + "..."


def copy_upload(src: BinaryIO, dest: Path, limit: int, client_name: str) -> int:
    """Copy a spooled upload to ``dest`` (created, never overwritten), enforcing ``limit`` bytes on what is actually
    there; the number of bytes copied."""
    src.seek(0)
    copied = 0
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise UploadTooLarge(f"{client_name}: over the upload limit of {limit / MIB:g} MiB")
            out.write(chunk)
    return copied


def is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in ZIP_SIGNATURES


def _unsafe_name(name: str) -> str:
    """Why a member name may not be extracted ('' when it may); backslashes count as separators."""
    if not name:
        return "has an empty name"
    if "\x00" in name:
        return "has a NUL character in its name"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path (it would be written outside the upload's folder)"
    if ".." in parts:
        return "has a '..' path segment (it would be written outside the upload's folder)"
    return ""


def _ignored(name: str, info: zipfile.ZipInfo) -> bool:
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def _kind(info: zipfile.ZipInfo) -> str:
    """'' for a regular file, else what the member is (Unix mode bits in the high word of external_attr)."""
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) in (0, stat.S_IFREG):  # no file type recorded (most writers), or a regular file
        return ""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _check_dicom_head(head: bytes, shown: str) -> None:
    if head[DICM_OFFSET : DICM_OFFSET + 4] != b"DICM":
        raise UnsafeArchive(
            f"{shown} is not a DICOM file (no 'DICM' marker at byte 128): upload only the files of one DICOM series"
        )


def _declared_members(archive: Path) -> int | None:
    """The member count the archive's end record declares (zip64 too), read before its central directory is parsed;
    ``None`` when it cannot be read here (zipfile then says what is wrong)."""
    try:
        with open(archive, "rb") as fh:
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # stable since Python 2; the parser's own
        return int(end[zipfile._ECD_ENTRIES_TOTAL]) if end else None  # type: ignore[attr-defined]
    except Exception:  # a private helper: if it changes, the count after parsing still applies
        return None


def check_deflated_dicom(path: Path, shown: str, max_bytes: int) -> int:
    """The bytes ``path`` inflates to when it is a DICOM file in the Deflated Explicit VR Little Endian transfer
    syntax (0 for any other file), counted while inflating in bounded pieces (:func:`rscore.io.deflated.inflated_size`):
    pydicom inflates such a file whole, in memory, before anything can look at its size (a 750 KB upload took 1.6 GB),
    so one that expands past ``max_bytes`` is refused (413) before a reader opens it."""
    with open(path, "rb") as fp:
        total = inflated_size(fp, max_bytes)
    if total > max_bytes:
        raise UploadTooLarge(
            f"{shown}: a deflated DICOM that expands to more than the extraction limit of "
            f"{max_bytes / MIB:g} MiB (RSCORE_MAX_EXTRACT_MB)"
        )
    return total


def extract_dicom_zip(archive: Path, folder: Path, *, shown: str, max_bytes: int, max_members: int = MAX_MEMBERS) -> Path:
    """Extract the DICOM series in ``archive`` flat into the new ``folder`` (see the module docstring); ``folder``.

    ``shown``: the archive's name in messages. Raises :class:`UnsafeArchive` / :class:`InputError` (422) or
    :class:`UploadTooLarge` (413) naming the member; what was written so far stays in ``dest`` for the caller to
    remove with the staging folder.
    """
    declared_members = _declared_members(archive)
    if declared_members is not None and declared_members > max_members:  # before zipfile builds an entry per member
        raise UploadTooLarge(f"{shown}: {declared_members} members, more than the {max_members} a series upload may hold")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{shown}: not a readable zip archive ({type(exc).__name__}: {str(exc)[:120]})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UploadTooLarge(f"{shown}: {len(infos)} members, more than the {max_members} a series upload may hold")
        chosen: list[tuple[zipfile.ZipInfo, str]] = []
        seen: set[str] = set()
        declared = 0
        for info in infos:
            name = info.filename
            member = f"{shown}: member '{_shown(name)}'"
            why = _unsafe_name(name)
            if why:
                raise UnsafeArchive(f"{member} {why}")
            if info.is_dir():
                continue
            kind = _kind(info)
            if kind:
                raise UnsafeArchive(f"{member} is {kind}: a series upload holds DICOM files only")
            if _ignored(name, info):
                continue
            if info.flag_bits & 0x1:
                raise UnsafeArchive(f"{member} is encrypted: upload an archive without a password")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                raise UnsafeArchive(f"{member} uses compression method {info.compress_type}, which cannot be read here")
            key = name.replace("\\", "/").lower()
            if key in seen:
                raise UnsafeArchive(f"{member} is in the archive twice")
            seen.add(key)
            declared += info.file_size
            if declared > max_bytes:
                raise UploadTooLarge(
                    f"{member}: the archive expands to more than the extraction limit of {max_bytes / MIB:g} MiB "
                    "(RSCORE_MAX_EXTRACT_MB)"
                )
            chosen.append((info, name))
        if not chosen:
            raise InputError(f"{shown}: the zip archive holds no files (a DICOM series upload needs its .dcm files)")
        folder.mkdir(parents=True)
        written = 0
        width = len(str(len(chosen)))
        for index, (info, name) in enumerate(chosen):
            member = f"{shown}: member '{_shown(name)}'"
            target = folder / f"{index:0{width}d}_{safe_upload_name(name)}"
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    head = src.read(DICM_OFFSET + 4)
                    _check_dicom_head(head, member)
                    out.write(head)
                    written += len(head)
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:  # counted as it expands: a header that lies about sizes gains nothing
                            raise UploadTooLarge(
                                f"{member}: the archive expands to more than the extraction limit of "
                                f"{max_bytes / MIB:g} MiB (RSCORE_MAX_EXTRACT_MB)"
                            )
                        out.write(chunk)
                written += check_deflated_dicom(target, member, max_bytes - written)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
                # CRC mismatch, a truncated member, an unsupported feature
                raise InputError(f"{member} cannot be extracted ({type(exc).__name__}: {str(exc)[:120]})") from None
    return folder


def stage_series_files(files: Sequence[Any], folder: Path, *, limit: int, max_extract: int) -> Path:
    """Several uploaded files of one DICOM series (``UploadFile``-like: ``filename``, ``file``) into the new
    ``folder`` under flat safe names; each must be DICOM, all together at most ``limit`` bytes (and, inflated when
    deflated, at most ``max_extract`` bytes: :func:`check_deflated_dicom`); ``folder``."""
    folder.mkdir(parents=True)
    width = len(str(len(files)))
    total = 0
    inflated = 0
    for index, upload in enumerate(files):
        client = _shown(upload.filename or f"file #{index + 1}")
        target = folder / f"{index:0{width}d}_{safe_upload_name(upload.filename)}"
        upload.file.seek(0)
        _check_dicom_head(upload.file.read(DICM_OFFSET + 4), f"'{client}'")
        try:
            total += copy_upload(upload.file, target, limit - total, client)
        except UploadTooLarge:
            raise UploadTooLarge(
                f"'{client}': the {len(files)} files are together over the upload limit of {limit / MIB:g} MiB"
            ) from None
        inflated += check_deflated_dicom(target, f"'{client}'", max_extract - inflated)
    return folder
