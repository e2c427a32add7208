"""Local models: the registry (names -> hub ids / files), weight resolution, device choice, and the functions behind
``rscore models list | pull | verify``.

::

    rscore models list [--json] [--weights DIR]   -> list_command(as_json=..., weights=...)   -> (text, exit code)
    rscore models pull NAME [--to DIR]            -> pull_command(name, to=...)             -> (text, exit code)
    rscore models verify NAME [--weights DIR]     -> verify_command(name, weights=...)      -> (text, exit code)

The ``*_command`` functions return what the CLI prints and its exit code, and raise :mod:`rscore.errors` classes for
user errors (unknown name: :class:`~rscore.errors.OptionError`; no network: :class:`~rscore.errors.BackendUnavailable`)
so that the CLI maps them like every other error. Importing this package is cheap (no torch, no transformers).
"""

from __future__ import annotations

import json
import os

from rscore.models.registry import (
    MODELS,
    WEIGHTS_ENV,
    ModelSpec,
    ResolvedModel,
    VerifyReport,
    find_model,
    format_rows,
    get_model,
    list_models,
    model_rows,
    pull,
    resolve,
    resolve_auto,
    verify,
    weights_dir,
)

__all__ = [
    "MODELS",
    "WEIGHTS_ENV",
    "ModelSpec",
    "ResolvedModel",
    "VerifyReport",
    "find_model",
    "format_rows",
    "get_model",
    "list_models",
    "model_rows",
    "pull",
    "resolve",
    "resolve_auto",
    "verify",
    "weights_dir",
    "list_command",
    "pull_command",
    "verify_command",
]


def list_command(
    *,
    as_json: bool = False,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    kind: str | None = None,
) -> tuple[str, int]:
    """``rscore models list [--json]``: every registered model and whether its weights are here. Exit code 0."""
    rows = model_rows(weights=weights, cache_dir=cache_dir, kind=kind)
    if as_json:
        return json.dumps({"models": rows}, indent=2), 0
    here = sum(1 for r in rows if r["available"])
    missing = [r for r in rows if not r["available"]]
    lines = [format_rows(rows), ""]
    if missing:
        lines.append("Not here: `rscore models pull NAME` where there is network (Hugging Face cache, or --to DIR), or "
                     "on any connected machine the command below, then copy DIR here and pass --weights DIR; check "
                     "with `rscore models verify NAME --weights DIR`:")
        lines += [f"  {r['name']}: {r['offline'].split('  (then')[0]}" for r in missing]
        lines.append("")
    if kind in (None, "detector"):
        lines.append("YOLO detectors are your own ONNX exports (e.g. `yolo export model=best.pt format=onnx`), named "
                     "by path: --detector site.onnx; `rscore models verify site.onnx` checks its layout and classes.")
        lines.append("")
    lines.append(f"{here} of {len(rows)} models have their weights here.")
    return "\n".join(lines), 0


def pull_command(
    name: str,
    *,
    to: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> tuple[str, int]:
    """``rscore models pull NAME [--to DIR]``: download into the Hugging Face cache (or ``DIR/NAME``). Exit code 0;
    failures raise :class:`~rscore.errors.BackendUnavailable` (exit 2)."""
    spec = get_model(name)
    folder = pull(name, cache_dir=cache_dir, to=to, revision=revision)
    report = verify(name, weights=to, cache_dir=cache_dir)
    status = "verified" if report.ok else "downloaded, but: " + "; ".join(report.problems)
    use = f" (use it with --weights {to})" if to is not None else ""
    return f"{spec.name}: {spec.repo_id} -> {folder}{use}: {status}", 0 if report.ok else 2


def verify_command(
    name: str,
    *,
    as_json: bool = False,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, int]:
    """``rscore models verify NAME``: exit 0 when the files are complete and the configuration loads; exit 2 with the
    problems (the first being what to run or provide when the weights are absent) otherwise."""
    if name.lower().endswith(".onnx"):  # a YOLO export named by path: its layout, classes and names
        from rscore.detectors.yolo_onnx import verify_onnx

        doc = verify_onnx(name)
        return (json.dumps(doc, indent=2) if as_json else doc["text"]), 0 if doc["ok"] else 2
    report = verify(name, weights=weights, cache_dir=cache_dir)
    if as_json:
        return json.dumps(report.to_dict(), indent=2), 0 if report.ok else 2
    if not report.ok:
        return "; ".join(report.problems), 2
    total = sum(report.files.values())
    details: list[str] = [f"{len(report.files)} file(s), {total / 1e6:.1f} MB"]
    details += [f"{k}={v}" for k, v in report.config.items() if isinstance(v, (str, int, float))]
    return f"{report.name}: ok ({report.source}: {report.path}; {', '.join(details)})", 0

