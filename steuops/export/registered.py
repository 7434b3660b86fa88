"""A registered version: `export_version` loads it, exports it at the settings recorded on it, logs the folder under
onnx/ and tags the version with the files' hash, parity and held-out figures. No mlflow here: it receives a Registry
object (engine-path rule)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import lineage
from steuops.errors import ConfigError
from steuops.export.checks import SCORE_TOLERANCE, agreement, require_agreement
from steuops.export.folder import MANIFEST_FILE, ExportResult, write_export
from steuops.export.graph import served_file
from steuops.export.runtime import settings_for
from steuops.inference import InferenceSettings

if TYPE_CHECKING:
    from steuops.data import Notes

log = logging.getLogger(__name__)


ARTIFACT_PATH = lineage.ONNX_DIR


def export_version(
    registry: Any,
    ref: Any,
    *,
    out_dir: str | Path | None = None,
    check_texts: Sequence[str] | None = None,
    max_length: int | None = None,
    settings: InferenceSettings | None = None,
    held_out: Notes | None = None,
    torch_eval: Any = None,
    tolerance: float = SCORE_TOLERANCE,
    fp16: bool | None = None,
    evaluated: np.ndarray | None = None,
    rescore: bool = False,
) -> ExportResult:
    """Export a registered version: ONNX + optimised + fp16, parity-checked, logged under onnx/.

    Runs at the version's inference settings (version_settings). With `held_out` notes, parity is
    checked on them and every shipped ONNX file is scored on them; with `torch_eval` (the evaluation
    the gate read) as well, an ONNX file scoring differently beyond `tolerance` raises
    OnnxScoreMismatch: its figures are tagged on the version, its files are not logged.
    Raises ExportParityError (nothing logged) when the fp32 or optimised file disagrees with PyTorch.
    `fp16` None: model.fp16.onnx only where a CUDA device is visible (write_export).
    `evaluated`: the fp32 logits the gate scored on `held_out` (see write_export).
    A re-export whose served file comes out byte-identical to one the version's logged manifest records as
    scored on these same notes reuses those figures (see _FileCheck.reusable); `rescore` scores it again.
    Sets tags steuops.onnx_sha256 (of model.onnx), steuops.onnx_exporter, steuops.onnx_parity_max_diff,
    the settings' tags, and with held_out steuops.onnx_forget_f1 / steuops.onnx_retain_macro_f1 (of the file a CPU
    server serves: model.opt.onnx, else model.onnx).
    """
    loaded = registry.load(ref)
    tags = dict(loaded.tags or {})
    settings = version_settings(tags, loaded.tokenizer, max_length=max_length, settings=settings)
    earlier = None if rescore or held_out is None else logged_manifest(registry, ref)
    with tempfile.TemporaryDirectory(prefix="steuops-onnx-") as tmp:  # removed after logging unless out_dir
        work = Path(out_dir) if out_dir else Path(tmp)
        result = write_export(loaded.model, loaded.tokenizer, work, name=ref.name, version=str(ref.version),
                              forgotten=lineage.forgotten(tags, loaded.labels),
                              lineage=lineage_of(registry, ref, tags, loaded.labels),
                              check_texts=check_texts, settings=settings, held_out=held_out, fp16=fp16,
                              evaluated=evaluated, earlier=earlier)
        verdict = _check_agreement(registry, ref, result, torch_eval, tolerance)
        registry.log_artifacts(ref, {p.name: p for p in sorted(work.iterdir()) if p.is_file()}, lineage.ONNX_DIR)
    if not out_dir:
        result.out_dir = None
    result.tags = {lineage.ONNX_SHA: result.onnx_sha256, lineage.ONNX_EXPORTER: result.exporter,
                   lineage.ONNX_PARITY_MAX_DIFF: f"{result.parity['fp32']['max_abs_diff']:.3g}",
                   **settings.to_tags(), **_score_tags(result), **verdict}
    registry.set_tags(ref, result.tags)
    return result


def logged_manifest(registry: Any, ref: Any) -> dict[str, Any] | None:
    """The manifest.json of the export logged on the version, or None (never exported, or unreadable)."""
    path = f"{ARTIFACT_PATH}/{MANIFEST_FILE}"
    try:
        if path not in registry.artifact_names(ref, ARTIFACT_PATH):
            return None
        return registry.read_json_artifact(ref, path)
    except Exception as exc:  # noqa: BLE001  (an earlier export is an optimisation: without it, score again)
        log.warning("could not read the earlier export's manifest of %s (%s); scoring again", ref, type(exc).__name__)
        return None


def version_settings(tags: dict[str, str] | None, tokenizer: Any, *, max_length: int | None = None,
                     settings: InferenceSettings | None = None) -> InferenceSettings:
    """The settings to export a version at: the ones recorded on it (steuops.max_length/truncation_side tags),
    else `settings`, else `max_length` on the tokenizer's side, else the tokenizer's own.

    A caller asking for other settings than the recorded ones gets a ConfigError: the served model
    must be the evaluated one.
    """
    recorded = InferenceSettings.from_tags(tags)
    wanted = settings or (settings_for(tokenizer, max_length) if max_length else None)
    if recorded is None:
        return wanted or InferenceSettings.from_tokenizer(tokenizer)
    if wanted is not None and (wanted.max_length != recorded.max_length
                               or (settings is not None and settings != recorded)):
        raise ConfigError(
            f"the version was evaluated at max_length {recorded.max_length} ({recorded.truncation_side} truncation); "
            f"exporting it at max_length {wanted.max_length} ({wanted.truncation_side}) would serve another model",
            hint="omit --max-length: the export uses the version's recorded settings",
        )
    return recorded


def _check_agreement(registry: Any, ref: Any, result: ExportResult, torch_eval: Any,
                     tolerance: float) -> dict[str, str]:
    """The agreement tag; OnnxScoreMismatch (after tagging the figures on the version) when the scores differ."""
    if torch_eval is None or not result.scores:
        return {}
    result.agreement = agreement(torch_eval, result.scores, tolerance)
    if not result.agreement["passed"]:
        registry.set_tags(ref, {**_score_tags(result), lineage.ONNX_AGREEMENT: "failed"})
        require_agreement(torch_eval, result.scores, tolerance)  # raises OnnxScoreMismatch
    return {lineage.ONNX_AGREEMENT: "passed"}


def _score_tags(result: ExportResult) -> dict[str, str]:
    """ONNX figures of the file a CPU server serves on the held-out notes, as version tags (none without notes)."""
    main = result.scores.get(served_file(list(result.scores), gpu=False))
    if not main:
        return {}
    return {lineage.ONNX_FORGET_F1: f"{main['forget_f1']:.4f}", lineage.ONNX_RETAIN_F1: f"{main['retain_macro_f1']:.4f}"}


def lineage_of(registry: Any, ref: Any, tags: dict[str, str], labels: Sequence[str] | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
    """This version and its parents, newest first, following their parent-version tags."""
    record = lineage.VersionRecord.from_tags(tags, labels)
    chain = [{"version": str(ref.version), "forgotten": record.forgotten, "method": record.method}]
    parent, seen = record.parent_version, {str(ref.version)}
    while parent and parent not in seen and len(chain) < limit:
        seen.add(parent)
        above = lineage.VersionRecord.from_tags(_version_tags(registry, type(ref)(ref.name, parent)), labels)
        chain.append({"version": parent, "forgotten": above.forgotten, "method": above.method})
        parent = above.parent_version
    return chain


def _version_tags(registry: Any, ref: Any) -> dict[str, str]:
    """Tags of one version without loading its weights."""
    try:
        return dict(registry.tags(ref) or {})
    except Exception as exc:  # noqa: BLE001  (lineage is informative; a registry hiccup must not fail export)
        log.warning("could not read tags of %s: %s", ref, exc)
    return {}
