"""Running the files: ONNX Runtime sessions with explicit providers, logits from them and from PyTorch at one
`InferenceSettings`, and `onnx_run_errors`, which turns the runtime's own failures into one OnnxRunError."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import lineage
from steuops.errors import ExportParityError, ModelError, SteuopsError
from steuops.inference import DEFAULT_MAX_LENGTH, InferenceSettings

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


class OnnxRunError(ExportParityError):
    """ONNX Runtime cannot load or run the exported file on the check texts (exit 1): a graph that kept a shape
    from the export's sample input, as Longformer's windowed attention does, fails on notes of other lengths."""


def settings_for(tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> InferenceSettings:
    """The settings a bare `max_length` means: that limit, on the tokenizer's own truncation side."""
    return InferenceSettings(max_length=int(max_length), truncation_side=getattr(tokenizer, "truncation_side", "right"))


def session(onnx_path: str | Path, *, device: str = "auto", threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime session with explicit providers: CUDA when a GPU is there, else CPU.

    The available-providers list lies (onnxruntime-gpu lists CUDA without a GPU), so the
    session's own get_providers() is checked: an explicit device="cuda" that fell back is an
    error; "auto" falls back to a CPU session.
    """
    import onnxruntime as ort

    want_cuda = cuda_available() if device == "auto" else device == "cuda"
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


def cuda_available() -> bool:
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

    from steuops import modeling

    settings = settings or settings_for(tokenizer, max_length)
    names = [i.name for i in sess.get_inputs()]
    fixed = fixed_length(sess)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing node raises with the runtime's whole message; its logger would print it again
    out: np.ndarray | None = None
    with settings.applied(tokenizer):
        for rows, enc in modeling.length_batches(tokenizer, texts, batch_size, settings.max_length, tensors="np"):
            feed = {n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(enc["input_ids"], np.int64)
                    for n in names}
            if fixed:
                feed = _padded(feed, fixed, tokenizer)
            logits = np.asarray(sess.run(["logits"], feed, quiet)[0][: len(rows)], dtype=np.float32)
            if out is None:
                out = np.zeros((len(texts), logits.shape[1]), np.float32)
            out[rows] = logits
    return out if out is not None else np.zeros((0, 0), np.float32)


def fixed_length(sess: Any) -> int | None:
    """The one sequence length a file runs at (export_onnx's `fixed_length`), or None: any length."""
    value = sess.get_modelmeta().custom_metadata_map.get(lineage.META_FIXED_LENGTH)
    return int(value) if value else None


def _padded(feed: dict[str, np.ndarray], length: int, tokenizer: Any) -> dict[str, np.ndarray]:
    """`feed` padded to `length` tokens on the tokenizer's padding side (input ids with its pad id, the rest with 0),
    and a lone row doubled: such a graph was traced at batch 2, and Longformer's keeps `batch > 1` (it fails on one
    row). The caller keeps the first rows' logits."""
    if len(feed["input_ids"]) == 1:
        feed = {n: np.repeat(v, 2, axis=0) for n, v in feed.items()}
    width = feed["input_ids"].shape[1]
    if width > length:
        raise ModelError(f"the ONNX file runs at {length} tokens only; these inputs have {width}",
                         hint="tokenize at the settings the file was exported with (its steuops.max_length)")
    side = (0, length - width) if getattr(tokenizer, "padding_side", "right") == "right" else (length - width, 0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {n: np.pad(v, ((0, 0), side), constant_values=pad_id if n == "input_ids" else 0) for n, v in feed.items()}


def torch_logits(model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: InferenceSettings, *,
                 batch_size: int = 16) -> np.ndarray:
    """The PyTorch reference: fp32 on CPU at `settings`."""
    import torch

    from steuops import modeling

    model = model.to("cpu").float().eval()
    with settings.applied(tokenizer):
        return modeling.logits(model, tokenizer, list(texts), batch_size=batch_size, max_length=settings.max_length,
                               device=torch.device("cpu"))


@contextmanager
def onnx_run_errors(path: str | Path) -> Iterator[None]:
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
            failures=[], hint="the graph may keep a shape traced from the export's sample input; `steuops apply "
                              "--no-export` registers a version without ONNX files") from exc
