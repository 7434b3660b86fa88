"""What one seed samples: the probe's and the membership cohort's train notes, the test notes every figure is
read on, the attacker's notes, the attacker-size pool and the retain-only notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from steuops.audit.config import AuditConfig
    from steuops.data import Notes


@dataclass
class Draw:
    """One seed's notes: every sampled attack of that seed reads these (and their cached passes)."""

    seed: int
    train: Notes  # probe training data and the membership cohort (capped at max_train)
    test: Notes  # where every forget F1 is measured (capped at max_test)
    attack: Notes  # the relearn attacker's labelled sample (relearn_forget + relearn_retain)
    pool: Notes  # relearn_sizes: up to max(relearn_sizes) forget notes first, then as many retain notes
    pool_forget: int  # how many of the pool's notes (its first ones) carry the forget class
    retain: Notes  # retain-only notes (no forget class) for the retain relearn
    # sample -> (the split it was drawn from, its rows there): a model's passes are computed once per split
    # row and shared by every seed and sample that holds the row (the attacker's notes are train notes too)
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)

    def size_rows(self, n: int) -> np.ndarray:
        """Pool rows of the n-per-side attacker sample: the first n forget and the first n retain notes
        (so a smaller attacker's notes are part of a larger one's), mixed so batches hold both."""
        forget = np.arange(min(n, self.pool_forget))
        retain = self.pool_forget + np.arange(min(n, len(self.pool) - self.pool_forget))
        return np.random.default_rng(self.seed).permutation(np.r_[forget, retain]).astype(np.int64)


def draw_notes(train: Notes, test: Notes, forget: Sequence[str], config: AuditConfig, seed: int,
               test_rows: np.ndarray | None = None) -> Draw:
    """One seed's samples; `test_rows`: the test sample to use (the first seed's, shared by all)."""
    rng = np.random.default_rng(seed)
    # the first three draws in the order of the single-seed audit (v1): seeds=1 reproduces its figures
    train_rows = _sample(len(train), config.max_train, rng)
    own_test = _sample(len(test), config.max_test, rng)  # drawn on every seed, so later draws stay as they were
    test_rows = own_test if test_rows is None else test_rows
    attack_rows = _attack_rows(train, forget, config, rng)
    is_forget = train.has_any(forget)
    pos, neg = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
    most = max(config.relearn_sizes, default=0)
    pool_pos = rng.choice(pos, size=min(len(pos), most), replace=False)
    pool_neg = rng.choice(neg, size=min(len(neg), most), replace=False)
    retain = rng.choice(neg, size=min(len(neg), config.retain_relearn_notes), replace=False)
    pool_rows = np.r_[pool_pos, pool_neg].astype(np.int64)
    return Draw(seed=seed, train=train.subset(train_rows), test=test.subset(test_rows),
                attack=train.subset(attack_rows), pool=train.subset(pool_rows), pool_forget=len(pool_pos),
                retain=train.subset(retain),
                rows={"train": ("train", train_rows), "test": ("test", test_rows), "attack": ("train", attack_rows),
                      "pool": ("train", pool_rows)})


def _sample(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Rows of `cap` of `n` notes drawn without replacement (in their order), or every row when under the cap."""
    if cap is None or n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def _attack_rows(train: Notes, forget: Sequence[str], config: AuditConfig, rng: np.random.Generator) -> np.ndarray:
    """The attacker's labelled data: up to relearn_forget forget-class notes + relearn_retain others."""
    is_forget = train.has_any(forget)
    pos = np.flatnonzero(is_forget)
    neg = np.flatnonzero(~is_forget)
    pick = np.r_[rng.choice(pos, size=min(len(pos), config.relearn_forget), replace=False),
                 rng.choice(neg, size=min(len(neg), config.relearn_retain), replace=False)]
    return rng.permutation(pick).astype(np.int64)
