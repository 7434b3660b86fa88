"""Policy files: the shipped ones load, every kind of bad file names the file and the field,
and `steuops policy check` turns that into exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steuops import policy
from steuops.cli import main
from steuops.errors import PolicyError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_policies_load():
    default = policy.load(REPO / "policies" / "default.yaml")
    assert default.name == "default" and default.schema_version == 1
    assert default.gate.forget_f1_max == 0.01 and default.gate.retain_macro_f1_drop_max == 0.02
    assert default.gate.retain_class_f1_drop_max == 0.05 and default.gate.params_fraction_max == 0.01
    assert default.cohort.forget_rows_min == 20 and default.cohort.retain_rows_min == 100
    assert default.promotion.on_pass == "production"
    assert default.audit.probe_f1_max is None
    strict = policy.load(REPO / "steuops" / "policies" / "strict.yaml")
    assert strict.gate.forget_f1_max < default.gate.forget_f1_max
    assert strict.gate.params_fraction_max < default.gate.params_fraction_max
    assert strict.cohort.forget_rows_min > default.cohort.forget_rows_min
    assert strict.audit.probe_f1_max is not None
    assert default.sha256 == policy.sha256(REPO / "policies" / "default.yaml") != strict.sha256


def test_defaults_fill_missing_sections(tmp_path):
    loaded = policy.load(_write(tmp_path, "schema_version: 1\ngate:\n  forget_f1_max: 0.2\n", "mine.yaml"))
    assert loaded.gate.forget_f1_max == 0.2 and loaded.gate.params_fraction_max == 0.01
    assert loaded.name == "mine" and loaded.path.endswith("mine.yaml")


def test_null_on_pass_never_promotes(tmp_path):
    loaded = policy.load(_write(tmp_path, "schema_version: 1\npromotion:\n  on_pass: null\n"))
    assert loaded.promotion.on_pass is None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("schema_version: 1\ngate:\n  forget_f1_max: lots\n", "gate.forget_f1_max: Input should be a valid number"),
        ("schema_version: 1\ngate:\n  forget_f1_maximum: 0.1\n", "gate.forget_f1_maximum: Extra inputs are not permitted"),
        ("schema_version: 1\nextra_section: {}\n", "extra_section: Extra inputs are not permitted"),
        ("schema_version: 2\n", "schema_version: Input should be 1"),
        ("schema_version: 1\ngate:\n  params_fraction_max: 1.5\n", "gate.params_fraction_max: Input should be less than or equal to 1"),
        ("schema_version: 1\ncohort:\n  forget_rows_min: -3\n", "cohort.forget_rows_min: Input should be greater than or equal to 1"),
        ("schema_version: 1\naudit:\n  probe_f1_max: -0.1\n", "audit.probe_f1_max: Input should be greater than or equal to 0"),
        ("schema_version: 1\npromotion:\n  on_pass: 'prod uction'\n", "promotion.on_pass: String should match pattern"),
        ("gate: [1, 2\n", "not valid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_bad_policy_names_file_and_field(tmp_path, text, expected):
    path = _write(tmp_path, text, "x.yaml")
    with pytest.raises(PolicyError) as info:
        policy.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert info.value.exit_code == 2 and info.value.hint


def test_every_bad_field_is_named(tmp_path):
    path = _write(tmp_path, "schema_version: 1\ngate:\n  forget_f1_max: x\n  retain_macro_f1_min: y\ncohort:\n  z: 1\n")
    with pytest.raises(PolicyError) as info:
        policy.load(path)
    for field in ("gate.forget_f1_max", "gate.retain_macro_f1_min", "cohort.z"):
        assert field in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="nope.yaml: no such policy file"):
        policy.load(tmp_path / "nope.yaml")


def test_default_path_prefers_checkout_then_package(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert policy.default_path() == REPO / "policies" / "default.yaml"
    monkeypatch.chdir(tmp_path)
    packaged = policy.default_path()
    assert packaged.is_file() and packaged.parent.name == "policies" and packaged.parent.parent.name == "steuops"
    assert policy.load(packaged).name == "default"


def test_resolve_bare_name(monkeypatch):
    monkeypatch.chdir(REPO)
    assert policy.resolve("strict") == REPO / "policies" / "strict.yaml"
    assert policy.resolve(None) == REPO / "policies" / "default.yaml"


def test_cli_policy_check_ok(capsys):
    assert main(["policy", "check", str(REPO / "policies" / "strict.yaml")]) == 0
    out = capsys.readouterr().out
    assert "gate.forget_f1_max" in out and "strict" in out


def test_cli_policy_check_json(capsys):
    assert main(["policy", "check", str(REPO / "policies" / "default.yaml"), "--json"]) == 0
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["ok"] and envelope["command"] == "policy check"
    assert envelope["result"]["gate"]["forget_f1_max"] == 0.01
    assert len(envelope["result"]["sha256"]) == 64


def test_cli_policy_check_bad_file_exit_2(tmp_path, capsys):
    path = _write(tmp_path, "schema_version: 1\ngate:\n  forget_f1_max: lots\n  typo: 1\n", "bad.yaml")
    assert main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "gate.forget_f1_max" in err and "gate.typo" in err
    assert main(["policy", "check", str(path), "--json"]) == 2
    envelope = json.loads(capsys.readouterr().out)
    assert not envelope["ok"] and envelope["result"]["type"] == "PolicyError"
    assert main(["policy", "check", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "null\n", "~\n", "---\n", "{}\n"])
def test_empty_policy_file_refused(tmp_path, text):
    """Issue 17: a policy that sets nothing (a truncated or half-written file) must not gate on the
    defaults as if it were a decision."""
    path = _write(tmp_path, text, "blank.yaml")
    with pytest.raises(PolicyError) as info:
        policy.load(path)
    assert str(info.value) == f"{path}: the policy file is empty (no settings)"
    assert info.value.exit_code == 2 and "default.yaml" in info.value.hint


def test_cli_policy_check_empty_file_exit_2(tmp_path, capsys):
    path = _write(tmp_path, "# TODO thresholds\n", "todo.yaml")
    assert main(["policy", "check", str(path), "--json"]) == 2
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["result"]["type"] == "PolicyError" and "todo.yaml" in envelope["result"]["message"]


def test_minimal_policy_still_loads(tmp_path):
    assert policy.load(_write(tmp_path, "schema_version: 1\n", "minimal.yaml")).gate.forget_f1_max == 0.01
