"""The ``rscore`` command line: a thin layer over the library API.

Exit codes are decided here and only here (:func:`main`): 0 success (an ``absent`` answer included), 2 bad input,
usage or an unavailable resource (one line on stderr, no traceback, no output folder), 1 internal error, 128 + the
signal when interrupted ("interrupted" on stderr: 130 Ctrl-C / SIGINT, 143 SIGTERM, 129 SIGHUP). Progress bars go
to stderr and only when stderr is a terminal and ``--json`` is off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Optional

import typer

from rscore import __version__
from rscore.cli_listing import (  # noqa: F401 - the listing commands, moved there; re-exported here
    operators_app,
    operators_list,
    options_app,
    options_list,
    plugins_app,
    plugins_list,
    templates_app,
    templates_list,
    templates_show,
)
from rscore.errors import OptionError, RscoreError, shorten

app = typer.Typer(
    name="rscore",
    help="Reasoning segmentation for real verticals: pixel masks, instances and explanations from implicit queries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
plugin_app = typer.Typer(help="Plugin SDK: scaffold a new plugin package.", no_args_is_help=True)
flows_app = typer.Typer(help="Prefect batch flows (rscore's and the plugins'): list, run, serve, prefect.yaml.",
                        no_args_is_help=True)
models_app = typer.Typer(help="Model registry: which weights are here, fetching and checking them.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
app.add_typer(models_app, name="models")
app.add_typer(flows_app, name="flows")
app.add_typer(templates_app, name="templates")
app.add_typer(plugin_app, name="plugin")
app.add_typer(operators_app, name="operators")
app.add_typer(options_app, name="options")

_state: dict[str, Any] = {"debug": False}



def _version(value: bool) -> None:
    if value:
        typer.echo(f"rscore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Log progress (-vv: debug).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
) -> None:
    _state["debug"] = debug
    # Library warnings (rasterio, torch...) go through logging: shown with -v, silent otherwise, so that stdout/stderr
    # carry only rscore's own output. Input problems that matter reach the user as result warnings or errors.
    logging.captureWarnings(True)
    if not verbose:
        logging.getLogger().addHandler(logging.NullHandler())
    if verbose:
        from rich.logging import RichHandler

        handler = RichHandler(console=_stderr_console(), show_path=False)
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, handlers=[handler], format="%(message)s")


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``-O KEY=VALUE`` pairs as a dict (values JSON when they parse). A key given twice is an error, not the last
    one silently winning (``-O aux=a.tif -O aux=b.tif`` used to keep only b.tif): lists are comma-separated."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"--option expects KEY=VALUE, got '{pair}'")
        if key in out:
            raise OptionError(f"--option {key} given twice; give it once (a list is comma-separated: {key}=a,b)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _merge_flag_options(flags: dict[str, Any], given: dict[str, Any], defaulted: tuple[str, ...] = ()) -> dict[str, Any]:
    """Options from named flags (``--aux``, ``--bands``...) and ``-O``; one set both ways to different values is an
    error naming both, rather than ``-O`` silently overriding the flag. ``defaulted`` flags always carry a value
    (``--reasoner analytic``): ``-O`` may set those."""
    for key, value in given.items():
        if key not in defaulted and flags.get(key) is not None and str(flags[key]) != str(value):
            raise OptionError(f"--{key.replace('_', '-')} {flags[key]} and --option {key}={value} disagree; give one")
    return {**flags, **given}


_DETECTOR_HELP = ("Detector for the templates that answer from detections: a YOLO .onnx file, an OWLv2 / Grounding "
                  "DINO folder or registered name ('rscore models list --kind detector'), or a backend (yolo-onnx, "
                  "owlv2, grounding-dino). Same as -O detector=...")


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="Image, GeoTIFF, DICOM file/folder or video.", show_default=False)],
    query: Annotated[str, typer.Argument(help='What to segment, e.g. "landslide-prone areas".', show_default=False)],
    plugin: Annotated[Optional[str], typer.Option("--plugin", "-p", help="Plugin to answer with (see 'rscore plugins list').")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder [default: ./rscore-out/<input-stem>/].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result document (as result.json) on stdout.")] = False,
    reasoner: Annotated[str, typer.Option(help="analytic (offline default) or a VLM reasoner: transformers, openai.")] = "analytic",
    segmenter: Annotated[str, typer.Option(help="auto, sam2, sam2-hf, sam3, grounded or classical.")] = "auto",
    detector: Annotated[Optional[str], typer.Option(help=_DETECTOR_HELP)] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint URL (--reasoner openai).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name or id for the reasoner.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Folder with local model weights (see 'rscore models list').")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cuda, mps or cpu [default: auto].")] = None,
    adapter: Annotated[Optional[Path], typer.Option(help="Fine-tuned adapter folder from 'rscore finetune'.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Force a template instead of matching the query.")] = None,
    matcher: Annotated[Optional[str], typer.Option(help="Template matcher: auto, embedding or keyword.")] = None,
    bands: Annotated[Optional[str], typer.Option(help='Band roles in order, e.g. "red,green,blue,nir".')] = None,
    aux: Annotated[list[Path], typer.Option(help="Auxiliary co-registered input, e.g. imagery for a DEM (repeatable).")] = [],  # noqa: B006
    tile_size: Annotated[int, typer.Option(help="Tile size in pixels for large inputs.", min=64)] = 1024,
    max_pixels: Annotated[
        Optional[int], typer.Option(help="Refuse images and rasters with more pixels [default: 250e6 images, "
                                    "2e9 rasters; also RSCORE_MAX_PIXELS].", min=1)
    ] = None,
    option: Annotated[list[str], typer.Option("--option", "-O", help="Plugin option KEY=VALUE (repeatable).")] = [],  # noqa: B006
    strict: Annotated[bool, typer.Option("--strict", help="Damaged input (e.g. a truncated video) is an error, "
                                         "not a result warning.")] = False,
) -> None:
    """Segment what QUERY asks for in INPUT; write masks, overlay and result.json."""
    from rscore import engine

    options: dict[str, Any] = {
        "reasoner": reasoner,
        "segmenter": segmenter,
        "detector": detector,
        "endpoint": endpoint,
        "model": model,
        "weights": str(weights) if weights else None,
        "device": device,
        "adapter": str(adapter) if adapter else None,
        "template": template,
        "matcher": matcher,
        "bands": bands,
        "aux": ",".join(str(a) for a in aux) if aux else None,
        "tile_size": tile_size,
        "max_pixels": max_pixels,
        "strict": True if strict else None,
    }
    options = _merge_flag_options(options, _parse_options(option), defaulted=("reasoner", "segmenter"))
    options = {k: v for k, v in options.items() if v is not None}
    out_dir = out or engine.default_out_dir(input)
    from rscore.io.outdir import check_out_dir, out_dir_lock

    _sweep_stale_temp(out_dir)
    check_out_dir(out_dir)  # before the computation: a folder we may not replace is refused in a second
    with out_dir_lock(out_dir):  # a second run into the same --out is told "in use by PID N" now, not at the end
        _run(input, query, plugin, out_dir, options, as_json)


def _sweep_stale_temp(out_dir: Path) -> None:
    """Tile folders and staging folders (beside ``out_dir``) of rscore processes that were killed (kill -9, power
    loss) are removed on the next start; only those whose name and marker name a PID that no longer runs."""
    import re
    import tempfile

    from rscore.io.outdir import hidden_name, sweep_stale
    from rscore.tiling import TILES_PREFIX
    from rscore.video.results import SPOOL_PREFIX

    sweep_stale(tempfile.gettempdir(), TILES_PREFIX)
    sweep_stale(tempfile.gettempdir(), SPOOL_PREFIX)  # the per-frame spool of a killed video run
    sweep_stale(Path(out_dir).absolute().parent, re.escape(hidden_name(out_dir) + ".") + "(?:tmp|old)-")


def _run(input: Path, query: str, plugin: Optional[str], out_dir: Path, options: dict[str, Any], as_json: bool) -> None:
    from rscore import engine

    show_progress = not as_json and sys.stderr.isatty()
    if show_progress:
        with _progress_bar() as progress:
            result = engine.run(input, query, plugin=plugin, out_dir=out_dir, options=options, progress=progress)
    else:
        result = engine.run(input, query, plugin=plugin, out_dir=out_dir, options=options)
    if as_json:
        sys.stdout.write((out_dir / "result.json").read_text(encoding="utf-8"))
        return
    _print_result(result, out_dir)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[..., None]]:
    """A transient rich bar on stderr counting in the unit of the work ("tiles 12/64", "frames 300/795 (41 fps)",
    "slices 3/40") with an ETA; yields the ``progress(done, total, unit=...)`` callback (:mod:`rscore.progress`)."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    from rscore.progress import format_progress

    class UnitColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            unit = task.fields.get("unit", "")
            if not unit:  # reading the input, planning: nothing counted yet
                return Text("working")
            return Text(format_progress(unit, int(task.completed), task.total, task.speed))

    with Progress(UnitColumn(), BarColumn(), TimeRemainingColumn(), console=_stderr_console(), transient=True) as bar:
        task = bar.add_task("", total=None, unit="")

        def progress(done: int, total: int, unit: str = "") -> None:
            if bar.tasks[0].fields.get("unit") != unit:  # a new unit (or pass): its rate and ETA start afresh
                bar.reset(task, total=total or None, completed=done, unit=unit)
            else:
                bar.update(task, completed=done, total=total or None)
            if total and done >= total:  # a finished pass is drawn now, not at the next timed refresh (maybe never)
                bar.refresh()

        yield progress


def _print_result(result: Any, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    plan = result.plan
    if plan.template:
        m = plan.match
        console.print(f"[bold]template[/] {plan.template}  (match {m.get('method', '?')} {m.get('score', 0):.2f})")
    for step in plan.steps:
        console.print(f"  - {step.text}")
    if plan.absent:
        console.print(f"[bold yellow]absent:[/] {plan.reason}")
    else:
        graded = {k: v for k, v in result.classes.items() if isinstance(v, dict) and "share" in v}
        if graded:
            classes = Table("class", "area", "share of region")
            for name, row in graded.items():
                area = _area(row["area_km2"] * 1e6, "m2") if row.get("area_km2") is not None else f"{row.get('pixels')} px"
                classes.add_row(name, area, f"{100 * row['share']:.1f} %")
            console.print(classes)
        volumes = {k: v for k, v in result.classes.items() if isinstance(v, dict) and v.get("volume_ml") is not None}
        if volumes:  # a DICOM series: what a radiologist reads first (then its 3-D components)
            vol = Table("segment", "voxels", "volume")
            for name, row in volumes.items():
                vol.add_row(name, f"{row.get('voxels', 0):,}", f"{_figure(row['volume_ml'])} mL")
            console.print(vol)
        if not result.instances:  # e.g. a series whose components are all specks, or a mask too big to list
            table = "instances: none listed (the plan above says why)"
        elif any("bbox_3d" in i.attributes and "bbox_in_slice" not in i.attributes for i in result.instances):
            table = _components_table(result.instances[:10])  # a DICOM series: 3-D components across slices
        else:
            table = Table("#", "label", "score", "bbox (x0,y0,x1,y1)", "area px", "area")
            for i, inst in enumerate(result.instances[:10]):
                area = _area(inst.area_real, inst.area_unit) if inst.area_real is not None else ""
                own = inst.attributes.get("bbox_in_slice")  # DICOM: the box on its own slice, as a viewer shows
                number = inst.attributes.get("series_slice", inst.attributes.get("slice"))  # as the slice PNGs' names
                box = f"slice {number}: {tuple(own)}" if own is not None else str(inst.bbox)
                table.add_row(str(i), inst.label, f"{inst.score:.3f}", box, str(inst.area_px), area)
        console.print(table)
        if len(result.instances) > 10:
            console.print(f"  ... and {len(result.instances) - 10} more instances (see result.json)")
    if result.confidence is not None and not plan.absent:
        console.print(f"[bold]confidence[/] {result.confidence:.2f}")
    for c in result.caveats:
        console.print(f"[magenta]caveat:[/] {c}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    owner = _answering_plugin_not_chosen(result)
    if owner:
        console.print(f"[yellow]warning:[/] answered by {owner}'s template without --plugin {owner}: {owner}'s own "
                      f"outputs (and its postprocessing) were not written; run with --plugin {owner} for them")
    console.print(f"outputs in {out_dir}/: {', '.join(sorted(set(result.outputs.values())))}")


def _answering_plugin_not_chosen(result: Any) -> str | None:
    """The plugin whose template answered while the result has no plugin, when that plugin writes outputs of its own
    (a DICOM series: SEG, NIfTI, slices; a GeoTIFF: COGs, polygons, map), else None. Without --plugin the answering
    template's plugin is normally the plugin in use (``rscore.engine.pipeline.route_plugin``); what is left is a model
    reasoner's pick on an input a core reader opened (a model is not asked twice to route)."""
    template = result.plan.template or ""
    if result.plugin or result.plan.absent or ":" not in template:  # an absent answer's reason says it already
        return None
    from rscore.plugins import CORE, default_registry

    owner = template.split(":", 1)[0]
    reg = default_registry()
    own = [w for p, w in reg.writers if p == owner]
    return owner if owner != CORE and own else None


def _components_table(instances: Any) -> Any:
    """Instances of a DICOM series (3-D components, rscore_surgical.components3d): the slices, the box on them,
    voxels, volume and centroid in patient millimetres."""
    from rich.table import Table

    table = Table("#", "label", "score", "slices", "box on them (x0,y0,x1,y1)", "voxels", "volume",
                  "centroid mm (LPS)")
    for i, inst in enumerate(instances):
        a = inst.attributes
        x0, y0, z0, x1, y1, z1 = a.get("bbox_3d") or (inst.bbox[0], inst.bbox[1], 0, inst.bbox[2], inst.bbox[3], 1)
        z0, last = a.get("series_slice_range") or (z0, z1 - 1)  # the series' numbering, as the slice PNGs' names
        ml = a.get("volume_ml")
        table.add_row(str(i), inst.label, f"{inst.score:.3f}", str(z0) if last == z0 else f"{z0}-{last}",
                      str((x0, y0, x1, y1)), f"{inst.area_px:,}", "" if ml is None else f"{_figure(ml)} mL",
                      ", ".join(f"{v:.1f}" for v in a.get("centroid_mm") or ()))
    return table


def _area(value: float, unit: str | None) -> str:
    """Human units (see :func:`rscore.units.area_text`)."""
    from rscore.units import area_text

    return area_text(value, unit)


def _figure(value: float) -> str:
    from rscore.units import figure

    return figure(value)


@plugin_app.command("new")
def plugin_new(
    name: Annotated[str, typer.Argument(help="Plugin name (letters, digits, '-' or '_').")],
    directory: Annotated[Path, typer.Option("--dir", help="Parent folder for the new package.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Write into an existing non-empty folder.")] = False,
    with_flow: Annotated[bool, typer.Option("--with-flow", help="Also add a batch flow (rscore_flows hook): "
                                            "`rscore flows run` and POST /v1/jobs run it.")] = False,
) -> None:
    """Scaffold a working plugin package: reader, template, operator, writer and tests (and a batch flow)."""
    from rscore.scaffold import new_plugin

    path = new_plugin(name, directory, force=force, with_flow=with_flow)
    typer.echo(f"created plugin package {path}\nnext: pip install -e {path} && pytest {path}")


def _emit(text_and_code: tuple[str, int]) -> None:
    text, code = text_and_code
    if code:
        raise _ExitWithMessage(text, code)
    typer.echo(text)


class _ExitWithMessage(Exception):
    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    weights: Annotated[Optional[Path], typer.Option(help="Also look for weights in this folder.")] = None,
    kind: Annotated[Optional[str], typer.Option(help="Only reasoner, segmenter or detector models.")] = None,
) -> None:
    """Registered models (VLM reasoners, segmenters, detectors) and whether their weights are on this machine."""
    from rscore.models import list_command

    _emit(list_command(as_json=as_json, weights=weights, kind=kind))


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Registered model name (see 'rscore models list').")],
    to: Annotated[Optional[Path], typer.Option(help="Download into DIR/NAME instead of the Hugging Face cache.")] = None,
) -> None:
    """Download a model's weights (needs network; copy the folder to offline machines and pass --weights)."""
    from rscore.models import pull_command

    _emit(pull_command(name, to=to))


@models_app.command("verify")
def models_verify(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    weights: Annotated[Optional[Path], typer.Option(help="Folder with local model weights.")] = None,
) -> None:
    """Check that a model's files are complete and its configuration loads."""
    from rscore.models import verify_command

    _emit(verify_command(name, as_json=as_json, weights=weights))


@app.command("eval")
def eval_(
    dataset: Annotated[Path, typer.Option("--dataset", help="JSON Lines manifest, ReasonSeg folder or plugin dataset.")],
    plugin: Annotated[Optional[str], typer.Option("--plugin", "-p", help="Plugin to answer with.")] = None,
    reasoner: Annotated[str, typer.Option(help="analytic, transformers or openai.")] = "analytic",
    segmenter: Annotated[str, typer.Option(help="auto, sam2, sam2-hf or classical.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print {metrics, per_category, provenance} as JSON.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write report.md and report.json here.")] = None,
    option: Annotated[list[str], typer.Option("--option", "-O", help="Option KEY=VALUE (repeatable).")] = [],  # noqa: B006
) -> None:
    """Evaluate on a labelled dataset: gIoU, cIoU, ncIoU, mIoU, J&F, robustness R, per category, with provenance."""
    from rscore.evaluation import eval_command

    _emit(eval_command(plugin, dataset, reasoner=reasoner, segmenter=segmenter, as_json=as_json, out=out,
                       options=_parse_options(option)))


@app.command()
def finetune(
    dataset: Annotated[Path, typer.Option("--dataset", help="JSON Lines manifest or plugin dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write.")],
    plugin: Annotated[Optional[str], typer.Option("--plugin", "-p", help="Plugin whose adapter defaults to use.")] = None,
    reasoner: Annotated[Optional[str], typer.Option(help="transformers (a VLM, default) or lisa (a LISA checkpoint).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Base VLM (registry name or folder).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Folder with local model weights.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cuda, mps or cpu.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.", min=1)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    segmenter: Annotated[Optional[str], typer.Option(help="Also tune this SAM2 mask decoder (sam2 or sam2-hf).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the training summary as JSON.")] = False,
    option: Annotated[list[str], typer.Option("--option", "-O", help="Option KEY=VALUE (repeatable).")] = [],  # noqa: B006
) -> None:
    """LoRA-tune the VLM reasoner (and optionally the SAM2 decoder) on a manifest; writes an adapter folder."""
    from rscore.finetune import finetune_command

    _emit(finetune_command(plugin, dataset, out, reasoner=reasoner, model=model, weights=weights, device=device, steps=steps, lr=lr,
                           segmenter=segmenter, as_json=as_json, options=_parse_options(option)))


@flows_app.command("list")
def flows_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every registered flow (rscore's and the plugins'): what a job item is, parameters, schedules."""
    from rscore_flows.cli import flows_list as list_flows

    rows = list_flows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']:<26} {r.get('cron') or '':<14} {r['description']}")


@flows_app.command("run")
def flows_run(
    name: Annotated[str, typer.Argument(help="A flow of `rscore flows list` (e.g. landslide-risk-mapping, "
                                             "scaffold-compliance, segment-batch).")],
    inputs: Annotated[list[Path], typer.Argument(help="Its inputs: files, folders or globs (one job item each, or "
                                                      "as the flow groups them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (also holds resumable task results).")],
    query: Annotated[Optional[str], typer.Option(help="Query (required or optional, as the flow says).")] = None,
    plugin: Annotated[Optional[str], typer.Option(help="Plugin (flows not tied to one plugin).")] = None,
    tile_size: Annotated[Optional[int], typer.Option(help="Tile size in pixels (flows that tile).", min=16)] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Run tasks on this dask.distributed scheduler.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Task threads / local Dask workers.")] = None,
    batch_tiles: Annotated[Optional[int], typer.Option(help="Tiles per task side (N x N tiles a task).")] = None,
    zones: Annotated[Optional[Path], typer.Option(help="Restricted zones file (scaffold flow).")] = None,
    sample_fps: Annotated[Optional[float], typer.Option(help="Frames per second to sample (scaffold flow).")] = None,
    detector: Annotated[Optional[str], typer.Option(help=_DETECTOR_HELP)] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Recompute, not reusing stored task results.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    option: Annotated[list[str], typer.Option("--option", "-O", help="Option KEY=VALUE (repeatable).")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", "-P", help="Flow parameter KEY=VALUE (repeatable; "
                                             "`rscore flows list --json` lists each flow's).")] = [],  # noqa: B006
) -> None:
    """Run a flow now (resumable: a rerun reuses every finished task). Bad parameters or options: exit 2 before
    anything runs."""
    from rscore_flows.cli import flows_run as run_flow

    params: dict[str, str] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = value
    summary = run_flow(
        name, [str(p) for p in inputs], str(out), query=query, tile_size=tile_size, dask_address=dask_address,
        workers=workers, batch_tiles=batch_tiles,
        options={k: v for k, v in _merge_flag_options({"detector": detector}, _parse_options(option)).items()
                 if v is not None} or None,
        zones=str(zones) if zones else None, sample_fps=sample_fps, refresh=refresh or None, plugin=plugin,
        params=params,
    )  # fmt: skip
    typer.echo(json.dumps(summary, indent=2, default=str) if as_json else f"{name}: {summary.get('status')} -> {out}")
    if summary.get("status") == "failed":
        raise _ExitWithMessage(f"{name} failed: see {out} for the run summary", 1)


@flows_app.command("serve")
def flows_serve() -> None:
    """Serve every scheduled flow as a deployment with its cron schedule (inputs from RSCORE_* variables)."""
    from rscore_flows.cli import flows_serve as serve_flows

    serve_flows()


@flows_app.command("prefect-yaml")
def flows_prefect_yaml() -> None:
    """Print prefect.yaml declaring every scheduled flow for work pools (`prefect deploy --all`)."""
    from rscore_flows.deployments import render_prefect_yaml

    typer.echo(render_prefect_yaml(), nl=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; anything but loopback needs RSCORE_API_KEYS.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
) -> None:
    """Run the HTTP API and the web viewer (uvicorn). Settings come from RSCORE_* environment variables.

    RSCORE_API_KEYS (comma-separated; X-API-Key header), RSCORE_ALLOWED_ROOTS (folders `path` may name),
    RSCORE_MAX_UPLOAD_MB, RSCORE_QUEUE_SIZE, RSCORE_JOB_RUNNER (auto | prefect | inprocess: POST /v1/jobs runs
    Prefect flow runs when PREFECT_API_URL is set) and RSCORE_JOB_WORKERS; see the README's Service section.
    """
    from rscore.service import serve as run_server

    run_server(host, port)


def _is(exc: BaseException, class_name: str) -> bool:
    """Match click's exception classes by name: recent typer vendors its own copy of click."""
    return any(c.__name__ == class_name for c in type(exc).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and maps outcomes to exit codes (the only place that does)."""
    code = 0
    _quiet_blas_threads(sys.argv[1:] if argv is None else argv)
    from rscore.malloc import cap_malloc_arenas

    cap_malloc_arenas()  # threads share glibc's arenas: peak memory (rscore/malloc.py)
    _handle_termination()
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="rscore")
        code = rv if isinstance(rv, int) else 0
        if _state.get("signal"):  # typer turns KeyboardInterrupt into a silent exit code 130
            _fail("interrupted")
            code = _interrupted_code()
    except KeyboardInterrupt:
        _fail("interrupted")
        code = _interrupted_code()
    except _ExitWithMessage as exc:
        _fail(str(exc))
        code = exc.code
    except RscoreError as exc:
        _fail(shorten(str(exc).splitlines()[0]) if exc.exit_code == 2 and str(exc) else str(exc))
        if _state["debug"]:
            raise
        code = exc.exit_code
    except Exception as exc:
        if _is(exc, "UsageError"):
            ctx = getattr(exc, "ctx", None)
            path = ctx.command_path if ctx is not None else "rscore"
            _fail(f"{exc.format_message()} (see '{path} --help')")  # type: ignore[attr-defined]
            code = 2
        elif _is(exc, "Abort"):
            _fail("interrupted")
            code = _interrupted_code()
        elif _is(exc, "ClickException"):
            _fail(exc.format_message())  # type: ignore[attr-defined]
            code = exc.exit_code  # type: ignore[attr-defined]
        else:  # a bug: say so, briefly
            if _state["debug"] or os.environ.get("RSCORE_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback; please report it)")
            code = 1
    sys.exit(code)


def _quiet_blas_threads(argv: list[str]) -> None:
    """Let idle OpenBLAS threads sleep at once instead of spinning (#22).

    numpy, scipy and OpenCV each bring their own OpenBLAS, and each starts its worker threads when it is loaded; an
    idle worker busy-waits 2^28 cycles (~0.1 s) before it sleeps. A short CLI call does no BLAS work worth threads, so
    that CPU was thrown away (up to ~0.1 s per library where a free core lets it spin; 0.05-0.15 CPU-s a 64x64 run
    measured at load 4-8 on 2 cores, where it also delays the run itself). ``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles)
    keeps multi-threaded BLAS; only the wait before sleeping goes. Set before numpy is first imported, and only when
    the user has not chosen a value (benchmarks/README.md, "One-second CLI, third round"). Not for ``serve``: a
    long-lived service (and the workers it starts, which inherit the variable) does BLAS work call after call, where
    the spin saves wake-ups (~10 % on a loop of 384 x 384 products) and start-up CPU does not matter."""
    if next((a for a in argv if not a.startswith("-")), None) == "serve":  # (after -v / --debug too)
        return
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _handle_termination() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C: staging and tile folders are removed, "interrupted" is said, and the
    exit code is 128 + the signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP). A second signal kills at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, _frame: Any) -> None:
        _state["signal"] = signum
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                signal.signal(sig, signal.SIG_DFL)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, on_signal)


def _interrupted_code() -> int:
    return 128 + int(_state.get("signal") or 2)


def _fail(message: str) -> None:
    sys.stderr.write(f"rscore: error: {message}\n")
    sys.stderr.flush()
