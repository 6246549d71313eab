"""Naming webdataset tar shards: a ``.tar`` file, a brace pattern of them (``shards/{00000..00331}.tar``), or a
folder holding ``*.tar`` files. Training streams the shards it names; indexing reads them in place."""

from __future__ import annotations

from pathlib import Path


def is_shards(data: str | Path) -> bool:
    """Whether ``--data`` names tar shards (a ``.tar`` path or pattern, or a folder holding ``*.tar``)."""
    text = str(data)
    if text.endswith(".tar") or (".tar" in text and "{" in text):
        return True
    path = Path(text)
    return path.is_dir() and any(path.glob("*.tar"))


def shard_urls(spec: str | Path) -> list[str]:
    """The shard files of a folder or a brace pattern, each checked to exist (local paths)."""
    from braceexpand import braceexpand

    path = Path(str(spec))
    urls = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else list(braceexpand(str(spec)))
    if not urls:
        raise FileNotFoundError(f"no .tar shards in {spec}")
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]}")
    return urls
