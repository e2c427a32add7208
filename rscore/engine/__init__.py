"""The engine: one ``segment(scene, query)`` contract over pluggable reasoners and segmenters.

::

    open_scene(path)  --reader (plugin)------------------------------> Scene
    segment(scene, q) --preprocess hooks--> reasoner.plan(...) -------> Plan
                      --analytic: template program per tile, stitched  \\
                      --targets: segmenter (classical | sam2 | ...)    --> instances, union mask
                      --VLM on a large scene: per tile (with the whole scene's context), merged across tile
                        borders (rscore.engine.decoupled)
                      --postprocess hooks ----------------------------> Result
    write_outputs(scene, result, out_dir) --writers (core + plugin), atomically--> files + result.json
    run(path, q, ...) = all of the above

Strategies are chosen by options: ``reasoner`` (``analytic`` default; others come through the backends hook),
``segmenter`` (``auto`` = the best available, ``classical`` always available).
"""

from __future__ import annotations

import contextvars
import dataclasses
import errno
import functools
import logging
import os
import platform
import re
import shutil
import stat
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rscore.engine import decoupled
from rscore.engine.analytic import run_program
from rscore.errors import BackendUnavailable, InputError, OptionError, QueryError, RscoreError
from rscore.options import check_known
from rscore.plugins import CORE, Registry, get_registry
from rscore.tiling import TiledArray, in_memory_pixel_limit
from rscore.types import Instance, Plan, ProgressCallback, Request, Result, Scene, Step

log = logging.getLogger(__name__)

__all__ = [
    "open_scene", "segment", "finish_result", "write_outputs", "run", "validate_query", "default_registry",
    "current_registry", "DEFAULTS",
]  # fmt: skip

MAX_QUERY_CHARS = 2000
DEFAULTS: Mapping[str, Any] = {
    "reasoner": "analytic",
    "segmenter": "auto",
    "tile_size": 1024,
    "min_area_px": 1,
    "max_instances": 1000,
    # the decoupled path on large scenes (rscore.engine.decoupled.TilingOptions)
    **decoupled.DEFAULTS,
}
AUTO_SEGMENTERS = ("sam2", "sam2-hf", "classical")
MAX_INSTANCE_MASK_BYTES = 256 << 20  # per-instance masks kept for the best instances within this budget


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, built once per process."""
    return get_registry()


_REQUEST_REGISTRY: contextvars.ContextVar[Registry | None] = contextvars.ContextVar("rscore_registry", default=None)


def current_registry() -> Registry:
    """The registry of the request this thread is answering (``segment(..., registry=...)``), else the default one:
    what reasoners that compose operators (the constraint planner, the agent) look operators and backends up in."""
    return _REQUEST_REGISTRY.get() or default_registry()


def validate_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty: say what to segment, e.g. \"landslide-prone areas\"")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}")
    if "\x00" in query:
        raise QueryError("the query contains a NUL character")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the query is not valid text (it contains unpaired surrogate characters)") from None
    return " ".join(query.split())


def _check_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert the core options; anything else belongs to plugins and passes through."""
    for name, low in (("tile_size", 16), ("min_area_px", 0), ("max_instances", 1)):
        value = opts[name]
        try:
            number = int(value)
            if number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise OptionError(f"option {name} must be a whole number, got {value!r}") from None
        if number < low:
            raise OptionError(f"option {name} must be at least {low}, got {number}")
        opts[name] = number
    for name in ("reasoner", "segmenter"):
        if not isinstance(opts[name], str) or not opts[name]:
            raise OptionError(f"option {name} must be a backend name, got {opts[name]!r}")
    return decoupled.normalise_options(opts)  # reason_tiles, reason_tile, reason_overlap, ...


# ------------------------------------------------------------------------------------------------------- reading
def open_scene(
    path: str | os.PathLike[str],
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> Scene:
    """Open an input with the best reader: the plugin's own first, content sniffing before suffixes."""
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    options = dict(options or {})
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:  # name too long, undecodable name, ...
        raise InputError(f"cannot be opened ({getattr(exc, 'strerror', None) or exc})", path=path) from None
    if not exists:
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError("is a symbolic link loop", path=path) from None
            raise InputError("is a broken symbolic link (its target does not exist)", path=path)
        raise InputError("no such file or directory", path=path)
    readers = reg.readers_for(plugin)
    if is_dir:
        candidates = [r for r in readers if r.accepts_directories and r.sniff(path, b"")]
        if not candidates:
            raise InputError("is a directory; no installed reader opens folders like this one (give a file)", path=path)
    else:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
                raise InputError("is not a regular file (a FIFO, device or socket); give a file", path=path)
            size = info.st_size
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise InputError(f"cannot be read ({exc.strerror or exc})", path=path) from None
        if size == 0:
            raise InputError("the file is empty (0 bytes)", path=path)
        sniffed = [r for r in readers if r.sniff(path, head)]
        by_suffix = [r for r in readers if path.suffix.lower() in r.suffixes and r not in sniffed]
        candidates = sniffed or by_suffix
        if not candidates:
            known = sorted({s for r in readers for s in r.suffixes})
            raise InputError(
                f"unsupported input: no reader recognises its content (readers handle {', '.join(known)})", path=path
            )
        if not sniffed:
            # claimed by suffix only, yet the content matches no known format: it is not what its name says
            raise InputError(
                f"does not look like a {path.suffix or 'supported'} file (its content matches no known format)",
                path=path,
            )
    reader = candidates[0]
    log.debug("reading %s with %s", path, reader.name)
    try:
        scene = reader.open(path, options)
    except RscoreError:
        raise
    except MemoryError:
        raise InputError("too large to read into memory", path=path) from None
    except Exception as exc:  # a reader's unexpected failure on a bad file is still the file's problem
        log.debug("reader %s failed", reader.name, exc_info=True)
        raise InputError(f"could not be read by the {reader.name} reader ({type(exc).__name__}: {exc})", path=path) from None
    if scene.height <= 0 or scene.width <= 0:
        raise InputError(f"has no pixels ({scene.width}x{scene.height})", path=path)
    if scene.kind in ("image", "raster"):  # a reader that reads lazily is checked here, before any tile work
        from rscore.io.images import check_pixel_limit

        check_pixel_limit(path, scene.width, scene.height, options, kind=scene.kind)
    return scene


# ---------------------------------------------------------------------------------------------------- segmenting
def _backend(reg: Registry, kind: str, name: str, options: Mapping[str, Any]) -> Any:
    spec = reg.backend(kind, name)
    missing = spec.missing_modules()
    if missing:
        raise BackendUnavailable(
            f"{kind} '{name}' needs Python package(s) {', '.join(missing)}: install them (see README, 'Backends')"
        )
    return spec.factory(options)


def _segmenter(reg: Registry, name: str, options: Mapping[str, Any]) -> tuple[str, Any]:
    if name != "auto":
        return name, _backend(reg, "segmenter", name, options)
    reasons = []
    for candidate in AUTO_SEGMENTERS:
        if ("segmenter", candidate) not in reg.backends:
            continue
        try:
            return candidate, _backend(reg, "segmenter", candidate, options)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            log.info("segmenter %s unavailable: %s", candidate, exc)
    raise BackendUnavailable("no segmenter is available: " + "; ".join(reasons))


def _chain(reg: Registry, hook: str, plugin: str | None, value: Any, **kwargs: Any) -> Any:
    for fn in reg.hookimpls_for(hook, plugin):
        out = fn(**{("scene" if hook == "rscore_preprocess" else "result"): value}, **kwargs)
        if out is not None:
            value = out
    return value


def segment(
    scene: Scene,
    query: str,
    *,
    plugin: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Answer ``query`` on ``scene``: masks, instances, scores and the plan, or ``absent`` with the reason."""
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    query = validate_query(query)
    check_known(options or {}, reg)
    _REQUEST_REGISTRY.set(reg)  # for current_registry(); the next request in this thread sets its own
    opts = _check_options({**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}})
    if opts["segmenter"] != "auto":
        reg.backend("segmenter", opts["segmenter"])  # an unknown name is an error even where no segmenter runs
    if "strict" in opts:
        from rscore.options import parse_bool

        opts["strict"] = parse_bool(opts["strict"], "strict")
    request = Request(query=query, plugin=plugin, options=opts)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    scene = _chain(reg, "rscore_preprocess", plugin, scene, request=request)
    timings["preprocess_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    templates, chosen = reg.templates_for_scene(plugin, scene)
    reasoner = _backend(reg, "reasoner", opts["reasoner"], opts)
    tiled: decoupled.TiledRun | None = None
    if decoupled.should_tile(scene, reasoner, request):  # a VLM on a scene larger than its picture: tile by tile
        tiled = decoupled.segment_tiled(
            scene,
            request,
            templates,
            reasoner,
            segmenter=lambda: _segmenter(reg, str(opts["segmenter"]), opts),
            progress=progress,
            max_mask_bytes=MAX_INSTANCE_MASK_BYTES,
            store_tile=int(opts["tile_size"]),
        )
        plan: Plan = tiled.plan
        timings.update(tiled.timings)
    else:
        plan = reasoner.plan(scene, request, templates)
        timings["reason_s"] = time.perf_counter() - t0
    pre_steps = tuple(Step(text=f"preprocess: {s}") for s in scene.metadata.get("preprocess", ()))
    if plugin is None and chosen:
        pre_steps += (Step(text=f"templates of plugin '{chosen}' (chosen from the reader '{scene.reader}' that opened "
                           "the input; pass --plugin to choose another)"),)
    if pre_steps:
        plan = dataclasses.replace(plan, steps=pre_steps + plan.steps)

    mask: np.ndarray | TiledArray | None = None
    score = classes = None
    instances: list[Instance] = []
    segmenter_name = None
    template = next((t for t in templates if t.qualified_name == plan.template), None)
    if template is None and not plan.absent:  # a constraint program compiled by rscore.planner
        from rscore.planner import template_for_plan

        template = template_for_plan(plan, reg.operators)
    caveats: list[str] = []  # what the program met (the template's and the routing's are added when finishing)
    t0 = time.perf_counter()
    if tiled is not None:
        mask, instances, segmenter_name = tiled.mask, list(tiled.instances), tiled.segmenter_name
    elif not plan.absent:
        instances += list(plan.instances)  # masks the reasoner made itself (the agent reasoner's selection)
        targets = list(plan.targets)
        if template is not None and template.program is not None and plan.reasoner == "analytic":
            run_ = run_program(
                scene, request, template, reg.operators, tile_size=int(opts["tile_size"]), progress=progress
            )
            mask, score, classes = run_.mask, run_.score, run_.classes
            targets += run_.targets
            caveats += [c for c in run_.caveats if c not in caveats]
            plan = dataclasses.replace(plan, steps=plan.steps + tuple(run_.steps), targets=tuple(targets))
        if targets:
            from rscore.segmenters.prompts import split_presegmented

            ready, targets = split_presegmented(targets, scene.shape)  # masks a reasoner made itself (LISA)
            instances += ready
        if targets:
            segmenter_name, segmenter = _segmenter(reg, str(opts["segmenter"]), opts)
            from rscore.io.images import scene_rgb8

            instances += segmenter.segment(scene_rgb8(scene), targets)
        timings["segment_s"] = time.perf_counter() - t0

    result = finish_result(
        scene, request, plan, template, mask, score, classes, caveats, registry=reg, instances=instances,
        segmenter=segmenter_name, warnings=tiled.warnings if tiled is not None else (), stitched=tiled is None,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = _chain(reg, "rscore_postprocess", plugin, result, scene=scene)
    timings["postprocess_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    return result.replace(timings={**result.timings, **{k: round(v, 4) for k, v in timings.items()}})


def finish_result(
    scene: Scene,
    request: Request,
    plan: Plan,
    template: Any,
    mask: np.ndarray | TiledArray | None,
    score: np.ndarray | TiledArray | None = None,
    classes: np.ndarray | TiledArray | None = None,
    caveats: Any = (),
    *,
    registry: Registry,
    instances: Any = (),
    segmenter: str | None = None,
    warnings: Any = (),
    stitched: bool = True,
) -> Result:
    """The finish stage: a :class:`Result` from a plan and what executing it produced (before postprocessing).

    The union mask (``None``: an empty one where the scene fits in memory) takes every instance mask; without
    instances, a template's mask is split into instances (connected components, areas in real units, classes and
    scores); a plan whose mask has no pixel becomes absent with the reason; ``caveats`` (what the program met) join
    the template's declared caveats and the routing's (none on an absent answer); ``confidence`` is the routing's;
    provenance names versions, plugin, backends, template and the non-default options (credentials redacted).
    ``stitched``: the mask was stitched by a tiled program (an on-disk one lists no instances: said in a warning).
    :func:`segment` finishes with it, and so does the landslide flow, which stitches tile batches computed by
    Prefect tasks."""
    opts = request.options
    label = template.label if template else "target"
    instances = list(instances)
    if mask is None and scene.height * scene.width <= in_memory_pixel_limit():
        mask = np.zeros(scene.shape, bool)
    if isinstance(mask, np.ndarray):
        for inst in instances:
            if inst.mask is not None:
                mask |= inst.mask
        if template is not None and not instances and not plan.absent:
            from rscore.instances import instances_from_mask

            instances = instances_from_mask(
                mask,
                label=label,
                score=score if isinstance(score, np.ndarray) else None,
                classes=classes if isinstance(classes, np.ndarray) else None,
                class_names=template.class_names,
                pixel_size=scene.pixel_size,
                unit=scene.unit,
                min_area_px=int(opts["min_area_px"]),
                max_instances=int(opts["max_instances"]),
                # rasters answer with the union mask, score/class rasters and polygons: no per-instance masks
                keep_masks=scene.kind != "raster",
                max_mask_bytes=MAX_INSTANCE_MASK_BYTES,
            )
    if not plan.absent and isinstance(mask, np.ndarray) and not mask.any():
        why = (
            f"the {label} rule found no pixels in this input"
            if plan.reasoner == "analytic"
            else f"the {plan.reasoner} reasoner's targets gave no mask pixels"
        )
        plan = dataclasses.replace(plan, absent=True, reason=why)
    declared: list[str] = list(template.caveats) if template is not None and not plan.absent else []
    declared += [c for c in plan.match.get("caveats", ()) if c not in declared]  # routing: e.g. a superset answer
    declared += [c for c in caveats if c not in declared]
    warnings = tuple(scene.warnings) + tuple(warnings)
    if isinstance(mask, TiledArray) and stitched:
        warnings += ("instances are not listed for scenes stitched on disk; see the vector outputs",)
    return Result(
        query=request.query,
        plugin=request.plugin,
        plan=plan,
        instances=tuple(instances),
        mask=mask,
        score=score,
        class_map=classes,
        class_names=template.class_names if template else (),
        warnings=warnings,
        options=opts,
        caveats=tuple(declared) if not plan.absent else (),
        confidence=plan.match.get("confidence") if not plan.absent else None,
        provenance=_provenance(registry, request.plugin, scene, plan, segmenter, opts),
    )


def _provenance(
    reg: Registry, plugin: str | None, scene: Scene, plan: Plan, segmenter: str | None, opts: Mapping[str, Any]
) -> dict[str, Any]:
    from rscore import __version__

    info = {p.name: p for p in reg.plugins()}
    plug = info.get(plugin) if plugin else None
    return {
        "rscore": __version__,
        "plugin": {"name": plugin, "distribution": plug.distribution, "version": plug.version} if plug else None,
        "reasoner": plan.reasoner,
        "segmenter": segmenter,
        "template": plan.template,
        "matcher": {k: plan.match.get(k) for k in ("method", "model", "score") if k in plan.match},
        "reasoner_model": plan.match.get("reasoner_model"),
        "endpoint": plan.match.get("endpoint"),
        "reader": scene.reader,
        "input": str(scene.path) if scene.path else None,
        "options": {
            k: _redact(v) for k, v in opts.items() if isinstance(v, (str, int, float, bool)) and DEFAULTS.get(k) != v
        },
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _redact(value: Any) -> Any:
    """Strip credentials from URLs (``https://user:secret@host``) before they reach result.json."""
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


# ------------------------------------------------------------------------------------------------------- writing
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

    Stream URLs (rtsp://, http(s)://...) and video scenes go to the video engine (:mod:`rscore.video`).
    """
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    validate_query(query)
    check_known(options or {}, reg)  # before anything is read: a misspelt option must not cost a long read
    from rscore.video.reader import normalise_url

    from rscore.io.outdir import check_out_dir

    url = normalise_url(path)  # also repairs 'rtsp:/host' (what a Path makes of rtsp://host)
    check_out_dir(out_dir or default_out_dir(url or path))  # before the computation, not after it
    if url is not None:
        from rscore.video.engine import run_video

        return run_video(url, query, plugin=plugin, out_dir=out_dir or default_out_dir(url), options=options,
                         registry=reg, progress=progress)
    t0 = time.perf_counter()
    scene = open_scene(path, plugin=plugin, options=options, registry=reg)
    read_s = time.perf_counter() - t0
    if scene.kind == "video":
        from rscore.video.engine import segment_video

        result = segment_video(scene, query, plugin=plugin, options=options, registry=reg, progress=progress)
    else:
        result = segment(scene, query, plugin=plugin, options=options, registry=reg, progress=progress)
    result = result.replace(timings={"read_s": round(read_s, 4), **result.timings})
    try:
        return write_outputs(scene, result, out_dir or default_out_dir(path), registry=reg)
    finally:
        log_ = getattr(result, "log", None)  # video results spool per-frame masks to disk
        if log_ is not None:
            log_.close()


# the core plugin's name, re-exported for callers that compare against it
CORE_PLUGIN = CORE
