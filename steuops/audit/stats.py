"""The audit's arithmetic on numbers it already has: AUC, F1, linear CKA, the linear probe (scikit-learn,
imported when called; no torch), and the sampling error of a figure over the notes it was read on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from steuops.audit.config import AuditConfig

# Bootstrap resamples for a figure's sampling error: enough to know the error itself to about 3%.
RESAMPLES = 500


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties count one half (the Mann-Whitney
    U statistic, sklearn's roc_auc_score). None when either side is empty."""
    from sklearn.metrics import roc_auc_score

    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return None
    truth = np.r_[np.ones(len(pos), dtype=np.int8), np.zeros(len(neg), dtype=np.int8)]
    return float(roc_auc_score(truth, np.r_[pos, neg]))


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary F1; 0.0 when there are no true and no predicted positives (nothing to find, nothing found)."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true).astype(bool).astype(np.int8)
    y_pred = np.asarray(y_pred).astype(bool).astype(np.int8)
    if y_true.size == 0:  # sklearn refuses empty input; no notes: nothing found
        return 0.0
    return float(f1_score(y_true, y_pred, zero_division=0.0))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centered kernel alignment (Kornblith, Norouzi, Lee & Hinton, ICML 2019) between two
    representations of the same n examples, x (n, d1) and y (n, d2):

        ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),   Xc, Yc = column-centred x, y

    which equals HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)) (the (n-1)^-2 factors cancel).
    1.0 for the same representation up to an orthogonal map and an isotropic scale; near 0 for unrelated
    ones. nan when either side is constant (no variance: CKA is undefined)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"linear_cka needs two 2-D arrays with the same rows, got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    # the feature-space form: d x d products, cheap for a few hundred notes and 768 features
    cross = np.linalg.norm(y.T @ x) ** 2
    scale = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / scale) if scale > 0 else float("nan")


def probe_f1(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             config: AuditConfig) -> float | None:
    """F1 on test of a logistic-regression probe fitted on train (`fit_probe`), at the threshold that
    maximises F1 on the probe's own training data (a strong but honest attacker). None when a class has
    no positive or no negative train example."""
    return probe_fit(x_train, y_train, x_test, y_test, config)[0]


def probe_fit(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              config: AuditConfig) -> tuple[float | None, bool, np.ndarray | None]:
    """(`probe_f1`, whether lbfgs stopped at probe_steps before reaching its tolerance, the F1 on each bootstrap
    sample of the test notes, whose spread is its sampling error: `f1_resamples`)."""
    found, capped = probe_predictions(x_train, y_train, x_test, config)
    if found is None:
        return None, False, None
    if len(x_test) == 0:
        return 0.0, capped, None
    return round(f1(y_test, found), 6), capped, f1_resamples(y_test, found)


def probe_predictions(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      config: AuditConfig) -> tuple[np.ndarray | None, bool]:
    """(the probe's yes/no on each test note, whether lbfgs was capped): `fit_probe` on train, thresholded where F1
    on its own training data is highest. (None, False) when train has no positive or no negative example."""
    y_train = np.asarray(y_train).astype(bool).astype(np.int8)
    if len(x_train) == 0 or y_train.min() == y_train.max():
        return None, False
    probe = fit_probe(x_train, y_train, config)
    capped = bool(np.max(probe[-1].n_iter_) >= config.probe_steps)
    threshold = _best_f1_threshold(y_train, probe.decision_function(np.asarray(x_train, dtype=np.float64)))
    if len(x_test) == 0:
        return np.zeros(0, dtype=bool), capped
    return probe.decision_function(np.asarray(x_test, dtype=np.float64)) >= threshold, capped


def fit_probe(x: np.ndarray, y: np.ndarray, config: AuditConfig) -> Any:
    """Standardised features + L2 logistic regression (sklearn, lbfgs) at the optimum of mean log-loss +
    probe_l2 * |w|^2, intercept unpenalised: sklearn's C = 1 / (2 n probe_l2). The audit used to run 300
    full-batch Adam steps (lr 0.05) on this objective: the same figures where they converge, short of the
    optimum where features outnumber notes or nearly separate them (tests/test_library_parity.py pins both)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = 1.0 / (2.0 * len(x) * config.probe_l2)
    # tol 1e-8: the optimum itself, not a point near it. Usually < 120 iterations; on features that nearly
    # separate the class (a parent that knows it) lbfgs may still be creeping at probe_steps. That is counted
    # in the report (probe "capped") instead of printing sklearn's advice into the user's terminal.
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-8, max_iter=config.probe_steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return probe.fit(np.asarray(x, dtype=np.float64), np.asarray(y).astype(bool).astype(np.int8))


def _best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score t for which `scores >= t` has the highest F1 against `y` (the lowest such t on ties),
    from sklearn's counts at every distinct score. `y` must hold at least one positive."""
    from sklearn.metrics import confusion_matrix_at_thresholds

    _, fp, fn, tp, thresholds = confusion_matrix_at_thresholds(y, scores)  # thresholds decreasing
    f1s = 2.0 * tp / (2.0 * tp + fp + fn)
    return float(thresholds[np.flatnonzero(f1s == f1s.max())[-1]])


# ---- sampling error -----------------------------------------------------------------------------------
# Every figure's bootstrap draws rows with default_rng(seed) over notes in the audit's order, so two models' figures
# on the same notes are resampled on the same rows: the difference of their resamples is a paired bootstrap of the
# gap between them (`gap_error`), which is smaller than either error where both models err on the same notes.
def f1_error(y_true: np.ndarray, y_pred: np.ndarray, *, size: int | None = None, resamples: int = RESAMPLES,
             seed: int = 0) -> float:
    """The bootstrap standard error of the binary F1 over the notes: the F1's standard deviation over `resamples`
    draws of `size` notes (default: as many as there are) with replacement. It says how far the figure would move on
    another sample of notes like these. Where every train note is in every seed's sample (the test sample is always
    shared), the probe's F1 does not vary with the seeds, and this is the only error bar it has."""
    return resample_error(f1_resamples(y_true, y_pred, size=size, resamples=resamples, seed=seed))


def f1_resamples(y_true: np.ndarray, y_pred: np.ndarray, *, size: int | None = None, resamples: int = RESAMPLES,
                 seed: int = 0) -> np.ndarray:
    """The binary F1 on each bootstrap sample of `f1_error` (empty when there are no notes)."""
    y = np.asarray(y_true).astype(bool)
    found = np.asarray(y_pred).astype(bool)
    if len(y) == 0:
        return np.zeros(0)
    rows = np.random.default_rng(seed).integers(0, len(y), (resamples, size or len(y)))
    hits = (y[rows] & found[rows]).sum(axis=1)
    wrong = (y[rows] ^ found[rows]).sum(axis=1)
    return np.where(hits + wrong > 0, 2.0 * hits / np.maximum(2 * hits + wrong, 1), 0.0)


def auc_error(positive: Sequence[float], negative: Sequence[float], *, negative_size: int | None = None,
              resamples: int = RESAMPLES, seed: int = 0) -> float | None:
    """The bootstrap standard error of `roc_auc`, both sides resampled with replacement (the negatives as
    `negative_size` draws, default as many as there are). None when either side is empty."""
    scores = auc_resamples(positive, negative, negative_size=negative_size, resamples=resamples, seed=seed)
    return None if scores is None else resample_error(scores)


def auc_resamples(positive: Sequence[float], negative: Sequence[float], *, negative_size: int | None = None,
                  resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray | None:
    """The AUC on each bootstrap sample of `auc_error`; None when either side is empty."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return None
    rng = np.random.default_rng(seed)
    scores = np.empty(resamples)
    for i in range(resamples):  # one (positives x negatives) table at a time: ~14k cells on the demo
        p = pos[rng.integers(0, len(pos), len(pos))][:, None]
        n = neg[rng.integers(0, len(neg), negative_size or len(neg))][None, :]
        scores[i] = np.mean((p > n) + 0.5 * (p == n))
    return scores


def gap_error(first: Sequence[float] | None, second: Sequence[float] | None) -> float | None:
    """The bootstrap standard error of (first figure - second figure), from their resamples on the same rows (the
    same seed, the same notes in the same order: see above). None when either is missing or they differ in length."""
    if first is None or second is None or len(first) != len(second) or len(first) == 0:
        return None
    return resample_error(np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64))


def resample_error(scores: Sequence[float]) -> float:
    """A figure's bootstrap standard error from its resamples (0.0 for none)."""
    return round(float(np.std(scores)), 6) if len(scores) else 0.0
