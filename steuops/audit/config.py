"""The audit's options: AuditConfig, the named depths of its gradient attacks, and the vocabulary every part shares
(the roles a model plays, the CKA pairs, the options that do not key a cached attack)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from steuops.errors import ConfigError

# options that do not change one seed's attack on one model (so they are not part of its audit-cache key); the
# controls switch only chooses which models the retain-only fine-tune attacks
PER_AUDIT_OPTIONS = ("seeds", "gradient_seeds", "bypass_phrases", "retain_relearn_controls")
ROLES = ("original", "edited", "reference")
# CKA pairs: (key, first role, second role)
CKA_PAIRS = (("edited_vs_original", "edited", "original"), ("edited_vs_reference", "edited", "reference"),
             ("reference_vs_original", "reference", "original"))


@dataclass
class AuditConfig:
    seed: int = 0  # the first seed; the audit runs seeds config.seed .. config.seed + seeds - 1
    seeds: int = 3  # repeats of every sampled attack (figures are means over them)
    batch_size: int = 32
    max_length: int = 256
    max_train: int | None = 1000  # train notes used for probe features and the membership cohort
    # test notes every forget F1, probe and membership figure is measured on: one sample, shared by every seed
    # (the seeds vary the attacks, not the yardstick), so each model runs over it once
    max_test: int | None = 300
    probe_steps: int = 300  # lbfgs iterations at most (it converges well before on these features)
    probe_l2: float = 1e-3  # the penalty: mean log-loss + probe_l2 * |w|^2 (intercept unpenalised)
    relearn_forget: int = 32  # labelled forget-class notes the attacker has
    relearn_retain: int = 32  # and retain notes, so the re-fit does not just say "yes" to everything
    relearn_steps: list[int] = field(default_factory=lambda: [0, 5, 10, 25, 50])
    relearn_batch_size: int = 16
    relearn_lr_head: float = 1e-2
    # The embedding-rows re-fit trains through the encoder, so it is budgeted apart from the (cheap) head re-fit: its
    # curve stops at the last of relearn_steps not above relearn_rows_steps (None: all of them). 25 steps at 2e-3
    # move each row as far as 50 at 1e-3 (Adam steps each parameter by about lr); on the demo both gave 0.000 at every
    # step on each of seeds 0-2, at half the cost (bench/results/attack-budget-cpu-2026-11-30.json).
    relearn_lr_rows: float = 2e-3
    relearn_rows_steps: int | None = 25
    # head re-fit with n forget + n retain notes for each n (capped by the train split); [] skips it
    relearn_sizes: list[int] = field(default_factory=lambda: [16, 64, 256])
    # Adam steps of the all-parameter retain-only fine-tune (0 skips it) and their rate: as far a move as 25 steps at
    # 2e-5, at half the cost; the same 0.000 for the edited model and the reference on each demo seed, and 0.58-0.62
    # left in the original (0.60-0.62 with 25 steps) (bench/results/attack-budget-cpu-2026-11-30.json)
    retain_relearn_steps: int = 12
    retain_relearn_lr: float = 4e-5
    retain_relearn_notes: int = 256  # retain-only notes the attacker has (drawn per seed)
    # The retain-only fine-tune of the original and the reference too: controls that cost a fine-tune each. The
    # reference never had the class, so it gives ~0 by construction (0.000 on each demo seed); the original shows
    # how much of a class such a fine-tune leaves in a model that has it. Off: only the edited model is attacked.
    retain_relearn_controls: bool = False
    # The two attacks that train through the encoder (the embedding-rows re-fit and the retain-only fine-tune)
    # run on the first gradient_seeds seeds only: on a CPU they are most of the audit's cost (demo, 2-core EPYC:
    # 20 s and 24 s per model and seed, against ~1 s for every other attack once the passes exist), and on the
    # demo they gave 0.000 on each of seeds 0-2 for STEU, HDSU and the reference
    # (bench/results/forgetting-hdsu-cpu-2026-11-29.json; the original's retain-only fine-tune, a control, does
    # vary). Set it to `seeds` for all.
    gradient_seeds: int = 1
    bypass_phrases: list[str] = field(default_factory=list)  # user phrases, added to every forget class

    @classmethod
    def at_depth(cls, depth: str = "standard", **values: Any) -> AuditConfig:
        """The config of a named depth (DEPTHS), with `values` over it."""
        if depth not in DEPTHS:
            raise ConfigError(f"unknown audit depth {depth!r}", hint=f"--audit-depth: one of {', '.join(DEPTHS)}")
        return cls(**{**DEPTHS[depth], **values})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AuditConfig:
        import dataclasses

        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown audit option(s): {', '.join(unknown)}", hint=f"known options: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def validate(self) -> AuditConfig:
        steps = sorted({int(s) for s in self.relearn_steps})
        if not steps or steps[0] < 0:
            raise ConfigError("audit relearn_steps must be non-negative step counts", hint="e.g. [0, 5, 10, 25, 50]")
        self.relearn_steps = steps
        sizes = sorted({int(n) for n in self.relearn_sizes})
        if sizes and sizes[0] < 1:
            raise ConfigError(f"audit relearn_sizes must be note counts >= 1, got {list(self.relearn_sizes)}",
                              hint="e.g. [16, 64, 256]; [] skips the attacker-size sweep")
        self.relearn_sizes = sizes
        if self.relearn_rows_steps is not None:
            _check_int(self, "relearn_rows_steps", 1, "set relearn_rows_steps to 1 or more, or null for all relearn_steps")
        for name in ("batch_size", "relearn_batch_size", "probe_steps", "relearn_forget", "relearn_retain", "seeds",
                     "retain_relearn_notes", "gradient_seeds"):
            _check_int(self, name, 1, f"set {name} to 1 or more")
        _check_int(self, "retain_relearn_steps", 0, "set retain_relearn_steps to 0 (skip) or more, e.g. 25")
        for name, example in (("probe_l2", "1e-3"), ("retain_relearn_lr", "2e-5")):
            if not getattr(self, name) > 0:
                raise ConfigError(f"audit {name} must be > 0, got {getattr(self, name)}", hint=f"e.g. {example}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows_steps(self) -> list[int]:
        """The embedding-rows re-fit's curve: relearn_steps up to relearn_rows_steps."""
        cap = self.relearn_rows_steps
        return [s for s in self.relearn_steps if cap is None or s <= cap]


# Named budgets for the attacks that train through the encoder. "standard" is AuditConfig's defaults. "thorough" is
# the budget they had until 2026-11-30 (twice the optimiser steps at half the rate, the rows re-fit over every
# relearn step) on each of the default 3 seeds, with the retain-only fine-tune's controls: on the demo, 2-core
# EPYC, passes cached, 380 s against 41 s (bench/results/attack-depths-cpu-2026-11-30.json; README).
DEPTHS: dict[str, dict[str, Any]] = {
    "standard": {},
    "thorough": {"relearn_lr_rows": 1e-3, "relearn_rows_steps": None, "retain_relearn_steps": 25,
                 "retain_relearn_lr": 2e-5, "gradient_seeds": 3, "retain_relearn_controls": True},
}


def depth_of(config: Mapping[str, Any]) -> str | None:
    """The DEPTHS name whose attack budget a (logged) config has, else None (options set one by one)."""
    defaults = AuditConfig().to_dict()
    keys = {key for values in DEPTHS.values() for key in values}
    for name, values in DEPTHS.items():
        if all(config.get(key) == values.get(key, defaults[key]) for key in keys):
            return name
    return None


def _check_int(config: AuditConfig, name: str, minimum: int, hint: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"audit {name} must be an integer >= {minimum}, got {value!r}", hint=hint)
