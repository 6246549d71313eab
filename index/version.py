"""The index version: a directory published atomically, named by a pointer file.

Layout of an index root::

    ROOT/
      CURRENT                 the name of the live version (replaced atomically)
      versions/
        20261128T120000Z-3f2a/
          index.faiss         the FAISS index (ids = catalog primary keys)
          manifest.json       encoder fingerprint, dim, metric, factory, params, count, created_at,
                              the policy it was published under (``index.manifest.Manifest``)
          members.npz         which item and which content each stored vector is: ``ids`` (int64)
                              and ``keys`` (uint64, the first 64 bits of the content hash), in
                              storage order for IDMap indexes; what an update diffs the catalog with
          tombstones.npy      storage positions of vectors that no longer count (an update's deletes
                              in an index that cannot remove, e.g. HNSW); left out of every search

A version is written under ``versions/.tmp-*``, fsynced, renamed into place, and
only then does ``CURRENT`` move to it; readers follow ``CURRENT`` and so never
see a half-written version.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import faiss
import numpy as np
from pydantic import ValidationError

from index.families import family_of, id_map
from index.manifest import FORMAT, Manifest

POINTER = "CURRENT"
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
MEMBERS_FILE = "members.npz"
TOMBSTONES_FILE = "tombstones.npy"
LOCK_FILE = ".publish.lock"


class IndexVersionError(ValueError):
    """No usable index version: none published, missing files, unknown format."""


class EncoderMismatch(IndexVersionError):
    """A query encoder whose fingerprint differs from the one that built the index."""


@dataclass
class IndexVersion:
    """A loaded index version: the FAISS index and its manifest."""

    path: Path
    manifest: Manifest
    index: faiss.Index
    tombstones: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # dead storage positions
    _alive: faiss.IDSelector | None = field(default=None, init=False, repr=False)  # None: no tombstones
    _members: tuple[np.ndarray, np.ndarray] | tuple[()] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.family = family_of(self.index)
        if len(self.tombstones):
            if id_map.inner(self.index) is None:  # tombstones are storage positions under an id map
                raise IndexVersionError(f"{self.path}: tombstones need an IDMap index, not {type(self.index).__name__}")
            # A bitmap of the live positions; the selector keeps a pointer to it, so it stays referenced here.
            alive = np.ones(self.index.ntotal, dtype=bool)
            alive[self.tombstones] = False
            self._bitmap = np.packbits(alive, bitorder="little")
            self._alive = faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))  # n: bytes

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def fingerprint(self) -> str:
        return self.manifest.encoder.fingerprint

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def count(self) -> int:
        """Vectors that count: those stored, less the tombstones."""
        return int(self.index.ntotal) - len(self.tombstones)

    def ids(self) -> np.ndarray:
        """Every live vector's id (int64), in storage order (tombstones left out)."""
        return np.delete(self.family.stored_ids(self.index), self.tombstones)

    def members(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, content keys) of every stored vector, in storage order for IDMap indexes (tombstoned ones
        included); None for a version written before member lists were kept. Read once, then kept."""
        if self._members is None:
            try:
                with np.load(self.path / MEMBERS_FILE) as data:
                    self._members = (data["ids"], data["keys"])
            except FileNotFoundError:
                self._members = ()
        return self._members or None

    @property
    def visits_all(self) -> bool:
        """Whether every search already visits every vector (e.g. Flat)."""
        return self.family.visits_all(self.index)

    def search(self, queries: np.ndarray, k: int, exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 (Q, dim) -> scores (Q, k), ids int64 (Q, k); missing slots have id -1.

        An approximate index may leave out vectors it does not reach (an HNSW graph returns fewer
        than ``k`` when ``k`` is large; IVF probes only ``nprobe`` lists). ``exhaustive`` visits
        every live vector where the index family can (``Family.search``); tombstones never come back."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {queries.shape}")
        return self.family.search(self.index, queries, k, self._alive, exhaustive)

    def check_encoder(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise EncoderMismatch(
                f"index version {self.name} at {self.path.parent.parent} was built by encoder "
                f"{self.fingerprint[:16]}…, but the configured encoder is {fingerprint[:16]}…; "
                "re-index with this encoder or configure the one that built the index"
            )


def stored_ids(index: faiss.Index) -> np.ndarray:
    """The ids of every vector ``index`` stores (its family knows where they are)."""
    return family_of(index).stored_ids(index)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes | Callable[[BinaryIO], Any]) -> None:
    """Write ``data`` (bytes, or a function that writes into the open file) to ``path`` and fsync it."""
    with open(path, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publish(root: str | Path, index: faiss.Index, manifest: Manifest, keep: int = 5,
            members: tuple[np.ndarray, np.ndarray] | None = None, tombstones: np.ndarray | None = None) -> Path:
    """Write ``index`` + ``manifest`` (+ the member list and tombstones, see the module's docstring)
    as a new version under ``root`` and make it current."""
    root = Path(root)
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    name = now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)
    dead = np.zeros(0, np.int64) if tombstones is None else np.unique(np.asarray(tombstones, dtype=np.int64))
    manifest = manifest.model_copy(update={"format": FORMAT, "version": name, "created_at": now.isoformat(),
                                           "count": int(index.ntotal) - len(dead), "stored": int(index.ntotal),
                                           "tombstones": len(dead)})
    if members is not None and len(members[0]) != index.ntotal:
        raise ValueError(f"{len(members[0])} members for {index.ntotal} stored vectors")

    tmp = versions / f".tmp-{name}"
    tmp.mkdir()
    try:
        # each streamed into its file (no copy in memory); write errors raise
        _write_file(tmp / INDEX_FILE, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
        if members is not None:
            ids, keys = members
            _write_file(tmp / MEMBERS_FILE, lambda f: np.savez(f, ids=np.asarray(ids, dtype=np.int64),
                                                               keys=np.asarray(keys, dtype=np.uint64)))
        if len(dead):
            _write_file(tmp / TOMBSTONES_FILE, lambda f: np.save(f, dead))
        _write_file(tmp / MANIFEST_FILE, json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode())
        _fsync_dir(tmp)
        final = versions / name
        os.replace(tmp, final)
        _fsync_dir(versions)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer_tmp = root / f".{POINTER}.tmp-{name}"
    _write_file(pointer_tmp, (name + "\n").encode())
    os.replace(pointer_tmp, root / POINTER)
    _fsync_dir(root)
    prune(root, keep)
    return final


def prune(root: str | Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the current one) and stale temp dirs."""
    versions = Path(root) / "versions"
    current = current_name(root)
    names = sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))
    doomed = [n for n in names[: max(0, len(names) - keep)] if n != current]
    for n in doomed:
        shutil.rmtree(versions / n, ignore_errors=True)
    for p in versions.glob(".tmp-*"):
        if p.name != f".tmp-{current}":
            shutil.rmtree(p, ignore_errors=True)
    return doomed


@contextmanager
def publishing(root: str | Path) -> Iterator[None]:
    """Hold ``ROOT/.publish.lock`` (an exclusive ``flock``) while a version is made from the current one:
    publishers (the indexing job, the service's publisher, a delete) take turns, so none builds on a
    base that another is replacing, and ``prune`` never removes the version an update is reading.
    Readers never take it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current_name(root: str | Path) -> str | None:
    try:
        return (Path(root) / POINTER).read_text().strip() or None
    except FileNotFoundError:
        return None


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the version at ``path`` (any that an earlier lookalike wrote, see ``index.manifest``)."""
    path = Path(path)
    try:
        data = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise IndexVersionError(f"{path} has no {MANIFEST_FILE}") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != FORMAT:
        raise IndexVersionError(f"{path}: unsupported index format {found!r}")
    try:
        return Manifest.from_json(data)
    except ValidationError as exc:
        raise IndexVersionError(f"{path}: unreadable {MANIFEST_FILE}: {exc}") from None


def open_version(path: str | Path, mmap: bool = False) -> IndexVersion:
    """Load one version directory."""
    path = Path(path)
    manifest = read_manifest(path)
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path / INDEX_FILE), flags)
    for key, value in manifest.search_params.items():
        faiss.ParameterSpace().set_index_parameter(index, key, value)
    try:
        tombstones = np.load(path / TOMBSTONES_FILE).astype(np.int64)
    except FileNotFoundError:
        tombstones = np.zeros(0, np.int64)
    if manifest.tombstones != len(tombstones):
        raise IndexVersionError(f"{path}: the manifest counts {manifest.tombstones} tombstones, "
                                f"{TOMBSTONES_FILE} holds {len(tombstones)}")
    return IndexVersion(path=path, manifest=manifest, index=index, tombstones=tombstones)


def open_current(root: str | Path, mmap: bool = False) -> IndexVersion:
    """Load the version that ``root/CURRENT`` names."""
    name = current_name(root)
    if name is None:
        raise IndexVersionError(f"no index version published under {root} (run `python -m index build` first)")
    return open_version(Path(root) / "versions" / name, mmap=mmap)
