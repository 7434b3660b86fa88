"""Full fine-tuning of any transformers sequence classifier on `Notes` (the demo model, the retrain baseline).

Multi-label models (config.problem_type == multi_label_classification) train with BCE on the
multi-hot targets; single-label ones with cross-entropy on each note's first known label. The label
columns are the model's own labels: names in the notes that the model lacks are ignored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import modeling
from steuops.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from steuops.data import Notes
    from steuops.modeling import Progress


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps with a linear warm-up from 0; then linear decay to 0 (transformers')
    freeze_embeddings: bool = False  # keep the embedding block (tokens, positions, LayerNorm) fixed
    # Keep the embedding block and the first N encoder layers fixed. A pretrained encoder's lower layers already
    # give general features, and the backward pass stops where the trained layers begin: on the demo (MiniLM,
    # 6 layers) N=3 cut a training step by a quarter for 0.01 less held-out macro-F1 (steuops/demo/model.py).
    freeze_layers: int = 0
    head_lr: float | None = None  # a larger rate for the fresh head converges in fewer epochs; None = lr
    grad_clip: float = 1.0
    # Multi-label only: weight each class's positives by its negative/positive ratio (capped at 10), so rare
    # classes are not left at "always negative" after a short run.
    balance: bool = False
    # bf16 autocast for CPU training steps where the CPU has native bf16 (modeling.autocast); CUDA always uses it.
    cpu_bf16: bool = False

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "lr": self.lr > 0, "batch_size": self.batch_size >= 1,
                  "max_length": self.max_length >= 8, "warmup": 0 <= self.warmup < 1,
                  "weight_decay": self.weight_decay >= 0, "head_lr": self.head_lr is None or self.head_lr > 0,
                  "freeze_layers": self.freeze_layers >= 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"TrainConfig: invalid {', '.join(bad)}", hint="epochs/batch_size >= 1, rates > 0, "
                              "0 <= warmup < 1, max_length >= 8, freeze_layers >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def targets(model: nn.Module, notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """(kept row indices, targets): multi-hot float32 (n, C), or class indices int64 for single-label.
    Single-label drops notes with no label the model knows; multi-label keeps them as all-negative."""
    names = modeling.label_names(model)
    if modeling.is_multi_label(model):
        return np.arange(len(notes)), notes.multi_hot(names)
    index = {name: j for j, name in enumerate(names)}
    rows, ys = [], []
    for i, labels in enumerate(notes.labels):
        known = [index[x] for x in labels if x in index]
        if known:
            rows.append(i)
            ys.append(known[0])
    return np.array(rows, dtype=np.int64), np.array(ys, dtype=np.int64)


def fine_tune(
    model: nn.Module,
    tokenizer: Any,
    notes: Notes,
    config: TrainConfig | None = None,
    *,
    device: torch.device | str = "auto",
    progress: Progress | None = None,
) -> nn.Module:
    """Train every parameter (but the embeddings if `freeze_embeddings`, and the lowest `freeze_layers`
    layers with them) in place; returns the model on `device`, in eval mode. Seeded: the same inputs give
    the same weights on CPU."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    config = config or TrainConfig()
    device = modeling.resolve_device(device) if isinstance(device, str) else device
    rows, y = targets(model, notes)
    if len(rows) == 0:
        raise ConfigError(
            "no training note carries any of the model's labels",
            hint=modeling.labels_hint(modeling.label_names(model)),
        )
    torch.manual_seed(config.seed)  # dropout draws from the global generator
    rng = np.random.default_rng(config.seed)
    texts = [notes.texts[i] for i in rows]
    model.to(device)
    frozen = _freeze(model, config)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, _warmup_steps(total, config.warmup), total)
    loss_fn = _loss_fn(model, _pos_weight(y, device) if config.balance and modeling.is_multi_label(model) else None)
    model.train()
    step = 0
    try:
        for _ in range(config.epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(texts), config.batch_size):
                pick = order[start : start + config.batch_size]
                loss = _step(model, tokenizer, [texts[i] for i in pick], y[pick], loss_fn, config, device)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if progress:
                    progress("train", step, total)
    finally:
        for param in frozen:
            param.requires_grad_(True)
        model.eval()
    return model


def _step(model, tokenizer, texts: list[str], y: np.ndarray, loss_fn, config: TrainConfig, device) -> torch.Tensor:
    import torch

    batch = modeling.tokenize(tokenizer, texts, config.max_length).to(device)
    with modeling.autocast(device, cpu_bf16=config.cpu_bf16):
        logits = model(**batch).logits
    return loss_fn(logits.float(), torch.from_numpy(y).to(device))


def _loss_fn(model: nn.Module, pos_weight: torch.Tensor | None = None):
    from torch import nn

    return nn.BCEWithLogitsLoss(pos_weight=pos_weight) if modeling.is_multi_label(model) else nn.CrossEntropyLoss()


def _pos_weight(y: np.ndarray, device) -> torch.Tensor:
    import torch

    pos = y.sum(axis=0)
    weight = np.clip((len(y) - pos) / np.maximum(pos, 1.0), 1.0, 10.0).astype(np.float32)
    return torch.from_numpy(weight).to(device)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no decay on biases and LayerNorm weights; the head may take its own rate."""

    head = set(modeling.head_param_names(model))
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2
        groups.setdefault((name in head, decay), []).append(param)
    head_lr = config.head_lr or config.lr
    param_groups = [
        {"params": params, "lr": head_lr if is_head else config.lr,
         "weight_decay": config.weight_decay if decay else 0.0}
        for (is_head, decay), params in sorted(groups.items())
    ]
    return modeling.adam(param_groups, decoupled=True)


def _warmup_steps(total: int, warmup: float) -> int:
    """Optimiser steps of linear warm-up: the fraction `warmup` of `total`, at least 1 when warmup > 0."""
    return max(1, int(total * warmup)) if warmup > 0 else 0


def _freeze(model: nn.Module, config: TrainConfig) -> list:
    """Freeze what `config` keeps fixed (the embedding block, the lowest layers); return what was frozen."""
    if not (config.freeze_embeddings or config.freeze_layers):
        return []
    block = getattr(model.base_model, "embeddings", None)
    params = list(block.parameters()) if block is not None else [modeling.embedding(model).weight]
    if config.freeze_layers:
        layers = modeling.encoder_layers(model)
        if config.freeze_layers >= len(layers):
            raise ConfigError(f"freeze_layers {config.freeze_layers} leaves none of the model's {len(layers)} "
                              "encoder layers to train", hint=f"set freeze_layers below {len(layers)}")
        params += [p for layer in layers[: config.freeze_layers] for p in layer.parameters()]
    frozen = [p for p in params if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    return frozen
