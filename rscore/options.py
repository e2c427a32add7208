"""Engine options into typed backend settings: one reading of ``-O KEY=VALUE`` text for every backend.

Options reach a backend as one flat mapping (CLI ``-O`` values are JSON or text, SDK callers pass Python values).
A backend's settings are a frozen dataclass; these helpers pick its keys out of the mapping and convert them by the
field's annotation, so ``-O sam2_multimask=no``, ``-O stride=2`` and ``{"stride": 2}`` mean the same everywhere:

- :func:`parse_bool` - ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) or a bool;
- :func:`scoped` - a backend's own keys: shared flat keys, then ``<scope>_<field>`` keys, then a nested ``<scope>``
  mapping (later wins); an unknown ``<scope>_*`` key is an :class:`~rscore.errors.OptionError`;
- :func:`typed` - convert values by the dataclass field annotations (``bool``, ``int``: whole numbers only,
  ``float``: finite, anything else ``str``); a value that does not convert is an ``OptionError`` naming the option.

Which option names exist is declared, not guessed: the core's (:func:`rscore.builtin.core_options`, from the same settings
dataclasses the backends read), each plugin's (the ``rscore_options`` hook) and each operator's (``Operator.options``).
:func:`check_known` turns a name nobody declares (``-O tile_sise=64``) into an ``OptionError`` with the closest
known names, instead of silently ignoring it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rscore.errors import OptionError

if TYPE_CHECKING:
    from rscore.plugins import Registry
    from rscore.sdk import Param

__all__ = [
    "TRUE", "FALSE", "parse_bool", "field_kind", "convert", "typed", "scoped", "dataclass_params",
    "known_options", "check_known",
]  # fmt: skip

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(value: Any, name: str, *, what: str = "option") -> bool:
    """A boolean option; ``what`` prefixes the error (``"option"``, ``"sam2 segmenter option"``...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise OptionError(f"{what} {name} must be true or false (or yes/no, on/off, 1/0), got {value!r}")


def parse_nonnegative(value: Any, name: str, *, unit: str = "") -> float:
    """A finite number >= 0 (a size, a volume, a distance); ``unit`` names it in the error ("metres", "mL")."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name} must be a number{f' ({unit})' if unit else ''}, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise OptionError(f"option {name} must be >= 0{f' {unit}' if unit else ''}, got {value!r}")
    return out


def field_kind(field: dataclasses.Field[Any]) -> type:
    """``bool``, ``int``, ``float`` or ``str`` from a dataclass field's annotation (``int | None`` is ``int``)."""
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    for kind in (bool, int, float):
        if re.search(rf"\b{kind.__name__}\b", text):
            return kind
    return str


def convert(value: Any, kind: type, name: str, *, what: str = "option") -> Any:
    """``value`` (JSON or text) as ``kind``; an :class:`OptionError` naming ``what name`` when it is not one."""
    if kind is bool:
        return parse_bool(value, name, what=what)
    if kind is str:
        return str(value)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        if kind is int:
            if not number.is_integer():
                raise ValueError
            return int(number)
        return number
    except (TypeError, ValueError):
        wanted = "a whole number" if kind is int else "a number"
        raise OptionError(f"{what} {name} must be {wanted}, got {value!r}") from None


def typed(cls: type, values: Mapping[str, Any], *, what: str = "option") -> dict[str, Any]:
    """``values`` (keys: fields of dataclass ``cls``; ``None`` and ``""`` mean unset and are dropped) converted by
    the fields' annotations."""
    kinds = {f.name: field_kind(f) for f in dataclasses.fields(cls)}
    return {k: convert(v, kinds[k], k, what=what) for k, v in values.items() if v is not None and v != ""}


def scoped(
    options: Mapping[str, Any], scope: str, cls: type, *, flat: Iterable[str] = (), what: str | None = None
) -> dict[str, Any]:
    """The options of backend ``scope`` for dataclass ``cls``, unconverted: the ``flat`` keys (shared with other
    backends), then ``<scope>_<field>`` keys, then a nested ``options[scope]`` mapping; later ones win, ``None``
    values are unset. Unknown ``<scope>_*`` / nested keys are an :class:`OptionError`."""
    what = what or scope
    values: dict[str, Any] = {k: options[k] for k in flat if options.get(k) is not None}
    prefix = f"{scope}_"
    values.update({k[len(prefix) :]: v for k, v in options.items()
                   if isinstance(k, str) and k.startswith(prefix) and v is not None})  # fmt: skip
    nested = options.get(scope)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise OptionError(f"option '{scope}' must be a mapping of {what} options")
        values.update({k: v for k, v in nested.items() if v is not None})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise OptionError(f"unknown {what} option(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return values


# ------------------------------------------------------------------------------------------ declared option names
_PARAM_TYPE = {bool: "bool", int: "int", float: "float", str: "str"}


def option_field(default: Any, help: str) -> Any:  # noqa: A002 - dataclass metadata's usual key
    """A settings-dataclass field with its one-line description (``metadata["help"]``), which
    :func:`dataclass_params` gives its :class:`~rscore.sdk.Param` (what ``rscore options list`` prints): the
    option's definition is the one place it is described."""
    return dataclasses.field(default=default, metadata={"help": help})


def dataclass_params(
    cls: type, *, scope: str | None = None, flat: Iterable[str] | None = None, what: str = ""
) -> list[Param]:
    """The options a settings dataclass reads, as :class:`~rscore.sdk.Param`: its fields by plain name when
    ``scope`` is ``None`` (or only the ``flat`` ones when given), ``<scope>_<field>`` for every field, and the nested
    ``<scope>`` mapping itself (the shapes :func:`scoped` accepts)."""
    from rscore.sdk import Param

    out: list[Param] = []
    fields = dataclasses.fields(cls)
    plain = {f.name for f in fields} if scope is None else set(flat or ())
    for f in fields:
        default = None if f.default is dataclasses.MISSING else f.default
        kind = _PARAM_TYPE[field_kind(f)]
        text = f.metadata.get("help") or f"{what} {f.name}".strip()  # the field's own line where it has one
        if f.name in plain:
            out.append(Param(f.name, kind, text, default=default))
        if scope is not None:
            out.append(Param(f"{scope}_{f.name}", kind, text, default=default))
    if scope is not None:
        out.append(Param(scope, "str", f"{what} options as one mapping (JSON object)".strip()))
    return out


def known_options(registry: Registry) -> dict[str, tuple[str, Param]]:
    """``{name: (declaring plugin, Param)}`` over the core and every installed plugin and operator."""
    return dict(registry.options)


def check_known(options: Mapping[str, Any], registry: Registry) -> None:
    """Raise :class:`OptionError` for option names that nothing installed declares, naming the closest ones."""
    known = registry.options
    unknown = sorted(k for k in options if k not in known)
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
        parts.append(f"'{name}'" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    raise OptionError(
        f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(parts)}: no template, operator or backend "
        "declares it ('rscore operators list' and 'rscore options list' show what each reads)"
    )
