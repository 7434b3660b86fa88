"""Labelled notes as the engine sees them: texts plus a set of label names per note.

Kept free of pandas so that the engine runs anywhere torch does; `cohort.py` turns tables
into `Notes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Notes:
    texts: list[str]
    labels: list[list[str]]  # label names per note; one name per note for single-label data
    note_ids: list[str] | None = None
    patient_ids: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} label lists")

    def __len__(self) -> int:
        return len(self.texts)

    def multi_hot(self, label_names: Sequence[str]) -> np.ndarray:
        """(n, C) float32 matrix, column j = label_names[j]; unknown names are ignored."""
        index = {name: j for j, name in enumerate(label_names)}
        out = np.zeros((len(self), len(label_names)), dtype=np.float32)
        for i, names in enumerate(self.labels):
            for name in names:
                j = index.get(name)
                if j is not None:
                    out[i, j] = 1.0
        return out

    def has_any(self, classes: Sequence[str]) -> np.ndarray:
        """Boolean mask of notes carrying at least one of `classes`."""
        wanted = set(classes)
        return np.array([bool(wanted.intersection(names)) for names in self.labels], dtype=bool)

    def subset(self, mask_or_index: np.ndarray | Sequence[int]) -> Notes:
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        pick = [int(i) for i in idx]
        return Notes(
            texts=[self.texts[i] for i in pick],
            labels=[list(self.labels[i]) for i in pick],
            note_ids=[self.note_ids[i] for i in pick] if self.note_ids is not None else None,
            patient_ids=[self.patient_ids[i] for i in pick] if self.patient_ids is not None else None,
            meta=dict(self.meta),
        )

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for names in self.labels:
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        return counts


def split_indices(notes: Notes, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices; see `split_notes`."""
    from steuops.errors import ConfigError

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}", hint="use e.g. 0.2")
    groups = _patient_groups(notes)
    rng = np.random.default_rng(seed)
    # Systematic sampling over groups ordered by (label-set stratum, random): each stratum gets about
    # test_fraction of its notes, and small strata carry their remainder over to the next one.
    order = sorted(range(len(groups)), key=lambda g: (_stratum(notes, groups[g]), rng.random()))
    test: list[int] = []
    seen = taken = 0
    for g in order:
        size = len(groups[g])
        seen += size
        if taken + size / 2 <= test_fraction * seen:
            test += groups[g]
            taken += size
    if not test and len(groups) > 1:  # tiny inputs: still hold something out
        test = list(groups[order[-1]])
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(notes), dtype=np.int64), test_idx)
    return train_idx, test_idx


def split_notes(notes: Notes, test_fraction: float = 0.2, seed: int = 0) -> tuple[Notes, Notes]:
    """Seeded (train, test) split, grouped by patient when patient_ids exist (no patient on both
    sides) and approximately stratified by label set. Notes keep their original order."""
    train_idx, test_idx = split_indices(notes, test_fraction=test_fraction, seed=seed)
    return notes.subset(train_idx), notes.subset(test_idx)


def _patient_groups(notes: Notes) -> list[list[int]]:
    if notes.patient_ids is None:
        return [[i] for i in range(len(notes))]
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(notes.patient_ids):
        groups.setdefault(str(pid), []).append(i)
    return list(groups.values())


def _stratum(notes: Notes, group: list[int]) -> str:
    """A group's stratum: its most frequent label set (ties broken by name, for determinism)."""
    counts: dict[str, int] = {}
    for i in group:
        key = "|".join(sorted(notes.labels[i]))
        counts[key] = counts.get(key, 0) + 1
    return min(counts, key=lambda k: (-counts[k], k))
