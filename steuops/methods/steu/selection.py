"""PMI token selection: which wordpiece rows of the embedding matrix carry the forget class.

    score(t) = log2( P(t | forget docs) / P(t | all docs) ) * ln(1 + n_forget(t))

over every wordpiece id t of the model's OWN tokenizer (the ids the embedding matrix is indexed
by), special tokens excluded. P(t | docs) is the add-alpha smoothed relative frequency of t among
all token occurrences in those docs:

    P(t | D) = (count_D(t) + alpha) / (N_D + alpha * V)

with count_D(t) the number of occurrences of t in D, N_D the total token count of D and V the
number of scorable ids. n_forget(t) is the number of forget documents that contain t at least
once (a document frequency, not an occurrence count), so a token frequent in one odd note does
not outrank one spread over the cohort. Documents are tokenized as the model sees them:
without special tokens, truncated to `max_length`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steuops.errors import ConfigError


@dataclass
class Selection:
    ids: list[int]  # top-k ids, best first (ties broken by the smaller id)
    scores: list[float]
    tokens: list[str]
    all_scores: np.ndarray  # (vocab,) score of every id; -inf for ids that cannot be chosen

    def to_info(self) -> list[dict[str, Any]]:
        return [{"id": i, "token": t, "score": s} for i, t, s in zip(self.ids, self.tokens, self.scores, strict=True)]


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


def score_tokens(
    encoded: Sequence[Sequence[int]],
    is_forget: np.ndarray,
    scorable: np.ndarray,
    vocab_size: int,
    alpha: float = 1.0,
) -> np.ndarray:
    """(vocab_size,) PMI x log-document-frequency scores; -inf outside `scorable`."""
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}", hint="use the default smoothing alpha=1.0")
    count_all = np.zeros(vocab_size, dtype=np.float64)
    count_forget = np.zeros(vocab_size, dtype=np.float64)
    doc_forget = np.zeros(vocab_size, dtype=np.float64)
    for ids, forget in zip(encoded, is_forget, strict=True):
        arr = np.asarray(ids, dtype=np.int64)
        arr = arr[(arr >= 0) & (arr < vocab_size)]
        counts = np.bincount(arr, minlength=vocab_size)
        count_all += counts
        if forget:
            count_forget += counts
            doc_forget += counts > 0
    keep = np.zeros(vocab_size, dtype=bool)
    keep[scorable] = True
    v = float(keep.sum())
    n_all = count_all[keep].sum()
    n_forget = count_forget[keep].sum()
    p_forget = (count_forget + alpha) / (n_forget + alpha * v)
    p_all = (count_all + alpha) / (n_all + alpha * v)
    scores = np.log2(p_forget / p_all) * np.log1p(doc_forget)
    scores[~keep] = -np.inf
    return scores


def select_tokens(
    tokenizer: Any,
    texts: Sequence[str],
    is_forget: np.ndarray,
    k: int = 256,
    *,
    alpha: float = 1.0,
    max_length: int | None = None,
    vocab_size: int | None = None,
) -> Selection:
    """The top-k scoring ids. `vocab_size` = rows of the embedding matrix (ids beyond it are skipped)."""
    is_forget = np.asarray(is_forget, dtype=bool)
    if not is_forget.any():
        raise ConfigError("token selection needs at least one forget document", hint="check the forget class")
    scorable = scorable_ids(tokenizer, vocab_size)
    if k < 1 or k > len(scorable):
        raise ConfigError(
            f"k={k} but the tokenizer has {len(scorable)} scorable (non-special) ids",
            hint=f"choose 1 <= k <= {len(scorable)}",
        )
    size = len(tokenizer) if vocab_size is None else min(len(tokenizer), vocab_size)
    scores = score_tokens(encode(tokenizer, texts, max_length), is_forget, scorable, size, alpha)
    order = np.lexsort((np.arange(size), -scores))[:k]  # by score desc, then id asc
    ids = [int(i) for i in order]
    return Selection(
        ids=ids,
        scores=[float(scores[i]) for i in ids],
        tokens=tokenizer.convert_ids_to_tokens(ids),
        all_scores=scores,
    )
