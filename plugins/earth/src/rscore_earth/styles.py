"""Styles that make the rasters open ready to read in GIS tools, written beside each COG:

- ``<name>.qml``: a QGIS layer style (QGIS loads a ``.qml`` with the raster's name as its default style): the mask
  and classes as a paletted layer whose 0 ("none") is fully transparent and whose legend reads the class names;
  the score as a 0-1 colour ramp, transparent at 0.
- ``<name>.tif.aux.xml``: GDAL's side-car (PAM) with the band's category names and a thematic raster attribute
  table (value, class, colour with alpha) - what ``gdalinfo``, QGIS and ArcGIS show as the legend of a categorical
  raster. (A TIFF palette itself holds no alpha: 0 is made transparent by these two files.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

__all__ = ["categorical_qml", "score_qml", "write_categories_aux", "hex_colour"]

QGIS_VERSION = "3.28.0-Firenze"
SCORE_RAMP = ((0.0, (255, 255, 204)), (0.35, (254, 217, 118)), (0.5, (253, 141, 60)), (0.75, (227, 26, 28)),
              (1.0, (128, 0, 38)))  # fmt: skip


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def _qgis(renderer: ET.Element) -> ET.ElementTree:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return ET.ElementTree(root)


def _write(tree: ET.ElementTree, path: Path) -> Path:
    with open(path, "wb") as fh:
        fh.write(b"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
        tree.write(fh, encoding="utf-8", xml_declaration=False)
    return path


def categorical_qml(path: Path, names: Sequence[str], colours: Sequence[Sequence[int]], opacity: float = 0.8) -> Path:
    """A paletted style: value 0 ("none") transparent, value k (1-based) in ``colours[k-1]`` labelled ``names[k-1]``."""
    renderer = ET.Element("rasterrenderer", type="paletted", band="1", opacity=f"{opacity:g}", alphaBand="-1",
                          nodataColor="")  # fmt: skip
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    ET.SubElement(palette, "paletteEntry", value="0", color="#000000", alpha="0", label="none")
    for k, (name, rgb) in enumerate(zip(names, colours), start=1):
        ET.SubElement(palette, "paletteEntry", value=str(k), color=hex_colour(rgb), alpha="255", label=name)
    return _write(_qgis(renderer), path)


def score_qml(path: Path, opacity: float = 0.8) -> Path:
    """A 0-1 pseudocolour ramp (light yellow to dark red), transparent at 0."""
    renderer = ET.Element("rasterrenderer", type="singlebandpseudocolor", band="1", opacity=f"{opacity:g}",
                          alphaBand="-1", classificationMin="0", classificationMax="1", nodataColor="")  # fmt: skip
    ET.SubElement(renderer, "rasterTransparency")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", colorRampType="INTERPOLATED",
                           classificationMode="1", clip="0", minimumValue="0", maximumValue="1")  # fmt: skip
    for value, rgb in SCORE_RAMP:
        ET.SubElement(shader, "item", value=f"{value:g}", color=hex_colour(rgb), alpha="0" if value == 0 else "255",
                      label=f"{value:g}")  # fmt: skip
    return _write(_qgis(renderer), path)


def write_categories_aux(tif: Path, names: Sequence[str], colours: Sequence[Sequence[int]]) -> Path:
    """``<tif>.aux.xml`` with category names (``none`` for 0, then ``names``) and a thematic raster attribute
    table: Value, Class, Red, Green, Blue, Alpha (0 transparent)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in ("none", *names):
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 min-max (the value), 2 name, 6-9 red, green, blue, alpha
    for i, (name, ftype, usage) in enumerate(
        (("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9))
    ):
        fd = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(fd, "Name").text = name
        ET.SubElement(fd, "Type").text = str(ftype)
        ET.SubElement(fd, "Usage").text = str(usage)
    rows = [(0, "none", (0, 0, 0), 0)] + [(k, n, c, 255) for k, (n, c) in enumerate(zip(names, colours), start=1)]
    for i, (value, name, rgb, alpha) in enumerate(rows):
        row = ET.SubElement(rat, "Row", index=str(i))
        for v in (value, name, *(int(c) for c in rgb[:3]), alpha):
            ET.SubElement(row, "F").text = str(v)
    ET.indent(root)
    path = tif.with_name(tif.name + ".aux.xml")
    ET.ElementTree(root).write(path, encoding="utf-8")
    return path
