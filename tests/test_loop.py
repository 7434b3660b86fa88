"""steuops.methods.loop: the shared training loop and its update-step hook (train(..., on_step=hook)).

The hook runs once per optimizer step, after backward and before the step, and may rewrite the gradients in place;
without one (and with a no-op one) STEU's edit is exactly what it was.
"""

from __future__ import annotations

import pytest
import torch
from engine_data import LABELS, keyword_notes

from steuops import modeling
from steuops.methods import MethodConfig, unlearn
from steuops.methods import loop as loop_module
from steuops.methods.loop import Batches, StepContext, Task, frozen_copy, head_params, teacher_logits, train
from steuops.methods.steu import method
from steuops.methods.steu.method import STEUConfig, sparse_unlearn, suppress_losses
from steuops.tiny import classifier, wordpiece_tokenizer

CPU = torch.device("cpu")
STEU_CFG = {"k": 6, "epochs": 2, "max_length": 16, "lr": 1e-2, "head_lr": 1e-2, "min_patients": 1}


@pytest.fixture(scope="module")
def tiny():
    notes = keyword_notes(48, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=200)
    return classifier(LABELS, len(tok), layers=1), tok, notes


def setup_loop(tiny):
    """A frozen copy with its head and word embeddings trainable, its batches, task and a forward that records
    the parameters (and the note indices) each step starts from."""
    model, tok, notes = tiny
    edited = frozen_copy(model, CPU)
    batches = Batches(tok, notes, 16, CPU)
    task = Task.build(edited, ["sepsis"], notes, teacher_logits(edited, batches, 16))
    embedding = modeling.embedding(edited).weight
    embedding.requires_grad_(True)
    groups = [{"params": [embedding], "lr": 1e-2}, {"params": head_params(edited), "lr": 1e-2}]
    seen: list[tuple[list[int], list[torch.Tensor]]] = []

    def forward(idx: list[int]) -> torch.Tensor:
        seen.append((idx, [p.detach().clone() for g in groups for p in g["params"]]))
        ids, mask = batches.get(idx)
        return edited(input_ids=ids, attention_mask=mask).logits

    return edited, batches, task, groups, forward, seen


def losses(z, idx, task):
    return suppress_losses(z, idx, task, margin=1.0)


def test_hook_runs_once_per_step_after_backward_before_the_step(tiny):
    edited, batches, task, groups, forward, seen = setup_loop(tiny)
    config = MethodConfig(epochs=2, batch_size=10)
    calls: list[StepContext] = []

    def hook(ctx: StepContext) -> None:
        params = ctx.params()
        assert [p for g in groups for p in g["params"]] == params and ctx.groups is ctx.optimizer.param_groups
        assert all(p.grad is not None for p in params)  # backward has run
        assert any(bool(p.grad.abs().sum() > 0) for p in params)
        idx, before = seen[-1]  # what this step's forward started from
        assert ctx.idx.tolist() == idx
        for p, b in zip(params, before, strict=True):
            assert torch.equal(p.detach(), b)  # the step has not run yet
        assert not ctx.forget.requires_grad and not ctx.retain.requires_grad
        calls.append(ctx)

    history = train(forward, groups, batches, task, config, losses, on_step=hook)
    steps = -(-len(batches) // config.batch_size)
    assert len(calls) == len(seen) == config.epochs * steps  # once per optimizer step
    assert [c.step for c in calls] == list(range(len(calls)))
    assert [c.epoch for c in calls] == [e for e in range(config.epochs) for _ in range(steps)]
    for e, row in enumerate(history):
        mine = calls[e * steps : (e + 1) * steps]
        assert row["forget"] == pytest.approx(sum(float(c.forget) for c in mine) / steps)
        assert row["retain"] == pytest.approx(sum(float(c.retain) for c in mine) / steps)
    # ...and each step did move the parameters after the hook: the next forward starts from new values
    for (_, a), (_, b) in zip(seen, seen[1:], strict=False):
        assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_hook_that_zeroes_every_gradient_leaves_the_parameters_unchanged(tiny):
    edited, batches, task, groups, forward, _ = setup_loop(tiny)
    before = {n: p.detach().clone() for n, p in edited.named_parameters()}

    def zero(ctx: StepContext) -> None:
        for p in ctx.params():
            p.grad.zero_()

    history = train(forward, groups, batches, task, MethodConfig(epochs=2, batch_size=10), losses,
                    weight_decay=0.0, on_step=zero)
    assert len(history) == 2 and history[0]["forget"] > 0
    for name, p in edited.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def test_steu_edit_is_unchanged_by_a_no_op_hook(tiny, monkeypatch):
    """STEU as it runs (no hook) and through train with a no-op hook injected: the same edit, bit for bit."""
    model, tok, notes = tiny
    plain = unlearn("steu", model, tok, ["sepsis"], notes, STEU_CFG, device="cpu")
    calls = []

    def hooked_train(*args, **kwargs):
        assert kwargs.get("on_step") is None  # STEU itself passes no hook
        return loop_module.train(*args, **{**kwargs, "on_step": calls.append})

    monkeypatch.setattr(method, "train", hooked_train)
    hooked = unlearn("steu", model, tok, ["sepsis"], notes, STEU_CFG, device="cpu")
    assert calls and len(calls) == len({c.step for c in calls})
    assert plain.edit.token_ids == hooked.edit.token_ids and len(plain.edit.token_ids) > 0
    assert torch.equal(plain.edit.rows, hooked.edit.rows)
    assert not torch.equal(plain.edit.rows, plain.edit.original_rows)  # it did train
    assert plain.edit.head.keys() == hooked.edit.head.keys()
    for name in plain.edit.head:
        assert torch.equal(plain.edit.head[name], hooked.edit.head[name])
    assert plain.info["losses"] == hooked.info["losses"]


def test_sparse_unlearn_passes_the_hook_to_train(tiny):
    """sparse_unlearn(on_step=...) reaches the loop: zeroed gradients (no weight decay) leave rows and head as they were."""
    model, tok, notes = tiny

    def zero(ctx: StepContext) -> None:
        for p in ctx.params():
            p.grad.zero_()

    config = STEUConfig.from_dict(STEU_CFG)
    result = sparse_unlearn("steu", model, tok, ["sepsis"], notes, config, [5, 7, 9], train_head=True,
                            device=CPU, on_step=zero)
    assert torch.equal(result.edit.rows, result.edit.original_rows)
    for name in result.edit.head:
        assert torch.equal(result.edit.head[name], result.edit.original_head[name])
