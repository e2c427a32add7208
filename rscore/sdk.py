"""What plugins provide: readers, templates, operators, writers, backends and adapters.

These are the types returned by the hooks in :mod:`rscore.hookspecs`. A plugin author imports from here (and from
:mod:`rscore.types`) and nothing else is needed. ``docs/plugin-guide.md`` walks through a complete plugin.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from rscore.types import Request, Scene, Step, Target, Window

if TYPE_CHECKING:
    from rscore.types import Result

CONFIDENCE_WITHHELD = "confidence withheld: "  # a caveat starting so makes Result.confidence None (OpContext.caveat)
EXPLAINS_EMPTY = "empty answer"  # ctx.note(text, explains=EXPLAINS_EMPTY): why a program answers nothing (the reason)

__all__ = [
    "CONFIDENCE_WITHHELD",
    "EXPLAINS_EMPTY",
    "Reader",
    "Writer",
    "Param",
    "Operator",
    "OpContext",
    "ProgramOutput",
    "Template",
    "OpUse",
    "uses",
    "BackendSpec",
    "AdapterSpec",
]


# ---------------------------------------------------------------------------------------------------------- readers
class Reader:
    """Opens an input into a :class:`~rscore.types.Scene`. Subclass it and return an instance from ``rscore_readers``.

    Reader choice: first the readers whose :meth:`sniff` recognises the file's first bytes, then those claiming
    its suffix; readers of the ``--plugin`` in use are tried before the others. ``open`` must raise
    :class:`rscore.errors.InputError` naming the file for anything it cannot read, and must not load big inputs
    whole (return a lazy :class:`~rscore.types.PixelSource`).
    """

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    accepts_directories: ClassVar[bool] = False
    path_options: ClassVar[tuple[str, ...]] = ()  # options naming more input files (the service confines them)

    def sniff(self, path: Path, head: bytes) -> bool:
        """``True`` if ``head`` (the first 512 bytes, empty for directories) is a format this reader opens."""
        return False

    def open(self, path: Path, options: Mapping[str, Any]) -> Scene:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------- writers
class Writer:
    """Writes one kind of output file for a result. Return instances from ``rscore_writers``.

    ``write`` returns ``{output-name: path}`` for what it wrote inside ``out_dir``. Writers run into a temporary
    folder that is moved into place only when every writer succeeded, so a failure leaves no partial output.
    ``threadsafe = True`` lets a writer run at the same time as others, in a thread (:mod:`rscore.engine.write`):
    say so only when it shares no state with other writers and its work releases the GIL (GDAL, GEOS, OpenCV).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    threadsafe: ClassVar[bool] = False

    def applies(self, scene: Scene, result: Result) -> bool:
        return True

    def write(self, scene: Scene, result: Result, out_dir: Path) -> dict[str, Path]:  # pragma: no cover
        raise NotImplementedError


# -------------------------------------------------------------------------------------------------------- operators
ParamType = Literal["float", "int", "bool", "str", "enum", "path"]
Returns = Literal["mask", "score", "classes", "instances", "value"]
PARAM_TYPES: tuple[str, ...] = ("float", "int", "bool", "str", "enum", "path")
RETURNS: tuple[str, ...] = ("mask", "score", "classes", "instances", "value")
_JSON_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "str": "string", "enum": "string", "path": "string"}


@dataclass(frozen=True)
class Param:
    """One typed parameter: of an operator (``ctx.op(name, **params)``) or a ``-O KEY=VALUE`` option.

    ``type`` is ``float``, ``int``, ``bool``, ``str``, ``enum`` (one of ``choices``) or ``path``; ``unit`` the
    unit of a number (``deg``, ``m``, ``HU``, ``px``...); ``range`` the inclusive ``(low, high)`` of a number
    (``None`` for an open end); ``default`` what an absent value means (``None``: computed or required).
    """

    name: str
    type: ParamType = "float"
    description: str = ""
    unit: str = ""
    range: tuple[float | None, float | None] | None = None
    default: Any = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"param {self.name}: type must be one of {', '.join(PARAM_TYPES)}, got {self.type!r}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"param {self.name}: an enum needs choices")

    def json_schema(self) -> dict[str, Any]:
        """The parameter as a JSON Schema property (what a tool-calling model is given)."""
        out: dict[str, Any] = {"type": _JSON_TYPES[self.type]}
        text = self.description + (f" ({self.unit})" if self.unit else "")
        if text:
            out["description"] = text
        if self.choices:
            out["enum"] = list(self.choices)
        if self.range is not None and self.type in ("float", "int"):
            low, high = self.range
            if low is not None:
                out["minimum"] = low
            if high is not None:
                out["maximum"] = high
        if self.default is not None:
            out["default"] = self.default
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "unit": self.unit, "range": list(self.range) if self.range else None,
            "default": self.default, "choices": list(self.choices), "description": self.description,
        }  # fmt: skip


@dataclass(frozen=True)
class Operator:
    """A domain operator: ``fn(ctx, **params) -> array`` over the current view.

    ``halo`` is how many pixels of context the operator needs around a tile (slope needs 1, a 15 px relief window
    needs 7). ``requires`` lists band roles it reads. ``unit`` documents what the output means (``deg``, ``m``,
    ``ratio``, ``bool``). The typed signature: ``params`` are the keyword arguments ``fn`` takes (each a
    :class:`Param`), ``returns`` what the array is (``mask`` bool, ``score`` a measured value per pixel in
    ``unit``, ``classes`` small ints named by ``class_names``, ``instances`` labelled components), and ``options``
    the request options (``-O KEY=VALUE``) it reads from ``ctx.params``.

    ``terms`` is how queries name what the operator measures, for the offline constraint planner
    (:mod:`rscore.planner`): ``(phrase, meaning)`` pairs where meaning is ``""`` (a noun naming the quantity:
    ``("slopes", "")``), a comparator taking ``than N`` (``("steeper", ">")``), a constraint with its threshold
    (``("steep", ">= 30")``, ``("gentle", "in 5..15")``), ``"subject"`` (a noun for what is segmented that adds no
    constraint: ``("tissue", "subject")``), ``"distance"`` (a feature this operator measures the distance to:
    ``("stream", "distance")``, for "within 100 m of a stream"), ``"region"`` (a region this mask/class operator
    marks: "inside the restricted zone"), ``"compass"`` (a bearing in degrees that "north-facing" refers to) or
    ``"default"`` (the quantity a bare number in this operator's ``unit`` means: "below 200 m" is elevation).
    """

    name: str
    fn: Callable[..., np.ndarray]
    description: str
    requires: tuple[str, ...] = ()
    halo: int = 0
    unit: str = ""
    params: tuple[Param, ...] = ()
    returns: Returns = "score"
    options: tuple[Param, ...] = ()
    class_names: tuple[str, ...] = ()
    terms: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.returns not in RETURNS:
            raise ValueError(f"operator {self.name}: returns must be one of {', '.join(RETURNS)}, got {self.returns!r}")

    def signature(self) -> str:
        """``earth.relief(radius_m: float m = 100) -> score [m]``."""
        args = ", ".join(
            f"{p.name}: {p.type}{' ' + p.unit if p.unit else ''}" + ("" if p.default is None else f" = {p.default}")
            for p in self.params
        )
        return f"{self.name}({args}) -> {self.returns}" + (f" [{self.unit}]" if self.unit else "")

    def json_schema(self) -> dict[str, Any]:
        """The parameters as a JSON Schema object (the tool definition a model is given)."""
        return {
            "type": "object",
            "properties": {p.name: p.json_schema() for p in self.params},
            "required": [],  # every operator parameter has a default
            "additionalProperties": False,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "returns": self.returns, "unit": self.unit,
            "requires": list(self.requires), "halo": self.halo, "params": [p.to_dict() for p in self.params],
            "options": [p.to_dict() for p in self.options], "class_names": list(self.class_names),
            "signature": self.signature(), "terms": [list(t) for t in self.terms],
        }  # fmt: skip


@dataclass(frozen=True)
class ProgramOutput:
    """What a template's analytic program returns for one view.

    ``mask`` (bool, view-sized) and optionally ``score`` (0-1 float) and ``classes`` (small ints, 0 = none);
    or ``targets`` (boxes/points) for a segmenter to turn into masks.
    """

    mask: np.ndarray | None = None
    score: np.ndarray | None = None
    classes: np.ndarray | None = None
    targets: tuple[Target, ...] = ()


class OpContext:
    """The view a program works on: bands by role, validity, pixel size, and the registered operators.

    Operator results are cached per view, so ``ctx.op("slope")`` twice computes once. ``ctx.note`` records a
    reasoning step that ends up in the plan (identical notes from several tiles are recorded once, numeric stats
    averaged weighted by core area). ``ctx.window`` is the view read (core + halo), ``ctx.core`` the part it owns.
    """

    def __init__(
        self,
        scene: Scene,
        request: Request,
        operators: Mapping[str, Operator],
        window: Window | None = None,
        params: Mapping[str, Any] | None = None,
        core: Window | None = None,
    ) -> None:
        self.scene = scene
        self.request = request
        self.operators = operators
        self.window = window or Window(0, 0, scene.height, scene.width)
        self.core = core or self.window  # the part of the window this view owns (the window minus the halo)
        self.params = dict(params or {})
        self.notes: list[Step] = []
        self.caveats: list[str] = []
        self._cache: dict[tuple[str, tuple[tuple[str, Any], ...]], np.ndarray] = {}
        self.op_calls: list[tuple[str, dict[str, Any]]] = []  # the program's own ctx.op calls (not an operator's)
        self._op_depth = 0
        self._bands: dict[str, np.ndarray] = {}
        self._valid: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.window.height, self.window.width

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Slices of a view-sized array giving the core (measure note statistics over these, not the halo)."""
        return self.core.relative_to(self.window).slices

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Real pixel size ``(x, y)`` in the scene's unit, or ``(1, 1)`` when unknown (pixel units)."""
        return self.scene.pixel_size or (1.0, 1.0)

    def has(self, *roles: str) -> bool:
        return self.scene.has(*roles)

    def band(self, role: str) -> np.ndarray:
        """One band as float32, invalid pixels set to NaN."""
        if role not in self._bands:
            if not self.scene.has(role):
                from rscore.errors import OptionError

                raise OptionError(
                    f"this input has no '{role}' band (bands: {', '.join(self.scene.band_roles) or 'none'}); "
                    f"pass --bands to name them"
                )
            arr = self.scene.read(self.window, [role])[0].astype(np.float32, copy=True)
            arr[~self.valid] = np.nan
            self._bands[role] = arr
        return self._bands[role]

    @property
    def valid(self) -> np.ndarray:
        if self._valid is None:
            v = self.scene.valid(self.window)
            self._valid = np.ones(self.shape, bool) if v is None else np.asarray(v, bool)
        return self._valid

    def op(self, name: str, **params: Any) -> np.ndarray:
        key = (name, tuple(sorted(params.items())))
        if self._op_depth == 0 and (name, params) not in self.op_calls:
            self.op_calls.append((name, dict(params)))
        if key not in self._cache:
            try:
                operator = self.operators[name]
            except KeyError:
                from rscore.errors import PluginError

                raise PluginError(f"operator '{name}' is not registered (have: {', '.join(sorted(self.operators))})")
            self._op_depth += 1
            try:
                self._cache[key] = operator.fn(self, **params)
            finally:
                self._op_depth -= 1
        return self._cache[key]

    def note(self, text: str, operator: str | None = None, **stats: Any) -> None:
        """Record a plan step (``stats`` are averaged over tiles when numeric). ``explains=EXPLAINS_EMPTY`` marks
        the note that says why the program answers nothing on purpose: an empty answer's reason is its text."""
        self.notes.append(Step(text=text, operator=operator, stats=stats))

    def caveat(self, text: str, *, withhold_confidence: bool = False) -> None:
        """Record a limit of this answer that the user must read (e.g. "NDVI on raw digital numbers, not
        reflectance"); it reaches ``Result.caveats`` once, however many tiles record it.

        ``withhold_confidence=True``: this input lies outside what the rule was made for (its values are not in the
        units the thresholds assume, or not the kind of picture the rule reads), so nothing measured says how far the
        mask can be trusted - the caveat starts with :data:`CONFIDENCE_WITHHELD` and the result's ``confidence`` is
        ``None`` instead of the routing's (which only says that the right rule was chosen)."""
        if withhold_confidence and not text.startswith(CONFIDENCE_WITHHELD):
            text = CONFIDENCE_WITHHELD + text
        if text not in self.caveats:
            self.caveats.append(text)


# -------------------------------------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class OpUse:
    """One registered operator a template's program calls (``ctx.op(operator, **params)``), declared in
    ``Template.uses`` so that listings show the template as a program over operators.

    ``params`` are the literal arguments it passes, ``options`` the arguments taken from a ``-O`` option
    (``(("radius_m", "radius_m"),)``: parameter, option), ``when`` the condition under which the call is made
    (``"with green and swir bands"``), empty when always. Build one with :func:`uses`.
    """

    operator: str
    params: tuple[tuple[str, Any], ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    when: str = ""

    def __str__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self.params] + [f"{k}=-O {o}" for k, o in self.options]
        call = f"{self.operator}({', '.join(args)})" if args else self.operator
        return f"{call} [{self.when}]" if self.when else call

    def to_dict(self) -> dict[str, Any]:
        return {"operator": self.operator, "params": dict(self.params), "options": dict(self.options),
                "when": self.when}  # fmt: skip


def uses(operator: str, *, when: str = "", options: Mapping[str, str] | None = None, **params: Any) -> OpUse:
    """``uses("earth.curvature", kind="plan")``: an :class:`OpUse` for ``Template.uses``."""
    return OpUse(operator, tuple(sorted(params.items())), tuple(sorted((options or {}).items())), when)


def program_origin(program: Callable[..., Any]) -> str:
    """``module.function`` of a template's program (a program made by a factory names the factory)."""
    qual = getattr(program, "__qualname__", type(program).__name__)
    return f"{getattr(program, '__module__', '?')}.{qual.split('.<locals>', 1)[0]}"


@dataclass(frozen=True)
class Template:
    """A query template: how a kind of question is answered.

    ``examples`` and ``description`` are what queries are matched against. ``program`` is the offline analytic
    answer (``None`` when only a VLM can answer); ``explain`` says its rule in one line
    (``"slope >= 25 deg AND NDVI < 0.3"``) and ``sources`` cites where thresholds come from. ``prompt`` is the
    expansion handed to a VLM reasoner. ``kinds`` limits the scene kinds it applies to; ``requires`` the band roles
    it needs. ``halo`` is the context (px) the program needs around a tile.

    What the template covers, declared for routing (:mod:`rscore.engine.matching`); each is a tuple of short phrases:

    - ``includes``: narrower things inside its mask that it cannot isolate ("pancreas" for soft tissue). A query
      naming one is answered with a machine-readable caveat that the mask is a superset, never silently.
    - ``broader``: wider concepts of which it marks only a part ("personal protective equipment" for hi-vis
      clothing). A query naming one is answered ``absent``.
    - ``excludes``: look-alike questions it does not answer ("avalanche paths" for landslides). ``absent`` too.

    ``uses`` declares the registered operators its program calls (:func:`uses`); a program that calls none is
    direct code. ``rscore templates list --programs`` shows them; a test runs each program and checks the
    declaration against the calls it really makes.

    ``refine(scene, options, mask, score, classes)`` is an optional whole-map step on the program's stitched outputs
    (in memory or on disk), run by the finish stage before it derives the instances, so that they are built once
    from the final mask: a rule a tile cannot apply (the landslide map's minimum mapping unit). It returns
    ``(mask, classes, step)`` (the step is appended to the plan) or ``None`` to leave them as they are.

    ``tile_summary(ctx)`` is optional work for the writers done on each tile while its pixels are in memory (in the
    tile's worker process with ``-O workers``): called by :func:`rscore.engine.tile.run_tile` after the program,
    with the program's :class:`OpContext` (bands it read are cached there); whatever it returns (small and
    picklable: it travels back from the worker and is held until the writers run; ``None`` for nothing) reaches
    :attr:`rscore.types.Result.tile_summaries` as ``(core window, value)``. The earth plugin's block-mean preview of
    the input (``map.png``, ``basemap.png``) is one, so its map writer does not read the whole input again.
    """

    name: str
    label: str
    description: str
    examples: tuple[str, ...]
    program: Callable[[OpContext], ProgramOutput] | None = None
    explain: str = ""
    prompt: str = ""
    keywords: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("image", "raster", "volume", "video")
    halo: int = 0
    sources: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()  # names of classes 1..n when the program returns graded classes
    caveats: tuple[str, ...] = ()  # known limits and confusions, copied into Result.caveats whenever it answers
    path_options: tuple[str, ...] = ()  # options its program reads as server-side files (the service confines them)
    needs: tuple[str, ...] = ()  # what its program needs beyond the input: "detector" (-O detector_model=...)
    includes: tuple[str, ...] = ()  # narrower things inside the mask it cannot isolate -> superset caveat
    broader: tuple[str, ...] = ()  # wider concepts it marks only part of -> absent
    excludes: tuple[str, ...] = ()  # look-alike questions it does not answer -> absent
    uses: tuple[OpUse, ...] = ()  # registered operators its program calls (empty: direct code)
    refine: Callable[..., Any] | None = None  # whole-map step on the stitched outputs before the instances
    fixed_region: bool = False  # its answer does not move with the picture (zones from a file): video runs it per frame
    tile_summary: Callable[[OpContext], Any] | None = None  # per-tile work for writers -> Result.tile_summaries
    plugin: str = ""  # filled in by the registry

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}" if self.plugin else self.name

    def program_info(self) -> dict[str, Any]:
        """The template as a program: the operators it uses (with literal parameters), or the direct code it runs,
        and its rule line. ``kind`` is ``"operators"``, ``"direct"`` or ``"vlm"`` (no offline program)."""
        if self.program is None:
            return {"kind": "vlm", "uses": [], "code": None, "explain": self.explain}
        if self.uses:
            return {"kind": "operators", "uses": [u.to_dict() for u in self.uses], "code": None,
                    "explain": self.explain}  # fmt: skip
        return {"kind": "direct", "uses": [], "code": program_origin(self.program), "explain": self.explain}

    def program_text(self) -> str:
        """One line: ``earth.slope, earth.curvature(kind='plan')`` or ``direct code: module.function``."""
        if self.program is None:
            return "VLM only"
        if self.uses:
            return ", ".join(str(u) for u in self.uses)
        needs = f" (needs: {', '.join(self.needs)})" if self.needs else ""
        return f"direct code: {program_origin(self.program)}{needs}"


# --------------------------------------------------------------------------------------------------------- backends
@dataclass(frozen=True)
class BackendSpec:
    """A reasoner, segmenter, propagator or detector that can be selected by name (``--reasoner``, ``--segmenter``,
    ``-O detector=NAME``).

    ``factory(options)`` builds it; ``modules`` lists the Python modules it needs, so that rscore can say what is
    missing instead of failing on import.

    Reasoners implement ``plan(scene, request, templates) -> Plan``; segmenters implement
    ``segment(image, targets) -> list[Instance]`` with ``image`` an ``(H, W, 3)`` uint8 array; detectors implement
    ``detect(image, phrases) -> list[Detection]`` and ``detect_batch`` (:mod:`rscore.detectors`).
    """

    kind: Literal["reasoner", "segmenter", "propagator", "detector"]
    name: str
    factory: Callable[[Mapping[str, Any]], Any]
    description: str
    modules: tuple[str, ...] = ()
    plugin: str = ""

    def missing_modules(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------------------------------------- adapters
@dataclass(frozen=True)
class AdapterSpec:
    """Fine-tuning defaults a plugin declares for its domain.

    ``target_modules`` are the LoRA targets of the reasoner, ``augmentations`` the names of domain augmentations
    (e.g. ``hflip``, ``rot90``, ``colour_jitter_underwater``), ``dataset_reader`` optionally maps a plugin-specific
    dataset folder to manifest rows. ``trainer`` optionally fits something other than the VLM LoRA (e.g. the earth
    plugin's susceptibility model from a landslide inventory): ``rscore finetune --plugin NAME`` first calls
    ``trainer(dataset, out, options, as_json)`` of each of the plugin's specs, and the first that returns
    ``(text, exit code)`` instead of ``None`` (None = "not my kind of dataset") answers; it writes ``out`` in the
    adapter format of :mod:`rscore.finetune.adapter` and raises :class:`rscore.errors.RscoreError` subclasses on
    bad input.
    """

    name: str
    description: str
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lora_rank: int = 8
    augmentations: tuple[str, ...] = ()
    dataset_reader: Callable[[Path], Sequence[Mapping[str, Any]]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""
    trainer: Callable[[Path, Path, Mapping[str, Any], bool], tuple[str, int] | None] | None = None
