"""The per-deployment limits of ``Settings`` applied to requests that have already parsed."""

from __future__ import annotations

from service.errors import validation_error
from service.settings import Settings


def check_k(k: int, settings: Settings, loc: tuple[str, ...]) -> int:
    """``k`` within 1..max_k, else a 422 shaped like pydantic's own range errors."""
    if k < 1:
        raise validation_error(loc, "Input should be greater than or equal to 1", "greater_than_equal")
    if k > settings.max_k:
        raise validation_error(loc, f"Input should be less than or equal to {settings.max_k} (the server's max_k)",
                               "less_than_equal")
    return k


def check_text(text: str, settings: Settings, loc: tuple[str | int, ...]) -> str:
    """A query, label or template no longer than max_text_chars."""
    if len(text) > settings.max_text_chars:
        raise validation_error(loc, f"String should have at most {settings.max_text_chars} characters",
                               "string_too_long")
    return text
