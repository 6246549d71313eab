"""Index updates without a full rebuild: the catalog's changes applied to a copy of the current version.

Every version keeps a member list: the id and content key of each stored vector (see
``index.version``). An update reads the catalog's live (id, key) pairs -- no vectors --, diffs them
with the member list, and applies the difference to a fresh copy of the current index:

- new and changed items: their current vectors are read from the catalog and added under their ids;
- deleted and changed items: their stored vectors are removed (Flat, IVF, PQ), or, where FAISS
  cannot remove (HNSW graphs), their storage positions become tombstones that every search of the
  version leaves out.

The result keeps the version's index choice and tuned search parameters. When an update would not
be as good as a fresh build, ``rebuild_reason`` says so and the caller builds from scratch instead
(choose, train, tune), which is also how tombstones are compacted away:

- the version has no member list (written before lookalike kept one), or another encoder or
  collection built it, or the caller asks for another factory, budget or target recall;
- the tombstones would pass ``COMPACT_DEAD`` of the stored vectors;
- the live count has moved more than ``RETUNE_FACTOR`` from the count the index was chosen and tuned
  for (IVF lists trained for another size; efSearch/nprobe tuned for another size);
- for an automatic choice, the rule now picks another kind of index for the new count (10 % past
  the boundary, so that a count hovering around it does not rebuild at every crossing);
- the index is of a kind that cannot be updated in place (a PCA/OPQ transform, an IVF under an id map).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from index.catalog import Catalog
from index.choose import choose_index
from index.families import family_of
from index.version import IndexVersion

COMPACT_DEAD = 0.2  # tombstones / stored vectors above which an update rebuilds instead
RETUNE_FACTOR = 2.0  # live count / tuned-for count (either way) above which an update rebuilds instead
CHOICE_MARGIN = 0.1  # how far past a boundary of the automatic choice the count must be to rebuild for it


def kind(factory: str) -> str:
    """The family of an index factory string (Flat, HNSW, IVF-Flat, IVF-PQ, ...; see ``index.families``)."""
    return family_of(factory).name


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


def tuned_for(version: IndexVersion) -> int:
    """The live count the version's index was chosen and tuned for (by its last full build)."""
    return int(version.manifest.get("tuned_count", version.manifest["count"]))


def rebuild_reason(version: IndexVersion, change: Diff, memory_budget: int | None) -> str | None:
    """Why ``change`` should be a full rebuild rather than an update of ``version`` (None: update).

    ``memory_budget`` is the budget of an automatic choice, None for a given factory."""
    if change.live == 0:
        return "no items left"
    mode = update_mode(version.index)
    if mode is None:
        return f"a {version.manifest['factory']} index cannot be updated in place"
    was = tuned_for(version)
    if change.live > was * RETUNE_FACTOR or change.live * RETUNE_FACTOR < was:
        return f"{change.live} items, the index was chosen and tuned for {was}"
    choice = version.manifest.get("choice", {})
    if memory_budget is not None:
        # A Flat index chosen because the tuned approximation did not pay keeps its rejected candidate.
        chosen = kind(choice.get("rejected", {}).get("factory", version.manifest["factory"]))
        now = kind(choose_index(change.live, version.dim, memory_budget).factory)
        # Only once the count is past the boundary by CHOICE_MARGIN, so that a collection that hovers
        # around it is not rebuilt at every crossing (nlist drift is the RETUNE_FACTOR's business).
        back = change.live * (1 - CHOICE_MARGIN) if change.live > was else change.live * (1 + CHOICE_MARGIN)
        if now != chosen and kind(choose_index(max(1, int(back)), version.dim, memory_budget).factory) == now:
            return f"the automatic choice for {change.live} items is {now}, not {chosen}"
    removes = mode == "remove"
    stored = version.index.ntotal - (len(change.remove) if removes else 0) + len(change.add)
    dead = len(version.tombstones) + (0 if removes else len(change.remove))
    if stored and dead / stored > COMPACT_DEAD:
        return f"{dead} of {stored} stored vectors would be tombstones (compaction above {COMPACT_DEAD:.0%})"
    return None


def update_mode(index: faiss.Index) -> str | None:
    """How ``index`` takes removals: ``"remove"`` (FAISS removes by id), ``"tombstones"`` (dead storage
    positions that every search leaves out) or None (only a rebuild is safe); its family decides."""
    return family_of(index).removal(index)


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
    (as ``index.build`` does, under the publish lock), never one that is being served.

    New vectors are read from the catalog as they are now: an item deleted since the diff is not
    added (its old vector still goes), one changed since comes with its newest vector and key."""
    index = version.index
    ids, keys = members_of(version)
    dead = version.tombstones
    if len(change.remove):
        if update_mode(index) == "remove":
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
