"""Token selection: which wordpiece rows of the embedding matrix carry the forget class.

Two scorers, both over every wordpiece id t of the model's OWN tokenizer (the ids the embedding
matrix is indexed by), special tokens excluded:

`pmi` (the paper's):

    score(t) = log2( P(t | forget docs) / P(t | all docs) ) * ln(1 + n_forget(t))

with P(t | D) = (count_D(t) + alpha) / (N_D + alpha * V) the add-alpha smoothed relative frequency
of t among all token occurrences in D (V = number of scorable ids) and n_forget(t) the number of
forget documents that contain t. On clinical notes it favours frequent sub-words (`we`, `off`,
`51`): nearly every retain note then contains an edited row.

`specific` (class-specific): prefers tokens frequent in forget notes and rare in retain notes,

    score(t) = log2( p_f(t) / p_r(t) ) * ln(1 + df_f(t)),   p_X(t) = (df_X(t) + alpha) / (n_X + 2 alpha)

(df_X = documents of X containing t, n_X = documents in X): PMI against the RETAIN documents, by
document frequency, so a token does not score for being frequent inside the notes that contain it.
Eligible only when the token is at least twice as common in forget notes (log-odds >= 1), occurs
in at most `max_retain_fraction` of the retain notes AND of the retain notes of each retained class (given the
labels; classes with at least MIN_CLASS_NOTES retain notes), occurs in at least `min_forget_notes` forget
notes, and is not a pure number, punctuation, a one-character piece or a stop word. Why per class: a token in
10% of a small class's notes is in only 1.5% of all retain notes when that class is 15% of them; editing it
takes from that class. On the demo (sepsis, max_retain_fraction 0.02) the per-class cap cut the edit from 141
to 89 rows and the retain notes touched from 50% to 18%, with no class losing more F1 (2026-11-28, 2 seeds). Fewer than k
tokens may qualify; only those are edited. Why: every retain note that contains an edited row is a
note whose prediction the edit can move; on the demo notes (sepsis, MiniLM, k=256) PMI touches 100%
of retain notes and this scorer about a quarter (`Selection.stats["retain_touched_fraction"]`).

Privacy rule, for both scorers: a token may be selected only if it occurs in notes of at least
`min_patients` distinct patients of the forget cohort (distinct notes where there are no patient
ids). A word that only one patient's notes contain (a name, a street, a rare phrase) would otherwise
be a perfect PMI token and end up in the edit, the report and the registry. Tokens below the
threshold are counted (`Selection.stats["tokens_below_min_patients"]`), never listed, and their
scores are -inf in `all_scores`.

Documents are tokenized as the model sees them: without special tokens, truncated to `max_length`.

Retain sample (`retain_sample` m > 0, off by default): tokenizing every note of a large split is the one
cost of selection that grows with the corpus (12,800 notes: ~4 s on one CPU thread, most of STEU's time
with retain sampling). With more than m retain notes, only a seeded sample of m of them is tokenized and
counted; every forget note still is, so the forget counts and the min_patients rule stay exact. The retain
counts are scaled up by (retain notes / m): `specific` then works with the sampled share of retain notes
containing a token (an unbiased estimate of the true one), `pmi` with estimated corpus counts. Tokens near a
cut-off (e.g. max_retain_fraction) can fall either side; `stats["retain_notes_counted"]` = m, and
`retain_touched_fraction` is measured on the sample.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steuops.errors import ConfigError
from steuops.tokens import bare

SCORERS = ("pmi", "specific")
MIN_CLASS_NOTES = 20  # a retained class with fewer retain notes gets no per-class share (too noisy to cap on)
HIDDEN = "[hidden]"  # what a token string becomes when the policy hides tokens

# Function words carry no class; as edited rows they touch almost every note. Lower-case, whole pieces.
_STOP = (
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such",
    "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "also", "per", "pt",
    "patient", "patients",
)
STOP_WORDS = frozenset(_STOP)
_NUMBER = re.compile(r"^[\d.,:/%+\-]+$")


@dataclass
class Selection:
    ids: list[int]  # chosen ids, best first (ties broken by the smaller id); at most k
    scores: list[float]
    tokens: list[str]
    all_scores: np.ndarray  # (vocab,) score of every id; -inf for ids that cannot be chosen
    scorer: str = "pmi"
    stats: dict[str, Any] = field(default_factory=dict)  # counts and fractions only, never token strings

    def to_info(self, show_tokens: bool = True) -> list[dict[str, Any]]:
        """{"id", "token", "score"} per chosen id; the strings become HIDDEN unless `show_tokens`."""
        tokens = self.tokens if show_tokens else [HIDDEN] * len(self.ids)
        return [{"id": i, "token": t, "score": s} for i, t, s in zip(self.ids, tokens, self.scores, strict=True)]


@dataclass
class DocStats:
    """Per-id counts over the cohort, computed once and shared by the scorers and the rules."""

    count_all: np.ndarray  # occurrences in all docs
    count_forget: np.ndarray  # occurrences in forget docs
    doc_forget: np.ndarray  # forget docs containing the id
    doc_retain: np.ndarray  # retain docs containing the id
    patients: np.ndarray  # distinct forget-cohort patients (or notes) whose notes contain the id
    n_forget: int
    n_retain: int
    # (C, V) share of the retain docs of each retained class (with >= MIN_CLASS_NOTES of them) containing the id
    class_share: np.ndarray | None = None


def scorable_ids(tokenizer: Any, vocab_size: int | None = None) -> np.ndarray:
    """Every id of the tokenizer that has an embedding row, minus the special tokens."""
    size = len(tokenizer) if vocab_size is None else min(len(tokenizer), vocab_size)
    mask = np.ones(size, dtype=bool)
    special = [i for i in tokenizer.all_special_ids if 0 <= i < size]
    mask[special] = False
    return np.flatnonzero(mask)


def encode(tokenizer: Any, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids per text, without special tokens (truncated the way the model would see them)."""
    if not texts:
        return []
    kwargs: dict[str, Any] = {"add_special_tokens": False}
    if max_length:
        # the model spends two positions on [CLS]/[SEP]
        kwargs.update(truncation=True, max_length=max(1, max_length - 2))
    return tokenizer(list(texts), **kwargs)["input_ids"]


def doc_stats(encoded: Sequence[Sequence[int]], is_forget: np.ndarray, vocab_size: int,
              groups: Sequence[Any] | None = None, classes: np.ndarray | None = None) -> DocStats:
    """Counts per id. `groups` = a patient id per document (None: every document is its own patient);
    `classes` = (n, C) bool, the retained labels of each document (None: no per-class shares)."""
    zeros = [np.zeros(vocab_size, dtype=np.float64) for _ in range(4)]
    count_all, count_forget, doc_forget, doc_retain = zeros
    per_patient: dict[Any, np.ndarray] = {}
    # retained classes with enough retain documents to cap on, and how many each has
    class_notes = np.zeros(0) if classes is None else np.asarray(classes, bool)[~np.asarray(is_forget, bool)].sum(0)
    sized = np.flatnonzero(class_notes >= MIN_CLASS_NOTES)
    per_class = np.zeros((len(sized), vocab_size), dtype=np.float32)
    for i, (ids, forget) in enumerate(zip(encoded, is_forget, strict=True)):
        arr = np.asarray(ids, dtype=np.int64)
        counts = np.bincount(arr[(arr >= 0) & (arr < vocab_size)], minlength=vocab_size)
        present = counts > 0
        count_all += counts
        if not forget:
            doc_retain += present
            if len(sized):
                per_class[np.flatnonzero(classes[i, sized])] += present
            continue
        count_forget += counts
        doc_forget += present
        key = groups[i] if groups is not None else i
        per_patient[key] = per_patient.get(key, np.zeros(vocab_size, dtype=bool)) | present
    patients = np.sum(list(per_patient.values()), axis=0) if per_patient else np.zeros(vocab_size)
    n_forget = int(np.sum(is_forget))
    share = per_class / class_notes[sized][:, None] if len(sized) else None
    return DocStats(count_all, count_forget, doc_forget, doc_retain, np.asarray(patients, dtype=np.float64),
                    n_forget, len(encoded) - n_forget, share)


def _check_alpha(alpha: float) -> None:
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}", hint="use the default smoothing alpha=1.0")


def pmi_scores(stats: DocStats, keep: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """The paper's PMI x log-document-frequency score; -inf outside `keep`."""
    _check_alpha(alpha)
    v = float(keep.sum())
    n_all = stats.count_all[keep].sum()
    n_forget = stats.count_forget[keep].sum()
    p_forget = (stats.count_forget + alpha) / (n_forget + alpha * v)
    p_all = (stats.count_all + alpha) / (n_all + alpha * v)
    scores = np.log2(p_forget / p_all) * np.log1p(stats.doc_forget)
    scores[~keep] = -np.inf
    return scores


def specific_scores(stats: DocStats, keep: np.ndarray, alpha: float = 1.0,
                    max_retain_fraction: float = 0.05) -> np.ndarray:
    """Document-level log-odds forget vs retain x ln(1 + df_f); -inf outside `keep`, below a 2x
    enrichment, or in more than `max_retain_fraction` of the retain notes or of any retained class's notes."""
    _check_alpha(alpha)
    p_f = (stats.doc_forget + alpha) / (stats.n_forget + 2 * alpha)
    p_r = (stats.doc_retain + alpha) / (stats.n_retain + 2 * alpha)
    log_odds = np.log2(p_f / p_r)
    scores = log_odds * np.log1p(stats.doc_forget)
    common = stats.doc_retain > max_retain_fraction * max(stats.n_retain, 1)
    if stats.class_share is not None and len(stats.class_share):
        common |= stats.class_share.max(0) > max_retain_fraction
    scores[~keep | (log_odds < 1.0) | common] = -np.inf
    return scores


def score_tokens(encoded: Sequence[Sequence[int]], is_forget: np.ndarray, scorable: np.ndarray, vocab_size: int,
                 alpha: float = 1.0) -> np.ndarray:
    """(vocab_size,) PMI scores (no eligibility rules); kept for callers of the paper's formula."""
    keep = np.zeros(vocab_size, dtype=bool)
    keep[scorable] = True
    return pmi_scores(doc_stats(encoded, np.asarray(is_forget, dtype=bool), vocab_size), keep, alpha)


def is_content_piece(token: str) -> bool:
    """False for pure numbers, punctuation/symbols, one-character pieces and stop words, whatever the tokenizer's
    word markers ("##ors", "Ġthe", "▁51": see tokens.py)."""
    piece = bare(token)
    if len(piece) <= 1 or _NUMBER.match(piece) or piece.lower() in STOP_WORDS:
        return False
    return not all(unicodedata.category(ch)[0] in "PS" for ch in piece)


def content_mask(tokenizer: Any, size: int) -> np.ndarray:
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    return np.array([tok is not None and is_content_piece(tok) for tok in tokens], dtype=bool)


def touched_fraction(encoded: Sequence[Sequence[int]], rows: np.ndarray, ids: Sequence[int]) -> float | None:
    """Share of the documents `rows` that contain at least one of `ids` (None when there are none)."""
    picked = set(int(i) for i in ids)
    docs = [encoded[i] for i in np.flatnonzero(rows)]
    if not docs:
        return None
    return round(sum(1 for d in docs if picked.intersection(d)) / len(docs), 6)


def select_tokens(
    tokenizer: Any,
    texts: Sequence[str],
    is_forget: np.ndarray,
    k: int = 256,
    *,
    alpha: float = 1.0,
    max_length: int | None = None,
    vocab_size: int | None = None,
    scorer: str = "pmi",
    min_patients: int = 0,
    groups: Sequence[Any] | None = None,
    min_forget_notes: int = 1,
    max_retain_fraction: float = 0.05,
    retain_sample: int = 0,
    seed: int = 0,
    classes: np.ndarray | None = None,
) -> Selection:
    """The top-k eligible ids (fewer, possibly none, when fewer qualify). `vocab_size` = rows of the
    embedding matrix (ids beyond it are skipped); `groups` = patient id per text for the `min_patients`
    rule (0 = no rule); `retain_sample` > 0: count at most that many retain notes, a sample seeded by `seed`
    (see the module notes); `classes` = (n, C) bool retained labels per text: `specific` then also caps the
    share of each retained class's notes a token may occur in (max_retain_fraction). Defaults are the paper's PMI without rules; STEUConfig sets the method's own."""
    is_forget = np.asarray(is_forget, dtype=bool)
    scorable = _checked(tokenizer, is_forget, k, scorer, vocab_size)
    if retain_sample < 0:
        raise ConfigError(f"retain_sample must be >= 0, got {retain_sample}", hint="0 counts every retain note")
    size = len(tokenizer) if vocab_size is None else min(len(tokenizer), vocab_size)
    n_retain = int((~is_forget).sum())
    sampled = 0 < retain_sample < n_retain
    if sampled:
        picked = np.random.default_rng([seed, 5]).choice(np.flatnonzero(~is_forget), size=retain_sample, replace=False)
        counted = is_forget.copy()
        counted[picked] = True
        rows = np.flatnonzero(counted)  # every forget note + the sample, in note order
        texts = [texts[i] for i in rows]
        groups = [groups[i] for i in rows] if groups is not None else None
        classes = classes[rows] if classes is not None else None
        is_forget = is_forget[rows]
    encoded = encode(tokenizer, texts, max_length)
    stats = doc_stats(encoded, is_forget, size, groups, classes if scorer == "specific" else None)
    if sampled:
        stats = scaled_retain(stats, n_retain)
    keep = np.zeros(size, dtype=bool)
    keep[scorable] = True
    if scorer == "pmi":
        scores = pmi_scores(stats, keep, alpha)
    else:
        eligible = keep & content_mask(tokenizer, size) & (stats.doc_forget >= min_forget_notes)
        scores = specific_scores(stats, eligible, alpha, max_retain_fraction)
    if min_patients > 0:
        scores[stats.patients < min_patients] = -np.inf  # below the rule: never chosen, never scored
    ids = _top(scores, k)
    summary = {"min_patients": int(min_patients),
               # counted, never listed: which words only a few patients' notes contain is itself patient data
               "tokens_below_min_patients": int((keep & (stats.patients > 0) & (stats.patients < min_patients)).sum()),
               "forget_notes": stats.n_forget, "retain_notes": stats.n_retain,
               "eligible": int(np.isfinite(scores).sum()), "selected": len(ids),
               "retain_touched_fraction": touched_fraction(encoded, ~is_forget, ids),
               "forget_covered_fraction": touched_fraction(encoded, is_forget, ids)}
    if sampled:
        summary["retain_notes_counted"] = int(retain_sample)
    return Selection(ids=ids, scores=[float(scores[i]) for i in ids], tokens=tokenizer.convert_ids_to_tokens(ids),
                     all_scores=scores, scorer=scorer, stats=summary)


def scaled_retain(stats: DocStats, n_retain: int) -> DocStats:
    """Counts of a sample of the retain documents scaled up to `n_retain` of them (forget counts as they are)."""
    scale = n_retain / max(stats.n_retain, 1)
    retain_counts = stats.count_all - stats.count_forget
    return DocStats(stats.count_forget + scale * retain_counts, stats.count_forget, stats.doc_forget,
                    scale * stats.doc_retain, stats.patients, stats.n_forget, n_retain, stats.class_share)


def _checked(tokenizer: Any, is_forget: np.ndarray, k: int, scorer: str, vocab_size: int | None) -> np.ndarray:
    """The scorable ids, after the argument checks (ConfigError: one line and a hint)."""
    if not is_forget.any():
        raise ConfigError("token selection needs at least one forget document", hint="check the forget class")
    if scorer not in SCORERS:
        raise ConfigError(f"unknown token scorer {scorer!r}", hint=f"use one of: {', '.join(SCORERS)}")
    return check_k(tokenizer, k, vocab_size)


def check_k(tokenizer: Any, k: int, vocab_size: int | None = None) -> np.ndarray:
    """The scorable ids, once k is known to fit them (else ConfigError: one line and a hint)."""
    scorable = scorable_ids(tokenizer, vocab_size)
    if k < 1 or k > len(scorable):
        raise ConfigError(
            f"k={k} but the tokenizer has {len(scorable)} scorable (non-special) ids",
            hint=f"choose 1 <= k <= {len(scorable)}",
        )
    return scorable


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Up to k finite-scoring ids by score desc, then id asc. None eligible -> [] (the method then edits
    no rows: a head-only edit, recorded as selected = 0), never a token that breaks the rules."""
    eligible = int(np.isfinite(scores).sum())
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[: min(k, eligible)]]
