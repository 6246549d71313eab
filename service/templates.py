"""Prompt templates for zero-shot classification: ``"a photo of a {}."`` with the label in the slot.

A template has exactly one plain ``{}`` slot; other braces are doubled (``{{``). A format spec
or conversion (``{:>10000000}``, ``{!r}``) is refused: a width alone could make one prompt
megabytes long. So a rendered prompt is the template's text plus the label, never longer than
the two together.
"""

from __future__ import annotations

import string

DEFAULT_TEMPLATES = ("a photo of a {}.", "an emoji of {}.", "a picture of {}.", "{}")


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be used, or None when it can."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:  # a lone brace
        return f"template {template!r} must have exactly one '{{}}' slot and no other braces (write '{{{{' for a brace)"
    slots = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if len(slots) != 1:
        return f"template {template!r} must have exactly one '{{}}' slot where the label goes"
    if slots[0] != ("", "", None):
        return (f"template {template!r}: the slot is a plain '{{}}', without a name, format spec or conversion "
                "(a width such as {:>100} would make the prompt that long)")
    return None

