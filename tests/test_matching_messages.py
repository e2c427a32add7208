"""The offline router's absent reasons, as a user reads them on the CLI: no internal -1 score and no empty list of
closest templates when no template of the plugin is about the query at all, and every "X < Y" it prints is true
as printed (it printed "margin 0.02 < 0.02" for a margin of 0.0158). Messages only: the decisions are unchanged
(benchmarks/routing/run_routing.py shows the figures)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from rscore.engine.matching import embeddings_available
from rscore.testing import run_cli

# what a user gets by default (auto = the MiniLM embeddings where installed); conftest sets keyword for other tests
needs_embeddings = pytest.mark.skipif(not embeddings_available(), reason="rscore[embeddings] not installed")

COMPARISON = re.compile(r"(-?\d+(?:\.\d+)?) < (?:threshold )?(-?\d+(?:\.\d+)?)")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    return path


def _reason(tmp_path, photo, plugin, query):
    out = tmp_path / query.replace(" ", "_")
    cli = run_cli("run", "--plugin", plugin, photo, query, "-o", out, "--json", env={"RSCORE_MATCHER": "embedding"})
    assert cli.exit_code == 0, cli.stderr
    assert cli.json["absent"] is True and cli.json["instances"] == []
    return cli.json["reason"]


def _comparisons_hold(reason):
    found = COMPARISON.findall(reason)
    for left, right in found:
        assert float(left) < float(right), reason
    return found


@needs_embeddings
def test_no_template_of_the_plugin_is_about_the_query(tmp_path, photo):
    reason = _reason(tmp_path, photo, "surgical", "workers without hard hats")
    assert "-1.00" not in reason and "closest: ." not in reason and "closest: ;" not in reason
    assert "no template of the surgical plugin is about this query" in reason
    _comparisons_hold(reason)


@needs_embeddings
def test_ambiguity_margin_is_printed_so_the_comparison_is_true(tmp_path, photo):
    reason = _reason(tmp_path, photo, "surgical", "liver lesions")
    assert "almost equally" in reason
    found = _comparisons_hold(reason)
    assert found and "margin 0.02 < 0.02" not in reason


def test_below_prints_enough_digits():
    from rscore.engine.matching import _below

    assert _below(0.0158, 0.02) == "0.016"
    assert _below(0.4996, 0.5) == "0.4996"
    assert _below(0.31, 0.5) == "0.31"
    assert float(_below(0.49999991, 0.5)) < 0.5
