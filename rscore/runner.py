"""``run``: path (or stream URL) in, files out - what ``rscore run`` does, above the image and the video engine.

::

    query, options checked (before anything is read)   rscore.engine.request
    the output folder checked (before the computation)  rscore.io.outdir
    stream URL                 --> rscore.video.engine.run_video (online; connected to once)
    path --open_scene--> Scene (rscore.engine.scene)
        no --plugin: the plugin whose template answers (rscore.engine.pipeline.route_plugin), read with its
        reader where it has one, then on as with --plugin that name
        video scene            --> rscore.video.engine.segment_video
        anything else          --> rscore.engine.segment (the image pipeline)
    --> write_outputs (rscore.engine.write, atomically) --> files + result.json

The dispatch is the only thing here: every stage has its home below (``docs/architecture.md``). Neither engine
imports this module, so neither imports the other's dispatch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from rscore import engine
from rscore.engine.request import validate_query
from rscore.engine.scene import open_scene
from rscore.engine.pipeline import note_routed, routing, segment
from rscore.engine.write import default_out_dir, write_outputs
from rscore.options import check_known
from rscore.plugins import Registry
from rscore.types import ProgressCallback, Result

__all__ = ["run"]


def run(
    path: str | os.PathLike[str],
    query: str,
    *,
    plugin: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Open, segment and write: what ``rscore run`` does. The query is checked before anything is read.

    Stream URLs (rtsp://, http(s)://...) and video scenes go to the video engine (:mod:`rscore.video`). Without
    ``plugin``, the plugin whose template answers is used as if named (:func:`~rscore.engine.pipeline.route_plugin`;
    streams keep none), and a first plan step says so.
    """
    reg = registry or engine.default_registry()  # looked up on rscore.engine, where callers may replace it
    reg.require_plugin(plugin)
    validate_query(query)
    check_known(options or {}, reg)  # before anything is read: a misspelt option must not cost a long read
    from rscore.io.outdir import check_out_dir
    from rscore.video.reader import normalise_url

    url = normalise_url(path)  # also repairs 'rtsp:/host' (what a Path makes of rtsp://host)
    check_out_dir(out_dir or default_out_dir(url or path))  # before the computation, not after it
    if url is not None:
        from rscore.video.engine import run_video

        return run_video(url, query, plugin=plugin, out_dir=out_dir or default_out_dir(url), options=options,
                         registry=reg, progress=progress)
    t0 = time.perf_counter()
    scene = open_scene(path, plugin=plugin, options=options, registry=reg)
    routed = None
    if plugin is None:
        routed, other_kind = routing(scene, query, options=options, registry=reg)
        if routed is not None:
            scene = _read_as(routed, scene, path, options, reg)
        elif other_kind is not None:  # a GeoTIFF read as a picture, asked an earth question: read it as earth does
            again = _read_as(other_kind, scene, path, options, reg)
            if again is not scene and routing(again, query, options=options, registry=reg)[0] == other_kind:
                scene, routed = again, other_kind
        plugin = routed
    read_s = time.perf_counter() - t0
    if scene.kind == "video":
        from rscore.video.engine import segment_video

        result = segment_video(scene, query, plugin=plugin, options=options, registry=reg, progress=progress)
    else:
        result = segment(scene, query, plugin=plugin, options=options, registry=reg, progress=progress)
    if routed is not None:
        result = note_routed(result, routed, scene, reg)
    result = result.replace(timings={"read_s": round(read_s, 4), **result.timings})
    try:
        written = write_outputs(scene, result, out_dir or default_out_dir(path), registry=reg)
        return written.replace(tile_summaries=())  # for the writers only: not held by the caller's result
    finally:
        log_ = getattr(result, "log", None)  # video results spool per-frame masks to disk
        if log_ is not None:
            log_.close()


def _read_as(plugin: str, scene: Any, path: Any, options: Mapping[str, Any] | None, reg: Registry) -> Any:
    """``scene``, or ``path`` opened again as ``--plugin plugin`` opens it when that plugin has readers and none of
    them read it (its readers come first then). Should that fail, the scene already read is kept."""
    own = {r.name for p, r in reg.readers if p == plugin}
    if not own or scene.reader in own:
        return scene
    from rscore.errors import RscoreError

    try:
        return open_scene(path, plugin=plugin, options=options, registry=reg)
    except RscoreError:
        return scene
