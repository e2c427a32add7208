"""Measure rscore on labelled data: manifests, the evaluation runner, reports, and ``rscore eval``.

::

    rscore eval --plugin P --dataset MANIFEST [--reasoner R --segmenter S] [--json] [--out DIR] [-O KEY=VALUE ...]
        -> eval_command(P, MANIFEST, reasoner=R, segmenter=S, as_json=..., out=DIR, options={...}) -> (text, exit code)

- :mod:`rscore.evaluation.manifest` - the JSON Lines manifest (image, query, mask as path / polygons / RLE / null,
  negative, category), :func:`load_dataset` (manifests, ReasonSeg folders, plugin dataset readers);
- :mod:`rscore.evaluation.importers` - :func:`import_reasonseg`, :func:`import_refcoco` (public formats -> rows).
- :mod:`rscore.evaluation.runner` - :func:`evaluate` -> :class:`EvalReport` (metrics, per_category, provenance).
- :mod:`rscore.evaluation.report` - JSON and Markdown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rscore.evaluation.manifest import (
    Manifest,
    MaskSpec,
    Sample,
    import_reasonseg,
    import_refcoco,
    load_dataset,
    read_manifest,
    write_manifest,
)
from rscore.evaluation.report import summary_json, to_markdown, write_report
from rscore.evaluation.runner import EvalOptions, EvalReport, evaluate

if TYPE_CHECKING:
    from rscore.plugins import Registry

__all__ = [
    "EvalOptions",
    "EvalReport",
    "Manifest",
    "MaskSpec",
    "Sample",
    "eval_command",
    "evaluate",
    "import_reasonseg",
    "import_refcoco",
    "load_dataset",
    "read_manifest",
    "summary_json",
    "to_markdown",
    "write_manifest",
    "write_report",
]


def eval_command(
    plugin: str | None,
    dataset: str | os.PathLike[str],
    *,
    reasoner: str = "analytic",
    segmenter: str = "auto",
    as_json: bool = False,
    out: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, int]:
    """``rscore eval``: evaluate ``plugin`` on ``dataset`` and return ``(text to print, exit code)``.

    ``options`` is the flat ``-O KEY=VALUE`` mapping: evaluation settings (``seed``, ``queries``, ``limit``,
    ``on_error``, ``nc_size``, ``boundary``, ``bound_th``, ``hash_weights``) and engine options for every sample
    (``matcher``, ``model``, ``weights``, ``device``, ``adapter``, plugin thresholds...). With ``as_json`` the text is
    ``{"metrics": ..., "per_category": ..., "provenance": ...}``; otherwise a Markdown summary. ``out`` receives
    ``report.json`` (with per-sample records) and ``report.md``. Exit code 0 (user errors raise
    :mod:`rscore.errors` classes, mapped by the CLI).
    """
    opts = EvalOptions.from_options(options, reasoner=reasoner, segmenter=segmenter)
    if out is not None:
        from rscore.evaluation.report import check_report_dir

        check_report_dir(out)  # before the evaluation: a user's report.md is never overwritten
    report = evaluate(plugin, dataset, opts, registry, progress=progress)
    written = write_report(report, out) if out is not None else {}
    if as_json:
        return summary_json(report), 0
    text = to_markdown(report, max_samples=20)
    if written:
        text += f"\nreport written to {written['markdown']} and {written['json']}\n"
    return text.rstrip("\n"), 0
