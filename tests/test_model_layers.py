"""Layering of the model-backed parts: models -> segmenters / reasoners -> finetune, no cycle even through imports
inside functions, and the names that moved still importable from their old modules.

``tests/test_imports.py`` forbids module-level cycles everywhere; here function-level imports count too (they are
the logical dependencies), restricted to the packages below the engine: ``rscore.models`` (registry, catalogue,
LISA key mapping, adapters, SAM2 builds), ``rscore.segmenters``, ``rscore.reasoners``, ``rscore.finetune``.
"""

from __future__ import annotations

from test_imports import cycles, import_graph

LAYERS = ("rscore.models", "rscore.segmenters", "rscore.reasoners", "rscore.finetune")


def all_imports_graph(prefixes: tuple[str, ...] = LAYERS) -> dict[str, set[str]]:
    """Module -> the modules of ``prefixes`` it imports anywhere (functions included; ``TYPE_CHECKING`` blocks not):
    :func:`test_imports.import_graph` restricted to these layers."""
    full = import_graph(function_level=True)
    return {m: {d for d in deps if d.startswith(prefixes)} for m, deps in full.items() if m.startswith(prefixes)}


def test_the_graph_sees_imports_inside_functions():
    graph = all_imports_graph()
    # rscore/segmenters/sam2.py resolves its weights inside a method: a function-level edge downwards
    assert "rscore.models.registry" in graph["rscore.segmenters.sam2"]


def test_no_cycles_through_function_level_imports_below_the_engine():
    found = cycles(all_imports_graph())
    assert found == [], "cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_models_import_nothing_above_them():
    graph = all_imports_graph()
    upward = {m: sorted(d for d in deps if not d.startswith("rscore.models"))
              for m, deps in graph.items() if m.startswith("rscore.models") and m != "rscore.models.testing"}  # fmt: skip
    assert {m: d for m, d in upward.items() if d} == {}


def test_moved_names_keep_their_old_import_paths():
    from rscore.finetune import adapter as old_adapter
    from rscore.models import adapter, catalog, registry, sam2_build
    from rscore.segmenters import sam2

    assert sam2.build_sam2_model is sam2_build.build_sam2_model
    assert sam2.check_state_dict is sam2_build.check_state_dict
    assert old_adapter.read_adapter is adapter.read_adapter and old_adapter.ADAPTER_FILE == adapter.ADAPTER_FILE
    assert registry.MODELS is catalog.MODELS and registry.find_model is catalog.find_model
    assert registry.ModelSpec is catalog.ModelSpec
