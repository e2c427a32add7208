"""The one plan of a scene reasoned in tiles (:mod:`rscore.engine.decoupled`): the tiles' and the overview's plans
combined (steps prefixed with the tile and its span, targets in scene pixels, merges listed, summed request counts),
and the one line of overview context every tile's prompt gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rscore.types import Plan, Scene, Step, Target, Window

if TYPE_CHECKING:
    from rscore.engine.decoupled import TilingOptions

MAX_LISTED_STEPS = 20  # merge groups listed one step each
MAX_REASON_CHARS = 600
OVERVIEW_TARGETS = 5  # targets named in the overview line
# per-request counts summed over the overview and the tiles (the agent's loops: turns, tool calls, int tokens, times)
SUMMED = ("requests", "reason_time_s", "turns", "tool_calls", "tokens", "agent_time_s", "endpoint_time_s",
          "tool_time_s")


def _span(w: Window) -> str:
    return f"x {w.col_off}..{w.col_off + w.width}, y {w.row_off}..{w.row_off + w.height}"


def _offset_targets(
    targets: Sequence[Target], window: Window, scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[Target, ...]:
    """Targets in a sub-scene's pixels -> whole-scene pixels (scaled by ``scale`` first, for the overview)."""
    sx, sy = scale
    dx, dy = window.col_off, window.row_off
    out = []
    for t in targets:
        box = None
        if t.box is not None:
            x0, y0, x1, y1 = t.box
            box = (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
        points = tuple(((x + 0.5) * sx - 0.5 + dx, (y + 0.5) * sy - 0.5 + dy, f) for x, y, f in t.points)
        out.append(dataclasses.replace(t, box=box, points=points))
    return tuple(out)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _overview_line(plan: Plan, targets: Sequence[Target], factor: float) -> str:
    """One line for the tiles' prompts from the overview's plan (targets already in scene pixels)."""
    scale = f"shrunk {factor:.1f}x" if factor > 1 else "at full size"
    if plan.absent:
        why = f" ({_clip(plan.reason, 160)})" if plan.reason else ""
        return (
            f"a first look at the whole scene {scale} found nothing that answers the request{why}; small things may "
            "only show up at full resolution, so look carefully."
        )
    named = []
    for t in targets[:OVERVIEW_TARGETS]:
        if t.box is not None:
            x0, y0, x1, y1 = (round(v) for v in t.box)
            named.append(f"'{t.label}' around x {x0}..{x1}, y {y0}..{y1}")
        elif t.points:
            x, y, _ = t.points[0]
            named.append(f"'{t.label}' near x {round(x)}, y {round(y)}")
    more = f" and {len(targets) - OVERVIEW_TARGETS} more" if len(targets) > OVERVIEW_TARGETS else ""
    line = f"a first look at the whole scene {scale} found {len(targets)} candidate(s): {'; '.join(named)}{more}"
    model_steps = [s.text for s in plan.steps if s.operator is None]
    if model_steps:
        line += f". Its reasoning: {_clip(model_steps[-1], 200)}"
    return _clip(line + " (whole-scene pixel coordinates).", 700)


def _summed_match(plans: Sequence[Plan]) -> dict[str, Any]:
    """The first plan's match, with per-request counts, tokens and times summed over every plan."""
    match = dict(plans[0].match) if plans else {}
    for key in SUMMED:
        values = [p.match.get(key) for p in plans
                  if isinstance(p.match.get(key), (int, float)) and not isinstance(p.match.get(key), bool)]  # fmt: skip
        if values:
            match[key] = round(sum(values), 4) if key.endswith("_s") else int(sum(values))
    tokens = [p.match.get("tokens") for p in plans if isinstance(p.match.get("tokens"), Mapping)]
    if tokens:
        match["tokens"] = {k: sum(int(t.get(k) or 0) for t in tokens) for k in ("prompt_tokens", "completion_tokens")}
    match["repaired"] = any(bool(p.match.get("repaired")) for p in plans)
    return match


def _absent_reason(tile_plans: Sequence[tuple[int, Plan]], n: int, failed: int = 0) -> str:
    """Why nothing was found, from every reasoned tile's reason (identical reasons told once)."""
    reasons: dict[str, list[int]] = {}
    for k, p in tile_plans:
        reasons.setdefault(_clip(p.reason or "no reason given", 200), []).append(k + 1)
    if len(tile_plans) == 1 and not failed:
        return next(iter(reasons))
    head = f"none of the {len(tile_plans)} tiles shows it"
    if failed:
        head = f"none of the {len(tile_plans)} tile(s) reasoned shows it ({failed} of {n} could not be reasoned)"
    if len(reasons) == 1:
        return _clip(f"{head}: {next(iter(reasons))}", MAX_REASON_CHARS)
    parts = [
        f"tile {ks[0]}: {r}" if len(ks) == 1 else f"tiles {', '.join(map(str, ks))}: {r}" for r, ks in reasons.items()
    ]
    return _clip(f"{head} - " + "; ".join(parts), MAX_REASON_CHARS)


def _tiled_plan(
    scene: Scene,
    tile_plans: Sequence[tuple[int, Plan]],
    windows: Sequence[Window],
    overview_plan: Plan | None,
    overview_line: str,
    targets: tuple[Target, ...],
    groups: Sequence[Mapping[str, Any]],
    *,
    tile: int,
    overlap: int,
    grid: list[int],
    opts: TilingOptions,
    seg_name: str | None,
    counts: Mapping[str, int],
    failed: Sequence[tuple[int, Exception]] = (),
    overview_failed: str = "",
    concurrency: int = 1,
    concurrency_note: str = "",
    skipped: Sequence[int] = (),
    skip_note: str = "",
) -> Plan:
    height, width = scene.shape
    n = len(windows)
    plans = [p for _, p in tile_plans]
    all_plans = ([overview_plan] if overview_plan is not None else []) + plans
    reasoner_name = next((p.reasoner for p in all_plans if p.reasoner), "")
    with_targets = [k for k, p in tile_plans if not p.absent and p.targets]
    steps: list[Step] = [
        Step(
            f"the {width}x{height} scene is larger than one reasoning picture: it was reasoned in {n} tile(s) of "
            f"{tile} px ({grid[0]} x {grid[1]}, overlapping by at least {overlap} px)"
            + (", after a first look at the whole scene downscaled" if overview_plan is not None else ""),
            operator="tiles",
            params={"tile_px": tile, "overlap_px": overlap, "grid": list(grid), "overview": overview_plan is not None},
        )
    ]
    if concurrency_note:
        steps.append(Step(concurrency_note, operator="tiles", params={"reason_concurrency": concurrency}))
    seen_shared: set[str] = set()

    def add(prefix: str, plan: Plan) -> None:
        for s in plan.steps:
            if s.operator is not None and s.operator == plan.reasoner:  # e.g. which template's knowledge was given
                if s.text in seen_shared:
                    continue
                seen_shared.add(s.text)
                steps.append(s)
                continue
            steps.append(dataclasses.replace(s, text=f"{prefix}: {s.text}"))
        if plan.absent:
            steps.append(Step(f"{prefix}: absent - {plan.reason or 'no reason given'}", operator="tiles"))
        else:
            steps.append(Step(f"{prefix}: {len(plan.targets)} target(s)", operator="tiles"))

    if overview_plan is not None:
        add("overview", overview_plan)
        steps.append(Step(f"context given to every tile: {overview_line}", operator="tiles"))
    elif overview_failed:
        steps.append(Step(f"overview: failed ({_clip(overview_failed, 300)}); the tiles were reasoned without it",
                          operator="tiles"))
    for k, plan in tile_plans:
        add(f"tile {k + 1} ({_span(windows[k])})", plan)
    if skipped:
        steps.append(Step(f"tiles not reasoned ({_clip(', '.join(str(k + 1) for k in skipped), 200)}): {skip_note}",
                          operator="tiles", params={"tiles_skipped": [k + 1 for k in skipped]}))  # fmt: skip
    for k, exc in failed:
        steps.append(Step(f"tile {k + 1} ({_span(windows[k])}): could not be reasoned - {_clip(str(exc), 300)}",
                          operator="tiles"))
    steps.append(
        Step(
            f"{len(with_targets)} of {n} tile(s) had targets"
            + (f" (tiles {', '.join(str(k + 1) for k in with_targets)})" if with_targets else "")
            + f": {len(targets)} target(s) mapped to scene pixels",
            operator="tiles",
            stats={"tiles": n, "tiles_with_targets": [k + 1 for k in with_targets], "targets": len(targets)},
        )
    )
    if with_targets:
        steps.append(
            Step(
                f"segmented tile by tile with {seg_name or 'the reasoner’s own masks'}: {counts['segmented']} mask(s); "
                f"{counts['same_tile_merged']} same-tile duplicate(s) merged; {len(groups)} object(s) crossing tile "
                f"borders merged from {sum(g['pieces'] for g in groups)} piece(s) (IoU >= {opts.merge_iou:g} inside "
                f"the overlap); {counts['instances']} instance(s)",
                operator="tiles",
                stats=dict(counts, merged_groups=len(groups)),
            )
        )
        for g in groups[:MAX_LISTED_STEPS]:
            steps.append(
                Step(
                    f"merged across tiles {', '.join(str(t) for t in g['tiles'])}: '{g['label']}' at "
                    f"{tuple(g['bbox'])} from {g['pieces']} pieces (overlap IoU {g['iou']:.2f})",
                    operator="tiles",
                    stats=dict(g),
                )
            )
        if len(groups) > MAX_LISTED_STEPS:
            steps.append(Step(f"... and {len(groups) - MAX_LISTED_STEPS} more merged object(s)", operator="tiles"))

    raws = []
    if overview_plan is not None and overview_plan.raw is not None:
        raws.append(f"[overview]\n{overview_plan.raw}")
    raws += [f"[tile {k + 1}: {_span(windows[k])}]\n{p.raw}" for k, p in tile_plans if p.raw is not None]
    match = _summed_match(all_plans)
    match.pop("selected", None)  # the agent's mask numbers of one loop: meaningless for the whole scene
    if skip_note:  # a known limit of this answer (some tiles not looked at closely): the result's caveats
        match["caveats"] = [*match.get("caveats", ()), skip_note]
    match["image_original"] = [width, height]
    match["tiling"] = {
        "tiles": n,
        "tile_px": tile,
        "overlap_px": overlap,
        "grid": list(grid),
        "overview": overview_plan is not None,
        "tiles_with_targets": [k + 1 for k in with_targets],
        "merge_iou": opts.merge_iou,
        "merged_across_tiles": len(groups),
        "tiles_failed": [k + 1 for k, _ in failed],
        "concurrency": concurrency,
        "tiles_skipped": [k + 1 for k in skipped],
    }
    template = next((p.template for p in all_plans if p.template), None)
    absent = not with_targets
    return Plan(
        steps=tuple(steps),
        targets=() if absent else targets,
        absent=absent,
        reason=(_absent_reason(tile_plans, n, len(failed)) if tile_plans or overview_plan is None
                else _clip(f"the first look at the whole scene: {overview_plan.reason or 'nothing found'}; "
                           f"{skip_note}", MAX_REASON_CHARS)) if absent else "",
        template=template,
        reasoner=reasoner_name,
        match=match,
        raw="\n\n".join(raws) if raws else None,
    )
