"""Config fields declared as command-line options: the argparse keywords they stand for, and their values."""

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.options import backbone_spec, column_values, declared, field_values, option


@dataclass
class Example:
    data: Path = option(help="input")
    steps: int = option(3, "how many")
    rate: float | None = option(None, "a rate")
    name: str = option("x")
    quiet: bool = option(False, "say less")
    augment: bool = option(True, "augment")
    nhwc: bool | None = option(None, "NHWC (default: by tower)")
    keys: list[str] = option(factory=list, flag="--key", dest="key", metavar="COLUMN", help="repeatable")
    batch: int = option(128, "per process", cli_default=256)
    where: dict[str, str] = option(factory=dict, action="append", cli_default=[], parse=column_values)
    internal: int = 7  # not an option


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    for d in declared(Example):
        kwargs = dict(d.kwargs)
        if kwargs.get("action") == "switch":
            kwargs["action"] = argparse.BooleanOptionalAction
        p.add_argument(d.flag, dest=d.dest, **kwargs)
    return p


def test_the_field_type_decides_the_kind_of_option():
    got = {d.flag: d.kwargs for d in declared(Example)}
    assert list(got) == ["--data", "--steps", "--rate", "--name", "--quiet", "--augment", "--nhwc", "--key", "--batch",
                         "--where"]
    assert got["--data"] == {"help": "input", "required": True, "type": Path}
    assert got["--steps"] == {"help": "how many", "default": 3, "type": int}
    assert got["--rate"]["type"] is float and got["--rate"]["default"] is None
    assert "type" not in got["--name"] and got["--name"]["default"] == "x"
    assert got["--quiet"]["action"] == "store_true"
    assert got["--augment"]["action"] == "switch" and got["--nhwc"]["action"] == "switch"
    assert got["--key"] == {"help": "repeatable", "default": [], "action": "append", "metavar": "COLUMN"}
    assert got["--batch"]["default"] == 256  # the command line's default, not the field's


def test_parsed_options_become_field_values():
    args = _parser().parse_args(["--data", "d", "--no-augment", "--key", "a", "--key", "b", "--where", "v=g"])
    values = field_values(Example, vars(args))
    assert values == {"data": Path("d"), "steps": 3, "rate": None, "name": "x", "quiet": False, "augment": False,
                      "nhwc": None, "keys": ["a", "b"], "batch": 256, "where": {"v": "g"}}
    assert Example(**values).internal == 7


def test_a_bad_value_names_its_flag():
    args = _parser().parse_args(["--data", "d", "--where", "nothing"])
    with pytest.raises(ValueError, match="^--where: "):
        field_values(Example, vars(args))


def test_backbone_options_take_text_or_a_recipe_object():
    assert backbone_spec("small-cnn,width=8") == {"name": "small-cnn", "width": 8}
    assert backbone_spec({"name": "resnet18"}) == {"name": "resnet18"}
    assert backbone_spec(None) is None
