"""Headless Chromium for the viewer tests (tests/test_service_browser.py, tests/test_viewer_browser.py).

They skip cleanly where selenium, chromium or chromedriver is missing or the browser does not start - except when
``RSCORE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it once chromium and chromedriver are installed): then each of these
is a failure, because a browser test that quietly skips in CI proves nothing."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

REQUIRED = os.environ.get("RSCORE_REQUIRE_BROWSER") == "1"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "needs selenium (pip install selenium; the `test` extra has it)"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "multipart")):
        return "the service needs fastapi, uvicorn and python-multipart"
    return None


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when the browser is required (CI)."""
    if REQUIRED:
        pytest.fail(f"RSCORE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def marks() -> list[pytest.MarkDecorator]:
    """The module marks: skip when the browser is missing, unless it is required (the fixture then fails)."""
    reason = missing()
    return [pytest.mark.skipif(reason is not None and not REQUIRED, reason=reason or "")]


def check_browser() -> None:
    """Called by the driver fixtures before starting the browser: fails when required and missing."""
    reason = missing()
    if reason is not None:
        unavailable(reason)
