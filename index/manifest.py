"""The manifest of an index version (``manifest.json``), typed, and the index policy it carries.

Every manifest a lookalike has written reads into ``Manifest``: the first ones (a ``params`` dict, no
choice, tuning or member list), those with a choice and tuning, those with ``tuned_count`` and
updates, tombstones, generations, and these, which record the ``policy`` they were published under
(older ones have it derived from their choice and tuning). Keys this model does not know (a newer
writer's, a person's) are kept as they were and written back, and so is the absence of the keys an
older writer did not write: ``to_json`` writes what was read or set, never a default.

``format`` names the layout: a key that older readers may ignore keeps it; one they would misread
changes it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "lookalike-index/1"
AUTO = "auto"  # the factory of a policy whose index is chosen from the count and the memory budget
DEFAULT_MEMORY_BUDGET = 4 * 2**30
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_KEEP = 5

RENEWED = {"renewed": True}  # field metadata: a fact about one publication, which an update does not inherit


class _Open(BaseModel):
    """A part of the manifest whose unknown keys are kept (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class IndexPolicy(_Open):
    """What the publisher is asked for: an index factory (or ``auto``: chosen from the count and
    ``memory_budget``), the recall@10 its search parameter is tuned for, and how many versions stay on disk."""

    factory: str = AUTO
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # bytes the index may take (for auto)
    target_recall: float = DEFAULT_TARGET_RECALL
    keep: int = DEFAULT_KEEP  # published versions kept on disk

    @property
    def auto(self) -> bool:
        return self.factory == AUTO


class EncoderRef(_Open):
    fingerprint: str
    kind: str | None = None
    source: str | None = None


class Choice(_Open):
    """Why the index is what it is (``index.choose.IndexChoice``); its parameters (``M``, ``nlist``, ``m``)
    as extras."""

    reason: str | None = None
    estimated_bytes: int | None = None
    memory_budget: int | None = None  # the budget of an automatic choice; None for a given factory
    rejected: dict[str, Any] | None = None  # an automatic choice replaced by Flat: the candidate and its tuning


class Tuning(_Open):
    """How the search parameter was tuned (``index.choose.tune_on``); the trials and timings as extras."""

    params: dict[str, Any] = Field(default_factory=dict)
    recall: float | None = None
    k: int | None = None
    target: float | None = None  # absent for an exact index: nothing was tuned
    note: str | None = None


class UpdateRecord(_Open):
    """What an update changed in the version it was made from."""

    base: str
    added: int
    removed: int
    seconds: float


class Manifest(_Open):
    """An index version's manifest. ``publish`` fills in what it alone knows (format, name, time, counts)."""

    encoder: EncoderRef
    dim: int
    factory: str
    metric: str = "inner_product"
    format: str = FORMAT
    version: str = ""  # the version's name
    created_at: str = ""
    count: int = 0  # vectors that count (stored less tombstones)
    stored: int | None = None  # absent before tombstones
    tombstones: int = 0
    collection: str = "default"
    catalog: str | None = Field(None, json_schema_extra=RENEWED)  # the catalog's URL, password hidden
    choice: Choice | None = None  # absent in the first manifests
    params: dict[str, Any] | None = None  # the first manifests' (empty) parameters
    search_params: dict[str, Any] = Field(default_factory=dict)  # set on the index when it is opened
    tuning: Tuning | None = None
    tuned_count: int | None = None  # the live count of the last full build (absent before updates)
    generation: int = Field(0, json_schema_extra=RENEWED)  # one past the version it replaced (0: before them)
    recorded_policy: IndexPolicy | None = Field(None, alias="policy", json_schema_extra=RENEWED)
    source: str | None = Field(None, json_schema_extra=RENEWED)  # what the batch job scanned
    failures: int | None = Field(None, json_schema_extra=RENEWED)  # files the batch job skipped
    built_because: str | None = Field(None, json_schema_extra=RENEWED)  # the rebuild rule's reason
    update: UpdateRecord | None = Field(None, json_schema_extra=RENEWED)  # set when this version is an update

    @property
    def tuned_for(self) -> int:
        """The live count the index was chosen and tuned for (by its last full build)."""
        return self.count if self.tuned_count is None else self.tuned_count

    @property
    def policy(self) -> IndexPolicy:
        """The policy this version was published under: as recorded, or (older manifests) as its choice
        and tuning tell it."""
        if self.recorded_policy is not None:
            return self.recorded_policy
        budget = self.choice.memory_budget if self.choice is not None else None
        target = self.tuning.target if self.tuning is not None else None
        return IndexPolicy(factory=AUTO if budget else self.factory, memory_budget=budget or DEFAULT_MEMORY_BUDGET,
                           target_recall=DEFAULT_TARGET_RECALL if target is None else target)

    @classmethod
    def renewed(cls) -> frozenset[str]:
        """The keys (as written) that an update does not inherit from the version it updates."""
        return frozenset(field.alias or name for name, field in cls.model_fields.items()
                         if (field.json_schema_extra or {}).get("renewed"))

    def carried_over(self, **renewed: Any) -> Manifest:
        """This manifest for an update of its version: everything inherited (unknown keys too) but the
        renewed facts, which are ``renewed`` (by field name) or left out."""
        data = {key: value for key, value in self.to_json().items() if key not in self.renewed()}
        return Manifest.model_validate({**data, **_by_alias(renewed)})

    def to_json(self) -> dict[str, Any]:
        """The manifest as ``manifest.json`` holds it: the keys that were read or set, unknown ones included."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls.model_validate(data)


def _by_alias(values: dict[str, Any]) -> dict[str, Any]:
    """Field names -> the keys the manifest writes them under."""
    fields = Manifest.model_fields
    return {(fields[name].alias or name) if name in fields else name: value for name, value in values.items()}
