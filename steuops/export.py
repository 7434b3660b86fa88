"""ONNX export of a sequence classifier, with parity checks against PyTorch.

`export_onnx` writes one self-contained .onnx file (dynamic batch and sequence axes);
`check_parity` compares ONNX Runtime with PyTorch on held-out texts and lists every
mismatch; `score_onnx` scores an ONNX file on held-out notes (forget F1 / retain macro-F1, the
thresholds of steuops.metrics) and `require_agreement` refuses one that scores differently from
the evaluated PyTorch model; `optimize` applies ONNX Runtime's transformer fusions and makes an
fp16 variant; `export_version` does all of it for a registered version and logs the files back on it.

Every step runs at one `InferenceSettings` (max length + truncation side): the version's, the
one it was evaluated with (steuops.inference).

No mlflow here: `export_version` receives a Registry object (engine-path rule).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import env, lineage  # noqa: F401  (env: telemetry off before heavy imports)
from steuops.errors import ConfigError, ExportParityError, ModelError, SteuopsError
from steuops.inference import DEFAULT_MAX_LENGTH, InferenceSettings

if TYPE_CHECKING:
    from torch import nn

    from steuops.data import Notes

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
OPTIMIZED_FILE = "model.opt.onnx"
FP16_FILE = "model.fp16.onnx"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "manifest.json"
ARTIFACT_PATH = lineage.ONNX_DIR
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu")
EXPORTER_KEY = lineage.META_EXPORTER
FP32_ATOL = 1e-4
OPTIMIZED_ATOL = 1e-3  # fusions reorder float sums
FP16_ATOL = 5e-2  # half precision: ~3 significant digits
SCORE_TOLERANCE = 0.01  # |F1 difference| ONNX vs PyTorch on the held-out notes that still counts as agreement
# Held-out notes whose logits every shipped file must match PyTorch's on (the first ones). Why a cap: PyTorch over
# 1,200 notes was 12 s of the demo's export on 2 cores. The file a server serves is also scored on every held-out
# note (and must agree with the gate's figures); the others are fallbacks, parity-checked only (each full ONNX
# pass over the demo's 1,200 notes costs ~10 s on 2 cores).
PARITY_TEXTS = 256
# model.onnx is the optimiser's input; an export always ships the optimised file too (its parity is required), and
# servers pick that one, so model.onnx is checked on the first 64 parity texts only (~3 s less on 2 cores)
FALLBACK_PARITY_TEXTS = 64
SCORED_FIGURES = ("forget_f1", "retain_macro_f1")
# metadata_props of every shipped .onnx file (lists are JSON-encoded); the names live in steuops.lineage
META_NAME, META_VERSION = lineage.META_NAME, lineage.META_VERSION
META_LABELS, META_FORGOTTEN, META_MULTI_LABEL = lineage.META_LABELS, lineage.META_FORGOTTEN, lineage.META_MULTI_LABEL


class OnnxScoreMismatch(ExportParityError):
    """The ONNX file scores differently from the evaluated PyTorch model on the held-out notes (exit 1)."""


class OnnxRunError(ExportParityError):
    """ONNX Runtime cannot load or run the exported file on the check texts (exit 1): a graph that kept a shape
    from the export's sample input, as Longformer's windowed attention does, fails on notes of other lengths."""


# ---------------------------------------------------------------- reports


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
    inference: dict[str, Any] = field(default_factory=dict)  # InferenceSettings.to_dict() of every step
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # onnx file -> score_onnx() on held-out notes
    agreement: dict[str, Any] = field(default_factory=dict)  # agreement() with the evaluated PyTorch figures

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir) if self.out_dir else None
        return out


# ---------------------------------------------------------------- export


def input_names(model: nn.Module) -> list[str]:
    """The ONNX inputs: input_ids, attention_mask, and token_type_ids when forward takes them and the model has
    more than one type (RoBERTa's forward takes them but has one type: the graph, like its tokenizer's output,
    then goes without)."""
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    missing = [n for n in names if n not in params]
    if missing:
        raise ModelError(f"{type(model).__name__}.forward lacks {', '.join(missing)}",
                         hint="export supports transformers sequence classifiers")
    if "token_type_ids" in params and int(getattr(model.config, "type_vocab_size", 2) or 0) > 1:
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
    max_length: int = DEFAULT_MAX_LENGTH,
    file_name: str = MODEL_FILE,
    settings: InferenceSettings | None = None,
    metadata: dict[str, str] | None = None,
    exporter: str | None = None,
) -> Path:
    """Export `model` to one self-contained ONNX file with dynamic batch and sequence axes.

    Uses the TorchScript exporter on eager attention first: that is the graph ONNX Runtime's transformer
    optimizer was written for (it fuses attention there, and finds none in the dynamo graph). On the 2-core EPYC,
    MiniLM's export and optimisation take 6.0 s against 18.1 s for dynamo (whose graph needs onnxscript's fusions
    first), and the optimised files serve alike (bench/results/export-cpu-2026-11-29.json). Dynamo runs only when that
    fails (torch has deprecated the TorchScript one; `exporter_of` says which made the file). The file's metadata
    carries the exporter, the inference settings (`settings`, else `max_length` + the tokenizer's truncation side),
    the labels (JSON list) and whether they are multi-label, and `metadata` (more metadata_props).
    `exporter`: "torchscript" or "dynamo" to use that one only (a failure then raises); None: as above.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    model = model.to("cpu").float().eval()
    names = input_names(model)
    args = _sample_inputs(model, names)
    settings = settings or settings_for(tokenizer, max_length)
    props = {lineage.META_INPUTS: lineage.encode_list(names), **settings.to_tags(), **_label_props(model),
             **(metadata or {})}
    if exporter not in (None, "torchscript", "dynamo"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}", hint="use torchscript or dynamo (or leave it unset)")
    with torch.no_grad():
        if exporter != "dynamo":
            try:
                _export_torchscript(model, args, names, path, opset, {EXPORTER_KEY: "torchscript", **props})
                return path
            except Exception as exc:  # noqa: BLE001  (any TorchScript failure: the dynamo exporter, and say so)
                if exporter:
                    raise
                log.warning("TorchScript ONNX export failed (%s: %s); using the dynamo exporter",
                            type(exc).__name__, exc)
                path.unlink(missing_ok=True)
        # torch warns that torchvision (not a dependency) is absent, once per process; not the user's concern
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        _export_dynamo(_wrapper(model, names), args, names, path, opset, {EXPORTER_KEY: "dynamo", **props})
    return path


def _export_torchscript(model: nn.Module, args, names: list[str], path: Path, opset: int | None,
                        props: dict[str, str]) -> None:
    """The TorchScript exporter, on a copy of `model` with eager attention (the pattern ORT's optimizer fuses; a
    model without an eager implementation keeps its own). Exported into memory, so the file is written once."""
    import io

    import onnx
    import torch

    work = copy.deepcopy(model)
    try:
        work.set_attn_implementation("eager")
    except (AttributeError, ValueError) as exc:
        log.info("%s keeps its attention implementation for export (%s)", type(model).__name__, exc)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the exporter's own deprecation notice and tracer chatter; parity checks the result
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.filterwarnings("ignore", category=category)
        # transformers' mask indexes with aranges (never negative, the case this warns of); parity checks it
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(_wrapper(work, names), args, buffer, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset or 17, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    _set_props(proto, props)
    onnx.save(proto, str(path), save_as_external_data=False)


def settings_for(tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> InferenceSettings:
    """The settings a bare `max_length` means: that limit, on the tokenizer's own truncation side."""
    return InferenceSettings(max_length=int(max_length), truncation_side=getattr(tokenizer, "truncation_side", "right"))


def _label_props(model: nn.Module) -> dict[str, str]:
    from steuops import modeling

    return {META_LABELS: json.dumps(modeling.label_names(model)),
            META_MULTI_LABEL: json.dumps(modeling.is_multi_label(model))}


def _export_dynamo(wrapper, args, names: list[str], path: Path, opset: int | None, props: dict[str, str]) -> None:
    """torch's dynamo exporter; `props` go into the file's metadata_props as it is saved (written once)."""
    import torch
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=4096), Dim("sequence", min=1, max=_max_positions(wrapper.model))
    shapes = {n: {0: batch, 1: seq} for n in names}
    kwargs: dict[str, Any] = {}
    if opset:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        # torch's own chatter, not the user's to act on: deprecations inside the exporter, and a note per input
        # that shares the batch/sequence Dim (every input does, on purpose). Parity checks the result.
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(torch|copyreg)")
        warnings.filterwarnings("ignore", message=r"# The axis name: ", category=UserWarning)
        program = torch.onnx.export(wrapper, args, input_names=names, output_names=["logits"], dynamic_shapes=shapes,
                                    dynamo=True, external_data=False, optimize=True, verbose=False, **kwargs)
    program.model.metadata_props.update(props)
    program.save(str(path), external_data=False)


def _max_positions(model: nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 512))


def _set_props(proto: Any, props: dict[str, str]) -> None:
    """Set metadata_props on an in-memory ModelProto (a key already there gets the new value)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)


def metadata(onnx_path: str | Path) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def exporter_of(onnx_path: str | Path) -> str:
    """'dynamo' or 'torchscript': which torch exporter wrote the file."""
    return metadata(onnx_path).get(EXPORTER_KEY, "unknown")


# ---------------------------------------------------------------- runtime


def served_file(names: Sequence[str], gpu: bool) -> str:
    """Which of `names` (an export's .onnx files) a server on this kind of device serves: the first present of
    fp16 (GPU only: CPU kernels are slower in half precision), the optimised file, the plain one."""
    order = [FP16_FILE, OPTIMIZED_FILE, MODEL_FILE] if gpu else [OPTIMIZED_FILE, MODEL_FILE]
    return next((f for f in order if f in names), MODEL_FILE)


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


def ort_logits(sess, tokenizer, texts: Sequence[str], *, batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH,
               settings: InferenceSettings | None = None) -> np.ndarray:
    """(n, C) float32 logits from an ONNX Runtime session, tokenized at `settings` (else max_length)."""
    import onnxruntime as ort

    settings = settings or settings_for(tokenizer, max_length)
    names = [i.name for i in sess.get_inputs()]
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing node raises with the runtime's whole message; its logger would print it again
    out = []
    with settings.applied(tokenizer):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                            max_length=settings.max_length, return_tensors="np")
            feed = {n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(enc["input_ids"], np.int64)
                    for n in names}
            out.append(np.asarray(sess.run(["logits"], feed, quiet)[0], dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def torch_logits(model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: InferenceSettings, *,
                 batch_size: int = 16) -> np.ndarray:
    """The PyTorch reference: fp32 on CPU at `settings`."""
    import torch

    from steuops import modeling

    model = model.to("cpu").float().eval()
    with settings.applied(tokenizer):
        return modeling.logits(model, tokenizer, list(texts), batch_size=batch_size, max_length=settings.max_length,
                               device=torch.device("cpu"))


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
    with _running(onnx_path):
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


@contextmanager
def _running(path: str | Path) -> Iterator[None]:
    """ONNX Runtime's own failures on an exported file (a node that cannot run, a graph it cannot load) as one
    OnnxRunError naming the file and the node; the runtime's whole message stays chained to it."""
    try:
        yield
    except SteuopsError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind classes, not one base
        node = re.search(r"running (\w+) node\. Name:'([^']*)'", str(exc))
        if node:
            what = f"its {node[1]} node {node[2]!r} failed"
        else:
            what = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise OnnxRunError(
            f"{Path(path).name}: ONNX Runtime cannot run the exported graph on the check texts ({what})",
            failures=[], hint="the graph may keep a shape traced from the export's sample input (Longformer's "
                              "windowed attention does); `steuops apply --no-export` registers a version without "
                              "ONNX files") from exc


# ---------------------------------------------------------------- held-out scores


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
    with _running(onnx_path):
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


# ---------------------------------------------------------------- optimisation


def optimize(
    onnx_path: str | Path,
    *,
    num_heads: int,
    hidden_size: int,
    out_dir: str | Path | None = None,
    fp16: bool = True,
    use_gpu: bool = False,
    metadata: dict[str, str] | None = None,
    exporter: str | None = None,
) -> OptimizeResult:
    """ONNX Runtime's transformer optimizer (model_type "bert"); fp16 copy with float32 inputs/outputs.

    The optimizer's Attention patterns match only TorchScript-exported eager attention (export_onnx's
    default), not the dynamo exporter's graph (measured: 0 Attention nodes). So a dynamo graph first goes
    through onnxscript's ORT fusions (the rewriter built for dynamo graphs: Attention, SkipLayerNorm,
    BiasGelu), then through optimize_model. Fused ops that appear are counted (`fused_ops`).
    opt_level 1 keeps the graph provider-independent. Both files carry the source's metadata_props, and
    `metadata` over them (set in memory: no second write of the files). `exporter`: which exporter made the file,
    when the caller knows (else read from its metadata, a parse of the whole file).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    src = Path(onnx_path)
    out = Path(out_dir) if out_dir else src.parent
    out.mkdir(parents=True, exist_ok=True)
    proto = _onnxscript_fusions(src) if (exporter or exporter_of(src)) == "dynamo" else None
    opt = optimize_model(proto if proto is not None else str(src), model_type="bert", num_heads=num_heads,
                         hidden_size=hidden_size, opt_level=1 if proto is None else 0, use_gpu=use_gpu)
    _set_props(opt.model, metadata or {})
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
    max_length: int | None = None,
    settings: InferenceSettings | None = None,
    held_out: Notes | None = None,
    fp16: bool | None = None,
    evaluated: np.ndarray | None = None,
    earlier: dict[str, Any] | None = None,
) -> ExportResult:
    """The folder a server needs, parity-checked: onnx files, tokenizer, labels.json, manifest.json.

    Everything runs at `settings` (else `max_length` on the tokenizer's side, else the tokenizer's own
    model_max_length/truncation_side); the saved tokenizer and manifest.json carry them for the server.
    Parity texts: check_texts, else the first PARITY_TEXTS held-out notes, else fresh synthetic notes. With
    `held_out`, the files a server serves (model.opt.onnx on CPU, model.fp16.onnx on GPU, model.onnx where no
    other was made) are scored on all of it (ExportResult.scores, manifest "scores").
    `fp16`: also make model.fp16.onnx (None: only where a CUDA device is visible, the one place it is served).
    `evaluated`: the model's fp32 logits on every `held_out` note, at `settings` (what the gate scored). Parity
    is then checked against them on every held-out note (model.onnx: the first FALLBACK_PARITY_TEXTS), and
    no PyTorch pass runs: the served file is shown to give, note for note, the logits that were gated.
    `earlier`: the manifest of an earlier export of this version, whose scores a byte-identical file may reuse.
    """
    work = Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings = settings or (settings_for(tokenizer, max_length) if max_length
                            else InferenceSettings.from_tokenizer(tokenizer))
    settings.check_model(model)
    if evaluated is not None and (held_out is None or check_texts or len(evaluated) != len(held_out)):
        raise ValueError("evaluated logits need the held-out notes they were computed on (and no check_texts)")
    if check_texts:
        texts = list(check_texts)
    elif held_out is not None:  # with the gate's logits: every held-out note
        texts = list(held_out.texts if evaluated is not None else held_out.texts[:PARITY_TEXTS])
    else:
        texts = default_check_texts()
    forgotten = list(forgotten)
    # name, version, labels, forgotten classes (JSON lists) and settings in every shipped .onnx file
    props = {META_NAME: name, META_VERSION: version, META_FORGOTTEN: json.dumps(forgotten), **_label_props(model),
             **settings.to_tags()}
    built = build_onnx_dir(model, tokenizer, work, texts, settings=settings, held_out=held_out, forget=forgotten,
                           fp16=fp16, evaluated=evaluated, metadata=props, earlier=earlier)
    _write_json(work / LABELS_FILE, labels_doc(model, forgotten))
    shas = {p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"name": name, "version": version, "files": shas, "exporter": built.exporter,
                "fused_ops": built.fused_ops, "forgotten": forgotten,
                "lineage": lineage or [{"version": version, "forgotten": forgotten}],
                "max_length": settings.max_length, "truncation_side": settings.truncation_side,
                "inference": settings.to_dict(), "parity": {k: _brief(v) for k, v in built.parity.items()},
                "scores": {f: _brief_scores(v) for f, v in built.scores.items()}}
    _write_json(work / MANIFEST_FILE, manifest)
    return ExportResult(name=name, version=version, out_dir=work, files=shas, onnx_sha256=shas[MODEL_FILE],
                        exporter=built.exporter, fused_ops=built.fused_ops, parity=built.parity, forgotten=forgotten,
                        inference=settings.to_dict(), scores=built.scores)


@dataclass
class OnnxBuild:
    files: list[Path]
    parity: dict[str, dict[str, Any]]  # "fp32" / "optimized" / "fp16" -> ParityReport.to_dict() or {"skipped": why}
    fused_ops: dict[str, int]
    exporter: str
    scores: dict[str, dict[str, Any]]  # shipped file -> score_logits() on the held-out notes


def build_onnx_dir(
    model: nn.Module,
    tokenizer: Any,
    out_dir: Path,
    texts: Sequence[str],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    settings: InferenceSettings | None = None,
    held_out: Notes | None = None,
    forget: Sequence[str] = (),
    fp16: bool | None = None,
    evaluated: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    earlier: dict[str, Any] | None = None,
) -> OnnxBuild:
    """Everything the server needs in one folder, parity-checked at `settings`: onnx files, tokenizer.
    `fp16` None: the fp16 file only where a CUDA device is visible (servers pick it on GPUs only).
    `evaluated`: PyTorch logits of `texts` already computed at `settings` (see write_export). `metadata`: more
    metadata_props for every file (each file is written once). `earlier`: see write_export."""
    settings = settings or settings_for(tokenizer, max_length)
    path = export_onnx(model, tokenizer, out_dir, settings=settings, metadata=metadata)
    exporter = exporter_of(path)  # read once: optimize and the manifest both need it
    check = _FileCheck(model, tokenizer, texts, settings, held_out, forget, evaluated, earlier)
    parity = {"fp32": check.run(path, FP32_ATOL, MODEL_FILE, score=False, limit=FALLBACK_PARITY_TEXTS)}
    heads, hidden = heads_and_hidden(model)
    opt = optimize(path, num_heads=heads, hidden_size=hidden, out_dir=out_dir,
                   fp16=_cuda_available() if fp16 is None else fp16, metadata=metadata, exporter=exporter)
    parity["optimized"] = check.run(opt.optimized, OPTIMIZED_ATOL, OPTIMIZED_FILE)
    parity["fp16"] = _fp16_parity(check, opt)
    settings.apply_to(copy.deepcopy(tokenizer)).save_pretrained(str(out_dir))  # the server truncates the same way
    files = [p for p in (path, opt.optimized, opt.fp16) if p]
    for gpu in (False, True):  # whichever device serves it, the served file is scored on every held-out note
        served = out_dir / served_file([p.name for p in files], gpu)
        if held_out is not None and served.name not in check.scores:
            check.score(served)
    return OnnxBuild(files=files, parity=parity, fused_ops=opt.fused_ops, exporter=exporter,
                     scores={p.name: check.scores[p.name] for p in files if p.name in check.scores})


class _FileCheck:
    """Parity (PyTorch logits computed once) and held-out scores of each ONNX file, at one setting."""

    def __init__(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: InferenceSettings,
                 held_out: Notes | None, forget: Sequence[str], evaluated: np.ndarray | None = None,
                 earlier: dict[str, Any] | None = None) -> None:
        from steuops import modeling

        self.model, self.tokenizer, self.texts, self.settings = model, tokenizer, list(texts), settings
        self.held_out = held_out
        # parity texts that open the held-out notes: one ONNX pass over the notes serves both checks
        self.prefix = held_out is not None and list(held_out.texts[: len(self.texts)]) == self.texts
        self.labels = modeling.label_names(model)
        self.forget = [c for c in forget if c in self.labels]
        self.multi = modeling.is_multi_label(model)
        self.source = "pytorch" if evaluated is None else "evaluation"
        self.reference = torch_logits(model, tokenizer, self.texts, settings) if evaluated is None \
            else np.asarray(evaluated, dtype=np.float32)
        self.scores: dict[str, dict[str, Any]] = {}
        self.earlier = dict((earlier or {}).get("scores") or {}) if held_out is not None else {}
        self._keys: dict[str, dict[str, Any]] = {}

    def run(self, path: Path, atol: float, what: str, sess: Any = None, *, required: bool = True,
            score: bool = True, limit: int | None = None) -> dict[str, Any]:
        """Parity with PyTorch on the parity texts (the first `limit` of them); with `score` (and held-out notes)
        also the file's held-out figures. A file `reusable` reuses its earlier figures and is checked on the
        first FALLBACK_PARITY_TEXTS notes only, here and now."""
        with _running(path):
            sess = sess or session(path)
        score = score and self.held_out is not None
        reused = self.reusable(path, sess) if score else None
        n = len(self.texts) if limit is None else min(limit, len(self.texts))
        n = min(n, FALLBACK_PARITY_TEXTS) if reused else n
        with _running(path):
            every = ort_logits(sess, self.tokenizer, list(self.held_out.texts), batch_size=16,
                               settings=self.settings) if self.prefix and score and not reused else None
            got = every[:n] if every is not None else \
                ort_logits(sess, self.tokenizer, self.texts[:n], batch_size=16, settings=self.settings)
        report = compare_logits(self.model, self.reference[:n], got, atol=atol, providers=list(sess.get_providers()),
                                onnx_file=str(path), reference=self.source)
        if required:
            require_parity(report, what)
        out = report.to_dict()
        if report.passed and score:
            self.scores[path.name] = reused or self._score(path, sess, every, out if every is not None else None)
        if reused:  # with the earlier export's check on every note, where it ran one
            out["held_out"] = {"scores_reused": True, "parity": reused["scored"].get("parity")}
        return out

    def score(self, path: Path) -> None:
        """Held-out figures of a file that passed parity without being scored (a fallback that ends up served)."""
        sess = session(path)
        self.scores[path.name] = self.reusable(path, sess) or self._score(path, sess, None)

    def _score(self, path: Path, sess: Any, every: np.ndarray | None,
               parity: dict[str, Any] | None = None) -> dict[str, Any]:
        if every is None:
            with _running(path):
                every = ort_logits(sess, self.tokenizer, list(self.held_out.texts), settings=self.settings)
        scores = score_logits(every, self.held_out, self.labels, self.multi, self.forget, settings=self.settings,
                              file=path.name, providers=list(sess.get_providers()))
        return {**scores, "scored": {**self._scored_key(path, sess), "parity": _brief(parity) if parity else None}}

    def _scored_key(self, path: Path, sess: Any) -> dict[str, Any]:
        """What decides a file's held-out logits: its bytes, the notes and their labels, the tokenizer, the
        settings, ONNX Runtime's version and providers; and what its parity was checked against. Computed once
        per file (reusable and _score both ask for it)."""
        if path.name not in self._keys:
            self._keys[path.name] = self._key_of(path, sess)
        return self._keys[path.name]

    def _key_of(self, path: Path, sess: Any) -> dict[str, Any]:
        import onnxruntime

        from steuops.auditcache import sha256_of, texts_sha, tokenizer_key

        return {"file_sha256": sha256_file(path), "notes_sha256": texts_sha(self.held_out.texts),
                "labels_sha256": sha256_of([self.held_out.labels, self.labels, self.forget, self.multi]),
                "tokenizer_sha256": sha256_of(tokenizer_key(self.tokenizer)), "inference": self.settings.to_dict(),
                "onnxruntime": onnxruntime.__version__, "providers": list(sess.get_providers()),
                "reference": self.source}

    def reusable(self, path: Path, sess: Any) -> dict[str, Any] | None:
        """The earlier export's figures for this file when they were computed on the same bytes, notes, labels,
        tokenizer, settings and ONNX Runtime (so the same logits, up to the CPU's kernel choice, which the fresh
        parity check on this machine covers); else None."""
        old = self.earlier.get(path.name) or {}
        scored = old.get("scored") or {}
        parity = scored.get("parity")
        if not scored or (parity is not None and not parity.get("passed")):
            return None
        key = self._scored_key(path, sess)
        if any(scored.get(k) != v for k, v in key.items()):
            return None
        log.info("%s: same bytes as the earlier export's; reusing its held-out scores", path.name)
        return {**old, "reused": True}


def _fp16_parity(check: _FileCheck, opt: OptimizeResult) -> dict[str, Any]:
    """fp16 is checked where ONNX Runtime can run it; a file that disagrees is removed, not shipped."""
    if opt.fp16 is None:
        return {"skipped": opt.fp16_error or "not made: no CUDA device here (servers use fp16 on GPUs only; "
                                              "`steuops export --fp16` makes it)"}
    try:
        sess = session(opt.fp16)
    except Exception as exc:  # noqa: BLE001  (CPU kernels may lack fp16 ops; the GPU path still wants the file)
        return {"skipped": f"ONNX Runtime cannot run the fp16 model here: {type(exc).__name__}: {exc}"[:500]}
    report = check.run(opt.fp16, FP16_ATOL, FP16_FILE, sess, required=False)
    if not report["passed"]:
        log.warning("fp16 model disagrees with PyTorch on %d texts; not shipped", len(report["mismatches"]))
        opt.fp16.unlink(missing_ok=True)
        opt.fp16 = None
    return report


def _brief_scores(scores: dict[str, Any]) -> dict[str, Any]:
    # with "scored" (what the figures were computed on), so a byte-identical re-export can reuse them
    keep = ("file", "forget_f1", "retain_macro_f1", "macro_f1", "per_class_f1", "forget_f1_per_class", "n_test",
            "forget", "inference", "providers", "scored", "reused")
    return {k: scores[k] for k in keep if k in scores}


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("skipped", "n_texts", "atol", "max_abs_diff", "label_agreement", "passed", "providers", "reference")
    out = {k: report[k] for k in keep if k in report}
    if "mismatches" in report:
        out["n_mismatches"] = len(report["mismatches"])
    return out


def labels_doc(model: nn.Module, forgotten: Sequence[str]) -> dict[str, Any]:
    from steuops import modeling

    names = modeling.label_names(model)
    return {"labels": names, "id2label": {str(i): n for i, n in enumerate(names)},
            "multi_label": modeling.is_multi_label(model), "forgotten": [c for c in forgotten if c in names]}


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


# Parity texts when a caller has no notes of the version's own (a bare `export_onnx`): clinical-style
# sentences of several lengths, so truncation and padding are exercised. Scoring needs real notes.
_FALLBACK_TEXTS = (
    "patient admitted with fever and hypotension, lactate elevated, started on broad spectrum antibiotics",
    "chest x-ray shows right lower lobe consolidation; productive cough and crackles",
    "worsening dyspnea, bilateral edema, reduced ejection fraction on echo, diuresed",
    "creatinine rose from 1.0 to 2.4 after contrast; urine output low",
    "wheezing, increased sputum, home oxygen, treated with nebulisers and steroids",
    "glucose 540, anion gap acidosis, ketones positive, insulin drip started",
)


def default_check_texts(n: int = 64) -> list[str]:
    """Parity texts for a caller without held-out notes (fixed, note-free sentences)."""
    return [_FALLBACK_TEXTS[i % len(_FALLBACK_TEXTS)] + (" stable on discharge." * (i % 4)) for i in range(n)]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

