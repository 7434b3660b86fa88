"""The training machinery every unlearning method builds on, independent of what it trains or how it scores.

A method picks the parameters to train, a forward pass (note indices -> logits) and a loss function; this
module holds the rest, so a second method is not a copy of STEU's loop and the baselines do not reach into
STEU's module for it:

- data: `Batches` (notes tokenized once, padded per batch), the teacher pass (`teacher_logits`,
  `teacher_pass`: the frozen original's logits, and the features the shortcut replays) and `SampledTeacher`
  (the same pass run lazily, note by note as retain sampling first needs them);
- `Task`: the label space and the teacher logits the losses read;
- the loop: `train` (seeded AdamW over parameter groups, `epoch_order` per epoch, early stopping through
  `stop`), `full_forward`, `frozen_copy`, `head_params`;
- the update-step hook: `train(..., on_step=hook)` calls `hook(StepContext)` after `loss.backward()` and
  before `optimizer.step()`, where a method can rewrite the gradients of the trained parameters in place
  (project the forget gradient, mask elements). Without a hook the loop is exactly the plain one.

STEU (steu/method.py) and the baselines (baselines.py) both train through `train`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import modeling
from steuops.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from steuops.data import Notes
    from steuops.features import FeatureCache
    from steuops.methods import MethodConfig
    from steuops.modeling import Progress


# ---- data -------------------------------------------------------------------------------------
class Batches:
    """Notes tokenized once; `get(idx)` pads a batch on the device. `lazy`: no note is tokenized up front,
    `ensure(idx)` tokenizes the ones it is first asked for (retain sampling never trains on most notes)."""

    def __init__(self, tokenizer: Any, notes: Notes, max_length: int, device: torch.device, *,
                 lazy: bool = False) -> None:
        self.tokenizer, self.texts, self.max_length = tokenizer, notes.texts, max_length
        self.ids: list[list[int]] = [None] * len(notes) if lazy else self._encode(list(notes.texts))  # type: ignore[list-item]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = device

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def ensure(self, idx: Sequence[int]) -> list[int]:
        """Tokenize the notes of `idx` that are not yet (a note's ids do not depend on the others in the
        call); returns those, ascending."""
        new = sorted({int(i) for i in idx if self.ids[int(i)] is None})
        if new:
            for i, ids in zip(new, self._encode([self.texts[i] for i in new]), strict=True):
                self.ids[i] = ids
        return new

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, idx: Sequence[int], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) padded to the longest note, or to `width` (a part of a batch padded like the whole)."""
        import torch

        rows = [self.ids[i] for i in idx]
        width = max([len(r) for r in rows] + [width or 0])
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)


def teacher_logits(model: nn.Module, batches: Batches, batch_size: int) -> torch.Tensor:
    """The frozen original's logits on every note, in note order (float32, on the device)."""
    return teacher_pass(model, batches, batch_size, features=False)[0]


def teacher_pass(model: nn.Module, batches: Batches, batch_size: int, *, features: bool = True,
                 rows: Sequence[int] | None = None) -> tuple[torch.Tensor, FeatureCache | None]:
    """Teacher logits, plus (when `features`) the encoder outputs the head reads, recorded in the same pass:
    of every note, or of the notes `rows` (tokenized already), in that order. The notes run longest first, so
    that a batch pads only to its own longest note (modeling.length_batches says what that saves)."""
    from contextlib import nullcontext

    import torch

    from steuops.features import record

    order = list(range(len(batches))) if rows is None else [int(i) for i in rows]
    by_length = np.argsort([-len(batches.ids[i]) for i in order], kind="stable")
    out, ran = [], []
    with torch.no_grad(), (record(model) if features else nullcontext()) as recorder:
        for start in range(0, len(order), batch_size):
            part = by_length[start : start + batch_size]
            ids, mask = batches.get([order[k] for k in part])
            with modeling.autocast(batches.device):
                out.append(model(input_ids=ids, attention_mask=mask).logits.float())
            ran.append(part)
    back = torch.as_tensor(np.argsort(np.concatenate(ran)), device=batches.device)
    return torch.cat(out)[back], (recorder.cache(ran) if recorder is not None else None)


class SampledTeacher:
    """The teacher pass for training with retain sampling: a note is tokenized and run through the frozen
    original (logits, and the features the shortcut replays) only once it is first needed: the forget notes
    before training (held-out ones included), each epoch's drawn retain notes as the epoch starts. On a large
    split that is the cohort, not the corpus. `logits` (n, C) and `cache` (n notes) are filled in place, rows
    of notes not run yet stay zero and are never read; `done` (n,) says which notes have been run.

    Training moves the head in place, so the original head's weights are kept aside and swapped in for each
    later pass (exactly, then the trained ones back); the embedding matrix is untouched until write-back and
    the encoder is frozen, so the rest of the model is the original throughout."""

    def __init__(self, model: nn.Module, batches: Batches, batch_size: int, *, features: bool) -> None:
        import torch

        self.model, self.batches, self.batch_size, self.features = model, batches, batch_size, features
        self.done = np.zeros(len(batches), dtype=bool)
        self.logits = torch.zeros((len(batches), len(modeling.label_names(model))), device=batches.device)
        self.cache: FeatureCache | None = None
        params = dict(model.named_parameters())
        self.head = [params[name] for name in modeling.head_param_names(model)]
        self.original = [p.detach().clone() for p in self.head]

    def run(self, idx: Sequence[int]) -> list[int]:
        """Run the notes of `idx` not run yet (ascending, in batches of batch_size); returns them."""
        import torch

        new = [i for i in sorted({int(i) for i in idx}) if not self.done[i]]
        if not new:
            return []
        self.batches.ensure(new)
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.head]
            for p, value in zip(self.head, self.original, strict=True):
                p.copy_(value)
            try:
                logits, cache = teacher_pass(self.model, self.batches, self.batch_size, rows=new,
                                             features=self.features and (self.cache is not None or not self.done.any()))
            finally:
                for p, value in zip(self.head, trained, strict=True):
                    p.copy_(value)
        rows = torch.tensor(new, dtype=torch.long, device=self.logits.device)
        self.logits[rows] = logits.to(self.logits)
        if cache is not None:
            if self.cache is None:
                self.cache = cache.blank(len(self.batches))
            self.cache.write(new, cache)
        self.done[new] = True
        return new


# ---- what the losses read ------------------------------------------------------------------------
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


# ---- the training loop ------------------------------------------------------------------------
Forward = Callable[[list[int]], "torch.Tensor"]  # note indices -> logits (n, C)
LossFn = Callable[["torch.Tensor", "torch.Tensor", Task], tuple["torch.Tensor", "torch.Tensor"]]
Stop = Callable[[list[dict[str, float]]], bool]  # epoch history so far -> stop now?


@dataclass
class StepContext:
    """What an update-step hook sees: one optimizer step, after `loss.backward()`, before `optimizer.step()`.

    The gradients are in `.grad` of the trained parameters (`params()`, or per group in `groups`); a hook may
    rewrite them in place (project, mask, zero) and that is what the step applies. A parameter whose `.grad`
    is None got no gradient this step (AdamW skips it). `forget` and `retain` are the loss values of the
    batch as `loss_fn` returned them (unweighted), DETACHED: backward has freed their graph, so the gradient
    the hook sees is the one of `forget_weight * forget + retain_weight * retain`, not each term's."""

    epoch: int  # 0-based
    step: int  # global optimizer-step index, 0-based, counted over every epoch so far
    idx: torch.Tensor  # (batch,) long, the batch's note indices (CPU, as epoch_order gave them)
    optimizer: torch.optim.Optimizer
    forget: torch.Tensor  # scalar, detached
    retain: torch.Tensor  # scalar, detached

    @property
    def groups(self) -> list[dict[str, Any]]:
        """The optimizer's param groups (the non-empty `groups` given to train, in order, with their settings)."""
        return self.optimizer.param_groups

    def params(self) -> list[torch.Tensor]:
        """Every trained parameter, group by group."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


StepHook = Callable[[StepContext], None]
# A method's own gradient computation for a batch (note indices): it runs its forward passes and leaves the
# batch's gradients in `.grad` of the trained parameters (the loop has zeroed them), and returns the
# (forget, retain) loss values, detached. For gradients the weighted sum cannot give: each loss's gradient
# apart, to project one against the other (methods/hdsu.py).
Gradients = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


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
    held_out: torch.Tensor | None = None,
    stop: Stop | None = None,
    prepare: Callable[[torch.Tensor], Any] | None = None,
    on_step: StepHook | None = None,
    gradients: Gradients | None = None,
) -> list[dict[str, float]]:
    """Seeded AdamW over `groups`; returns the mean losses of every epoch run. `held_out` (n,) bool: notes
    never trained on; `stop(history)` after each epoch ends training early when it says so; `prepare(order)`
    before each epoch, with the notes it will train on (SampledTeacher runs the ones not run yet).

    `on_step(StepContext)`: called once per optimizer step, after `loss.backward()` and before
    `optimizer.step()`: the gradients are in place and the parameters not yet moved, so the hook can read and
    rewrite `.grad` of the trained parameters in place (project the forget gradient, mask update elements).
    None (the default) runs exactly the loop without it.

    `gradients(idx)`: replaces forward, loss_fn and the backward of their weighted sum for each batch (see
    Gradients); `forward` and `loss_fn` are then not called by the loop."""
    import torch

    if not any(g["params"] for g in groups):
        raise ConfigError("nothing to train: no embedding rows and no head parameters selected",
                          hint="use k >= 1 or train the head")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = modeling.adam([g for g in groups if g["params"]], decoupled=True, weight_decay=weight_decay)
    ratio = float(getattr(config, "retain_per_forget", 0.0) or 0.0)
    history: list[dict[str, float]] = []
    done = 0  # optimizer steps taken
    for epoch in range(config.epochs):
        order = epoch_order(task.forget_rows.cpu(), ratio, generator, held_out)
        if prepare is not None:
            prepare(order)
        steps = (len(order) + config.batch_size - 1) // config.batch_size
        sums = np.zeros(2)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if gradients is None:
                with modeling.autocast(batches.device, cpu_bf16=getattr(config, "cpu_bf16", False)):
                    z = forward(idx.tolist())
                forget, retain = loss_fn(z.float(), idx.to(task.teacher.device), task)
                loss = forget_weight * forget + retain_weight * retain
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            else:
                optimizer.zero_grad(set_to_none=True)
                forget, retain = gradients(idx)
            if on_step is not None:
                on_step(StepContext(epoch=epoch, step=done, idx=idx, optimizer=optimizer,
                                    forget=forget.detach(), retain=retain.detach()))
            optimizer.step()
            done += 1
            sums += [forget.item(), retain.item()]
            if progress:
                progress("unlearn", epoch * steps + step + 1, config.epochs * steps)
        history.append({"epoch": epoch + 1, "forget": sums[0] / steps, "retain": sums[1] / steps})
        if stop is not None and stop(history):
            break
    return history


def full_forward(model: nn.Module, batches: Batches) -> Forward:
    """Every note through the whole model (methods that train the encoder have no shortcut)."""

    def forward(idx: list[int]) -> torch.Tensor:
        ids, mask = batches.get(idx)
        return model(input_ids=ids, attention_mask=mask).logits

    return forward


def epoch_order(forget_rows: torch.Tensor, ratio: float, generator: torch.Generator,
                held_out: torch.Tensor | None = None) -> torch.Tensor:
    """Note indices for one epoch, shuffled: all notes, or all forget notes + ratio x as many retain notes;
    never the `held_out` ones."""
    import torch

    allowed = torch.ones_like(forget_rows) if held_out is None else ~held_out.cpu()
    if ratio <= 0:
        pool = allowed.nonzero().flatten()
        return pool[torch.randperm(len(pool), generator=generator)]
    forget = (forget_rows & allowed).nonzero().flatten()
    retain = (~forget_rows & allowed).nonzero().flatten()
    take = min(len(retain), int(round(ratio * len(forget))))
    retain = retain[torch.randperm(len(retain), generator=generator)[:take]]
    both = torch.cat([forget, retain])
    return both[torch.randperm(len(both), generator=generator)]


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
