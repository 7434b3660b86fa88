"""bench/long_notes.py's two ways of running STEU's teacher pass (the MiniLM runs it times are too slow for the suite):
"in order" is the pass as it was, and it gives every note what the pass gives it now; the patch that picks a way is
undone after each run, and both ways make the same edit."""

from __future__ import annotations

import torch
from bench_helpers import load_bench
from engine_data import keyword_notes, trained_classifier

from steuops.methods import loop
from steuops.methods.steu import method

CPU = torch.device("cpu")


def test_the_old_pass_gives_every_note_what_the_new_one_gives_it():
    bench = load_bench("passes")  # where the old pass lives; long_notes runs STEU with it
    notes = keyword_notes(40, seed=3)  # 7 or 9 words: one or two labels
    model, tok = trained_classifier(notes)
    batches = loop.Batches(tok, notes, 16, CPU)
    old, old_cache = bench.teacher_pass_in_order(model, batches, 8)
    new, new_cache = loop.teacher_pass(model, batches, 8)
    torch.testing.assert_close(old, new, atol=1e-5, rtol=0)
    for key, value in old_cache.fields.items():
        if value is not None:
            torch.testing.assert_close(value, new_cache.fields[key], atol=1e-5, rtol=0)


def test_each_way_makes_the_same_edit_and_the_patch_is_undone():
    bench = load_bench("long_notes")
    notes = keyword_notes(120, seed=0)
    model, tok = trained_classifier(notes)
    model = model.double()  # float64: the ways batch notes differently (test_retain_sampling.assert_same_training)
    config = {"k": 8, "epochs": 2, "max_length": 16, "lr": 1e-2, "head_lr": 1e-2, "retain_per_forget": 1.0,
              "early_stop": False}
    real = loop.teacher_pass
    a, edit_a = bench.one_run("in_order", model, tok, notes, config)
    assert loop.teacher_pass is real and method.teacher_pass is real
    b, edit_b = bench.one_run("by_length", model, tok, notes, config)
    assert loop.teacher_pass is real and method.teacher_pass is real
    assert a["teacher_calls"] >= 2 and a["teacher_calls"] == b["teacher_calls"]  # the cohort, then each epoch's draw
    assert a["rows"] == b["rows"] == len(edit_a.edit.token_ids) > 0
    assert edit_a.edit.token_ids == edit_b.edit.token_ids
    torch.testing.assert_close(edit_a.edit.rows, edit_b.edit.rows, atol=1e-5, rtol=0)


def test_an_edit_against_itself_differs_by_nothing_and_rows_must_match():
    bench = load_bench("long_notes")
    notes = keyword_notes(80, seed=1)
    model, tok = trained_classifier(notes)
    config = {"k": 6, "epochs": 1, "max_length": 16, "retain_per_forget": 1.0, "early_stop": False}
    _, edit = bench.one_run("by_length", model, tok, notes, config)
    assert bench.row_diff(edit, edit) == {"same_rows": True, "max_abs_diff": 0.0, "relative_norm_diff": 0.0}
    _, other = bench.one_run("by_length", model, tok, notes, {**config, "k": 3})
    assert bench.row_diff(edit, other) == {"same_rows": False}
