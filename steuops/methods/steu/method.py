"""STEU: Sparse Token Embedding Unlearning.

The whole model is frozen. Only k rows of the token-embedding matrix (chosen by a scorer, see
selection.py: "specific" by default, the paper's "pmi" on request; never a token that fewer than
`min_patients` forget-cohort patients' notes contain) and the classification head are trained.
The k rows live in a small (k x d) nn.Parameter that a forward hook on the embedding puts in place of the
matrix's rows wherever a selected id occurs, so the gradient is k x d, never a masked dense gradient over the
whole vocabulary. The forward pass is the model's own `model(input_ids=..., attention_mask=...)`: passing
`inputs_embeds` instead skips what some models derive from the ids (Longformer's global attention on the first
token fails without them).

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

The shortcut (config.shortcut, on by default): the pass that computes the teacher logits also
records what the head reads of the frozen encoder's output (steuops.features). A note that contains
no edited token gets exactly those features from the edited model too, so it goes through the head
only; only notes with an edited token run the encoder (forward and backward). With the
class-specific scorer that is a minority of the retain notes; head_only runs no encoder step at all.
If replayed logits do not reproduce the real ones (a head that reads more than the cache holds),
every note takes the full path (info["shortcut"]["used"] is False).

Retain sampling (retain_per_forget r > 0: each epoch trains on every forget note and a fresh seeded
sample of r x n_forget retain notes): only the notes training sees are tokenized and run by the teacher
pass (SampledTeacher): the forget notes (held-out ones included) before training, each epoch's drawn
retain notes as the epoch starts, through the original head. Same draws, same losses and edit as running
every note up front (tests/test_retain_sampling.py), at a cost that follows the cohort, not the split.
Token selection still reads the whole split unless `selection_retain_notes` bounds the retain notes it
counts. The default is r = 4 with early stopping (measured on the demo: README, "What STEU costs by default");
with r = 0 every note is tokenized and run once, up front.

The method-independent machinery (`Batches`, the teacher pass, `SampledTeacher`, `Task`, the loop `train`
and its update-step hook) is in steuops/methods/loop.py, shared with the baselines; this module holds what is
STEU's own: the config, the row substitution and shortcut forward, the losses, early stopping and depth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from steuops import modeling
from steuops.errors import ConfigError
from steuops.methods import MethodConfig, TeacherPass, UnlearnResult, register
from steuops.methods.loop import (
    Batches,
    SampledTeacher,
    StepHook,
    Stop,
    Task,
    frozen_copy,
    head_params,
    teacher_pass,
    train,
)
from steuops.methods.steu.depth import DEPTHS
from steuops.methods.steu.selection import SCORERS, check_k

if TYPE_CHECKING:
    import torch
    from torch import nn

    from steuops.data import Notes
    from steuops.features import FeatureCache
    from steuops.methods.steu.selection import Selection
    from steuops.modeling import Progress


@dataclass
class STEUConfig(MethodConfig):
    min_k: ClassVar[int] = 1  # a selection of no rows is refused here, before the registry or the model loads
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
    # sample of r x (number of forget notes) retain notes (cheaper on large cohorts: only the notes drawn
    # are tokenized and run by the teacher pass). 4, measured (bench/selection.py --configs, demo, sepsis, 3 seeds):
    # with early stopping, the same forget F1 (0) and retain F1 as every note for 5 epochs, in less than half the time;
    # 2 left 2 of 30 hand-written sepsis notes recognised on one seed of two.
    retain_per_forget: float = 4.0
    cpu_bf16: bool = False  # bf16 autocast for training steps on CPUs with native bf16 (modeling.autocast)
    # token scorer: "specific" (frequent in forget notes, rare in retain notes; the default since it measured better
    # on the demo: same forget F1, a smaller retain drop, 6x fewer parameters) or "pmi" (the paper's)
    scorer: str = "specific"
    # A token is selectable only if notes of at least this many distinct forget-cohort patients (notes, without
    # patient ids) contain it: a word only one patient's notes contain must never reach the edit or the report.
    min_patients: int = 5
    min_forget_notes: int = 3  # specific scorer: forget notes a token must occur in
    # specific scorer: share of the retain notes, and of each retained class's retain notes, a token may occur in.
    # 0.02, measured (bench/selection.py, each demo class forgotten): at 0.05 the edit has ~50% more rows touching
    # 43-55% of retain notes (0.02: 12-18%), takes ~40% longer, and left forget F1 0.028-0.044 for 3 of 6 classes.
    max_retain_fraction: float = 0.02
    # Retain notes the token scorer counts: 0 = every one (exact); m > 0 = at most m, a seeded sample, the
    # retain statistics estimated from it (selection.py: bounds the one cost that grows with the split when
    # retain_per_forget > 0; the forget notes and the min_patients rule are always counted in full)
    selection_retain_notes: int = 0
    show_tokens: bool = True  # False: token strings are "[hidden]" in info and in the edit (ids and scores stay)
    shortcut: bool = True  # notes without an edited token go through the head only, on cached encoder features
    # Early stopping (epochs becomes an upper bound): a seeded, patient-grouped `holdout` share of the forget
    # notes is kept out of training; after each epoch, stop once their forget F1 is <= stop_forget_f1 and the
    # retain loss changed by at most stop_retain_delta (relative) since the previous epoch. On by default: on the demo it
    # stops after 2-3 of 5 epochs with forget F1 0 on the held-out notes. The pipeline caps stop_forget_f1 at the
    # policy's forget limit. Fewer than MIN_HOLDOUT_FORGET forget notes: nothing is held out, every epoch runs.
    early_stop: bool = True
    holdout: float = 0.1
    stop_forget_f1: float = 0.01
    stop_retain_delta: float = 0.05
    # Depth (depth.py): "none" = behaviour only (the paper's losses); "neighbours" also pulls each forget note's
    # head-input features towards its nearest retain notes' original features; "neutral" pulls the edited rows
    # towards a neutral embedding. depth_weight scales that term next to the forget loss.
    depth: str = "none"
    depth_weight: float = 1.0
    depth_neighbours: int = 8

    def __post_init__(self) -> None:
        checks = {
            "k": self.k >= self.min_k, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "max_length": self.max_length >= 4, "lr": self.lr > 0, "head_lr": self.head_lr > 0,
            "forget_weight": self.forget_weight >= 0, "retain_weight": self.retain_weight >= 0,
            "alpha": self.alpha > 0, "margin": self.margin >= 0, "retain_per_forget": self.retain_per_forget >= 0,
            "scorer": self.scorer in SCORERS, "min_patients": self.min_patients >= 0,
            "min_forget_notes": self.min_forget_notes >= 1, "max_retain_fraction": 0 < self.max_retain_fraction <= 1,
            "selection_retain_notes": self.selection_retain_notes >= 0,
            "holdout": 0 < self.holdout < 1, "stop_forget_f1": 0 <= self.stop_forget_f1 <= 1,
            "stop_retain_delta": self.stop_retain_delta >= 0,
            "depth": self.depth in DEPTHS, "depth_weight": self.depth_weight >= 0, "depth_neighbours": self.depth_neighbours >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"{type(self).__name__}: invalid {', '.join(bad)}",
                hint=f"k >= {self.min_k}, epochs/batch_size >= 1, rates and alpha > 0, weights and margin >= 0, "
                     f"scorer in {SCORERS}, min_patients >= 0, min_forget_notes >= 1, 0 < max_retain_fraction <= 1, "
                     f"selection_retain_notes >= 0, depth in {DEPTHS}, depth_weight >= 0, depth_neighbours >= 1",
            )


    def check_model(self, model: Any, tokenizer: Any) -> None:
        """k fits the tokenizer's scorable ids (head_only's k=0 selects none, so has nothing to fit)."""
        if self.k >= 1:
            check_k(tokenizer, self.k, modeling.embedding(model).weight.shape[0])


# False: sparse_unlearn tokenizes every note and runs it through the teacher pass up front, also with retain
# sampling (the old path; tests compare the sampled one with it)
_SAMPLED_TEACHER = True


# ---- losses -----------------------------------------------------------------------------------
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


# ---- the sparse edit ----------------------------------------------------------------------------
class RowSubstitution:
    """Forward pass with k trainable embedding rows in place of the matrix's own (a hook on the embedding,
    held only during the call: other passes through the model see its matrix)."""

    def __init__(self, model: nn.Module, token_ids: Sequence[int], device: torch.device) -> None:
        import torch

        self.model = model
        self.embedding = modeling.embedding(model)
        self.table = modeling.RowTable(self.embedding.weight, token_ids, device=device, dtype=torch.float32)
        self.ids, self.rows = self.table.ids, self.table.rows

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if len(self.ids) == 0:
            return self.model(input_ids=ids, attention_mask=mask).logits
        hook = self.embedding.register_forward_hook(self.table.hook)
        try:
            return self.model(input_ids=ids, attention_mask=mask).logits
        finally:
            hook.remove()

    def write_back(self) -> None:
        import torch

        if len(self.ids):
            with torch.no_grad():
                self.embedding.weight[self.ids] = self.rows.detach().to(self.embedding.weight.dtype)


class NoteForward:
    """Logits for a batch of note indices. With a feature cache, notes that contain no edited token go
    through the head only (their encoder output is the original's: the encoder and every other row are
    frozen); the rest run the full forward with the substituted rows. Without one, every note runs in full."""

    def __init__(self, rows: RowSubstitution, batches: Batches, cache: FeatureCache | None = None,
                 ready: np.ndarray | None = None) -> None:
        from steuops.features import touched

        self.rows = rows
        self.batches = batches
        self.cache = cache
        # keep_features: each call also leaves what the head read, in batch order, in `features` (depth.py)
        self.keep_features = False
        self.features: torch.Tensor | None = None
        # `ready` (n,) bool, shared with a SampledTeacher: the notes run so far (None: all of them)
        self.ready = ready
        if ready is None:
            self.full = touched(batches.ids, rows.ids.tolist()) if cache is not None else np.ones(len(batches), bool)
        else:
            self.full = np.ones(len(batches), bool)
            self.add(np.flatnonzero(ready).tolist())

    def add(self, new: Sequence[int]) -> None:
        """Notes just run by a SampledTeacher: which of them need the encoder."""
        from steuops.features import touched

        if self.cache is not None and len(new):
            self.full[list(new)] = touched([self.batches.ids[i] for i in new], self.rows.ids.tolist())

    def __call__(self, idx: list[int]) -> torch.Tensor:
        from contextlib import nullcontext

        import torch

        from steuops.features import head_logits
        from steuops.methods.steu.depth import head_inputs

        tap = head_inputs(self.rows.model) if self.keep_features else nullcontext([])
        if self.cache is None:
            with tap as seen:
                z = self.rows(*self.batches.get(idx))
            self.features = seen[0] if seen else None
            return z
        full = [i for i in idx if self.full[i]]
        rest = [i for i in idx if not self.full[i]]
        width = max(len(self.batches.ids[i]) for i in idx)  # pad as the uncached path would: same numerics
        with tap as seen:
            parts = ([self.rows(*self.batches.get(full, width))] if full else []) + \
                    ([head_logits(self.rows.model, self.cache, rest)] if rest else [])
        z = torch.cat([p.float() for p in parts])
        if not full and len(self.rows.ids):
            # the uncached path gives the rows a zero gradient here, and AdamW still steps them on
            # momentum; with no gradient at all it would skip them, and the two paths would part
            z = z + self.rows.rows.sum() * 0.0
        # back to the batch's note order, so the losses see exactly what the uncached path sees
        where = {note: j for j, note in enumerate(full + rest)}
        order = torch.tensor([where[i] for i in idx], device=z.device)
        self.features = torch.cat([f.float() for f in seen])[order] if seen else None
        return z[order]

    def summary(self) -> dict[str, Any]:
        """used; notes = notes run by the teacher pass (with retain sampling: those trained on or held out,
        of split_notes), head_only_notes = those of them that never run the encoder."""
        if self.ready is None:
            return {"used": self.cache is not None, "notes": len(self.full),
                    "head_only_notes": int((~self.full).sum())}
        return {"used": self.cache is not None, "notes": int(self.ready.sum()),
                "head_only_notes": int((~self.full & self.ready).sum()), "split_notes": len(self.full)}


def note_forward(edited: nn.Module, rows: RowSubstitution, batches: Batches, cache: FeatureCache | None,
                 teacher: torch.Tensor, ready: np.ndarray | None = None) -> NoteForward:
    """NoteForward with the cache only if replaying it reproduces the teacher logits (checked on a sample:
    the first notes, or with `ready` the first notes run so far)."""
    from steuops.features import exact

    sample = None if ready is None else np.flatnonzero(ready).tolist()
    usable = cache is not None and (sample is None or len(sample) > 0) and \
        exact(edited, cache, teacher, device=batches.device, rows=sample)
    return NoteForward(rows, batches, cache if usable else None, ready)


def sparse_unlearn(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    forget: list[str],
    notes: Notes,
    config: STEUConfig,
    token_ids: Sequence[int] | Select,
    *,
    train_head: bool,
    device: torch.device,
    progress: Progress | None = None,
    info: dict[str, Any] | None = None,
    on_step: StepHook | None = None,
) -> UnlearnResult:
    """Train the given embedding rows (and the head if asked) of a copy; return it with its TokenEdit.
    `token_ids`: the rows, or a selector (see `choose_rows`) called once the forget notes' teacher logits exist.
    `on_step`: loop.train's update-step hook (None: none)."""
    from steuops.edit import TokenEdit

    start = time.perf_counter()
    if callable(token_ids):  # selection runs after the teacher pass: a k it cannot meet is refused before any work
        check_k(tokenizer, config.k, modeling.embedding(model).weight.shape[0])
    home = next(model.parameters()).device
    edited = frozen_copy(model, device)
    sampled = config.retain_per_forget > 0 and _SAMPLED_TEACHER
    batches = Batches(tokenizer, notes, config.max_length, device, lazy=sampled)
    teach = None
    if sampled:  # only the notes training will see: the forget notes now, the drawn retain notes epoch by epoch
        modeling.check_forget(edited, list(forget))  # the typed error before any work, as Task.build gives it
        teach = SampledTeacher(edited, batches, config.batch_size, features=config.shortcut)
        teach.run(np.flatnonzero(notes.has_any(list(forget))).tolist())
        teacher, cache = teach.logits, teach.cache
    else:
        teacher, cache = teacher_pass(edited, batches, config.batch_size, features=config.shortcut)
    task = Task.build(edited, forget, notes, teacher)
    if callable(token_ids):
        token_ids, chosen = choose_rows(token_ids, task, notes, forget, config)
        info = {**(info or {}), **chosen}
    rows = RowSubstitution(edited, token_ids, device)
    forward = note_forward(edited, rows, batches, cache, teacher, None if teach is None else teach.done)
    prepare = None if teach is None else (lambda order: forward.add(teach.run(order.tolist())))
    history, stopping = train_sparse(edited, notes, task, forward, config, train_head=train_head, progress=progress,
                                     prepare=prepare, tokenizer=tokenizer, on_step=on_step)
    rows.write_back()
    for param in edited.parameters():
        param.requires_grad_(False)
    edited.to(home)
    info = {**(info or {}), "losses": history, "shortcut": forward.summary(), "early_stop": stopping}
    if teach is None:
        info["retain_touched_fraction"] = retain_touched(batches, token_ids, task)
    else:
        info.update(sampled_retain_touched(batches, token_ids, task, teach.done, info.get("selection")))
    edit_info = {key: info[key] for key in ("tokens", "selection", "retain_touched_fraction") if key in info}
    edit = TokenEdit.capture(model, edited, list(token_ids), method=name, config=config.to_dict(),
                             forget=forget, info={"tokens": [], **edit_info})
    return UnlearnResult(method=name, model=edited, config=config.to_dict(), forget=forget,
                         seconds=time.perf_counter() - start, edit=edit, info=info,
                         teacher=_teacher_pass(forward, teacher, None if teach is None else teach.done, config))


def _teacher_pass(forward: NoteForward, teacher: torch.Tensor, done: np.ndarray | None,
                  config: STEUConfig) -> TeacherPass | None:
    """The original's pass that training ran (the notes run so far, with retain sampling), when its feature
    cache replays the teacher logits exactly (else no cache was kept: None)."""
    import torch

    if forward.cache is None:
        return None
    rows = np.arange(len(teacher)) if done is None else np.flatnonzero(done)
    picked = teacher[torch.as_tensor(rows, dtype=torch.long, device=teacher.device)]
    return TeacherPass(rows=rows, logits=picked.float().cpu().numpy(), cache=forward.cache.take(rows.tolist()),
                       max_length=config.max_length)


def train_sparse(edited: nn.Module, notes: Notes, task: Task, forward: NoteForward, config: STEUConfig, *,
                 train_head: bool, progress: Progress | None, tokenizer: Any = None,
                 prepare: Callable[[torch.Tensor], Any] | None = None,
                 on_step: StepHook | None = None) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """The rows (and the head if asked) trained with STEU's losses; (epoch losses, early-stopping record)."""
    groups = [{"params": [forward.rows.rows] if len(forward.rows.ids) else [], "lr": config.lr},
              {"params": head_params(edited) if train_head else [], "lr": config.head_lr}]
    held = holdout_rows(notes, task.forget_rows.cpu().numpy(), config) if config.early_stop else None
    stop, stopping = early_stopper(forward, task, held, config)
    deep = None if config.depth == "none" else \
        DepthTerm(config, forward, task, tokenizer, notes.multi_hot(modeling.label_names(edited)))

    def losses(z: torch.Tensor, idx: torch.Tensor, t: Task) -> tuple[torch.Tensor, torch.Tensor]:
        forget, retain = suppress_losses(z, idx, t, config.margin)
        return (forget if deep is None else forget + config.depth_weight * deep(idx)), retain

    def before_epoch(order: torch.Tensor) -> None:
        if prepare is not None:
            prepare(order)
        if deep is not None:
            deep.prepare()

    history = train(
        forward, groups, forward.batches, task, config, losses,
        forget_weight=config.forget_weight, retain_weight=config.retain_weight,
        weight_decay=config.weight_decay, progress=progress,
        held_out=None if held is None else _torch_bool(held), stop=stop, prepare=before_epoch, on_step=on_step,
    )
    stopping["epochs_run"] = len(history)
    return history, stopping


class DepthTerm:
    """The depth objective's term for a batch (depth.py; built only when depth is not "none"). The neighbour targets are
    the original features, taken before the first step from the notes run by then (all of them, or with
    retain sampling the forget notes and the first epoch's draw)."""

    def __init__(self, config: STEUConfig, forward: NoteForward, task: Task, tokenizer: Any,
                 labels: np.ndarray | None = None) -> None:
        import torch

        from steuops.methods.steu import depth

        self.config, self.forward, self.task = config, forward, task
        self.labels = None if labels is None else torch.from_numpy(labels)  # (n, C): neighbours share retained labels
        self.targets: torch.Tensor | None = None
        self.neutral = depth.neutral_row(forward.rows.model, tokenizer) if config.depth == "neutral" else None
        forward.keep_features = config.depth == "neighbours"

    def prepare(self) -> None:
        """Before an epoch: the first time, the original features and each forget note's target."""
        import torch

        from steuops.methods.steu.depth import label_groups, neighbour_targets

        if self.config.depth != "neighbours" or self.targets is not None:
            return
        ready = np.ones(len(self.forward.batches), bool) if self.forward.ready is None else self.forward.ready
        idx = np.flatnonzero(ready).tolist()
        feats = None
        with torch.no_grad():
            for start in range(0, len(idx), self.config.batch_size):
                with modeling.autocast(self.forward.batches.device, cpu_bf16=self.config.cpu_bf16):
                    self.forward(idx[start : start + self.config.batch_size])
                part = self.forward.features
                if feats is None:
                    feats = torch.zeros((len(self.forward.batches), part.shape[1]), device=part.device)
                feats[idx[start : start + len(part)]] = part.float()
        rows = torch.as_tensor(ready, device=feats.device)
        pool = (rows & ~self.task.forget_rows.to(feats.device)).nonzero().flatten()
        kept = self.labels[:, self.task.keep_cols] if self.labels is not None else None
        self.targets = neighbour_targets(feats, self.task.forget_rows.to(feats.device) & rows, pool,
                                         self.config.depth_neighbours,
                                         None if kept is None else label_groups(kept).to(feats.device))

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        from steuops.methods.steu import depth

        rows = self.forward.rows.rows
        if self.config.depth == "neutral":
            return depth.neutral_loss(rows, self.neutral)
        if self.config.depth != "neighbours" or self.forward.features is None:
            return rows.sum() * 0.0
        mine = self.task.forget_rows[idx].to(self.forward.features.device)
        if not mine.any():
            return rows.sum() * 0.0
        targets = self.targets[idx.to(self.targets.device)][mine]
        return depth.feature_loss(self.forward.features[mine], targets)


MIN_HOLDOUT_FORGET = 10  # fewer forget notes than this: all of them train, and no early stopping
STOP_MARGIN = 1.0  # logits: a held-out note is forgotten once its forget logit is this far below the boundary


def holdout_rows(notes: Notes, forget_rows: np.ndarray, config: STEUConfig) -> np.ndarray | None:
    """(n,) bool: about config.holdout of the forget notes, whole patients at a time (seeded), that are
    never trained on and decide when to stop; None when the cohort is too small to spare them."""
    forget_idx = np.flatnonzero(forget_rows)
    if len(forget_idx) < MIN_HOLDOUT_FORGET:
        return None
    by_patient: dict[Any, list[int]] = {}
    for i in forget_idx:
        by_patient.setdefault(notes.patient_ids[i] if notes.patient_ids is not None else int(i), []).append(int(i))
    keys = list(by_patient)
    want = max(1, int(round(config.holdout * len(forget_idx))))
    held = np.zeros(len(forget_rows), dtype=bool)
    for j in np.random.default_rng(config.seed).permutation(len(keys)):
        if held.sum() >= want:
            break
        held[by_patient[keys[j]]] = True
    return held if held.sum() < len(forget_idx) else None  # one patient with every forget note: keep them all


def early_stopper(forward: NoteForward, task: Task, held: np.ndarray | None,
                  config: STEUConfig) -> tuple[Stop | None, dict[str, Any]]:
    """(stop callback or None, the record it fills): stop once the held-out forget notes are forgotten
    (forget F1 <= stop_forget_f1) and the retain loss has levelled off (relative change <= stop_retain_delta)."""
    record: dict[str, Any] = {"used": held is not None, "holdout_notes": 0 if held is None else int(held.sum()),
                              "holdout_forget_f1": [], "stopped": False}
    if not config.early_stop:
        record["reason"] = "early_stop is off"
    elif held is None:
        record["reason"] = f"fewer than {MIN_HOLDOUT_FORGET} forget notes (or one patient): none held out"
    if held is None:
        return None, record
    idx = np.flatnonzero(held).tolist()

    def stop(history: list[dict[str, float]]) -> bool:
        f1 = holdout_forget_f1(forward, task, idx, config)
        record["holdout_forget_f1"].append(round(f1, 6))
        if len(history) < 2:
            return False
        before, now = history[-2]["retain"], history[-1]["retain"]
        # levelled off = changed little either way: a retain loss still rising means forgetting still pushes on it
        record["stopped"] = bool(f1 <= config.stop_forget_f1 and abs(before - now) <= config.stop_retain_delta * abs(before))
        return record["stopped"]

    return stop, record


def holdout_forget_f1(forward: NoteForward, task: Task, idx: list[int], config: STEUConfig) -> float:
    """F1 of "carries a forget class" on held-out notes that all carry one: 2p / (1 + p), p = share predicted."""
    import torch

    with torch.no_grad():
        parts = []
        for start in range(0, len(idx), config.batch_size):
            with modeling.autocast(forward.batches.device, cpu_bf16=config.cpu_bf16):
                parts.append(forward(idx[start : start + config.batch_size]).float())
        z = torch.cat(parts)
    return _remembered_f1(z, task, task.forget_cols)


def _remembered_f1(z: torch.Tensor, task: Task, cols: Sequence[int]) -> float:
    """F1 of "carries one of `cols`" for notes that all carry one, from their logits `z`: 2p / (1 + p), p = share
    still predicted. A note counts as predicted until it is forgotten with a margin: a small slice just under the
    decision boundary would stop training while unseen notes still sit above it."""
    cols = list(cols)
    if task.multi_label:
        hit = (z[:, cols] > -STOP_MARGIN).any(dim=1)
    else:
        keep = z[:, task.keep_cols].max(dim=1).values
        hit = z[:, cols].max(dim=1).values > keep - STOP_MARGIN
    p = float(hit.float().mean())
    return 2 * p / (1 + p)


def _torch_bool(mask: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(mask)


def retain_touched(batches: Batches, token_ids: Sequence[int], task: Task) -> float | None:
    """Share of the retain notes (as tokenized for training) that contain an edited token."""
    from steuops.features import touched

    retain = ~task.forget_rows.cpu().numpy()
    if not retain.any():
        return None
    return round(float(touched(batches.ids, token_ids)[retain].mean()), 6)


def sampled_retain_touched(batches: Batches, token_ids: Sequence[int], task: Task, ready: np.ndarray,
                           selection: dict[str, Any] | None) -> dict[str, Any]:
    """retain_touched_fraction when only some notes were tokenized (SampledTeacher): the token selection's
    figure when there is one (the same share over the retain notes it counted, every one of the split unless
    selection_retain_notes, on its own tokenization, which truncates the same way), else the share among the
    retain notes that were run (a uniform sample of them); retain_touched_notes = how many retain notes the
    figure is over."""
    from steuops.features import touched

    retain = ~task.forget_rows.cpu().numpy()
    if selection is not None and "retain_touched_fraction" in selection:
        return {"retain_touched_fraction": selection["retain_touched_fraction"],
                "retain_touched_notes": int(selection.get("retain_notes_counted", retain.sum()))}
    run = np.flatnonzero(retain & ready)
    if not len(run):
        return {"retain_touched_fraction": None, "retain_touched_notes": 0}
    share = touched([batches.ids[i] for i in run], token_ids).mean()
    return {"retain_touched_fraction": round(float(share), 6), "retain_touched_notes": len(run)}


def token_selection(model: nn.Module, tokenizer: Any, notes: Notes, forget: list[str], config: STEUConfig) -> Selection:
    """The configured scorer over the cohort, with the min-patients rule (patient ids when the notes have them)."""
    from steuops.methods.steu.selection import select_tokens

    rows = modeling.embedding(model).weight.shape[0]
    labels = modeling.label_names(model)
    kept = notes.multi_hot(labels)[:, [j for j, name in enumerate(labels) if name not in forget]].astype(bool)
    return select_tokens(tokenizer, notes.texts, notes.has_any(forget), config.k, alpha=config.alpha,
                         max_length=config.max_length, vocab_size=rows, scorer=config.scorer,
                         min_patients=config.min_patients, groups=notes.patient_ids,
                         min_forget_notes=config.min_forget_notes, max_retain_fraction=config.max_retain_fraction,
                         retain_sample=config.selection_retain_notes, seed=config.seed, classes=kept)


def selection_info(selection: Selection, config: STEUConfig) -> dict[str, Any]:
    """What a token-selecting method reports: the tokens (strings hidden unless config.show_tokens) and
    counts only about the rest (how many tokens the min-patients rule held back, never which)."""
    return {"tokens": selection.to_info(config.show_tokens),
            "selection": {"scorer": selection.scorer, **selection.stats},
            "tokens_below_min_patients": selection.stats["tokens_below_min_patients"]}


Select = Callable[[list[str]], "Selection"]  # forget classes -> the token selection for them


def choose_rows(select: Select, task: Task, notes: Notes, forget: Sequence[str],
                config: STEUConfig) -> tuple[list[int], dict[str, Any]]:
    """(row ids, selection info): the selection for the forget classes the input model still predicts.

    A class it already does not predict on its own training notes (a version that forgot it, whose child
    forgets one more class) needs no rows: those were edited by the version that forgot it, and the forget
    loss keeps its logit down on the head alone. Selecting for it anyway re-edits its tokens, and every note
    of it then runs the encoder. On the demo's second deletion (pneumonia from the version without sepsis)
    that was 180 rows touching 52% of the training notes, against 99 rows and 32% (2026-11-30). When every
    class is already forgotten, the selection is for all of them, as before."""
    done = already_forgotten(task, notes, forget, config)
    live = [c for c in forget if c not in done and notes.has_any([c]).any()] or list(forget)
    selection = select(live)
    info = selection_info(selection, config)
    # "already_forgotten": the classes left out of the selection (none when it fell back to all of them)
    info["selection"].update({"classes": live, "already_forgotten": [c for c in done if c not in live]})
    return list(selection.ids), info


def already_forgotten(task: Task, notes: Notes, forget: Sequence[str], config: STEUConfig) -> list[str]:
    """The forget classes the teacher (the input model) does not predict on the notes that carry them, by
    the rule that stops training: F1 = 2p / (1 + p) <= stop_forget_f1, p = share of the notes predicted with
    STOP_MARGIN (see holdout_forget_f1). The teacher logits of every forget note exist by then."""
    import torch

    done = []
    for name, col in zip(forget, task.forget_cols, strict=True):
        rows = np.flatnonzero(notes.has_any([name]))
        if not len(rows):
            continue
        z = task.teacher[torch.as_tensor(rows, device=task.teacher.device)].float()
        if _remembered_f1(z, task, [col]) <= config.stop_forget_f1:
            done.append(name)
    return done


@register("steu")
class STEU:
    config_class = STEUConfig

    def fit(self, model, tokenizer, forget, notes, config, *, device, progress=None) -> UnlearnResult:
        start = time.perf_counter()
        modeling.head_param_names(model)  # a typed ModelError before any work
        result = sparse_unlearn("steu", model, tokenizer, forget, notes, config,
                                lambda classes: token_selection(model, tokenizer, notes, classes, config),
                                train_head=True, device=device, progress=progress)
        result.seconds = time.perf_counter() - start
        return result
