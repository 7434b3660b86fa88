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
