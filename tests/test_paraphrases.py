"""The held-out paraphrase set (tests/data/paraphrases.jsonl): its contract, and its independence from the generator.

The set is hand-written clinical wording for the six demo classes. It is for evaluation only and must never be
trained on, so it has to stay independent of steuops.demo.notes: no paraphrase equals a generated note, and no
sentence of six or more words is lifted verbatim from one. The generator check works for any generator output.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

PATH = Path(__file__).parent / "data" / "paraphrases.jsonl"
CLASSES = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]
SLUGS = {c: c.replace(" ", "-") for c in CLASSES}
ID_RE = re.compile(r"^para-([a-z-]+)-(\d{2,})$")
MIN_PER_CLASS = 20
MIN_SENTENCE_WORDS = 6


def load_paraphrases(path: Path) -> list[dict]:
    """One JSON object per non-blank line; a line that does not parse fails with its line number."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:  # pragma: no cover - only on a broken file
            raise AssertionError(f"{path.name}:{i} does not parse: {e}") from e
    return rows


def _sentences(text: str) -> list[str]:
    return [s.strip().rstrip(".").strip() for s in text.split(". ") if s.strip()]


def _texts(notes) -> list[str]:
    """Texts from whatever the generator returns: a Notes-like object with .texts, or a list of str / dicts."""
    if hasattr(notes, "texts"):
        return list(notes.texts)
    return [n if isinstance(n, str) else n["text"] for n in notes]


@pytest.fixture(scope="module")
def paraphrases() -> list[dict]:
    return load_paraphrases(PATH)


@pytest.fixture(scope="module")
def generated_texts() -> list[str]:
    from steuops.demo.notes import generate

    return _texts(generate(n=3000, seed=0))


def test_every_line_has_the_contract_shape(paraphrases):
    assert paraphrases, "empty paraphrase set"
    for r in paraphrases:
        assert isinstance(r, dict) and set(r) == {"id", "labels", "text"}, r
        assert isinstance(r["id"], str) and isinstance(r["text"], str), r
        assert isinstance(r["labels"], list) and r["labels"], r
        assert all(lab in CLASSES for lab in r["labels"]), r
        assert len(set(r["labels"])) == len(r["labels"]), r
        assert r["text"].strip(), r


def test_ids_are_well_formed_and_unique(paraphrases):
    ids = [r["id"] for r in paraphrases]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, dupes
    for r in paraphrases:
        m = ID_RE.match(r["id"])
        assert m, r["id"]
        # the slug names the class the note was written for, which must be one of its labels
        assert m.group(1) in {SLUGS[lab] for lab in r["labels"]}, r


def test_texts_are_unique(paraphrases):
    norm = [" ".join(r["text"].lower().split()) for r in paraphrases]
    dupes = [t[:60] for t, n in Counter(norm).items() if n > 1]
    assert not dupes, dupes


def test_every_class_is_well_supported(paraphrases):
    counts = Counter(lab for r in paraphrases for lab in r["labels"])
    short = {c: counts.get(c, 0) for c in CLASSES if counts.get(c, 0) < MIN_PER_CLASS}
    assert not short, short


def test_no_paraphrase_equals_a_generated_note(paraphrases, generated_texts):
    generated = {" ".join(t.split()) for t in generated_texts}
    same = [r["id"] for r in paraphrases if " ".join(r["text"].split()) in generated]
    assert not same, same


def test_no_long_sentence_is_lifted_from_the_generator(paraphrases, generated_texts):
    corpus = "\x00".join(generated_texts)  # a sentence never spans two notes: none contains NUL
    lifted = [
        (r["id"], s)
        for r in paraphrases
        for s in _sentences(r["text"])
        if len(s.split()) >= MIN_SENTENCE_WORDS and s in corpus
    ]
    assert not lifted, lifted
