"""Evaluation reports as JSON (machine-readable, NaN written as ``null``) and Markdown (for people and issue notes).

``write_report(report, out_dir)`` writes ``report.json`` (metrics, per_category, provenance, samples, failures) and
``report.md``; :func:`summary_json` is what ``rscore eval --json`` prints: ``{"metrics", "per_category",
"provenance"}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rscore.errors import OptionError
from rscore.evaluation.runner import EvalReport

__all__ = ["json_safe", "summary_json", "report_json", "to_markdown", "write_report", "check_report_dir", "METRIC_ORDER"]

METRIC_ORDER = ("gIoU", "cIoU", "ncIoU", "mIoU", "J", "F", "J&F", "R", "N-acc", "AUROC", "SR-AUC")
MAX_MD_SAMPLES = 200


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN / infinity -> ``None``, tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def summary_json(report: EvalReport, *, indent: int | None = 2) -> str:
    """``{"metrics": ..., "per_category": ..., "provenance": ...}`` as JSON text (``rscore eval --json``)."""
    return json.dumps(json_safe(report.to_dict(samples=False)), indent=indent, allow_nan=False, ensure_ascii=False)


def report_json(report: EvalReport, *, indent: int | None = 2) -> str:
    """The whole report (with per-sample records and failures) as JSON text."""
    return json.dumps(json_safe(report.to_dict(samples=True)), indent=indent, allow_nan=False, ensure_ascii=False)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def to_markdown(report: EvalReport, *, max_samples: int = MAX_MD_SAMPLES, title: str | None = None) -> str:
    """A Markdown report: headline metrics, per-category table, per-sample table (first ``max_samples``), failures
    and provenance."""
    m, p = report.metrics, report.provenance
    ds = p.get("dataset") or {}
    ev = p.get("evaluation") or {}
    plugin = (p.get("plugin") or {}).get("name") or "all plugins"
    name = Path(ds["path"]).name if ds.get("path") else "dataset"
    lines = [f"# {title or f'rscore evaluation: {name}'}", ""]
    lines.append(
        f"plugin **{plugin}**, reasoner **{ev.get('reasoner')}**, segmenter **{ev.get('segmenter')}**; "
        f"{m.get('n')} queries from {m.get('n_rows')} rows ({m.get('n_positive')} positive, "
        f"{m.get('n_negative')} negative)" + (f", {m['n_failed']} failed" if m.get("n_failed") else "") + "."
    )
    lines.append("")
    keys = [k for k in METRIC_ORDER if k in m]
    lines += _table(keys, [[_fmt(m.get(k)) for k in keys]])
    lines.append("")
    lines.append(
        "gIoU: mean per-sample IoU (empty vs empty = 1); cIoU: total intersection / total union; ncIoU: cIoU at "
        f"{'x'.join(map(str, ev.get('nc_size', [512, 512])))} px; mIoU: mean of per-category cIoU; J / F: region "
        "IoU / DAVIS boundary F; R: 1 - predicted area on negatives / on positives; N-acc: negatives answered empty."
        + (" AUROC: score map vs truth pixels (mean over samples); SR-AUC: area under the success-rate curve (share "
           "of truth pixels in the top share of the area ranked by score; 0.5 = no skill), curves in "
           "success_rate.png." if "AUROC" in m else "")
    )
    if report.per_category:
        lines += ["", "## Per category", ""]
        cats = report.per_category.values()
        ckeys = [k for k in ("gIoU", "cIoU", "ncIoU", "J&F", "R", "N-acc") if any(k in v for v in cats)]
        rows = [
            [cat, _fmt(v.get("n")), _fmt(v.get("n_negative"))] + [_fmt(v.get(k)) for k in ckeys]
            for cat, v in sorted(report.per_category.items())
        ]
        lines += _table(["category", "n", "negatives", *ckeys], rows)
    if report.samples:
        lines += ["", "## Samples", ""]
        rows = []
        for s in report.samples[:max_samples]:
            q = s.get("query") or ""
            q = q if len(q) <= 60 else q[:57] + "..."
            note = "absent" if s.get("absent") else ""
            if s.get("frames"):
                note = f"{s['frames']} frames"
            rows.append(
                [str(s.get("id")), q, s.get("category") or "-", "yes" if s.get("negative") else "",
                 _fmt(s.get("iou")), _fmt(s.get("F")), str(s.get("pred_px")), str(s.get("gt_px")),
                 s.get("template") or "-", note]
            )
        lines += _table(["id", "query", "category", "neg", "IoU", "F", "pred px", "truth px", "template", "note"], rows)
        if len(report.samples) > max_samples:
            lines.append(f"\n({len(report.samples) - max_samples} more in report.json)")
    if report.failures:
        lines += ["", "## Failures", ""]
        lines += _table(["id", "line", "query", "error"],
                        [[str(f["id"]), str(f["line"]), f.get("query") or "-", f["error"]] for f in report.failures])
    lines += ["", "## Provenance", ""]
    plug = p.get("plugin") or {}
    dist = " ".join(str(plug[k]) for k in ("distribution", "version") if plug.get(k))
    lines.append(f"- rscore {p.get('rscore')}; plugin {plug.get('name') or '-'}{f' ({dist})' if dist else ''}; "
                 f"seed {p.get('seed')}; {p.get('created')}")
    lines.append(f"- dataset: {ds.get('path')} ({ds.get('source')}, {ds.get('rows')} rows, "
                 f"sha256 {str(ds.get('sha256'))[:16] if ds.get('sha256') else '-'})")
    backends = p.get("backends") or {}
    lines.append(f"- answered by: reasoners {backends.get('reasoners')}, "
                 f"segmenters {backends.get('segmenters') or '-'}, templates {backends.get('templates') or '-'}")
    if ev.get("options"):
        lines.append(f"- options: {', '.join(f'{k}={v}' for k, v in ev['options'].items())}")
    for model in p.get("models") or []:
        files = model.get("files") or {}
        digest = ", ".join(f"{k} {v[:16]}" for k, v in list(files.items())[:4])
        more = f" (+{len(files) - 4} files)" if len(files) > 4 else ""
        lines.append(f"- {model.get('role')} model: {model.get('name')} ({model.get('backend')}"
                     f"{', ' + model['repo_id'] if model.get('repo_id') else ''})"
                     + (f": sha256 {digest}{more}" if digest else ""))
    if p.get("adapter"):
        lines.append(f"- adapter: {p['adapter'].get('path')}")
    sw = p.get("software") or {}
    lines.append("- software: " + ", ".join(f"{k} {v}" for k, v in sw.items()))
    hw = p.get("hardware") or {}
    gpus = ", ".join(hw.get("gpus") or []) or "none used"
    lines.append(f"- hardware: {hw.get('cpu')} ({hw.get('cpu_count')} logical cores), "
                 f"{hw.get('memory_gib', '?')} GiB RAM, GPU: {gpus}; {hw.get('platform')}")
    lines.append(f"- duration: {p.get('duration_s')} s")
    return "\n".join(lines) + "\n"


REPORT_FILES = ("report.json", "report.md", "success_rate.png")


def check_report_dir(out_dir: str | os.PathLike[str]) -> None:
    """:class:`OptionError` unless ``out_dir`` may receive a report: not a file, and any of :data:`REPORT_FILES`
    already there belongs to a report rscore wrote (its ``report.json`` carries rscore's provenance) - a user's own
    ``report.md`` is never overwritten."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OptionError(f"output folder {out} exists and is not a folder; choose another --out")
    present = [n for n in REPORT_FILES if os.path.lexists(out / n)]
    if not present:
        return
    try:
        doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
        ours = isinstance(doc, dict) and "metrics" in doc and bool((doc.get("provenance") or {}).get("rscore"))
    except (OSError, ValueError, AttributeError):
        ours = False
    foreign = [n for n in present if not ours or not (out / n).is_file() or (out / n).is_symlink()]
    if foreign:
        raise OptionError(f"{out / foreign[0]} exists and is not part of a report rscore wrote; choose another --out "
                          f"(rscore eval writes {', '.join(REPORT_FILES)} there)")


def write_report(report: EvalReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (created); returns ``{"json": path, "markdown":
    path}``. An existing ``out_dir`` that is a file, or a file of those names rscore did not write
    (:func:`check_report_dir`), is an :class:`OptionError`."""
    out = Path(out_dir)
    check_report_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md"}
        for key, text in (("json", report_json(report)), ("markdown", to_markdown(report))):
            tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, paths[key])
        curves = [s for s in report.samples if s.get("success_rate")]
        if curves:
            paths["success_rate"] = _success_rate_png(curves, out / "success_rate.png")
    except OSError as exc:
        raise OptionError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    return paths


def _success_rate_png(samples: list[Mapping[str, Any]], path: Path, size: int = 360, limit: int = 8) -> Path:
    """Success-rate curves of up to ``limit`` samples (score-map answers) over the no-skill diagonal."""
    from PIL import Image, ImageDraw

    pad = 40
    img = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, pad + size, pad + size], outline="black")
    d.line([pad, pad + size, pad + size, pad], fill=(170, 170, 170))
    colours = [(200, 30, 30), (30, 90, 200), (30, 150, 60), (120, 60, 160), (200, 120, 0), (0, 150, 150)]
    for k, s in enumerate(samples[:limit]):
        c = s["success_rate"]
        colour = colours[k % len(colours)]
        pts = [(pad + x * size, pad + size - y * size) for x, y in zip(c["area_share"], c["truth_share"])]
        d.line(pts, fill=colour, width=2)
        d.text((pad + 8, pad + 8 + 14 * k), f"{s.get('id')}: SR-AUC {c['auc']}, AUROC {s['auroc']:.3f}", fill=colour)
    d.text((pad, pad + size + 8), "share of area, highest score first", fill="black")
    d.text((4, pad - 16), "share of truth pixels", fill="black")
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path
