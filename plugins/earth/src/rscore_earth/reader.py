"""GeoTIFF (and any rasterio/GDAL raster) reader: a lazy, windowed scene with CRS, pixel size and band roles.

Options understood by :meth:`GeoRasterReader.open` (the CLI's ``--bands`` / ``--aux`` and ``--option k=v``):

``bands``
    Band roles, comma-separated (``"red,green,blue,nir"``, ``"elevation"``) or a sequence. Either one role per band
    of the primary raster, or one per band of the primary raster followed by the aux rasters' bands.
``aux``
    One or more extra rasters (a path, a comma-separated string of paths, or a sequence), e.g. imagery for a DEM.
    Each is reprojected and resampled onto the primary grid lazily with a GDAL warped VRT and its bands are
    appended with their roles. An aux raster that does not overlap the primary one is an
    :class:`~rscore.errors.InputError` naming it.
``aux_bands``
    Roles of the aux bands (same syntax as ``bands``), when their metadata does not name them.
``aux_resampling``
    ``bilinear`` (default), ``nearest``, ``cubic``, ``average``... (``rasterio.enums.Resampling`` names).
``pixel_size_m``
    Ground pixel size in metres (``10`` or ``"10,12"`` for x,y) for rasters whose CRS is missing or has unknown
    units; otherwise such rasters are processed in pixel units with a warning.
``z_factor``
    Not read here: operators take it (elevation units to metres).

Scale/offset tags of a band are applied (the data become float32); a Landsat Level-1 band file
``<prefix>_B<n>.tif`` with ``<prefix>_MTL.txt`` beside it is converted to top-of-atmosphere reflectance.

Band roles, when ``bands`` is not given: band descriptions (``red``, ``NIR``, ``B08``, ``elevation``...), then band
metadata (a name tag, or a centre wavelength - GDAL ``IMAGERY`` ``CENTRAL_WAVELENGTH_UM``, ENVI ``wavelength`` - that
falls in exactly one of ``WAVELENGTH_ROLES``), then colour interpretation (red/green/blue/alpha); a 4-band image whose
bands 1-3 are RGB and band 4 undefined is taken as RGBN (NAIP convention, with a warning, and recorded in
``metadata["band_layout_assumed"]`` so that indices say so in the plan); 4 bands with no names at all are not
assumed (R,G,B,NIR and B,G,R,NIR are both common), with a warning; a single-band raster of a non-byte numeric type without a colour
interpretation is ``elevation``; ``ndvi`` names a precomputed NDVI band; a single byte band is ``gray``; anything else is ``band<N>``.

Thread safety: rasterio dataset handles must not be shared between threads, so :class:`RasterSource` opens its
datasets lazily once per thread (``threading.local``) and caches the last window read per thread. It pickles
without its handles, so it can be sent to worker processes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rscore.errors import InputError, OptionError
from rscore.sdk import Reader
from rscore.types import GeoInfo, Scene, Window

from rscore_earth.bandcheck import landsat_band, landsat_toa, value_sample
from rscore_earth.gdalenv import gdal_env
from rscore_earth.geo import GroundUnits, ground_units, pixel_size_m

log = logging.getLogger(__name__)

__all__ = ["GeoRasterReader", "RasterSource", "BandRef", "KNOWN_ROLES", "parse_roles", "landsat_toa", "TIFF_MAGIC"]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF, both byte orders
KNOWN_ROLES = (
    "red", "green", "blue", "nir", "swir", "swir2", "rededge", "coastal", "pan", "thermal",
    "elevation", "ndvi", "gray", "alpha", "other",
)  # fmt: skip
ROLE_SYNONYMS = {
    "r": "red", "b04": "red", "red band": "red",
    "g": "green", "b03": "green",
    "b": "blue", "b02": "blue",
    "near infrared": "nir", "near-infrared": "nir", "nearinfrared": "nir", "nir08": "nir", "b08": "nir",
    "swir1": "swir", "swir16": "swir", "b11": "swir", "swir22": "swir2", "b12": "swir2",
    "red edge": "rededge", "red-edge": "rededge",
    "dem": "elevation", "dtm": "elevation", "dsm": "elevation", "height": "elevation", "altitude": "elevation",
    "z": "elevation", "elev": "elevation",
    "grey": "gray", "panchromatic": "pan", "-": "other", "skip": "other", "ignore": "other",
}  # fmt: skip
RASTER_SUFFIXES = (".tif", ".tiff", ".gtiff", ".vrt", ".img", ".jp2", ".nc", ".hgt", ".asc", ".dem", ".bil", ".ers")
SAMPLE_GRID = 8  # windows per side probed when checking that a raster has valid pixels
SAMPLE_SIZE = 32


def _normalise_role(text: str) -> str | None:
    t = " ".join(str(text).strip().lower().replace("_", " ").split())
    if t in KNOWN_ROLES:
        return t
    return ROLE_SYNONYMS.get(t)


def parse_roles(value: str | Sequence[str], what: str = "--bands") -> list[str]:
    """Parse ``"red,green,blue,nir"`` (or a sequence) into known role names; :class:`OptionError` otherwise."""
    if isinstance(value, str):
        items = value.split(",")
    else:  # a list, or a bare number from JSON (-O aux_bands=7)
        items = [str(s) for s in value] if isinstance(value, (list, tuple)) else [str(value)]
    roles = []
    for item in items:
        role = _normalise_role(item)
        if role is None:
            raise OptionError(
                f"unknown band role '{item.strip()}' in {what} (known: {', '.join(KNOWN_ROLES)}; 'other' skips a band)"
            )
        roles.append(role)
    if not roles:
        raise OptionError(f"{what} is empty: name one role per band, e.g. red,green,blue,nir")
    dupes = sorted({r for r in roles if r != "other" and roles.count(r) > 1})
    if dupes:
        raise OptionError(f"{what} names {', '.join(dupes)} more than once")
    return roles


def _paths(value: Any) -> list[Path]:
    if value is None or value == "" or value == ():
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(p.strip()) for p in str(value).split(",") if p.strip()]
    return [Path(p) for p in value]


# ------------------------------------------------------------------------------------------------------ pixel source
@dataclass(frozen=True)
class BandRef:
    """One band of the scene: dataset ``source`` (0 = primary, 1.. = aux) and its 1-based ``index`` there."""

    source: int
    index: int


@dataclass(frozen=True)
class _DatasetSpec:
    path: str
    all_valid: bool  # GDAL says every pixel of every band is valid: no mask reads needed
    nan_is_nodata: bool  # float data without a nodata value: NaN/inf are treated as invalid
    scales: tuple[float, ...] | None  # per-band scale/offset to apply, or None
    offsets: tuple[float, ...] | None
    warp: Mapping[str, Any] | None = None  # WarpedVRT arguments for aux rasters (None: already on the grid)


class RasterSource:
    """A lazy :class:`~rscore.types.PixelSource` over a primary raster plus aux rasters warped onto its grid.

    ``read`` returns ``(bands, h, w)`` in :attr:`dtype`; ``valid`` is the AND of every dataset's mask (nodata,
    internal masks, alpha, aux coverage; NaN for float data without nodata), ``None`` when all pixels are valid.
    Read errors become :class:`~rscore.errors.InputError` naming the file.
    """

    def __init__(self, specs: Sequence[_DatasetSpec], bands: Sequence[BandRef], height: int, width: int, dtype: str):
        self._specs = tuple(specs)
        self._bands = tuple(bands)
        self.height, self.width, self.count, self.dtype = height, width, len(bands), dtype
        self._local = threading.local()

    # handles are per thread and not pickled
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_local")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _datasets(self) -> list[Any]:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            import rasterio
            from rasterio.vrt import WarpedVRT

            handles = []
            for spec in self._specs:
                try:
                    ds = rasterio.open(spec.path)
                    handles.append(WarpedVRT(ds, **spec.warp) if spec.warp is not None else ds)
                except Exception as exc:
                    raise InputError(f"cannot be reopened ({exc})", path=spec.path) from None
            self._local.handles = handles
            self._local.cache = {}
        return handles

    def close(self) -> None:
        """Close this thread's dataset handles (they reopen on the next read)."""
        for h in getattr(self._local, "handles", None) or ():
            try:
                src = getattr(h, "src_dataset", None)
                h.close()
                if src is not None:
                    src.close()
            except Exception:  # closing is best effort
                pass
        self._local.handles = None

    def _read_source(self, k: int, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """All bands of dataset ``k`` over ``window`` (cached per thread for the last window) and its valid mask."""
        ds = self._datasets()[k]
        cache = self._local.cache
        key = (k, window)
        if key in cache:
            return cache[key]
        from rasterio.windows import Window as RWindow

        spec = self._specs[k]
        rw = RWindow(window.col_off, window.row_off, window.width, window.height)
        try:
            with gdal_env():  # GDAL's block cache stays small: memory does not grow with the raster
                if spec.warp is not None:
                    # the warped VRT's last band is an alpha band (coverage and source masks); GDAL does not report
                    # it as a mask for non-byte data, so it is read and split off explicitly
                    stack = ds.read(window=rw)
                    data, valid = stack[:-1], stack[-1] > 0
                else:
                    data = ds.read(window=rw)
                    valid = None if spec.all_valid else ds.dataset_mask(window=rw) > 0
        except Exception as exc:
            raise InputError(
                f"read failed for rows {window.row_off}-{window.row_off + window.height}, "
                f"cols {window.col_off}-{window.col_off + window.width} ({type(exc).__name__}: {exc})",
                path=spec.path,
            ) from None
        if spec.scales is not None and spec.offsets is not None:
            scales = np.asarray(spec.scales, np.float64)[:, None, None]
            offsets = np.asarray(spec.offsets, np.float64)[:, None, None]
            data = (data * scales + offsets).astype(np.float32)
        if spec.nan_is_nodata:
            finite = np.isfinite(data).all(axis=0)
            valid = finite if valid is None else valid & finite
        # keep only the newest window of each dataset: memory stays one tile
        for old in [c for c in cache if c[0] == k]:
            del cache[old]
        cache[key] = (data, valid)
        return data, valid

    def read(self, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        window = window or Window(0, 0, self.height, self.width)
        idx = range(self.count) if bands is None else bands
        out = np.empty((len(idx), window.height, window.width), dtype=self.dtype)
        for j, b in enumerate(idx):
            ref = self._bands[b]
            data, _ = self._read_source(ref.source, window)
            out[j] = data[ref.index - 1]
        return out

    def valid(self, window: Window | None = None) -> np.ndarray | None:
        window = window or Window(0, 0, self.height, self.width)
        result: np.ndarray | None = None
        for k, spec in enumerate(self._specs):
            if spec.all_valid and not spec.nan_is_nodata:
                continue
            _, v = self._read_source(k, window)
            if v is not None:
                result = v.copy() if result is None else result & v
        return result


# ---------------------------------------------------------------------------------------------------------- reader
class GeoRasterReader(Reader):
    """GeoTIFF/COG/BigTIFF by content, and any other GDAL raster by suffix: a lazy, georeferenced scene."""

    name = "geotiff"
    suffixes = RASTER_SUFFIXES

    def sniff(self, path: Path, head: bytes) -> bool:
        return head[:4] in TIFF_MAGIC or head.lstrip()[:11] == b"<VRTDataset"

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:
        path = Path(path)
        warnings: list[str] = []
        primary = _open_dataset(path)
        aux_paths = _paths(options.get("aux"))
        try:
            units = ground_units(primary.crs)
            specs = [_spec(primary, warnings=warnings)]
            band_refs = [BandRef(0, i) for i in range(1, primary.count + 1)]
            assumptions: list[str] = []
            guessed: list[str] = []  # a single unnamed band's role was guessed (elevation for non-byte data)
            roles = _default_roles(primary, warnings, path.name, assumptions, guessed)
            dtypes = [_effective_dtype(primary)]
            radiometry = [_radiometry(primary)]
            aux_roles_all: list[str] = []
            for k, aux_path in enumerate(aux_paths, start=1):
                aux = _open_dataset(aux_path)
                try:
                    spec = _aux_spec(primary, aux, path, aux_path, options, warnings)
                    specs.append(spec)
                    band_refs += [BandRef(k, i) for i in range(1, aux.count + 1)]
                    aux_roles_all += _default_roles(aux, warnings, aux_path.name, assumptions)
                    dtypes.append(_effective_dtype(aux))
                    radiometry.append(_radiometry(aux))
                finally:
                    aux.close()
            try:
                roles = _apply_role_options(roles, aux_roles_all, options, primary.count)
            except OptionError as exc:  # a band-count mismatch is about this file: name it
                raise OptionError(exc.message, path=path) from None
            _check_has_valid_pixels(primary, specs[0], path)
            pixel_size, unit = _pixel_size(primary, units, options, warnings, path.name)
            geo = GeoInfo(
                crs=None if primary.crs is None else primary.crs.to_string(),
                transform=tuple(primary.transform)[:6],  # type: ignore[arg-type]
                nodata=primary.nodata,
                pixel_size_m=pixel_size if unit == "m" else None,
                is_geographic=units.kind == "geographic",
            )
            dtype = str(np.result_type(*dtypes))
            source = RasterSource(specs, band_refs, primary.height, primary.width, dtype)
            metadata = {
                "driver": primary.driver,
                "crs_units": units.unit or units.kind,
                "ground_units": units.kind,
                "band_dtypes": [str(d) for d in dtypes],
                "aux": [str(p) for p in aux_paths],
                "block_shape": list(primary.block_shapes[0]) if primary.block_shapes else None,
                "overviews": len(primary.overviews(1)) if primary.count else 0,
                "pixel_size_source": "option" if options.get("pixel_size_m") not in (None, "") else "crs",
                # per dataset: "dn" (integers as stored), "scaled" (scale/offset tags), "toa" (Landsat MTL), "float"
                "radiometry": radiometry,
                "band_layout_assumed": [] if options.get("bands") not in (None, "") else assumptions,
            }
        finally:
            primary.close()
        log.debug("opened %s: %dx%d, bands %s, pixel %s %s", path, source.width, source.height, roles, pixel_size, unit)
        band_roles = tuple(_unique_roles(roles))
        if "elevation" in band_roles:  # sampled once: terrain programs check these are heights (bandcheck)
            k = band_roles.index("elevation")
            metadata["elevation_sample"] = value_sample(
                lambda r, c, h, w: _valid_band(source, k, Window(r, c, h, w)), source.height, source.width
            )
            metadata["elevation_assumed"] = bool(guessed) and options.get("bands") in (None, "") and k == 0
            source.close()  # the scene opens its datasets lazily where it is read (a worker, a thread)
        return Scene(
            source=source,
            kind="raster",
            band_roles=band_roles,
            path=path,
            reader=self.name,
            pixel_size=pixel_size,
            unit=unit,
            geo=geo,
            warnings=tuple(warnings),
            metadata=metadata,
        )


# ---------------------------------------------------------------------------------------------------------- helpers
def _open_dataset(path: Path) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.exists():
        raise InputError("no such file", path=path)
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        msg = str(exc)
        if str(path) in msg:
            msg = msg.replace(str(path), "").strip(" :")
        raise InputError(f"not a readable raster ({msg or 'GDAL could not open it'})", path=path) from None
    except Exception as exc:
        raise InputError(f"not a readable raster ({type(exc).__name__}: {exc})", path=path) from None
    try:
        if ds.count == 0 or ds.width == 0 or ds.height == 0:
            raise InputError(f"has no raster bands or pixels ({ds.count} bands, {ds.width}x{ds.height})", path=path)
        # probe one block of the first band: a truncated or garbled file usually fails here, not halfway through
        from rasterio.windows import Window as RWindow

        bh, bw = ds.block_shapes[0]
        ds.read(1, window=RWindow(0, 0, min(bw, ds.width), min(bh, ds.height)))
    except InputError:
        ds.close()
        raise
    except Exception as exc:
        ds.close()
        raise InputError(f"is corrupt or truncated: reading its first block failed ({exc})", path=path) from None
    return ds


def _effective_dtype(ds: Any) -> np.dtype:
    if _scales_offsets(ds)[0] is not None or (ds.count == 1 and landsat_toa(Path(ds.name)) is not None):
        return np.dtype(np.float32)
    return np.result_type(*[np.dtype(d) for d in ds.dtypes])


def _radiometry(ds: Any) -> str:
    """What the pixel values of a dataset are: ``toa`` (Landsat DN converted with its MTL), ``scaled`` (scale/offset
    tags applied), ``float`` (stored as floats: a product, units unknown) or ``dn`` (integers as stored: raw digital
    numbers, or reflectance scaled by a factor the file does not state)."""
    if _scales_offsets(ds)[0] is not None:
        return "scaled"
    if ds.count == 1 and landsat_toa(Path(ds.name)) is not None:
        return "toa"
    return "float" if any(np.issubdtype(np.dtype(d), np.floating) for d in ds.dtypes) else "dn"


def _scales_offsets(ds: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    scales = tuple(float(s) if s is not None else 1.0 for s in ds.scales)
    offsets = tuple(float(o) if o is not None else 0.0 for o in ds.offsets)
    if all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        return None, None
    return scales, offsets


def _spec(ds: Any, warp: Mapping[str, Any] | None = None, warnings: list[str] | None = None) -> _DatasetSpec:
    from rasterio.enums import MaskFlags

    all_valid = warp is None and all(MaskFlags.all_valid in flags for flags in ds.mask_flag_enums)
    is_float = any(np.issubdtype(np.dtype(d), np.floating) for d in ds.dtypes)
    scales, offsets = _scales_offsets(ds)
    toa = landsat_toa(Path(ds.name)) if scales is None and ds.count == 1 else None
    if toa is not None:
        scales, offsets = (toa[0],), (toa[1],)
        if warnings is not None:
            warnings.append(f"{Path(ds.name).name}: Landsat DN converted to TOA reflectance with {toa[2]}")
    return _DatasetSpec(
        path=str(ds.name),
        all_valid=all_valid,
        nan_is_nodata=is_float and ds.nodata is None,
        scales=scales,
        offsets=offsets,
        warp=warp,
    )


def _aux_spec(
    primary: Any, aux: Any, primary_path: Path, aux_path: Path, options: Mapping[str, Any], warnings: list[str]
) -> _DatasetSpec:
    """How to put ``aux`` on the primary grid: directly when it already is, else through a WarpedVRT."""
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds

    same_grid = (
        aux.width == primary.width
        and aux.height == primary.height
        and aux.transform.almost_equals(primary.transform)
        and (aux.crs == primary.crs)
    )
    if same_grid:
        return _spec(aux, warnings=warnings)
    if primary.crs is None or aux.crs is None:
        which = primary_path.name if primary.crs is None else aux_path.name
        raise InputError(
            f"cannot be aligned with {primary_path.name}: {which} has no CRS and the two rasters are on different "
            f"grids ({aux.width}x{aux.height} vs {primary.width}x{primary.height}); give both a CRS or the same grid",
            path=aux_path,
        )
    try:
        b = transform_bounds(aux.crs, primary.crs, *aux.bounds, densify_pts=21)
    except Exception as exc:
        raise InputError(f"its CRS cannot be transformed to that of {primary_path.name} ({exc})", path=aux_path) from None
    p = primary.bounds
    ix = min(p.right, b[2]) - max(p.left, b[0])
    iy = min(p.top, b[3]) - max(p.bottom, b[1])
    if not (np.isfinite(ix) and np.isfinite(iy)) or ix <= 0 or iy <= 0:
        raise InputError(
            f"does not overlap {primary_path.name} (its bounds in the primary CRS are "
            f"{', '.join(f'{v:.6g}' for v in b)}; the primary raster covers "
            f"{p.left:.6g}, {p.bottom:.6g}, {p.right:.6g}, {p.top:.6g})",
            path=aux_path,
        )
    coverage = (ix * iy) / max(1e-300, (p.right - p.left) * (p.top - p.bottom))
    if coverage < 0.99:
        warnings.append(
            f"{aux_path.name} covers only about {coverage:.0%} of {primary_path.name}; pixels outside it are nodata"
        )
    name = str(options.get("aux_resampling") or "bilinear")
    try:
        resampling = Resampling[name]
    except KeyError:
        raise OptionError(
            f"unknown aux_resampling '{name}' (use one of {', '.join(r.name for r in Resampling if r.value < 14)})"
        ) from None
    warp = {
        "crs": primary.crs,
        "transform": primary.transform,
        "width": primary.width,
        "height": primary.height,
        "resampling": resampling,
        "add_alpha": True,  # coverage and source nodata/masks end up in the alpha band -> dataset_mask
    }
    return _spec(aux, warp, warnings)


def _role_from_description(text: str | None) -> str | None:
    if not text:
        return None
    role = _normalise_role(text)
    return None if role == "other" else role


# centre wavelength (nm) ranges of the common optical roles (Landsat 8/9 OLI, Sentinel-2 MSI, NAIP, PlanetScope)
WAVELENGTH_ROLES = (
    (430.0, 450.0, "coastal"), (450.0, 520.0, "blue"), (520.0, 600.0, "green"), (620.0, 690.0, "red"),
    (695.0, 750.0, "rededge"), (760.0, 900.0, "nir"), (1550.0, 1750.0, "swir"), (2080.0, 2350.0, "swir2"),
)  # fmt: skip
NAME_TAGS = ("BAND_NAME", "band_name", "NAME", "name", "long_name", "DESCRIPTION", "description")
WAVELENGTH_TAGS = ("CENTRAL_WAVELENGTH_UM", "wavelength", "WAVELENGTH", "center_wavelength")


def _role_from_tags(tags: Mapping[str, str]) -> str | None:
    """A band role from band metadata: a name tag (``BAND_NAME=nir``, NetCDF ``long_name``...), or a centre
    wavelength (GDAL's IMAGERY ``CENTRAL_WAVELENGTH_UM``, ENVI ``wavelength`` with ``wavelength_units``) inside one
    of ``WAVELENGTH_ROLES`` - only when it falls in exactly one range."""
    for key in NAME_TAGS:
        if tags.get(key):
            role = _role_from_description(tags[key])
            if role:
                return role
    for key in WAVELENGTH_TAGS:
        if not tags.get(key):
            continue
        try:
            value = float(str(tags[key]).split()[0])
        except ValueError:
            continue
        units = str(tags.get("wavelength_units", tags.get("WAVELENGTH_UNITS", ""))).lower()
        nm = value * 1000.0 if (key.endswith("_UM") or units.startswith(("micro", "um", "µm"))) else value
        if not units and not key.endswith("_UM") and value < 30:  # micrometres without units
            nm = value * 1000.0
        hits = [role for lo, hi, role in WAVELENGTH_ROLES if lo <= nm <= hi]
        if len(hits) == 1:
            return hits[0]
    return None


def _band_tags(ds: Any, i: int) -> dict[str, str]:
    tags = dict(ds.tags(i + 1))
    try:
        tags.update(ds.tags(i + 1, ns="IMAGERY"))
    except Exception:  # a driver without that metadata domain
        pass
    return tags


def _default_roles(
    ds: Any, warnings: list[str], name: str, assumptions: list[str] | None = None, guessed: list[str] | None = None
) -> list[str | None]:
    from rasterio.enums import ColorInterp

    ci_map = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue", ColorInterp.alpha: "alpha"}
    roles: list[str | None] = []
    for i in range(ds.count):
        desc = ds.descriptions[i] if ds.descriptions else None
        role = _role_from_description(desc) or _role_from_tags(_band_tags(ds, i)) or ci_map.get(ds.colorinterp[i])
        roles.append(role)
    if ds.count == 4 and all(r is None for r in roles):
        warnings.append(
            f"{name}: 4 unnamed bands; the order could be R,G,B,NIR (NAIP) or B,G,R,NIR (PlanetScope, Sentinel-2 "
            "stacks), so no layout is assumed: pass --bands (e.g. --bands red,green,blue,nir)"
        )
    undefined = (ColorInterp.undefined, ColorInterp.gray)
    if ds.count == 4 and roles[:3] == ["red", "green", "blue"] and roles[3] is None:
        if ds.colorinterp[3] in undefined:
            roles[3] = "nir"
            warnings.append(f"{name}: band 4 is not named; taken as NIR (RGBN convention). Pass --bands to override")
            if assumptions is not None:
                assumptions.append(
                    f"{name}: bands 1-3 are tagged red, green, blue and band 4 is untagged, so the layout is taken "
                    "as R,G,B,NIR (the NAIP / RGBN convention; --bands overrides)"
                )
    landsat = landsat_band(Path(ds.name)) if ds.count == 1 and roles[0] is None else None
    if landsat is not None:  # a USGS band file beside its MTL: the band number says what it holds
        roles[0] = landsat[0]
        warnings.append(f"{name}: {landsat[1]}")
    if ds.count == 1 and roles[0] is None:
        dtype = np.dtype(ds.dtypes[0])
        if guessed is not None:
            guessed.append(name)
        if dtype == np.uint8:
            roles[0] = "gray"
        else:
            roles[0] = "elevation"
            if np.issubdtype(dtype, np.unsignedinteger):
                warnings.append(
                    f"{name}: single {dtype} band with no description; taken as elevation. Pass --bands to override"
                )
    return roles


def _apply_role_options(
    primary: list[str | None], aux: list[str | None], options: Mapping[str, Any], primary_count: int
) -> list[str | None]:
    bands, aux_bands = options.get("bands"), options.get("aux_bands")
    if aux_bands:
        given = parse_roles(aux_bands, "aux_bands")
        if len(given) != len(aux):
            raise OptionError(f"aux_bands names {len(given)} roles but the aux rasters have {len(aux)} bands")
        aux = list(given)
    if bands:
        given = parse_roles(bands, "--bands")
        if len(given) == primary_count:
            primary = list(given)
        elif aux and len(given) == primary_count + len(aux):
            primary, aux = list(given[:primary_count]), list(given[primary_count:])
        else:
            extra = f", or {primary_count + len(aux)} including the aux bands" if aux else ""
            raise OptionError(
                f"--bands names {len(given)} roles but the input has {primary_count} bands{extra}: give one role per band"
            )
    return primary + aux


def _valid_band(source: RasterSource, k: int, window: Window) -> np.ndarray:
    data = source.read(window, [k])[0].astype(np.float64)
    valid = source.valid(window)
    return data if valid is None else np.where(valid, data, np.nan)


def _unique_roles(roles: Sequence[str | None]) -> list[str]:
    """Fill unnamed bands as ``band<N>`` and make repeated roles unique (``red``, ``red_2``); ``other`` stays."""
    out: list[str] = []
    for i, role in enumerate(roles):
        name = role or f"band{i + 1}"
        if name != "other" and name in out:
            k = 2
            while f"{name}_{k}" in out:
                k += 1
            name = f"{name}_{k}"
        out.append(name)
    return out


def _pixel_size(
    ds: Any, units: GroundUnits, options: Mapping[str, Any], warnings: list[str], name: str
) -> tuple[tuple[float, float] | None, str | None]:
    given = options.get("pixel_size_m")
    if given not in (None, ""):
        try:
            parts = [float(v) for v in str(given).replace(" ", "").split(",")] if not isinstance(given, (int, float)) else [float(given)]
            if len(parts) == 1:
                parts = parts * 2
            if len(parts) != 2 or not all(np.isfinite(parts)) or min(parts) <= 0:
                raise ValueError
        except ValueError:
            raise OptionError(f"pixel_size_m must be a positive number or 'x,y' in metres, got {given!r}") from None
        if units.kind != "unknown":
            warnings.append(f"{name}: pixel size set to {parts[0]:g} x {parts[1]:g} m by option (CRS units ignored)")
        return (parts[0], parts[1]), "m"
    size = pixel_size_m(tuple(ds.transform)[:6], units, ds.height, ds.width)
    if size is None:
        warnings.append(
            f"{name}: {units.problem}; areas are in pixel units and terrain analysis (slope, drainage) is refused "
            f"until you pass --option pixel_size_m=<metres>"
        )
        return None, None
    if units.kind == "projected" and units.unit not in ("metre", "meter", "m"):
        warnings.append(
            f"{name}: horizontal units are {units.unit} (converted to metres); elevations are assumed to be in metres "
            f"(pass --option z_factor=0.3048 if they are in feet)"
        )
    if units.kind == "geographic":
        a, b, c, d, e, f = tuple(ds.transform)[:6]
        lats = (f, f + e * ds.height)
        if max(abs(v) for v in lats) > 89 or abs(lats[0] - lats[1]) > 10:
            warnings.append(
                f"{name}: geographic raster spanning latitudes {min(lats):.1f} to {max(lats):.1f}; slopes use the pixel "
                "size at the scene centre (areas use each row's latitude)"
            )
    return size, "m"


def _check_has_valid_pixels(ds: Any, spec: _DatasetSpec, path: Path) -> None:
    """InputError unless some pixel is valid: a cheap sample of small windows first, a full block scan if needed."""
    if spec.all_valid and not spec.nan_is_nodata:
        return
    from rasterio.windows import Window as RWindow

    def any_valid(win: Any) -> bool:
        mask = ds.dataset_mask(window=win) > 0
        if spec.nan_is_nodata and mask.any():
            data = ds.read(window=win)
            mask &= np.isfinite(data).all(axis=0)
        return bool(mask.any())

    h, w = ds.height, ds.width
    sh, sw = min(SAMPLE_SIZE, h), min(SAMPLE_SIZE, w)
    rows = np.linspace(0, h - sh, min(SAMPLE_GRID, max(1, h // sh))).astype(int)
    cols = np.linspace(0, w - sw, min(SAMPLE_GRID, max(1, w // sw))).astype(int)
    try:
        with gdal_env():
            for r in rows:
                for c in cols:
                    if any_valid(RWindow(int(c), int(r), sw, sh)):
                        return
            for _, win in ds.block_windows(1):
                if any_valid(win):
                    return
    except Exception as exc:
        raise InputError(f"is corrupt or truncated: reading its masks failed ({exc})", path=path) from None
    raise InputError("contains no valid pixels (every pixel is nodata or masked)", path=path)
