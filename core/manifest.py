"""Reading JSONL / CSV manifests: one row per item, image paths relative to the manifest's folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    """A manifest that cannot be read: unknown format, bad JSON, a missing column."""


def iter_manifest(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a ``.jsonl``/``.json`` (one object a line) or ``.csv``/``.tsv`` manifest."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{lineno}: expected a JSON object per line")
                yield row
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise ManifestError(f"{path}: manifests are .jsonl or .csv (got {suffix or 'no extension'})")


def read_manifest(path: str | Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All rows of a manifest, checking that every row has the ``required`` keys."""
    rows = list(iter_manifest(path))
    for i, row in enumerate(rows, 1):
        missing = [k for k in required if row.get(k) in (None, "")]
        if missing:
            raise ManifestError(f"{path}: row {i} lacks {', '.join(missing)} (columns: {', '.join(row)})")
    return rows


def resolve(manifest: str | Path, location: str) -> Path:
    """An image location from a manifest row, relative to the manifest's folder unless absolute."""
    p = Path(location).expanduser()
    return p if p.is_absolute() else Path(manifest).resolve().parent / p
