"""Rebuild rules: when publishing builds, chooses and tunes a new index instead of updating the current version.

Each rule is a small named check of a ``Situation`` (what was asked, the current version, the catalog's
change since it) that returns why a full build is due, or None. ``RULES`` lists them in the order they
are asked; the first reason wins and is recorded as the new version's ``built_because``. The rules
before ``no_items_left`` look at the version alone; the later ones need the catalog's change, which
is read the first time one of them asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from index.choose import choose_index
from index.families import family_of
from index.manifest import IndexPolicy
from index.update import Diff, diff
from index.version import IndexVersion

COMPACT_DEAD = 0.2  # tombstones / stored vectors above which an update rebuilds instead
RETUNE_FACTOR = 2.0  # live count / tuned-for count (either way) above which an update rebuilds instead
CHOICE_MARGIN = 0.1  # how far past a boundary of the automatic choice the count must be to rebuild for it


@dataclass
class Situation:
    """What a rule looks at: the publication asked for and the current version (None: none usable)."""

    collection: str
    policy: IndexPolicy
    fingerprint: str  # the publishing encoder's
    current: IndexVersion | None
    live: Callable[[], tuple[np.ndarray, np.ndarray]]  # the catalog's live (ids, content keys), read when asked
    asked_rebuild: bool = False

    @cached_property
    def change(self) -> Diff:
        """What separates the current version from the catalog."""
        if self.current is None:
            raise ValueError("no current version to compare the catalog with")
        return diff(self.current, *self.live())


@dataclass(frozen=True)
class Rule:
    """A named reason to rebuild: ``check`` returns it, or None when the rule sees no need."""

    name: str
    check: Callable[[Situation], str | None]

    def __call__(self, situation: Situation) -> str | None:
        return self.check(situation)


def rule(check: Callable[[Situation], str | None]) -> Rule:
    """A rule named after its function."""
    return Rule(check.__name__, check)


@rule
def asked_explicitly(s: Situation) -> str | None:
    return "a rebuild was asked for" if s.asked_rebuild else None


@rule
def no_current_version(s: Situation) -> str | None:
    return "no version published yet" if s.current is None else None


@rule
def other_encoder(s: Situation) -> str | None:
    if s.current is None or s.current.fingerprint == s.fingerprint:
        return None
    return f"{s.current.name} was built by another encoder"


@rule
def other_collection(s: Situation) -> str | None:
    if s.current is None or s.current.manifest.collection == s.collection:
        return None
    return f"{s.current.name} holds collection {s.current.manifest.collection!r}"


@rule
def no_member_list(s: Situation) -> str | None:
    if s.current is None or s.current.members() is not None:
        return None
    return f"{s.current.name} has no member list (written by an older lookalike)"


@rule
def other_index_asked(s: Situation) -> str | None:
    """Another factory, or (automatic choice) another memory budget, than the version's policy."""
    if s.current is None:
        return None
    had, asked, name = s.current.manifest.policy, s.policy, s.current.name
    if asked.auto and not (had.auto and had.memory_budget == asked.memory_budget):
        return f"{name} was chosen for another memory budget ({had.memory_budget if had.auto else None})"
    if not asked.auto and had.factory != asked.factory:
        return f"{name} is {s.current.manifest.factory}, {asked.factory} was asked for"
    return None


@rule
def other_target_recall(s: Situation) -> str | None:
    """Search parameters tuned for another recall (an exact index was tuned for none: any will do)."""
    tuning = s.current.manifest.tuning if s.current is not None else None
    if tuning is None or tuning.target is None or tuning.target == s.policy.target_recall:
        return None
    return f"{s.current.name} was tuned for recall {tuning.target}"


@rule
def no_items_left(s: Situation) -> str | None:
    return "no items left" if s.current is not None and s.change.live == 0 else None


@rule
def not_updatable_in_place(s: Situation) -> str | None:
    """An index FAISS can neither remove from nor tombstone (a PCA/OPQ transform, an IVF under an id map)."""
    if s.current is None or family_of(s.current.index).removal(s.current.index) is not None:
        return None
    return f"a {s.current.manifest.factory} index cannot be updated in place"


@rule
def count_drifted(s: Situation) -> str | None:
    """The live count moved past ``RETUNE_FACTOR`` either way from the count the index was chosen and tuned
    for (IVF lists trained, efSearch/nprobe tuned for another size)."""
    if s.current is None:
        return None
    live, was = s.change.live, s.current.manifest.tuned_for
    if live > was * RETUNE_FACTOR or live * RETUNE_FACTOR < was:
        return f"{live} items, the index was chosen and tuned for {was}"
    return None


@rule
def automatic_choice_differs(s: Situation) -> str | None:
    """For an automatic choice: the rule now picks another kind of index for the live count, and still
    would ``CHOICE_MARGIN`` back towards the old count (a count hovering around a boundary does not
    rebuild at every crossing; nlist drift is ``count_drifted``'s business)."""
    if s.current is None or not s.policy.auto:
        return None
    manifest, live = s.current.manifest, s.change.live
    rejected = manifest.choice.rejected if manifest.choice is not None else None
    # A Flat index chosen because the tuned approximation did not pay keeps its rejected candidate.
    chosen = family_of((rejected or {}).get("factory", manifest.factory)).name
    budget = s.policy.memory_budget
    now = family_of(choose_index(live, manifest.dim, budget).factory).name
    back = live * (1 - CHOICE_MARGIN) if live > manifest.tuned_for else live * (1 + CHOICE_MARGIN)
    if now != chosen and family_of(choose_index(max(1, int(back)), manifest.dim, budget).factory).name == now:
        return f"the automatic choice for {live} items is {now}, not {chosen}"
    return None


@rule
def too_many_tombstones(s: Situation) -> str | None:
    """After the update, tombstones would pass ``COMPACT_DEAD`` of the stored vectors: compaction."""
    if s.current is None:
        return None
    removes = family_of(s.current.index).removal(s.current.index) == "remove"
    change = s.change
    stored = s.current.index.ntotal - (len(change.remove) if removes else 0) + len(change.add)
    dead = len(s.current.tombstones) + (0 if removes else len(change.remove))
    if stored and dead / stored > COMPACT_DEAD:
        return f"{dead} of {stored} stored vectors would be tombstones (compaction above {COMPACT_DEAD:.0%})"
    return None


RULES: tuple[Rule, ...] = (asked_explicitly, no_current_version, other_encoder, other_collection, no_member_list,
                           other_index_asked, other_target_recall, no_items_left, not_updatable_in_place,
                           count_drifted, automatic_choice_differs, too_many_tombstones)


def first_reason(rules: Sequence[Rule], situation: Situation) -> tuple[Rule, str] | None:
    """The first rule that calls for a rebuild, and its reason; None: an update serves."""
    for each in rules:
        reason = each(situation)
        if reason is not None:
            return each, reason
    return None
