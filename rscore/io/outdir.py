"""Output folders and temporary folders that rscore owns, and only those.

- :data:`MARKER` (``.rscore-output.json``): written into every output folder by
  :func:`rscore.engine.write_outputs`, with a format version and the list of every file rscore put there. An existing
  folder is replaced only when it is empty or carries a marker that lists every file in it (:func:`check_out_dir`);
  anything else is refused (exit 2), so a user's own files are never deleted.
- :func:`out_dir_lock`: an exclusive lock on an output folder (``fcntl.flock`` on ``.<name>.lock`` beside it, holding
  the owner's PID) so that two processes never write into one folder: the second is told "in use by PID N". A file
  of that name that is not such a lock (a user's file, a symbolic link, a hard link) is refused, never truncated.
- :func:`make_temp_dir` / :func:`sweep_stale`: staging and scratch folders named ``<prefix><pid>-<random>`` with a
  marker file inside; folders of processes that no longer exist (``kill -9``, power loss) are removed on the next
  start, and only when both the name and the marker say rscore made them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rscore.errors import OptionError

__all__ = [
    "MARKER",
    "MARKER_FORMAT",
    "TEMP_MARKER",
    "check_out_dir",
    "write_marker",
    "out_dir_lock",
    "make_temp_dir",
    "sweep_stale",
    "pid_alive",
    "hidden_name",
]

MARKER = ".rscore-output.json"
MARKER_FORMAT = 1
TEMP_MARKER = ".rscore-temp"

try:  # POSIX; elsewhere folders are not locked (the staging + swap still keeps outputs whole)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------- the marker
def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """Relative paths of the regular files under ``folder`` and of anything else (links, FIFOs, sockets...)."""
    files: list[str] = []
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                odd.append((base / name).relative_to(folder).as_posix())
        for name in filenames:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            (files if p.is_file() and not p.is_symlink() else odd).append(rel)
    return sorted(files), sorted(odd)


def write_marker(folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Record every file now in ``folder`` as rscore's (called on the staging folder, just before it is moved)."""
    from rscore import __version__

    files, _ = _walk(folder)
    doc = {
        "format": MARKER_FORMAT, "rscore": __version__, "pid": os.getpid(),
        "files": [f for f in files if f not in (MARKER, TEMP_MARKER)], **(extra or {}),
    }
    (folder / MARKER).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    with contextlib.suppress(FileNotFoundError):
        (folder / TEMP_MARKER).unlink()  # the output marker names the PID from here on (see sweep_stale)
    with contextlib.suppress(OSError):  # the staging folder was made 0700 (mkdtemp); the output is an ordinary folder
        os.chmod(folder, 0o777 & ~_umask())


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def check_out_dir(out_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`OptionError` unless ``out_dir`` may be (re)written: absent, empty, or an rscore output folder
    whose marker lists every file in it. Run it before the computation, and again just before replacing."""
    out = Path(out_dir)
    try:
        os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:  # name too long, a parent that is a file, permission denied...
        raise OptionError(f"output folder {out} cannot be used ({exc.strerror or exc}); choose another --out") from None
    if out.is_symlink():  # replacing the folder would delete the user's link (and leave its target as it was)
        if not out.exists():
            raise OptionError(f"output folder {out} is a broken symbolic link; choose another --out")
        raise OptionError(f"output folder {out} is a symbolic link (to {os.path.realpath(out)}); give the folder it "
                          "points to as --out")
    if not out.is_dir():
        raise OptionError(f"output folder {out} exists and is not a folder; choose another --out")
    try:
        if not any(out.iterdir()):
            return
    except OSError as exc:
        raise OptionError(f"output folder {out} cannot be read ({exc.strerror or exc}); choose another --out") from None
    refuse = f"output folder {out} exists and is not an rscore output folder"
    hint = "choose another --out, or empty or remove it yourself"
    try:
        doc = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"{refuse} (no {MARKER}); {hint}") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise OptionError(f"{refuse} ({MARKER} is unreadable); {hint}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= MARKER_FORMAT:
        raise OptionError(f"{refuse} ({MARKER} has an unknown format {fmt!r}); {hint}")
    known = set(doc.get("files") or []) | {MARKER}
    files, odd = _walk(out)
    foreign = [f for f in files if f not in known] + odd
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OptionError(f"output folder {out} holds files rscore did not write ('{foreign[0]}'{more}); {hint}")


# --------------------------------------------------------------------------------------------------------- lock
_held: dict[str, tuple[int, int]] = {}  # lock path -> (thread id, depth): re-entrant within one thread
_held_guard = threading.Lock()


def hidden_name(out_dir: Path) -> str:
    """``.<name>`` of the folder, shortened so that ``.<name>.tmp-<pid>-<random>`` fits a file name (255 bytes)."""
    return "." + Path(out_dir).name[:100]


def _lock_path(out_dir: Path) -> Path:
    out = Path(os.path.abspath(out_dir))
    return out.parent / f"{hidden_name(out)}.lock"


@contextlib.contextmanager
def out_dir_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the output folder's lock (its parent is created if needed). Re-entrant within a thread; another
    process or thread holding it -> :class:`OptionError` "in use by PID N"."""
    path = _lock_path(Path(out_dir))
    key = str(path)
    me = threading.get_ident()
    with _held_guard:
        holder = _held.get(key)
        if holder is not None:
            if holder[0] != me:
                raise OptionError(f"output folder {out_dir} is in use by PID {os.getpid()} (this process); "
                                  "wait for it or choose another --out")
            _held[key] = (me, holder[1] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                tid, depth = _held[key]
                _held[key] = (tid, depth - 1)
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    created = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    try:
        fd = _acquire(path, out_dir)
    except BaseException:
        _remove_empty(created)
        raise
    with _held_guard:
        _held[key] = (me, 1)
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        _remove_empty(created)  # folders made for the lock, unless the run put its output there


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


_LOCK_TEXT = re.compile(rb"\d{1,20}\n?")


def _not_a_lock(fd: int, path: Path) -> str:
    """Why the open file ``fd`` is not an rscore lock file ('' when it is one: empty, or a PID and a newline)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_nlink > 1:
        return "has other hard links"
    if st.st_size and (st.st_size > 21 or not _LOCK_TEXT.fullmatch(os.pread(fd, 32, 0))):
        return "holds something else than the PID rscore writes there"
    return ""


def _acquire(path: Path, out_dir: Any) -> int:
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | nofollow | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or path.is_symlink():  # O_NOFOLLOW: the name is a link, maybe to a user file
                raise OptionError(f"cannot lock output folder {out_dir}: {path} is a symbolic link, not rscore's lock "
                                  "file; remove it or choose another --out") from None
            raise OptionError(f"cannot lock output folder {out_dir}: {exc.strerror or exc}") from None
        why = _not_a_lock(fd, path)
        if why:  # a user's file of that name: never truncated, never deleted
            os.close(fd)
            raise OptionError(f"cannot lock output folder {out_dir}: {path} {why}, so it is not rscore's lock file; "
                              "rename it or choose another --out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise OptionError(
                f"output folder {out_dir} is in use by PID {pid} (another rscore run writing there); "
                "wait for it or choose another --out"
            ) from None
        # the holder before us may have unlinked the file between our open and our lock: lock the file on disk
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise OptionError(f"cannot lock output folder {out_dir}: the lock file keeps changing")


# ------------------------------------------------------------------------------------------------ temp folders
def make_temp_dir(prefix: str, dir: str | os.PathLike[str] | None = None) -> Path:
    """A new folder ``<dir>/<prefix><pid>-<random>`` with a :data:`TEMP_MARKER` naming this process."""
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=dir))
    (folder / TEMP_MARKER).write_text(json.dumps({"pid": os.getpid(), "format": MARKER_FORMAT}) + "\n")
    return folder


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    except OSError:
        return True
    return True


def sweep_stale(dir: str | os.PathLike[str], prefix_pattern: str) -> list[Path]:
    """Remove folders in ``dir`` whose name is ``<prefix><pid>-...`` (``prefix_pattern``: a regular expression) of a
    process that no longer exists, and whose :data:`TEMP_MARKER` names the same PID. Returns what was removed;
    errors (permissions, races with another sweeper) are ignored."""
    removed: list[Path] = []
    pattern = re.compile(rf"(?:{prefix_pattern})(\d+)-[A-Za-z0-9_]+")
    try:
        entries = list(os.scandir(dir))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        doc: Any = None
        for marker in (TEMP_MARKER, MARKER):  # a staging folder carries the output marker once it is complete
            try:
                doc = json.loads((Path(entry.path) / marker).read_text())
                break
            except (OSError, ValueError):
                continue
        if not isinstance(doc, dict) or doc.get("pid") != pid:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
    return removed
