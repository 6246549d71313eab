"""``python -m index verify``: does the current index version agree with the catalog it was built from?

Every live item with a vector must have exactly one in the index, every vector a live item, and (with
a member list) every vector the item's current content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index.catalog import Catalog
from index.update import alive_members, changed_ids
from index.version import IndexVersionError, open_current


@dataclass
class VerifyReport:
    version: str
    collection: str
    index_count: int
    catalog_count: int
    missing_from_index: list[int]  # live catalog items with a vector but no place in the index
    not_in_catalog: list[int]  # index ids that are deleted or unknown in the catalog
    duplicates: int  # ids stored more than once in the index (tombstones aside)
    stale: list[int] = field(default_factory=list)  # items whose content changed since their vector was indexed
    tombstones: int = 0  # stored vectors left out of every search

    @property
    def ok(self) -> bool:
        return not (self.missing_from_index or self.not_in_catalog or self.duplicates or self.stale)


def verify(out: Path, database_url: str) -> VerifyReport:
    """Compare the current index version with the catalog it was built from."""
    version = open_current(out)
    collection = version.manifest.collection
    catalog = Catalog(database_url)
    try:
        stored = version.ids()
        live_ids, live_keys = catalog.live_keys(collection, version.fingerprint)
        expected = set(live_ids.tolist())
        in_index = set(stored.tolist())
        stale: list[int] = []
        if version.members() is not None:  # the member list knows which content each vector was made from
            ids, keys = alive_members(version)
            if not np.array_equal(np.sort(ids), np.sort(stored)):
                raise IndexVersionError(f"{version.path}: the member list does not match the index's ids")
            stale = changed_ids(ids, keys, live_ids, live_keys).tolist()
        return VerifyReport(
            version=version.name, collection=collection, index_count=len(stored), catalog_count=len(expected),
            missing_from_index=sorted(expected - in_index), not_in_catalog=sorted(in_index - expected),
            duplicates=len(stored) - len(in_index), stale=stale, tombstones=len(version.tombstones),
        )
    finally:
        catalog.dispose()
