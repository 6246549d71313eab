"""Index updates without a full rebuild: the catalog's changes applied to a copy of the current version.

Every version keeps a member list: the id and content key of each stored vector (see
``index.version``). An update reads the catalog's live (id, key) pairs -- no vectors --, diffs them
with the member list, and applies the difference to a fresh copy of the current index:

- new and changed items: their current vectors are read from the catalog and added under their ids;
- deleted and changed items: their stored vectors are removed (Flat, IVF, PQ), or, where FAISS
  cannot remove (HNSW graphs), their storage positions become tombstones that every search of the
  version leaves out.

The result keeps the version's index choice and tuned search parameters. When an update would not
be as good as a fresh build (the rules in ``index.rules``), the publisher builds from scratch instead
(choose, train, tune), which is also how tombstones are compacted away.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from index.catalog import Catalog
from index.families import family_of
from index.version import IndexVersion


@dataclass
class Diff:
    """What separates a version from the catalog."""

    add: np.ndarray  # ids (int64, sorted) whose current vector the version lacks: new or changed items
    remove: np.ndarray  # ids (int64, sorted) whose stored vector is no longer current: deleted or changed
    live: int  # live items with a current vector in the catalog

    @property
    def empty(self) -> bool:
        return not (len(self.add) or len(self.remove))


def members_of(version: IndexVersion) -> tuple[np.ndarray, np.ndarray]:
    """The version's member list (see ``IndexVersion.members``); an error when it has none."""
    members = version.members()
    if members is None:
        raise ValueError(f"index version {version.name} has no member list")
    return members


def alive_members(version: IndexVersion) -> tuple[np.ndarray, np.ndarray]:
    """(ids, keys) of the version's stored vectors that count (tombstones left out)."""
    ids, keys = members_of(version)
    return np.delete(ids, version.tombstones), np.delete(keys, version.tombstones)


def changed_ids(ids: np.ndarray, keys: np.ndarray, live_ids: np.ndarray, live_keys: np.ndarray) -> np.ndarray:
    """The ids (sorted) in both lists whose content keys differ."""
    common, at_member, at_live = np.intersect1d(ids, live_ids, assume_unique=True, return_indices=True)
    return common[keys[at_member] != live_keys[at_live]]


def diff(version: IndexVersion, live_ids: np.ndarray, live_keys: np.ndarray) -> Diff:
    """Compare the version's live members with the catalog's live (id, content key) pairs."""
    ids, keys = alive_members(version)
    changed = changed_ids(ids, keys, live_ids, live_keys)
    gone = np.setdiff1d(ids, live_ids, assume_unique=True)
    new = np.setdiff1d(live_ids, ids, assume_unique=True)
    return Diff(add=np.union1d(new, changed), remove=np.union1d(gone, changed), live=len(live_ids))


@dataclass
class Updated:
    index: faiss.Index
    ids: np.ndarray  # member list, in storage order for IDMap indexes
    keys: np.ndarray
    tombstones: np.ndarray  # storage positions
    added: int
    removed: int


def apply(version: IndexVersion, change: Diff, catalog: Catalog) -> Updated:
    """``change`` applied to ``version``'s index, **in place**: pass a version opened for the update
    (as ``index.publish`` does, under the publish lock), never one that is being served.

    New vectors are read from the catalog as they are now: an item deleted since the diff is not
    added (its old vector still goes), one changed since comes with its newest vector and key."""
    index = version.index
    ids, keys = members_of(version)
    dead = version.tombstones
    if len(change.remove):
        if family_of(index).removal(index) == "remove":
            if len(dead):
                raise ValueError(f"index version {version.name} has tombstones in an index that can remove")
            index.remove_ids(faiss.IDSelectorBatch(change.remove))
            kept = ~np.isin(ids, change.remove)
            ids, keys = ids[kept], keys[kept]
        else:
            alive = np.ones(len(ids), dtype=bool)
            alive[dead] = False
            dead = np.union1d(dead, np.flatnonzero(alive & np.isin(ids, change.remove)))
    new_ids, new_keys = [ids], [keys]
    added = 0
    for part_ids, part_keys, vectors in catalog.entries_of(change.add, version.fingerprint):
        if vectors.shape[1] != version.dim:
            raise ValueError(f"catalog vectors have dim {vectors.shape[1]}, the index {version.dim}")
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), part_ids)
        new_ids.append(part_ids)
        new_keys.append(part_keys)
        added += len(part_ids)
    return Updated(index=index, ids=np.concatenate(new_ids), keys=np.concatenate(new_keys), tombstones=dead,
                   added=added, removed=len(change.remove))
