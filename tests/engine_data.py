"""Keyword notes and small trained classifiers for the unlearning-engine tests (built in code, seconds).

Each class has its own keywords, so a 2-layer BERT learns every class in a few epochs and the
forget class is genuinely predicted before unlearning (a test that starts at F1 0 proves nothing).
"""

from __future__ import annotations

import numpy as np

from steuops.data import Notes

KEYWORDS = {
    "sepsis": ["lactate", "bacteremia", "pressors", "cultures"],
    "pneumonia": ["infiltrate", "consolidation", "sputum", "azithromycin"],
    "heart failure": ["orthopnea", "furosemide", "edema", "bnp"],
    "copd": ["wheeze", "inhaler", "tiotropium", "hyperinflation"],
}
LABELS = list(KEYWORDS)
FILLER = ["patient", "admitted", "with", "history", "of", "stable", "vitals", "reviewed", "plan", "follow", "up",
          "discharged", "home", "today", "noted", "ward"]


def keyword_notes(n: int = 200, seed: int = 0, multi_label: bool = True, filler_words: int = 3) -> Notes:
    """`n` notes of 2 keywords per label (30% carry a second label when multi-label) and `filler_words` fillers."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        first = LABELS[i % len(LABELS)]
        chosen = [first]
        if multi_label and rng.random() < 0.3:
            chosen.append(LABELS[(i + 1 + rng.integers(len(LABELS) - 1)) % len(LABELS)])
        words = [w for c in chosen for w in rng.choice(KEYWORDS[c], size=2, replace=False)]
        words += list(rng.choice(FILLER, size=filler_words))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(chosen)
    return Notes(texts, labels, note_ids=[f"n{i}" for i in range(n)], patient_ids=[f"p{i}" for i in range(n)])


def trained_classifier(notes: Notes, arch: str = "bert", multi_label: bool = True, seed: int = 0):
    """(model, tokenizer): a tiny classifier fine-tuned on `notes` until it knows every class; the tokenizer is
    the shape that goes with `arch` (steuops.tiny.tokenizer_for: WordPiece for BERT and DistilBERT)."""
    from steuops.tiny import classifier, tokenizer_for
    from steuops.training import TrainConfig, fine_tune

    tok = tokenizer_for(arch, notes.texts, vocab_size=200)
    model = classifier(LABELS, len(tok), arch=arch, multi_label=multi_label, seed=seed, layers=1)
    fine_tune(model, tok, notes, TrainConfig(epochs=8, lr=1e-2, max_length=16, batch_size=16, warmup=0.0,
                                             seed=seed), device="cpu")
    return model, tok


def untrained_export(out, *, version: str, forgotten: list[str]):
    """An untrained one-layer tiny classifier exported to `out` (16 tokens): for tests of how a server
    behaves, where the scores do not matter."""
    from steuops.export import write_export
    from steuops.tiny import classifier, wordpiece_tokenizer

    notes = keyword_notes(40, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=120)
    model = classifier(LABELS, len(tok), seed=0, layers=1)
    write_export(model, tok, out, name="dx", version=version, forgotten=forgotten, check_texts=notes.texts[:4],
                 max_length=16)
    return out
