"""Fixtures for the underwater plugin tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from rscore.sdk import OpContext
from rscore.types import ArraySource, Request, Scene


@pytest.fixture(autouse=True)
def _keyword_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, model-free template matching for these tests."""
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


def rgb_scene(
    rgb: np.ndarray, valid: np.ndarray | None = None, roles: tuple[str, ...] = ("red", "green", "blue")
) -> Scene:
    """A scene over an ``(H, W, bands)`` array."""
    return Scene(ArraySource(np.moveaxis(rgb, -1, 0).copy(), valid), "image", roles)


@pytest.fixture
def make_scene() -> Callable[..., Scene]:
    return rgb_scene


@pytest.fixture
def make_ctx() -> Callable[..., OpContext]:
    """``make_ctx(scene, options=None)``: an operator context with every registered operator."""
    from rscore.plugins import get_registry

    operators = get_registry().operators

    def make(scene: Scene, options: Mapping[str, Any] | None = None) -> OpContext:
        request = Request("test", plugin="underwater", options=dict(options or {}))
        return OpContext(scene, request, operators, params=request.options)

    return make


def reef_in_water(seed: int = 0, size: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """``(true colours, as seen underwater)`` uint8: a textured grey reef on the left half, smooth open water on the
    right (slightly brighter towards the top, as daylight from above), then a blue-green water cast (red absorbed)."""
    rng = np.random.default_rng(seed)
    h, w = size
    true = np.empty((h, w, 3))
    true[:, : w // 2] = 128 + rng.normal(0, 45, (h, w // 2, 1))  # texture
    gradient = np.linspace(150, 120, h)[:, None, None]
    true[:, w // 2 :] = gradient * np.array([0.55, 0.85, 1.0])  # water is blue-green even in true colour
    true = np.clip(true, 0, 255)
    seen = true * np.array([0.35, 0.85, 1.0])
    return true.astype(np.uint8), np.clip(seen, 0, 255).astype(np.uint8)


@pytest.fixture
def reef() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return reef_in_water
