"""The per-deployment limits of ``Settings`` applied to requests, before any expensive work.

JSON from a caller (a body, or a form field holding JSON) is bounded three ways: its size in
characters, its nesting depth, and its number of values (arrays, objects, strings and numbers
at all levels together); every number, integers included, is finite and within float range.
These hold for any JSON the service reads, so no route has to remember them; ids have their
own, smaller bound in the request models (``ID_MAX``).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from service.errors import validation_error
from service.settings import Settings

FLOAT_MAX = sys.float_info.max  # 1.8e308: the largest number a JSON reader in any language can hold


def check_k(k: int, settings: Settings, loc: tuple[str, ...]) -> int:
    """``k`` within 1..max_k, else a 422 shaped like pydantic's own range errors."""
    if k < 1:
        raise validation_error(loc, "Input should be greater than or equal to 1", "greater_than_equal")
    if k > settings.max_k:
        raise validation_error(loc, f"Input should be less than or equal to {settings.max_k} (the server's max_k)",
                               "less_than_equal")
    return k


def check_offset(offset: int, settings: Settings, loc: tuple[str, ...]) -> int:
    """``offset`` within 0..max_offset: deeper pages cost a search of offset + k neighbours."""
    if offset < 0:
        raise validation_error(loc, "Input should be greater than or equal to 0", "greater_than_equal")
    if offset > settings.max_offset:
        raise validation_error(loc, f"Input should be less than or equal to {settings.max_offset} (the server's "
                               "max_offset)", "less_than_equal")
    return offset


def check_page(k: int, offset: int, settings: Settings, loc: tuple[str, ...] = ("body",)) -> None:
    check_k(k, settings, (*loc, "k"))
    check_offset(offset, settings, (*loc, "offset"))


def check_text(text: str, settings: Settings, loc: tuple[str | int, ...]) -> str:
    """A query, label or template no longer than max_text_chars."""
    if len(text) > settings.max_text_chars:
        raise validation_error(loc, f"String should have at most {settings.max_text_chars} characters",
                               "string_too_long")
    return text


def json_problem(value: Any, max_depth: int, max_values: int) -> tuple[tuple[str | int, ...], str, str] | None:
    """Why parsed JSON ``value`` breaks the limits, as (where, message, type), or None when it does not.

    Walks without recursion and stops at the first problem; it visits at most ``max_values`` values."""
    seen = 0
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]  # (value, depth, where)
    while stack:
        node, depth, where = stack.pop()
        seen += 1
        if seen > max_values:
            return (), f"more than {max_values} values in one JSON document", "too_many_values"
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return where, f"nested deeper than {max_depth} levels", "too_deep"
            if seen + len(stack) + len(node) > max_values:
                return (), f"more than {max_values} values in one JSON document", "too_many_values"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((child, depth + 1, (*where, key)) for key, child in items)
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not -FLOAT_MAX <= node <= FLOAT_MAX:
                return where, "numbers must be within float range (|x| below 1.8e308)", "number_out_of_range"
        elif isinstance(node, float) and not math.isfinite(node):
            return where, "numbers must be finite (|x| below 1.8e308; no NaN or Infinity)", "number_out_of_range"
    return None


def _no_constants(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number", "number_out_of_range")


class _Refused(ValueError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def loads(data: str | bytes, settings: Settings, loc: tuple[str | int, ...] = ("body",)) -> Any:
    """JSON text -> value within the limits of the module doc; anything else is a 422 naming ``loc``.

    Syntax errors raise ``json.JSONDecodeError`` (so that a caller may report them its own way)."""
    if data.count(b"," if isinstance(data, bytes) else ",") >= settings.max_json_values:  # C speed, before parsing
        raise validation_error(loc, f"more than {settings.max_json_values} values in one JSON document",
                           "too_many_values")
    try:
        value = json.loads(data, parse_constant=_no_constants)
    except json.JSONDecodeError:
        raise
    except _Refused as exc:
        raise validation_error(loc, str(exc), exc.kind) from None
    except RecursionError:
        raise validation_error(loc, f"nested deeper than {settings.max_json_depth} levels", "too_deep") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise validation_error(loc, f"a number out of range ({exc})"[:200], "number_out_of_range") from None
    problem = json_problem(value, settings.max_json_depth, settings.max_json_values)
    if problem is not None:
        where, message, kind = problem
        raise validation_error((*loc, *where), message, kind)
    return value


def parse_json_field(text: str | None, settings: Settings, loc: tuple[str, ...], code: str) -> Any:
    """A form field holding JSON (a filter, metadata): None when blank, else the bounded value;
    bad JSON is a 422 whose detail type is ``code``."""
    if text is None or not text.strip():
        return None
    if len(text) > settings.max_filter_chars:
        raise validation_error(loc, f"String should have at most {settings.max_filter_chars} characters",
                               "string_too_long")
    try:
        return loads(text, settings, loc)
    except json.JSONDecodeError as exc:
        raise validation_error(loc, f"not JSON: {exc.msg}", code) from None
