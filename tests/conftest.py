from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rscore.plugins import get_plugin_manager, get_registry

sys.path.insert(0, str(Path(__file__).parent))  # for demo_plugin (tests run with --import-mode=importlib)


@pytest.fixture(autouse=True)
def _keyword_matcher(monkeypatch):
    """Core tests use the lexical matcher (fast, deterministic); test_matching covers embeddings."""
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


@pytest.fixture
def demo_registry():
    import demo_plugin

    return get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin)]))


@pytest.fixture
def disc_image():
    """A 128x160 grey image: a bright disc (r=20 at 60,50) and a bright square on a dark noisy background."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (128, 160)).astype(np.uint8)
    yy, xx = np.mgrid[:128, :160]
    disc = (yy - 50) ** 2 + (xx - 60) ** 2 <= 20**2
    img[disc] = 220
    img[90:110, 120:150] = 200
    return img, disc
