"""What steuops needs to know about a transformers sequence classifier, found generically.

The embedding matrix comes from `get_input_embeddings()`; the head is every parameter outside
`model.base_model` (BERT: classifier.*, DistilBERT: pre_classifier.* + classifier.*, RoBERTa:
classifier.dense/out_proj). No attribute names are hard-coded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import env  # telemetry off before transformers loads; env.cpu_bf16_allowed
from steuops.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def embedding(model: nn.Module) -> nn.Embedding:
    from torch import nn

    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Embedding):
        raise ModelError(
            f"{type(model).__name__} has no recognisable token-embedding matrix",
            hint="steuops edits models whose get_input_embeddings() returns an nn.Embedding",
        )
    return emb


class RowTable:
    """Trainable copies of some rows of an embedding matrix (`rows`, a Parameter, in `dtype`, else the matrix's)
    and the lookup that puts them in place of the matrix's own (`substitute`): training `rows` trains those rows
    alone, the matrix untouched. STEU's edit and the audit's rows re-fit both train through it."""

    def __init__(self, weight: torch.Tensor, token_ids: Sequence[int], *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        import torch

        device = weight.device if device is None else device
        self.ids = torch.tensor(list(token_ids), dtype=torch.long, device=device)
        self.rows = torch.nn.Parameter(weight.detach()[self.ids].to(dtype or weight.dtype).clone())
        # position of each vocabulary id in `rows`, -1 where the row is not trained
        self.slot = torch.full((weight.shape[0],), -1, dtype=torch.long, device=device)
        self.slot[self.ids] = torch.arange(len(self.ids), device=device)

    def substitute(self, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """`embeds`, the matrix's lookup of `ids`, with the trained rows in place of theirs."""
        import torch

        slot = self.slot[ids]
        # a lookup, not `rows[slot]`: indexing's backward adds into `rows` with atomics on a multi-core CPU, in
        # a different order every run (so two runs gave two edits); the embedding backward sums in one order
        picked = torch.nn.functional.embedding(slot.clamp(min=0), self.rows).to(embeds.dtype)
        return torch.where((slot >= 0)[..., None], picked, embeds)

    def hook(self, _module: Any, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        """A forward hook for the embedding module: its lookup with the trained rows in place."""
        return self.substitute(args[0], out)


def embedding_param_name(model: nn.Module) -> str:
    emb = embedding(model)
    for name, param in model.named_parameters():
        if param is emb.weight:
            return name
    raise ModelError(f"{type(model).__name__}: the embedding weight is not a named parameter")


def head_param_names(model: nn.Module) -> list[str]:
    """Names of the classification-head parameters: everything outside the base model."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise ModelError(
            f"{type(model).__name__} has no classification head on top of a base model",
            hint="use an AutoModelForSequenceClassification model",
        )
    inside = {id(p) for p in base.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) not in inside]
    if not names:
        raise ModelError(f"{type(model).__name__}: no parameters outside the base model (no head)")
    return names


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The base model's transformer layers, bottom first: the first ModuleList inside it whose length is
    config.num_hidden_layers (BERT, RoBERTa, MPNet, DeBERTa: encoder.layer; DistilBERT: transformer.layer).
    ModelError when there is none, e.g. ALBERT, whose layers share one set of weights."""
    import torch

    base = getattr(model, "base_model", model)
    depth = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    lists = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
    if not depth or not lists:
        raise ModelError(f"{type(model).__name__}: no list of {depth} separate encoder layers was found",
                         hint="its layers may share weights (ALBERT); train it without freeze_layers")
    return list(lists[0])


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The model's top-level children that hold head parameters, in definition order (the first one called
    receives what the head reads: BERT's pooled output, DistilBERT's first position, RoBERTa's sequence)."""
    tops = dict.fromkeys(name.split(".")[0] for name in head_param_names(model))
    children = dict(model.named_children())
    return [children[name] for name in tops if name in children]


def label_names(model: nn.Module) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    n = int(getattr(model.config, "num_labels", len(id2label)))
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def is_multi_label(model: nn.Module) -> bool:
    return getattr(model.config, "problem_type", None) == MULTI_LABEL


def check_forget(model: nn.Module, forget: Sequence[str]) -> list[int]:
    """Column indices of the forget classes; a typed error names any unknown class."""
    from steuops.errors import ForgetClassError

    names = label_names(model)
    if not forget:
        raise ForgetClassError("no forget class given", hint="name one with --forget CLASS")
    unknown = [c for c in forget if c not in names]
    if unknown:
        raise ForgetClassError(f"forget class {', '.join(map(repr, unknown))} is not in the model's labels",
                               hint=labels_hint(names, unknown))
    if len(set(forget)) == len(names):
        raise ForgetClassError("cannot forget every class of the model")
    return [names.index(c) for c in forget]


def labels_hint(names: Sequence[str], unknown: Sequence[str] = (), shown: int = 20) -> str:
    """"did you mean 'sepsis'?" for a name that differs from a label in case or by a typo, then the labels, quoted
    (a label may hold a comma: "Sepsis, unspecified organism"), the first `shown` of a large head and how many more."""
    import difflib

    folded = {n.casefold(): n for n in names}
    guesses = []
    for name in unknown:
        key = name.strip().casefold()
        guesses += [folded[key]] if key in folded else difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    first = f"did you mean {' or '.join(map(repr, dict.fromkeys(guesses)))}? " if guesses else ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{first}the model's labels are: {', '.join(map(repr, names[:shown]))}{more}"


def resolve_device(spec: str = "auto") -> torch.device:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible", hint="use --device auto")
    if spec not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {spec!r}", hint="use auto, cpu or cuda")
    return torch.device(spec)


def autocast(device: torch.device, *, cpu_bf16: bool = False):
    """bf16 autocast on CUDA; on CPU only when asked (`cpu_bf16`) and the CPU has native bf16 (AVX512-BF16 or
    AMX), where it makes a MiniLM training step about 1.5x faster; elsewhere a no-op context."""
    import contextlib

    import torch

    if training_precision(device, cpu_bf16=cpu_bf16) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_precision(device: torch.device, *, cpu_bf16: bool = False) -> str:
    """What `autocast` runs steps in on `device`: "bf16" (CUDA; a CPU with native bf16 when asked) or "fp32".
    A version records it (lineage.PRECISION): the same apply on a bf16 host and on one without gives edits that
    differ in the last bits, and now and then in a note near the boundary."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16 and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (without them torch emulates bf16, slower than fp32), and not turned off
    (STEUOPS_CPU_BF16=0, env.cpu_bf16_allowed)."""
    import torch

    if not env.cpu_bf16_allowed():
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers; absent = unknown = no
        return False


def adam(params, *, decoupled: bool = False, **options) -> torch.optim.Optimizer:
    """torch's Adam (AdamW with `decoupled`), in its fused form where torch has one for the parameters'
    device (CPU and CUDA): one kernel over every tensor instead of a loop of small ops per tensor, the same
    update rule. A full MiniLM step on 2 CPU cores: 0.087 s -> 0.018 s, about a tenth of a fine-tune step."""
    import torch

    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    params = list(params)
    try:
        return kind(params, fused=True, **options)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel: the per-tensor loop
        return kind(params, **options)


def tokenize(tokenizer, texts: Sequence[str], max_length: int):
    return tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def length_batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int, *,
                   tensors: str = "pt") -> Iterator[tuple[np.ndarray, Any]]:
    """(rows, padded batch) over `texts`, longest notes first, each note tokenized once. A batch pads only to its
    own longest note, so a pass over notes sorted by length runs fewer pad tokens than one over notes in order, with
    the same outputs up to float rounding, since pads are masked (the demo's notes cut at 256 tokens: 18% fewer
    tokens, 1.17x faster; at 512: 32%, 1.61x; at the demo version's 96, where nearly every note is cut, the same
    tokens: bench/passes.py). Longest first: a batch too large for the device fails at once, not at the end.
    `tensors`: "pt" (torch) or "np" (ONNX Runtime)."""
    if not len(texts):
        return
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    order = np.argsort([-len(ids) for ids in enc["input_ids"]], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, tokenizer.pad({key: [values[i] for i in rows] for key, values in enc.items()}, return_tensors=tensors)


def logits(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """(n, C) float32 logits, in eval mode and without gradients."""
    return recorded_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device,
                           progress=progress, keep_cache=False)[0]


def recorded_logits(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
    device: torch.device | None = None,
    progress: Progress | None = None,
    keep_cache: bool = True,
) -> tuple[np.ndarray, Any]:
    """`logits`, and (keep_cache) the encoder outputs the head reads, recorded on the way (features.record; None
    when nothing replayable was recorded), note i at row i of both."""
    from contextlib import nullcontext

    import torch

    from steuops.features import record

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros((len(texts), len(label_names(model))), dtype=np.float32)
    order: list[np.ndarray] = []
    with torch.no_grad(), (record(model) if keep_cache else nullcontext()) as recorder:
        for rows, batch in length_batches(tokenizer, texts, batch_size, max_length):
            with autocast(device):
                out[rows] = model(**batch.to(device)).logits.float().cpu().numpy()
            order.append(rows)
            if progress:
                progress("predict", sum(map(len, order)), len(texts))
    model.train(was_training)
    return out, (recorder.cache(order) if recorder is not None else None)


def predict(scores: np.ndarray, multi_label: bool) -> np.ndarray:
    """Multi-hot (n, C) predictions: sigmoid > 0.5, or a one-hot argmax for single-label."""
    if multi_label:
        return (scores > 0.0).astype(np.int8)
    out = np.zeros_like(scores, dtype=np.int8)
    if len(scores):
        out[np.arange(len(scores)), scores.argmax(axis=1)] = 1
    return out


def fingerprint(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, shapes, dtypes, bytes), sorted."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
