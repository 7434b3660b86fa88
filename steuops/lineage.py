"""What a registered version is: every steuops tag and artifact name, and a typed record of the tags.

The one place that knows the vocabulary a version carries in MLflow. `VersionRecord.from_tags` reads
a version's tags, `to_tags` writes them. List values (forgotten classes, artifact names) are JSON
lists, because hospital label names contain commas ("Sepsis, unspecified organism") and look like
numbers or JSON literals (`995.91`, `null`). Tags written before that were comma-joined; they are
still read, and where the model's labels are known a comma inside a label is put back together.
Pure Python: no heavy imports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

# ---- tag names on model versions (DESIGN.md's contract) ---------------------------------------------
PARENT = "steuops.parent_version"
FORGOTTEN = "steuops.forgotten"  # JSON list: every class this version no longer predicts
FORGET_REQUESTED = "steuops.forget_requested"  # JSON list: the classes this apply was asked to remove
METHOD = "steuops.method"
METHOD_CONFIG = "steuops.method_config"  # JSON of the options the version was made with
METHOD_CONFIG_FOR = "steuops.method_config_for"  # which method those options belong to
RETRAIN_CONFIG = "steuops.retrain_config"  # JSON: how to retrain this model without a class (the audit's reference)
POLICY = "steuops.policy"
POLICY_SHA = "steuops.policy_sha256"
COHORT_SHA = "steuops.cohort_sha256"
COHORT_ROWS = "steuops.cohort_rows"
GATE = "steuops.gate"  # "passed" / "rejected"
GATE_SHORT = "gate"  # the same verdict under a short name, for people filtering in the MLflow UI
VERSION = "steuops.version"  # the steuops release that made the version
FORGET_F1 = "steuops.forget_f1"
RETAIN_MACRO_F1 = "steuops.retain_macro_f1"
PARAMS_FRACTION = "steuops.params_fraction"
PRECISION = "steuops.precision"  # "bf16" / "fp32": what the method's training steps ran in (modeling.training_precision)
# Lifecycle: "incomplete" from registration until every artifact in REQUIRED is logged, then
# "complete"; a rerun that replaces a crashed one marks it "superseded". No tag: made before the tag (complete).
STATUS = "steuops.status"
REQUIRED = "steuops.required_artifacts"  # JSON list of artifact names (top-level files / folders)
SUPERSEDED_BY = "steuops.superseded_by"
STATUS_INCOMPLETE, STATUS_COMPLETE, STATUS_SUPERSEDED = "incomplete", "complete", "superseded"
# Inference settings every consumer (evaluation, export, parity, serving) uses.
MAX_LENGTH = "steuops.max_length"
TRUNCATION_SIDE = "steuops.truncation_side"
# The ONNX export of the version.
ONNX_SHA = "steuops.onnx_sha256"
ONNX_EXPORTER = "steuops.onnx_exporter"
ONNX_PARITY_MAX_DIFF = "steuops.onnx_parity_max_diff"
ONNX_FORGET_F1 = "steuops.onnx_forget_f1"
ONNX_RETAIN_F1 = "steuops.onnx_retain_macro_f1"
ONNX_AGREEMENT = "steuops.onnx_agreement"  # "passed" / "failed" against the evaluated PyTorch figures
# Rollbacks, written on both versions.
ROLLBACK_REASON = "steuops.rollback_reason"
ROLLED_BACK_AT = "steuops.rolled_back_at"
ROLLED_BACK_TO = "steuops.rolled_back_to"
RESTORED_AT = "steuops.restored_at"
RESTORED_FROM = "steuops.restored_from"
# Run tags, and the tags of a promotion lock (a registered model named <model>.steuops-lock.<alias>).
RUN_MODEL = "steuops.model"
LOCK_OWNER = "steuops.lock_owner"
LOCK_EXPIRES = "steuops.lock_expires"

# ---- metadata_props of every shipped .onnx file (lists JSON-encoded) ----------------------------------
META_NAME, META_VERSION = "steuops.name", "steuops.version"
META_LABELS, META_FORGOTTEN, META_MULTI_LABEL = "steuops.labels", "steuops.forgotten", "steuops.multi_label"
META_EXPORTER, META_INPUTS = "steuops.exporter", "steuops.inputs"
META_FIXED_LENGTH = "steuops.fixed_length"  # set when the graph runs at that one sequence length only

# ---- artifact names on a version's run ----------------------------------------------------------------
EVALUATION_FILE = "evaluation.json"
VALIDATION_FILE = "validation.json"
GATE_FILE = "gate.json"
APPLY_FILE = "apply.json"
SPLIT_FILE = "split.json"
AUDIT_FILE = "audit.json"
CONFUSION_FILE = "confusion.json"
# the edited model's fp32 logits on the held-out notes, as the gate scored them (numbers only; see pipeline.unlearn)
EVALUATION_LOGITS = "evaluation-logits.npz"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
GX_DIR = "gx"
EDIT_DIR = "edit"
EDIT_META = "edit/edit.json"
EDIT_WEIGHTS = "edit/edit.safetensors"
ONNX_DIR = "onnx"
DATASET_ARTIFACT = "dataset/notes.parquet"


# ---- list values --------------------------------------------------------------------------------------
def encode_list(values: Iterable[Any]) -> str:
    """A tag value for a list: JSON, non-ASCII kept readable in the MLflow UI."""
    return json.dumps([str(v) for v in values], ensure_ascii=False)


def decode_list(raw: str | None, known: Sequence[str] | None = None) -> list[str]:
    """The list a tag holds: a JSON list, or (tags written before JSON lists) comma-joined names.

    `known`: the model's label names; in the comma-joined form a label that itself contains commas
    is put back together (the longest known run of parts wins)."""
    text = (raw or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list):
            return [str(v) for v in value if v is not None and str(v).strip()]
    return _rejoin(text.split(","), set(known or ()))


def _rejoin(pieces: list[str], known: set[str]) -> list[str]:
    """Comma-split pieces, with runs that join back into a known label joined (longest run first)."""
    out, i = [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i + 1, -1) if ",".join(pieces[i:j]).strip() in known), i + 1)
        name = ",".join(pieces[i:j]).strip()
        if name:
            out.append(name)
        i = j
    return out


# ---- the record ---------------------------------------------------------------------------------------
def _tag(name: str, kind: str = "str", default: Any = None) -> Any:
    if kind in ("list", "json"):
        return field(default_factory=list if kind == "list" else dict, metadata={"tag": name, "kind": kind})
    return field(default=default, metadata={"tag": name, "kind": kind})


@dataclass
class VersionRecord:
    """A version's steuops tags, typed. Fields left None (or empty) are not written by `to_tags`;
    `extra` keeps every other tag, so `from_tags(t).to_tags()` round-trips."""

    parent_version: str | None = _tag(PARENT)
    forgotten: list[str] = _tag(FORGOTTEN, "list")
    forget_requested: list[str] = _tag(FORGET_REQUESTED, "list")
    method: str | None = _tag(METHOD)
    method_config: dict[str, Any] = _tag(METHOD_CONFIG, "json")
    method_config_for: str | None = _tag(METHOD_CONFIG_FOR)
    policy: str | None = _tag(POLICY)
    policy_sha256: str | None = _tag(POLICY_SHA)
    cohort_sha256: str | None = _tag(COHORT_SHA)
    cohort_rows: int | None = _tag(COHORT_ROWS, "int")
    gate: str | None = _tag(GATE)
    status: str | None = _tag(STATUS)
    required_artifacts: list[str] = _tag(REQUIRED, "list")
    superseded_by: str | None = _tag(SUPERSEDED_BY)
    steuops_version: str | None = _tag(VERSION)
    forget_f1: float | None = _tag(FORGET_F1, "float")
    retain_macro_f1: float | None = _tag(RETAIN_MACRO_F1, "float")
    params_fraction: float | None = _tag(PARAMS_FRACTION, "float")
    precision: str | None = _tag(PRECISION)
    onnx_sha256: str | None = _tag(ONNX_SHA)
    onnx_agreement: str | None = _tag(ONNX_AGREEMENT)
    rollback_reason: str | None = _tag(ROLLBACK_REASON)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any] | None, labels: Sequence[str] | None = None) -> VersionRecord:
        """`labels`: the model's label names, to read comma-joined lists written before JSON lists."""
        tags = dict(tags or {})
        values: dict[str, Any] = {}
        for f in _tag_fields():
            raw = tags.pop(f.metadata["tag"], None)
            if raw is not None:
                values[f.name] = _parse(str(raw), f.metadata["kind"], labels)
        tags.pop(GATE_SHORT, None)
        return cls(**values, extra={k: str(v) for k, v in tags.items()})

    def to_tags(self) -> dict[str, str]:
        out = dict(self.extra)
        for f in _tag_fields():
            value = getattr(self, f.name)
            if value is None or (f.metadata["kind"] in ("list", "json") and not value):
                continue
            out[f.metadata["tag"]] = _format(value, f.metadata["kind"])
        if self.gate is not None:
            out[GATE_SHORT] = self.gate
        return out

    @property
    def made_by_steuops(self) -> bool:
        """Versions `steuops apply` registered name their parent; base models do not."""
        return bool(self.parent_version)



def _tag_fields() -> list[Any]:
    return [f for f in fields(VersionRecord) if "tag" in f.metadata]


def _parse(raw: str, kind: str, labels: Sequence[str] | None) -> Any:
    if kind == "list":
        return decode_list(raw, labels)
    if kind == "json":
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    if kind in ("int", "float"):
        try:
            number = float(raw)
        except ValueError:
            return None
        return int(number) if kind == "int" else number
    return raw


def _format(value: Any, kind: str) -> str:
    if kind == "list":
        return encode_list(value)
    if kind == "json":
        return json.dumps(value, sort_keys=True)
    if kind == "float":
        return f"{float(value):.6g}"
    return str(value)


def forgotten(tags: Mapping[str, Any] | None, labels: Sequence[str] | None = None) -> list[str]:
    """The classes a version (by its tags) no longer predicts."""
    return decode_list(None if tags is None else tags.get(FORGOTTEN), labels)


def status(tags: Mapping[str, Any] | None) -> str:
    return str((tags or {}).get(STATUS) or STATUS_COMPLETE)
