"""steuops.features: the head run alone on cached encoder outputs reproduces the full model exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_data import LABELS, keyword_notes

from steuops.features import FeatureCache, exact, head_logits, record, touched
from steuops.tiny import classifier, wordpiece_tokenizer


@pytest.fixture(scope="module")
def texts_tok():
    notes = keyword_notes(40, seed=3)
    return notes.texts, wordpiece_tokenizer(notes.texts, vocab_size=120)


def full_pass(model, tok, texts: list[str], batch_size: int = 16):
    """Logits of full forward passes, recording the cache on the way (as the teacher pass does)."""
    out = []
    with torch.no_grad(), record(model) as rec:
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], padding=True, truncation=True, max_length=16,
                      return_tensors="pt")
            out.append(model(**enc).logits)
    return torch.cat(out), rec.cache()


@pytest.mark.parametrize(("arch", "multi_label"), [("bert", True), ("distilbert", False)])
def test_head_alone_reproduces_the_model(texts_tok, arch, multi_label):
    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), arch=arch, multi_label=multi_label, seed=1).eval()
    logits, cache = full_pass(model, tok, texts)
    assert len(cache) == len(texts)
    assert all(v is None or v.dim() in (2, 3) and (v.dim() == 2 or v.shape[1] == 1) for v in cache.fields.values())
    with torch.no_grad():
        replayed = head_logits(model, cache, list(range(len(texts))))
        some = head_logits(model, cache, [7, 3, 30])
    torch.testing.assert_close(replayed, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(some, logits[[7, 3, 30]], atol=1e-5, rtol=0)
    assert exact(model, cache, logits)
    # the encoder is untouched by the replay: a full pass afterwards still runs it
    again, _ = full_pass(model, tok, texts)
    torch.testing.assert_close(again, logits, atol=1e-6, rtol=0)


def test_gradients_reach_the_head_only(texts_tok):
    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), seed=1).eval()
    _, cache = full_pass(model, tok, texts)
    head_logits(model, cache, [0, 1, 2]).sum().backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.bert.parameters())  # the encoder never ran


def test_exact_fails_when_the_cache_does_not_match(texts_tok):
    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), seed=1).eval()
    logits, cache = full_pass(model, tok, texts)
    other = classifier(LABELS, len(tok), seed=2).eval()  # another encoder: its head must not be replayed on it
    _, foreign = full_pass(other, tok, texts)
    assert not exact(model, foreign, logits)
    first_two = FeatureCache({k: (v[:2] if v is not None else None) for k, v in foreign.fields.items()}, foreign.kind)
    swapped = cache.replace([0, 1], first_two)
    assert not exact(model, swapped, logits)  # rows 0 and 1 now hold another encoder's outputs
    with torch.no_grad():
        torch.testing.assert_close(head_logits(model, swapped, [5, 6]), logits[[5, 6]], atol=1e-5, rtol=0)


def test_touched():
    assert touched([[1, 2, 3], [4, 5], [], [9, 2]], [2]).tolist() == [True, False, False, True]
    assert not touched([[1, 2]], []).any()


def test_cache_filled_note_by_note(texts_tok):
    """blank(n) + write(rows, part): a cache filled as notes are first run (retain sampling) replays like one
    filled in a single pass; exact() checks it on the notes written (`rows`), not on the zero rows."""
    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), seed=1).eval()
    logits, cache = full_pass(model, tok, texts)
    rows = [30, 2, 17, 5]
    _, part = full_pass(model, tok, [texts[i] for i in rows])
    grown = part.blank(len(texts))
    assert len(grown) == len(texts) and all(v is None or not v.any() for v in grown.fields.values())
    grown.write(rows, part)
    grown.write([], part)  # nothing to write: a no-op
    with torch.no_grad():
        torch.testing.assert_close(head_logits(model, grown, rows), logits[rows], atol=1e-5, rtol=0)
    assert exact(model, grown, logits, rows=rows)
    assert not exact(model, grown, logits)  # the first notes are still zero rows
    torch.testing.assert_close(cache.replace(rows, part).fields["pooler_output"], cache.fields["pooler_output"],
                               atol=1e-5, rtol=0)


def test_a_blank_cache_holds_the_notes_written_not_the_split(texts_tok):
    """blank(n) over a million-note split costs nothing until notes are written; rows grow with them (the
    teacher pass with retain sampling and the audit's samples use this), and reads go by note index."""
    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), seed=1).eval()
    logits, cache = full_pass(model, tok, texts)
    big = cache.blank(1_000_000)
    assert len(big) == 1_000_000 and big.stored == 0
    assert all(v is None or v.numel() == 0 for v in big.fields.values())
    big.write([999_999, 12, 500_000], cache.take([0, 1, 2]))
    assert big.stored == 3 and all(v is None or len(v) == 64 for v in big.fields.values())
    with torch.no_grad():
        torch.testing.assert_close(head_logits(model, big, [12, 999_999, 500_000]), logits[[1, 0, 2]],
                                   atol=1e-5, rtol=0)
        big.write([12], cache.take([5]))  # a note written again keeps its row
        assert big.stored == 3
        torch.testing.assert_close(head_logits(model, big, [12]), logits[[5]], atol=1e-5, rtol=0)
        big.write(list(range(100, 200)), cache.take([i % len(texts) for i in range(100)]))
        assert big.stored == 103 and all(v is None or len(v) == 128 for v in big.fields.values())  # doubled
        torch.testing.assert_close(head_logits(model, big, [150, 999_999]), logits[[50 % len(texts), 0]],
                                   atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="never written"):
        big.output([7])
    assert not exact(model, big, torch.zeros(1_000_000, len(LABELS)))  # its first notes were never run
    assert exact(model, big, torch.zeros(1_000_000, len(LABELS)).index_copy_(0, torch.tensor([999_999]), logits[:1]),
                 rows=[999_999])
    with pytest.raises(ValueError, match="dense"):
        big.to_arrays()
    assert exact(model, cache, logits)  # settled on the same reading as `big`: the other readings' fields dropped
    assert big.take([12, 500_000]).to_arrays().keys() == cache.to_arrays().keys()


def test_changed_rows_names_the_edited_embedding_rows_or_none(texts_tok):
    from steuops.features import changed_rows

    texts, tok = texts_tok
    model = classifier(LABELS, len(tok), seed=0)
    twin = copy.deepcopy(model)
    assert changed_rows(model, twin) == []
    with torch.no_grad():
        twin.classifier.weight.add_(1.0)  # the head is not the encoder
    assert changed_rows(model, twin) == []
    with torch.no_grad():
        twin.get_input_embeddings().weight[[7, 3]] += 0.5
    assert changed_rows(model, twin) == [3, 7]
    with torch.no_grad():
        next(p for n, p in twin.named_parameters() if ".layer.0." in n).add_(1e-3)
    assert changed_rows(model, twin) is None, "an encoder layer changed: no note keeps the original's output"


@pytest.mark.parametrize("multi_label", [True, False])
def test_evaluate_runs_the_edited_encoder_only_on_notes_with_an_edited_token(texts_tok, monkeypatch, multi_label):
    """An STEU-shaped edit (embedding rows + head): the same Evaluation as full passes, for fewer passes. Given the
    original's pass (apply reads its parent's back from the audit cache: evaluate(original_pass=...)), the original
    runs on no note at all, and the Evaluation is the same again."""
    from steuops import metrics, modeling
    from steuops.data import Notes

    texts, tok = texts_tok
    notes = keyword_notes(40, seed=3)
    if not multi_label:
        notes = Notes(notes.texts, [ls[:1] for ls in notes.labels])
    model = classifier(LABELS, len(tok), seed=1, multi_label=multi_label)
    edited = copy.deepcopy(model)
    ids = tok(notes.texts, truncation=True, max_length=16)["input_ids"]
    share = {t: sum(t in row for row in ids) / len(ids) for t in set().union(*ids)}
    rows = [min(share, key=lambda t: abs(share[t] - 0.4))]  # a token some notes have and others do not
    with torch.no_grad():
        edited.get_input_embeddings().weight[rows] *= -3.0
        edited.classifier.bias[0] -= 0.5
    ran: dict[int, int] = {}
    real = metrics._logits_on

    def counted(m, tokenizer, texts, *args):
        ran[id(m)] = ran.get(id(m), 0) + len(texts)
        return real(m, tokenizer, texts, *args)

    monkeypatch.setattr(metrics, "_logits_on", counted)
    kept: list = []
    fast = metrics.evaluate(model, edited, tok, notes, ["sepsis"], device="cpu", max_length=16,
                            on_original=lambda logits, cache: kept.append((logits, cache)))
    hit = int(touched(ids, rows).sum())
    assert 0 < hit < len(notes) and ran[id(edited)] == hit and ran[id(model)] == len(notes)
    given = metrics.evaluate(model, edited, tok, notes, ["sepsis"], device="cpu", max_length=16, original_pass=kept[0],
                             on_original=lambda *_: pytest.fail("the original's pass was given, not run"))
    assert ran[id(model)] == len(notes) and ran[id(edited)] == 2 * hit
    monkeypatch.setattr("steuops.features.changed_rows", lambda *_: None)  # the shortcut impossible: full passes
    full = metrics.evaluate(model, edited, tok, notes, ["sepsis"], device="cpu", max_length=16)
    assert ran[id(edited)] == 2 * hit + len(notes)
    assert fast.to_dict() == given.to_dict() == full.to_dict()
    # ...and those are the edited model's own predictions
    direct = modeling.predict(modeling.logits(edited, tok, notes.texts, max_length=16), multi_label)
    assert metrics.scores(notes.multi_hot(LABELS), direct, LABELS, ["sepsis"]) == fast.after


@pytest.mark.parametrize("change", ["rows", "encoder"])
@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta", "mpnet", "deberta-v2"])
def test_evaluate_hands_over_the_edited_models_pass_that_replays_it_exactly(arch, change):
    """evaluate(on_edited=...): the edited model's held-out pass goes to the audit (apply keeps it in the audit cache)
    with the encoder outputs its head reads. A row edit (STEU) runs the encoder only on the notes with an edited
    token; any other change runs it on every note. Either way the head on that cache gives the full model's logits
    on every note, to 1e-5, so an audit that reads it back sees the model itself."""
    from steuops.metrics import evaluate
    from steuops.tiny import tokenizer_for

    notes = keyword_notes(40, seed=3)
    texts = list(notes.texts)
    tok = tokenizer_for(arch, texts)
    original = classifier(LABELS, len(tok), arch=arch, seed=1).eval()
    edited = copy.deepcopy(original)
    ids = tok(texts, truncation=True, max_length=16)["input_ids"]
    row = ids[0][2]
    encoder = dict(edited.base_model.named_parameters())
    with torch.no_grad():
        next(p for n, p in edited.named_parameters() if not any(p is q for q in encoder.values())).mul_(0.5)
        if change == "rows":
            edited.get_input_embeddings().weight[row] += 0.5
        else:
            next(p for n, p in encoder.items() if "embeddings" not in n and n.endswith("bias")).add_(0.1)
    handed: list = []
    evaluate(original, edited, tok, notes, ["sepsis"], device="cpu", max_length=16,
             on_edited=lambda logits, cache: handed.append((logits, cache)))
    assert len(handed) == 1
    logits, cache = handed[0]
    full, _ = full_pass(edited, tok, texts)
    assert len(cache) == len(texts)
    torch.testing.assert_close(torch.from_numpy(logits), full, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(head_logits(edited, cache, list(range(len(texts)))), full, atol=1e-5, rtol=0)
    if change == "rows":  # the notes without the row kept the original's encoder outputs
        hit = touched(ids, [row])
        assert 0 < hit.sum() < len(texts)

