"""Milliseconds per source of the service's check of a GDAL VRT before any reader opens it
(:func:`rscore.service.security.check_linked`), with the per-source checks of :mod:`rscore.service.linked`.

A VRT naming ``--sources`` small GeoTIFF tiles (real files written with rasterio) in one folder under the root,
checked ``--repeat`` times each way, the rows interleaved so that load from other work hits both alike:

- ``before``: every source opened with GDAL for its file list (the fast path switched off: what the check did
  before it knew that a GeoTIFF, PNG or JPEG names no other file);
- ``after``: a GeoTIFF source among clean folders is not opened (:func:`rscore.service.linked._fast_path`: magic
  bytes, then one listing of its folder and parent folder per request);
- ``after, ERS headers``: the same number of ERMapper ``.ers`` headers (a format that names its data file): still
  opened with GDAL, one by one.

::

    python benchmarks/bench_vrt_check.py --sources 400

Measured 2026-12-06 (h6g) on the shared 2-core machine under load from other work (load average 2.4-3), so the ratio
counts more than the figures; median of 3:

===========  ==================  ==================  ======================
sources      before (ms/source)  after (ms/source)   after, ERS (ms/source)
===========  ==================  ==================  ======================
400          0.48                0.073               0.34
2,000        0.67                0.074               0.31
===========  ==================  ==================  ======================

At the 10,000-source cap that is ~0.75 s instead of ~5-7 s for a VRT of GeoTIFF tiles. What is left per source is
the VRT parse and the realpath of each source (:func:`rscore.service.security._check_vrt`), the HDF5 signature sniff
and the magic-byte read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np


def build(folder: Path, n: int, kind: str) -> Path:
    import rasterio

    tiles = folder / "tiles"
    tiles.mkdir()
    names = []
    for i in range(n):
        if kind == "tif":
            name = f"t{i:05d}.tif"
            with rasterio.open(tiles / name, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as ds:
                ds.write(np.full((1, 4, 4), i % 255, np.uint8))
        else:
            name = f"t{i:05d}.ers"
            (tiles / f"t{i:05d}.raw").write_bytes(bytes(16))
            (tiles / name).write_text(
                "DatasetHeader Begin\n\tVersion = \"6.0\"\n\tDataSetType = ERStorage\n\tDataType = Raster\n"
                "\tByteOrder = LSBFirst\n\tCoordinateSpace Begin\n\t\tDatum = \"RAW\"\n\t\tProjection = \"RAW\"\n"
                "\t\tCoordinateType = RAW\n\tCoordinateSpace End\n\tRasterInfo Begin\n\t\tCellType = Unsigned8BitInteger\n"
                "\t\tNrOfLines = 4\n\t\tNrOfCellsPerLine = 4\n\t\tNrOfBands = 1\n\tRasterInfo End\n"
                f"\tDataFile = \"t{i:05d}.raw\"\nDatasetHeader End\n"
            )
        names.append(name)
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">tiles/{name}</SourceFilename><SourceBand>1</SourceBand>'
        f'<DstRect xOff="{4 * (i % 10)}" yOff="{4 * (i // 10)}" xSize="4" ySize="4"/></SimpleSource>'
        for i, name in enumerate(names)
    )
    vrt = folder / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="40" rasterYSize="{4 * (n // 10 + 1)}"><VRTRasterBand dataType="Byte" '
                   f'band="1">{sources}</VRTRasterBand></VRTDataset>')  # fmt: skip
    return vrt


def timed(vrt: Path, root: Path, fast: bool) -> float:
    from rscore.service import linked
    from rscore.service.security import check_linked

    start = time.perf_counter()
    if fast:
        check_linked(vrt, (root,), shown=vrt.name)
    else:
        with mock.patch.object(linked, "_fast_path", lambda *a: False):
            check_linked(vrt, (root,), shown=vrt.name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")  # the tiles need none
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for kind in ("tif", "ers"):
            root = Path(tmp) / kind
            root.mkdir()
            roots[kind] = (root, build(root, args.sources, kind))
        rows = {"before": [], "after": [], "after, ERS headers": []}
        timed(roots["tif"][1], roots["tif"][0], False)  # warm-up: GDAL's drivers registered, files in the page cache
        for _ in range(args.repeat):
            rows["before"].append(timed(roots["tif"][1], roots["tif"][0], False))
            rows["after"].append(timed(roots["tif"][1], roots["tif"][0], True))
            rows["after, ERS headers"].append(timed(roots["ers"][1], roots["ers"][0], True))
    print(f"VRT of {args.sources} sources, median of {args.repeat} checks (check_linked):")
    for name, times in rows.items():
        median = statistics.median(times)
        print(f"  {name:20s} {median * 1000:9.1f} ms per VRT  {median / args.sources * 1000:7.3f} ms per source")
    print(f"  speed-up (before / after): {statistics.median(rows['before']) / statistics.median(rows['after']):.1f}x")


if __name__ == "__main__":
    main()
