"""The training methods: each module here registers one, as ``METHOD`` (a ``training.method.Method``).

Adding a method is one module in this package (its model, step, data, options and encoder builder)
plus its test; ``python -m training`` and ``training.runner.run`` find it here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from training.method import Method


@functools.cache
def registered() -> dict[str, Method]:
    """Every method of this package by name, in module order."""
    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        method = getattr(importlib.import_module(f"{__name__}.{info.name}"), "METHOD", None)
        if isinstance(method, Method):
            if method.name in found:
                raise ValueError(f"two training methods are named {method.name!r}")
            found[method.name] = method
    return found
