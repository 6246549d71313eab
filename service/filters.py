"""Metadata filters for searches: equality, membership and ranges on numbers and dates.

    {"vendor": "google"}                                  equality
    {"category": ["Animals & Nature", "Food & Drink"]}    membership
    {"year": {"gte": 2010, "lt": 2020}}                   a range on numbers
    {"added": {"gte": "2026-01-01"}}                      a range on ISO dates / date-times
    {"vendor": {"ne": "twitter"}, "name": {"nin": ["x"]}}

Every condition must hold (AND). A range compares numbers with numbers and ISO dates with
ISO dates; a value of another type never matches. A filter holds at most ``MAX_KEYS`` keys
and an ``in``/``nin`` list at most ``MAX_MEMBERS`` values (the OpenAPI schema says so too).
Searches apply the filter to the catalog rows of the nearest neighbours and widen the neighbourhood
until ``k`` rows match or the index is exhausted, so a filtered query returns ``k`` results whenever
``k`` items match.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from service.errors import validation_error

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte")
MAX_KEYS = 64
MAX_MEMBERS = 1024
RANGE = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}

Predicate = Callable[[dict[str, Any]], bool]


def compile_filter(spec: dict[str, Any] | None, loc: tuple[str, ...] = ("body", "filter")) -> Predicate | None:
    """A predicate over an item's metadata, or None for no filter; a malformed filter is a 422."""
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise validation_error(loc, "a filter is an object of metadata key -> condition", "bad_filter")
    if len(spec) > MAX_KEYS:
        raise validation_error(loc, f"at most {MAX_KEYS} keys in a filter", "bad_filter")
    tests = [_condition(key, cond, (*loc, key)) for key, cond in spec.items()]
    return lambda meta: all(test(meta) for test in tests)


def _condition(key: str, cond: Any, loc: tuple[str, ...]) -> Predicate:
    if isinstance(cond, list):
        return _condition(key, {"in": cond}, loc)
    if not isinstance(cond, dict):
        return _condition(key, {"eq": cond}, loc)
    if not cond:
        raise validation_error(loc, "an empty condition", "bad_filter")
    unknown = sorted(set(cond) - set(OPERATORS))
    if unknown:
        raise validation_error(loc, f"unknown operator(s) {', '.join(unknown)}; use {', '.join(OPERATORS)}",
                               "bad_filter")
    parts: list[Predicate] = []
    for op, want in cond.items():
        if op in ("in", "nin"):
            if not isinstance(want, list):
                raise validation_error((*loc, op), f"'{op}' takes a list", "bad_filter")
            if len(want) > MAX_MEMBERS:
                raise validation_error((*loc, op), f"'{op}' takes at most {MAX_MEMBERS} values", "bad_filter")
            members = [_plain(v) for v in want]
            parts.append(_member(key, members, negate=op == "nin"))
        elif op in ("eq", "ne"):
            parts.append(_equal(key, _plain(want), negate=op == "ne"))
        else:
            bound = _orderable(want)
            if bound is None:
                raise validation_error((*loc, op), f"'{op}' takes a finite number or an ISO date", "bad_filter")
            parts.append(_range(key, RANGE[op], bound))
    return lambda meta: all(p(meta) for p in parts)


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        raise validation_error(("body", "filter"), "conditions compare with numbers, strings, booleans or null",
                               "bad_filter")
    return value


def _equal(key: str, want: Any, negate: bool) -> Predicate:
    def test(meta: dict[str, Any]) -> bool:
        have = meta.get(key)
        hit = want in have if isinstance(have, list) else have == want  # a list-valued field matches any element
        return hit != negate

    return test


def _member(key: str, members: list[Any], negate: bool) -> Predicate:
    def test(meta: dict[str, Any]) -> bool:
        have = meta.get(key)
        values = have if isinstance(have, list) else [have]
        return any(v in members for v in values) != negate

    return test


def _range(key: str, compare: Callable[[Any, Any], bool], bound: float | dt.datetime) -> Predicate:
    def test(meta: dict[str, Any]) -> bool:
        have = _orderable(meta.get(key))
        if have is None or isinstance(have, dt.datetime) != isinstance(bound, dt.datetime):
            return False
        return compare(have, bound)

    return test


def _orderable(value: Any) -> float | dt.datetime | None:
    """A number, or an ISO date / date-time string as an aware datetime (UTC when no zone); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range: it compares with nothing
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None
