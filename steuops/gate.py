"""The promotion gate: every policy rule checked against an evaluation, all of them, every time.

`decide` never stops at the first failure, so a rejected candidate shows everything that is wrong
with it. A value exactly at its threshold passes (within a float tolerance: drops are
differences of F1s, and 0.80 - 0.78 is 0.0200000000000000018 in binary). A figure the
policy asks for that the evaluation does not carry (e.g. an audit limit with no audit) fails
with detail "not measured": a gate must not pass on missing evidence.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from steuops.policy import Policy

TOLERANCE = 1e-9
NOT_MEASURED = "not measured"
# policy.audit field -> key under evaluation["audit"] (each {"edited": value, ...}).
AUDIT_RULES = {
    "probe_f1_max": "probe_f1",
    "relearn_f1_max": "relearn_f1",
    "membership_auc_max": "membership_auc",
    "bypass_f1_max": "bypass_f1",
}


@dataclass
class RuleResult:
    name: str
    observed: float | None
    threshold: float
    comparison: str  # "<=" or ">="
    passed: bool
    detail: str = ""


@dataclass
class GateDecision:
    passed: bool
    rules: list[RuleResult]
    policy_name: str
    policy_sha256: str
    forget: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def summary(self) -> str:
        if self.passed:
            return f"gate passed: {len(self.rules)}/{len(self.rules)} rules of policy '{self.policy_name}'"
        names = ", ".join(r.name for r in self.failed)
        return f"gate rejected: {len(self.failed)} of {len(self.rules)} rules of policy '{self.policy_name}' failed ({names})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "policy_name": self.policy_name,
            "policy_sha256": self.policy_sha256,
            "forget": list(self.forget),
            "n_rules": len(self.rules),
            "n_failed": len(self.failed),
            "rules": [asdict(r) for r in self.rules],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """The decision back from `to_dict()` (gate.json, an --json envelope): `from_dict(d.to_dict()) == d`."""
        return cls(passed=bool(data["passed"]), rules=[RuleResult(**r) for r in data.get("rules", [])],
                   policy_name=str(data.get("policy_name", "policy")), policy_sha256=str(data.get("policy_sha256", "")),
                   forget=[str(c) for c in data.get("forget", [])])


def decide(
    evaluation: dict[str, Any],
    policy: Policy | str | Path,
    *,
    policy_path: str | Path | None = None,
    cohort_counts: dict[str, int] | None = None,
) -> GateDecision:
    """Check every rule of `policy` against `evaluation` (metrics.Evaluation.to_dict()).

    policy: a loaded Policy or a path to one. cohort_counts ({"n_forget", "n_retain"}, e.g.
    from CohortReport) adds the cohort-size rules to the record when given.
    """
    from steuops import policy as policy_mod

    if not hasattr(policy, "gate"):
        policy_path = policy_path or policy
        policy = policy_mod.load(policy)  # type: ignore[arg-type]
    before, after = evaluation.get("before") or {}, evaluation.get("after") or {}
    forget = [str(c) for c in evaluation.get("forget") or []]
    limits = policy.gate
    rules = [
        _forget_rule(after, forget, evaluation.get("support"), limits.forget_f1_max),
        _at_least("retain_macro_f1", after.get("retain_macro_f1"), limits.retain_macro_f1_min),
        _at_most("retain_macro_f1_drop", _drop(before.get("retain_macro_f1"), after.get("retain_macro_f1")),
                 limits.retain_macro_f1_drop_max,
                 _before_after(before.get("retain_macro_f1"), after.get("retain_macro_f1"))),
        _worst_class_drop(before.get("per_class_f1"), after.get("per_class_f1"), forget,
                          limits.retain_class_f1_drop_max),
        _at_most("params_fraction", evaluation.get("params_fraction"), limits.params_fraction_max,
                 _params_detail(evaluation)),
    ]
    rules += _audit_rules(evaluation.get("audit"), policy.audit)
    if cohort_counts is not None:
        rules.append(_at_least("cohort_forget_rows", cohort_counts.get("n_forget"), policy.cohort.forget_rows_min))
        rules.append(_at_least("cohort_retain_rows", cohort_counts.get("n_retain"), policy.cohort.retain_rows_min))
    return GateDecision(
        passed=all(r.passed for r in rules),
        rules=rules,
        policy_name=policy.name or (Path(policy_path).stem if policy_path else "policy"),
        policy_sha256=_policy_hash(policy, policy_path),
        forget=forget,
    )


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric (which then fails its rule)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _at_most(name: str, observed: Any, threshold: float, detail: str = "") -> RuleResult:
    value = _number(observed)
    if value is None:
        return RuleResult(name, None, float(threshold), "<=", False, NOT_MEASURED)
    return RuleResult(name, value, float(threshold), "<=", value <= threshold + TOLERANCE, detail)


def _forget_rule(after: dict[str, Any], forget: list[str], support: Any, threshold: float) -> RuleResult:
    """Forget F1 is 0 both when the class is gone and when no test note carries it: only the first counts."""
    if isinstance(support, dict):
        unseen = [c for c in forget if c in support and not support[c]]
        if unseen:
            detail = f"{NOT_MEASURED}: no held-out note carries {', '.join(repr(c) for c in unseen)}"
            return RuleResult("forget_f1", None, float(threshold), "<=", False, detail)
    return _at_most("forget_f1", after.get("forget_f1"), threshold, _per_class_detail(after.get("forget_f1_per_class")))


def _at_least(name: str, observed: Any, threshold: float, detail: str = "") -> RuleResult:
    value = _number(observed)
    if value is None:
        return RuleResult(name, None, float(threshold), ">=", False, NOT_MEASURED)
    return RuleResult(name, value, float(threshold), ">=", value >= threshold - TOLERANCE, detail)


def _drop(before: Any, after: Any) -> float | None:
    b, a = _number(before), _number(after)
    return None if b is None or a is None else b - a


def _before_after(before: Any, after: Any) -> str:
    b, a = _number(before), _number(after)
    return "" if b is None or a is None else f"{b:.4f} -> {a:.4f}"


def _worst_class_drop(before: Any, after: Any, forget: list[str], threshold: float) -> RuleResult:
    name = "retain_class_f1_drop"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return RuleResult(name, None, float(threshold), "<=", False, NOT_MEASURED)
    retained = [c for c in before if c not in forget]
    drops: dict[str, float] = {}
    for cls in retained:
        drop = _drop(before.get(cls), after.get(cls))
        if drop is None:
            return RuleResult(name, None, float(threshold), "<=", False, f"{NOT_MEASURED} for class '{cls}'")
        drops[cls] = drop
    if not drops:
        return RuleResult(name, None, float(threshold), "<=", False, f"{NOT_MEASURED}: no retained classes")
    worst = max(drops, key=lambda c: drops[c])
    detail = f"worst class '{worst}': {float(before[worst]):.4f} -> {float(after[worst]):.4f}"
    return _at_most(name, drops[worst], threshold, detail)


def _audit_rules(audit: Any, limits: Any) -> list[RuleResult]:
    rules = []
    for field_name, key in AUDIT_RULES.items():
        threshold = getattr(limits, field_name, None)
        if threshold is None:
            continue  # not part of this policy
        figure = audit.get(key) if isinstance(audit, dict) else None
        observed = figure.get("edited") if isinstance(figure, dict) else figure
        rules.append(_at_most(f"audit_{key}", observed, threshold))
    return rules


def _per_class_detail(per_class: Any) -> str:
    if not isinstance(per_class, dict) or len(per_class) < 2:
        return ""
    return ", ".join(f"{c}={float(v):.4f}" for c, v in per_class.items() if _number(v) is not None)


def _params_detail(evaluation: dict[str, Any]) -> str:
    modified, total = evaluation.get("params_modified"), evaluation.get("params_total")
    return f"{modified:,} of {total:,} parameters" if isinstance(modified, int) and isinstance(total, int) else ""


def _policy_hash(policy: Any, policy_path: str | Path | None) -> str:
    if policy_path is not None and Path(policy_path).is_file():
        return hashlib.sha256(Path(policy_path).read_bytes()).hexdigest()
    if getattr(policy, "sha256", None):
        return policy.sha256
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _failure_text(rule: RuleResult) -> str:
    if rule.observed is None:
        return f"{rule.name}: {rule.detail or NOT_MEASURED} (needs {rule.comparison} {_fmt(rule.threshold)})"
    text = f"{rule.name}: observed {_fmt(rule.observed)}, needs {rule.comparison} {_fmt(rule.threshold)}"
    return f"{text} ({rule.detail})" if rule.detail else text


def write_junit(decision: GateDecision, path: str | Path) -> Path:
    """JUnit XML for CI: one testsuite 'steuops-gate', one testcase per rule, <failure> on failed ones."""
    import xml.etree.ElementTree as ET

    from steuops.lineage import encode_list

    root = ET.Element("testsuites", name="steuops", tests=str(len(decision.rules)),
                      failures=str(len(decision.failed)))
    suite = ET.SubElement(root, "testsuite", name="steuops-gate", tests=str(len(decision.rules)),
                          failures=str(len(decision.failed)), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for key, value in (("policy", decision.policy_name), ("policy_sha256", decision.policy_sha256),
                       ("forget", encode_list(decision.forget))):
        ET.SubElement(props, "property", name=key, value=value)
    for rule in decision.rules:
        case = ET.SubElement(suite, "testcase", classname=f"steuops.gate.{decision.policy_name}", name=rule.name)
        if not rule.passed:
            failure = ET.SubElement(case, "failure", message=_failure_text(rule), type="GateRuleFailed")
            failure.text = (f"observed: {_fmt(rule.observed)}\nthreshold: {rule.comparison} {_fmt(rule.threshold)}\n"
                            f"detail: {rule.detail}")
        elif rule.detail:
            ET.SubElement(case, "system-out").text = rule.detail
    return _write_xml(root, path)


def write_junit_skipped(forget: Sequence[str], reasons: Mapping[str, str], path: str | Path) -> Path:
    """JUnit XML for a run that had nothing to decide (every class named is already forgotten): one skipped
    testcase per class, with why. A CI job that publishes the report then finds one, and no stale one stands in."""
    import xml.etree.ElementTree as ET

    from steuops.lineage import encode_list

    n = str(len(forget))
    root = ET.Element("testsuites", name="steuops", tests=n, failures="0")
    suite = ET.SubElement(root, "testsuite", name="steuops-gate", tests=n, failures="0", errors="0", skipped=n)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="forget", value=encode_list(list(forget)))
    for cls in forget:
        case = ET.SubElement(suite, "testcase", classname="steuops.gate", name=f"forget {cls}")
        ET.SubElement(case, "skipped", message=reasons.get(cls, "nothing to do"))
    return _write_xml(root, path)


def _write_xml(root, path: str | Path) -> Path:
    import xml.etree.ElementTree as ET

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def render_table(decision: GateDecision) -> Table:
    from rich.table import Table

    verdict = "[bold green]PASSED[/]" if decision.passed else "[bold red]REJECTED[/]"
    table = Table(title=f"gate {verdict} - policy {decision.policy_name} ({decision.policy_sha256[:12]})")
    for column in ("rule", "observed", "", "threshold", "result", "detail"):
        table.add_column(column, justify="right" if column in ("observed", "threshold") else "left")
    for rule in decision.rules:
        mark = "[green]pass[/]" if rule.passed else "[red]FAIL[/]"
        table.add_row(rule.name, _fmt(rule.observed), rule.comparison, _fmt(rule.threshold), mark, rule.detail)
    return table
