"""The HTML report: self-contained, has every section, and carries what a reviewer needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from registry_helpers import FAST_STEU, MODEL, registry_snapshot, write_policy
from test_reference import RETRAIN, quick_audit  # noqa: F401  (quick_audit: a fixture)

from steuops.report import confusion, render_html, retained_macro_f1, utility_figures, verdict_text, write_report

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
    assert "after 10 optimiser steps" in html  # the rows re-fit's last point, read off its own curve


def test_the_page_names_the_attack_depth_with_its_numbers():
    from steuops.audit import AuditConfig

    def page(config):
        return render_html(_evaluation(), audit={**_v2_audit(), "config": config}, gate=_gate(True), meta=META)

    standard = page(AuditConfig().to_dict())
    assert "Attack depth: standard (rows re-fit 25 steps at 0.002, retain-only fine-tune 12 steps at 4e-05; " \
           "<code>--audit-depth thorough</code> tries harder)" in standard
    thorough = page(AuditConfig.at_depth("thorough").to_dict())
    assert "Attack depth: thorough (rows re-fit every relearn step at 0.001, retain-only fine-tune 25 steps at " \
           "2e-05)." in thorough
    assert "Attack depth: custom (" in page(AuditConfig(retain_relearn_steps=3).to_dict())
    assert "Attack depth" not in page({})  # an audit logged before the depths: nothing claimed


def test_a_rows_refit_curve_that_stops_early_is_drawn_and_named_at_its_last_step():
    audit = _audit()
    audit["relearn_curves"]["rows"]["edited"] = [0.0, 0.05]  # relearn_rows_steps 5: one step short of the head's
    html = render_html(_evaluation(), audit=audit, gate=_gate(), meta=META)
    assert "after 5 optimiser steps" in html
    assert "edited: rows re-fit step 5: 0.050" in html and "edited: rows re-fit step 10" not in html
    assert "retrained: head re-fit step 10: 0.300" in html


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


# ---- the verdict, serving, sign-off, retained-only macro F1 and the v2 audit figures -------------------
def _v2_audit() -> dict:
    """An audit.json of schema v2 (three seeds), built by hand: what the page must show of it."""
    def stat(*values):
        mean = float(np.mean(values))
        return {"mean": mean, "std": float(np.std(values)), "values": list(values)}

    audit = _audit()
    audit.update({
        "schema": "steuops.audit/v2", "seeds": [0, 1, 2],
        "probe_f1": {"original": 0.9, "edited": 0.41, "reference": 0.38},
        "spread": {
            "probe_f1": {"original": stat(0.89, 0.9, 0.91), "edited": stat(0.39, 0.41, 0.43),
                         "reference": stat(0.36, 0.38, 0.40)},
            "relearn_f1": {"edited": stat(0.6, 0.7, 0.8), "reference": stat(0.2, 0.3, 0.4),
                           "edited_rows": stat(0.05, 0.1, 0.15)},
            "membership_auc": {"original": stat(0.6, 0.62, 0.64), "edited": stat(0.5, 0.51, 0.52)},
            "retain_relearn_f1": {"original": stat(0.8, 0.8, 0.8), "edited": stat(0.7, 0.72, 0.74),
                                  "reference": stat(0.75, 0.76, 0.77)},
            "cka": {"edited_vs_original": stat(0.98, 0.99, 1.0), "edited_vs_reference": stat(0.8, 0.85, 0.9),
                    "reference_vs_original": stat(0.82, 0.84, 0.86)},
        },
        "relearn_sizes": {size: {"forget_notes": n, "edited": stat(e - 0.01, e, e + 0.01),
                                 "reference": stat(r - 0.02, r, r + 0.02)}
                          for size, n, e, r in (("256", 120, 0.81, 0.52), ("16", 16, 0.33, 0.21), ("64", 60, 0.62, 0.4))},
        "retain_relearn_f1": {"original": 0.8, "edited": 0.72, "reference": 0.76},
        "cka": {"edited_vs_original": 0.99, "edited_vs_reference": 0.85, "reference_vs_original": 0.84},
    })
    return audit


def _limit_gate(passed: bool) -> dict:
    """A gate whose policy set audit limits: the audit_* rules are in it."""
    rules = [{"name": "forget_f1", "observed": 0.02, "threshold": 0.05, "comparison": "<=", "passed": True,
              "detail": ""},
             {"name": "audit_probe_f1", "observed": 0.41, "threshold": 0.5 if passed else 0.3, "comparison": "<=",
              "passed": passed, "detail": ""}]
    return {"passed": passed, "policy_name": "strict", "policy_sha256": "ef" * 32, "rules": rules}


def _text(html: str) -> str:
    import html as htmllib

    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_verdict_pass_without_audit_limits_compares_every_figure_with_the_reference():
    reference = {"source": "registered", "description": "registered v3", "version": "3"}
    text = verdict_text(_evaluation(), _v2_audit(), _gate(True), ["sepsis"], META, None, reference)
    assert "The gate PASSED under policy 'default'" in text
    assert "sets no audit limits, so the audit figures were not part of the gate" in text
    assert "linear-probe F1 0.41 ± 0.02 vs 0.38 ± 0.02 for the retrained reference: within 0.05" in text
    assert "head re-fit F1 0.70 ± 0.08 vs 0.30 ± 0.08 for the retrained reference: 0.40 above it" in text
    assert "membership AUC 0.51 ± 0.01 (reference not measured)" in text
    assert "registered v3; means over 3 seeds" in text
    page = render_html(_evaluation(), audit=_v2_audit(), gate=_gate(True), meta=META, reference=reference)
    assert page.index('id="verdict"') < page.index('id="summary"'), "the verdict opens the page"
    assert "within 0.05" in _text(page)


def test_verdict_with_audit_limits_says_they_were_part_of_the_gate_and_how_they_went():
    failed = verdict_text(_evaluation(), _v2_audit(), _limit_gate(False), ["sepsis"], META)
    assert "REJECTED it under policy 'strict': audit_probe_f1 failed (1 of 2)" in failed
    assert "audit limits were part of the gate (linear-probe F1 0.41 <= 0.30: FAILED)" in failed
    passed = verdict_text(_evaluation(), _v2_audit(), _limit_gate(True), ["sepsis"], META)
    assert "PASSED" in passed and "linear-probe F1 0.41 <= 0.50: held" in passed
    assert "not part of the gate" not in passed
    # no gate at all, no audit at all: said plainly too
    bare = verdict_text(_evaluation(), None, None, ["sepsis"], META)
    assert "No gate decision is recorded" in bare and "No forgetting audit was run" in bare


def test_a_missing_reference_is_explained_with_the_fix_not_shown_as_na():
    reference = {"source": "unavailable", "description": "none could be had",
                 "reason": "reference: no base encoder to retrain clinical-dx v1 from (bert, 2 layers, hidden 32, vocab 600)",
                 "hint": "pass --reference N, or --reference-config '{\"base\": \"ENCODER_DIR\"}'"}
    audit = {**_audit(), "probe_f1": {"original": 0.9, "edited": 0.8, "reference": None},
             "relearn_f1": {"edited": 0.7, "reference": None}, "bypass_f1": {"edited": 0.3, "reference": None},
             "membership_auc": {"edited": 0.5, "reference": None}}
    text = verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, reference)
    assert "has no retrained reference to compare with: reference: no base encoder" in text
    assert "To add one: pass --reference N" in text
    page = _text(render_html(_evaluation(), audit=audit, gate=_gate(True), meta=META, reference=reference))
    assert "No retrained reference: reference: no base encoder to retrain clinical-dx v1" in page


def test_onnx_sha256_and_the_serving_alias_are_shown():
    meta = {**META, "onnx_sha256": "0f" * 32, "aliases": ["production"]}
    page = render_html(_evaluation(), gate=_gate(True), meta=meta)
    text = _text(page)
    assert "ONNX sha256" in text and "0f" * 32 in text
    assert "Served by alias" in text and "served by alias 'production'; its ONNX file has sha256 " + "0f" * 32 in text
    unserved = _text(render_html(_evaluation(), meta={**META, "aliases": []}))
    assert "none (no alias serves this version)" in unserved and "No alias serves clinical-dx v2" in unserved
    assert "it has no ONNX export recorded" in unserved


def test_compliance_fields_are_escaped_and_recorded_in_the_json(tmp_path):
    compliance = {"requester": "<script>alert('x')</script> DPO", "reason": "consent <b>withdrawn</b> & erased",
                  "approver": "Dr \"A\" Jones", "source": {"requester": "command line", "reason": "policy strict"}}
    html_path, json_path = write_report(tmp_path, _evaluation(), audit=_audit(), gate=_gate(True), meta=META,
                                        compliance=compliance)
    page = html_path.read_text()
    assert "<script" not in page and "<b>withdrawn" not in page
    assert "&lt;script&gt;" in page and "consent &lt;b&gt;withdrawn&lt;/b&gt; &amp; erased" in page
    assert 'id="signoff"' in page and "Signature" in page and "policy strict" in page
    data = json.loads(json_path.read_text())
    assert data["compliance"]["requester"] == compliance["requester"]  # raw in JSON: the page escapes it
    assert data["compliance"]["approver"] == 'Dr "A" Jones'
    assert "requested by <script>alert('x')</script> DPO" in data["verdict"]
    assert set(data) >= {"verdict", "compliance", "reference", "serving", "utility"}


def test_compliance_comes_from_the_policy_and_the_command_line_wins(tmp_path):
    from steuops import policy as policies
    from steuops.errors import PolicyError, UsageError
    from steuops.pipeline.report import compliance_fields

    path = write_policy(tmp_path / "signed.yaml")
    path.write_text(path.read_text() + "compliance:\n  requester: Privacy office\n  reason: consent withdrawn\n")
    loaded = policies.load(path)
    assert loaded.compliance.requester == "Privacy office" and loaded.compliance.approver is None
    fields = compliance_fields(policy=loaded, reason="  court order 17 ", approver="Dr Jones")
    assert fields["requester"] == "Privacy office" and fields["reason"] == "court order 17"
    assert fields["source"] == {"requester": "policy signed", "reason": "command line", "approver": "command line"}
    assert compliance_fields() == {"requester": None, "reason": None, "approver": None, "source": {}}
    with pytest.raises(UsageError, match="--requester"):
        compliance_fields(requester="first line\nsecond line")
    with pytest.raises(UsageError, match="--approver"):
        compliance_fields(approver=" ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\ncompliance:\n  requester: \"a\\nb\"\n  signer: x\n")
    with pytest.raises(PolicyError, match=r"compliance\.requester.*compliance\.signer"):
        policies.load(bad)


def test_macro_f1_over_the_retained_classes_is_computed_from_the_per_class_f1s():
    evaluation = _evaluation()
    for side in ("before", "after"):
        del evaluation[side]["retain_macro_f1"]  # an evaluation that does not carry it
    assert retained_macro_f1(evaluation, "after") == pytest.approx((0.81 + 0.76) / 2)
    assert retained_macro_f1(evaluation, "before") == pytest.approx((0.83 + 0.77) / 2)
    figures = utility_figures(evaluation)
    assert figures["retained_classes"] == ["pneumonia", "heart failure"]
    assert figures["macro_f1"]["after"] == pytest.approx((0.02 + 0.81 + 0.76) / 3)
    text = _text(render_html(evaluation, meta=META))
    assert "Macro F1, retained classes only 0.8000 → 0.7850" in text
    assert "Macro F1, all classes (forgotten included) 0.8367 → 0.5300" in text
    assert "macro F1, retained classes only (without sepsis): 0.8000 → 0.7850" in text
    # a value the evaluation does carry is used as it is
    assert retained_macro_f1(_evaluation(), "after") == pytest.approx(np.mean([0.81, 0.76]))


def test_the_verdict_and_the_page_give_the_sampling_error_where_the_audit_has_one():
    """A figure the seeds do not vary (std 0: every train note in every seed's sample) is not exact: the audit's
    bootstrap error over the test notes is shown next to it, in the verdict and in the table."""
    audit = _v2_audit()
    audit["spread"]["probe_f1"]["edited"].update(std=0.0, error=0.039)
    audit["spread"]["probe_f1"]["reference"].update(std=0.0, error=0.04)
    text = verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, None)
    assert ("linear-probe F1 0.41 ± 0.00 (sampling error 0.04) vs 0.38 ± 0.00 (sampling error 0.04) for the "
            "retrained reference: within 0.05") in text
    page = _text(render_html(_evaluation(), audit=audit, gate=_gate(True), meta=META))
    assert "0.4100 ± 0.0000 (n=3) sampling error 0.0390" in page
    assert "the bootstrap standard error over the test notes" in page
    assert "sampling error" not in _text(render_html(_evaluation(), audit=_v2_audit(), gate=_gate(True), meta=META))


def test_the_verdict_tells_a_gap_to_the_reference_from_the_noise_of_the_notes():
    """A gap past the 0.05 margin is read against its own sampling error (both models resampled on the same notes):
    within twice that error the verdict says it is not a clear difference; past it, that it is more than twice."""
    audit = _v2_audit()
    audit["spread"]["probe_f1"]["edited"].update(std=0.0, error=0.039, gap_error=0.04)
    audit["spread"]["probe_f1"]["reference"].update(mean=0.33, std=0.0, error=0.04)
    audit["probe_f1"]["reference"] = 0.33
    text = verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, None)
    assert ("0.41 ± 0.00 (sampling error 0.04) vs 0.33 ± 0.00 (sampling error 0.04) for the retrained reference: "
            "0.08 above it, within twice the gap's sampling error (0.04), so not a clear difference") in text
    audit["spread"]["probe_f1"]["edited"]["gap_error"] = 0.03
    text = verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, None)
    assert "0.08 above it, more than twice the gap's sampling error (0.03)" in text
    page = _text(render_html(_evaluation(), audit=audit, gate=_gate(True), meta=META))
    assert "sampling error 0.0390 (of its gap to the reference 0.0300)" in page
    assert "about one time in twenty" in page
    del audit["spread"]["probe_f1"]["edited"]["gap_error"]  # an audit from before gap errors: the gap alone
    text = verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, None)
    assert "0.08 above it" in text and "gap's sampling error" not in text
    audit["probe_f1"]["reference"] = 0.358  # 0.052 apart: past the margin, so not rounded onto it
    assert "0.052 above it" in verdict_text(_evaluation(), audit, _gate(True), ["sepsis"], META, None, None)
    assert "about one time in twenty" not in _text(render_html(_evaluation(), audit=audit, gate=_gate(True), meta=META))


def test_a_v1_audit_still_renders_without_the_v2_figures():
    page = render_html(_evaluation(), audit=_audit(), gate=_gate(True), meta=META)
    text = _text(page)
    assert "Linear probe F1" in text and "0.8500" in text
    assert "Relearn by attacker size" not in text and "linear CKA" not in text and "seeds" not in text
    assert "±" not in text


def test_a_v2_audit_shows_mean_and_spread_relearn_by_attacker_size_and_cka():
    page = render_html(_evaluation(), audit=_v2_audit(), gate=_gate(True), meta=META,
                       reference={"source": "trained", "description": "trained now, cached at /h/references/x"})
    text = _text(page)
    assert "mean ± standard deviation over 3 seeds (0, 1, 2)" in text
    assert "0.4100 ± 0.0163 (n=3)" in text  # probe F1 of the edited model
    assert "Forget F1 after a retain-only fine-tune" in text and "0.7200 ± 0.0163" in text
    assert "Retrained reference: trained now, cached at /h/references/x" in text
    # relearn by attacker size: table rows in size order, and a chart
    section = page[page.index("Relearn by attacker size"):]
    assert section.index("<td>16</td>") < section.index("<td>64</td>") < section.index("<td>256</td>")
    assert "<svg" in section.split("</table>")[0] and "0.8100 ± 0.0082" in _text(section)
    assert "linear CKA" in text and "0.9900 ± 0.0082 (n=3)" in text and "0.8400 ± 0.0163" in text
    assert not re.search(r"(src|href)\s*=", page, re.I) and "<script" not in page


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


@pytest.mark.usefixtures("quick_audit")
def test_report_cli_audits_a_version_once_and_renders_it(make_home, policies, tmp_path, capsys):
    import torch

    from steuops import lineage, modeling
    from steuops.cli import main
    from steuops.inference import InferenceSettings
    from steuops.pipeline import apply
    from steuops.registry import Registry

    home, registry = make_home()
    apply(MODEL, ["sepsis"], home=home, policy=policies["loose"], method_config=FAST_STEU, device="cpu",
          export=False)
    registry.set_tags(registry.resolve(MODEL, version="2"), {lineage.ONNX_SHA: "5e" * 32})  # as an export leaves
    out = tmp_path / "r" / "v2.html"
    args = ["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out", str(out), "--json",
            "--requester", "DPO <ticket 118>", "--approver", "Dr A. Jones"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["result"]
    assert first["version"] == "2" and first["html"] == str(out)
    # The tiny model names no base encoder to retrain it from, so by default the report says why it has no
    # reference (and how to get one) instead of failing.
    assert first["reference"]["source"] == "unavailable" and "no base encoder" in first["reference"]["reason"]
    assert first["serving"] == {"onnx_sha256": "5e" * 32, "aliases": ["production"]}
    assert first["compliance"]["requester"] == "DPO <ticket 118>" and first["compliance"]["reason"] is None
    html = out.read_text()
    assert "DPO &lt;ticket 118&gt;" in html and "5e" * 32 in html and "No retrained reference" in html
    assert not re.search(r"(src|href)\s*=", html, re.I)
    for fact in ("clinical-dx", "sepsis", "steu", "Policy gate", "Selected tokens", "Forgetting audit"):
        assert fact in html
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["meta"]["parent_version"] == "1" and data["meta"]["cohort_sha256"]
    # the precision the edit was made in, from the version's tag: fp32 here (cpu_bf16 left off)
    assert data["meta"]["precision"] == "fp32" and "<th>Training precision</th><td>fp32</td>" in html
    assert data["tokens"], "the edit's selected tokens are in the report"
    # the token table says what its scores are: the scorer the edit was made with
    assert data["meta"]["scorer"] == "specific" and "log-odds of occurring in forget rather than retain" in html
    assert data["audit"]["probe_f1"]["edited"] is not None
    # where the audit's time went: the encoder passes it ran (notes per model) apart from the attacks
    timing = first["audit_time"]
    assert timing["seconds"] >= timing["passes"] > 0 and sum(timing["encoder_notes"].values()) > 0
    assert timing["parts"]["passes"] == timing["passes"] and {"probe", "relearn", "cka"} <= set(timing["parts"])
    assert sum(timing["parts"].values()) == pytest.approx(timing["seconds"], abs=0.1 * len(timing["parts"]))
    assert timing["attacks"] == pytest.approx(timing["seconds"] - timing["passes"], abs=0.11)
    assert f"This audit took {timing['seconds']:.1f} s: {timing['passes']:.1f} s of encoder passes" in html
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
    assert second["audit_time"] == {}, "a logged audit's time is on its page, not this command's"
    assert second["figures"]["probe_f1"] == first["figures"]["probe_f1"]
    assert json.loads(out.with_suffix(".json").read_text())["confusion"] == data["confusion"], \
        "the confusion counts are logged with the audit, not lost on the next report"

    # --reference auto, asked for explicitly, is exit 2 when no reference can be had: naming the encoder and the fix
    before = registry_snapshot(registry)
    assert main([*args, "--reference", "auto"]) == 2
    error = json.loads(capsys.readouterr().out)["result"]
    assert "no base encoder" in error["message"] and "bert, 2 layers" in error["message"]
    assert "--reference-config" in error["hint"] and registry_snapshot(registry) == before
    # Given the base encoder, auto trains the reference now, caches it under the home, re-audits next to it,
    # and never registers it; the next audit loads it from the cache.
    base = tmp_path / "base"
    trained_tiny = registry.load(registry.resolve(MODEL, version="1")).model
    from steuops.tiny import classifier

    classifier(list(trained_tiny.config.id2label.values()), vocab_size=trained_tiny.config.vocab_size).save_pretrained(base)
    retrain = ["--reference-config", json.dumps({"base": str(base), **RETRAIN})]
    assert main([*args, *retrain]) == 0
    trained = json.loads(capsys.readouterr().out)["result"]
    assert trained["reference"]["source"] == "trained"
    assert Path(trained["reference"]["path"]).is_relative_to(home / "references" / MODEL / "v1")
    assert trained["audit_source"] == f"computed now and logged (reference: trained now, cached at {trained['reference']['path']})"
    assert trained["figures"]["reference"]["probe_f1"] is not None
    assert [v.version for v in registry.versions(MODEL)] == ["1", "2"], "the reference is never registered"
    logged = registry.read_json_artifact(registry.resolve(MODEL, version="2"), "audit.json")
    assert logged["reference_source"]["source"] == "trained"
    assert main([*args, *retrain, "--refresh-audit"]) == 0
    cached = json.loads(capsys.readouterr().out)["result"]
    assert cached["reference"]["source"] == "cache" and cached["reference"]["path"] == trained["reference"]["path"]
    page = _text(out.read_text())
    assert f"Retrained reference: cache ({trained['reference']['path']})" in page
    # with a reference logged, the default report reads the audit as it is
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["result"]["audit_source"] == "logged artifact"


@pytest.mark.usefixtures("quick_audit")
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
    assert result["audit_source"] == "computed now and logged (reference: registered v3)"
    assert result["figures"]["reference"]["probe_f1"] is not None
    audit = json.loads(out.with_suffix(".json").read_text())["audit"]
    assert audit["probe_f1"]["reference"] is not None and audit["bypass_f1"]["reference"] is not None
    assert "reference" not in (audit.get("skipped") or {})
    # A reference that did not forget the same class from the same parent is refused, naming both.
    assert main([*args, "--reference", "1"]) == 2
    error = json.loads(capsys.readouterr().out)["result"]
    assert "--reference 1" in error["message"] and "same classes" in error["message"]
    # auto (the default) finds the registered retrain of the same parent and classes: nothing is trained
    assert main([*args, "--refresh-audit"]) == 0
    auto = json.loads(capsys.readouterr().out)["result"]
    assert auto["reference"]["source"] == "registered" and auto["reference"]["version"] == "3"
    assert auto["audit_source"] == "computed now and logged (reference: registered v3)"
    # ...and reads the parent's and the reference's work from the audit cache the first audit filled
    cache = json.loads(out.with_suffix(".json").read_text())["audit"]["cache"]
    assert cache["dir"] == str(home / "cache" / "audit") and not cache["rejected"]
    assert all(cache["reused"][role]["notes"] > 0 and cache["reused"][role]["retain_relearn"]
               for role in ("original", "reference"))
    assert "Read from the audit cache" in _text(out.read_text())
    assert auto["audit_cache"]["reused"] == cache["reused"]
    assert main([a for a in args if a != "--json"] + ["--refresh-audit"]) == 0
    shown = capsys.readouterr()
    assert "audit cache: read back the original's" in shown.out
    # a CI log (no terminal) shows the report's steps as they start and end
    steps = [line.split("] ", 1)[1] for line in shown.err.splitlines() if "] " in line]
    starts = [line for line in steps if line.endswith(" started") and not line.startswith(" ")]
    assert starts == ["load started", "reference started", "audit started"]
    assert any(line.startswith("audit done in ") for line in steps)
    assert main([*args, "--refresh-audit", "--no-audit-cache"]) == 0
    capsys.readouterr()
    assert json.loads(out.with_suffix(".json").read_text())["audit"]["cache"] == {}
    assert not (home / "references").exists()
    assert "registered v3" in json.loads(out.with_suffix(".json").read_text())["verdict"]


@pytest.mark.usefixtures("quick_audit")
def test_apply_audits_at_the_versions_settings_and_report_reads_its_work_back(
        policies, tmp_path, capsys, trained_tiny, tiny_tokenizer, notes_frame):
    """`apply --audit` tokenizes as the gate's evaluation and the server do (the version's max_length and
    truncation side), like `steuops report`; so a later report finds the parent's passes in the audit cache."""
    from steuops.cli import main
    from steuops.inference import InferenceSettings
    from steuops.pipeline import apply
    from steuops.registry import Registry

    home = tmp_path / "home"
    registry = Registry(home)
    registry.log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame,
                            settings=InferenceSettings(max_length=48, truncation_side="left"))
    audited = policies["loose"].with_name("audited.yaml")
    audited.write_text(policies["loose"].read_text() + "audit:\n  bypass_f1_max: 1.0\n")
    apply(MODEL, ["sepsis"], home=home, policy=audited, method_config=FAST_STEU, device="cpu", export=False,
          audit=True, audit_depth="thorough")
    ref = registry.resolve(MODEL, version="2")
    assert registry.read_json_artifact(ref, "evaluation.json")["inference"] == {"max_length": 48,
                                                                                "truncation_side": "left"}
    logged = registry.read_json_artifact(ref, "audit.json")["config"]
    assert logged["max_length"] == 48
    assert logged["relearn_rows_steps"] is None and logged["gradient_seeds"] == 3  # the depth apply was given
    out = tmp_path / "v2.html"
    assert main(["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out", str(out), "--json",
                 "--refresh-audit", "--reference", "none", "--audit-depth", "thorough"]) == 0
    capsys.readouterr()
    assert json.loads(out.with_suffix(".json").read_text())["audit"]["config"]["relearn_lr_rows"] == 1e-3
    cache = json.loads(out.with_suffix(".json").read_text())["audit"]["cache"]
    assert not cache["rejected"] and cache["reused"]["original"]["notes"] > 0
    assert cache["reused"]["original"]["retain_relearn"] == 1


@pytest.mark.usefixtures("quick_audit")
def test_the_first_report_reads_the_parents_passes_that_apply_ran(make_home, policies, tmp_path, capsys):
    """apply's evaluation runs the parent and the new version over every held-out note, and STEU's teacher runs the
    parent over the training notes; apply keeps those passes in the audit cache, so the first audit of the version
    runs the parent only on the bypass notes and the version only on the training and bypass notes. It keeps the
    version's, so a refreshed audit runs neither model. The figures are the same as with everything computed
    afresh."""
    from steuops.cli import main
    from steuops.inference import InferenceSettings
    from steuops.pipeline import apply

    home, registry = make_home()
    parent = registry.load(registry.resolve(MODEL, version="1"))
    settings = InferenceSettings.resolve(parent.tags, parent.tokenizer, default_max_length=FAST_STEU["max_length"])
    config = {**FAST_STEU, "max_length": settings.max_length}  # the teacher tokenizes as the audit will
    apply(MODEL, ["sepsis"], home=home, policy=policies["loose"], method_config=config, device="cpu", export=False)
    split = registry.read_json_artifact(registry.resolve(MODEL, version="2"), "split.json")
    held_out, train = split["test_rows"], split["train_rows"]
    out = tmp_path / "v2.html"
    args = ["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out", str(out), "--json",
            "--reference", "none"]
    assert main(args) == 0
    first = json.loads(out.with_suffix(".json").read_text())["audit"]
    assert not first["cache"]["rejected"]
    assert first["cache"]["reused"]["original"] == {"notes": held_out + train}  # nothing else was there yet
    assert first["cache"]["reused"]["edited"] == {"notes": held_out}
    assert main([*args, "--refresh-audit"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())["audit"]
    reused = again["cache"]["reused"]  # the training and bypass notes the first audit ran too (the parent: all)
    assert held_out < reused["edited"]["notes"] <= reused["original"]["notes"]
    assert main([*args, "--refresh-audit", "--no-audit-cache"]) == 0
    fresh = json.loads(out.with_suffix(".json").read_text())["audit"]
    capsys.readouterr()
    assert fresh["cache"] == {}
    for key in ("probe_f1", "relearn_f1", "membership_auc", "retain_relearn_f1", "cka", "bypass_f1", "relearn_sizes"):
        assert first[key] == fresh[key] == again[key], key


def test_report_cli_on_a_version_steuops_did_not_make_exits_2(make_home, capsys):
    from steuops.cli import main

    home, _ = make_home()
    assert main(["report", "--model", MODEL, "--version", "1", "--home", str(home)]) == 2
    assert "not made by steuops" in capsys.readouterr().err
    assert main(["report", "--model", "nope", "--version", "1", "--home", str(home)]) == 2
