"""The lattice cues (rscore_safety.scaffold.find_lattices) on degenerate and non-8-bit pictures: never a lattice
from nothing, never a silently wrapped picture."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from rscore_safety.scaffold import find_lattices  # noqa: E402


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 50, 3), (50, 1, 3), (3, 1), (64, 64, 3), (64, 64), (0, 0, 3)])
def test_blank_and_tiny_pictures_have_no_lattice(shape):
    for value in (0, 128, 255):
        lattices, counts = find_lattices(np.full(shape, value, np.uint8))
        assert lattices == [] and counts["standards"] == counts["ledgers"] == 0


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64, np.int32])
def test_a_picture_that_is_not_8_bit_is_refused_not_wrapped(dtype):
    """``astype(np.uint8)`` wrapped 16-bit levels modulo 256 (a picture of stripes out of a smooth ramp) and
    OpenCV failed on float64 with its own assertion text; the cues are tuned on 8-bit frames."""
    img = np.zeros((64, 64, 3), dtype)
    with pytest.raises(TypeError, match="8-bit"):
        find_lattices(img)
