"""Routing benchmark: does the offline analytic planner answer the right template, or honestly ``absent``?

Queries live in two labelled halves beside this script (``plugin kind category expected query``, tab separated):

- ``eval.tsv`` - written before any router change and never tuned on;
- ``tune.tsv`` - thresholds, margins and the confidence calibration of ``rscore.engine.matching`` are fitted here.

Each query goes through the real planner (``AnalyticReasoner.plan``, the same call ``rscore run`` makes) with the
plugin's registered templates and a small in-memory scene of the given kind that has every band role, so the
figures measure routing alone (no pixels are processed). Printed per half:

- ``wrong on absent``: share of the queries whose right answer is absent that got a mask anyway (target <= 3 %).
  A declared superset answer (``plan.match["specificity"]["decision"] == "superset"``, which puts a caveat in the
  result) counts as right where the label allows it (``absent:superset=T``); silently answering T is wrong.
- ``paraphrase accuracy``: share of the queries labelled with a template that this template answered (>= 95 %).
- ``overall accuracy`` and per category.
- ``VLM template named``: of the queries that need a VLM-only template, the share whose absent answer names it.
- calibration of ``plan.match["confidence"]`` (what becomes ``Result.confidence``) on answered queries against
  "the right template answered and its mask is what was asked" (a superset answer is not): expected calibration
  error over 5 bins, Brier score, mean confidence vs that accuracy. ``n/a`` when the router gives none.

    python benchmarks/routing/run_routing.py                  # both halves
    python benchmarks/routing/run_routing.py --errors         # and list every mistake of the tune half
    python benchmarks/routing/run_routing.py --fit            # refit the confidence calibration on tune.tsv
    python benchmarks/routing/run_routing.py --matcher keyword
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
HALVES = ("eval", "tune")
ROLES = ("red", "green", "blue", "nir", "swir", "elevation", "hu", "gray")


@dataclass(frozen=True)
class Row:
    plugin: str
    kind: str
    category: str
    expected: str  # template name or "absent"
    vlm: str | None
    superset: tuple[str, ...]
    query: str
    program: str | None = None  # absent:planner=P: the constraint planner compiling exactly P is right too


def load(half: str) -> list[Row]:
    rows = []
    for n, line in enumerate((HERE / f"{half}.tsv").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 5:
            raise SystemExit(f"{half}.tsv:{n}: expected 5 tab-separated fields, got {len(parts)}")
        plugin, kind, category, expected, query = parts
        vlm, superset, program = None, (), None
        if expected.startswith("absent:"):
            key, _, value = expected[len("absent:"):].partition("=")
            if key == "vlm":
                vlm = value
            elif key == "superset":
                superset = tuple(value.split("|"))
            elif key == "planner":
                program = value
            else:
                raise SystemExit(f"{half}.tsv:{n}: unknown label {expected!r}")
            expected = "absent"
        rows.append(Row(plugin, kind, category, expected, vlm, superset, query, program))
    return rows


@dataclass
class Outcome:
    row: Row
    answer: str  # template name or "absent"
    superset: bool
    confidence: float | None
    correct: bool
    named_vlm: bool
    match: dict[str, Any]
    reason: str


def route(rows: list[Row], matcher: str | None) -> list[Outcome]:
    from rscore.engine.analytic import AnalyticReasoner
    from rscore.errors import RscoreError
    from rscore.plugins import get_registry
    from rscore.types import ArraySource, Plan, Request, Scene

    reg = get_registry()
    reasoner = AnalyticReasoner({"matcher": matcher} if matcher else None)
    source = ArraySource(np.zeros((len(ROLES), 8, 8), np.float32))
    out = []
    for row in rows:
        scene = Scene(source, row.kind, ROLES, reader="benchmark")
        request = Request(query=row.query, plugin=row.plugin, options={})
        try:
            plan = reasoner.plan(scene, request, reg.templates_for(row.plugin))
        except RscoreError as exc:  # e.g. a template needing bands: counts as not answered
            plan = Plan(absent=True, reason=str(exc))
        answer = "absent" if plan.absent else (plan.template or "").split(":")[-1]
        if answer == "planner" and plan.match.get("canonical"):
            answer = f"planner:{plan.match['canonical']}"
        spec = plan.match.get("specificity") or {}
        superset = not plan.absent and isinstance(spec, dict) and spec.get("decision") == "superset"
        if row.expected == "absent":
            correct = (answer == "absent" or (superset and answer in row.superset)
                       or (row.program is not None and answer == f"planner:{row.program}"))
        else:
            correct = answer == row.expected
        named = bool(row.vlm) and plan.absent and (
            plan.match.get("needs_vlm") == f"{row.plugin}:{row.vlm}" or f"`{row.vlm}`" in plan.reason
        )
        conf = plan.match.get("confidence")
        out.append(Outcome(row, answer, superset, None if conf is None else float(conf), correct, named,
                           dict(plan.match), plan.reason))
    return out


def _pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:5.1f} % ({num}/{den})" if den else "  n/a"


def exact(o: Outcome) -> bool:
    """What confidence predicts: the right template answered and its mask is what was asked (a declared superset
    answer is right to give, with its caveat, but its mask is more than was asked)."""
    return o.correct and not o.superset


def calibration(outcomes: list[Outcome], bins: int = 5) -> dict[str, float] | None:
    # routed answers carry a confidence; programs compiled by the constraint planner (rscore.planner) do not: they
    # are read, not matched, and are counted apart
    answered = [o for o in outcomes if o.answer != "absent" and not o.answer.startswith("planner")]
    if not answered or any(o.confidence is None for o in answered):
        return None
    c = np.array([o.confidence for o in answered], float)
    y = np.array([exact(o) for o in answered], float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
    ece = sum(abs(c[idx == b].mean() - y[idx == b].mean()) * (idx == b).sum() for b in range(bins) if (idx == b).any())
    return {"ece": float(ece / len(c)), "brier": float(np.mean((c - y) ** 2)), "mean_confidence": float(c.mean()),
            "accuracy": float(y.mean()), "answered": len(c)}


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    absent = [o for o in outcomes if o.row.expected == "absent"]
    para = [o for o in outcomes if o.row.expected != "absent"]
    vlm = [o for o in outcomes if o.row.vlm]
    cats: dict[str, list[Outcome]] = {}
    for o in outcomes:
        cats.setdefault(o.row.category, []).append(o)
    return {
        "queries": len(outcomes),
        "wrong_on_absent": (sum(not o.correct for o in absent), len(absent)),
        "paraphrase": (sum(o.correct for o in para), len(para)),
        "overall": (sum(o.correct for o in outcomes), len(outcomes)),
        "vlm_named": (sum(o.named_vlm for o in vlm), len(vlm)),
        # constraint programs compiled for queries labelled absent (right only where the label names the program)
        "planner_on_absent": (sum(o.answer.startswith("planner") for o in absent),
                              sum(o.answer.startswith("planner") and not o.correct for o in absent)),
        "categories": {k: (sum(o.correct for o in v), len(v)) for k, v in sorted(cats.items())},
        "calibration": calibration(outcomes),
    }


def report(half: str, s: dict[str, Any]) -> None:
    print(f"== {half}: {s['queries']} queries")
    print(f"  wrong on absent      {_pct(*s['wrong_on_absent'])}   (target <= 3 %)")
    print(f"  paraphrase accuracy  {_pct(*s['paraphrase'])}   (target >= 95 %)")
    print(f"  overall accuracy     {_pct(*s['overall'])}")
    print(f"  VLM template named   {_pct(*s['vlm_named'])}")
    n, bad = s["planner_on_absent"]
    print(f"  planner on absent    {n} compiled by the constraint planner ({bad} of them counted wrong above)")
    cal = s["calibration"]
    if cal is None:
        print("  calibration          n/a (the router reports no confidence)")
    else:
        print(f"  calibration          ECE {cal['ece']:.3f}  Brier {cal['brier']:.3f}  mean confidence "
              f"{cal['mean_confidence']:.2f} vs accuracy {cal['accuracy']:.2f} on {cal['answered']} answered")
    print("  by category          " + "  ".join(f"{k} {c}/{n}" for k, (c, n) in s["categories"].items()))


def side_by_side(figures: dict[str, dict[str, Any]]) -> None:
    halves = list(figures)
    print("\n" + f"{'':22}" + "".join(f"{h:>24}" for h in halves))
    for key, label in (("wrong_on_absent", "wrong on absent"), ("paraphrase", "paraphrase accuracy"),
                       ("overall", "overall accuracy"), ("vlm_named", "VLM template named")):
        print(f"{label:22}" + "".join(f"{_pct(*figures[h][key]):>24}" for h in halves))
    cal = {h: figures[h]["calibration"] for h in halves}
    ece = ["n/a" if c is None else f"{c['ece']:.3f} / {c['brier']:.3f}" for c in cal.values()]
    print(f"{'ECE / Brier':22}" + "".join(f"{e:>24}" for e in ece))


def fit_confidence(outcomes: list[Outcome]) -> None:
    """Logistic regression of correctness on the router's features, for answered queries (Newton's method)."""
    answered = [o for o in outcomes if o.answer != "absent" and "features" in o.match]
    if not answered:
        print("no answered queries with features to fit")
        return
    names = sorted(answered[0].match["features"])
    x = np.array([[o.match["features"][k] for k in names] for o in answered], float)
    x = np.hstack([np.ones((len(x), 1)), x])
    y = np.array([exact(o) for o in answered], float)
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + 0.1 * np.r_[0, w[1:]]  # light L2: few points, keep weights sane
        hess = x.T @ (x * (p * (1 - p))[:, None]) + 0.1 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        w -= np.linalg.solve(hess, grad)
    print(f"fitted on {len(y)} answered tune queries ({int(y.sum())} right):")
    print("CALIBRATION = {" + ", ".join([f'"bias": {w[0]:.3f}'] + [f'"{k}": {v:.3f}' for k, v in zip(names, w[1:])])
          + "}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matcher", choices=("auto", "embedding", "keyword"))
    ap.add_argument("--halves", default=",".join(HALVES))
    ap.add_argument("--errors", action="store_true", help="list every wrong routing of the tune half")
    ap.add_argument("--eval-errors", action="store_true",
                    help="also list the eval half's (only to report them: never to choose phrases or thresholds)")
    ap.add_argument("--fit", action="store_true", help="fit the confidence calibration on the tune half")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    figures = {}
    for half in args.halves.split(","):
        outcomes = route(load(half), args.matcher)
        s = summary(outcomes)
        figures[half] = s
        report(half, s)
        if args.errors and half == "eval" and not args.eval_errors:
            print("    (eval errors are not listed: tuning looks at tune.tsv only; --eval-errors lists them)")
        elif args.errors:
            for o in outcomes:
                if not o.correct:
                    r = o.row
                    label = r.expected + (f" (vlm={r.vlm})" if r.vlm else "") + (
                        f" (superset ok: {'|'.join(r.superset)})" if r.superset else "")
                    got = o.answer + (" [superset caveat]" if o.superset else "")
                    print(f"    WRONG {r.plugin}/{r.kind} [{r.category}] {r.query!r}: expected {label}, got {got}"
                          f" (score {o.match.get('score')}, {o.reason[:90]})")
        if args.fit and half == "tune":
            fit_confidence(outcomes)
    if len(figures) > 1:
        side_by_side(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
