"""What reading a server-side ``path`` the way it was checked costs (:mod:`rscore.service.pinning`): a request's
latency for a GeoTIFF path and for a DICOM series folder, over real HTTP on loopback (uvicorn), and the pin alone.

A folder is pinned file by file (one descriptor and one link per file), a file by its own descriptor plus its
identity (one ``fstat`` before the read, one after), a VRT mosaic with each of its sources (and a rewritten copy). Prints medians of ``--repeat`` requests. ::

    python benchmarks/bench_pin_cost.py                 # 64 x 64 GeoTIFF; series of 30 and 300 slices; VRTs
    python benchmarks/bench_pin_cost.py --repeat 40 --slices 30,300,1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' DICOM slice maker


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--slices", default="30,300", help="comma-separated series sizes")
    p.add_argument("--vrt-sources", default="100,1000", help="comma-separated source counts of VRT mosaics")
    args = p.parse_args()

    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from service_helpers import Services, dicom_bytes

    from rscore.engine import default_registry
    from rscore.service import pinning

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "data"
        root.mkdir()
        _, x = np.mgrid[0:64, 0:64].astype(np.float32)
        with rasterio.open(root / "dem.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
                           crs="EPSG:32617", transform=from_origin(700000, 9600000, 10, 10)) as ds:  # fmt: skip
            ds.write((x * 3)[None])
        sizes = [int(s) for s in args.slices.split(",") if s]
        for n in sizes:
            folder = root / f"series{n}"
            folder.mkdir()
            for i in range(n):
                (folder / f"IM{i:04d}.dcm").write_bytes(dicom_bytes(2.5 * i))
        vrts = [int(s) for s in args.vrt_sources.split(",") if s]
        if vrts:
            import shutil

            (root / "tiles").mkdir()
            for i in range(max(vrts)):  # 16 x 16 tiles side by side (copies of one GeoTIFF)
                with rasterio.open(root / "tiles" / f"t{i}.tif", "w", driver="GTiff", width=16, height=16, count=1,
                                   dtype="float32") as ds:  # fmt: skip
                    ds.write(np.full((1, 16, 16), float(i % 200), np.float32))
                if i == 0:
                    break
            for i in range(1, max(vrts)):
                shutil.copy(root / "tiles" / "t0.tif", root / "tiles" / f"t{i}.tif")
            for n in vrts:
                body = "".join(f'<SimpleSource><SourceFilename relativeToVRT="1">tiles/t{i}.tif</SourceFilename>'
                               f'<SourceBand>1</SourceBand><DstRect xOff="{16 * i}" yOff="0" xSize="16" ySize="16"/>'
                               "</SimpleSource>" for i in range(n))  # fmt: skip
                (root / f"mosaic{n}.vrt").write_text(f'<VRTDataset rasterXSize="{16 * n}" rasterYSize="16">'
                                                     f'<VRTRasterBand dataType="Float32" band="1">{body}'
                                                     "</VRTRasterBand></VRTDataset>")  # fmt: skip
        print(f"pinning available: {pinning.pinning_available()}")
        print(f"{'input':<22}{'pin + close (ms)':>18}{'request (ms)':>15}")
        services = Services()
        client = services.start(default_registry(), output_root=tmp_path / "out", allowed_roots=(root,), workers=1,
                                queue_size=2, request_timeout_s=120, job_runner="inprocess")  # fmt: skip
        try:
            cases = [("dem.tif", "earth", "elevation above 100 m")]
            cases += [(f"series{n}", "surgical", "bone") for n in sizes]
            cases += [(f"mosaic{n}.vrt", "earth", "elevation above 100 m") for n in vrts]
            for name, plugin, query in cases:
                def pin_once() -> None:
                    pinning.pin_input(root / name, (root,), tmp_path / "staging" / "x").close()
                    (tmp_path / "staging" / "x").rmdir()

                def request() -> None:
                    options = '{"bands": "elevation"}' if name.endswith(".vrt") else ""
                    r = client.post("/v1/segment", data={"query": query, "plugin": plugin, "path": name,
                                                         "options": options})  # fmt: skip
                    assert r.status_code == 200, r.text[:300]

                pin_ms = median_ms(pin_once, args.repeat)
                req_ms = median_ms(request, args.repeat if name == "dem.tif" else max(3, args.repeat // 4))
                print(f"{name:<22}{pin_ms:>18.2f}{req_ms:>15.1f}")
        finally:
            services.stop_all()


if __name__ == "__main__":
    main()
