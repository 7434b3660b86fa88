"""ONNX export of a sequence classifier, checked against the model it comes from.

- `graph`: `export_onnx` writes one self-contained .onnx file (dynamic batch and sequence axes) with its labels,
  settings and exporter in its metadata; `optimize` applies ONNX Runtime's transformer fusions and makes an fp16
  variant.
- `runtime`: ONNX Runtime sessions and logits (and PyTorch's, for comparison).
- `checks`: `check_parity` lists every text where ONNX Runtime and PyTorch disagree; `score_onnx` scores a file on
  held-out notes (forget F1 / retain macro-F1, the thresholds of steuops.metrics) and `require_agreement` refuses
  one that scores differently from the evaluated PyTorch model.
- `folder`: `write_export`, the folder a server needs, every file in it checked.
- `registered`: `export_version` does all of it for a registered version and logs the files back on it.

Every step runs at one `InferenceSettings` (max length + truncation side): the version's, the one it was evaluated
with (steuops.inference). The names below are the package's API; the modules are where they live.
"""

from __future__ import annotations

from steuops import env  # noqa: F401  (telemetry off before heavy imports)
from steuops.export.checks import (
    FP16_ATOL,
    FP32_ATOL,
    OPTIMIZED_ATOL,
    SCORE_TOLERANCE,
    SCORED_FIGURES,
    OnnxScoreMismatch,
    ParityReport,
    agreement,
    check_parity,
    compare_logits,
    require_agreement,
    require_parity,
    score_logits,
    score_onnx,
)
from steuops.export.folder import (
    FALLBACK_PARITY_TEXTS,
    LABELS_FILE,
    MANIFEST_FILE,
    PARITY_TEXTS,
    ExportResult,
    OnnxBuild,
    build_onnx_dir,
    default_check_texts,
    labels_doc,
    sha256_file,
    write_export,
)
from steuops.export.graph import (
    EXPORTER_KEY,
    FP16_FILE,
    FUSED_OPS,
    META_FORGOTTEN,
    META_LABELS,
    META_MULTI_LABEL,
    META_NAME,
    META_VERSION,
    MODEL_FILE,
    NOT_OPTIMIZED,
    OPTIMIZED_FILE,
    OptimizeResult,
    export_onnx,
    exporter_of,
    fused_op_counts,
    heads_and_hidden,
    input_names,
    metadata,
    optimize,
    served_file,
)
from steuops.export.registered import ARTIFACT_PATH, export_version, lineage_of, logged_manifest, version_settings
from steuops.export.runtime import (
    OnnxRunError,
    cuda_available,
    onnx_run_errors,
    ort_logits,
    session,
    settings_for,
    torch_logits,
)

__all__ = [
    "ARTIFACT_PATH", "EXPORTER_KEY", "FALLBACK_PARITY_TEXTS", "FP16_ATOL", "FP16_FILE", "FP32_ATOL", "FUSED_OPS",
    "LABELS_FILE", "MANIFEST_FILE", "META_FORGOTTEN", "META_LABELS", "META_MULTI_LABEL", "META_NAME", "META_VERSION",
    "MODEL_FILE", "NOT_OPTIMIZED", "OPTIMIZED_ATOL", "OPTIMIZED_FILE", "PARITY_TEXTS", "SCORED_FIGURES", "SCORE_TOLERANCE",
    "ExportResult", "OnnxBuild", "OnnxRunError", "OnnxScoreMismatch", "OptimizeResult", "ParityReport", "agreement",
    "build_onnx_dir", "check_parity", "compare_logits", "cuda_available", "default_check_texts", "export_onnx",
    "export_version", "exporter_of", "fused_op_counts", "heads_and_hidden", "input_names", "labels_doc",
    "lineage_of", "logged_manifest", "metadata", "onnx_run_errors", "optimize", "ort_logits", "require_agreement",
    "require_parity", "score_logits", "score_onnx", "served_file", "session", "settings_for", "sha256_file",
    "torch_logits", "version_settings", "write_export",
]
