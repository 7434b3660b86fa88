"""The HTML report: self-contained, has every section, and carries what a reviewer needs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from registry_helpers import FAST_STEU, MODEL, write_policy

from steuops.report import confusion, render_html, write_report

LABELS = ["sepsis", "pneumonia", "heart failure"]
FORGET_ = ["sepsis"]


def _evaluation() -> dict:
    def scores(f1s):
        per = dict(zip(LABELS, f1s, strict=True))
        return {"per_class_f1": per, "macro_f1": float(np.mean(f1s)), "forget_f1": per["sepsis"],
                "forget_f1_per_class": {"sepsis": per["sepsis"]}, "retain_macro_f1": float(np.mean(f1s[1:]))}

    return {"before": scores([0.91, 0.83, 0.77]), "after": scores([0.02, 0.81, 0.76]), "params_modified": 9000,
            "params_total": 22_700_000, "params_fraction": 9000 / 22_700_000, "l2_distance": 1.7, "n_test": 400,
            "forget": ["sepsis"], "labels": LABELS, "support": {"sepsis": 80, "pneumonia": 90, "heart failure": 70}}


def _audit() -> dict:
    return {
        "probe_f1": {"original": 0.9, "edited": 0.85, "reference": 0.6},
        "relearn_f1": {"edited": 0.7, "reference": 0.3, "edited_rows": 0.1},
        "relearn_curves": {"steps": [0, 5, 10], "head": {"edited": [0.0, 0.4, 0.7], "reference": [0.0, 0.1, 0.3]},
                           "rows": {"edited": [0.0, 0.05, 0.1]}, "original_f1": 0.91, "sample": 64},
        "membership_auc": {"original": 0.62, "edited": 0.51, "reference": None},
        "bypass_f1": {"original": 0.8, "edited": 0.3, "reference": 0.05},
        "bypass_recall": {"original": 0.7, "edited": 0.2, "reference": 0.03},
        "bypass": {"phrases": [{"class": "sepsis", "phrase": "<urosepsis>", "original": 1.0, "edited": 0.25,
                                "reference": 0.0}]},
        "skipped": {"membership": "need forget-class notes in both the train (cohort) and test sets"},
    }


def _gate(passed: bool = False) -> dict:
    return {"passed": passed, "policy_name": "default", "policy_sha256": "ab" * 32,
            "rules": [{"name": "forget_f1_max", "observed": 0.02, "threshold": 0.05, "comparison": "<=",
                       "passed": True, "detail": ""},
                      {"name": "probe_f1_gap_max", "observed": 0.25, "threshold": 0.1, "comparison": "<=",
                       "passed": False, "detail": "probe recovers the class"}]}


META = {"model": "clinical-dx", "version": "2", "parent_version": "1", "forget": ["sepsis"], "method": "steu",
        "policy": "default", "policy_sha256": "ab" * 32, "cohort_sha256": "cd" * 32, "created": "2026-11-23T03:00Z",
        "steuops_version": "0.1.0"}
TOKENS = [{"id": 101, "token": "lactate", "score": 3.21}, {"id": 57, "token": "##sis", "score": 2.5}]


def test_confusion_counts_multi_and_single_label():
    truth = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    before = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    after = np.array([[0, 0], [1, 0], [0, 1], [0, 1]])
    cm = confusion(truth, before, after, ["a", "b"], multi_label=True)
    assert cm["before"]["a"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert cm["after"]["a"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 2}
    single = confusion(truth, before, np.array([[0, 1], [1, 0], [0, 1], [0, 1]]), ["a", "b"], multi_label=False)
    assert single["after"] == [[1, 1], [0, 2]]  # rows = truth
    assert sum(map(sum, single["before"])) == 4


def test_html_is_self_contained_and_has_every_section(tmp_path):
    cm = confusion(np.eye(3, dtype=int)[[0, 1, 2, 0]], np.eye(3, dtype=int)[[0, 1, 2, 0]],
                   np.eye(3, dtype=int)[[1, 1, 2, 1]], LABELS, multi_label=True)
    html = render_html(_evaluation(), audit=_audit(), gate=_gate(), tokens=TOKENS, confusion=cm, meta=META)
    assert html.startswith("<!DOCTYPE html>")
    # No external resources at all: no src/href to anything, no scripts, no remote URLs.
    assert not re.search(r"(src|href)\s*=", html, re.I)
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    for section in ("summary", "utility", "confusion", "tokens", "audit", "gate"):
        assert f'id="{section}"' in html
    assert html.count("<svg") >= 5  # F1 bars, probe, MIA, relearn curves, bypass
    for fact in ("clinical-dx", "steu", "ab" * 32, "cd" * 32, "2026-11-23T03:00Z", "lactate", "REJECTED",
                 "probe_f1_gap_max", "0.0200"):
        assert fact in html
    assert "&lt;urosepsis&gt;" in html and "<urosepsis>" not in html  # text is escaped
    assert "need forget-class notes" in html  # a skipped attack says why


def test_missing_parts_render_as_not_measured():
    html = render_html(_evaluation(), audit=None, gate=None, tokens=None, confusion=None, meta={"model": "m"})
    assert "No audit was run" in html and "No gate decision" in html and "selected no tokens" in html
    partial = {**_audit(), "probe_f1": {"original": 0.9, "edited": 0.8, "reference": None}}
    assert "n/a" in render_html(_evaluation(), audit=partial, gate=_gate(True), meta=META)


def test_single_label_confusion_renders_a_matrix():
    cm = confusion(np.eye(3, dtype=int)[[0, 1, 2]], np.eye(3, dtype=int)[[0, 1, 2]],
                   np.eye(3, dtype=int)[[1, 1, 2]], LABELS, multi_label=False)
    html = render_html(_evaluation(), confusion=cm, meta=META)
    assert "Rows = truth, columns = predicted" in html


def test_write_report_writes_html_and_the_same_facts_as_json(tmp_path):
    html_path, json_path = write_report(tmp_path / "out", _evaluation(), audit=_audit(), gate=_gate(),
                                        tokens=TOKENS, meta=META)
    assert html_path.name == "report.html" and json_path.name == "report.json"
    data = json.loads(json_path.read_text())
    assert data["meta"]["cohort_sha256"] == "cd" * 32
    assert data["audit"]["probe_f1"]["edited"] == 0.85
    assert data["tokens"][0]["token"] == "lactate"
    assert "clinical-dx" in html_path.read_text()


@pytest.fixture(scope="module")
def tiny_run():
    """A tiny keyword classifier, STEU on it, and the audit + report written by audit_and_report."""
    from test_audit import FAST, steu_world

    from steuops.audit import AuditConfig

    return (*steu_world(240, seed=3), AuditConfig(**{**FAST, "relearn_steps": [0, 10]}))


def test_audit_and_report_writes_the_files_the_pipeline_logs(tiny_run, tmp_path):
    from steuops.audit import audit_and_report
    from steuops.metrics import evaluate

    original, steu, tok, train, test, cfg = tiny_run
    evaluation = evaluate(original, steu.model, tok, test, FORGET_, device="cpu", max_length=16).to_dict()
    out = audit_and_report(original, steu.model, tok, FORGET_, train, test, evaluation, _gate(True), steu.edit,
                           {**META, "method": "steu"}, tmp_path, config=cfg, device="cpu")
    files = out["files"]
    assert set(files) == {"audit.json", "report.html", "report.json"}
    audit = json.loads(files["audit.json"].read_text())
    assert audit["probe_f1"]["edited"] is not None and audit["probe_f1"]["reference"] is None
    html = files["report.html"].read_text()
    assert steu.edit.info["tokens"][0]["token"] in html
    cm = out["confusion"]["after"]["sepsis"]
    assert cm["tp"] + cm["fn"] == int(test.has_any(FORGET_).sum())



# ---- `steuops report` against a real embedded (sqlite) registry -----------------------------------


def test_report_cli_audits_a_version_once_and_renders_it(make_home, policies, tmp_path, capsys):
    import torch

    from steuops import modeling
    from steuops.cli import main
    from steuops.inference import InferenceSettings
    from steuops.pipeline import apply
    from steuops.registry import Registry

    home, registry = make_home()
    apply(MODEL, ["sepsis"], home=home, policy=policies["loose"], method_config=FAST_STEU, device="cpu",
          export=False)
    out = tmp_path / "r" / "v2.html"
    args = ["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out", str(out), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["result"]
    assert first["version"] == "2" and first["html"] == str(out)
    html = out.read_text()
    assert not re.search(r"(src|href)\s*=", html, re.I)
    for fact in ("clinical-dx", "sepsis", "steu", "Policy gate", "Selected tokens", "Forgetting audit"):
        assert fact in html
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["meta"]["parent_version"] == "1" and data["meta"]["cohort_sha256"]
    assert data["tokens"], "the edit's selected tokens are in the report"
    assert data["audit"]["probe_f1"]["edited"] is not None
    # The confusion counts are the parent's (before) and the version's (after) predictions on the held-out
    # notes of split.json, at the inference settings it was evaluated with: counted again here, per class.
    ref = registry.resolve(MODEL, version="2")
    evaluation = registry.read_json_artifact(ref, "evaluation.json")
    held_out = {str(i) for i in registry.read_json_artifact(ref, "split.json")["test_note_ids"]}
    frame = registry.logged_dataset(ref)
    test = frame[frame["note_id"].astype(str).isin(held_out)]
    labels = evaluation["labels"]
    truth = np.array([[label in row for label in labels] for row in test["labels"]])
    assert len(test) == evaluation["n_test"] == data["confusion"]["n"]
    assert dict(zip(labels, truth.sum(axis=0).tolist(), strict=True)) == evaluation["support"]
    found = 0
    for side, version in (("before", "1"), ("after", "2")):
        loaded = registry.load(registry.resolve(MODEL, version=version))
        assert loaded.labels == labels
        tokenizer = InferenceSettings.from_dict(evaluation["inference"]).apply_to(loaded.tokenizer)
        predicted = modeling.logits(loaded.model, tokenizer, list(test["text"]), max_length=tokenizer.model_max_length,
                                    device=torch.device("cpu")) > 0.0
        for j, label in enumerate(labels):
            t, p = truth[:, j], predicted[:, j]
            expected = {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "fn": int((t & ~p).sum()),
                        "tn": int((~t & ~p).sum())}
            assert data["confusion"][side][label] == expected, (side, label)
            # ...and they give the F1 the gate was given at apply time
            tp, fp, fn = expected["tp"], expected["fp"], expected["fn"]
            f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
            assert f1 == pytest.approx(evaluation[side]["per_class_f1"][label], abs=1e-9), (side, label)
            found += tp
    assert found > 0, "no class is ever predicted right: the counts would check nothing"
    # The audit is now logged on the version: a second report reads it instead of recomputing.
    assert "audit.json" in Registry(home).artifact_names(Registry(home).resolve(MODEL, version="2"))
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)["result"]
    assert second["audit_source"] == "logged artifact"
    assert second["figures"]["probe_f1"] == first["figures"]["probe_f1"]
    assert json.loads(out.with_suffix(".json").read_text())["confusion"] == data["confusion"], \
        "the confusion counts are logged with the audit, not lost on the next report"


def test_report_cli_audits_next_to_a_retrained_reference_version(
        make_home, policies, tmp_path, capsys, trained_tiny, tiny_tokenizer):
    from steuops.cli import main
    from steuops.pipeline import apply
    from steuops.tiny import classifier

    home, _ = make_home()
    apply(MODEL, ["sepsis"], home=home, policy=policies["manual"], method_config=FAST_STEU, device="cpu",
          export=False)
    base = tmp_path / "base"  # the "pretrained" encoder a retrain starts from
    classifier(list(trained_tiny.config.id2label.values()), vocab_size=len(tiny_tokenizer)).save_pretrained(base)
    apply(MODEL, ["sepsis"], home=home, version="1", method="retrain", device="cpu", export=False,
          method_config={"base": str(base), "epochs": 2, "lr": 3e-3, "max_length": 64, "batch_size": 32},
          policy=write_policy(tmp_path / "reference.yaml", params_fraction_max=1.0, on_pass=None))
    out = tmp_path / "v2.html"
    args = ["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out", str(out), "--json"]
    assert main([*args, "--reference", "3"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert result["audit_source"] == "computed now and logged (reference: v3)"
    assert result["figures"]["reference"]["probe_f1"] is not None
    audit = json.loads(out.with_suffix(".json").read_text())["audit"]
    assert audit["probe_f1"]["reference"] is not None and audit["bypass_f1"]["reference"] is not None
    assert "reference" not in (audit.get("skipped") or {})
    # A reference that did not forget the same class from the same parent is refused, naming both.
    assert main([*args, "--reference", "1"]) == 2
    error = json.loads(capsys.readouterr().out)["result"]
    assert "--reference 1" in error["message"] and "same classes" in error["message"]


def test_report_cli_on_a_version_steuops_did_not_make_exits_2(make_home, capsys):
    from steuops.cli import main

    home, _ = make_home()
    assert main(["report", "--model", MODEL, "--version", "1", "--home", str(home)]) == 2
    assert "not made by steuops" in capsys.readouterr().err
    assert main(["report", "--model", "nope", "--version", "1", "--home", str(home)]) == 2
