"""Prompt templates for zero-shot classification: ``"a photo of a {}."`` with the label in the slot."""

from __future__ import annotations

DEFAULT_TEMPLATES = ("a photo of a {}.", "an emoji of {}.", "a picture of {}.", "{}")

_PROBE = "\x00label\x00"


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be used (it must hold exactly one ``{}`` slot), or None when it can."""
    try:
        filled = template.format(_PROBE)
    except (IndexError, KeyError, ValueError):
        return f"template {template!r} must have exactly one '{{}}' slot and no other braces (write '{{{{' for a brace)"
    if filled.count(_PROBE) != 1:
        return f"template {template!r} must have exactly one '{{}}' slot where the label goes"
    return None
