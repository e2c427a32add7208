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


@pytest.fixture(scope="session")
def prefect_api_url():
    """The API URL of one temporary Prefect server for the whole test session (each start costs 8-12 s on 2 cores;
    no telemetry: its background writes only add noise). Shared by the flow, flow-output and Prefect-job tests."""
    import os

    pytest.importorskip("prefect")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # read by the server subprocess
        with prefect_test_harness(server_startup_timeout=timeout):
            yield PREFECT_API_URL.value()
