"""gate.decide: every rule, thresholds inclusive, no short-circuit; JUnit and the table."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from steuops import gate
from steuops.policy import Policy

REPO = Path(__file__).resolve().parents[1]
CORE_RULES = ["forget_f1", "retain_macro_f1", "retain_macro_f1_drop", "retain_class_f1_drop", "params_fraction"]


def _scores(per_class: dict[str, float], forget: list[str]) -> dict:
    retained = [v for c, v in per_class.items() if c not in forget]
    return {
        "per_class_f1": per_class,
        "macro_f1": sum(per_class.values()) / len(per_class),
        "forget_f1": max(per_class[c] for c in forget),
        "forget_f1_per_class": {c: per_class[c] for c in forget},
        "retain_macro_f1": sum(retained) / len(retained),
    }


def _evaluation(**after_changes: float) -> dict:
    """A passing evaluation under the default policy; keyword args overwrite after-F1 per class."""
    forget = ["sepsis"]
    before = {"sepsis": 0.9, "pneumonia": 0.8, "heart failure": 0.7}
    after = {"sepsis": 0.0, "pneumonia": 0.8, "heart failure": 0.7} | {k.replace("_", " "): v for k, v in after_changes.items()}
    return {
        "before": _scores(before, forget),
        "after": _scores(after, forget),
        "params_fraction": 0.002,
        "params_modified": 2_000,
        "params_total": 1_000_000,
        "forget": forget,
    }


def _rule(decision: gate.GateDecision, name: str) -> gate.RuleResult:
    return next(r for r in decision.rules if r.name == name)


def _policy(**gate_limits) -> Policy:
    return Policy.model_validate({"schema_version": 1, "name": "t", "gate": gate_limits})


def test_pass_records_every_rule():
    decision = gate.decide(_evaluation(), _policy())
    assert decision.passed
    assert [r.name for r in decision.rules] == CORE_RULES
    assert all(r.passed for r in decision.rules)
    assert decision.policy_name == "t" and len(decision.policy_sha256) == 64
    as_dict = decision.to_dict()
    assert as_dict["passed"] and as_dict["n_failed"] == 0 and len(as_dict["rules"]) == 5


def test_policy_path_gives_name_and_file_hash():
    from steuops import policy

    path = REPO / "policies" / "default.yaml"
    decision = gate.decide(_evaluation(), str(path))
    assert decision.policy_name == "default" and decision.policy_sha256 == policy.sha256(path)


@pytest.mark.parametrize(
    "rule,limit,at,over,mutate",
    [
        ("forget_f1", "forget_f1_max", 0.01, 0.0101, lambda e, v: e["after"].update(forget_f1=v)),
        ("params_fraction", "params_fraction_max", 0.01, 0.01001, lambda e, v: e.update(params_fraction=v)),
        ("retain_macro_f1_drop", "retain_macro_f1_drop_max", 0.02, 0.0201,
         lambda e, v: e["after"].update(retain_macro_f1=e["before"]["retain_macro_f1"] - v)),
        ("retain_class_f1_drop", "retain_class_f1_drop_max", 0.05, 0.0501,
         lambda e, v: e["after"]["per_class_f1"].update({"pneumonia": 0.8 - v})),
    ],
)
def test_at_most_boundaries(rule, limit, at, over, mutate):
    exactly = copy.deepcopy(_evaluation())
    mutate(exactly, at)
    decision = gate.decide(exactly, _policy(**{limit: at}))
    assert _rule(decision, rule).passed, _rule(decision, rule)
    assert decision.passed
    just_over = copy.deepcopy(_evaluation())
    mutate(just_over, over)
    decision = gate.decide(just_over, _policy(**{limit: at}))
    failed = _rule(decision, rule)
    assert not failed.passed and not decision.passed
    assert failed.observed == pytest.approx(over) and failed.threshold == at and failed.comparison == "<="
    assert [r.name for r in decision.failed] == [rule]  # the others still ran and passed


def test_retain_macro_f1_min_boundary():
    evaluation = _evaluation()
    floor = evaluation["after"]["retain_macro_f1"]
    assert _rule(gate.decide(evaluation, _policy(retain_macro_f1_min=floor)), "retain_macro_f1").passed
    rule = _rule(gate.decide(evaluation, _policy(retain_macro_f1_min=floor + 0.0001)), "retain_macro_f1")
    assert not rule.passed and rule.comparison == ">="


def test_worst_class_named_and_forget_class_ignored():
    decision = gate.decide(_evaluation(pneumonia=0.79, heart_failure=0.6), _policy())
    rule = _rule(decision, "retain_class_f1_drop")
    assert not rule.passed and rule.observed == pytest.approx(0.1)
    assert "heart failure" in rule.detail
    # sepsis drops 0.9 but it is the class being forgotten: not a retained-class drop
    assert "sepsis" not in rule.detail


def test_every_rule_evaluated_after_failures():
    evaluation = _evaluation(pneumonia=0.5)
    evaluation["after"]["forget_f1"] = 0.4
    evaluation["params_fraction"] = 0.3
    decision = gate.decide(evaluation, _policy(retain_macro_f1_min=0.9))
    assert [r.name for r in decision.rules] == CORE_RULES
    assert {r.name for r in decision.failed} == set(CORE_RULES)
    assert all(r.observed is not None for r in decision.rules)
    assert "5 of 5 rules" in decision.summary()


def test_missing_figures_fail_as_not_measured():
    evaluation = _evaluation()
    del evaluation["params_fraction"]
    evaluation["after"]["forget_f1"] = float("nan")
    decision = gate.decide(evaluation, _policy())
    for name in ("params_fraction", "forget_f1"):
        rule = _rule(decision, name)
        assert not rule.passed and rule.observed is None and rule.detail == "not measured"
    assert _rule(decision, "retain_macro_f1").passed


def test_audit_rules_only_when_set_and_unmeasured_fails():
    policy = Policy.model_validate({"schema_version": 1, "audit": {"probe_f1_max": 0.5, "relearn_f1_max": 0.3}})
    evaluation = _evaluation()
    evaluation["audit"] = {"probe_f1": {"original": 0.9, "edited": 0.5}, "membership_auc": {"edited": 0.99}}
    decision = gate.decide(evaluation, policy)
    names = [r.name for r in decision.rules]
    assert names == CORE_RULES + ["audit_probe_f1", "audit_relearn_f1"]  # membership not in this policy
    assert _rule(decision, "audit_probe_f1").passed  # exactly at the limit
    relearn = _rule(decision, "audit_relearn_f1")
    assert not relearn.passed and relearn.detail == "not measured"
    evaluation["audit"]["relearn_f1"] = {"edited": 0.31}
    assert not _rule(gate.decide(evaluation, policy), "audit_relearn_f1").passed
    evaluation["audit"]["relearn_f1"] = {"edited": 0.3}
    assert gate.decide(evaluation, policy).passed


def test_strict_policy_without_audit_rejects():
    decision = gate.decide(_evaluation(), REPO / "policies" / "strict.yaml")
    assert not decision.passed
    assert {r.name for r in decision.failed} == {"audit_probe_f1", "audit_relearn_f1", "audit_membership_auc",
                                                 "audit_bypass_f1"}


def test_cohort_counts_add_rules():
    decision = gate.decide(_evaluation(), _policy(), cohort_counts={"n_forget": 19, "n_retain": 100})
    assert not _rule(decision, "cohort_forget_rows").passed
    assert _rule(decision, "cohort_retain_rows").passed


def test_junit_one_testcase_per_rule(tmp_path):
    evaluation = _evaluation(heart_failure=0.5)
    evaluation["after"]["forget_f1"] = 0.2
    decision = gate.decide(evaluation, _policy())
    path = gate.write_junit(decision, tmp_path / "out" / "gate.xml")
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite") if root.tag == "testsuites" else [root]
    assert [s.get("name") for s in suites] == ["steuops-gate"]
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == CORE_RULES
    failed = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failed) == {"forget_f1", "retain_macro_f1_drop", "retain_class_f1_drop"}
    assert "observed 0.2" in failed["forget_f1"].get("message") and "<= 0.01" in failed["forget_f1"].get("message")
    assert suites[0].get("tests") == "5" and suites[0].get("failures") == "3"


def test_render_table_lists_rules():
    from rich.console import Console

    decision = gate.decide(_evaluation(pneumonia=0.1), _policy())
    console = Console(record=True, width=160)
    console.print(gate.render_table(decision))
    text = console.export_text()
    assert "REJECTED" in text and "retain_class_f1_drop" in text and "FAIL" in text
    assert text.count("pass") == 3


def test_real_evaluation_dict_and_zero_support():
    import numpy as np

    from steuops.metrics import Evaluation, scores

    labels, forget = ["sepsis", "pneumonia", "heart failure"], ["sepsis"]
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    edited = y.copy()
    edited[:, 0] = 0  # sepsis never predicted again, the rest untouched
    evaluation = Evaluation(
        before=scores(y, y, labels, forget), after=scores(y, edited, labels, forget),
        params_modified=10, params_total=10_000, params_fraction=0.001, l2_distance=1.0,
        n_test=4, forget=forget, labels=labels, support={"sepsis": 2, "pneumonia": 2, "heart failure": 1},
    ).to_dict()
    decision = gate.decide(evaluation, _policy())
    assert decision.passed and _rule(decision, "forget_f1").observed == 0.0
    evaluation["support"]["sepsis"] = 0  # F1 0 because nothing was tested, not because it was forgotten
    rule = _rule(gate.decide(evaluation, _policy()), "forget_f1")
    assert not rule.passed and rule.detail.startswith("not measured: no held-out note carries 'sepsis'")


def test_a_decision_round_trips_through_its_dict():
    from steuops.gate import GateDecision, RuleResult

    decision = GateDecision(passed=False, rules=[RuleResult("forget_f1", 0.4, 0.05, "<=", False, "sepsis=0.4000"),
                                                 RuleResult("params_fraction", 0.001, 0.01, "<=", True)],
                            policy_name="strict", policy_sha256="ab" * 32, forget=["Sepsis, unspecified organism"])
    data = json.loads(json.dumps(decision.to_dict()))
    assert GateDecision.from_dict(data) == decision
    assert data["n_failed"] == 1 and data["rules"][0]["detail"] == "sepsis=0.4000"
