"""A setting is declared once, on its dataclass field: help text, the commands that offer it
as a flag, and what ``pe align`` does with it. The ``pe train`` / ``pe align`` flags and
align's inherited and fixed lists are all read from here (as peft keeps help in field
metadata), so a new field needs no edit anywhere else.

Example::

    @dataclass
    class Settings:
        lr: float = option(1e-4, help="learning rate", cli=BOTH, group="schedule")

    [f.name for f in cli_fields(Settings, "train")]   # ['lr']
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, Field, field, fields
from typing import Any

TRAIN, ALIGN = "train", "align"
BOTH = (TRAIN, ALIGN)

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
) -> Any:
    """A dataclass field that users may set: ``cli`` names the commands with a flag for it
    (``--field-name``, or ``flag``), shown in ``group``; the flag's help ends with the
    default (``default_text`` where the default is decided later)."""
    meta = {"help": help, "cli": cli, "group": group, "transfer": transfer,
            "choices": choices, "metavar": metavar, "default_text": default_text, "flag": flag}
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
