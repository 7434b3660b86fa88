"""Baselines, registered and evaluated exactly like STEU, to show what each of its parts buys.

- head_only:      train the classification head only (no embedding rows). With the shortcut (the
                  default) no note runs the encoder after the teacher pass: every step is head-only,
                  on the features that pass cached.
- embedding_only: train the k selected rows only (config.scorer); the head stays the original.
- random_tokens:  k random non-special rows + head (the ablation of the PMI selection).
- grad_ascent:    gradient ascent on the forget notes over the top 3 encoder blocks + head, with
                  the same retain distillation as STEU so it is a fair comparison. The block stack
                  is found generically as the longest nn.ModuleList inside `model.base_model`
                  (BERT/RoBERTa: encoder.layer, DistilBERT: transformer.layer); its last `layers`
                  children are trained.
- retrain:        fine-tune the BASE encoder again on the notes with the forget labels removed
                  (multi-label: the column is kept and trained to 0; single-label: notes of the
                  forget class are dropped), with steuops.training.fine_tune. The gold standard
                  of exact unlearning and the cost STEU is measured against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from steuops import modeling
from steuops.errors import ConfigError, ModelError
from steuops.methods import MethodConfig, UnlearnResult, register
from steuops.methods.loop import Batches, Task, frozen_copy, full_forward, head_params, teacher_logits, train
from steuops.methods.steu.method import (
    STEUConfig,
    sparse_unlearn,
    suppress_losses,
    token_selection,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from steuops.data import Notes


# ---- sparse ablations of STEU -----------------------------------------------------------------
@dataclass
class HeadOnlyConfig(STEUConfig):
    min_k: ClassVar[int] = 0
    k: int = 0  # unused: no embedding rows are trained


@register("head_only")
class HeadOnly:
    config_class = HeadOnlyConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        return sparse_unlearn("head_only", model, tokenizer, forget, notes, config, [], train_head=True,
                              device=device, progress=progress)


@register("embedding_only")
class EmbeddingOnly:
    config_class = STEUConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        start = time.perf_counter()
        modeling.head_param_names(model)
        result = sparse_unlearn("embedding_only", model, tokenizer, forget, notes, config,
                                lambda classes: token_selection(model, tokenizer, notes, classes, config),
                                train_head=False, device=device, progress=progress)
        result.seconds = time.perf_counter() - start
        return result


@register("random_tokens")
class RandomTokens:
    config_class = STEUConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        from steuops.methods.steu.selection import HIDDEN, check_k

        modeling.head_param_names(model)
        pool = check_k(tokenizer, config.k, modeling.embedding(model).weight.shape[0])
        ids = sorted(int(i) for i in np.random.default_rng(config.seed).choice(pool, size=config.k, replace=False))
        # drawn from the vocabulary, not from the notes: the min-patients rule has nothing to hold back here
        strings = tokenizer.convert_ids_to_tokens(ids) if config.show_tokens else [HIDDEN] * len(ids)
        tokens = [{"id": i, "token": t, "score": None} for i, t in zip(ids, strings, strict=True)]
        return sparse_unlearn("random_tokens", model, tokenizer, forget, notes, config, ids, train_head=True,
                              device=device, progress=progress, info={"tokens": tokens})


# ---- gradient ascent on the top encoder blocks ------------------------------------------------
@dataclass
class GradAscentConfig(MethodConfig):
    layers: int = 3  # top encoder blocks to train
    epochs: int = 5
    lr: float = 2e-5  # encoder blocks
    head_lr: float = 1e-3
    cap: float = 5.0  # ascent stops on a note once its forget loss exceeds this (keeps it bounded)
    forget_weight: float = 1.0
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.layers < 1 or self.epochs < 1 or self.lr <= 0 or self.head_lr <= 0 or self.cap <= 0:
            raise ConfigError("GradAscentConfig: layers/epochs must be >= 1 and lr, head_lr, cap > 0",
                              hint="e.g. layers=3 epochs=5 lr=2e-5")

    def check_model(self, model: Any, tokenizer: Any) -> None:
        top_blocks(model, self.layers)  # layers over the encoder's blocks: refused before any work


def top_blocks(model: nn.Module, n: int) -> list[nn.Module]:
    """The last n blocks of the encoder: children of the longest nn.ModuleList in base_model."""
    from torch import nn

    base = getattr(model, "base_model", None)
    stacks = [m for m in base.modules() if isinstance(m, nn.ModuleList)] if base is not None else []
    if not stacks:
        raise ModelError(f"{type(model).__name__}: no encoder block stack (nn.ModuleList) found in base_model",
                         hint="grad_ascent needs a transformer encoder with a list of layers")
    stack = max(stacks, key=len)
    if n > len(stack):
        raise ConfigError(f"layers={n} but the encoder has {len(stack)} blocks", hint=f"use layers <= {len(stack)}")
    return list(stack)[-n:]


def ascent_losses(z: torch.Tensor, idx: torch.Tensor, task: Task, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(negated, capped forget-class loss on forget notes, STEU's retain distillation)."""
    import torch
    import torch.nn.functional as F

    _, retain = suppress_losses(z, idx, task, margin=0.0)
    rows = task.forget_rows[idx]
    if not rows.any():
        return z.sum() * 0, retain
    zf = z[rows]
    if task.multi_label:
        nll = F.binary_cross_entropy_with_logits(zf[:, task.forget_cols], torch.ones_like(zf[:, task.forget_cols]),
                                                 reduction="none")
    else:  # the forget class the original found most likely is the gold one to ascend on
        cols = torch.tensor(task.forget_cols, device=z.device)
        gold = cols[task.teacher[idx][rows][:, cols].argmax(-1)]
        nll = F.cross_entropy(zf, gold, reduction="none")
    return -torch.clamp(nll, max=cap).mean(), retain


@register("grad_ascent")
class GradAscent:
    config_class = GradAscentConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        start = time.perf_counter()
        home = next(model.parameters()).device
        edited = frozen_copy(model, device)
        blocks = [p for block in top_blocks(edited, config.layers) for p in block.parameters()]
        for p in blocks:
            p.requires_grad_(True)
        batches = Batches(tokenizer, notes, config.max_length, device)
        task = Task.build(edited, forget, notes, teacher_logits(edited, batches, config.batch_size))
        groups = [{"params": blocks, "lr": config.lr}, {"params": head_params(edited), "lr": config.head_lr}]
        history = train(
            full_forward(edited, batches),
            groups, batches, task, config, lambda z, idx, t: ascent_losses(z, idx, t, config.cap),
            forget_weight=config.forget_weight, retain_weight=config.retain_weight, progress=progress,
        )
        for p in edited.parameters():
            p.requires_grad_(False)
        return UnlearnResult(method="grad_ascent", model=edited.to(home), config=config.to_dict(), forget=forget,
                             seconds=time.perf_counter() - start, info={"losses": history})


# ---- retrain from the base encoder ------------------------------------------------------------
@dataclass
class RetrainConfig(MethodConfig):
    base: str | None = None  # a pretrained encoder directory; None = model.config._name_or_path if a dir
    epochs: int = 3
    lr: float = 5e-5
    head_lr: float | None = 1e-3
    batch_size: int = 16
    max_length: int = 256
    warmup: float = 0.1
    balance: bool = False  # weight positives per class, as a short multi-label fine-tune needs (TrainConfig)
    cpu_bf16: bool = False  # bf16 autocast on CPUs with native bf16 (TrainConfig)
    freeze_layers: int = 0  # keep the embeddings and the first N encoder layers fixed (TrainConfig)


def base_dir(model: nn.Module, base: str | Path | None) -> Path:
    if base is not None:
        path = Path(base)
        if not (path / "config.json").is_file():
            raise ConfigError(f"retrain base {str(path)!r} is not a model directory (no config.json)",
                              hint="pass base=<dir of a pretrained encoder saved with save_pretrained>")
        return path
    name = str(getattr(model.config, "_name_or_path", "") or "")
    if name and (Path(name) / "config.json").is_file():
        return Path(name)
    raise ConfigError("retrain needs the base encoder: the model does not name a local directory it came from",
                      hint="pass the retrain config option base=<pretrained encoder dir>")


def without(notes: Notes, forget: list[str]) -> Notes:
    """The notes with the forget labels removed (single-label notes left without a label are dropped
    by fine_tune; multi-label ones stay as negatives)."""
    from steuops.data import Notes as _Notes

    drop = set(forget)
    return _Notes(list(notes.texts), [[x for x in labels if x not in drop] for labels in notes.labels],
                  note_ids=notes.note_ids, patient_ids=notes.patient_ids, meta=dict(notes.meta))


def fresh_classifier(model: nn.Module, base: Path, seed: int) -> nn.Module:
    """The base encoder with a new, seeded head over the model's labels and problem type."""
    import torch
    from transformers import AutoModelForSequenceClassification

    names = modeling.label_names(model)
    torch.manual_seed(seed)
    fresh = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, problem_type=model.config.problem_type,
        ignore_mismatched_sizes=True,
    )
    inside = set(map(id, fresh.base_model.modules()))
    for module in fresh.modules():  # a base dir that holds a classifier must not lend it its old head
        if id(module) not in inside and module is not fresh and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh.float().eval()


@register("retrain")
class Retrain:
    config_class = RetrainConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        from steuops.training import TrainConfig, fine_tune

        start = time.perf_counter()
        home = next(model.parameters()).device
        fresh = fresh_classifier(model, base_dir(model, config.base), config.seed)
        train_config = TrainConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                                   max_length=config.max_length, seed=config.seed, warmup=config.warmup,
                                   head_lr=config.head_lr, balance=config.balance, cpu_bf16=config.cpu_bf16,
                                   freeze_layers=config.freeze_layers)
        fine_tune(fresh, tokenizer, without(notes, forget), train_config, device=device, progress=progress)
        info: dict[str, Any] = {"base": str(base_dir(model, config.base))}
        return UnlearnResult(method="retrain", model=fresh.to(home).eval(), config=config.to_dict(), forget=forget,
                             seconds=time.perf_counter() - start, info=info)
