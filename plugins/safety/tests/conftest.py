"""Fixtures for the safety plugin tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from rscore.sdk import OpContext
from rscore.types import ArraySource, Request, Scene


@pytest.fixture(autouse=True)
def _keyword_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, model-free template matching for these tests."""
    monkeypatch.setenv("RSCORE_MATCHER", "keyword")


@pytest.fixture
def make_ctx() -> Callable[..., OpContext]:
    """``make_ctx(rgb (H, W, 3), options=None)``: an operator context over an RGB scene with every operator."""
    from rscore.plugins import get_registry

    operators = get_registry().operators

    def make(rgb: np.ndarray, options: Mapping[str, Any] | None = None) -> OpContext:
        scene = Scene(ArraySource(np.moveaxis(rgb, -1, 0).copy()), "image", ("red", "green", "blue"))
        request = Request("test", plugin="safety", options=dict(options or {}))
        return OpContext(scene, request, operators, params=request.options)

    return make


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    """Frames (RGB uint8) at the given indices of a video, read with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    try:
        while len(out) < len(indices):
            ok, frame = cap.read()
            if not ok:
                raise AssertionError(f"{path}: could not read frame {i}")
            if i in indices:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    return out


@pytest.fixture
def frames() -> Callable[[Path, list[int]], list[np.ndarray]]:
    return read_frames
