"""The compliance report: ``findings.json`` + ``report.html`` (one self-contained page) + ``thumbs/*.jpg``.

``findings.json``::

    {"camera": "gate-2", "source": "...", "compliant": false,
     "complete": false,   # false when a check could not run (it is then never reported as passed)
     "summary": {"findings": 3, "violations": 1, "by_rule": {...}, "checks_not_run": ["scaffold", ...]},
     "checks": [{"check": "hivis", "label": "hi-vis clothing", "state": "ran"},
                {"check": "hard_hats", "state": "could not run", "why": "needs a VLM reasoner or a detector ..."}],
     "zones": [...], "rules": [{"name": ..., "rule": "person (motion) without hi-vis (hivis) in any zone ..."}],
     "signals": {"motion": "MOG2 background subtraction ...", ...},
     "findings": [{"rule": ..., "severity": ..., "zone": ..., "camera": ..., "start_frame": 40, "end_frame": 160,
                   "start_s": 4.0, "end_s": 16.0, "duration_s": 12.0, "message": "person in zone ...",
                   "thumbnail": "thumbs/finding-001.jpg"}],
     "frames": 795, "first_s": 0.0, "last_s": 79.4, "events": [...], "warnings": [...]}

The HTML page lists the verdict, what was checked (rules, zones, how each signal was computed) and a table of the
findings with their thumbnails (the frame where the subject was largest, zone outlined in red, subject in yellow).

:class:`SafetyReportWriter` is the ``rscore_writers`` writer: for a video result of the safety plugin run with
``-O zones=FILE`` it runs :func:`rscore_safety.rules.analyse_video` over the same source (the result's track labels
become rule subjects) and writes the report into ``safety/`` of the output folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rscore.sdk import Writer
from rscore.types import Result, Scene
from rscore_safety.rules import SafetyReport

__all__ = ["report_document", "write_report", "SafetyReportWriter"]

_SEVERITY_COLOUR = {"violation": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}


def report_document(report: SafetyReport, thumbs: dict[int, str] | None = None) -> dict[str, Any]:
    """The report as plain JSON (``thumbs``: finding index -> relative thumbnail path)."""
    findings = []
    for i, f in enumerate(report.findings):
        item = f.to_dict()
        if thumbs and i in thumbs:
            item["thumbnail"] = thumbs[i]
        findings.append(item)
    return {
        "camera": report.camera,
        "source": report.source,
        "compliant": report.compliant,
        "complete": not report.checks_not_run,
        "summary": report.summary(),
        "checks": [dict(c) for c in report.checks],
        "zones": list(report.zones),
        "rules": [{"name": r.name, "severity": r.severity, "rule": r.describe()} for r in report.rules],
        "signals": dict(report.signals),
        "findings": findings,
        "dropped_findings": report.dropped_findings,
        "frames": report.frames,
        "first_s": report.first_s,
        "last_s": report.last_s,
        "events": [dict(e) for e in report.events],
        "warnings": list(report.warnings),
        "timings": dict(report.timings),
    }


def _html(doc: dict[str, Any]) -> str:
    e = html.escape
    not_run = [c for c in doc.get("checks", []) if c["state"] == "could not run"]
    if not doc["compliant"]:
        verdict, colour = "NOT COMPLIANT", "#c62828"
    elif not_run:  # no violation found, but not everything was checked: never a plain "compliant"
        verdict = f"NO VIOLATION IN THE CHECKS THAT RAN - {len(not_run)} CHECK(S) COULD NOT RUN"
        colour = "#ef6c00"
    else:
        verdict, colour = "COMPLIANT", "#2e7d32"
    rows = []
    for i, f in enumerate(doc["findings"], start=1):
        thumb = f'<img src="{e(f["thumbnail"])}" alt="frame {f["peak_frame"]}">' if f.get("thumbnail") else ""
        sev = f["severity"]
        rows.append(
            f"<tr><td>{i}</td><td style=\"color:{_SEVERITY_COLOUR.get(sev, '#000')}\">{e(sev)}</td>"
            f"<td>{e(f['message'])}</td><td>{e(f['zone'])}</td>"
            f"<td>{f['start_s']:.1f}&ndash;{f['end_s']:.1f} s<br>frames {f['start_frame']}&ndash;{f['end_frame']}</td>"
            f"<td>{thumb}</td></tr>"
        )
    rules = "".join(f"<li><b>{e(r['name'])}</b> ({e(r['severity'])}): {e(r['rule'])}</li>" for r in doc["rules"])
    signals = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in doc["signals"].items())
    warnings = "".join(f"<li>{e(w)}</li>" for w in doc["warnings"])
    checks = "".join(
        f"<tr><td>{e(c['check'])}</td><td>{e(c['label'])}</td><td>{e(c['state'])}</td>"
        f"<td>{e(c.get('why') or c.get('note') or '')}</td></tr>"
        for c in doc.get("checks", [])
    )
    span = "" if doc["first_s"] is None else f", {doc['first_s']:.1f}&ndash;{doc['last_s']:.1f} s"
    table = (
        "<table><tr><th>#</th><th>severity</th><th>finding</th><th>zone</th><th>when</th><th>frame</th></tr>"
        + "".join(rows) + "</table>"
        if rows else "<p>No findings.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Safety report: {e(doc['camera'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.verdict {{ font-size: 1.4em; font-weight: bold; color: {colour}; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }}
img {{ max-width: 360px; }}
</style></head><body>
<h1>Safety report: camera {e(doc['camera'])}</h1>
<p class="verdict">{verdict}</p>
<p>Source {e(doc['source'])}: {doc['frames']} frames{span}. {doc['summary']['findings']} finding(s),
{doc['summary']['violations']} violation(s).</p>
<h2>Findings</h2>
{table}
<h2>What was checked</h2>
<table><tr><th>check</th><th>what</th><th>state</th><th>why / note</th></tr>{checks}</table>
<p>Zones: {e(', '.join(doc['zones']))}</p>
<ul>{rules}</ul>
<h3>Signals</h3><ul>{signals}</ul>
{('<h3>Warnings</h3><ul>' + warnings + '</ul>') if warnings else ''}
<p><small>Offline operators (colour, motion) are candidate detectors, not certification tests; review each finding.
</small></p>
</body></html>
"""


def write_report(report: SafetyReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``findings.json``, ``report.html`` and ``thumbs/finding-NNN.jpg`` into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thumbs: dict[int, str] = {}
    written: dict[str, Path] = {}
    for i, f in enumerate(report.findings):
        if f.thumbnail:
            (out / "thumbs").mkdir(exist_ok=True)
            rel = f"thumbs/finding-{i + 1:03d}.jpg"
            (out / rel).write_bytes(f.thumbnail)
            thumbs[i] = rel
    doc = report_document(report, thumbs)
    (out / "findings.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out / "report.html").write_text(_html(doc), encoding="utf-8")
    written["safety_findings"] = out / "findings.json"
    written["safety_report"] = out / "report.html"
    return written


class SafetyReportWriter(Writer):
    """``safety/findings.json`` + ``safety/report.html`` for video results run with ``-O zones=FILE``."""

    name = "safety-report"
    description = "compliance findings over time in the restricted zones (JSON + HTML with thumbnails)"

    def applies(self, scene: Scene, result: Result) -> bool:
        try:
            from rscore.video.results import VideoResult
        except ImportError:  # an rscore without the video engine
            return False
        return isinstance(result, VideoResult) and bool(result.options.get("zones"))

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:
        from rscore_safety.rules import analyse_video

        opts = dict(result.options)
        report = analyse_video(
            getattr(result, "source"),
            str(opts["zones"]),
            camera=opts.get("camera"),
            options=opts,
            result=result,
            motion=str(opts.get("motion") or "mog2"),
        )
        return write_report(report, out_dir / "safety")
