"""Passes over notes sorted by length (modeling.length_batches): fewer pad tokens, and every output still in the
caller's note order, as a pass of one note at a time gives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_data import KEYWORDS, LABELS

from steuops import modeling
from steuops.audit.passes import forward_pass
from steuops.data import Notes
from steuops.features import head_logits
from steuops.tiny import classifier, tokenizer_for

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Notes of 1 to 14 words in a shuffled order, so that batches in order would pad most notes."""
    rng = np.random.default_rng(5)
    words = [w for label in LABELS for w in KEYWORDS[label]]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 15)))) for _ in range(37)]


def _one_at_a_time(model, tok, texts: list[str]) -> np.ndarray:
    """Each note alone: no padding at all."""
    with torch.no_grad():
        return np.concatenate([model(**modeling.tokenize(tok, [t], 16)).logits.numpy() for t in texts])


def test_batches_cover_every_note_once_longest_first_each_padded_to_its_own_longest(texts):
    tok = tokenizer_for("bert", texts, vocab_size=120)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=16)["input_ids"]]
    batches = list(modeling.length_batches(tok, texts, 8, 16))
    order = np.concatenate([rows for rows, _ in batches])
    assert sorted(order.tolist()) == list(range(len(texts)))
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    for rows, enc in batches:
        alone = modeling.tokenize(tok, [texts[i] for i in rows], 16)  # the same batch, tokenized as before
        assert set(enc) == set(alone)
        assert all(torch.equal(enc[key], alone[key]) for key in alone)
    padded = sum(enc["input_ids"].numel() for _, enc in batches)
    in_order = sum(len(chunk) * max(chunk) for chunk in (lengths[s : s + 8] for s in range(0, len(texts), 8)))
    assert sum(lengths) <= padded < in_order  # what sorting is for
    assert list(modeling.length_batches(tok, [], 8, 16)) == []


@pytest.mark.parametrize(("arch", "multi_label"), [("bert", True), ("distilbert", False), ("roberta", True),
                                                   ("llama", False)])
def test_logits_and_cache_come_back_in_note_order(texts, arch, multi_label):
    tok = tokenizer_for(arch, texts, vocab_size=120)
    model = classifier(LABELS, len(tok), arch=arch, multi_label=multi_label, seed=2, layers=1).eval()
    alone = _one_at_a_time(model, tok, texts)
    plain = modeling.logits(model, tok, texts, batch_size=8, max_length=16)
    got, cache = modeling.recorded_logits(model, tok, texts, batch_size=8, max_length=16)
    np.testing.assert_allclose(plain, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    assert len(cache) == len(texts)
    with torch.no_grad():  # row i of the cache replays note i (a decoder's head reads the last token: settle on it)
        for reading in cache.readings():
            cache.reading = reading
            replayed = head_logits(model, cache, [30, 2, 11]).numpy()
            if np.allclose(replayed, alone[[30, 2, 11]], atol=1e-5, rtol=0):
                break
        else:
            pytest.fail(f"no reading of the cache replays notes 30, 2 and 11 ({cache.readings()})")


def test_forward_pass_keeps_note_order(texts):
    tok = tokenizer_for("bert", texts, vocab_size=120)
    model = classifier(LABELS, len(tok), seed=3, layers=1).eval()
    alone = _one_at_a_time(model, tok, texts)
    seen: list[int] = []  # tokens (pads included) of each encoder call
    hook = model.bert.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["attention_mask"].numel()),
                                                with_kwargs=True)
    full = forward_pass(model, tok, texts, batch_size=8, max_length=16, device=CPU, keep_cache=True)
    hook.remove()
    np.testing.assert_allclose(full.logits, alone, atol=1e-5, rtol=0)
    assert full.exact and len(full.cache) == len(texts)
    with torch.no_grad():
        np.testing.assert_allclose(head_logits(model, full.cache, list(range(len(texts)))).numpy(), alone,
                                   atol=1e-5, rtol=0)
    # the features are the head's input for the same note: the pooled output of that note run alone
    with torch.no_grad():
        pooled = model.bert(**modeling.tokenize(tok, [texts[20]], 16)).pooler_output.numpy()
    np.testing.assert_allclose(full.features[20], pooled[0], atol=1e-5, rtol=0)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=16)["input_ids"]]
    ran = [len(c) * max(c) for c in np.array_split(sorted(lengths, reverse=True), range(8, len(texts), 8))]
    assert seen[: len(ran)] == ran  # the encoder ran the notes longest first (then the cache check's head replays)


def test_teacher_pass_runs_longest_first_and_answers_in_the_order_asked(texts):
    """STEU's teacher pass (methods.loop): the same sorting, over notes it has tokenized already, and for `rows`
    (retain sampling's later notes) the answers in the order of `rows`."""
    from steuops.methods.loop import Batches, teacher_pass

    tok = tokenizer_for("bert", texts, vocab_size=120)
    model = classifier(LABELS, len(tok), seed=4, layers=1).eval()
    alone = _one_at_a_time(model, tok, texts)
    batches = Batches(tok, Notes(texts, [[LABELS[0]]] * len(texts)), 16, CPU)
    seen: list[int] = []
    hook = model.bert.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["attention_mask"].numel()),
                                                with_kwargs=True)
    logits, cache = teacher_pass(model, batches, 8)
    hook.remove()
    np.testing.assert_allclose(logits.numpy(), alone, atol=1e-5, rtol=0)
    lengths = [len(ids) for ids in batches.ids]
    assert seen == [len(c) * max(c) for c in np.array_split(sorted(lengths, reverse=True), range(8, len(texts), 8))]
    rows = [30, 2, 11, 10, 0]
    some, part = teacher_pass(model, batches, 2, rows=rows)
    np.testing.assert_allclose(some.numpy(), alone[rows], atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(head_logits(model, cache, rows).numpy(), alone[rows], atol=1e-5, rtol=0)
        np.testing.assert_allclose(head_logits(model, part, list(range(len(rows)))).numpy(), alone[rows], atol=1e-5,
                                   rtol=0)
