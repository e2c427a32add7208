"""The listing commands of the ``rscore`` CLI: ``rscore plugins list``, ``templates list`` / ``templates show``,
``operators list`` and ``options list`` (what is installed and what it declares). Moved out of :mod:`rscore.cli`,
which adds these sub-apps to its app and re-exports every name here."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from rscore.errors import OptionError

__all__ = [
    "plugins_app", "templates_app", "operators_app", "options_app",
    "plugins_list", "templates_list", "templates_show", "operators_list", "options_list",
]

plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True)
templates_app = typer.Typer(help="Query templates of the installed plugins.", no_args_is_help=True)
operators_app = typer.Typer(help="Typed analytic operators that templates and the planner compose.", no_args_is_help=True)
options_app = typer.Typer(help="The -O KEY=VALUE options the core and the plugins declare.", no_args_is_help=True)

@plugins_app.command("list")
def plugins_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List installed plugins, their versions and the hooks they implement."""
    from dataclasses import asdict

    from rscore.engine import default_registry

    infos = default_registry().plugins()
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in infos], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("plugin", "distribution", "version", "templates", "hooks")
    for p in infos:
        hooks = ", ".join(h.removeprefix("rscore_") for h in p.hooks)
        if p.error:  # an installed plugin that failed to load: listed with its error, skipped everywhere else
            hooks = f"[red]skipped:[/] {escape(p.error)}"
        table.add_row(p.name, p.distribution or "", p.version or "", str(p.templates), hooks)
    Console().print(table)


@templates_app.command("list")
def templates_list(
    plugin: Annotated[Optional[str], typer.Option("--plugin", "-p", help="Only this plugin's templates.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    programs: Annotated[
        bool, typer.Option("--programs", help="Show each template as a program: the operators it calls and its rule.")
    ] = False,
) -> None:
    """List query templates: what each answers, offline or with a VLM, and what bands it needs."""
    from rscore.engine import default_registry

    templates = default_registry().templates_for(plugin)
    rows = [
        {
            "plugin": t.plugin,
            "name": t.name,
            "label": t.label,
            "description": t.description,
            "examples": list(t.examples),
            "offline": t.program is not None,
            "explain": t.explain,
            "requires": list(t.requires),
            "kinds": list(t.kinds),
            "sources": list(t.sources),
            "caveats": list(t.caveats),
            "includes": list(t.includes),
            "broader": list(t.broader),
            "excludes": list(t.excludes),
            "program": t.program_info(),
            "program_text": t.program_text(),
        }
        for t in templates
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if programs:
        table = Table("template", "program (operators it calls)", "rule", show_lines=True)
        for r in rows:
            table.add_row(f"{r['plugin']}:{r['name']}", escape(r["program_text"]), escape(r["explain"]))
        Console().print(table)
        return
    table = Table("plugin", "template", "offline", "needs", "example query")
    for r in rows:
        table.add_row(r["plugin"], r["name"], "yes" if r["offline"] else "VLM", ",".join(r["requires"]), (r["examples"] or [""])[0])
    Console().print(table)


@templates_app.command("show")
def templates_show(
    name: Annotated[str, typer.Argument(help="Template name, or PLUGIN:NAME when several plugins have it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one template as a program: the operators it calls (with literal parameters), its rule and its limits."""
    import difflib

    from rscore.engine import default_registry

    templates = default_registry().templates
    found = [t for t in templates if name in (t.qualified_name, t.name)]
    if len(found) != 1:
        names = sorted(t.qualified_name for t in templates)
        if found:
            raise OptionError(f"template '{name}' is in several plugins: {', '.join(t.qualified_name for t in found)}")
        close = difflib.get_close_matches(name, names + [t.name for t in templates], n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else " (rscore templates list shows them)"
        raise OptionError(f"no template '{name}'{hint}")
    t = found[0]
    info = {"name": t.qualified_name, "label": t.label, "description": t.description, "kinds": list(t.kinds),
            "requires": list(t.requires), "needs": list(t.needs), "program": t.program_info(),
            "sources": list(t.sources), "caveats": list(t.caveats), "examples": list(t.examples)}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    lines = [f"{t.qualified_name}: {t.label} - {t.description}"]
    if t.program is None:
        lines.append("program: none offline (a VLM reasoner answers it)")
    elif t.uses:
        lines.append("program over operators:")
        lines += [f"  {i}. {u}" for i, u in enumerate(t.uses, 1)]
    else:
        lines.append(t.program_text().replace("direct code", "program: direct code", 1))
    lines += [f"rule: {t.explain}"] if t.explain else []
    lines += [f"bands: {', '.join(t.requires)}"] if t.requires else []
    lines += [f"sources: {'; '.join(t.sources)}"] if t.sources else []
    lines += [f"caveat: {c}" for c in t.caveats]
    typer.echo("\n".join(lines))


@operators_app.command("list")
def operators_list(
    plugin: Annotated[Optional[str], typer.Option("--plugin", "-p", help="Only this plugin's operators.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (parameters as JSON Schema too).")] = False,
) -> None:
    """List operators with their typed signatures: parameters (type, unit, range, default) and what they return."""
    from rscore.engine import default_registry

    reg = default_registry()
    reg.require_plugin(plugin)
    ops = [op for op in reg.operators.values() if plugin is None or op.name.split(".", 1)[0] == plugin]
    used_by: dict[str, list[str]] = {}
    for t in reg.templates:
        for u in t.uses:
            used_by.setdefault(u.operator, []).append(t.qualified_name)
    rows = [{**op.to_dict(), "schema": op.json_schema(), "used_by": used_by.get(op.name, [])}
            for op in sorted(ops, key=lambda o: o.name)]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("signature", "returns", "needs", "options", "description")
    for r in rows:
        table.add_row(r["signature"], r["returns"], ",".join(r["requires"]),
                      ",".join(o["name"] for o in r["options"]), r["description"])  # fmt: skip
    Console().print(table)


@options_app.command("list")
def options_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every -O option the core, the plugins and their operators declare (type, unit, range, default)."""
    from rscore.engine import default_registry

    rows = [{"plugin": plug, **param.to_dict()} for _, (plug, param) in sorted(default_registry().options.items())]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("option", "plugin", "type", "unit", "default", "description")
    for r in rows:
        default = "" if r["default"] is None else str(r["default"])
        table.add_row(r["name"], r["plugin"], r["type"], r["unit"], default, r["description"])
    Console().print(table)
