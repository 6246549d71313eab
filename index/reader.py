"""Sources of images to index: a folder (recursive, by extension), a JSONL/CSV manifest
(whose image column holds paths relative to it, absolute paths, or http(s) URLs), or
webdataset tar shards (``index.shards``: a ``.tar`` file or a brace pattern of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core.manifest import iter_manifest, resolve
from core.shards import is_shards
from index.fetch import is_url
from index.shards import read_shards
from index.source_item import SourceItem

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
MANIFEST_EXTENSIONS = frozenset({".jsonl", ".json", ".ndjson", ".csv", ".tsv"})


def read_folder(root: str | Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Iterator[SourceItem]:
    """Every file under ``root`` with an image extension, in sorted order; metadata = relative path."""
    root = Path(root).resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions):
        yield SourceItem(path, {"path": str(path.relative_to(root))})


def read_manifest_items(manifest: str | Path, image_key: str = "file") -> Iterator[SourceItem]:
    """Rows of a manifest; ``image_key`` names the path column, every other column is metadata."""
    for i, row in enumerate(iter_manifest(manifest), 1):
        location = row.get(image_key)
        if not location:
            raise ValueError(f"{manifest}: row {i} has no {image_key!r} column (columns: {', '.join(row)})")
        location = str(location)
        yield SourceItem(location if is_url(location) else resolve(manifest, location), dict(row))


def read_source(source: str | Path, image_key: str = "file") -> Iterator[SourceItem]:
    """A folder, a manifest file or tar shards (a ``.tar`` file or brace pattern), whichever ``source`` is."""
    if not Path(source).is_dir() and is_shards(source):  # a folder is read for its images, tars or not
        return read_shards(source)
    source = Path(source)
    if source.is_dir():
        return read_folder(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_EXTENSIONS:
        return read_manifest_items(source, image_key)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    raise ValueError(f"{source}: a source is a folder, a .jsonl/.csv manifest or .tar shards")
