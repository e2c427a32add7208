"""Write: the writers of core and the plugin into a temporary folder, moved into place when all succeeded.

Nothing is written where rscore did not write before: an existing folder is replaced only when its marker
(:data:`rscore.io.outdir.MARKER`) lists every file in it; the folder is locked while written.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from rscore.errors import OptionError
from rscore.plugins import Registry, default_registry
from rscore.types import Result, Scene

__all__ = ["write_outputs", "default_out_dir"]


def default_out_dir(path: str | os.PathLike[str]) -> Path:
    return Path("rscore-out") / Path(path).stem


def write_outputs(
    scene: Scene,
    result: Result,
    out_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
) -> Result:
    """Run the writers into a temporary folder, then move it into place: all outputs or none.

    An existing ``out_dir`` is replaced only if it is empty or an rscore output folder whose marker
    (:data:`rscore.io.outdir.MARKER`) lists every file in it; otherwise :class:`OptionError` and nothing is touched.
    The folder is locked while it is written (another process: "in use by PID N"), and staging folders of dead
    processes beside it are swept first. Returns the result with ``outputs`` = ``{name: path relative to out_dir}``.
    """
    from rscore.io.outdir import check_out_dir, hidden_name, make_temp_dir, out_dir_lock, sweep_stale, write_marker

    reg = registry or default_registry()
    out_dir = Path(os.path.abspath(out_dir))  # "." and "x/.." have a real name and parent
    check_out_dir(out_dir)
    created: list[Path] = []
    for parent in reversed(out_dir.absolute().parents):
        if not parent.exists():
            created.append(parent)
    t0 = time.perf_counter()
    try:
        with out_dir_lock(out_dir):
            hidden = hidden_name(out_dir)
            sweep_stale(out_dir.parent, re.escape(f"{hidden}.") + r"(?:tmp|old)-")
            try:
                tmp = make_temp_dir(f"{hidden}.tmp-", out_dir.parent)
            except OSError as exc:
                raise OptionError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
            try:
                writers = [w for w in reg.writers_for(result.plugin) if w.applies(scene, result)]
                writers.sort(key=lambda w: bool(getattr(w, "final", False)))
                outputs: dict[str, str] = {}
                for writer in writers:
                    if getattr(writer, "final", False):
                        timings = {**result.timings, "write_s": round(time.perf_counter() - t0, 4)}
                        result = result.replace(outputs=dict(outputs), timings=timings)
                    written = writer.write(scene, result, tmp)
                    outputs.update({k: os.path.relpath(v, tmp) for k, v in written.items()})
                write_marker(tmp)
                check_out_dir(out_dir)  # again: files may have appeared while we computed
                if out_dir.exists():
                    old = make_temp_dir(f"{hidden}.old-", out_dir.parent)
                    try:
                        os.replace(out_dir, old / "x")
                        os.replace(tmp, out_dir)
                    finally:
                        shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, out_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became out_dir
    except BaseException:
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                pass
        raise
    return result.replace(outputs=outputs)
