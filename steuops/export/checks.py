"""What a file must show before it ships: `check_parity` compares ONNX Runtime with PyTorch text by text and lists
every mismatch; `score_onnx` scores a file on held-out notes with steuops.metrics' thresholds; `require_agreement`
refuses one that scores differently from the evaluated PyTorch model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.errors import ExportParityError, ModelError
from steuops.export.graph import META_LABELS, META_MULTI_LABEL, MODEL_FILE, metadata
from steuops.export.runtime import onnx_run_errors, ort_logits, session, settings_for, torch_logits
from steuops.inference import DEFAULT_MAX_LENGTH, InferenceSettings

if TYPE_CHECKING:
    from torch import nn

    from steuops.data import Notes


FP32_ATOL = 1e-4


OPTIMIZED_ATOL = 1e-3  # fusions reorder float sums


FP16_ATOL = 5e-2  # half precision: ~3 significant digits


SCORE_TOLERANCE = 0.01  # |F1 difference| ONNX vs PyTorch on the held-out notes that still counts as agreement


SCORED_FIGURES = ("forget_f1", "retain_macro_f1")


class OnnxScoreMismatch(ExportParityError):
    """The ONNX file scores differently from the evaluated PyTorch model on the held-out notes (exit 1)."""


@dataclass
class ParityReport:
    """PyTorch vs ONNX Runtime logits on the same texts. `mismatches` lists every bad text. `reference`: where
    the PyTorch logits came from: "pytorch" (a pass run for the check) or "evaluation" (the logits the gate
    scored, handed over by `steuops apply`)."""

    n_texts: int
    atol: float
    max_abs_diff: float
    label_agreement: float
    mismatches: list[dict[str, Any]]
    providers: list[str]
    onnx_file: str
    reference: str = "pytorch"

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def failures(self) -> list[str]:
        return [
            f"text {m['index']}: max |diff| {m['max_abs_diff']:.3g}, torch {m['torch_labels']} vs onnx {m['onnx_labels']}"
            for m in self.mismatches
        ]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_parity(
    model: nn.Module,
    tokenizer: Any,
    onnx_path: str | Path,
    texts: Sequence[str],
    *,
    atol: float = FP32_ATOL,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 16,
    sess: Any = None,
    settings: InferenceSettings | None = None,
    reference: np.ndarray | None = None,
) -> ParityReport:
    """Compare PyTorch (fp32, CPU) and ONNX Runtime logits text by text; every mismatch is listed.

    Both sides tokenize at `settings` (else `max_length` on the tokenizer's side). A text mismatches
    when any logit differs by more than `atol` or its predicted labels differ. `reference`: PyTorch
    logits of `texts` already computed at the same settings.
    """
    if not texts:
        raise ModelError("parity check needs at least one text", hint="pass held-out notes as check texts")
    settings = settings or settings_for(tokenizer, max_length)
    ref = reference if reference is not None else torch_logits(model, tokenizer, texts, settings,
                                                               batch_size=batch_size)
    with onnx_run_errors(onnx_path):
        sess = sess or session(onnx_path)
        got = ort_logits(sess, tokenizer, list(texts), batch_size=batch_size, settings=settings)
    return compare_logits(model, ref, got, atol=atol, providers=list(sess.get_providers()), onnx_file=str(onnx_path))


def compare_logits(model: nn.Module, ref: np.ndarray, got: np.ndarray, *, atol: float, providers: list[str],
                   onnx_file: str, reference: str = "pytorch") -> ParityReport:
    """The ParityReport of PyTorch logits `ref` against ONNX Runtime logits `got` (same texts, same order)."""
    from steuops import modeling

    multi = modeling.is_multi_label(model)
    names = modeling.label_names(model)
    diff = np.abs(ref - got).max(axis=1) if len(ref) else np.zeros(0)
    pred_ref, pred_got = modeling.predict(ref, multi), modeling.predict(got, multi)
    agree = (pred_ref == pred_got).all(axis=1)
    bad = np.flatnonzero((diff > atol) | ~agree | ~np.isfinite(diff))
    mismatches = [
        {"index": int(i), "max_abs_diff": float(diff[i]),
         "torch_labels": [names[j] for j in np.flatnonzero(pred_ref[i])],
         "onnx_labels": [names[j] for j in np.flatnonzero(pred_got[i])]}
        for i in bad
    ]
    return ParityReport(n_texts=len(ref), atol=atol, max_abs_diff=float(diff.max()) if len(diff) else 0.0,
                        label_agreement=float(agree.mean()) if len(agree) else 1.0, mismatches=mismatches,
                        providers=providers, onnx_file=onnx_file, reference=reference)


def require_parity(report: ParityReport, what: str) -> None:
    if not report.passed:
        source = "the gate's evaluation" if report.reference == "evaluation" else "PyTorch"
        raise ExportParityError(
            f"{what}: ONNX and {source} disagree on {len(report.mismatches)} of {report.n_texts} texts "
            f"(max |logit diff| {report.max_abs_diff:.3g}, atol {report.atol:g})",
            failures=report.failures(),
            hint="the ONNX file was not logged; check the exporter/opset, or report the model architecture",
        )


def score_onnx(
    onnx_path: str | Path,
    tokenizer: Any,
    test_notes: Notes,
    forget: Sequence[str],
    settings: InferenceSettings,
    *,
    sess: Any = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """The ONNX file's own figures on held-out notes: forget F1, retain macro-F1, macro-F1, per class.

    Labels and multi-label come from the file's metadata_props (export_onnx writes them); predictions
    use steuops.metrics' thresholds (logit > 0 multi-label, argmax single-label).
    """
    meta = metadata(onnx_path)
    if META_LABELS not in meta:
        raise ModelError(f"{Path(onnx_path).name}: no {META_LABELS} in its metadata_props",
                         hint="export it with steuops.export.export_onnx")
    labels, multi = json.loads(meta[META_LABELS]), json.loads(meta.get(META_MULTI_LABEL, "true"))
    with onnx_run_errors(onnx_path):
        sess = sess or session(onnx_path)
        got = ort_logits(sess, tokenizer, list(test_notes.texts), batch_size=batch_size, settings=settings)
    return score_logits(got, test_notes, labels, multi, forget, settings=settings,
                        file=Path(onnx_path).name, providers=list(sess.get_providers()))


def score_logits(got: np.ndarray, test_notes: Notes, labels: Sequence[str], multi_label: bool,
                 forget: Sequence[str], *, settings: InferenceSettings, file: str,
                 providers: list[str]) -> dict[str, Any]:
    """JSON-able held-out scores of logits `got` (text-free: figures and counts only)."""
    from steuops import metrics, modeling

    labels = list(labels)
    result = metrics.scores(test_notes.multi_hot(labels), modeling.predict(got, multi_label), labels, list(forget))
    return {"file": file, "forget_f1": result.forget_f1, "retain_macro_f1": result.retain_macro_f1,
            "macro_f1": result.macro_f1, "per_class_f1": result.per_class_f1,
            "forget_f1_per_class": result.forget_f1_per_class, "n_test": len(test_notes), "forget": list(forget),
            "inference": settings.to_dict(), "providers": providers}


def agreement(torch_eval: Any, onnx_eval: dict[str, Any], tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """Per ONNX file and figure, |ONNX - PyTorch| on the held-out notes, and whether all are <= tolerance.

    torch_eval: the PyTorch figures (an Evaluation, its to_dict(), its `after` part, or a Scores);
    onnx_eval: one score_onnx() dict, or {file: score_onnx() dict} (ExportResult.scores).
    """
    ref = _torch_figures(torch_eval)
    runs = {onnx_eval.get("file", MODEL_FILE): onnx_eval} if "forget_f1" in onnx_eval else dict(onnx_eval)
    if not runs:
        raise ModelError("no ONNX scores to compare", hint="pass held-out notes to the export")
    diffs = {name: {key: abs(float(got[key]) - ref[key]) for key in SCORED_FIGURES} for name, got in runs.items()}
    worst = max(d for per in diffs.values() for d in per.values())
    passed = all(d <= tolerance for per in diffs.values() for d in per.values())  # NaN fails
    return {"tolerance": tolerance, "torch": ref, "onnx": {n: {k: float(g[k]) for k in SCORED_FIGURES}
                                                           for n, g in runs.items()},
            "abs_diff": diffs, "max_abs_diff": worst, "passed": passed}


def require_agreement(torch_eval: Any, onnx_eval: dict[str, Any], tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """agreement(), or OnnxScoreMismatch (exit 1) listing every figure that differs by more than `tolerance`."""
    result = agreement(torch_eval, onnx_eval, tolerance)
    if result["passed"]:
        return result
    failures = [f"{name}: {key} onnx {result['onnx'][name][key]:.4f} vs torch {result['torch'][key]:.4f}"
                for name, per in result["abs_diff"].items() for key, d in per.items() if not d <= tolerance]
    raise OnnxScoreMismatch(
        f"the ONNX export scores differently from the evaluated PyTorch model on the held-out notes: "
        f"{len(failures)} figure(s) differ by more than {tolerance:g} F1 (max {result['max_abs_diff']:.4f})",
        failures=failures,
        hint="the served model would not be the gated one; do not promote it. Check that export and evaluation "
             "used the same inference settings, and the device/precision of the evaluation",
    )


def _torch_figures(torch_eval: Any) -> dict[str, float]:
    data = torch_eval.to_dict() if hasattr(torch_eval, "to_dict") else torch_eval
    if not isinstance(data, dict):
        data = asdict(data)  # a metrics.Scores
    data = data.get("after", data)
    missing = [k for k in SCORED_FIGURES if k not in data]
    if missing:
        raise ModelError(f"PyTorch figures lack {', '.join(missing)}", hint="pass metrics.evaluate(...).to_dict()")
    return {k: float(data[k]) for k in SCORED_FIGURES}
