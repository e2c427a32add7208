"""Writers that declare ``threadsafe`` run at the same time (rscore.engine.write.run_writers, issues 18/22): outputs
keep the writers' order, ``final`` writers run last and list every other output, the first failure wins (writers not
started are cancelled, running ones joined) and leaves no output folder, and ``-O workers=1`` writes one after
another."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscore import engine
from rscore.engine import write as write_mod
from rscore.errors import OptionError
from rscore.sdk import Writer


class _Registry:
    def __init__(self, writers):
        self.writers = writers

    def writers_for(self, plugin):
        return list(self.writers)


class _W(Writer):
    threadsafe = True

    def __init__(self, name, action=None, threadsafe=True):
        self.name = name
        self.action = action
        self.threadsafe = threadsafe
        self.thread = None
        self.ran = False

    def write(self, scene, result, out_dir):
        self.ran = True
        self.thread = threading.current_thread().name
        if self.action is not None:
            self.action()
        path = Path(out_dir) / f"{self.name}.txt"
        path.write_text(self.name)
        return {self.name: path}


class _Final(Writer):
    name = "last"
    final = True

    def write(self, scene, result, out_dir):
        self.seen = dict(result.outputs)
        path = Path(out_dir) / "last.txt"
        path.write_text("last")
        return {"last": path}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photo")
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 10:20] = 250
    Image.fromarray(img).save(folder / "photo.png")
    scene = engine.open_scene(folder / "photo.png")
    result = engine.segment(scene, "bright regions", options={"matcher": "keyword"})
    return scene, result


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr("rscore.engine.parallel.available_cores", lambda: 2)


def test_threadsafe_writers_run_at_once_and_outputs_keep_the_writers_order(job, tmp_path, two_cores):
    scene, result = job
    a_started, b_started = threading.Event(), threading.Event()

    def a():  # finishes only once b has started: one after another this would time out
        a_started.set()
        assert b_started.wait(10), "b never ran beside a"
        time.sleep(0.05)

    def b():
        b_started.set()
        assert a_started.wait(10)

    writers = [_W("a", a), _W("b", b), _W("c", threadsafe=False), _W("e"), _Final()]  # e waits for a free thread
    out = engine.write_outputs(scene, result, tmp_path / "out", registry=_Registry(writers))
    assert list(out.outputs) == ["a", "b", "c", "e", "last"]  # b finished first; the order is the writers'
    assert writers[-1].seen == {"a": "a.txt", "b": "b.txt", "c": "c.txt", "e": "e.txt"}  # the final one saw all
    assert writers[2].thread == threading.current_thread().name  # not thread-safe: in the caller
    assert writers[0].thread != writers[1].thread
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a.txt", "b.txt", "c.txt", "e.txt", "last.txt"]  # fmt: skip


def test_the_first_failure_wins_cancels_the_rest_and_leaves_no_folder(job, tmp_path, two_cores):
    scene, result = job
    b_running = threading.Event()

    def a():
        assert b_running.wait(10)
        raise OptionError("writer a failed: the first error")

    def b():
        b_running.set()
        time.sleep(0.3)  # still running when a fails: joined, not abandoned
        raise OptionError("writer b failed later")

    writers = [_W("a", a), _W("b", b), _W("c"), _W("d", threadsafe=False), _Final()]
    with pytest.raises(OptionError, match="the first error"):
        engine.write_outputs(scene, result, tmp_path / "out", registry=_Registry(writers))
    assert not writers[2].ran  # two threads: c had not started, and never does
    assert not writers[-1].__dict__.get("seen")
    assert list(tmp_path.iterdir()) == []  # no output folder, no staging folder left


def test_a_failure_in_the_callers_writer_stops_the_threads_too(job, tmp_path, two_cores):
    scene, result = job

    def boom():
        raise OptionError("the caller's writer failed")

    slow = _W("slow", lambda: time.sleep(0.2))
    writers = [slow, _W("x", lambda: time.sleep(0.2)), _W("y"), _W("bad", boom, threadsafe=False)]
    with pytest.raises(OptionError, match="caller's writer"):
        engine.write_outputs(scene, result, tmp_path / "out", registry=_Registry(writers))
    assert not writers[2].ran
    assert list(tmp_path.iterdir()) == []


def test_workers_1_writes_one_after_another(job, tmp_path, two_cores):
    scene, result = job
    assert write_mod.write_threads(result.replace(options={**result.options, "workers": 1})) == 1
    assert write_mod.write_threads(result.replace(options={**result.options, "workers": "auto"})) == 2
    assert write_mod.write_threads(result.replace(options={**result.options, "workers": 8})) == 2
    writers = [_W("a"), _W("b"), _Final()]
    one = result.replace(options={**result.options, "workers": 1})
    out = engine.write_outputs(scene, one, tmp_path / "out", registry=_Registry(writers))
    assert list(out.outputs) == ["a", "b", "last"]
    assert {w.thread for w in writers[:2]} == {threading.current_thread().name}
