"""The forgetting audit: how much of a removed class is still in the edited model.

STEU's forgetting is behavioural: the encoder is frozen, so the class may still be readable from the
features or come back after a few steps of fine-tuning. The audit measures that, for any method, next
to the gold reference (a model retrained without the class), with these attacks:

- probe: a logistic-regression probe on the frozen features the head sees (train -> test F1);
- relearn: re-fit only the head, and separately only the edited embedding rows, on a small labelled
  forget + retain sample; forget F1 on test after 0..N optimiser steps. The head re-fit is repeated
  for several attacker sample sizes (relearn_sizes);
- retain relearn: fine-tune every parameter on notes WITHOUT the class, its column(s) out of the loss:
  does the class come back when the attacker has only the other classes' data?
- membership: do the forget-cohort notes (used in unlearning) score differently from held-out notes
  of the same class? Per-example ROC AUC of a loss score (0.5 = no signal);
- CKA: linear CKA between the head-input features of two models on the test notes (how far the
  representation moved; STEU's frozen encoder keeps it near the original's);
- bypass: rewordings and abbreviations of the class composed into short notes (steuops.bypass)
  plus user phrases; forget F1 with other classes' rewordings as negatives.

One lucky draw must not decide a gate, so every attack but bypass runs once per seed (config.seed,
config.seed + 1, ...): each seed redraws the train/test subsamples, the attacker's notes and the
optimiser's batch order. The figures are the means over seeds; "spread" keeps every seed's value.
Bypass uses fixed phrases and no sampling, so it runs once.

torch, numpy and scikit-learn (no mlflow): it runs on the GPU box too. Heavy imports stay inside functions.

The package: `config` (AuditConfig, the depths), `draw` (what a seed samples), `passes` (encoder passes and
their audit-cache form), `auditor` (the attacks), `stats` (AUC, F1, CKA, the probe), `summary` (AuditReport).
This module holds the entry points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from steuops import env  # noqa: F401  (env: telemetry off before heavy imports)
from steuops.audit.auditor import Auditor
from steuops.audit.config import DEPTHS, AuditConfig, depth_of
from steuops.audit.passes import open_cache, recall_pass, remember_pass
from steuops.audit.stats import f1, linear_cka, roc_auc
from steuops.audit.summary import SCHEMA, AuditReport, audit_time

if TYPE_CHECKING:
    from steuops.data import Notes
    from steuops.modeling import Progress

__all__ = ["DEPTHS", "SCHEMA", "AuditConfig", "AuditReport", "audit_and_report", "audit_methods", "audit_time",
           "depth_of", "f1", "linear_cka", "recall_pass", "remember_pass", "roc_auc", "run_audit"]


def run_audit(
    original,
    edited,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    *,
    reference=None,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
    edit: Any = None,
    cache_dir: Any = None,
) -> AuditReport:
    """Audit `edited` (made from `original` by forgetting `forget`) next to `reference` (retrained
    without the class, or None). `train` holds the unlearning cohort (membership members, probe
    training data, the attacker's samples); `test` is held out. `edit` is the TokenEdit (or its token
    ids) when the method edited embedding rows: only then is the rows re-fit attack run. Every
    sampled attack runs for config.seeds seeds; the figures are means (see AuditReport.spread).
    No model passed in is modified (the attacks train copies). `cache_dir`: the audit cache (auditcache.py)
    for the original's and the reference's work; None computes everything."""
    auditor = _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir)
    token_ids, reason = _edit_tokens(edit)
    return auditor.run(original, edited, reference=reference, token_ids=token_ids, edit_reason=reason)


def audit_methods(
    original,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    results: Mapping[str, Any],
    *,
    reference=None,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Audit every method's result against one original and one reference, sharing their forward
    passes. `results` maps a method name to its UnlearnResult (or a bare model). The reference is
    `reference`, else results["retrain"] when present. Returns {method: AuditReport.to_dict()}."""
    if reference is None and "retrain" in results:
        reference = getattr(results["retrain"], "model", results["retrain"])
    auditor = _auditor(tokenizer, forget, train, test, config, device, progress)
    out: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        model = getattr(result, "model", result)
        token_ids, reason = _edit_tokens(getattr(result, "edit", None))
        report = auditor.run(original, model, reference=reference, token_ids=token_ids, edit_reason=reason)
        out[name] = {"method": name, **report.to_dict()}
        if model is not reference:
            auditor.release(model)  # keep only the original's and the reference's passes
    return out


def _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir: Any = None) -> Auditor:
    from steuops.errors import CohortError
    from steuops.modeling import resolve_device

    if not isinstance(config, AuditConfig):
        config = AuditConfig.from_dict(config)
    config.validate()
    if not train.has_any(forget).any():
        raise CohortError(f"audit: no training note carries {', '.join(forget)}",
                          hint="the audit needs the forget cohort (notes with the forgotten class)")
    dev = resolve_device(device) if isinstance(device, str) else device
    disk = open_cache(cache_dir, tokenizer, config, dev) if cache_dir is not None else None
    return Auditor(tokenizer, forget, train, test, config, dev, progress, disk)


def _edit_tokens(edit: Any) -> tuple[list[int] | None, str | None]:
    if edit is None:
        return None, "the method made no token edit (no embedding rows to re-fit)"
    ids = getattr(edit, "token_ids", edit)
    ids = [int(i) for i in ids]
    if not ids:
        return None, "the token edit changes no embedding rows (head only)"
    return ids, None


def audit_and_report(
    original,
    edited,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    evaluation: Mapping[str, Any],
    gate: Mapping[str, Any] | None,
    edit: Any,
    meta: Mapping[str, Any],
    out_dir: Any,
    reference=None,
    *,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
    tokens: Sequence[Mapping[str, Any]] | None = None,
    cache_dir: Any = None,
) -> dict[str, Any]:
    """For the pipeline: run the audit, compute the before/after confusion on `test`, write
    audit.json + report.html + report.json into `out_dir`. Returns {"audit": AuditReport.to_dict(),
    "files": {"audit.json": path, "report.html": path, "report.json": path}, "confusion": ..., "tokens": [...]}.
    `edit` is the TokenEdit (or None); `tokens` (default: edit.info["tokens"]) feed the token table;
    `cache_dir`: the audit cache (see run_audit)."""
    import json
    from pathlib import Path

    from steuops import modeling
    from steuops.report import confusion, write_report

    auditor = _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir)
    token_ids, reason = _edit_tokens(edit)
    report = auditor.run(original, edited, reference=reference, token_ids=token_ids, edit_reason=reason).to_dict()
    labels = modeling.label_names(original)
    multi = modeling.is_multi_label(original)
    # every held-out note: the test rows the audit's samples covered are not run again
    preds = [modeling.predict(auditor.split_logits(m, "test"), multi) for m in (original, edited)]
    auditor.store.save()  # the original's rows the samples did not cover
    matrix = confusion(test.multi_hot(labels), preds[0], preds[1], labels, multi)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    audit_path = out / "audit.json"
    audit_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if tokens is None:
        tokens = list((getattr(edit, "info", None) or {}).get("tokens") or [])
    html_path, json_path = write_report(out, evaluation, audit=report, gate=gate, tokens=tokens, confusion=matrix,
                                        meta=meta)
    return {"audit": report, "confusion": matrix, "tokens": list(tokens),
            "files": {"audit.json": audit_path, "report.html": html_path, "report.json": json_path}}
