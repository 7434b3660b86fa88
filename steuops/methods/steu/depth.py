"""Depth: remove a forgotten class from the features the head reads, not only from the head's output.

STEU's suppression loss only needs the head to stop saying "sepsis"; the pooled features can still
carry the class, so a probe or a re-fitted head finds it again. A depth objective adds a term that
moves the features themselves (through the edited rows: the encoder stays frozen):

- "neighbours": each forget note's head-input features are pulled towards the mean of the ORIGINAL
  features of its m nearest retain notes (cosine, in the original feature space). The note ends up
  where a note without the class would sit, which is where a model that never saw the class puts it.
- "neutral": the edited rows are pulled towards a neutral embedding (the [MASK] row, else the mean
  row): the selected tokens say less and less, to the encoder and to any head re-fitted on top.

Only notes that contain an edited token can move (the others keep the original's features exactly),
so depth grows with how much of the cohort the selected tokens cover. torch only, imported inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from steuops import modeling

if TYPE_CHECKING:
    import torch
    from torch import nn

DEPTHS = ("none", "neighbours", "neutral")


@contextmanager
def head_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, every forward pass of `model` appends what its head reads (BERT: the pooled output;
    a head that takes the sequence: its first position), with gradients, to the yielded list."""
    import torch

    seen: list[torch.Tensor] = []
    fresh = [True]

    def start(_module, _args, _kwargs):
        fresh[0] = True

    def tap(_module, args, kwargs):
        if fresh[0]:
            value = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
            seen.append(value[:, 0] if value.dim() == 3 else value)
            fresh[0] = False

    hooks = [model.register_forward_pre_hook(start, with_kwargs=True)]
    hooks += [m.register_forward_pre_hook(tap, with_kwargs=True) for m in modeling.head_modules(model)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def neighbour_targets(features: torch.Tensor, forget_rows: torch.Tensor, pool: torch.Tensor,
                      neighbours: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """(n, d) targets: for each forget row the mean original features of its `neighbours` nearest notes of
    `pool` (retain notes, cosine similarity); other rows keep their own features (never used). `groups` (n,)
    ints: a forget note looks only among pool notes of its own group when there are any (the same retained
    labels: a sepsis + pneumonia note moves towards pneumonia notes, not towards heart failure ones)."""
    import torch

    targets = features.clone()
    forget_idx = forget_rows.nonzero().flatten()
    if len(forget_idx) == 0 or len(pool) == 0:
        return targets
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    if groups is None:
        groups = torch.zeros(len(features), dtype=torch.long, device=features.device)
    for group in groups[forget_idx].unique():
        rows = forget_idx[groups[forget_idx] == group]
        same = pool[groups[pool] == group]
        candidates = same if len(same) else pool
        m = min(int(neighbours), len(candidates))
        for start in range(0, len(rows), 512):  # bounded memory at any cohort size
            part = rows[start : start + 512]
            nearest = candidates[(unit[part] @ unit[candidates].T).topk(m, dim=1).indices]
            targets[part] = features[nearest].mean(dim=1).to(targets.dtype)
    return targets


def label_groups(labels: torch.Tensor) -> torch.Tensor:
    """(n,) group ids of the rows of an (n, C) 0/1 label matrix: equal rows, equal ids."""
    return labels.round().long().unique(dim=0, return_inverse=True)[1]


def feature_loss(current: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared distance to the targets, relative to the targets' squared norm (scale-free)."""
    num = (current.float() - targets.float()).pow(2).sum(dim=1)
    return (num / targets.float().pow(2).sum(dim=1).clamp_min(1e-12)).mean()


def neutral_row(model: nn.Module, tokenizer: Any) -> torch.Tensor:
    """The embedding a token says nothing with: the [MASK] row when the tokenizer has one, else the mean row."""
    weight = modeling.embedding(model).weight.detach()
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is not None and 0 <= int(mask_id) < weight.shape[0]:
        return weight[int(mask_id)].float().clone()
    return weight.float().mean(dim=0)


def neutral_loss(rows: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the edited rows to the neutral embedding, relative to its squared norm."""
    if rows.shape[0] == 0:
        return rows.sum() * 0.0
    return ((rows - neutral.to(rows)).pow(2).sum(dim=1) / neutral.pow(2).sum().clamp_min(1e-12)).mean()
