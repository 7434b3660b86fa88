"""`gate`, `promote`, `rollback`, `history`: what happens to registered versions after `apply`.

None of these loads a model: the gate re-reads the evaluation a version was registered with, and
promotion and rollback move aliases by compare-and-set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import lineage
from steuops.errors import GateRejected, UsageError
from steuops.pipeline.unlearn import DEFAULT_ALIAS, PolicyInfo, Promotion, retire_candidate

if TYPE_CHECKING:
    from steuops.gate import GateDecision
    from steuops.registry import Registry, VersionInfo


@dataclass
class GateResult:
    """A registered candidate re-decided against a policy (and promoted, by `promote`)."""

    model: str
    version: str
    parent_version: str | None
    policy: PolicyInfo
    evaluation: dict[str, Any]  # the version's evaluation.json
    gate: GateDecision
    source: str
    promoted: Promotion | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate"] = self.gate.to_dict()
        if self.promoted is None:
            data.pop("promoted")
        return data


@dataclass
class Rollback:
    model: str
    alias: str
    from_version: str
    to_version: str
    reason: str
    at: str
    reinstated_classes: list[str]  # classes the version rolled back from had forgotten and the target predicts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"], data["to"] = data.pop("from_version"), data.pop("to_version")
        return data


def regate(model_name: str, version: str | int, *, policy: str | Path | None = None,
           home: str | Path | None = None, registry: Registry | None = None) -> GateResult:
    """Re-decide a registered candidate against a (possibly different) policy WITHOUT retraining.

    Re-uses the version's evaluation.json artifact: it was measured on the held-out split when the
    version was made, and the measurement does not depend on the policy, so re-deciding from it is
    exact and takes a second instead of re-loading two models and re-scoring the split.
    """
    from steuops.registry import Registry

    return _regate(model_name, version, policy=policy, registry=registry or Registry(home))


def _regate(model_name: str, version: str | int, *, policy: str | Path | None, registry: Registry,
            require_onnx: bool = False) -> GateResult:
    from steuops import gate
    from steuops import policy as policies

    loaded_policy = policies.load(policies.resolve(policy))
    ref = registry.resolve(model_name, version=version)
    record = lineage.VersionRecord.from_tags(registry.tags(ref))
    if not record.made_by_steuops:
        raise UsageError(f"{ref} was not made by steuops (no {lineage.PARENT} tag), so there is nothing to gate",
                         hint="gate a version that `steuops apply` registered; see `steuops history`")
    registry.require_complete(ref, onnx=require_onnx and loaded_policy.promotion.require_onnx)
    evaluation = registry.read_json_artifact(ref, lineage.EVALUATION_FILE)
    decision = gate.decide(evaluation, loaded_policy, cohort_counts=_counts_from_artifact(registry, ref))
    info = PolicyInfo.of(loaded_policy, loaded_policy.promotion.on_pass)
    return GateResult(model_name, ref.version, record.parent_version, info, evaluation, decision,
                      f"{lineage.EVALUATION_FILE} artifact of v{ref.version}")


def _counts_from_artifact(registry: Registry, ref: Any) -> dict[str, Any]:
    report = registry.read_json_artifact(ref, lineage.VALIDATION_FILE)
    counts = report.get("class_counts", {})
    forget = report.get("forget", [])
    return {"n_rows": report.get("n_rows"), "n_forget": report.get("n_forget"), "n_retain": report.get("n_retain"),
            "forget_rows": {c: int(counts.get(c, 0)) for c in forget}}


def promote(model_name: str, version: str | int, *, policy: str | Path | None = None, alias: str | None = None,
            home: str | Path | None = None, registry: Registry | None = None) -> GateResult:
    """Gate a candidate again, then move the promotion alias to it (compare-and-set).

    The alias must still point at the candidate's parent: a candidate made from v1 must not replace
    a production that moved to v3 meanwhile (v3's deletions would silently come back).
    """
    from steuops.registry import Registry

    registry = registry or Registry(home)
    out = _regate(model_name, version, policy=policy, registry=registry, require_onnx=True)
    if not out.gate.passed:
        raise GateRejected(
            f"the policy {out.policy.name!r} rejects {model_name} v{out.version}; not promoted",
            decision=out.gate.to_dict(), hint="see the failed rules above; nothing was changed",
        )
    target = alias or out.policy.promote_alias or DEFAULT_ALIAS
    registry.move_alias(model_name, target, out.version, expected_version=out.parent_version)
    retire_candidate(registry, model_name, target, out.version)
    out.promoted = Promotion(target, out.version, out.parent_version)
    return out


def rollback(model_name: str, *, reason: str, to: str | int | None = None, alias: str = DEFAULT_ALIAS,
             home: str | Path | None = None, registry: Registry | None = None) -> Rollback:
    """Move `alias` back (default: to the current version's parent) and record why on both versions."""
    from datetime import UTC, datetime

    from steuops.registry import Registry

    if not (reason or "").strip():
        raise UsageError("--reason is empty", hint="say why, e.g. --reason 'retain F1 dropped in production'")
    registry = registry or Registry(home)
    current = registry.resolve(model_name, alias=alias)
    record = lineage.VersionRecord.from_tags(registry.tags(current))
    if to is None:
        if not record.parent_version:
            raise UsageError(f"{current} has no parent version to roll back to",
                             hint="name the version with --to N (see `steuops history`)")
        to = record.parent_version
    target = registry.resolve(model_name, version=to)
    if target.version == current.version:
        raise UsageError(f"{alias!r} already points at v{target.version}", hint="nothing to roll back")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    registry.move_alias(model_name, alias, target.version, expected_version=current.version)
    registry.set_tags(current, {lineage.ROLLBACK_REASON: reason, lineage.ROLLED_BACK_AT: when,
                                lineage.ROLLED_BACK_TO: target.version})
    registry.set_tags(target, {lineage.ROLLBACK_REASON: reason, lineage.RESTORED_AT: when,
                               lineage.RESTORED_FROM: current.version})
    still = set(lineage.forgotten(registry.tags(target)))
    lost = [c for c in record.forgotten if c not in still]
    return Rollback(model_name, alias, current.version, target.version, reason, when, lost)


def history(model_name: str, *, home: str | Path | None = None, registry: Registry | None = None) -> list[VersionInfo]:
    """Every version of the model, oldest first: parent, forgotten classes, verdict, status, aliases."""
    from steuops.registry import Registry

    return (registry or Registry(home)).versions(model_name)
