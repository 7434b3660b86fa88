"""Promotion is compare-and-set; gate re-decides without retraining; rollback records why."""

from __future__ import annotations

import json

import pytest
from registry_helpers import FAST_STEU, MODEL, registry_snapshot

from steuops.errors import ConflictError


def _apply(home, forget, policy, **kw):
    from steuops.pipeline import apply

    return apply(MODEL, forget, home=home, policy=policy, method_config=FAST_STEU, device="cpu", export=False, **kw)


def test_promotion_during_apply_is_refused(make_home, policies):
    """Someone promotes another version while apply trains: apply must not overwrite it."""
    home, registry = make_home()
    other = _apply(home, ["pneumonia"], policies["manual"])  # v2, candidate only
    moved = []

    def meanwhile(phase: str, done: int, total: int) -> None:
        if not moved and phase == "unlearn":  # while it trains, the other team promotes v2
            registry.move_alias(MODEL, "production", other.new_version, expected_version="1")
            moved.append(phase)

    with pytest.raises(ConflictError) as exc:
        _apply(home, ["sepsis"], policies["loose"], progress=meanwhile)
    assert moved and exc.value.exit_code == 2
    assert "'production'" in str(exc.value) and "v2" in str(exc.value)
    assert registry.alias_version(MODEL, "production") == "2"  # the concurrent promotion stands
    assert registry.alias_version(MODEL, "candidate") == "3"  # our candidate is registered, not promoted
    assert registry.tags(registry.resolve(MODEL, version=3))["steuops.parent_version"] == "1"


def test_promote_refuses_a_candidate_whose_parent_is_no_longer_production(make_home, policies, capsys):
    from steuops.cli import main

    home, registry = make_home()
    first = _apply(home, ["sepsis"], policies["manual"])  # v2 from v1, not promoted
    second = _apply(home, ["pneumonia"], policies["loose"])  # v3 from v1, promoted
    assert (first.new_version, second.new_version) == ("2", "3")
    before = registry_snapshot(registry)
    code = main(["promote", "--model", MODEL, "--version", "2", "--home", str(home), "--policy",
                 str(policies["loose"])])
    err = capsys.readouterr().err
    assert code == 2 and "now points at v3" in " ".join(err.split())
    assert registry_snapshot(registry) == before  # production still v3: v3's deletion is not undone


def test_gate_and_promote_a_candidate(make_home, policies, capsys, tmp_path):
    from steuops.cli import main

    home, registry = make_home()
    _apply(home, ["sepsis"], policies["manual"])  # v2, gate passed, nobody promoted it
    assert registry.alias_version(MODEL, "production") == "1"
    junit = tmp_path / "gate.xml"
    args = ["--model", MODEL, "--version", "2", "--home", str(home)]
    assert main(["gate", *args, "--policy", str(policies["loose"]), "--junit", str(junit), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["result"]["gate"]["passed"] and out["result"]["version"] == "2"
    assert "<testsuite" in junit.read_text()
    # The same candidate under a stricter policy: exit 3, JUnit lists the failure, nothing moves.
    before = registry_snapshot(registry)
    assert main(["gate", *args, "--policy", str(policies["reject"]), "--junit", str(junit)]) == 3
    assert "<failure" in junit.read_text() and "params_fraction" in capsys.readouterr().out
    assert main(["promote", *args, "--policy", str(policies["reject"])]) == 3
    assert registry_snapshot(registry) == before
    capsys.readouterr()
    assert main(["promote", *args, "--policy", str(policies["loose"])]) == 0
    assert "production -> v2" in capsys.readouterr().out
    assert registry.alias_version(MODEL, "production") == "2"


def test_rollback_moves_production_back_and_records_why(make_home, policies, capsys):
    from steuops.cli import main

    home, registry = make_home()
    _apply(home, ["sepsis"], policies["loose"])  # production -> v2
    code = main(["rollback", "--model", MODEL, "--reason", "retain F1 dropped on ward 7", "--home", str(home)])
    out = capsys.readouterr().out
    assert code == 0 and "v2 -> v1" in out and "sepsis" in out  # warns: v1 still predicts sepsis
    assert registry.alias_version(MODEL, "production") == "1"
    v2 = registry.tags(registry.resolve(MODEL, version=2))
    assert v2["steuops.rollback_reason"] == "retain F1 dropped on ward 7"
    assert v2["steuops.rolled_back_to"] == "1" and v2["steuops.rolled_back_at"]
    v1 = registry.tags(registry.resolve(MODEL, version=1))
    assert v1["steuops.restored_from"] == "2"
    # Rolling back again has no parent to go to; --to names one explicitly.
    assert main(["rollback", "--model", MODEL, "--reason", "x", "--home", str(home)]) == 2
    assert main(["rollback", "--model", MODEL, "--reason", "undo", "--to", "2", "--home", str(home)]) == 0
    assert registry.alias_version(MODEL, "production") == "2"
    assert main(["rollback", "--model", MODEL, "--reason", "", "--home", str(home)]) == 2
