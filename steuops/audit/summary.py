"""Per-seed sections -> the report: AuditReport, the means over seeds and their spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.audit.config import ROLES

if TYPE_CHECKING:
    from steuops.audit.config import AuditConfig

SCHEMA = "steuops.audit/v2"


@dataclass
class AuditReport:
    """The audit's result. The sections hold means over seeds (see `spread` for each seed's value);
    `per_seed` keeps every seed's own sections."""

    forget: list[str]
    probe: dict[str, Any]
    relearn: dict[str, Any]
    membership: dict[str, Any]
    bypass: dict[str, Any]
    config: dict[str, Any]
    sizes: dict[str, Any]
    skipped: dict[str, str]
    seconds: dict[str, float]
    seeds: list[int] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # what the audit cache gave: {"dir", "reused", "rejected"}
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)  # figure -> key -> {"mean", "std", "values"}
    relearn_sizes: dict[str, Any] = field(default_factory=dict)
    per_seed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the top-level *_f1 / membership_auc keys are what the gate reads (None = not measured):
        means over the seeds, next to their spread."""
        means = {figure: {key: stat["mean"] for key, stat in by_key.items()} for figure, by_key in self.spread.items()}
        return {
            "schema": SCHEMA,
            "forget": self.forget,
            "seeds": self.seeds,
            "probe_f1": means.get("probe_f1", {}),
            "relearn_f1": means.get("relearn_f1", {}),
            "membership_auc": means.get("membership_auc", {}),
            "retain_relearn_f1": means.get("retain_relearn_f1", {}),
            "cka": means.get("cka", {}),
            "bypass_f1": _roles(self.bypass, "f1"),
            "bypass_recall": _roles(self.bypass, "recall"),
            "relearn_sizes": self.relearn_sizes,
            "spread": self.spread,
            "relearn_curves": self.relearn,
            "probe": self.probe,
            "membership": self.membership,
            "bypass": self.bypass,
            "per_seed": self.per_seed,
            "sizes": self.sizes,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "config": self.config,
            "cache": self.cache,
        }


def _roles(section: Mapping[str, Any], key: str) -> dict[str, float | None]:
    return {role: (section.get(role) or {}).get(key) for role in ROLES}


def _last(curve: Sequence[float] | None) -> float | None:
    return float(curve[-1]) if curve else None


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the measured values (None = not measured that seed); None when none was."""
    measured = [float(v) for v in values if v is not None]
    if not measured:
        return None
    # equal values (an uncapped sample draws the same notes every seed) average to themselves exactly,
    # not to a float-rounded neighbour: seeds=1 and such seeds then report the single-seed figure itself
    return measured[0] if min(measured) == max(measured) else float(np.mean(measured))


def _stat(values: Sequence[float | None], errors: Sequence[float | None] | None = None) -> dict[str, Any]:
    """{"mean", "std", "values"}: std is numpy's population std (ddof 0), so one seed has spread 0.0. With
    `errors` (each seed's sampling error over the test notes, stats.f1_error / auc_error) also "error", their mean:
    the error bar a figure has where the seeds do not vary it. `summarise` adds the edited model's "gap_error": the
    sampling error of its gap to the reference (stats.gap_error), a mean over the seeds too."""
    measured = [float(v) for v in values if v is not None]
    std = (0.0 if min(measured) == max(measured) else float(np.std(measured))) if measured else None
    out = {"mean": _mean(values), "std": std, "values": [None if v is None else float(v) for v in values]}
    return out if errors is None else {**out, "error": _mean(errors)}


def _figures(one: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """One seed's headline figures, keyed like the report's top level."""
    curves = one["relearn_curves"]
    return {
        "probe_f1": {role: (one["probe"].get(role) or {}).get("f1") for role in ROLES},
        "relearn_f1": {"edited": _last(curves["head"].get("edited")), "reference": _last(curves["head"].get("reference")),
                       "edited_rows": _last(curves["rows"].get("edited"))},
        "membership_auc": {role: (one["membership"].get(role) or {}).get("auc") for role in ROLES},
        "retain_relearn_f1": dict(one["retain_relearn_f1"]),
        "cka": dict(one["cka"]),
    }


def _errors(one: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """One seed's sampling errors, for the figures that have one (see `_stat`)."""
    return {figure: {role: (one[section].get(role) or {}).get("error") for role in ROLES}
            for figure, section in (("probe_f1", "probe"), ("membership_auc", "membership"))}


def summarise(forget: list[str], per_seed: list[dict[str, Any]], bypass: dict[str, Any], config: AuditConfig,
              sizes: dict[str, Any], skipped: dict[str, str], seconds: dict[str, float]) -> AuditReport:
    figures, errors = [_figures(one) for one in per_seed], [_errors(one) for one in per_seed]
    spread = {figure: {key: _stat([f[figure][key] for f in figures],
                                  [e[figure][key] for e in errors] if figure in errors[0] else None)
                       for key in figures[0][figure]}
              for figure in figures[0]}
    for figure in errors[0]:  # the edited model's gap to the reference: its sampling error (Auditor's _gap_errors)
        gaps = [one.get("gap_error", {}).get(figure) for one in per_seed]
        if any(g is not None for g in gaps):
            spread[figure]["edited"]["gap_error"] = _mean(gaps)
    return AuditReport(
        forget=forget, probe=_mean_probe(per_seed), relearn=_mean_curves([one["relearn_curves"] for one in per_seed]),
        membership=_mean_membership(per_seed), bypass=bypass, config=config.to_dict(), sizes=sizes,
        skipped=skipped, seconds={k: round(v, 3) for k, v in seconds.items()}, seeds=[one["seed"] for one in per_seed],
        spread=spread, relearn_sizes=_mean_sizes([one["relearn_sizes"] for one in per_seed]), per_seed=per_seed,
    )


def _mean_curves(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The relearn curves averaged step by step (so the last point is relearn_f1's mean)."""
    first = runs[0]
    out: dict[str, Any] = {"steps": first["steps"], "head": {}, "rows": {}, "sample": first["sample"],
                           "original_f1": _mean([r["original_f1"] for r in runs])}
    for kind in ("head", "rows"):
        for role in first[kind]:  # the rows re-fit runs on the first gradient_seeds seeds only
            curves = [r[kind][role] for r in runs if role in r[kind]]
            out[kind][role] = [_mean(column) for column in zip(*curves, strict=True)]
    return out


def _mean_probe(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for role in per_seed[0]["probe"]:
        runs = [one["probe"][role] for one in per_seed]
        out[role] = {"f1": _mean([r["f1"] for r in runs]), "error": _mean([r.get("error") for r in runs]),
                     "per_class": {c: _mean([r["per_class"][c] for r in runs]) for c in runs[0]["per_class"]},
                     # fits (class x seed) where lbfgs stopped at probe_steps short of its tolerance
                     "capped": sum(int(r.get("capped", 0)) for r in runs)}
    return out


def _mean_membership(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """AUC means; the cohort counts per seed (they vary when max_train / max_test subsample)."""
    out = {}
    for role in per_seed[0]["membership"]:
        runs = [one["membership"][role] for one in per_seed]
        out[role] = {"auc": _mean([r["auc"] for r in runs]), "error": _mean([r.get("error") for r in runs]),
                     "members": [r["members"] for r in runs],
                     "non_members": [r["non_members"] for r in runs], "score": runs[0]["score"]}
    return out


def _mean_sizes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{n: {"forget_notes", "retain_notes", "edited": stat, "reference": stat | None}}; the counts depend
    only on the train split, so every seed has the same."""
    out: dict[str, Any] = {}
    for n, entry in runs[0].items():
        out[n] = {"forget_notes": entry["forget_notes"], "retain_notes": entry["retain_notes"]}
        for role in ("edited", "reference"):
            values = [r[n][role] for r in runs]
            out[n][role] = None if all(v is None for v in values) else _stat(values)
    return out


def audit_time(audit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """{"seconds", "passes", "attacks", "parts", "encoder_notes"} of an audit dict (AuditReport.to_dict(),
    audit.json) that times its encoder passes apart (its seconds["passes"]); None for one that does not (logged
    before they were). "parts": every part's seconds (probe, relearn, retain_relearn, ..., passes)."""
    seconds = (audit or {}).get("seconds")
    if not isinstance(seconds, Mapping) or "passes" not in seconds:
        return None
    total = float(sum(float(v) for v in seconds.values()))
    passes = float(seconds["passes"])
    notes = ((audit or {}).get("sizes") or {}).get("encoder_notes") or {}
    return {"seconds": round(total, 1), "passes": round(passes, 1), "attacks": round(total - passes, 1),
            "parts": {str(k): round(float(v), 1) for k, v in seconds.items()},
            "encoder_notes": {str(k): int(v) for k, v in notes.items()}}
