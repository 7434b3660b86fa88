"""The sampling error the audit gives its probe F1 and membership AUC (steuops.audit.stats.f1_error / auc_error):
the spread of the figure over bootstrap samples of the notes, checked against a plain loop, and larger on fewer
notes (bench/audit_error.py's point: what a smaller test sample would cost); and the error of the gap between two
models' figures, from resamples of the same notes for both (a paired bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from steuops.audit.stats import auc_error, auc_resamples, f1, f1_error, f1_resamples, gap_error, roc_auc


def _notes(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    return y, np.where(rng.random(n) < 0.8, y, ~y)  # right on about 80% of the notes


def test_f1_error_is_the_spread_of_the_f1_over_bootstrap_samples():
    y, found = _notes(3)
    rows = np.random.default_rng(0).integers(0, len(y), (200, len(y)))  # the draws f1_error makes with seed 0
    by_hand = np.std([f1(y[r], found[r]) for r in rows])
    assert f1_error(y, found, resamples=200) == pytest.approx(by_hand, abs=1e-6)
    assert 0.01 < f1_error(y, found) < f1_error(y, found, size=len(y) // 2) < 0.2
    assert f1_error(y, np.zeros_like(y)) == 0.0  # nothing found on any sample: F1 0 every time
    assert f1_error(y[:0], found[:0]) == 0.0


def test_auc_error_resamples_both_sides_and_grows_with_fewer_negatives():
    rng = np.random.default_rng(4)
    members, outsiders = rng.normal(0.5, 1.0, 200), rng.normal(0.0, 1.0, 80)
    full = auc_error(members, outsiders)
    assert 0.01 < full < auc_error(members, outsiders, negative_size=40) < 0.2
    assert roc_auc(members, outsiders) == pytest.approx(0.64, abs=0.1)
    assert auc_error([], outsiders) is None and auc_error(members, []) is None
    tied = np.zeros(50)
    assert auc_error(tied, tied) == 0.0  # every pair ties: AUC 0.5 on every sample


def test_the_gap_error_is_paired_so_models_that_err_on_the_same_notes_have_a_small_one():
    """Both models' figures are resampled on the same rows (the same seed over the same notes), so the error of their
    gap is the spread of the differences: near 0 for models that disagree on few notes, and about the two errors
    added in quadrature for models that err independently."""
    y, found = _notes(5)
    close = found.copy()
    close[:6] = ~close[:6]  # the same answers but on 6 of the 300 notes
    rng = np.random.default_rng(6)
    unrelated = np.where(rng.random(len(y)) < 0.8, y, ~y)  # as good, but wrong on other notes
    a, b, c = (f1_resamples(y, pred) for pred in (found, close, unrelated))
    assert np.std(a) == pytest.approx(f1_error(y, found), abs=1e-6)
    assert gap_error(a, b) == pytest.approx(np.std(a - b), abs=1e-6)
    assert gap_error(a, a) == 0.0
    assert gap_error(a, b) < 0.3 * f1_error(y, found)
    independent = np.hypot(f1_error(y, found), f1_error(y, unrelated))
    assert 0.7 * independent < gap_error(a, c) < 1.3 * independent
    assert gap_error(a, None) is None and gap_error(a, a[:10]) is None  # not the same resamples: no gap error
    members, outsiders = rng.normal(0.5, 1.0, 60), rng.normal(0.0, 1.0, 40)
    first, moved = auc_resamples(members, outsiders), auc_resamples(members + 0.01, outsiders)
    assert gap_error(first, moved) < 0.2 * auc_error(members, outsiders)
