"""Figures and areas as people read them, shared by the CLI's tables and the notebook HTML (the web viewer's
``areaText`` in ``service/static/app.js`` follows the same rules)."""

from __future__ import annotations

__all__ = ["figure", "area_text"]


def figure(value: float) -> str:
    """Three significant figures below 100 (``2.67``, ``45.3``), whole numbers with thousands separators from 100
    (``3,200``, ``1,234,567``): no exponent (down to 1e-4)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def area_text(value: float, unit: str | None) -> str:
    """Human units, never an exponent: m2 below 1 ha (``3,200 m²``), ha from 1 to 100 ha (``2.67 ha``), km2 above
    (``1,234 km²``); mm2 -> cm2 from 1 cm2."""
    if unit == "m2":
        if value >= 1e6:
            return f"{figure(value / 1e6)} km²"
        if value >= 1e4:
            return f"{figure(value / 1e4)} ha"
        return f"{figure(value)} m²"
    if unit == "mm2" and value >= 100:
        return f"{figure(value / 100)} cm²"
    return f"{figure(value)} {(unit or '').replace('2', '²')}"
