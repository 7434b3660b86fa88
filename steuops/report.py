"""The forgetting report: ONE self-contained HTML page (inline SVG, inline CSS, no scripts, no
external assets) plus the same facts as JSON next to it.

What a compliance reviewer needs on one page: which model and version, what was forgotten, by which
method, under which policy and cohort (hashes), when; utility before/after; what changed (the
selected tokens); how much of the class is still recoverable (the audit, next to the retrained
reference); and the gate's verdict rule by rule. numpy, plus scikit-learn inside `confusion`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

HTML_FILE = "report.html"
JSON_FILE = "report.json"
SCHEMA = "steuops.report/v1"
COLORS = {"original": "#8a8f98", "before": "#8a8f98", "edited": "#1f6fb4", "after": "#1f6fb4",
          "reference": "#2e9a4a", "retrained": "#2e9a4a", "rows": "#d9822b"}
# Meta keys shown first, with their labels; any other meta key follows, as given.
META_ORDER = [
    ("model", "Model"), ("version", "Version"), ("parent_version", "Parent version"), ("forget", "Forgotten classes"),
    ("method", "Method"), ("precision", "Training precision"), ("policy", "Policy"), ("policy_sha256", "Policy sha256"),
    ("cohort_sha256", "Cohort sha256"), ("cohort_rows", "Cohort rows"), ("gate", "Gate verdict"), ("created", "Created"),
    ("steuops_version", "steuops"),
    ("base_fingerprint", "Base model fingerprint"), ("edited_fingerprint", "Edited model fingerprint"),
    ("onnx_sha256", "ONNX sha256"), ("aliases", "Served by alias"),
]
# How close to the retrained reference an audit figure must be to read as "within" it.
REFERENCE_MARGIN = 0.05
# Audit figures the verdict reads against the reference, with their plain names.
FIGURE_NAMES = {"probe_f1": "linear-probe F1", "relearn_f1": "head re-fit F1", "membership_auc": "membership AUC",
                "bypass_f1": "bypass F1"}
COMPLIANCE_LABELS = (("requester", "Requested by"), ("reason", "Reason"), ("approver", "Approver"))


# ---- confusion (sklearn) -------------------------------------------------------------------------
def confusion(y_true: np.ndarray, before: np.ndarray, after: np.ndarray, labels: Sequence[str],
              multi_label: bool) -> dict[str, Any]:
    """Per-class 2x2 counts (multi-label) or a CxC matrix (single-label; rows = truth), before and after.
    Inputs are (n, C) 0/1 matrices: the truth and the two models' predictions. Counted by sklearn's
    confusion_matrix (imported here: the rest of this module stays numpy only)."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_true).astype(bool)
    out: dict[str, Any] = {"labels": list(labels), "multi_label": bool(multi_label), "n": int(len(y))}
    for name, pred in (("before", before), ("after", after)):
        p = np.asarray(pred).astype(bool)
        if multi_label:
            cells = [confusion_matrix(y[:, j], p[:, j], labels=[False, True]).ravel() if len(y) else np.zeros(4, int)
                     for j in range(len(labels))]
            out[name] = {label: {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}
                         for label, (tn, fp, fn, tp) in zip(labels, cells, strict=True)}
        else:
            matrix = (confusion_matrix(y.argmax(axis=1), p.argmax(axis=1), labels=list(range(len(labels))))
                      if len(y) else np.zeros((len(labels), len(labels)), dtype=int))
            out[name] = matrix.tolist()
    return out


# ---- the page ------------------------------------------------------------------------------------
def render_html(
    evaluation: Mapping[str, Any],
    *,
    audit: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
    tokens: Sequence[Mapping[str, Any]] | None = None,
    confusion: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    compliance: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> str:
    """One self-contained HTML page from the evaluation (metrics.Evaluation.to_dict()), the audit
    (AuditReport.to_dict()), the gate (GateDecision.to_dict()), the edit's tokens and a confusion dict.
    compliance: {"requester", "reason", "approver"} (free text, escaped); reference: where the audit's
    reference came from ({"description"} or {"source": "unavailable", "reason", "hint"}; default: the
    audit's own "reference_source")."""
    meta = dict(meta or {})
    forget = list(meta.get("forget") or evaluation.get("forget") or [])
    reference = reference if reference is not None else (audit or {}).get("reference_source")
    title = f"steuops forgetting report: {meta.get('model', 'model')} v{meta.get('version', '?')}"
    sections = [
        _verdict(evaluation, audit, gate, forget, meta, compliance, reference),
        _summary(evaluation, audit, gate, forget, meta),
        _utility(evaluation, forget),
        _confusion(confusion, forget),
        _tokens(tokens, meta.get("scorer")),
        _audit(audit, reference),
        _gate(gate),
        _signoff(compliance, meta),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1>"
        + "".join(sections)
        + f"<footer>Generated {escape(generated)} by steuops. Every figure on this page is also in "
        f"<code>{JSON_FILE}</code> beside it.</footer></main></body></html>\n"
    )


def write_report(
    directory: str | Path,
    evaluation: Mapping[str, Any],
    *,
    audit: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
    tokens: Sequence[Mapping[str, Any]] | None = None,
    confusion: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    html_name: str = HTML_FILE,
    compliance: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write report.html and report.json (same facts) into `directory`; returns both paths.
    report.json adds to the inputs: "verdict" (the opening paragraph as text), "compliance",
    "reference", "serving" {onnx_sha256, aliases} and "utility" (macro F1 over all and over the
    retained classes, before and after)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / html_name
    json_path = html_path.with_suffix(".json")
    meta = dict(meta or {})
    forget = list(meta.get("forget") or evaluation.get("forget") or [])
    reference = reference if reference is not None else (audit or {}).get("reference_source")
    payload = {"schema": SCHEMA, "meta": meta, "evaluation": dict(evaluation), "audit": audit,
               "gate": gate, "tokens": list(tokens or []), "confusion": confusion,
               "verdict": verdict_text(evaluation, audit, gate, forget, meta, compliance, reference),
               "compliance": dict(compliance or {}), "reference": reference,
               "serving": {"onnx_sha256": meta.get("onnx_sha256"), "aliases": list(meta.get("aliases") or [])},
               "utility": utility_figures(evaluation, forget)}
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    html_path.write_text(render_html(evaluation, audit=audit, gate=gate, tokens=tokens, confusion=confusion,
                                     meta=meta, compliance=compliance, reference=reference), encoding="utf-8")
    return html_path, json_path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# ---- figures the page and report.json share ------------------------------------------------------
def retained_macro_f1(evaluation: Mapping[str, Any], side: str = "after") -> float | None:
    """Macro F1 over the retained classes only (the forgotten ones left out), `side` "before" or
    "after": the evaluation's retain_macro_f1, else the mean of its per-class F1s over the labels not
    in evaluation["forget"]. A forgotten class at F1 0 then does not read as a collapse."""
    scores = evaluation.get(side) or {}
    if scores.get("retain_macro_f1") is not None:
        return float(scores["retain_macro_f1"])
    per_class = scores.get("per_class_f1") or {}
    forget = set(evaluation.get("forget") or [])
    labels = list(evaluation.get("labels") or per_class)
    values = [per_class[c] for c in labels if c not in forget and per_class.get(c) is not None]
    return float(np.mean(values)) if values else None


def utility_figures(evaluation: Mapping[str, Any], forget: Sequence[str] | None = None) -> dict[str, Any]:
    """Macro F1 over every class and over the retained classes only, before and after."""
    forget = list(forget or evaluation.get("forget") or [])
    labels = list(evaluation.get("labels") or (evaluation.get("before") or {}).get("per_class_f1") or [])
    return {
        "macro_f1": {side: (evaluation.get(side) or {}).get("macro_f1") for side in ("before", "after")},
        "retain_macro_f1": {side: retained_macro_f1(evaluation, side) for side in ("before", "after")},
        "retained_classes": [c for c in labels if c not in set(forget)],
        "forgotten_classes": forget,
    }


def verdict_text(evaluation: Mapping[str, Any], audit: Mapping[str, Any] | None, gate: Mapping[str, Any] | None,
                 forget: Sequence[str], meta: Mapping[str, Any] | None = None,
                 compliance: Mapping[str, Any] | None = None, reference: Mapping[str, Any] | None = None) -> str:
    """The report's opening paragraph, in plain words: who asked and why, the gate's verdict, whether the
    policy's audit limits were part of it, each audit figure next to the retrained reference, utility
    over the retained classes, and what serves the version."""
    meta = dict(meta or {})
    compliance = dict(compliance or {})
    version = f"{meta.get('model', 'the model')} v{meta.get('version', '?')}"
    parts = []
    asked = compliance.get("requester")
    why = compliance.get("reason")
    if asked or why:
        parts.append(f"Removal of {', '.join(forget) or 'the class'} from {version}"
                     + (f" requested by {asked}" if asked else "") + (f" (reason: {why})" if why else "") + ".")
    parts.append(_gate_sentence(gate))
    parts.append(_limits_sentence(gate, audit))
    parts.append(_reference_sentence(audit, reference))
    after, before = evaluation.get("after") or {}, evaluation.get("before") or {}
    parts.append(
        f"Forget F1 {_plain(before.get('forget_f1'))} \u2192 {_plain(after.get('forget_f1'))}; macro F1 over the "
        f"retained classes only {_plain(retained_macro_f1(evaluation, 'before'))} \u2192 "
        f"{_plain(retained_macro_f1(evaluation, 'after'))} (over all classes, the forgotten included: "
        f"{_plain(before.get('macro_f1'))} \u2192 {_plain(after.get('macro_f1'))}).")
    aliases = list(meta.get("aliases") or [])
    onnx = meta.get("onnx_sha256")
    served = (f"{version} is served by alias {', '.join(repr(a) for a in aliases)}" if aliases
              else f"No alias serves {version}")
    parts.append(served + (f"; its ONNX file has sha256 {onnx}." if onnx else "; it has no ONNX export recorded."))
    if compliance.get("approver"):
        parts.append(f"Approver: {compliance['approver']}.")
    return " ".join(p for p in parts if p)


def _gate_sentence(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return "No gate decision is recorded for this version."
    rules = list(gate.get("rules") or [])
    failed = [str(r.get("name")) for r in rules if not r.get("passed")]
    policy = f"policy {gate.get('policy_name', '?')!r}"
    if gate.get("passed"):
        return f"The gate PASSED under {policy}: all {len(rules)} rules held."
    return f"The gate REJECTED it under {policy}: {', '.join(failed) or 'a rule'} failed ({len(failed)} of {len(rules)})."


def _limits_sentence(gate: Mapping[str, Any] | None, audit: Mapping[str, Any] | None) -> str:
    if not gate:
        return ""
    limits = [r for r in gate.get("rules") or [] if str(r.get("name", "")).startswith("audit_")]
    if not limits:
        return ("The policy sets no audit limits, so the audit figures were not part of the gate: they are "
                "evidence for the reviewer, not a condition of promotion.")
    checked = "; ".join(
        f"{FIGURE_NAMES.get(str(r['name'])[6:], str(r['name'])[6:])} {_plain(r.get('observed'))} "
        f"{r.get('comparison', '<=')} {_plain(r.get('threshold'))}: {'held' if r.get('passed') else 'FAILED'}"
        for r in limits)
    return f"The policy's audit limits were part of the gate ({checked})."


def _reference_sentence(audit: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> str:
    if not audit:
        return "No forgetting audit was run, so nothing says how recoverable the class still is."
    reference = dict(reference or {})
    seeds = len(audit.get("seeds") or [])
    over = f"means over {seeds} seeds" if seeds > 1 else ""
    figures = [key for key in FIGURE_NAMES if isinstance(audit.get(key), Mapping)]
    if not has_reference_figures(audit):
        why = reference.get("reason") or (audit.get("skipped") or {}).get("reference") or "none was given"
        hint = f" To add one: {reference['hint']}." if reference.get("hint") else ""
        shown = "; ".join(f"{FIGURE_NAMES[k]} {_plain(audit[k].get('edited'))}" for k in figures)
        return f"The audit ({shown}) has no retrained reference to compare with: {why}.{hint}"
    said = "; ".join(x for x in (reference.get("description"), over) if x)
    compared = "; ".join(_compare(audit, key) for key in figures)
    return (f"Next to the retrained reference{f' ({said})' if said else ''}: {compared} "
            f"(within = no more than {REFERENCE_MARGIN:.2f} apart).")


def has_reference_figures(audit: Mapping[str, Any] | None) -> bool:
    return bool(audit) and any(isinstance(audit.get(k), Mapping) and audit[k].get("reference") is not None
                               for k in FIGURE_NAMES)


def _compare(audit: Mapping[str, Any], key: str) -> str:
    edited, ref = audit[key].get("edited"), audit[key].get("reference")
    name = FIGURE_NAMES[key]
    shown = f"{name} {_spread_text(audit, key, 'edited', edited)}"
    if edited is None:
        return f"{name} not measured"
    if ref is None:
        return f"{shown} (reference not measured)"
    shown += f" vs {_spread_text(audit, key, 'reference', ref)} for the retrained reference"
    gap = float(edited) - float(ref)
    if abs(gap) <= REFERENCE_MARGIN + 1e-12:
        return f"{shown}: within {REFERENCE_MARGIN:.2f}"
    digits = 3 if round(abs(gap), 2) <= REFERENCE_MARGIN else 2  # 0.052 is past the margin: not "0.05 below it"
    shown += f": {abs(gap):.{digits}f} {'above' if gap > 0 else 'below'} it"
    noise = (_spread(audit, key, "edited") or {}).get("gap_error")
    if noise is None:
        return shown
    # twice the standard error: a gap the sample of notes alone would give about one time in twenty
    if abs(gap) <= 2 * float(noise):
        return f"{shown}, within twice the gap's sampling error ({float(noise):.2f}), so not a clear difference"
    return f"{shown}, more than twice the gap's sampling error ({float(noise):.2f})"


def _spread_text(audit: Mapping[str, Any], figure: str, role: str, value: Any) -> str:
    cell = _spread(audit, figure, role)
    if cell is not None and cell.get("std") is not None:
        error = f" (sampling error {float(cell['error']):.2f})" if cell.get("error") is not None else ""
        return f"{_plain(cell.get('mean', value))} ± {float(cell['std']):.2f}{error}"
    return _plain(value)


def _spread(audit: Mapping[str, Any] | None, figure: str, role: str) -> Mapping[str, Any] | None:
    """The v2 audit's {"mean", "std", "values"} of a figure's role across seeds, or None (v1 audits)."""
    cell = ((audit or {}).get("spread") or {}).get(figure) or {}
    value = cell.get(role) if isinstance(cell, Mapping) else None
    return value if isinstance(value, Mapping) and value.get("mean") is not None else None


def _plain(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{float(value):.{digits}f}"


# ---- sections ------------------------------------------------------------------------------------
def _verdict(evaluation, audit, gate, forget, meta, compliance, reference) -> str:
    text = verdict_text(evaluation, audit, gate, forget, meta, compliance, reference)
    ok = None if not gate else bool(gate.get("passed"))
    badge = "" if ok is None else \
        f"<span class=\"badge {'pass' if ok else 'fail'}\">gate {'PASSED' if ok else 'REJECTED'}</span> "
    return f"<section id=\"verdict\"><h2>Verdict</h2><p class=\"verdict\">{badge}{escape(text)}</p></section>"


def _signoff(compliance, meta) -> str:
    compliance = dict(compliance or {})
    sources = compliance.get("source") or {}
    missing = "<span class=\"muted\">not given</span>"
    rows = "".join(
        f"<tr><th>{label}</th><td>{escape(str(compliance[key])) if compliance.get(key) else missing}"
        f"</td><td class=\"muted\">{escape(str(sources.get(key) or ''))}</td></tr>"
        for key, label in COMPLIANCE_LABELS)
    version = f"{meta.get('model', 'model')} v{meta.get('version', '?')}"
    return ("<section id=\"signoff\"><h2>Sign-off</h2>"
            "<table class=\"meta\"><tr><th>field</th><th>value</th><th>from</th></tr>" + rows + "</table>"
            f"<p>I have read this report on {escape(version)} and approve the removal it records.</p>"
            "<table class=\"sign\"><tr><th>Name</th><td></td></tr><tr><th>Signature</th><td></td></tr>"
            "<tr><th>Date</th><td></td></tr></table></section>")


def _summary(evaluation, audit, gate, forget, meta) -> str:
    rows = []
    shown = set()
    meta = dict(meta)
    if "aliases" in meta and not meta["aliases"]:
        meta["aliases"] = "none (no alias serves this version)"
    for key, label in META_ORDER:
        if key in meta and meta[key] not in (None, ""):
            rows.append((label, _fmt_meta(meta[key])))
            shown.add(key)
    rows += [(str(k), _fmt_meta(v)) for k, v in meta.items() if k not in shown and v not in (None, "")]
    after = evaluation.get("after", {})
    before = evaluation.get("before", {})
    verdict = ""
    if gate is not None:
        ok = bool(gate.get("passed"))
        verdict = f"<span class=\"badge {'pass' if ok else 'fail'}\">gate {'PASSED' if ok else 'REJECTED'}</span>"
    cards = [
        ("Forget F1", _num(before.get("forget_f1")), _num(after.get("forget_f1"))),
        ("Macro F1, retained classes only", _num(retained_macro_f1(evaluation, "before")),
         _num(retained_macro_f1(evaluation, "after"))),
        ("Macro F1, all classes (forgotten included)", _num(before.get("macro_f1")), _num(after.get("macro_f1"))),
        ("Parameters modified", "", _pct(evaluation.get("params_fraction"))),
    ]
    if audit:
        cards.append(("Linear probe F1 (edited / retrained)", "", _pair(audit, "probe_f1")))
        cards.append(("Head re-fit F1 (edited / retrained)", "", _pair(audit, "relearn_f1")))
    card_html = "".join(
        f"<div class=\"card\"><div class=\"k\">{escape(name)}</div><div class=\"v\">"
        + (f"{escape(b)} &rarr; " if b else "") + f"{escape(a)}</div></div>"
        for name, b, a in cards
    )
    return (
        f"<section id=\"summary\"><h2>Summary {verdict}</h2>"
        f"<p>Forgotten: <b>{escape(', '.join(forget) or '?')}</b>. Test notes: {escape(str(evaluation.get('n_test', '?')))}."
        f"</p><div class=\"cards\">{card_html}</div>"
        f"<table class=\"meta\">{''.join(f'<tr><th>{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)}</table>"
        "</section>"
    )


def _utility(evaluation, forget) -> str:
    before = evaluation.get("before", {}).get("per_class_f1", {})
    after = evaluation.get("after", {}).get("per_class_f1", {})
    labels = list(evaluation.get("labels") or before or after)
    if not labels:
        return "<section id=\"utility\"><h2>Per-class F1</h2><p class=\"muted\">No evaluation.</p></section>"
    support = evaluation.get("support", {})
    chart = _bar_chart(labels, {"before": [before.get(c) for c in labels], "after": [after.get(c) for c in labels]},
                       highlight=set(forget))
    marks = {c: (' class="forget"', " (forgotten)") if c in forget else ("", "") for c in labels}
    rows = "".join(
        f"<tr{marks[c][0]}><td>{escape(c)}{marks[c][1]}</td>"
        f"<td>{_num(before.get(c))}</td><td>{_num(after.get(c))}</td><td>{_delta(before.get(c), after.get(c))}</td>"
        f"<td>{escape(str(support.get(c, '')))}</td></tr>" for c in labels
    )
    facts = [("params modified", f"{evaluation.get('params_modified', '?')} of {evaluation.get('params_total', '?')}"
              f" ({_pct(evaluation.get('params_fraction'))})"),
             ("L2 distance", _num(evaluation.get("l2_distance"))),
             ("macro F1, all classes", f"{_num(evaluation.get('before', {}).get('macro_f1'))} &rarr; "
                                       f"{_num(evaluation.get('after', {}).get('macro_f1'))}"),
             ("macro F1, retained classes only" + (f" (without {', '.join(forget)})" if forget else ""),
              f"{_num(retained_macro_f1(evaluation, 'before'))} &rarr; {_num(retained_macro_f1(evaluation, 'after'))}")]
    return (
        "<section id=\"utility\"><h2>Per-class F1, before and after</h2>" + chart
        + "<table><tr><th>class</th><th>before</th><th>after</th><th>change</th><th>test support</th></tr>"
        + rows + "</table><p>" + " &middot; ".join(f"{escape(k)}: {v}" for k, v in facts) + "</p>"
        + _paper(evaluation.get("paper")) + "</section>"
    )


def _paper(paper) -> str:
    """The HDSU paper's figures (metrics.paper_metrics), for readers comparing with it."""
    if not isinstance(paper, Mapping) or not paper:
        return ""
    facts = [("forgetting rate", _num(paper.get("forgetting_rate"))),
             ("knowledge preservation", _num(paper.get("knowledge_preservation"))),
             ("parameters changed", f"{_num(paper.get('params_percent'), 3)}%")]
    levels = paper.get("preservation_by_level") or {}
    by_level = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v.get('notes')))}</td>"
                       f"<td>{_num(v.get('preservation'))}</td></tr>" for k, v in levels.items())
    table = ("<table><tr><th>highest hierarchy level the retain note mentions</th><th>notes</th>"
             f"<th>preservation</th></tr>{by_level}</table>") if by_level else ""
    return ("<h3>The paper's figures</h3><p class=\"muted\">As arXiv 2511.19498 reports them: forgetting rate = 1 "
            "&minus; forget accuracy after / before; knowledge preservation = retain accuracy after / before.</p><p>"
            + " &middot; ".join(f"{escape(k)}: {v}" for k, v in facts) + "</p>" + table)


def _confusion(data, forget) -> str:
    head = "<section id=\"confusion\"><h2>Confusion, before and after</h2>"
    if not data:
        return head + "<p class=\"muted\">Not computed for this report.</p></section>"
    labels = data.get("labels", [])
    if data.get("multi_label", True):
        cells = []
        for c in labels:
            b, a = data["before"][c], data["after"][c]
            cells.append(
                f"<div class=\"cm{' forget' if c in forget else ''}\"><div class=\"cmt\">{escape(c)}</div>"
                + _two_by_two(b, "before") + _two_by_two(a, "after") + "</div>"
            )
        note = ("<p class=\"muted\">One 2&times;2 table per class (multi-label): rows = truth (yes/no), "
                "columns = predicted (yes/no).</p>")
        return head + note + "<div class=\"cms\">" + "".join(cells) + "</div></section>"
    return head + "<div class=\"cms\">" + _matrix(data["before"], labels, "before") \
        + _matrix(data["after"], labels, "after") + "</div><p class=\"muted\">Rows = truth, columns = predicted.</p></section>"


def _two_by_two(c: Mapping[str, int], caption: str) -> str:
    return (f"<table class=\"tiny\"><caption>{caption}</caption><tr><th></th><th>pred yes</th><th>pred no</th></tr>"
            f"<tr><th>true yes</th><td class=\"good\">{c['tp']}</td><td class=\"bad\">{c['fn']}</td></tr>"
            f"<tr><th>true no</th><td class=\"bad\">{c['fp']}</td><td class=\"good\">{c['tn']}</td></tr></table>")


def _matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], caption: str) -> str:
    top = max((max(r) for r in matrix), default=1) or 1
    head = "".join(f"<th>{escape(c)}</th>" for c in labels)
    body = "".join(
        f"<tr><th>{escape(labels[i])}</th>"
        + "".join(f"<td style=\"background:rgba(31,111,180,{0.08 + 0.6 * v / top:.2f})\">{v}</td>" for v in row)
        + "</tr>" for i, row in enumerate(matrix)
    )
    return f"<table class=\"tiny\"><caption>{caption}</caption><tr><th></th>{head}</tr>{body}</table>"


# what each token scorer ranks by (steuops.methods.steu.selection), for the caption of the token table
SCORER_CAPTIONS = {
    "pmi": "PMI with the forget class &times; log document frequency",
    "specific": "log-odds of occurring in forget rather than retain notes &times; log forget-note count",
    "fisher": "how many of the row's elements the method changes, chosen by Fisher information on the forget "
              "notes over that on retain notes; level and weight: the token's place in the concept hierarchy",
}


def _tokens(tokens, scorer: str | None = None) -> str:
    head = "<section id=\"tokens\"><h2>Selected tokens</h2>"
    if not tokens:
        return head + "<p class=\"muted\">The method selected no tokens (it edits no embedding rows).</p></section>"
    limit = 120
    levels = any("level" in t for t in tokens)  # a hierarchy method: each token's level and forget weight too

    def extra(t) -> str:
        return f"<td>{escape(str(t.get('level') or '-'))}</td><td>{_num(t.get('weight'), 2)}</td>" if levels else ""

    rows = "".join(
        f"<tr><td>{i + 1}</td><td><code>{escape(str(t.get('token', '')))}</code></td>"
        f"<td>{escape(str(t.get('id', '')))}</td><td>{_num(t.get('score'), 3)}</td>{extra(t)}</tr>"
        for i, t in enumerate(tokens[:limit])
    )
    more = f"<p class=\"muted\">{len(tokens) - limit} more in {JSON_FILE}.</p>" if len(tokens) > limit else ""
    how = SCORER_CAPTIONS.get(str(scorer), "the method's own score")
    return (head + f"<p>{len(tokens)} embedding rows were edited; their tokens, by selection score "
            f"({how}):</p>"
            "<div class=\"scroll\"><table class=\"tokens\"><tr><th>#</th><th>token</th><th>id</th><th>score</th>"
            + ("<th>level</th><th>weight</th>" if levels else "") + "</tr>"
            + rows + "</table></div>" + more + "</section>")


def _capped_note(audit) -> str:
    """Which models' probe fits stopped at probe_steps before lbfgs's tolerance (an F1 near, not at, the optimum)."""
    capped = {role: int((section or {}).get("capped", 0)) for role, section in (audit.get("probe") or {}).items()}
    names = {"reference": "retrained"}
    named = [f"{names.get(role, role)} {n}" for role, n in capped.items() if n]
    if not named:
        return ""
    steps = (audit.get("config") or {}).get("probe_steps", "probe_steps")
    return f" Fits that stopped at {escape(str(steps))} iterations short of the tolerance: {escape(', '.join(named))}."


def _audit(audit, reference=None) -> str:
    head = "<section id=\"audit\"><h2>Forgetting audit</h2>"
    if not audit:
        return head + "<p class=\"muted\">No audit was run for this version.</p></section>"
    head += _reference_line(audit, reference) + _seeds_line(audit) + _cache_line(audit) + _time_line(audit)
    roles = ["original", "edited", "reference"]
    names = ["original", "edited", "retrained"]
    probe = audit.get("probe_f1", {})
    mia = audit.get("membership_auc", {})
    byp = audit.get("bypass_f1", {})
    parts = [
        "<p>STEU's forgetting is behavioural: the encoder is frozen. These attacks measure how much of the "
        "class can still be recovered, next to a model retrained without the class (the gold standard). "
        "Values close to the retrained model's mean nothing more is recoverable than from a model that never "
        "learned the class.</p>",
        "<div class=\"grid\">",
        _panel("Linear probe F1 on frozen features",
               _bar_chart(names, {"F1": [probe.get(r) for r in roles]}, colors=[COLORS[r] for r in roles]),
               "Logistic regression on the features the head sees, trained on train notes, F1 on test."
               + _capped_note(audit)),
        _panel("Membership inference AUC (forget cohort)",
               _bar_chart(names, {"AUC": [mia.get(r) for r in roles]}, colors=[COLORS[r] for r in roles], line=0.5),
               "Cohort notes vs held-out notes of the class, scored by the forget label's log-likelihood. "
               "0.5 = no membership signal."),
        _panel("Relearn attack: forget F1 after re-fitting", _relearn_chart(audit.get("relearn_curves") or {}),
               "Only the head (or only the edited embedding rows) re-fit on a small labelled sample "
               f"({escape(str((audit.get('relearn_curves') or {}).get('sample', '?')))} notes)."),
        _panel("Bypass: forget F1 on rewordings",
               _bar_chart(names, {"F1": [byp.get(r) for r in roles]}, colors=[COLORS[r] for r in roles]),
               "Synonyms and abbreviations of the class composed into short notes; other classes' rewordings "
               "are the negatives."),
        "</div>",
        _audit_table(audit),
        _relearn_sizes(audit.get("relearn_sizes")),
        _cka(audit),
        _bypass_table(audit.get("bypass") or {}),
    ]
    skipped = audit.get("skipped") or {}
    if skipped:
        parts.append("<p class=\"muted\">Not measured: " + "; ".join(
            f"<b>{escape(k)}</b>: {escape(str(v))}" for k, v in skipped.items()) + "</p>")
    return head + "".join(parts) + "</section>"


def _panel(title: str, body: str, caption: str) -> str:
    return f"<figure><figcaption><b>{escape(title)}</b></figcaption>{body}<p class=\"muted\">{caption}</p></figure>"


def _reference_line(audit, reference) -> str:
    reference = dict(reference or {})
    if has_reference_figures(audit):
        where = reference.get("description") or "recorded in the audit"
        return f"<p>Retrained reference: <b>{escape(str(where))}</b>.</p>"
    why = reference.get("reason") or (audit.get("skipped") or {}).get("reference") or "none was given"
    fix = f" To add one: {escape(str(reference['hint']))}." if reference.get("hint") else ""
    return f"<p class=\"warn\">No retrained reference: {escape(str(why))}.{fix}</p>"


def _seeds_line(audit) -> str:
    seeds = list(audit.get("seeds") or [])
    if not seeds:
        return ""
    deep = (audit.get("config") or {}).get("gradient_seeds")
    fewer = (f" The two attacks that train through the encoder (the embedding-rows re-fit and the retain-only "
             f"fine-tune) ran on the first {deep} of them (the audit's gradient_seeds)."
             if isinstance(deep, int) and deep < len(seeds) else "")
    has_errors = any((_spread(audit, figure, role) or {}).get("error") is not None
                     for figure in ("probe_f1", "membership_auc") for role in ("original", "edited", "reference"))
    error = (" The probe F1 and the membership AUC also give their sampling error: the bootstrap standard error over "
             "the test notes, how far the figure would move on another sample of notes like these (the seeds do not "
             "vary these two when every train note is used)." if has_errors else "")
    if any((_spread(audit, figure, "edited") or {}).get("gap_error") is not None
           for figure in ("probe_f1", "membership_auc")):
        error += (" The edited model's also give the sampling error of its gap to the reference, from resamples of "
                  "the same notes for both models: the sample of notes alone gives a gap of more than twice that "
                  "error about one time in twenty.")
    return (f"<p class=\"muted\">Figures are the mean &plusmn; standard deviation over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({escape(', '.join(str(x) for x in seeds))}).{fewer}{error}"
            f"{_depth_sentence(audit.get('config') or {})}</p>")


def _depth_sentence(config: Mapping[str, Any]) -> str:
    """Which attack budget the audit ran at (`--audit-depth`), with the numbers a reviewer would ask for."""
    from steuops.audit import depth_of

    if "retain_relearn_steps" not in config:
        return ""
    name = depth_of(config)
    rows = config.get("relearn_rows_steps")
    rows_part = f"{rows} steps" if rows is not None else "every relearn step"
    return (f" Attack depth: {escape(name or 'custom')} (rows re-fit {rows_part} at "
            f"{escape(str(config.get('relearn_lr_rows')))}, retain-only fine-tune "
            f"{escape(str(config.get('retain_relearn_steps')))} steps at {escape(str(config.get('retain_relearn_lr')))}"
            f"{'; <code>--audit-depth thorough</code> tries harder' if name == 'standard' else ''}).")


def _time_line(audit) -> str:
    """Where the audit's time went: the encoder passes it ran (per role) against the attacks."""
    from steuops.audit.summary import audit_time

    timing = audit_time(audit)
    if timing is None:
        return ""
    ran = ", ".join(f"{escape(role)} {n:,}" for role, n in timing["encoder_notes"].items()) or "none: all read back"
    return (f"<p class=\"muted\">This audit took {timing['seconds']:.1f} s: {timing['passes']:.1f} s of encoder passes "
            f"(notes per model: {ran}), {timing['attacks']:.1f} s of attacks and bookkeeping.</p>")


def _cache_line(audit) -> str:
    """What the audit read back from the audit cache (the fixed models' work, see steuops.auditcache)."""
    from steuops.auditcache import describe

    cache = audit.get("cache") if isinstance(audit.get("cache"), Mapping) else {}
    read = describe(cache.get("reused") or {})
    if not read:
        return ""
    return (f"<p class=\"muted\">Read from the audit cache ({escape(str(cache.get('dir', '')))}), as an earlier audit "
            f"of the same models on the same notes computed them, after a fresh pass of a few notes matched: "
            f"{escape(read)}.</p>")


def _cell(audit, figure: str, role: str, value: Any) -> str:
    """A figure's value for one role: mean ± std (n) when the audit has its spread, else the value."""
    cell = _spread(audit, figure, role)
    if cell is None or cell.get("std") is None:
        return _num(value)
    values = [v for v in cell.get("values") or [] if v is not None]
    title = f" title=\"{escape(', '.join(f'{float(v):.4f}' for v in values))}\"" if values else ""
    n = f" <span class=\"muted\">(n={len(values)})</span>" if values else ""
    error = (f" <span class=\"muted\">sampling error {float(cell['error']):.4f}</span>"
             if cell.get("error") is not None else "")
    if cell.get("gap_error") is not None:
        error += f" <span class=\"muted\">(of its gap to the reference {float(cell['gap_error']):.4f})</span>"
    return f"<span{title}>{float(cell['mean']):.4f} &plusmn; {float(cell['std']):.4f}</span>{n}{error}"


def _audit_table(audit) -> str:
    rows = [("Linear probe F1", "probe_f1"),
            ("Head re-fit F1 (last step)", "relearn_f1"),
            ("Membership AUC", "membership_auc"),
            ("Bypass F1", "bypass_f1"),
            ("Bypass recall", "bypass_recall")]
    if isinstance(audit.get("retain_relearn_f1"), Mapping):
        rows.append(("Forget F1 after a retain-only fine-tune", "retain_relearn_f1"))
    body = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(
            f"<td>{_cell(audit, key, r, (audit.get(key) or {}).get(r))}</td>" for r in ("original", "edited", "reference"))
        + "</tr>"
        for name, key in rows
    )
    rows_rows = (audit.get("relearn_f1") or {}).get("edited_rows")
    extra = (f"<p>Embedding-rows re-fit (edited model): forget F1 "
             f"{_cell(audit, 'relearn_f1', 'edited_rows', rows_rows)} after {_rows_last_step(audit)}.</p>"
             if rows_rows is not None else "")
    return ("<table><tr><th>attack</th><th>original</th><th>edited</th><th>retrained</th></tr>" + body
            + "</table>" + extra)


def _rows_last_step(audit) -> str:
    """"N optimiser steps" for the rows re-fit's last point (its curve may stop before the head re-fit's)."""
    curves = audit.get("relearn_curves") or {}
    steps, rows = list(curves.get("steps") or []), list((curves.get("rows") or {}).get("edited") or [])
    return f"{steps[len(rows) - 1]} optimiser steps" if 0 < len(rows) <= len(steps) else "the last step"


def _relearn_sizes(sizes) -> str:
    """Head re-fit F1 by the attacker's number of labelled notes (v2 audits): a table and a bar chart."""
    if not isinstance(sizes, Mapping) or not sizes:
        return ""
    order = sorted(sizes, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k)))
    roles = [r for r in ("edited", "reference") if any(isinstance(sizes[k].get(r), Mapping) for k in order)]
    if not roles:
        return ""

    def mean(entry: Any) -> float | None:
        return float(entry["mean"]) if isinstance(entry, Mapping) and entry.get("mean") is not None else None

    def shown(entry: Any) -> str:
        if mean(entry) is None:
            return "n/a"
        std = entry.get("std")
        return f"{mean(entry):.4f}" + (f" &plusmn; {float(std):.4f}" if std is not None else "")

    groups = [f"{k} notes" for k in order]
    names = {"edited": "edited", "reference": "retrained"}
    chart = _bar_chart(groups, {names[r]: [mean(sizes[k].get(r)) for k in order] for r in roles})
    body = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{escape(str(sizes[k].get('forget_notes', '')))}</td>"
        + "".join(f"<td>{shown(sizes[k].get(r))}</td>" for r in roles) + "</tr>" for k in order)
    return ("<h3>Relearn by attacker size</h3><p class=\"muted\">Forget F1 after re-fitting the head on a labelled "
            "sample of this many notes (mean &plusmn; std over seeds). Close to the retrained model = nothing "
            "more comes back than from a model that never learned the class.</p>" + chart
            + "<table><tr><th>attacker notes</th><th>of them forget-class</th>"
            + "".join(f"<th>{names[r]}</th>" for r in roles) + "</tr>" + body + "</table>")


def _cka(audit) -> str:
    """Linear CKA between the models' features (v2 audits): 1 = the same representation."""
    cka = audit.get("cka")
    if not isinstance(cka, Mapping) or not cka:
        return ""
    pairs = [("edited_vs_original", "edited vs original"), ("edited_vs_reference", "edited vs retrained"),
             ("reference_vs_original", "retrained vs original")]
    cells = [(label, _cell(audit, "cka", key, cka.get(key))) for key, label in pairs if key in cka]
    if not cells:
        return ""
    return ("<table class=\"cka\"><tr><th>representation similarity (linear CKA)</th>"
            + "".join(f"<th>{escape(label)}</th>" for label, _ in cells) + "</tr><tr><td>CKA</td>"
            + "".join(f"<td>{value}</td>" for _, value in cells) + "</tr></table>"
            "<p class=\"muted\">Linear CKA of the features the head reads, on held-out notes: 1 = the same "
            "representation up to rotation and scale.</p>")


def _bypass_table(bypass) -> str:
    phrases = bypass.get("phrases") or []
    if not phrases:
        return ""
    roles = [r for r in ("original", "edited", "reference") if r in phrases[0]]
    body = "".join(
        f"<tr><td>{escape(p['class'])}</td><td>{escape(p['phrase'])}</td>"
        + "".join(f"<td>{_pct(p.get(r), 0)}</td>" for r in roles) + "</tr>" for p in phrases
    )
    return ("<details><summary>Bypass phrases: share of notes flagged as the forgotten class</summary>"
            "<table><tr><th>class</th><th>phrase</th>" + "".join(f"<th>{r}</th>" for r in roles) + "</tr>"
            + body + "</table></details>")


def _gate(gate) -> str:
    head = "<section id=\"gate\"><h2>Policy gate</h2>"
    if not gate:
        return head + "<p class=\"muted\">No gate decision recorded.</p></section>"
    ok = bool(gate.get("passed"))
    rows = "".join(
        f"<tr class=\"{'ok' if r.get('passed') else 'no'}\"><td>{escape(str(r.get('name', '')))}</td>"
        f"<td>{_num(r.get('observed'))}</td><td>{escape(str(r.get('comparison', '')))}</td>"
        f"<td>{_num(r.get('threshold'))}</td><td>{'pass' if r.get('passed') else 'FAIL'}</td>"
        f"<td>{escape(str(r.get('detail') or ''))}</td></tr>"
        for r in gate.get("rules", [])
    )
    return (head + f"<p>Policy <b>{escape(str(gate.get('policy_name', '?')))}</b> "
            f"(sha256 <code>{escape(str(gate.get('policy_sha256', '?')))}</code>): "
            f"<span class=\"badge {'pass' if ok else 'fail'}\">{'PASSED' if ok else 'REJECTED'}</span></p>"
            "<table><tr><th>rule</th><th>observed</th><th>comparison</th><th>threshold</th><th>result</th>"
            f"<th>detail</th></tr>{rows}</table></section>")


# ---- inline SVG charts ---------------------------------------------------------------------------
def _bar_chart(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], *, highlight=frozenset(),
               colors: Sequence[str] | None = None, line: float | None = None, ymax: float = 1.0) -> str:
    """Grouped vertical bars on a 0..ymax axis; None values are drawn as 'n/a'. One colour per series,
    or per group when `colors` is given (single-series charts)."""
    names = list(series)
    width = max(360, 70 + len(groups) * (26 * len(names) + 46))
    height, top, bottom, left = 200, 14, 30, 36
    plot_h = height - top - bottom
    group_w = (width - left - 10) / max(len(groups), 1)
    bar_w = min(26.0, (group_w - 14) / max(len(names), 1))
    out = [f"<svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" "
           f"height=\"{height}\" role=\"img\">"]
    out += _axis(left, top, width - 10, plot_h, ymax)
    for g, group in enumerate(groups):
        x0 = left + g * group_w + (group_w - bar_w * len(names)) / 2
        for s, name in enumerate(names):
            value = series[name][g]
            color = colors[g] if colors else COLORS.get(name, "#555")
            x = x0 + s * bar_w
            if value is None:
                out.append(f"<text x=\"{x + bar_w / 2:.1f}\" y=\"{top + plot_h - 4}\" class=\"na\">n/a</text>")
                continue
            h = max(0.0, min(float(value), ymax)) / ymax * plot_h
            out.append(f"<rect x=\"{x:.1f}\" y=\"{top + plot_h - h:.1f}\" width=\"{bar_w - 3:.1f}\" height=\"{h:.1f}\" "
                       f"fill=\"{color}\"><title>{escape(group)} {escape(name)}: {float(value):.3f}</title></rect>")
            out.append(f"<text x=\"{x + (bar_w - 3) / 2:.1f}\" y=\"{top + plot_h - h - 3:.1f}\" class=\"val\">"
                       f"{float(value):.2f}</text>")
        weight = " font-weight=\"bold\"" if group in highlight else ""
        out.append(f"<text x=\"{left + g * group_w + group_w / 2:.1f}\" y=\"{top + plot_h + 16}\" class=\"lab\"{weight}>"
                   f"{escape(_short(group))}</text>")
    if line is not None:
        y = top + plot_h - line / ymax * plot_h
        out.append(f"<line x1=\"{left}\" x2=\"{width - 10}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" class=\"ref\"/>")
    out.append("</svg>")
    if not colors and len(names) > 1:
        out.append(_legend(names, [COLORS.get(n, "#555") for n in names]))
    return "".join(out)


def _relearn_chart(curves: Mapping[str, Any]) -> str:
    steps = list(curves.get("steps") or [])
    series = {}
    for key, label in (("edited", "edited: head re-fit"), ("reference", "retrained: head re-fit")):
        if (curves.get("head") or {}).get(key):
            series[label] = (curves["head"][key], COLORS[key])
    if (curves.get("rows") or {}).get("edited"):
        series["edited: rows re-fit"] = (curves["rows"]["edited"], COLORS["rows"])
    if not steps or not series:
        return "<p class=\"muted\">No relearn curves.</p>"
    width, height, top, bottom, left = 440, 210, 14, 38, 36
    plot_w, plot_h = width - left - 16, height - top - bottom
    span = max(steps[-1] - steps[0], 1)

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + (step - steps[0]) / span * plot_w, top + plot_h - max(0.0, min(value, 1.0)) * plot_h

    out = [f"<svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" "
           f"height=\"{height}\" role=\"img\">"]
    out += _axis(left, top, left + plot_w, plot_h, 1.0)
    for step in steps:
        x, _ = xy(step, 0)
        out.append(f"<text x=\"{x:.1f}\" y=\"{top + plot_h + 14}\" class=\"lab\">{step}</text>")
    out.append(f"<text x=\"{left + plot_w / 2:.1f}\" y=\"{top + plot_h + 28}\" class=\"lab\">optimiser steps</text>")
    original = curves.get("original_f1")
    if original is not None:
        _, y = xy(0, float(original))
        out.append(f"<line x1=\"{left}\" x2=\"{left + plot_w}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" class=\"ref\">"
                   f"<title>original model: {float(original):.3f}</title></line>")
        out.append(f"<text x=\"{left + 6}\" y=\"{y - 4:.1f}\" class=\"leg\">original model {float(original):.2f}"
                   "</text>")
    for label, (values, color) in series.items():
        pts = [xy(s, float(v)) for s, v in zip(steps, values, strict=False)]
        out.append(f"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2.2\" points=\""
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + "\"/>")
        out += [f"<circle cx=\"{x:.1f}\" cy=\"{y:.1f}\" r=\"3\" fill=\"{color}\"><title>{escape(label)} step {s}: "
                f"{float(v):.3f}</title></circle>" for (x, y), s, v in zip(pts, steps, values, strict=False)]
    out.append("</svg>")
    out.append(_legend(list(series), [c for _, c in series.values()]))
    return "".join(out)


def _axis(left: float, top: float, right: float, plot_h: float, ymax: float) -> list[str]:
    out = []
    for i in range(5):
        v = ymax * i / 4
        y = top + plot_h - v / ymax * plot_h
        out.append(f"<line x1=\"{left}\" x2=\"{right}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" class=\"grid\"/>")
        out.append(f"<text x=\"{left - 4}\" y=\"{y + 3:.1f}\" class=\"tick\">{v:.2f}</text>")
    return out


def _legend(names: Sequence[str], colors: Sequence[str]) -> str:
    """An HTML legend under a chart (wraps instead of being clipped by the SVG)."""
    items = "".join(f"<span><i style=\"background:{c}\"></i>{escape(n)}</span>" for n, c in zip(names, colors, strict=True))
    return f"<div class=\"legend\">{items}</div>"


# ---- formatting ----------------------------------------------------------------------------------
def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return escape(str(value))


def _pct(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def _pair(audit: Mapping[str, Any], figure: str) -> str:
    values = audit.get(figure) or {}
    return (f"{_spread_text(audit, figure, 'edited', values.get('edited'))} / "
            f"{_spread_text(audit, figure, 'reference', values.get('reference'))}")


def _delta(before: Any, after: Any) -> str:
    if before is None or after is None:
        return "n/a"
    d = float(after) - float(before)
    return f"<span class=\"{'down' if d < -0.005 else 'same'}\">{d:+.4f}</span>"


def _short(text: str, limit: int = 16) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _fmt_meta(value: Any) -> str:
    if isinstance(value, list | tuple):
        return escape(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return escape(json.dumps(value, default=str))
    text = str(value)
    return f"<code>{escape(text)}</code>" if len(text) >= 32 and " " not in text else escape(text)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d232b;background:#f4f6f8;margin:0}
main{max-width:1180px;margin:0 auto;padding:20px 28px;background:#fff}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}td{font-variant-numeric:tabular-nums}
table.meta th{width:210px}code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
tr.forget td{background:#fff4e5}tr.no td{background:#fdecec}tr.ok td:nth-child(5){color:#1e7b34}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-size:13px;color:#fff;vertical-align:middle}
.badge.pass{background:#1e7b34}.badge.fail{background:#b3261e}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #dde2e8;border-radius:6px;padding:8px 12px;min-width:170px}
.card .k{font-size:12px;color:#5b6673}.card .v{font-size:18px;font-weight:600}
.cms{display:flex;flex-wrap:wrap;gap:14px}.cm{border:1px solid #dde2e8;border-radius:6px;padding:6px 8px}
.cm.forget{border-color:#d9822b;background:#fffaf2}.cmt{font-weight:600;margin-bottom:2px}
.cm table{display:inline-table;margin:2px 6px 2px 0}
table.tiny{font-size:12px}table.tiny caption{font-size:11px;color:#5b6673;text-align:left}
td.good{background:#eef7f0}td.bad{background:#fbefef}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:10px 24px}
figure{margin:0}figure svg{max-width:100%;height:auto}
.scroll{max-height:360px;overflow:auto;display:inline-block}
.muted{color:#5b6673;font-size:12.5px}.down{color:#b3261e}.same{color:#5b6673}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .tick{text-anchor:end;fill:#667}
svg .lab{text-anchor:middle}svg .val{text-anchor:middle;font-size:10px}svg .na{text-anchor:middle;fill:#999}
svg .grid{stroke:#e6e9ed}svg .ref{stroke:#b3261e;stroke-dasharray:4 3}svg .leg{font-size:11px}
.legend{font-size:12px;color:#333;margin:2px 0 4px 36px}.legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
details{margin:8px 0}summary{cursor:pointer;color:#1f6fb4}
p.verdict{font-size:15px;line-height:1.55;background:#f7f9fb;border-left:4px solid #1f6fb4;padding:10px 14px}
p.warn{background:#fff4e5;border-left:4px solid #d9822b;padding:6px 10px}h3{font-size:15px;margin:16px 0 6px}
table.sign td{min-width:320px;height:28px}
footer{margin-top:30px;color:#5b6673;font-size:12px;border-top:1px solid #dde2e8;padding-top:8px}
"""
