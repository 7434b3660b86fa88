"""STEU: Sparse Token Embedding Unlearning.

The whole model is frozen. Only k rows of the token-embedding matrix (chosen by PMI, see
selection.py) and the classification head are trained. The k rows live in a small (k x d)
nn.Parameter that is substituted into `inputs_embeds` wherever a selected id occurs, so the
gradient is k x d, never a masked dense gradient over the whole vocabulary. The forward pass is
`model(inputs_embeds=..., attention_mask=...)`, which every transformers encoder supports.

Losses (the original logits are computed once, from the frozen original, before any update):
- multi-label (sigmoid): forget = BCE(forget-class logits, 0) on notes carrying a forget class;
  retain = BCE(sigmoid(new), sigmoid(original)) on every other (note, class) cell, i.e. every
  non-target class everywhere plus the target class on notes that do not carry it (those keep
  the original's low score instead of drifting).
- single-label (softmax): forget = hinge max(0, max forget logit - max retained logit + margin)
  on notes labelled with, or originally predicted as, a forget class; retain = cross-entropy to
  the original distribution renormalised over the retained classes, on every note.

Dropout stays off during training (eval mode): the encoder is frozen and the distillation target
is the dropout-free original, so training sees exactly the function it is matched against.
The helpers here (`Batches`, `teacher_logits`, `train`) are shared with the baselines.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import modeling
from steuops.errors import ConfigError
from steuops.methods import MethodConfig, UnlearnResult, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from steuops.data import Notes
    from steuops.modeling import Progress


@dataclass
class STEUConfig(MethodConfig):
    k: int = 256  # embedding rows to edit
    epochs: int = 5
    batch_size: int = 16
    max_length: int = 256
    lr: float = 1e-2  # rate for the k embedding rows
    head_lr: float = 1e-3
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    margin: float = 2.0  # single-label: how far below the best retained logit the forget logit is pushed
    alpha: float = 1.0  # add-alpha smoothing of the PMI token probabilities
    weight_decay: float = 0.0
    # 0 = every retain note every epoch; r > 0 = each epoch sees all forget notes plus a fresh seeded
    # sample of r x (number of forget notes) retain notes (cheaper on large cohorts)
    retain_per_forget: float = 0.0
    cpu_bf16: bool = False  # bf16 autocast for training steps on CPUs with native bf16 (modeling.autocast)

    def __post_init__(self) -> None:
        checks = {
            "k": self.k >= 0, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "max_length": self.max_length >= 4, "lr": self.lr > 0, "head_lr": self.head_lr > 0,
            "forget_weight": self.forget_weight >= 0, "retain_weight": self.retain_weight >= 0,
            "alpha": self.alpha > 0, "margin": self.margin >= 0, "retain_per_forget": self.retain_per_forget >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"{type(self).__name__}: invalid {', '.join(bad)}",
                hint="k >= 0, epochs/batch_size >= 1, rates and alpha > 0, weights and margin >= 0",
            )


# ---- data -------------------------------------------------------------------------------------
class Batches:
    """Notes tokenized once; `get(idx)` pads a batch on the device."""

    def __init__(self, tokenizer: Any, notes: Notes, max_length: int, device: torch.device) -> None:
        enc = tokenizer(list(notes.texts), truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = device

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)


def teacher_logits(model: nn.Module, batches: Batches, batch_size: int) -> torch.Tensor:
    """The frozen original's logits on every note, in note order (float32, on the device)."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(batches), batch_size):
            ids, mask = batches.get(range(start, min(start + batch_size, len(batches))))
            with modeling.autocast(batches.device):
                out.append(model(input_ids=ids, attention_mask=mask).logits.float())
    return torch.cat(out)


# ---- losses -----------------------------------------------------------------------------------
@dataclass
class Task:
    """What the losses need to know about the label space and the notes."""

    multi_label: bool
    forget_cols: list[int]
    keep_cols: list[int]
    forget_rows: torch.Tensor  # (n,) bool: note carries a forget class
    teacher: torch.Tensor  # (n, C) original logits

    @classmethod
    def build(cls, model: nn.Module, forget: Sequence[str], notes: Notes, teacher: torch.Tensor) -> Task:
        import torch

        fcols = modeling.check_forget(model, list(forget))
        n_labels = len(modeling.label_names(model))
        keep = [j for j in range(n_labels) if j not in fcols]
        rows = torch.from_numpy(notes.has_any(list(forget))).to(teacher.device)
        return cls(modeling.is_multi_label(model), fcols, keep, rows, teacher)


def suppress_losses(z: torch.Tensor, idx: torch.Tensor, task: Task, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(forget, retain) losses of STEU for a batch of logits `z` of notes `idx`."""
    import torch
    import torch.nn.functional as F

    t = task.teacher[idx]
    frows = task.forget_rows[idx]
    if task.multi_label:
        forget_cells = torch.zeros_like(z, dtype=torch.bool)
        forget_cells[:, task.forget_cols] = frows[:, None]
        bce = F.binary_cross_entropy_with_logits(z, torch.sigmoid(t), reduction="none")
        to_zero = F.binary_cross_entropy_with_logits(z, torch.zeros_like(z), reduction="none")
        forget = to_zero[forget_cells].mean() if forget_cells.any() else z.sum() * 0
        retain = bce[~forget_cells].mean()
        return forget, retain
    keep, fcols = task.keep_cols, task.forget_cols
    target = torch.softmax(t[:, keep], dim=-1)
    retain = -(target * torch.log_softmax(z[:, keep], dim=-1)).sum(-1).mean()
    hit = frows | torch.isin(t.argmax(-1), torch.tensor(fcols, device=z.device))
    gap = z[:, fcols].max(-1).values - z[:, keep].max(-1).values + margin
    forget = torch.relu(gap[hit]).mean() if hit.any() else z.sum() * 0
    return forget, retain


# ---- the training loop ------------------------------------------------------------------------
Forward = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # (ids, mask) -> logits
LossFn = Callable[["torch.Tensor", "torch.Tensor", Task], tuple["torch.Tensor", "torch.Tensor"]]


def train(
    forward: Forward,
    groups: list[dict[str, Any]],
    batches: Batches,
    task: Task,
    config: MethodConfig,
    loss_fn: LossFn,
    *,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    weight_decay: float = 0.0,
    progress: Progress | None = None,
) -> list[dict[str, float]]:
    """Seeded AdamW over `groups`; returns the mean losses of every epoch."""
    import torch

    if not any(g["params"] for g in groups):
        raise ConfigError("nothing to train: no embedding rows and no head parameters selected",
                          hint="use k >= 1 or train the head")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)
    ratio = float(getattr(config, "retain_per_forget", 0.0) or 0.0)
    history = []
    for epoch in range(config.epochs):
        order = epoch_order(task.forget_rows.cpu(), ratio, generator)
        steps = (len(order) + config.batch_size - 1) // config.batch_size
        sums = np.zeros(2)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            ids, mask = batches.get(idx.tolist())
            with modeling.autocast(batches.device, cpu_bf16=getattr(config, "cpu_bf16", False)):
                z = forward(ids, mask)
            forget, retain = loss_fn(z.float(), idx.to(task.teacher.device), task)
            loss = forget_weight * forget + retain_weight * retain
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += [forget.item(), retain.item()]
            if progress:
                progress("unlearn", epoch * steps + step + 1, config.epochs * steps)
        history.append({"epoch": epoch + 1, "forget": sums[0] / steps, "retain": sums[1] / steps})
    return history


def epoch_order(forget_rows: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Note indices for one epoch, shuffled: all notes, or all forget notes + ratio x as many retain notes."""
    import torch

    n = len(forget_rows)
    if ratio <= 0:
        return torch.randperm(n, generator=generator)
    forget = forget_rows.nonzero().flatten()
    retain = (~forget_rows).nonzero().flatten()
    take = min(len(retain), int(round(ratio * len(forget))))
    retain = retain[torch.randperm(len(retain), generator=generator)[:take]]
    both = torch.cat([forget, retain])
    return both[torch.randperm(len(both), generator=generator)]


class RowSubstitution:
    """Forward pass with k trainable embedding rows substituted into `inputs_embeds`."""

    def __init__(self, model: nn.Module, token_ids: Sequence[int], device: torch.device) -> None:
        import torch
        from torch import nn

        self.model = model
        self.embedding = modeling.embedding(model)
        weight = self.embedding.weight
        self.ids = torch.tensor(list(token_ids), dtype=torch.long, device=device)
        self.rows = nn.Parameter(weight.detach()[self.ids].float().clone())
        # position of each vocabulary id in `rows`, -1 where the row is not trained
        self.slot = torch.full((weight.shape[0],), -1, dtype=torch.long, device=device)
        self.slot[self.ids] = torch.arange(len(self.ids), device=device)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        if len(self.ids) == 0:
            return self.model(input_ids=ids, attention_mask=mask).logits
        embeds = self.embedding(ids)
        slot = self.slot[ids]
        picked = self.rows[slot.clamp(min=0)].to(embeds.dtype)
        embeds = torch.where((slot >= 0)[..., None], picked, embeds)
        return self.model(inputs_embeds=embeds, attention_mask=mask).logits

    def write_back(self) -> None:
        import torch

        if len(self.ids):
            with torch.no_grad():
                self.embedding.weight[self.ids] = self.rows.detach().to(self.embedding.weight.dtype)


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy on `device`, every parameter frozen, dropout off. The input is never touched."""
    edited = copy.deepcopy(model).to(device).eval()
    for param in edited.parameters():
        param.requires_grad_(False)
    return edited


def head_params(model: nn.Module) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    out = [params[n] for n in modeling.head_param_names(model)]
    for p in out:
        p.requires_grad_(True)
    return out


def sparse_unlearn(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    forget: list[str],
    notes: Notes,
    config: STEUConfig,
    token_ids: Sequence[int],
    *,
    train_head: bool,
    device: torch.device,
    progress: Progress | None = None,
    info: dict[str, Any] | None = None,
) -> UnlearnResult:
    """Train the given embedding rows (and the head if asked) of a copy; return it with its TokenEdit."""
    from steuops.edit import TokenEdit

    start = time.perf_counter()
    home = next(model.parameters()).device
    edited = frozen_copy(model, device)
    batches = Batches(tokenizer, notes, config.max_length, device)
    task = Task.build(edited, forget, notes, teacher_logits(edited, batches, config.batch_size))
    forward = RowSubstitution(edited, token_ids, device)
    groups = [{"params": [forward.rows] if len(token_ids) else [], "lr": config.lr}]
    groups.append({"params": head_params(edited) if train_head else [], "lr": config.head_lr})
    history = train(
        forward, groups, batches, task, config,
        lambda z, idx, t: suppress_losses(z, idx, t, config.margin),
        forget_weight=config.forget_weight, retain_weight=config.retain_weight,
        weight_decay=config.weight_decay, progress=progress,
    )
    forward.write_back()
    for param in edited.parameters():
        param.requires_grad_(False)
    edited.to(home)
    info = {**(info or {}), "losses": history}
    edit = TokenEdit.capture(model, edited, list(token_ids), method=name, config=config.to_dict(),
                             forget=forget, info={"tokens": info.get("tokens", [])})
    return UnlearnResult(method=name, model=edited, config=config.to_dict(), forget=forget,
                         seconds=time.perf_counter() - start, edit=edit, info=info)


def pmi_selection(model: nn.Module, tokenizer: Any, notes: Notes, forget: list[str], config: STEUConfig):
    from steuops.methods.steu.selection import select_tokens

    rows = modeling.embedding(model).weight.shape[0]
    return select_tokens(tokenizer, notes.texts, notes.has_any(forget), config.k, alpha=config.alpha,
                         max_length=config.max_length, vocab_size=rows)


@register("steu")
class STEU:
    config_class = STEUConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        start = time.perf_counter()
        modeling.head_param_names(model)  # a typed ModelError before any work
        selection = pmi_selection(model, tokenizer, notes, forget, config)
        result = sparse_unlearn("steu", model, tokenizer, forget, notes, config, selection.ids,
                                train_head=True, device=device, progress=progress,
                                info={"tokens": selection.to_info()})
        result.seconds = time.perf_counter() - start
        return result
