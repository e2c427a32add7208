"""The Prefect flow of ``flow_plugin``'s ``demo-count`` (a per-input flow: a task per input)."""

from __future__ import annotations

from flow_plugin import DEMO_COUNT

from rscore_flows.per_input import per_input_flow

demo_count = per_input_flow(DEMO_COUNT.name, DEMO_COUNT.run_item, DEMO_COUNT.description, default_query="bright spots")
