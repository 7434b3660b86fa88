"""bench/passes.py's two modes and its token count (the MiniLM runs it times are too slow for the suite): "in order"
is the old batching, "by length" the new one, and both give the same outputs for every note."""

from __future__ import annotations

import numpy as np
import torch
from bench_helpers import load_bench
from engine_data import KEYWORDS, LABELS

from steuops.tiny import classifier, wordpiece_tokenizer


def _notes_and_model(seed: int):
    """21 notes of 1 to 14 words, a tokenizer over them and a one-layer classifier."""
    rng = np.random.default_rng(seed)
    words = [w for label in LABELS for w in KEYWORDS[label]]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 15)))) for _ in range(21)]
    tok = wordpiece_tokenizer(texts, vocab_size=120)
    return texts, tok, classifier(LABELS, len(tok), seed=seed + 3, layers=1).eval()


def test_both_modes_give_each_note_its_own_outputs_and_the_token_counts_are_the_batches():
    bench = load_bench("passes")
    texts, tok, model = _notes_and_model(1)
    a = bench.in_order(model, tok, texts, 4, 16, torch.device("cpu"))
    b = bench.by_length(model, tok, texts, 4, 16, torch.device("cpu"))
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5, rtol=0)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=16)["input_ids"]]
    assert bench.padded_tokens(tok, texts, 4, 16, sort=False) == sum(
        len(c) * max(c) for c in (lengths[s : s + 4] for s in range(0, len(lengths), 4)))
    ordered = sorted(lengths, reverse=True)
    assert bench.padded_tokens(tok, texts, 4, 16, sort=True) == sum(
        len(c) * max(c) for c in (ordered[s : s + 4] for s in range(0, len(ordered), 4)))
    assert sum(lengths) <= bench.padded_tokens(tok, texts, 4, 16, sort=True) < bench.padded_tokens(
        tok, texts, 4, 16, sort=False)


def test_both_teacher_modes_give_each_note_its_own_outputs():
    from steuops.data import Notes
    from steuops.methods.loop import Batches

    bench = load_bench("passes")
    texts, tok, model = _notes_and_model(2)
    batches = Batches(tok, Notes(texts, [[] for _ in texts]), 16, torch.device("cpu"))
    a, b = bench.teacher_in_order(model, batches, 4), bench.teacher_by_length(model, batches, 4)
    assert a.logits.shape == (21, len(LABELS)) and a.features.shape[0] == 21
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5, rtol=0)
