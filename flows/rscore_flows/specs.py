"""rscore's own flows as :class:`~rscore.flowspec.FlowSpec` objects, registered by the core plugin through the
``rscore_flows`` hook like any third party's (:func:`rscore.builtin.rscore_flows`).

This module does not import Prefect: the flows are named by import path and the flow-specific checks import their
module only when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rscore.flowspec import FlowParam, FlowSchedule, FlowSpec

__all__ = ["BUILTIN_FLOWS", "SEGMENT_BATCH", "LANDSLIDE", "SCAFFOLD", "segment_item", "RUNNER_PARAMS"]

RUNNER_PARAMS = (
    FlowParam("dask_address", "str", "run the tasks on this dask.distributed scheduler (tcp://host:8786)"),
    FlowParam("workers", "int", "task threads (or local Dask workers)", None, (1, 256)),
    FlowParam("ray_address", "str", "run the tasks on this Ray cluster (ray://head:10001; needs prefect-ray)"),
    FlowParam("retries", "int", "retries of a task after a transient error", 3, (0, 20)),
    FlowParam("retry_delay_s", "float", "seconds before the first retry (doubling after)", 2.0, (0, 3600)),
    FlowParam("refresh", "bool", "recompute instead of reusing persisted task results", False),
)
"""Task-runner parameters of the resumable flows: the operator's, never a service client's."""


# ----------------------------------------------------------------------------------------------- segment-batch
def segment_item(
    path: str, out_dir: str, *, query: str, plugin: str | None, options: Mapping[str, Any], params: Mapping[str, Any],
    registry: Any, progress: Any = None,
) -> Any:
    """One input of ``segment-batch``: :func:`rscore.engine.run` into ``out_dir`` (what ``rscore run --out`` does)."""
    from rscore import engine

    return engine.run(path, query, plugin=plugin, out_dir=out_dir, options=options, registry=registry,
                      progress=progress)  # fmt: skip


SEGMENT_BATCH = FlowSpec(
    name="segment-batch",
    flow="rscore_flows.segment_batch:segment_batch",
    description="One query over many inputs with any plugin, a task per input (what POST /v1/jobs runs).",
    item="one input `rscore run` reads (a file, a DICOM series or a frame folder); files, folders or globs",
    params=(
        FlowParam("retries", "int", "retries of an input after a transient error", 2, (0, 20)),
        RUNNER_PARAMS[4],
    ),
    query="required",
    run_item=segment_item,
)


# ---------------------------------------------------------------------------------------- landslide-risk-mapping
def _landslide_prepare(params: dict[str, Any], registry: Any) -> dict[str, Any]:
    """What the flow refuses, refused at submission: a non-analytic reasoner, bad tile size or -O values; a
    ``tile_size`` given as a request option is the flow's tile size."""
    from rscore_flows import landslide_risk_mapping as lrm

    params = dict(params)
    options = dict(params.get("options") or {})
    if "tile_size" in options and "tile_size" not in params:
        params["tile_size"] = options.pop("tile_size")
    params["tile_size"] = int(params.get("tile_size") or lrm.DEFAULT_TILE_SIZE)
    lrm.request_options(options, params["tile_size"])  # OptionError for what the flow would refuse
    params["options"] = options or None
    return params


def _landslide_items(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    for r in doc.get("regions", []):
        status = r.get("status")
        failed = status == "failed"
        error = r.get("error") if failed else None
        tiles = r.get("tiles") or {}
        if status == "partial":
            error = f"{tiles.get('bad')} of {tiles.get('total')} tiles failed (nodata in the outputs)"
        items.append({
            "input": str(r.get("input")), "state": "failed" if failed else "succeeded",
            "outputs": dict(r.get("outputs") or {}), "absent": None if failed else bool(r.get("absent")),
            "error": error, "seconds": r.get("compute_s"), "confidence": r.get("confidence"),
            "caveats": tuple(r.get("caveats") or ()),
        })  # fmt: skip
    return items


LANDSLIDE = FlowSpec(
    name="landslide-risk-mapping",
    flow="rscore_flows.landslide_risk_mapping:landslide_risk_mapping",
    description="Landslide susceptibility over regions, tile batch by tile batch, resumable, on threads or Dask.",
    item="one region: a DEM raster (GeoTIFF; optional -O aux=imagery); files, folders or globs",
    params=(
        FlowParam("tile_size", "int", "tile side in pixels (as rscore run --tile-size)", 1024, (16, 1 << 16)),
        FlowParam("batch_tiles", "int", "tiles per side of a task (N x N tiles a task)", 2, (1, 1_000_000), job=True),
        *RUNNER_PARAMS,
    ),
    query="optional",
    plugin="earth",
    schedule=FlowSchedule(
        "nightly", "0 2 * * *",
        "Nightly landslide susceptibility of the configured regions (unchanged tiles are reused).",
        "RSCORE_LANDSLIDE_REGIONS", {"query": "landslide-prone areas", "tile_size": 1024},
    ),  # fmt: skip
    prepare=_landslide_prepare,
    summary="landslide-summary.json",
    summary_items=_landslide_items,
)


# ------------------------------------------------------------------------------------------- scaffold-compliance
def _scaffold_prepare(params: dict[str, Any], registry: Any) -> dict[str, Any]:
    """Unknown safety templates, bad sampling or day: refused at submission, as the flow would."""
    from rscore_flows import scaffold_compliance as sc

    for name in params.get("templates") or ():
        sc._safety_template(registry, name)
    sc.frame_stride(sc.FALLBACK_FPS, params.get("sample_fps") or 1.0, params.get("stride"))
    sc.resolve_day(params.get("day"))
    return params


def _scaffold_items(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    outputs = {k: v for k, v in (doc.get("outputs") or {}).items() if isinstance(v, str)}
    items = []
    for c in doc.get("clips", []):
        failed = bool(c.get("error"))
        fired = any(c.get("fired", {}).values()) or any(c.get("overlaps", {}).values())
        items.append({
            "input": str(c.get("path")), "state": "failed" if failed else "succeeded",
            "outputs": {} if failed else outputs, "absent": None if failed else not fired,
            "error": c.get("error"), "seconds": round(float(c.get("seconds") or 0.0), 4),
        })  # fmt: skip
    return items


SCAFFOLD = FlowSpec(
    name="scaffold-compliance",
    flow="rscore_flows.scaffold_compliance:scaffold_compliance",
    description="Safety templates over sampled frames of site clips; a daily compliance report.",
    item="one site clip (video file); camera folders or globs",
    params=(
        FlowParam("templates", "names", "safety templates to run (default: hivis, restricted_zone, scaffold)", None,
                  job=True),
        FlowParam("zones", "path", "restricted-zone polygons (pixel coordinates, GeoJSON/JSON)", None, job=True),
        FlowParam("sample_fps", "float", "frames analysed per second of video", 1.0, (1e-6, 1000), job=True),
        FlowParam("stride", "int", "analyse every n-th frame instead", None, (1, 1_000_000), job=True),
        FlowParam("day", "str", "only clips last modified that day (YYYY-MM-DD, today, yesterday)", None, job=True),
        *RUNNER_PARAMS,
    ),
    query="optional",
    plugin="safety",
    schedule=FlowSchedule(
        "daily-report", "30 19 * * *",
        "Daily compliance report over the day's site clips (hi-vis workers, restricted zones).",
        "RSCORE_SCAFFOLD_CLIPS", {"day": "today"}, {"zones": "RSCORE_SCAFFOLD_ZONES"},
    ),  # fmt: skip
    prepare=_scaffold_prepare,
    summary="compliance-*.json",
    summary_items=_scaffold_items,
)

BUILTIN_FLOWS: tuple[FlowSpec, ...] = (LANDSLIDE, SCAFFOLD, SEGMENT_BATCH)
