"""Cached encoder outputs: run a classifier's head without its encoder, exactly.

STEU freezes the encoder, and the head only ever reads a little of the encoder's output (BERT: the
pooled output; DistilBERT/RoBERTa: the first position). So for a note that contains no edited
token the edited model's head sees exactly what the original's head saw, and training, the head-only
baseline, the audit's probe and its head re-fit attack can run the head alone on cached features.

Generic over transformers sequence classifiers: the output of `model.base_model` is captured with a
forward hook, reduced per note to its 2-D tensors (pooled outputs) plus, of its 3-D tensors (hidden
states), the one position each way a head reads a sequence (READINGS): the first ([CLS]: BERT, RoBERTa,
DeBERTa), the mean over the note's tokens (ModernBERT's mean pooling) and the last token (decoder
classifiers: Llama, GPT-2). The cache is replayed later as a sequence of that one position, standing
in for `base_model.forward` while the model's own forward runs the head: a head reads position 0 of a
one-token note, its mean and its last token alike. `exact()` finds the reading whose replayed logits
equal the real ones (and drops the others); when none does, callers fall back to full passes.
Dropout: the callers run models in eval mode (the tiny models have none), so the head is deterministic
and the replay is exact, not merely close.

torch only, imported inside functions (engine path: no mlflow, no bentoml).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

EXACT_ATOL = 1e-4  # replayed vs real logits; float32 noise from different padding is ~1e-6
READINGS = ("first", "mean", "last")  # how a head may read a sequence; "first" is tried first and kept alone
_AT = "@"  # a 3-D field's other readings are fields "<name>@mean", "<name>@last" (no output field has an "@")


@dataclass
class FeatureCache:
    """Reduced encoder outputs for n notes: field name -> (rows, ...) tensor or None.

    Dense (`slots` None): row i is note i. Slotted (made by `blank(n)`, filled by `write`): `slots` (n,) maps a
    note to its row, -1 until written, and the rows grow with the notes written, so a cache over a large split
    holds what was run (a sampled cohort), not the corpus. Read it by note index (`output`, `take`), never
    through `fields` directly. `reading`: the position of a 3-D field the head reads (READINGS; `exact` sets it)."""

    fields: dict[str, Any]
    kind: Any  # the encoder output's class (a transformers ModelOutput) or tuple
    slots: np.ndarray | None = None
    stored: int = 0  # rows of `fields` in use (slotted caches)
    reading: str = "first"

    def __len__(self) -> int:
        if self.slots is not None:
            return len(self.slots)
        return next(len(v) for v in self.fields.values() if v is not None)

    def _index(self, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
        import torch

        first = next(v for v in self.fields.values() if v is not None)
        if self.slots is None:
            return torch.as_tensor(idx, dtype=torch.long, device=first.device)
        notes = np.asarray(idx.cpu() if torch.is_tensor(idx) else list(idx), dtype=np.int64)
        at = self.slots[notes]
        if (at < 0).any():
            raise KeyError(f"{int((at < 0).sum())} of the notes asked for were never written to this cache")
        return torch.as_tensor(at, dtype=torch.long, device=first.device)

    def output(self, idx: Sequence[int] | torch.Tensor, dtype: torch.dtype | None = None) -> Any:
        """What `base_model(...)` returned for the notes `idx`, as far as the head reads it; floating
        fields cast to `dtype` (a cache filled under bf16 autocast, read by a float32 head)."""
        index = self._index(idx)
        values = {}
        for key, value in self.fields.items():
            if _AT in key:
                continue
            value = self.fields.get(f"{key}{_AT}{self.reading}", value)
            values[key] = _cast(value.index_select(0, index), dtype) if value is not None else None
        if self.kind is tuple:
            return tuple(values.values())
        return self.kind(**values)

    def take(self, rows: Sequence[int]) -> FeatureCache:
        """A dense cache of the notes `rows` (in that order)."""
        index = self._index(rows)
        return FeatureCache({k: (v.index_select(0, index.to(v.device)) if v is not None else None)
                             for k, v in self.fields.items()}, self.kind, reading=self.reading)

    def readings(self) -> list[str]:
        """The readings this cache can replay: "first", and the others its 3-D fields were recorded with."""
        return ["first", *(r for r in READINGS[1:] if any(k.endswith(f"{_AT}{r}") for k in self.fields))]

    def settle(self, reading: str) -> None:
        """Keep `reading` (replayed from now on) and drop the fields of the others."""
        self.reading = reading
        self.fields = {k: v for k, v in self.fields.items() if _AT not in k or k.endswith(f"{_AT}{reading}")}

    def replace(self, rows: Sequence[int], other: FeatureCache) -> FeatureCache:
        """A copy whose `rows` come from `other` (one entry per row, in that order)."""
        copy = FeatureCache({k: (v.clone() if v is not None else None) for k, v in self.fields.items()}, self.kind,
                            None if self.slots is None else self.slots.copy(), self.stored, self.reading)
        copy.write(rows, other)
        return copy

    def blank(self, n: int) -> FeatureCache:
        """An empty slotted cache of `n` notes shaped like this one (same fields, dtypes, device), for callers
        that fill it note by note (`write`) as the notes are first run: memory grows with the notes written."""
        import torch

        return FeatureCache({k: (torch.zeros((0, *v.shape[1:]), dtype=v.dtype, device=v.device)
                                 if v is not None else None) for k, v in self.fields.items()}, self.kind,
                            np.full(n, -1, dtype=np.int64), 0, self.reading)

    def to_arrays(self, prefix: str = "cache.") -> dict[str, np.ndarray]:
        """numpy arrays for np.savez (no pickle): each field widened to float32 where it is a narrower
        float (bf16 has no numpy dtype; widening is lossless), with its torch dtype and `kind` by name.
        A dense cache only (`take` the notes of a slotted one first)."""
        import torch

        if self.slots is not None:
            raise ValueError("to_arrays needs a dense cache: take() the notes first")

        out: dict[str, np.ndarray] = {}
        layout = {"kind": "tuple" if self.kind is tuple else f"{self.kind.__module__}:{self.kind.__qualname__}",
                  "fields": {k: (str(v.dtype).removeprefix("torch.") if v is not None else None)
                             for k, v in self.fields.items()}, "reading": self.reading}
        for key, value in self.fields.items():
            if value is not None:
                wide = value.float() if value.is_floating_point() and value.dtype != torch.float64 else value
                out[f"{prefix}{key}"] = wide.detach().cpu().numpy()
        out[f"{prefix}layout"] = np.array(json.dumps(layout))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: Any, prefix: str = "cache.") -> FeatureCache | None:
        """The cache `to_arrays` wrote, on `device`; None when it is not there or names an output class
        outside transformers (only those are rebuilt)."""
        import importlib

        import torch

        raw = arrays.get(f"{prefix}layout")
        if raw is None:
            return None
        layout = json.loads(str(raw))
        kind: Any = tuple
        if layout["kind"] != "tuple":
            module, _, name = layout["kind"].partition(":")
            if module.split(".")[0] != "transformers":
                return None
            kind = getattr(importlib.import_module(module), name, None)
            if kind is None:
                return None
        fields = {k: (torch.from_numpy(arrays[f"{prefix}{k}"]).to(device=device, dtype=getattr(torch, dtype))
                      if dtype is not None else None) for k, dtype in layout["fields"].items()}
        return cls(fields, kind, reading=layout.get("reading", "first"))

    def write(self, rows: Sequence[int], other: FeatureCache) -> None:
        """In place: `rows` (notes) take `other`'s entries (one per row, in that order; `other` dense)."""
        if not len(rows):
            return
        if self.slots is not None:
            notes = np.asarray(list(rows), dtype=np.int64)
            new = np.unique(notes[self.slots[notes] < 0])
            self._reserve(len(new))
            self.slots[new] = np.arange(self.stored, self.stored + len(new))
            self.stored += len(new)
        index = self._index(list(rows))
        for key, value in self.fields.items():
            if value is not None:
                value[index.to(value.device)] = other.fields[key].to(value)

    def _reserve(self, extra: int) -> None:
        """Room for `extra` more rows (capacity doubles, so n notes written one batch at a time cost O(n))."""
        import torch

        capacity = next(len(v) for v in self.fields.values() if v is not None)
        if self.stored + extra <= capacity:
            return
        size = max(self.stored + extra, 2 * capacity, 64)
        for key, value in self.fields.items():
            if value is not None:
                grown = torch.zeros((size, *value.shape[1:]), dtype=value.dtype, device=value.device)
                grown[: self.stored] = value[: self.stored]
                self.fields[key] = grown


def _cast(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    # widening bf16 -> float32 is lossless, and autocast narrows it back to the same values
    return value.to(dtype) if dtype is not None and value.is_floating_point() else value


def _reduce(key: str, value: Any, mask: torch.Tensor | None) -> dict[str, Any]:
    """Per-note parts the head can read: a 2-D tensor as is; a 3-D one as one position per reading, each
    (n, 1, d): the first, the mean over the mask's tokens (as ModernBERT pools) and the last of them (as a
    decoder classifier reads its last non-pad token). Anything else: None (not replayable)."""
    import torch

    if not torch.is_tensor(value) or value.dim() not in (2, 3):
        return {key: None}
    value = value.detach()
    if value.dim() == 2:
        return {key: value}
    if mask is None or mask.shape != value.shape[:2]:
        mask = torch.ones(value.shape[:2], dtype=torch.long, device=value.device)
    mask = mask.to(value.device)
    mean = (value * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)
    last = (torch.arange(value.shape[1], device=value.device) * mask).argmax(-1)
    return {key: value[:, :1].clone(), f"{key}{_AT}mean": mean.unsqueeze(1).to(value.dtype),
            f"{key}{_AT}last": value[torch.arange(len(value), device=value.device), last].unsqueeze(1)}


def _fields(output: Any, mask: torch.Tensor | None) -> tuple[dict[str, Any], Any]:
    """A base model's output (a ModelOutput or a tuple) as reduced fields, and the type to rebuild it as."""
    mapping = hasattr(output, "items")
    items = output.items() if mapping else ((str(i), v) for i, v in enumerate(output))
    fields: dict[str, Any] = {}
    for key, value in items:
        fields.update(_reduce(key, value, mask))
    return fields, (type(output) if mapping else tuple)


class Recorder:
    """Collects the reduced `base_model` output of every forward pass while active (see `record`)."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, Any], Any]] = []

    def hook(self, _module: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
        self.parts.append(_fields(output, kwargs.get("attention_mask")))

    def cache(self, order: Sequence[np.ndarray] | None = None) -> FeatureCache | None:
        """All recorded batches concatenated, or None when nothing (usable) was recorded. `order`: the notes of each
        batch, when they ran out of order (modeling.length_batches); note i is then at row i all the same."""
        import torch

        if not self.parts:
            return None
        kind = self.parts[0][1]
        keys = list(self.parts[0][0])
        fields = {}
        for key in keys:
            values = [p[0].get(key) for p in self.parts]
            fields[key] = None if any(v is None for v in values) else torch.cat(values)
        if all(v is None for v in fields.values()):
            return None
        cache = FeatureCache(fields, kind)
        return cache if order is None else cache.take(np.argsort(np.concatenate(order)).tolist())


@contextmanager
def record(model: nn.Module) -> Iterator[Recorder]:
    """`with record(model) as rec:` run forward passes; then `rec.cache()`."""
    rec = Recorder()
    handle = model.base_model.register_forward_hook(rec.hook, with_kwargs=True)  # kwargs: the attention mask
    try:
        yield rec
    finally:
        handle.remove()


@contextmanager
def replaying(model: nn.Module, output: Any) -> Iterator[None]:
    """While active, `model.base_model` returns `output` instead of running the encoder."""
    base = model.base_model
    base.forward = lambda *args, **kwargs: output  # instance attribute: shadows the class's forward
    try:
        yield
    finally:
        del base.forward


def head_logits(model: nn.Module, cache: FeatureCache, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The model's logits for the notes `idx`, computed by its head alone from the cache (with grad
    when the head's parameters require it)."""
    import torch

    n = len(idx)
    first = next(v for v in cache.fields.values() if v is not None)
    dummy = torch.zeros((n, 1), dtype=torch.long, device=first.device)  # the encoder never sees it
    dtype = next(model.parameters()).dtype
    with replaying(model, cache.output(idx, dtype)):
        return model(input_ids=dummy, attention_mask=torch.ones_like(dummy)).logits


def exact(model: nn.Module, cache: FeatureCache, logits: torch.Tensor, sample: int = 16,
          device: torch.device | None = None, rows: Sequence[int] | None = None) -> bool:
    """Do head-only logits from the cache reproduce `logits` (the full passes that filled it), in one of its
    readings? The first that does is settled on (`FeatureCache.settle`). Pass the `device` those passes ran on:
    the head then runs under the same autocast (bf16 on CUDA) as they did, else a float32 head would differ
    from a bf16 one by more than the tolerance and the shortcut be lost. Checked on the first `sample` notes,
    or on the first `sample` of `rows` (a cache filled note by note: the notes that have been run)."""
    import contextlib

    import torch

    from steuops.modeling import autocast

    rows = list(range(min(sample, len(cache)))) if rows is None else [int(i) for i in list(rows)[:sample]]
    was = cache.reading
    for reading in cache.readings():
        cache.reading = reading
        with torch.no_grad(), (autocast(device) if device is not None else contextlib.nullcontext()):
            try:
                replayed = head_logits(model, cache, rows).float()
            except Exception:  # noqa: BLE001 - a head that needs more than the cache holds: no shortcut
                continue
        if torch.allclose(replayed, logits[rows].float().to(replayed.device), atol=EXACT_ATOL, rtol=1e-4):
            cache.settle(reading)
            return True
    cache.reading = was
    return False


def changed_rows(original: nn.Module, edited: nn.Module) -> list[int] | None:
    """The token-embedding rows in which `edited`'s encoder differs from `original`'s, when that is all that
    differs in it (the head may differ too): then a note without those tokens gets exactly the original's
    encoder output. None when anything else in the encoder differs (other tensors, shapes, names)."""
    import torch

    from steuops.modeling import embedding_param_name

    emb = embedding_param_name(original)
    prefix = next(n for n, m in original.named_children() if m is original.base_model) + "."
    a, b = original.state_dict(), edited.state_dict()
    rows: list[int] = []
    for name in (n for n in a if n.startswith(prefix)):
        if name not in b or a[name].shape != b[name].shape:
            return None
        x, y = a[name], b[name].to(a[name].device)
        if name == emb:
            rows = torch.nonzero((x != y).any(dim=1)).flatten().tolist()
        elif not torch.equal(x, y):
            return None
    return rows


def touched(ids: Sequence[Sequence[int]], token_ids: Sequence[int]) -> np.ndarray:
    """(n,) bool: which tokenized notes contain at least one of `token_ids`."""
    picked = set(int(i) for i in token_ids)
    return np.array([bool(picked.intersection(row)) for row in ids], dtype=bool)
