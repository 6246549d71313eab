"""webdataset tar shards as a source to index, without unpacking them.

A sample is the group of members sharing a key (the member name up to the first dot of
its base name, webdataset's convention): ``000123.jpg``, ``000123.json``, ``000123.txt``.
Each sample with an image member becomes one item whose location is
``/abs/path/shard.tar#000123.jpg``; its ``.json`` member (an object) becomes metadata,
its ``.txt`` member the ``caption``, plus ``shard`` and ``key``. A sample without an
image member is skipped and counted.

Bytes are read straight from the shard: a reader keeps, per shard, a table of member
offsets (one pass over the tar headers, cached per process), then seeks and reads.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.shards import shard_urls
from index.source_item import SourceItem

log = logging.getLogger(__name__)

IMAGE_MEMBER_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
SEPARATOR = ".tar#"  # between the shard's path and the member's name in an item's location


def member_location(shard: Path, member: str) -> str:
    return f"{shard.with_suffix('')}{SEPARATOR}{member}"


def is_shard_member(location: str) -> bool:
    return SEPARATOR in location


def split_location(location: str) -> tuple[Path, str]:
    shard, _, member = location.rpartition(SEPARATOR)
    return Path(shard + ".tar"), member


def _key_and_extension(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    key, _, extension = base.partition(".")
    return (f"{folder}/{key}" if folder else key), extension.lower()


def read_shards(spec: str | Path) -> Iterator[SourceItem]:
    """One SourceItem per sample with an image, shard by shard, in the shards' member order."""
    for url in shard_urls(spec):
        if "://" in url:
            raise ValueError(f"{url}: only local shard files can be indexed (items are read back from them)")
        path = Path(url).resolve()
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        extras: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, extension = _key_and_extension(member.name)
                    samples.setdefault(key, {})[extension] = member
                    if extension in ("json", "txt"):
                        extras.setdefault(key, {})[extension] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError) as exc:
            raise ValueError(f"{path}: not a readable tar shard: {exc}") from None
        skipped = 0
        for key, members in samples.items():
            image = next((members[e] for e in IMAGE_MEMBER_EXTENSIONS if e in members), None)
            if image is None:
                skipped += 1
                continue
            metadata = {"shard": path.name, "key": key, **_metadata(path, key, extras.get(key, {}))}
            yield SourceItem(member_location(path, image.name), metadata)
        if skipped:
            log.warning("%s: %d samples without an image member skipped", path, skipped)


def _metadata(path: Path, key: str, extras: dict[str, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "json" in extras:
        try:
            value = json.loads(extras["json"])
        except ValueError:
            value = None
        if isinstance(value, dict):
            out.update(value)
        else:
            log.warning("%s: %s.json is not a JSON object; left out of the metadata", path, key)
    if "txt" in extras:
        out["caption"] = extras["txt"].decode("utf-8", errors="replace").strip()
    return out


@lru_cache(maxsize=64)
def _members(path: Path, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of one shard (keyed by its mtime and size: a changed file is re-read)."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def read_member(location: str) -> bytes:
    """The bytes of ``shard.tar#member``; OSError when the shard or the member is gone."""
    path, member = split_location(location)
    stat = path.stat()
    try:
        offset, size = _members(path, stat.st_mtime_ns, stat.st_size)[member]
    except KeyError:
        raise FileNotFoundError(f"{member} is not in {path}") from None
    except tarfile.TarError as exc:
        raise OSError(f"{path}: {exc}") from None
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)
