"""The .onnx files: `export_onnx` writes one (TorchScript exporter first, dynamo as the fallback) with its labels,
settings and exporter in its metadata_props; `optimize` applies ONNX Runtime's transformer fusions and makes the fp16
variant; `served_file` says which of them a server on a given device picks."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import lineage
from steuops.errors import ConfigError, ModelError
from steuops.export.runtime import settings_for
from steuops.inference import DEFAULT_MAX_LENGTH, InferenceSettings

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


MODEL_FILE = "model.onnx"


OPTIMIZED_FILE = "model.opt.onnx"


FP16_FILE = "model.fp16.onnx"


FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu")
# config.model_type -> why ONNX Runtime's transformer optimizer is not run on it (no model.opt.onnx is made; servers
# serve model.onnx, which their session optimises at load as it would the other). Longformer: its windowed attention
# matches none of the optimizer's attention patterns (at 512 fixed tokens it fused BiasGelu only; at 1 layer and 64
# tokens, SkipLayerNorm too; Attention at no size tried), and at 512 fixed tokens on a 2-core EPYC it took
# 8.4 s for 2 layers and 308.8 s for 12 (Clinical-Longformer's depth), for no faster serving (batch of 8: 184.9 ms
# plain, 184.7 optimised at 12 layers; bench/results/longformer-export-cpu-zen3-2026-12-02.json).
NOT_OPTIMIZED: dict[str, str] = {
    "longformer": "ONNX Runtime's transformer fusions have no pattern for Longformer's windowed attention; "
                  "model.onnx is served",
}


EXPORTER_KEY = lineage.META_EXPORTER
SAMPLE_LENGTH = 16  # tokens of the traced sample input


# metadata_props of every shipped .onnx file (lists are JSON-encoded); the names live in steuops.lineage
META_NAME, META_VERSION = lineage.META_NAME, lineage.META_VERSION


META_LABELS, META_FORGOTTEN, META_MULTI_LABEL = lineage.META_LABELS, lineage.META_FORGOTTEN, lineage.META_MULTI_LABEL


@dataclass
class OptimizeResult:
    optimized: Path | None  # None: not optimised (`skipped` says why)
    fp16: Path | None
    fused_ops: dict[str, int]
    fp16_error: str | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimized": str(self.optimized) if self.optimized else None,
            "fp16": str(self.fp16) if self.fp16 else None,
            "fused_ops": self.fused_ops,
            "fp16_error": self.fp16_error,
            "skipped": self.skipped,
        }


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


def _sample_inputs(model: nn.Module, names: list[str], batch: int = 2, length: int = SAMPLE_LENGTH):
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
    fixed_length: int | None = None,
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
    `fixed_length`: trace at that sequence length and keep it (only the batch axis is dynamic), for a graph that
    keeps its sample's length (Longformer's attention windows); the file says so and `ort_logits` pads to it.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    model = model.to("cpu").float().eval()
    names = input_names(model)
    args = _sample_inputs(model, names, length=fixed_length or SAMPLE_LENGTH)
    settings = settings or settings_for(tokenizer, max_length)
    props = {lineage.META_INPUTS: lineage.encode_list(names), **settings.to_tags(), **label_props(model),
             **(metadata or {})}
    if fixed_length:
        props[lineage.META_FIXED_LENGTH] = str(int(fixed_length))
    if exporter not in (None, "torchscript", "dynamo"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}", hint="use torchscript or dynamo (or leave it unset)")
    with torch.no_grad():
        if exporter != "dynamo":
            try:
                _export_torchscript(model, args, names, path, opset, {EXPORTER_KEY: "torchscript", **props},
                                    fixed=bool(fixed_length))
                return path
            except Exception as exc:  # noqa: BLE001  (any TorchScript failure: the dynamo exporter, and say so)
                if exporter:
                    raise
                log.warning("TorchScript ONNX export failed (%s: %s); using the dynamo exporter",
                            type(exc).__name__, exc)
                path.unlink(missing_ok=True)
        # torch warns that torchvision (not a dependency) is absent, once per process; not the user's concern
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        _export_dynamo(_wrapper(model, names), args, names, path, opset, {EXPORTER_KEY: "dynamo", **props},
                       fixed=bool(fixed_length))
    return path


def _export_torchscript(model: nn.Module, args, names: list[str], path: Path, opset: int | None,
                        props: dict[str, str], *, fixed: bool = False) -> None:
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
    axes = {n: {0: "batch"} if fixed else {0: "batch", 1: "sequence"} for n in names}
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


def label_props(model: nn.Module) -> dict[str, str]:
    from steuops import modeling

    return {META_LABELS: json.dumps(modeling.label_names(model)),
            META_MULTI_LABEL: json.dumps(modeling.is_multi_label(model))}


def _export_dynamo(wrapper, args, names: list[str], path: Path, opset: int | None, props: dict[str, str], *,
                   fixed: bool = False) -> None:
    """torch's dynamo exporter; `props` go into the file's metadata_props as it is saved (written once)."""
    import torch
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=4096), Dim("sequence", min=1, max=_max_positions(wrapper.model))
    shapes = {n: {0: batch} if fixed else {0: batch, 1: seq} for n in names}
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


def served_file(names: Sequence[str], gpu: bool) -> str:
    """Which of `names` (an export's .onnx files) a server on this kind of device serves: the first present of
    fp16 (GPU only: CPU kernels are slower in half precision), the optimised file, the plain one."""
    order = [FP16_FILE, OPTIMIZED_FILE, MODEL_FILE] if gpu else [OPTIMIZED_FILE, MODEL_FILE]
    return next((f for f in order if f in names), MODEL_FILE)


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
    model_type: str | None = None,
) -> OptimizeResult:
    """ONNX Runtime's transformer optimizer (model_type "bert"); fp16 copy with float32 inputs/outputs.

    The optimizer's Attention patterns match only TorchScript-exported eager attention (export_onnx's
    default), not the dynamo exporter's graph (measured: 0 Attention nodes). So a dynamo graph first goes
    through onnxscript's ORT fusions (the rewriter built for dynamo graphs: Attention, SkipLayerNorm,
    BiasGelu), then through optimize_model. Fused ops that appear are counted (`fused_ops`).
    opt_level 1 keeps the graph provider-independent. Both files carry the source's metadata_props, and
    `metadata` over them (set in memory: no second write of the files). `exporter`: which exporter made the file,
    when the caller knows (else read from its metadata, a parse of the whole file). `model_type`: the source
    model's config.model_type; one in NOT_OPTIMIZED makes no optimised file (the fp16 copy is of the plain graph).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    src = Path(onnx_path)
    out = Path(out_dir) if out_dir else src.parent
    out.mkdir(parents=True, exist_ok=True)
    if model_type in NOT_OPTIMIZED:
        return _fp16_only(src, out, fp16, metadata, NOT_OPTIMIZED[model_type])
    proto = _onnxscript_fusions(src) if (exporter or exporter_of(src)) == "dynamo" else None
    opt = optimize_model(proto if proto is not None else str(src), model_type="bert", num_heads=num_heads,
                         hidden_size=hidden_size, opt_level=1 if proto is None else 0, use_gpu=use_gpu)
    _set_props(opt.model, metadata or {})
    opt_path = out / OPTIMIZED_FILE
    opt.save_model_to_file(str(opt_path), use_external_data_format=False)
    fp16_path, error = _fp16_copy(opt, out) if fp16 else (None, None)
    return OptimizeResult(optimized=opt_path, fp16=fp16_path, fused_ops=fused_op_counts(opt_path), fp16_error=error)


def _fp16_only(src: Path, out: Path, fp16: bool, metadata: dict[str, str] | None, why: str) -> OptimizeResult:
    """No optimised file: the fp16 copy (when asked) of the plain graph, and no fused ops."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    log.info("not optimising %s: %s", src.name, why)
    fp16_path, error = None, None
    if fp16:
        plain = OnnxModel(onnx.load(str(src)))
        _set_props(plain.model, metadata or {})
        fp16_path, error = _fp16_copy(plain, out)
    return OptimizeResult(optimized=None, fp16=fp16_path, fused_ops=dict.fromkeys(FUSED_OPS, 0), fp16_error=error,
                          skipped=why)


def _fp16_copy(model, out: Path) -> tuple[Path | None, str | None]:
    """model (an onnxruntime OnnxModel) converted to fp16 in place, float32 inputs and outputs kept, saved as
    FP16_FILE: (its path, None), or (None, the error): fp16 is an extra, and the fp32 files stand."""
    try:
        model.convert_float_to_float16(keep_io_types=True)
        path = out / FP16_FILE
        model.save_model_to_file(str(path), use_external_data_format=False)
        return path, None
    except Exception as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"
        log.warning("fp16 conversion failed: %s", error)
        return None, error


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
