"""An animated GIF's frame rate is its average (frames / total duration), not its first frame's delay.

The Intel worker GIF (../shared/data/construction) has delays of 60 and 70 ms: 71 frames in 4.74 s, 14.98 fps on
average, its first delay alone 16.67 fps. It was read at 16.67 fps, so result.json said 16.67 and overlay.mp4 played
in 4.26 s instead of 4.74 s. Checked through the CLI in a subprocess, the overlay's duration read back with PyAV.
"""

from __future__ import annotations

import json

import pytest

from rscore.testing import run_cli

GIF = ("construction", "intel_worker-zone-detection.gif")


@pytest.mark.shared_data
def test_gif_fps_is_the_average_and_the_overlay_lasts_as_long_as_the_source(shared_data, tmp_path):
    av = pytest.importorskip("av")
    gif = shared_data.joinpath(*GIF)
    if not gif.exists():
        pytest.skip(f"{gif} not present")
    with av.open(str(gif)) as src:
        stream = src.streams.video[0]
        pts = [f.pts for f in src.decode(stream)]
        source_s = float(stream.duration * stream.time_base)  # every frame's delay, the last one's included
    assert len(pts) == 71 and source_s == pytest.approx(4.74)
    out = tmp_path / "out"
    cli = run_cli("run", "--plugin", "safety", gif, "workers in hi-vis vests", "-o", out, "--json")
    assert cli.exit_code == 0, cli.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["scene"]["video"]["frame_count"] == 71
    assert doc["scene"]["video"]["fps"] == pytest.approx(71 / 4.74, abs=1e-3)  # 14.979, not 16.667
    with av.open(str(out / doc["outputs"]["overlay_video"])) as ov:
        stream = ov.streams.video[0]
        frames = sum(1 for _ in ov.decode(stream))
        overlay_s = ov.duration / 1e6
    assert frames == 71
    assert overlay_s == pytest.approx(source_s, abs=0.02)


def test_a_gif_of_uneven_delays_is_read_at_its_average_rate(tmp_path):
    """A GIF written here with delays of 50, 100 and 100 ms: 3 frames in 0.25 s = 12 fps (its first delay alone
    says 20), each frame at its own time."""
    pytest.importorskip("av")
    import numpy as np
    from PIL import Image

    from rscore.video.reader import open_video

    path = tmp_path / "uneven.gif"
    frames = [Image.fromarray(np.full((16, 24, 3), 60 * k, np.uint8)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[50, 100, 100], loop=0)
    with open_video(path) as reader:
        assert reader.info.frame_count == 3
        assert reader.info.fps == pytest.approx(12.0, abs=1e-6)
        assert [round(f.timestamp_s, 3) for f in reader] == [0.0, 0.05, 0.15]
