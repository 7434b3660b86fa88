"""ONNX export of a sequence classifier, with parity checks against PyTorch.

`export_onnx` writes one self-contained .onnx file (dynamic batch and sequence axes);
`check_parity` compares ONNX Runtime with PyTorch on held-out texts and lists every
mismatch; `optimize` applies ONNX Runtime's transformer fusions and makes an fp16 variant;
`export_version` does all of it for a registered version and logs the files back on it.

No mlflow here: `export_version` receives a Registry object (engine-path rule).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import env  # noqa: F401  (telemetry off before heavy imports)
from steuops.errors import ExportParityError, ModelError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
OPTIMIZED_FILE = "model.opt.onnx"
FP16_FILE = "model.fp16.onnx"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "manifest.json"
ARTIFACT_PATH = "onnx"
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu")
EXPORTER_KEY = "steuops.exporter"
FP32_ATOL = 1e-4
OPTIMIZED_ATOL = 1e-3  # fusions reorder float sums
FP16_ATOL = 5e-2  # half precision: ~3 significant digits


# ---------------------------------------------------------------- reports


@dataclass
class ParityReport:
    """PyTorch vs ONNX Runtime logits on the same texts. `mismatches` lists every bad text."""

    n_texts: int
    atol: float
    max_abs_diff: float
    label_agreement: float
    mismatches: list[dict[str, Any]]
    providers: list[str]
    onnx_file: str

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


@dataclass
class OptimizeResult:
    optimized: Path
    fp16: Path | None
    fused_ops: dict[str, int]
    fp16_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimized": str(self.optimized),
            "fp16": str(self.fp16) if self.fp16 else None,
            "fused_ops": self.fused_ops,
            "fp16_error": self.fp16_error,
        }


@dataclass
class ExportResult:
    name: str
    version: str
    out_dir: Path | None  # None when export_version worked in a temporary folder (the files are on the version)
    files: dict[str, str]  # file name -> sha256
    onnx_sha256: str
    exporter: str
    fused_ops: dict[str, int]
    parity: dict[str, dict[str, Any]]  # "fp32" / "optimized" / "fp16" -> ParityReport.to_dict() or {"skipped": why}
    forgotten: list[str]
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir) if self.out_dir else None
        return out


# ---------------------------------------------------------------- export


def input_names(model: nn.Module) -> list[str]:
    """The ONNX inputs: input_ids, attention_mask, and token_type_ids when forward takes them."""
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    missing = [n for n in names if n not in params]
    if missing:
        raise ModelError(f"{type(model).__name__}.forward lacks {', '.join(missing)}",
                         hint="export supports transformers sequence classifiers")
    if "token_type_ids" in params:
        names.append("token_type_ids")
    return names


def _wrapper(model: nn.Module, names: list[str]):
    """A module whose positional inputs are exactly `names` and whose output is the logits tensor."""
    from torch import nn

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if "token_type_ids" in names:
                kwargs["token_type_ids"] = token_type_ids
            return self.model(**kwargs).logits

    return Logits().eval()


def _sample_inputs(model: nn.Module, names: list[str], batch: int = 2, length: int = 16):
    """Dummy tensors for tracing; batch and length > 1 so that no axis is specialised to 1."""
    import torch

    vocab = int(getattr(model.config, "vocab_size", 100))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(vocab, 6), (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length // 2 :] = 0
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}
    return tuple(tensors[n] for n in names)


def export_onnx(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    opset: int | None = None,
    max_length: int = 256,
    file_name: str = MODEL_FILE,
) -> Path:
    """Export `model` to one self-contained ONNX file with dynamic batch and sequence axes.

    Tries torch's default (dynamo) exporter, falls back to the legacy TorchScript exporter only
    when that fails; the exporter used is stored in the file's metadata (`exporter_of`).
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    model = model.to("cpu").float().eval()
    names = input_names(model)
    wrapper = _wrapper(model, names)
    args = _sample_inputs(model, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        try:
            # torch warns that torchvision (not a dependency) is absent, once per process; not the user's concern
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
            exporter = _export_dynamo(wrapper, args, names, path, opset)
        except Exception as exc:  # noqa: BLE001  (any dynamo failure: fall back, and say so)
            log.warning("dynamo ONNX export failed (%s: %s); using the legacy exporter", type(exc).__name__, exc)
            path.unlink(missing_ok=True)
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=opset or 17, dynamo=False)
            exporter = "torchscript"
    _stamp(path, {EXPORTER_KEY: exporter, "steuops.max_length": str(max_length),
                  "steuops.inputs": ",".join(names)})
    return path


def _export_dynamo(wrapper, args, names: list[str], path: Path, opset: int | None) -> str:
    import torch
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=4096), Dim("sequence", min=1, max=_max_positions(wrapper.model))
    shapes = {n: {0: batch, 1: seq} for n in names}
    kwargs: dict[str, Any] = {}
    if opset:
        kwargs["opset_version"] = opset
    program = torch.onnx.export(wrapper, args, input_names=names, output_names=["logits"], dynamic_shapes=shapes,
                                dynamo=True, external_data=False, optimize=True, verbose=False, **kwargs)
    program.save(str(path), external_data=False)
    return "dynamo"


def _max_positions(model: nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 512))


def _stamp(path: Path, props: dict[str, str]) -> None:
    """Write metadata_props into the ONNX file, keeping it a single file."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path), save_as_external_data=False)
    stray = path.with_name(path.name + ".data")
    stray.unlink(missing_ok=True)


def metadata(onnx_path: str | Path) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def exporter_of(onnx_path: str | Path) -> str:
    """'dynamo' or 'torchscript': which torch exporter wrote the file."""
    return metadata(onnx_path).get(EXPORTER_KEY, "unknown")


# ---------------------------------------------------------------- runtime


def session(onnx_path: str | Path, *, device: str = "auto", threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime session with explicit providers: CUDA when a GPU is there, else CPU.

    The available-providers list lies (onnxruntime-gpu lists CUDA without a GPU), so the
    session's own get_providers() is checked: an explicit device="cuda" that fell back is an
    error; "auto" falls back to a CPU session.
    """
    import onnxruntime as ort

    want_cuda = _cuda_available() if device == "auto" else device == "cuda"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:  # idle ORT threads busy-wait by default, stealing CPU from anything else in the process
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if want_cuda:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        if "CUDAExecutionProvider" in sess.get_providers():
            return sess
        if device == "cuda":
            raise ModelError(f"{onnx_path}: ONNX Runtime did not start its CUDA provider (got {sess.get_providers()})",
                             hint="check the CUDA libraries, or run on CPU")
        log.warning("CUDA provider did not start; serving on CPU")
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def _cuda_available() -> bool:
    """torch's view when torch is installed (the serving image may lack it), else whether a GPU is visible."""
    try:
        import torch
    except ImportError:
        import os

        return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/dxg")
    return bool(torch.cuda.is_available())


def ort_logits(sess, tokenizer, texts: Sequence[str], *, batch_size: int = 32, max_length: int = 256) -> np.ndarray:
    """(n, C) float32 logits from an ONNX Runtime session."""
    names = [i.name for i in sess.get_inputs()]
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        feed = {n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(enc["input_ids"], np.int64)
                for n in names}
        out.append(np.asarray(sess.run(["logits"], feed)[0], dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def check_parity(
    model: nn.Module,
    tokenizer: Any,
    onnx_path: str | Path,
    texts: Sequence[str],
    *,
    atol: float = FP32_ATOL,
    max_length: int = 256,
    batch_size: int = 16,
    sess: Any = None,
) -> ParityReport:
    """Compare PyTorch (fp32, CPU) and ONNX Runtime logits text by text; every mismatch is listed.

    A text mismatches when any logit differs by more than `atol` or its predicted labels differ.
    """
    from steuops import modeling

    if not texts:
        raise ModelError("parity check needs at least one text", hint="pass held-out notes as check texts")
    import torch

    model = model.to("cpu").float().eval()
    ref = modeling.logits(model, tokenizer, list(texts), batch_size=batch_size, max_length=max_length,
                          device=torch.device("cpu"))
    sess = sess or session(onnx_path)
    got = ort_logits(sess, tokenizer, list(texts), batch_size=batch_size, max_length=max_length)
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
    return ParityReport(n_texts=len(texts), atol=atol, max_abs_diff=float(diff.max()) if len(diff) else 0.0,
                        label_agreement=float(agree.mean()), mismatches=mismatches,
                        providers=list(sess.get_providers()), onnx_file=str(onnx_path))


def require_parity(report: ParityReport, what: str) -> None:
    if not report.passed:
        raise ExportParityError(
            f"{what}: ONNX and PyTorch disagree on {len(report.mismatches)} of {report.n_texts} texts "
            f"(max |logit diff| {report.max_abs_diff:.3g}, atol {report.atol:g})",
            failures=report.failures(),
            hint="the ONNX file was not logged; check the exporter/opset, or report the model architecture",
        )


# ---------------------------------------------------------------- optimisation


def optimize(
    onnx_path: str | Path,
    *,
    num_heads: int,
    hidden_size: int,
    out_dir: str | Path | None = None,
    fp16: bool = True,
    use_gpu: bool = False,
) -> OptimizeResult:
    """ONNX Runtime's transformer optimizer (model_type "bert"); fp16 copy with float32 inputs/outputs.

    The optimizer's Attention patterns match only TorchScript-exported eager attention, not the
    dynamo exporter's graph (measured: 0 Attention nodes). So the dynamo graph first goes through
    onnxscript's ORT fusions (the rewriter built for dynamo graphs: Attention, SkipLayerNorm,
    BiasGelu), then through optimize_model. Fused ops that appear are counted (`fused_ops`).
    opt_level 1 keeps the graph provider-independent.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    src = Path(onnx_path)
    out = Path(out_dir) if out_dir else src.parent
    out.mkdir(parents=True, exist_ok=True)
    proto = _onnxscript_fusions(src)
    opt = optimize_model(proto if proto is not None else str(src), model_type="bert", num_heads=num_heads,
                         hidden_size=hidden_size, opt_level=1 if proto is None else 0, use_gpu=use_gpu)
    opt_path = out / OPTIMIZED_FILE
    opt.save_model_to_file(str(opt_path), use_external_data_format=False)
    fused = fused_op_counts(opt_path)
    fp16_path: Path | None = None
    error: str | None = None
    if fp16:
        try:
            opt.convert_float_to_float16(keep_io_types=True)
            fp16_path = out / FP16_FILE
            opt.save_model_to_file(str(fp16_path), use_external_data_format=False)
        except Exception as exc:  # noqa: BLE001  (fp16 is an extra; the fp32 files stand)
            error = f"{type(exc).__name__}: {exc}"
            log.warning("fp16 conversion failed: %s", error)
    return OptimizeResult(optimized=opt_path, fp16=fp16_path, fused_ops=fused, fp16_error=error)


def _onnxscript_fusions(src: Path):
    """The dynamo graph with onnxscript's ORT fusions applied (a ModelProto), or None when they fail."""
    try:
        import onnx_ir as ir
        from onnxscript.rewriter import ort_fusions

        model, _stats = ort_fusions.optimize_for_ort(ir.load(str(src)))
        return ir.serde.serialize_model(model)
    except Exception as exc:  # noqa: BLE001  (fall back to the ORT optimizer alone)
        log.warning("onnxscript ORT fusions failed (%s: %s); ORT optimizer only", type(exc).__name__, exc)
        return None


def fused_op_counts(onnx_path: str | Path) -> dict[str, int]:
    """How many Attention / MultiHeadAttention / SkipLayerNormalization / FastGelu / BiasGelu nodes."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    counts = dict.fromkeys(FUSED_OPS, 0)
    for node in proto.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


def heads_and_hidden(model: nn.Module) -> tuple[int, int]:
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)
    if not heads or not hidden:
        raise ModelError(f"{type(model).__name__}: config lacks attention heads / hidden size")
    return int(heads), int(hidden)


# ---------------------------------------------------------------- a registered version


def export_version(
    registry: Any,
    ref: Any,
    *,
    out_dir: str | Path | None = None,
    check_texts: Sequence[str] | None = None,
    max_length: int = 256,
) -> ExportResult:
    """Export a registered version: ONNX + optimised + fp16, parity-checked, logged under onnx/.

    Raises ExportParityError (nothing logged) when the fp32 or optimised file disagrees with
    PyTorch. Sets tags steuops.onnx_sha256 (of model.onnx), steuops.onnx_exporter and
    steuops.onnx_parity_max_diff on the version.
    """
    loaded = registry.load(ref)
    tags = dict(loaded.tags or {})
    with tempfile.TemporaryDirectory(prefix="steuops-onnx-") as tmp:  # removed after logging unless out_dir
        work = Path(out_dir) if out_dir else Path(tmp)
        result = write_export(loaded.model, loaded.tokenizer, work, name=ref.name, version=str(ref.version),
                              forgotten=forgotten_classes(tags), lineage=lineage_of(registry, ref, tags),
                              check_texts=check_texts, max_length=max_length)
        registry.log_artifacts(ref, {p.name: p for p in sorted(work.iterdir()) if p.is_file()}, ARTIFACT_PATH)
    if not out_dir:
        result.out_dir = None
    result.tags = {"steuops.onnx_sha256": result.onnx_sha256, "steuops.onnx_exporter": result.exporter,
                   "steuops.onnx_parity_max_diff": f"{result.parity['fp32']['max_abs_diff']:.3g}"}
    registry.set_tags(ref, result.tags)
    return result


def write_export(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    forgotten: Sequence[str] = (),
    lineage: list[dict[str, Any]] | None = None,
    check_texts: Sequence[str] | None = None,
    max_length: int = 256,
) -> ExportResult:
    """The folder a server needs, parity-checked: onnx files, tokenizer, labels.json, manifest.json."""
    work = Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    texts = list(check_texts) if check_texts else default_check_texts()
    _files, parity, fused, exporter = build_onnx_dir(model, tokenizer, work, texts, max_length=max_length)
    forgotten = list(forgotten)
    _write_json(work / LABELS_FILE, labels_doc(model, forgotten))
    shas = {p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"name": name, "version": version, "files": shas, "exporter": exporter, "fused_ops": fused,
                "forgotten": forgotten, "lineage": lineage or [{"version": version, "forgotten": forgotten}],
                "max_length": max_length, "parity": {k: _brief(v) for k, v in parity.items()}}
    _write_json(work / MANIFEST_FILE, manifest)
    return ExportResult(name=name, version=version, out_dir=work, files=shas, onnx_sha256=shas[MODEL_FILE],
                        exporter=exporter, fused_ops=fused, parity=parity, forgotten=forgotten)


def build_onnx_dir(
    model: nn.Module, tokenizer: Any, out_dir: Path, texts: Sequence[str], *, max_length: int = 256
) -> tuple[list[Path], dict[str, dict[str, Any]], dict[str, int], str]:
    """Everything the server needs in one folder, parity-checked: onnx files, tokenizer, labels.json."""
    path = export_onnx(model, tokenizer, out_dir, max_length=max_length)
    parity: dict[str, dict[str, Any]] = {}
    fp32 = check_parity(model, tokenizer, path, texts, atol=FP32_ATOL, max_length=max_length)
    require_parity(fp32, MODEL_FILE)
    parity["fp32"] = fp32.to_dict()
    heads, hidden = heads_and_hidden(model)
    opt = optimize(path, num_heads=heads, hidden_size=hidden, out_dir=out_dir)
    opt_report = check_parity(model, tokenizer, opt.optimized, texts, atol=OPTIMIZED_ATOL, max_length=max_length)
    require_parity(opt_report, OPTIMIZED_FILE)
    parity["optimized"] = opt_report.to_dict()
    parity["fp16"] = _fp16_parity(model, tokenizer, opt, texts, max_length)
    tokenizer.save_pretrained(str(out_dir))
    files = [p for p in (path, opt.optimized, opt.fp16) if p]
    return files, parity, opt.fused_ops, exporter_of(path)


def _fp16_parity(model, tokenizer, opt: OptimizeResult, texts, max_length: int) -> dict[str, Any]:
    """fp16 is checked where ONNX Runtime can run it; a file that disagrees is removed, not shipped."""
    if opt.fp16 is None:
        return {"skipped": opt.fp16_error or "fp16 not requested"}
    try:
        sess = session(opt.fp16)
    except Exception as exc:  # noqa: BLE001  (CPU kernels may lack fp16 ops; the GPU path still wants the file)
        return {"skipped": f"ONNX Runtime cannot run the fp16 model here: {type(exc).__name__}: {exc}"[:500]}
    report = check_parity(model, tokenizer, opt.fp16, texts, atol=FP16_ATOL, max_length=max_length, sess=sess)
    if not report.passed:
        log.warning("fp16 model disagrees with PyTorch on %d texts; not shipped", len(report.mismatches))
        opt.fp16.unlink(missing_ok=True)
        opt.fp16 = None
    return report.to_dict()


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("skipped", "n_texts", "atol", "max_abs_diff", "label_agreement", "passed", "providers")
    out = {k: report[k] for k in keep if k in report}
    if "mismatches" in report:
        out["n_mismatches"] = len(report["mismatches"])
    return out


def labels_doc(model: nn.Module, forgotten: Sequence[str]) -> dict[str, Any]:
    from steuops import modeling

    names = modeling.label_names(model)
    return {"labels": names, "id2label": {str(i): n for i, n in enumerate(names)},
            "multi_label": modeling.is_multi_label(model), "forgotten": [c for c in forgotten if c in names]}


def forgotten_classes(tags: dict[str, str]) -> list[str]:
    """The steuops.forgotten tag: a JSON list, or a comma-separated string."""
    raw = (tags or {}).get("steuops.forgotten", "")
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw.split(",")
    if isinstance(value, str):
        value = [value]
    return [str(v).strip() for v in value if str(v).strip()]


def lineage_of(registry: Any, ref: Any, tags: dict[str, str], limit: int = 50) -> list[dict[str, Any]]:
    """This version and its parents, newest first, following steuops.parent_version tags."""
    chain = [{"version": str(ref.version), "forgotten": forgotten_classes(tags), "method": tags.get("steuops.method")}]
    parent = tags.get("steuops.parent_version")
    seen = {str(ref.version)}
    while parent and parent not in seen and len(chain) < limit:
        seen.add(parent)
        ptags = _version_tags(registry, type(ref)(ref.name, parent))
        chain.append({"version": parent, "forgotten": forgotten_classes(ptags), "method": ptags.get("steuops.method")})
        parent = ptags.get("steuops.parent_version")
    return chain


def _version_tags(registry: Any, ref: Any) -> dict[str, str]:
    """Tags of one version without loading its weights."""
    try:
        return dict(registry.tags(ref) or {})
    except Exception as exc:  # noqa: BLE001  (lineage is informative; a registry hiccup must not fail export)
        log.warning("could not read tags of %s: %s", ref, exc)
    return {}


def default_check_texts(n: int = 64) -> list[str]:
    """Held-out notes for parity when the caller gives none: fresh synthetic notes (a seed unused in training)."""
    try:
        from steuops.demo.notes import generate
    except ImportError:
        generate = None
    if generate is not None:
        return list(generate(n=n, seed=987_654).texts)
    base = ["patient admitted with fever and hypotension, lactate elevated, started on broad spectrum antibiotics",
            "chest x-ray shows right lower lobe consolidation; productive cough and crackles",
            "worsening dyspnea, bilateral edema, reduced ejection fraction on echo, diuresed",
            "creatinine rose from 1.0 to 2.4 after contrast; urine output low",
            "wheezing, increased sputum, home oxygen, treated with nebulisers and steroids",
            "glucose 540, anion gap acidosis, ketones positive, insulin drip started"]
    return [base[i % len(base)] + (" stable on discharge." * (i % 4)) for i in range(n)]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

