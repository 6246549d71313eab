"""The unit every source yields and the embedding stage takes: where an image is, and its catalog metadata.

A module of its own so that the sources (``index.reader``, ``index.shards``) and ``index.embed``
share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceItem:
    """One image to index: where it is (a file, or an http(s) URL), and the metadata that goes into the catalog."""

    path: Path | str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return str(self.path)
