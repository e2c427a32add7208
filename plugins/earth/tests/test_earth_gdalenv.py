"""GDAL's block cache stays capped while writers run at once in threads (rscore_earth.gdalenv, issue 22): rasterio's
own Env restores the size it found when each Env exits, which lifted the cap under a writer still running."""

from __future__ import annotations

import threading

import pytest

from rscore_earth import gdalenv


def test_the_cap_holds_until_the_last_thread_leaves_and_the_old_size_comes_back(monkeypatch):
    from rasterio._env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    outside = int(get_gdal_config("GDAL_CACHEMAX"))
    assert outside != gdalenv.CACHE_BYTES  # else the test shows nothing
    a_in, a_out = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with gdalenv.gdal_env():
            a_in.set()
            assert b_in.wait(10)
        a_out.set()

    def second() -> None:
        assert a_in.wait(10)
        with gdalenv.gdal_env(GDAL_NUM_THREADS="1"):
            b_in.set()
            assert a_out.wait(10)
            seen["after the first left"] = int(get_gdal_config("GDAL_CACHEMAX"))

    b_in = threading.Event()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"after the first left": gdalenv.CACHE_BYTES}
    assert int(get_gdal_config("GDAL_CACHEMAX")) == outside


def test_an_error_inside_still_restores_the_size(monkeypatch):
    from rasterio._env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    outside = int(get_gdal_config("GDAL_CACHEMAX"))
    with pytest.raises(ZeroDivisionError):
        with gdalenv.gdal_env():
            with gdalenv.gdal_env():  # nested, as the COG writer's copy inside its own env
                assert int(get_gdal_config("GDAL_CACHEMAX")) == gdalenv.CACHE_BYTES
                1 / 0
    assert int(get_gdal_config("GDAL_CACHEMAX")) == outside
