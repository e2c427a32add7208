"""Landslide-risk mapping over one or many regions: tile batches as Prefect tasks, resumable, scaled out on Dask.

::

    landslide-risk-mapping(inputs, out, query="landslide-prone areas", tile_size=1024, batch_tiles=2, ...)
      per region (one raster):  plan-region   open the raster, match the query to a template (analytic strategy),
                                              hash the input (content of the raster and of any --aux rasters)
      segment-regions (subflow, task runner = threads or Dask at dask_address):
        per batch of tiles:     segment-tile-batch   the template program on each tile with the template's halo,
                                                     cropped to the tile core - exactly what ``rscore run`` does
        per region:             stitch the batches, postprocess (area per class), write-region (COGs, polygons,
                                map, result.json) into OUT/regions/<name>/
      OUT/landslide-summary.json + OUT/landslide-report.md: status, area per class (km2, share), bad tiles

Seam-free by construction: a batch is a block of ``batch_tiles x batch_tiles`` tiles of the same grid the engine
uses for ``--tile-size``, and every tile is computed as the engine computes it (its read window is its core grown
by ``template.halo``), so the flow's mask, score and classes equal ``rscore run --tile-size N`` on the same raster
bit for bit (tests/test_flows.py checks it). Use the same tile size for both: tile-local operators (flow
accumulation) make results depend on the tile grid, by design of the analytic templates.

Resume: batch results are persisted (Prefect result persistence, ``OUT/.task-results``) under a cache key made of
the input's content hash, the batch window and tiles, the query, template, tile size, halo, request options and
the rscore/plugin versions. A run that is killed keeps every finished batch; running the same command again
reuses them (state ``Cached``) and computes only the rest. Change the input, query, options or versions and the
keys change. ``refresh=True`` recomputes everything.

Failures: transient errors (``OSError``, timeouts, ``MemoryError``) are retried with exponential backoff and
jitter; any other error of a tile marks that tile bad (reported with its window and error; nodata in the outputs)
and the region goes on. A batch that still fails after its retries marks its tiles bad and is not cached, so the
next run recomputes it. A region whose raster cannot be read fails alone; the flow run fails only when every
region failed.

Scale-out: ``dask_address="tcp://scheduler:8786"`` runs the batches on an existing dask.distributed cluster through
prefect-dask's ``DaskTaskRunner``. Each worker process builds the plugin registry and opens a raster once
(:func:`rscore_flows._common.prepared_scene`), however many batches it runs. Without an address the batches run
on Prefect's thread pool in the flow's process (``workers`` threads). Ray is the alternative for Ray clusters:
``pip install prefect-ray`` and pass ``ray_address="ray://head:10001"`` (prefect-ray's ``RayTaskRunner``); nothing
in the tasks is Dask-specific. Start a Dask cluster with ``dask scheduler`` + ``dask worker tcp://host:8786
--nworkers N --nthreads 1`` on machines that have rscore, its plugins and rscore_flows installed and can read the
inputs and ``OUT`` at the same paths (shared storage).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Failed
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from rscore.engine import DEFAULTS, default_registry, validate_query, write_outputs
from rscore.engine.execute import Execution
from rscore.engine.finish import finish_result
from rscore.engine.plan import Planned
from rscore.engine.program import TileStitcher
from rscore.engine.tile import TileResult
from rscore.engine.tile import run_tile as engine_run_tile
from rscore.errors import InternalError, OptionError, RscoreError
from rscore.sdk import Template
from rscore.tiling import iter_tiles
from rscore.types import Plan, Request, Result, Scene, Step, Window

from rscore_flows._common import (
    PackedArray,
    chain_hooks,
    component_versions,
    expand_inputs,
    file_digest,
    first_line,
    is_transient,
    jsonable,
    make_task_runner,
    prepared_scene,
    result_storage,
    retry_if_transient,
    retrying,
    settle,
    stable_digest,
    task_runner_label,
    tune_allocator,
    unique_names,
    claim_outputs,
    worker_id,
    write_json,
    write_text,
)

log = logging.getLogger(__name__)

__all__ = [
    "FLOW_NAME",
    "DEFAULT_QUERY",
    "RegionJob",
    "Batch",
    "TileOutput",
    "BadTile",
    "BatchResult",
    "split_batches",
    "batch_cache_key",
    "run_tile",
    "plan_region",
    "segment_batch",
    "landslide_risk_mapping",
]

FLOW_NAME = "landslide-risk-mapping"
DEFAULT_QUERY = "landslide-prone areas"
DEFAULT_PLUGIN = "earth"
DEFAULT_TILE_SIZE = int(DEFAULTS["tile_size"])
DEFAULT_BATCH_TILES = 2
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".hgt", ".asc")
REGIONS_DIR = "regions"
SUMMARY_JSON = "landslide-summary.json"
REPORT_MD = "landslide-report.md"


# ------------------------------------------------------------------------------------------------------------ types
@dataclasses.dataclass(frozen=True)
class RegionJob:
    """Everything a batch task needs to know about its region: small, picklable, and the basis of cache keys.

    ``options`` are the request options as sorted ``(name, value)`` pairs (reader options such as ``bands``/``aux``
    included); ``digest`` hashes the content of the raster and of its aux rasters.
    """

    name: str
    path: str
    plugin: str | None
    query: str
    template: str
    options: tuple[tuple[str, Any], ...]
    tile_size: int
    halo: int
    height: int
    width: int
    digest: str
    versions: tuple[tuple[str, str], ...]
    plan: Plan

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def tiles(self) -> int:
        return math.ceil(self.height / self.tile_size) * math.ceil(self.width / self.tile_size)


@dataclasses.dataclass(frozen=True)
class Batch:
    """A block of tiles: ``window`` (aligned to the tile grid) and the engine's indices of the tiles in it."""

    index: int
    window: Window
    tiles: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TileOutput:
    """One tile's outputs over its core (packed), the notes and caveats its program recorded, and the template's
    ``tile_summary`` of it (the earth map's preview blocks: the region's map.png then needs no re-read of the DEM)."""

    index: int
    core: Window
    mask: PackedArray
    score: PackedArray | None
    classes: PackedArray | None
    notes: tuple[Step, ...]
    caveats: tuple[str, ...] = ()
    summary: Any = None

    def unpacked(self) -> TileResult:
        """As the engine's tile result (what :class:`~rscore.engine.program.TileStitcher` stitches)."""
        return TileResult(
            self.index, self.core, self.mask.unpack(), self.score.unpack() if self.score is not None else None,
            self.classes.unpack() if self.classes is not None else None, [], list(self.notes), list(self.caveats),
            self.summary,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BadTile:
    index: int
    window: Window
    error: str

    def as_dict(self) -> dict[str, Any]:
        w = self.window
        return {"tile": self.index, "window": {"row": w.row_off, "col": w.col_off, "height": w.height,
                                               "width": w.width}, "error": self.error}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What a batch task returns (and what is persisted): tile outputs, bad tiles, where and how long it ran."""

    batch: int
    tiles: tuple[TileOutput, ...]
    bad: tuple[BadTile, ...]
    seconds: float
    worker: str
    targets_ignored: int = 0


# ---------------------------------------------------------------------------------------------------- plain logic
def split_batches(height: int, width: int, tile_size: int, batch_tiles: int) -> list[Batch]:
    """Blocks of ``batch_tiles x batch_tiles`` tiles (fewer at the right and bottom edges), row by row.

    Tile indices are those of :func:`rscore.tiling.iter_tiles` for the same size, so every tile is in exactly one
    batch.
    """
    if batch_tiles < 1:
        raise OptionError(f"batch_tiles must be at least 1, got {batch_tiles}")
    ncols = math.ceil(width / tile_size)
    groups: dict[tuple[int, int], list[Any]] = {}
    for tile in iter_tiles(height, width, tile_size, 0):
        r, c = divmod(tile.index, ncols)
        groups.setdefault((r // batch_tiles, c // batch_tiles), []).append(tile)
    batches = []
    for i, key in enumerate(sorted(groups)):
        tiles = groups[key]
        r0 = min(t.core.row_off for t in tiles)
        c0 = min(t.core.col_off for t in tiles)
        r1 = max(t.core.row_off + t.core.height for t in tiles)
        c1 = max(t.core.col_off + t.core.width for t in tiles)
        batches.append(Batch(i, Window(r0, c0, r1 - r0, c1 - c0), tuple(t.index for t in tiles)))
    return batches


def batch_cache_key(job: RegionJob, batch: Batch) -> str:
    """The persisted result's key: input content hash + batch window and tiles + query + template + tile size,
    halo and options + rscore/plugin versions. Readable prefix, then a digest."""
    w = batch.window
    digest = stable_digest(
        job.digest, job.plugin, job.query, job.template, job.tile_size, job.halo, job.options, job.versions,
        (w.row_off, w.col_off, w.height, w.width), batch.tiles,
    )  # fmt: skip
    return f"landslide-{job.name}-b{batch.index}-{digest}"


def _cache_key_fn(context: Any, parameters: Mapping[str, Any]) -> str:
    return batch_cache_key(parameters["job"], parameters["batch"])


def _template(registry: Any, qualified_name: str) -> Template:
    for t in registry.templates:
        if t.qualified_name == qualified_name:
            return t
    raise InternalError(f"template '{qualified_name}' is not registered in this worker (plugin not installed here?)")


def run_tile(scene: Scene, request: Request, template: Template, operators: Mapping[str, Any], tile: Any) -> tuple[
    TileOutput, int
]:
    """The engine's per-tile step (:func:`rscore.engine.tile.run_tile`: the program on the tile's core + halo,
    cropped to the core, invalid pixels out of the mask, NaN score, class 0), packed to be persisted. Returns the
    tile output and the number of segmenter targets the program returned (which this flow does not segment)."""
    res = engine_run_tile(scene, request, template, operators, tile)
    mask = res.mask if res.mask is not None else np.zeros((tile.core.height, tile.core.width), bool)
    output = TileOutput(
        res.index, res.core, PackedArray.pack(mask), PackedArray.pack(res.score) if res.score is not None else None,
        PackedArray.pack(res.classes) if res.classes is not None else None, tuple(res.notes), tuple(res.caveats),
        res.summary,
    )  # fmt: skip
    return output, len(res.targets)


def request_options(options: Mapping[str, Any] | None, tile_size: int) -> dict[str, Any]:
    """The request options a run of ``rscore run --tile-size N -O ...`` would have (defaults included)."""
    try:
        tile_size = int(tile_size)
    except (TypeError, ValueError):
        raise OptionError(f"tile_size must be a whole number of pixels, got {tile_size!r}") from None
    if tile_size < 16:
        raise OptionError(f"tile_size must be at least 16 px, got {tile_size}")
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}, "tile_size": tile_size}
    for name, low in (("min_area_px", 0), ("max_instances", 1)):
        try:
            opts[name] = int(opts[name])
        except (TypeError, ValueError):
            raise OptionError(f"option {name} must be a whole number, got {opts[name]!r}") from None
        if opts[name] < low:
            raise OptionError(f"option {name} must be at least {low}, got {opts[name]}")
    if opts.get("reasoner") != "analytic":
        raise OptionError(
            f"the {FLOW_NAME} flow runs the analytic strategy tile by tile; reasoner '{opts.get('reasoner')}' is not "
            "supported here (use 'rscore run --reasoner ...' for VLM reasoners)"
        )
    return opts


def _aux_paths(opts: Mapping[str, Any]) -> list[Path]:
    aux = opts.get("aux")
    if not aux:
        return []
    items = aux.split(",") if isinstance(aux, str) else list(aux)
    return [Path(str(a).strip()) for a in items if str(a).strip()]


# ------------------------------------------------------------------------------------------------------------ tasks
@task(name="plan-region", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient)  # fmt: skip
def plan_region(name: str, path: str, plugin: str | None, query: str, options: dict[str, Any]) -> RegionJob | Plan:
    """Open the raster (once per worker), match the query to a template, hash the input. Returns the region's job,
    or the absent :class:`Plan` when no template of the plugin answers the query offline."""
    reg = default_registry()
    reg.require_plugin(plugin)
    query = validate_query(query)
    scene = prepared_scene(path, plugin, options, query)
    templates = reg.templates_for(plugin)
    request = Request(query=query, plugin=plugin, options=options)
    reasoner = reg.backend("reasoner", "analytic").factory(options)
    plan: Plan = reasoner.plan(scene, request, templates)
    if plan.absent:
        return plan
    template = next(t for t in templates if t.qualified_name == plan.template)
    digest = stable_digest(file_digest(path), [file_digest(p) for p in _aux_paths(options)])
    return RegionJob(
        name=name, path=str(path), plugin=plugin, query=query, template=template.qualified_name,
        options=tuple(sorted(options.items())), tile_size=int(options["tile_size"]), halo=int(template.halo),
        height=scene.height, width=scene.width, digest=digest, versions=component_versions(reg, plugin), plan=plan,
    )  # fmt: skip


@task(
    name="segment-tile-batch",
    task_run_name="{job.name}-batch-{batch.index}",
    cache_key_fn=_cache_key_fn,
    persist_result=True,
    result_serializer="pickle",
    cache_result_in_memory=False,
    retries=3,
    retry_delay_seconds=exponential_backoff(2.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
def segment_batch(job: RegionJob, batch: Batch) -> BatchResult:
    """Segment one batch of tiles of a region with the region's template (library calls only; the scene and the
    registry are opened once per worker process). Transient errors propagate (Prefect retries the batch); other
    errors of a tile are recorded as a bad tile and the batch goes on."""
    t0 = time.perf_counter()
    tune_allocator()
    reg = default_registry()
    options = job.options_dict
    scene = prepared_scene(job.path, job.plugin, options, job.query)
    template = _template(reg, job.template)
    request = Request(query=job.query, plugin=job.plugin, options=options)
    wanted = set(batch.tiles)
    outputs: list[TileOutput] = []
    bad: list[BadTile] = []
    ignored = 0
    for tile in iter_tiles(job.height, job.width, job.tile_size, job.halo):
        if tile.index not in wanted:
            continue
        try:
            out, n_targets = run_tile(scene, request, template, reg.operators, tile)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("%s: tile %d %s failed: %s", job.name, tile.index, tile.core, first_line(exc))
            bad.append(BadTile(tile.index, tile.core, first_line(exc)))
            continue
        outputs.append(out)
        ignored += n_targets
    return BatchResult(batch.index, tuple(outputs), tuple(bad), time.perf_counter() - t0, worker_id(), ignored)


@task(name="write-region", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_if_transient)  # fmt: skip
def write_region(scene: Scene, result: Result, region_out: str) -> Result:
    """Postprocess (area per class) and write the region's COGs, polygons, map and result.json atomically."""
    reg = default_registry()
    result = chain_hooks(reg, "rscore_postprocess", result.plugin, result, scene=scene)
    return write_outputs(scene, result, region_out, registry=reg)


# ------------------------------------------------------------------------------------------------------------ merge
class _Stitch:
    """A region's batches stitched by the engine's stitch stage (:class:`~rscore.engine.program.TileStitcher`),
    plus what only a flow has: bad tiles and batches that failed after their retries."""

    def __init__(self, job: RegionJob) -> None:
        self.job = job
        self.tiles = TileStitcher(job.height, job.width, job.tile_size)
        self.bad: list[BadTile] = []
        self.targets_ignored = 0

    def add(self, res: BatchResult) -> None:
        for t in res.tiles:
            self.tiles.add(t.unpacked())
        self.bad.extend(res.bad)
        self.targets_ignored += res.targets_ignored

    def fail(self, batch: Batch, error: str, job: RegionJob) -> None:
        wanted = set(batch.tiles)
        cores = {t.index: t.core for t in iter_tiles(job.height, job.width, job.tile_size, 0) if t.index in wanted}
        self.bad.extend(BadTile(i, cores[i], error) for i in batch.tiles)

    def result(self, scene: Scene, template: Template, flow_info: Mapping[str, Any]) -> Result:
        """The region's :class:`Result`, finished by the engine's finish stage
        (:func:`rscore.engine.finish.finish_result`:
        instances, absent, caveats, confidence, provenance with credentials redacted) plus the flow's warnings and
        its ``provenance["flow"]``."""
        job = self.job
        mask, score, classes = self.tiles.finish()
        plan = dataclasses.replace(job.plan, steps=job.plan.steps + tuple(self.tiles.steps()))
        warnings = []
        if self.bad:
            warnings.append(
                f"{len(self.bad)} of {job.tiles} tiles failed and are nodata in the outputs (see the flow summary)"
            )
        if self.targets_ignored:
            warnings.append(
                f"the template returned {self.targets_ignored} segmenter targets; this flow does not segment them"
            )
        request = Request(query=job.query, plugin=job.plugin, options=job.options_dict)
        done = Execution(plan, mask=mask, score=score, classes=classes, caveats=list(self.tiles.caveats),
                         tile_summaries=list(self.tiles.summaries))  # (the map writer checks they cover the map)
        result = finish_result(scene, request, Planned(job.plan, (template,), template), done, default_registry())
        return result.replace(
            warnings=result.warnings + tuple(warnings), provenance={**result.provenance, "flow": dict(flow_info)}
        )

    def close(self) -> None:
        self.tiles.close()


def _merge_region(
    job: RegionJob, batches: Sequence[Batch], futures: Sequence[Any], out: Path, flow_info: Mapping[str, Any]
) -> dict[str, Any]:
    logger = get_run_logger()
    stitch = _Stitch(job)
    stitch_s = 0.0
    computed, reused, failed = [], [], []
    compute_s = 0.0
    workers: set[str] = set()
    for batch, fut in zip(batches, futures):
        fut.wait()
        t0 = time.perf_counter()  # stitch time: loading the (persisted) result and stitching it, not waiting
        res: BatchResult | None
        res, error, was_cached = settle(fut)
        if res is not None:
            stitch.add(res)
            stitch_s += time.perf_counter() - t0
            (reused if was_cached else computed).append(batch.index)
            if not was_cached:
                compute_s += res.seconds
                workers.add(res.worker)
        else:
            logger.warning("%s: batch %d failed after retries: %s", job.name, batch.index, error)
            stitch.fail(batch, error, job)
            failed.append(batch.index)
    n_bad = len(stitch.bad)
    report: dict[str, Any] = {
        "name": job.name, "input": job.path, "template": job.template, "query": job.query,
        "size_px": [job.width, job.height],
        "tiles": {"total": job.tiles, "bad": n_bad,
                  "computed": sum(len(b.tiles) for b in batches if b.index in computed),
                  "reused": sum(len(b.tiles) for b in batches if b.index in reused)},
        "batches": {"total": len(batches), "computed": computed, "reused": reused, "failed": failed},
        "bad_tiles": [b.as_dict() for b in sorted(stitch.bad, key=lambda b: b.index)],
        "compute_s": round(compute_s, 3), "workers": sorted(workers),
    }  # fmt: skip
    if n_bad == job.tiles:
        stitch.close()
        error = f"every tile failed (first: {stitch.bad[0].error})"
        report.update(status="failed", error=error, classes={}, outputs={})
        return report
    region_out = out / REGIONS_DIR / job.name
    t0 = time.perf_counter()
    try:
        reg = default_registry()
        scene = prepared_scene(job.path, job.plugin, job.options_dict, job.query)
        template = _template(reg, job.template)
        result = stitch.result(scene, template, flow_info)
        result = write_region(quote(scene), quote(result), str(region_out))
    except (RscoreError, OSError) as exc:
        report.update(status="failed", error=first_line(exc), classes={}, outputs={})
        return report
    finally:
        stitch.close()
    report.update(
        status="partial" if n_bad else "ok",
        absent=result.plan.absent,
        confidence=result.confidence,
        caveats=list(result.caveats),
        classes=jsonable(result.classes),
        area_unit="km2",
        warnings=list(result.warnings),
        outputs={k: f"{REGIONS_DIR}/{job.name}/{v}" for k, v in result.outputs.items()},
        merge_s=round(stitch_s + time.perf_counter() - t0, 3),  # loading + stitching results, postprocess, writers
    )
    logger.info(
        "%s: %s, %d tiles (%d computed, %d reused, %d bad)", job.name, report["status"], job.tiles,
        report["tiles"]["computed"], report["tiles"]["reused"], n_bad,
    )  # fmt: skip
    return report


@flow(name=f"{FLOW_NAME}-tiles", validate_parameters=False, description="Tile batches of every region, then merge.")
def segment_regions(
    jobs: list[RegionJob],
    out: str,
    batch_tiles: int,
    retries: int,
    retry_delay_s: float,
    refresh: bool,
    flow_info: dict[str, Any],
) -> list[dict[str, Any]]:
    """Submit every batch of every region to the task runner, then stitch and write each region as its batches
    finish (region by region, in input order)."""
    batch_task = retrying(segment_batch, retries, retry_delay_s, result_storage=result_storage(out),
                          refresh_cache=refresh)  # fmt: skip
    plans = []
    for job in jobs:
        batches = split_batches(job.height, job.width, job.tile_size, batch_tiles)
        plans.append((job, batches, [batch_task.submit(job, b) for b in batches]))
    return [_merge_region(job, batches, futures, Path(out), flow_info) for job, batches, futures in plans]


# ------------------------------------------------------------------------------------------------------------- flow
def check_outputs(out: Any, **_: Any) -> None:
    """Before anything runs: a user's file named like the summary or report is refused (exit 2), never overwritten."""
    claim_outputs(out, (SUMMARY_JSON, REPORT_MD))


@flow(name=FLOW_NAME, description="Landslide susceptibility over regions, tile batch by tile batch, resumable.")
def landslide_risk_mapping(
    inputs: list[str],
    out: str,
    query: str = DEFAULT_QUERY,
    tile_size: int = DEFAULT_TILE_SIZE,
    batch_tiles: int = DEFAULT_BATCH_TILES,
    plugin: str = DEFAULT_PLUGIN,
    options: dict[str, Any] | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    retries: int = 3,
    retry_delay_s: float = 2.0,
    refresh: bool = False,
) -> dict[str, Any]:
    """Map ``query`` (landslide-prone areas by default) over every raster in ``inputs`` (files, folders, globs).

    Writes ``OUT/regions/<name>/`` per region (mask/score/classes COGs, polygons GPKG + GeoJSON, map.png,
    result.json), ``OUT/landslide-summary.json`` and ``OUT/landslide-report.md``; returns the summary. Units:
    ``tile_size`` in pixels, ``batch_tiles`` tiles per side of a batch, ``retry_delay_s`` seconds before the first
    retry (doubling after), areas in km2.
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    out_dir = Path(out)
    opts = request_options(options, tile_size)
    if batch_tiles < 1:
        raise OptionError(f"batch_tiles must be at least 1, got {batch_tiles}")
    if retries < 0 or retry_delay_s < 0:
        raise OptionError("retries and retry_delay_s must be >= 0")
    runner = make_task_runner(dask_address, workers, ray_address)
    paths = expand_inputs(inputs, RASTER_SUFFIXES, "rasters")
    check_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = get_run_context()
    flow_info = {
        "name": FLOW_NAME, "flow_run_id": str(ctx.flow_run.id) if ctx.flow_run else None,
        "tile_size": opts["tile_size"], "batch_tiles": batch_tiles,
        "task_runner": task_runner_label(dask_address, workers, ray_address),
    }  # fmt: skip
    jobs: list[RegionJob] = []
    early: dict[str, dict[str, Any]] = {}
    names = unique_names(paths)
    for name, path in zip(names, paths):
        try:
            planned = plan_region(name, str(path), plugin, query, opts)
        except (RscoreError, OSError) as exc:
            logger.error("%s: %s", name, first_line(exc))
            early[name] = {"name": name, "input": str(path), "status": "failed", "error": first_line(exc),
                           "classes": {}, "outputs": {}}  # fmt: skip
            continue
        if isinstance(planned, Plan):
            early[name] = {"name": name, "input": str(path), "status": "absent", "absent": True,
                           "error": planned.reason, "classes": {}, "outputs": {}}  # fmt: skip
            continue
        jobs.append(planned)
    reports = {}
    if jobs:
        done = segment_regions.with_options(task_runner=runner)(
            jobs, str(out_dir), batch_tiles, retries, retry_delay_s, refresh, flow_info
        )
        reports = {r["name"]: r for r in done}
    regions = [reports.get(n) or early[n] for n in names]
    statuses = {r["status"] for r in regions}
    status = "ok" if statuses <= {"ok", "absent"} else ("failed" if statuses <= {"failed"} else "partial")
    summary = {
        "flow": FLOW_NAME, **{k: v for k, v in flow_info.items() if k != "name"}, "query": query,
        "status": status, "regions": regions, "seconds": round(time.perf_counter() - t0, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "outputs": {"summary": SUMMARY_JSON, "report": REPORT_MD},
    }  # fmt: skip
    write_json(out_dir / SUMMARY_JSON, summary)
    write_text(out_dir / REPORT_MD, render_report(summary))
    logger.info("%s: %s, %d region(s); summary in %s", FLOW_NAME, status, len(regions), out_dir / SUMMARY_JSON)
    if status == "failed":
        message = f"every region failed: {regions[0].get('error')}"
        return Failed(message=message, data=summary)  # type: ignore[return-value]
    return summary


landslide_risk_mapping.check_outputs = check_outputs  # type: ignore[attr-defined]  # rscore_flows.cli: before it starts


def render_report(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown: one table row per region, area per class in km2 (share of the region), bad tiles."""
    lines = [
        f"# Landslide-risk mapping - {summary['created']}",
        "",
        f"Query: \"{summary['query']}\"; tile size {summary['tile_size']} px, batches of {summary['batch_tiles']}x"
        f"{summary['batch_tiles']} tiles, task runner {summary['task_runner']}. Status: **{summary['status']}**.",
        "",
    ]
    class_names: list[str] = []
    for r in summary["regions"]:
        class_names += [c for c in r.get("classes", {}) if c not in class_names]
    header = ["region", "status", "tiles computed / reused / bad"] + [f"{c} km2 (share)" for c in class_names]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary["regions"]:
        t = r.get("tiles", {})
        row = [r["name"], r["status"], f"{t.get('computed', 0)} / {t.get('reused', 0)} / {t.get('bad', 0)}"]
        for c in class_names:
            v = r.get("classes", {}).get(c)
            if not v:
                row.append("")
            elif v.get("area_km2") is None:
                row.append(f"{v['pixels']} px ({100 * v['share']:.1f} %)")
            else:
                row.append(f"{v['area_km2']:.3f} ({100 * v['share']:.1f} %)")
        lines.append("| " + " | ".join(row) + " |")
    for r in summary["regions"]:
        if r.get("error"):
            lines += ["", f"**{r['name']}**: {r['error']}"]
        if r.get("confidence") is not None:
            lines += ["", f"**{r['name']}**: confidence {r['confidence']:.2f} (that the query was routed to the "
                      "right rule; see the plan in the region's result.json)"]
        if r.get("caveats"):
            lines += ["", f"Caveats for **{r['name']}** (read before acting on the map):", ""]
            lines += [f"- {c}" for c in r["caveats"]]
        if r.get("bad_tiles"):
            lines += ["", f"Bad tiles of **{r['name']}** (nodata in its outputs):", ""]
            for b in r["bad_tiles"]:
                w = b["window"]
                lines.append(f"- tile {b['tile']} (rows {w['row']}-{w['row'] + w['height'] - 1}, cols "
                             f"{w['col']}-{w['col'] + w['width'] - 1}): {b['error']}")  # fmt: skip
    return "\n".join(lines) + "\n"
