"""Command-line options declared on the fields of a training method's config dataclass.

``option(default, help)`` is ``dataclasses.field`` plus what ``python -m training`` needs to offer
the field as ``--field-name`` (argparse itself stays in ``__main__``): its help text and, where they
differ from the field's, the flag, the parsed name (a recipe's key), the command line's default and
how the parsed value becomes the field's value. The kind of option follows the field's type:

    int, float, Path (or ``X | None``)   a value of that type; str and anything else a string
    bool                                 --flag when the default is False, else --flag / --no-flag
    list[...]                            repeatable (append)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()  # no command-line default of its own


@dataclass(frozen=True)
class Option:
    help: str | None = None
    flag: str | None = None  # default: --FIELD-NAME
    dest: str | None = None  # the parsed name, also a recipe's key; default: the field's name
    cli_default: Any = UNSET  # the command line's default where it differs from the field's
    parse: Callable[[Any], Any] | None = None  # parsed value -> the field's value (ValueError: a usage error)
    action: str | None = None  # store_true | switch (--x / --no-x) | append; default: from the field's type
    type: Callable | None = None  # default: from the field's type
    choices: tuple | None = None
    metavar: str | None = None


def option(default: Any = MISSING, help: str | None = None, *, factory: Callable[[], Any] | Any = MISSING,
           **spec) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    return field(default=default, default_factory=factory, metadata={"option": Option(help, **spec)})


@dataclass(frozen=True)
class Declared:
    """One option of a config class, resolved: what ``add_argument`` gets and where its value goes."""

    name: str  # the field
    flag: str
    dest: str
    kwargs: dict[str, Any]  # add_argument's keywords; action "switch" stands for argparse's BooleanOptionalAction
    parse: Callable[[Any], Any] | None


def declared(cls: type) -> list[Declared]:
    """The command-line options of config class ``cls``, in field order."""
    out = []
    for f in fields(cls):
        opt: Option | None = f.metadata.get("option")
        if opt is not None:
            out.append(Declared(f.name, opt.flag or "--" + f.name.replace("_", "-"), opt.dest or f.name,
                                _kwargs(f, opt), opt.parse))
    return out


def _field_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _kwargs(f: Field, opt: Option) -> dict[str, Any]:
    default = opt.cli_default if opt.cli_default is not UNSET else _field_default(f)
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))  # "int", "bool | None"
    kw: dict[str, Any] = {"help": opt.help}
    if default is MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    action = opt.action
    if action is None and kind.startswith("bool"):
        action = "store_true" if default is False else "switch"
    elif action is None and kind.startswith("list"):
        action = "append"
    if action is not None:
        kw["action"] = action
    value_type = opt.type or _value_type(kind)
    if action not in ("store_true", "store_false", "switch") and value_type is not None:
        kw["type"] = value_type
    if opt.choices is not None:
        kw["choices"] = list(opt.choices)
    if opt.metavar is not None:
        kw["metavar"] = opt.metavar
    return kw


def _value_type(kind: str) -> Callable | None:
    base = kind.split("|")[0].strip()
    return {"int": int, "float": float, "Path": Path}.get(base)


def field_values(cls: type, parsed: dict[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s option fields from parsed options (keyed by dest); a ValueError names the flag."""
    values = {}
    for d in declared(cls):
        value = parsed[d.dest]
        if d.parse is not None:
            try:
                value = d.parse(value)
            except ValueError as exc:
                raise ValueError(f"{d.flag}: {exc}") from None
        values[d.name] = value
    return values


def backbone_spec(value: str | dict | None) -> dict | None:
    """A backbone option: a ``training.backbones`` spec as text (``small-cnn,width=8``, JSON) or, from a
    recipe, already an object."""
    if value is None or isinstance(value, dict):
        return value
    from training.backbones import parse_backbone

    return parse_backbone(value)


def column_values(items: list[str]) -> dict[str, str]:
    """``COLUMN=VALUE`` items -> {column: value}."""
    if any("=" not in item for item in items):
        raise ValueError("takes COLUMN=VALUE")
    return dict(item.split("=", 1) for item in items)
