"""A plugin that contributes one batch flow, ``demo-count``, over the demo plugin's ``.demo`` files: how a third
party adds a flow (the ``rscore_flows`` hook). Registered in-process with ``extra=[("demoflows", flow_plugin)]``
beside ``demo_plugin``; its Prefect flow lives in ``flow_plugin_flows`` (imported only where Prefect runs it)."""

from __future__ import annotations

from pathlib import Path

from rscore import hookimpl
from rscore.flowspec import FlowParam, FlowSpec


def count_item(path, out_dir, *, query, plugin, options, params, registry, progress=None):
    """One input: ``rscore.engine.run`` with the demo plugin, then ``count.txt`` = instances x ``factor``."""
    from rscore import engine

    result = engine.run(path, query, plugin="demo", out_dir=out_dir, options=options, registry=registry,
                        progress=progress)  # fmt: skip
    factor = int(params["factor"])  # declared with a default: always given (FlowSpec.item_params)
    (Path(out_dir) / "count.txt").write_text(str(len(result.instances) * factor))
    return result


DEMO_COUNT = FlowSpec(
    "demo-count", "flow_plugin_flows:demo_count", "Count bright spots per .demo file.", "one .demo file",
    params=(FlowParam("factor", "int", "multiply the count", 1, (1, 100), job=True),),
    query="optional", plugin="demo", run_item=count_item,
)  # fmt: skip


@hookimpl
def rscore_flows():
    return [DEMO_COUNT]
