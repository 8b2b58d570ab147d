"""A setting is declared once, on its dataclass field: help text, the commands that offer it
as a flag, and what ``pe align`` does with it. The ``pe train`` / ``pe align`` flags and
align's inherited and fixed lists are all read from here (as peft keeps help in field
metadata), so a new field needs no edit anywhere else. So is what a value may be: its type
(the field's annotation) and its range (``ge``/``gt``/``le``/``lt``), checked by
:func:`check_options` for every entry point alike (the API's keywords and the CLI's flags
become the same dataclass).

Example::

    @dataclass
    class Settings:
        lr: float = option(1e-4, help="learning rate", cli=BOTH, group="schedule", gt=0)

        def __post_init__(self):
            check_options(self)

    [f.name for f in cli_fields(Settings, "train")]   # ['lr']
    Settings(lr=float("nan"))                          # ConfigError: lr must be ...
"""

from __future__ import annotations

import argparse
import math
import numbers
import operator
import typing
from dataclasses import MISSING, Field, field, fields
from typing import Any

from pe_core.errors import ArgumentTypeError, ConfigError

TRAIN, ALIGN = "train", "align"
BOTH = (TRAIN, ALIGN)
SERVE = ("serve",)

# transfer: what `pe align` does with a field of the source run's pe_config.json
INHERIT = "inherit"  # starts from the source run's value; may be overridden
FIXED = "fixed"  # the source run's value, which cannot change
SOURCE_PROMPTING = "source-prompting"  # names the source run's Prompting LLM: cannot change

_KEY = "pe_option"


def option(
    default: Any = MISSING,
    *,
    help: str = "",
    cli: tuple[str, ...] = (),
    group: str | None = None,
    transfer: str | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
    flag: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field that users may set: ``cli`` names the commands with a flag for it
    (``--field-name``, or ``flag``), shown in ``group``; the flag's help ends with the
    default (``default_text`` where the default is decided later). ``ge``/``gt``/``le``/
    ``lt`` bound a number (>=, >, <=, <), which :func:`check_options` enforces."""
    meta = {"help": help, "cli": cli, "group": group, "transfer": transfer,
            "choices": choices, "metavar": metavar, "default_text": default_text, "flag": flag,
            "ge": ge, "gt": gt, "le": le, "lt": lt}
    return field(default=default, metadata={_KEY: meta})


def meta(f: Field[Any]) -> dict[str, Any]:
    """The :func:`option` metadata of field ``f``."""
    return dict(f.metadata[_KEY])


def option_fields(cls: type) -> list[Field[Any]]:
    """The fields of dataclass ``cls`` declared with :func:`option`, in order."""
    return [f for f in fields(cls) if _KEY in f.metadata]


def cli_fields(cls: type, command: str) -> list[Field[Any]]:
    """The option fields of ``cls`` that ``command`` (``"train"``/``"align"``) offers."""
    return [f for f in option_fields(cls) if command in meta(f)["cli"]]


def transfer_names(cls: type, *kinds: str) -> list[str]:
    """Names of the option fields of ``cls`` whose transfer behaviour is one of ``kinds``."""
    return [f.name for f in option_fields(cls) if meta(f)["transfer"] in kinds]


def value_type(cls: type, f: Field[Any]) -> type:
    """The field's type with ``None`` taken out (``int | None`` -> ``int``)."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) is tuple:  # its args are the items' type, not a union's
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def is_optional(cls: type, f: Field[Any]) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls)[f.name])


def help_text(f: Field[Any], command: str) -> str:
    """The flag's help in ``command``: the field's help and its default (an on/off flag's
    default is that it is not given; in ``pe align`` an inherited field's is the source
    run's value)."""
    m = meta(f)
    if isinstance(f.default, bool):
        return str(m["help"])
    if command == ALIGN and m["transfer"] == INHERIT:
        return f"{m['help']} (default: the source run's)"
    value = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    default = m["default_text"] or f"default {value}"
    return f"{m['help']} ({default})" if m["help"] else f"({default})"


def _range_text(m: dict[str, Any]) -> str:
    parts = [f"{sign} {m[key]}" for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="),
                                                    ("lt", "<")) if m.get(key) is not None]
    return " and ".join(parts)


_BOUNDS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def _in_range(value: float, m: dict[str, Any]) -> bool:
    # ints compare exactly with int or float bounds (a seed near 2**63 stays exact)
    return all(m.get(k) is None or test(value, m[k]) for k, test in _BOUNDS.items())


def is_int_list(kind: Any) -> bool:
    """Whether a field's value type is ``tuple[int, ...]`` (a list of integers)."""
    return typing.get_origin(kind) is tuple


def int_list(text: str) -> tuple[int, ...]:
    """A ``tuple[int, ...]`` flag's text, comma-separated: ``"64,128,256"`` -> ``(64, 128,
    256)``; ``""`` -> ``()``. ``ValueError`` (argparse's usage error) for anything else."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    if not all(p.lstrip("-").isdigit() for p in parts):
        raise ValueError(text)
    return tuple(int(p) for p in parts)


def flag_type(cls: type, f: Field[Any]) -> Any:
    """What a flag's text is converted with: the field's type, or :func:`int_list`."""
    kind = value_type(cls, f)
    return int_list if is_int_list(kind) else kind


def _check_int_list(f: Field[Any], value: Any, m: dict[str, Any]) -> tuple[int, ...]:
    """A ``tuple[int, ...]`` field's value: a list or tuple of integers, each in the
    field's range (a list is what the field reads back from JSON)."""
    bounds = _range_text(m)
    wanted = "a list of integers" + (f", each {bounds}" if bounds else "")
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise ArgumentTypeError(
            f"{f.name} must be {wanted}, got {type(value).__name__} {value!r:.60}"
        )
    items = tuple(int(v) for v in value)
    if not all(_in_range(v, m) for v in items):
        raise ConfigError(f"{f.name} must be {wanted}, got {list(items)}")
    return items


def check_value(cls: type, f: Field[Any], value: Any) -> Any:
    """``value`` for field ``f`` of ``cls`` after checking its type (the annotation: an
    ``int`` is no bool, float or string; a ``float`` is a finite number) and its declared
    range and choices; numbers come back as plain ``int``/``float``, so they save as
    JSON. :class:`ArgumentTypeError` for a wrong type, :class:`ConfigError` for a value
    out of range.

    Example::

        check_value(TrainSettings, steps_field, 3)      # 3
        check_value(TrainSettings, steps_field, "3")    # ArgumentTypeError
    """
    m = meta(f)
    if value is None and is_optional(cls, f):
        return None
    kind = value_type(cls, f)
    if is_int_list(kind):
        return _check_int_list(f, value, m)
    bounds = _range_text(m)
    wanted = {bool: "True or False", int: "an integer", float: "a finite number",
              str: "a string"}.get(kind, kind.__name__)
    wanted += f" {bounds}" if bounds else ""
    wanted += " or None" if is_optional(cls, f) else ""
    is_bool = isinstance(value, bool)
    ok = {bool: is_bool, int: isinstance(value, numbers.Integral) and not is_bool,
          float: isinstance(value, numbers.Real) and not is_bool,
          str: isinstance(value, str)}.get(kind, True)
    if not ok:
        raise ArgumentTypeError(
            f"{f.name} must be {wanted}, got {type(value).__name__} {value!r:.60}"
        )
    if kind in (int, float):
        value = kind(value)
        if not math.isfinite(value) or not _in_range(value, m):
            raise ConfigError(f"{f.name} must be {wanted}, got {value}")
    if m["choices"] and value not in m["choices"]:
        raise ConfigError(f"{f.name} must be one of {list(m['choices'])}, got {value!r}")
    return value


def check_options(obj: Any) -> None:
    """Check every :func:`option` field of the dataclass instance ``obj`` in place (see
    :func:`check_value`): the one check of each setting, whichever entry point set it."""
    cls = type(obj)
    for f in option_fields(cls):
        object.__setattr__(obj, f.name, check_value(cls, f, getattr(obj, f.name)))


def _on_off(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


def add_flags(parser: argparse.ArgumentParser, classes: tuple[type, ...], command: str) -> None:
    """One flag per option field of ``classes`` that ``command`` offers, in the field's
    ``group``; a flag left out parses as None, so it passes nothing on (see
    :func:`flag_values`). An on/off field with a fixed default is a switch that flips
    it (``--truncate``, ``--no-batching``); an optional one takes ``on|off``.

    Example::

        add_flags(parser, (ServeSettings,), "serve")
        ServeSettings(**flag_values(parser.parse_args(argv), (ServeSettings,), "serve"))
    """
    groups: dict[str | None, Any] = {None: parser}
    for cls in classes:
        for f in cli_fields(cls, command):
            m = meta(f)
            if m["group"] not in groups:
                groups[m["group"]] = parser.add_argument_group(m["group"])
            flag = m["flag"] or "--" + f.name.replace("_", "-")
            kind = value_type(cls, f)
            kw: dict[str, Any] = {"dest": f.name, "help": help_text(f, command), "default": None}
            if kind is bool and is_optional(cls, f):
                kw.update(type=_on_off, metavar="on|off")
            elif kind is bool:
                kw.update(action="store_const", const=not f.default)
            else:
                kw.update(type=flag_type(cls, f), choices=m["choices"], metavar=m["metavar"])
            groups[m["group"]].add_argument(flag, **kw)


def flag_values(args: argparse.Namespace, classes: tuple[type, ...], command: str
                ) -> dict[str, Any]:
    """The fields :func:`add_flags` made flags for and the command line gave ('' means
    None where a field may be None)."""
    out = {}
    for cls in classes:
        for f in cli_fields(cls, command):
            value = getattr(args, f.name)
            if value is not None:
                out[f.name] = None if value == "" and is_optional(cls, f) else value
    return out
