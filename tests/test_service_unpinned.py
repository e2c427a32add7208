"""Where a checked input cannot be pinned (not Linux: no ``O_PATH`` or ``/proc``), the service fails closed: it
refuses to start with allowed roots unless ``RSCORE_UNPINNED_PATHS=1`` says that only trusted users write under them
(then it reads paths by name, as before pinning, and logs a warning). Simulated here by making
:func:`rscore.service.pinning.pinning_available` say no; the requests are real (uvicorn on loopback)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rscore.errors import OptionError
from rscore.service import Settings
from service_helpers import SERVICE_AND_EARTH, Services
from test_service_roots_race import QUERY, write_dem

pytestmark = [*SERVICE_AND_EARTH]


@pytest.fixture
def no_pinning(monkeypatch):
    from rscore.service import pinning

    monkeypatch.setattr(pinning, "pinning_available", lambda: False)


def test_allowed_roots_without_pinning_refuse_to_start(tmp_path: Path, no_pinning):
    root = tmp_path / "data"
    root.mkdir()
    env = {"RSCORE_ALLOWED_ROOTS": str(root)}
    for make in (lambda: Settings(allowed_roots=(root,)), lambda: Settings.from_env(env)):
        with pytest.raises(OptionError) as err:
            make()
        assert "RSCORE_UNPINNED_PATHS=1" in str(err.value) and "\n" not in str(err.value)
    Settings()  # no roots (uploads only): nothing to pin
    with pytest.raises(OptionError, match="RSCORE_UNPINNED_PATHS must be 1 or 0"):
        Settings.from_env({"RSCORE_ALLOWED_ROOTS": str(root), "RSCORE_UNPINNED_PATHS": "maybe"})


def test_unpinned_paths_accepted_on_request_with_a_warning(tmp_path: Path, no_pinning, caplog):
    from rscore.engine import default_registry

    root = tmp_path / "data"
    write_dem(root / "dem.tif", 0)
    settings = Settings.from_env({"RSCORE_ALLOWED_ROOTS": str(root), "RSCORE_UNPINNED_PATHS": "1"})
    assert settings.unpinned_paths
    services = Services()
    try:
        with caplog.at_level(logging.WARNING, logger="rscore.service"):
            client = services.start(default_registry(), output_root=tmp_path / "out", allowed_roots=(root,),
                                    unpinned_paths=True, workers=1, job_runner="inprocess")  # fmt: skip
        assert any("RSCORE_UNPINNED_PATHS=1" in r.getMessage() for r in caplog.records)
        r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "dem.tif"})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["summary"]["mask_area_px"] == 1920
        r = client.post("/v1/segment", data={"query": QUERY, "plugin": "earth", "path": "../dem.tif"})
        assert r.status_code == 403  # still checked against the roots
    finally:
        services.stop_all()
