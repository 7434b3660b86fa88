"""The forgetting audit: how much of a removed class is still in the edited model.

STEU's forgetting is behavioural: the encoder is frozen, so the class may still be readable from the
features or come back after a few steps of fine-tuning. The audit measures that, for any method, next
to the gold reference (a model retrained without the class), with these attacks:

- probe: a logistic-regression probe on the frozen features the head sees (train -> test F1);
- relearn: re-fit only the head, and separately only the edited embedding rows, on a small labelled
  forget + retain sample; forget F1 on test after 0..N optimiser steps. The head re-fit is repeated
  for several attacker sample sizes (relearn_sizes);
- retain relearn: fine-tune every parameter on notes WITHOUT the class, its column(s) out of the loss:
  does the class come back when the attacker has only the other classes' data?
- membership: do the forget-cohort notes (used in unlearning) score differently from held-out notes
  of the same class? Per-example ROC AUC of a loss score (0.5 = no signal);
- CKA: linear CKA between the head-input features of two models on the test notes (how far the
  representation moved; STEU's frozen encoder keeps it near the original's);
- bypass: rewordings and abbreviations of the class composed into short notes (steuops.bypass)
  plus user phrases; forget F1 with other classes' rewordings as negatives.

One lucky draw must not decide a gate, so every attack but bypass runs once per seed (config.seed,
config.seed + 1, ...): each seed redraws the train/test subsamples, the attacker's notes and the
optimiser's batch order. The figures are the means over seeds; "spread" keeps every seed's value.
Bypass uses fixed phrases and no sampling, so it runs once.

torch, numpy and scikit-learn (no mlflow): it runs on the GPU box too. Heavy imports stay inside functions.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops import env  # noqa: F401
from steuops.errors import ConfigError

if TYPE_CHECKING:
    from steuops.auditcache import AuditCache
    from steuops.data import Notes
    from steuops.modeling import Progress

SCHEMA = "steuops.audit/v2"
VERIFY_NOTES = 4  # stored notes run again before an audit-cache entry is used
# remember_pass keeps a split of at most this many notes (MiniLM: about 3 KB a note on disk)
REMEMBER_NOTES = 10_000
# options that do not change one seed's attack on one model (so they are not part of its audit-cache key); the
# controls switch only chooses which models the retain-only fine-tune attacks
PER_AUDIT_OPTIONS = ("seeds", "gradient_seeds", "bypass_phrases", "retain_relearn_controls")
ROLES = ("original", "edited", "reference")
# CKA pairs: (key, first role, second role)
CKA_PAIRS = (("edited_vs_original", "edited", "original"), ("edited_vs_reference", "edited", "reference"),
             ("reference_vs_original", "reference", "original"))


@dataclass
class AuditConfig:
    seed: int = 0  # the first seed; the audit runs seeds config.seed .. config.seed + seeds - 1
    seeds: int = 3  # repeats of every sampled attack (figures are means over them)
    batch_size: int = 32
    max_length: int = 256
    max_train: int | None = 1000  # train notes used for probe features and the membership cohort
    # test notes every forget F1, probe and membership figure is measured on: one sample, shared by every seed
    # (the seeds vary the attacks, not the yardstick), so each model runs over it once
    max_test: int | None = 300
    probe_steps: int = 300  # lbfgs iterations at most (it converges well before on these features)
    probe_l2: float = 1e-3  # the penalty: mean log-loss + probe_l2 * |w|^2 (intercept unpenalised)
    relearn_forget: int = 32  # labelled forget-class notes the attacker has
    relearn_retain: int = 32  # and retain notes, so the re-fit does not just say "yes" to everything
    relearn_steps: list[int] = field(default_factory=lambda: [0, 5, 10, 25, 50])
    relearn_batch_size: int = 16
    relearn_lr_head: float = 1e-2
    # The embedding-rows re-fit trains through the encoder, so it is budgeted apart from the (cheap) head re-fit: its
    # curve stops at the last of relearn_steps not above relearn_rows_steps (None: all of them). 25 steps at 2e-3
    # move each row as far as 50 at 1e-3 (Adam steps each parameter by about lr); on the demo both gave 0.000 at every
    # step on each of seeds 0-2, at half the cost (bench/results/attack-budget-cpu-2026-11-30.json).
    relearn_lr_rows: float = 2e-3
    relearn_rows_steps: int | None = 25
    # head re-fit with n forget + n retain notes for each n (capped by the train split); [] skips it
    relearn_sizes: list[int] = field(default_factory=lambda: [16, 64, 256])
    # Adam steps of the all-parameter retain-only fine-tune (0 skips it) and their rate: as far a move as 25 steps at
    # 2e-5, at half the cost; the same 0.000 for the edited model and the reference on each demo seed, and 0.58-0.62
    # left in the original (0.60-0.62 with 25 steps) (bench/results/attack-budget-cpu-2026-11-30.json)
    retain_relearn_steps: int = 12
    retain_relearn_lr: float = 4e-5
    retain_relearn_notes: int = 256  # retain-only notes the attacker has (drawn per seed)
    # The retain-only fine-tune of the original and the reference too: controls that cost a fine-tune each. The
    # reference never had the class, so it gives ~0 by construction (0.000 on each demo seed); the original shows
    # how much of a class such a fine-tune leaves in a model that has it. Off: only the edited model is attacked.
    retain_relearn_controls: bool = False
    # The two attacks that train through the encoder (the embedding-rows re-fit and the retain-only fine-tune)
    # run on the first gradient_seeds seeds only: on a CPU they are most of the audit's cost (demo, 2-core EPYC:
    # 20 s and 24 s per model and seed, against ~1 s for every other attack once the passes exist), and on the
    # demo they gave 0.000 on each of seeds 0-2 for STEU, HDSU and the reference
    # (bench/results/forgetting-hdsu-cpu-2026-11-29.json; the original's retain-only fine-tune, a control, does
    # vary). Set it to `seeds` for all.
    gradient_seeds: int = 1
    bypass_phrases: list[str] = field(default_factory=list)  # user phrases, added to every forget class

    @classmethod
    def at_depth(cls, depth: str = "standard", **values: Any) -> AuditConfig:
        """The config of a named depth (DEPTHS), with `values` over it."""
        if depth not in DEPTHS:
            raise ConfigError(f"unknown audit depth {depth!r}", hint=f"--audit-depth: one of {', '.join(DEPTHS)}")
        return cls(**{**DEPTHS[depth], **values})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AuditConfig:
        import dataclasses

        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown audit option(s): {', '.join(unknown)}", hint=f"known options: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def validate(self) -> AuditConfig:
        steps = sorted({int(s) for s in self.relearn_steps})
        if not steps or steps[0] < 0:
            raise ConfigError("audit relearn_steps must be non-negative step counts", hint="e.g. [0, 5, 10, 25, 50]")
        self.relearn_steps = steps
        sizes = sorted({int(n) for n in self.relearn_sizes})
        if sizes and sizes[0] < 1:
            raise ConfigError(f"audit relearn_sizes must be note counts >= 1, got {list(self.relearn_sizes)}",
                              hint="e.g. [16, 64, 256]; [] skips the attacker-size sweep")
        self.relearn_sizes = sizes
        if self.relearn_rows_steps is not None:
            _check_int(self, "relearn_rows_steps", 1, "set relearn_rows_steps to 1 or more, or null for all relearn_steps")
        for name in ("batch_size", "relearn_batch_size", "probe_steps", "relearn_forget", "relearn_retain", "seeds",
                     "retain_relearn_notes", "gradient_seeds"):
            _check_int(self, name, 1, f"set {name} to 1 or more")
        _check_int(self, "retain_relearn_steps", 0, "set retain_relearn_steps to 0 (skip) or more, e.g. 25")
        for name, example in (("probe_l2", "1e-3"), ("retain_relearn_lr", "2e-5")):
            if not getattr(self, name) > 0:
                raise ConfigError(f"audit {name} must be > 0, got {getattr(self, name)}", hint=f"e.g. {example}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows_steps(self) -> list[int]:
        """The embedding-rows re-fit's curve: relearn_steps up to relearn_rows_steps."""
        cap = self.relearn_rows_steps
        return [s for s in self.relearn_steps if cap is None or s <= cap]


# Named budgets for the attacks that train through the encoder. "standard" is AuditConfig's defaults. "thorough" is
# the budget they had until 2026-11-30 (twice the optimiser steps at half the rate, the rows re-fit over every
# relearn step) on each of the default 3 seeds, with the retain-only fine-tune's controls: on the demo, 2-core
# EPYC, passes cached, 380 s against 41 s (bench/results/attack-depths-cpu-2026-11-30.json; README).
DEPTHS: dict[str, dict[str, Any]] = {
    "standard": {},
    "thorough": {"relearn_lr_rows": 1e-3, "relearn_rows_steps": None, "retain_relearn_steps": 25,
                 "retain_relearn_lr": 2e-5, "gradient_seeds": 3, "retain_relearn_controls": True},
}


def depth_of(config: Mapping[str, Any]) -> str | None:
    """The DEPTHS name whose attack budget a (logged) config has, else None (options set one by one)."""
    defaults = AuditConfig().to_dict()
    keys = {key for values in DEPTHS.values() for key in values}
    for name, values in DEPTHS.items():
        if all(config.get(key) == values.get(key, defaults[key]) for key in keys):
            return name
    return None


def _check_int(config: AuditConfig, name: str, minimum: int, hint: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"audit {name} must be an integer >= {minimum}, got {value!r}", hint=hint)


@dataclass
class AuditReport:
    """The audit's result. The sections hold means over seeds (see `spread` for each seed's value);
    `per_seed` keeps every seed's own sections."""

    forget: list[str]
    probe: dict[str, Any]
    relearn: dict[str, Any]
    membership: dict[str, Any]
    bypass: dict[str, Any]
    config: dict[str, Any]
    sizes: dict[str, Any]
    skipped: dict[str, str]
    seconds: dict[str, float]
    seeds: list[int] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # what the audit cache gave: {"dir", "reused", "rejected"}
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)  # figure -> key -> {"mean", "std", "values"}
    relearn_sizes: dict[str, Any] = field(default_factory=dict)
    per_seed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the top-level *_f1 / membership_auc keys are what the gate reads (None = not measured):
        means over the seeds, next to their spread."""
        means = {figure: {key: stat["mean"] for key, stat in by_key.items()} for figure, by_key in self.spread.items()}
        return {
            "schema": SCHEMA,
            "forget": self.forget,
            "seeds": self.seeds,
            "probe_f1": means.get("probe_f1", {}),
            "relearn_f1": means.get("relearn_f1", {}),
            "membership_auc": means.get("membership_auc", {}),
            "retain_relearn_f1": means.get("retain_relearn_f1", {}),
            "cka": means.get("cka", {}),
            "bypass_f1": _roles(self.bypass, "f1"),
            "bypass_recall": _roles(self.bypass, "recall"),
            "relearn_sizes": self.relearn_sizes,
            "spread": self.spread,
            "relearn_curves": self.relearn,
            "probe": self.probe,
            "membership": self.membership,
            "bypass": self.bypass,
            "per_seed": self.per_seed,
            "sizes": self.sizes,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "config": self.config,
            "cache": self.cache,
        }


def _roles(section: Mapping[str, Any], key: str) -> dict[str, float | None]:
    return {role: (section.get(role) or {}).get(key) for role in ROLES}


def _last(curve: Sequence[float] | None) -> float | None:
    return float(curve[-1]) if curve else None


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the measured values (None = not measured that seed); None when none was."""
    measured = [float(v) for v in values if v is not None]
    if not measured:
        return None
    # equal values (an uncapped sample draws the same notes every seed) average to themselves exactly,
    # not to a float-rounded neighbour: seeds=1 and such seeds then report the single-seed figure itself
    return measured[0] if min(measured) == max(measured) else float(np.mean(measured))


def _stat(values: Sequence[float | None]) -> dict[str, Any]:
    """{"mean", "std", "values"}: std is numpy's population std (ddof 0), so one seed has spread 0.0."""
    measured = [float(v) for v in values if v is not None]
    std = (0.0 if min(measured) == max(measured) else float(np.std(measured))) if measured else None
    return {"mean": _mean(values), "std": std, "values": [None if v is None else float(v) for v in values]}


# ---- small metric helpers (scikit-learn, imported when called) ------------------------------------
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


# ---- forward passes ------------------------------------------------------------------------------
@dataclass
class _Pass:
    """One model over one list of texts: logits, the head's input features, and (optionally) what the
    head reads of the encoder's output per note (steuops.features), so that a head can be re-fit or
    re-run without the encoder. `exact`: replaying that cache reproduces the model's logits."""

    logits: np.ndarray
    features: np.ndarray
    cache: Any = None  # steuops.features.FeatureCache | None
    exact: bool = False




class _SplitPass:
    """One model's pass over one split ("train", "test" or the bypass notes), filled in as samples ask for
    rows: a row is computed once, whichever seed or sample (probe, attacker, pool) asks for it first."""

    def __init__(self, n: int) -> None:
        self.done = np.zeros(n, dtype=bool)
        self.logits: np.ndarray | None = None
        self.features: np.ndarray | None = None
        self.cache: Any = None
        self.exact = True
        self.dirty = False  # rows were computed since it was made or loaded (so it is worth saving)

    def missing(self, rows: np.ndarray) -> np.ndarray:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        return rows[~self.done[rows]]

    def write(self, rows: np.ndarray, part: _Pass) -> None:
        n = len(self.done)
        if self.logits is None:
            self.logits = np.zeros((n, part.logits.shape[1]), np.float32)
            self.features = np.zeros((n, part.features.shape[1]), np.float32)
            self.cache = part.cache.blank(n) if part.cache is not None else None
        self.logits[rows], self.features[rows] = part.logits, part.features
        if self.cache is not None and part.cache is not None:
            self.cache.write(rows.tolist(), part.cache)
        else:
            self.cache = None
        self.exact = self.exact and part.exact and self.cache is not None
        self.done[rows] = True
        self.dirty = True

    def take(self, rows: np.ndarray) -> _Pass:
        rows = np.asarray(rows, dtype=np.int64)
        if self.logits is None:  # no row asked for yet (an empty sample)
            return _Pass(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), None, False)
        cache = self.cache.take(rows.tolist()) if self.cache is not None else None
        return _Pass(self.logits[rows], self.features[rows], cache, self.exact)

    def arrays(self) -> dict[str, np.ndarray]:
        """For the audit cache (auditcache.py): the rows computed so far (numbers only; a large split's
        unsampled rows are not written)."""
        rows = np.flatnonzero(self.done)
        out = {"n": np.array(len(self.done)), "rows": rows, "logits": self.logits[rows],
               "features": self.features[rows], "exact": np.array(self.exact)}
        return out | (self.cache.take(rows.tolist()).to_arrays() if self.cache is not None else {})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray] | None, n: int, device) -> _SplitPass | None:
        """The pass `arrays` (an audit-cache entry) wrote, or None: no entry, one for a split of another size, or a
        damaged or foreign one (a field missing or misshapen), which is then computed afresh and overwritten, never
        an error."""
        from steuops.features import FeatureCache

        if arrays is None or "rows" not in arrays or int(arrays.get("n", -1)) != n or not len(arrays["rows"]):
            return None
        store, rows = cls(n), arrays["rows"]
        try:
            part = FeatureCache.from_arrays(dict(arrays), device)
            store.write(rows, _Pass(arrays["logits"], arrays["features"], part, bool(arrays["exact"])))
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError):
            return None
        store.dirty = False
        return store


def _rows_only(model, token_ids: Sequence[int]):
    """A Parameter of the embedding rows `token_ids`, put in place of the frozen matrix's rows by a forward hook on
    the embedding (modeling.RowTable): training it trains those rows alone, with the values and gradients of a masked
    update of the whole matrix, minus that matrix's dense gradient and optimiser state (30,522 rows for MiniLM)."""
    from steuops.modeling import RowTable, embedding

    module = embedding(model)
    table = RowTable(module.weight, token_ids)
    module.register_forward_hook(lambda _module, args, out: table.substitute(args[0], out))
    return table.rows


@contextmanager
def _tapped(model) -> Iterator[dict[str, Any]]:
    """Features = the input of the first head module called (BERT: the pooled output; DistilBERT:
    hidden[:, 0]; RoBERTa-style heads get the sequence, so its first position is taken). Eval mode."""
    import torch

    from steuops import modeling

    seen: dict[str, Any] = {}

    def tap(_module, args, kwargs):
        if "features" not in seen:
            seen["features"] = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))

    hooks = [m.register_forward_pre_hook(tap, with_kwargs=True) for m in modeling.head_modules(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield seen
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _take_features(seen: dict[str, Any]) -> np.ndarray:
    f = seen.pop("features")
    return (f[:, 0] if f.dim() == 3 else f).float().cpu().numpy()


def _assemble(model, logits: list[np.ndarray], feats: list[np.ndarray], cache: Any, exact: bool) -> _Pass:
    n_labels = int(model.config.num_labels)
    return _Pass(
        logits=np.concatenate(logits) if logits else np.zeros((0, n_labels), np.float32),
        features=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        cache=cache, exact=exact,
    )


def _forward_pass(model, tokenizer, texts: Sequence[str], *, batch_size: int, max_length: int, device,
                  keep_cache: bool = False) -> _Pass:
    """Eval-mode full pass: logits, head-input features and (keep_cache) the encoder outputs the head reads."""
    from contextlib import nullcontext

    from steuops.features import exact, record
    from steuops.modeling import autocast, tokenize

    logits, feats = [], []
    with _tapped(model) as seen, (record(model) if keep_cache else nullcontext()) as recorder:
        for start in range(0, len(texts), batch_size):
            enc = tokenize(tokenizer, texts[start : start + batch_size], max_length).to(device)
            with autocast(device):
                out = model(**enc)
            logits.append(out.logits.float().cpu().numpy())
            feats.append(_take_features(seen))
        cache = recorder.cache() if recorder is not None else None
        # checked here, still in eval mode: a model handed over in train mode must not replay with dropout
        ok = cache is not None and exact(model, cache, _torch_of(np.concatenate(logits), device), device=device)
        seen.clear()
    return _assemble(model, logits, feats, cache, ok)


def _head_pass(model, cache, *, batch_size: int, device) -> _Pass:
    """The same outputs as `_forward_pass`, from a cache: only the head runs (exact, see features.py)."""
    from steuops.features import head_logits
    from steuops.modeling import autocast

    logits, feats = [], []
    with _tapped(model) as seen:
        for start in range(0, len(cache), batch_size):
            with autocast(device):
                z = head_logits(model, cache, list(range(start, min(start + batch_size, len(cache)))))
            logits.append(z.float().cpu().numpy())
            feats.append(_take_features(seen))
    return _assemble(model, logits, feats, cache, True)


def _torch_of(array: np.ndarray, device):
    import torch

    return torch.from_numpy(array).to(device)


def _same_encoder(original, edited, token_ids: Sequence[int]) -> bool:
    """True when `edited` differs from `original` at most in the head and in the embedding rows
    `token_ids`: then a text without those ids gets the original's encoder output exactly."""
    from steuops.features import changed_rows

    rows = changed_rows(original, edited)
    return rows is not None and set(rows) <= {int(i) for i in token_ids}


# ---- what one seed samples ---------------------------------------------------------------------------
@dataclass
class _Draw:
    """One seed's notes: every sampled attack of that seed reads these (and their cached passes)."""

    seed: int
    train: Notes  # probe training data and the membership cohort (capped at max_train)
    test: Notes  # where every forget F1 is measured (capped at max_test)
    attack: Notes  # the relearn attacker's labelled sample (relearn_forget + relearn_retain)
    pool: Notes  # relearn_sizes: up to max(relearn_sizes) forget notes first, then as many retain notes
    pool_forget: int  # how many of the pool's notes (its first ones) carry the forget class
    retain: Notes  # retain-only notes (no forget class) for the retain relearn
    # sample -> (the split it was drawn from, its rows there): a model's passes are computed once per split
    # row and shared by every seed and sample that holds the row (the attacker's notes are train notes too)
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)

    def size_rows(self, n: int) -> np.ndarray:
        """Pool rows of the n-per-side attacker sample: the first n forget and the first n retain notes
        (so a smaller attacker's notes are part of a larger one's), mixed so batches hold both."""
        forget = np.arange(min(n, self.pool_forget))
        retain = self.pool_forget + np.arange(min(n, len(self.pool) - self.pool_forget))
        return np.random.default_rng(self.seed).permutation(np.r_[forget, retain]).astype(np.int64)


def _draw(train: Notes, test: Notes, forget: Sequence[str], config: AuditConfig, seed: int,
          test_rows: np.ndarray | None = None) -> _Draw:
    """One seed's samples; `test_rows`: the test sample to use (the first seed's, shared by all)."""
    rng = np.random.default_rng(seed)
    # the first three draws in the order of the single-seed audit (v1): seeds=1 reproduces its figures
    train_rows = _sample(len(train), config.max_train, rng)
    own_test = _sample(len(test), config.max_test, rng)  # drawn on every seed, so later draws stay as they were
    test_rows = own_test if test_rows is None else test_rows
    attack_rows = _attack_rows(train, forget, config, rng)
    is_forget = train.has_any(forget)
    pos, neg = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
    most = max(config.relearn_sizes, default=0)
    pool_pos = rng.choice(pos, size=min(len(pos), most), replace=False)
    pool_neg = rng.choice(neg, size=min(len(neg), most), replace=False)
    retain = rng.choice(neg, size=min(len(neg), config.retain_relearn_notes), replace=False)
    pool_rows = np.r_[pool_pos, pool_neg].astype(np.int64)
    return _Draw(seed=seed, train=train.subset(train_rows), test=test.subset(test_rows),
                 attack=train.subset(attack_rows), pool=train.subset(pool_rows), pool_forget=len(pool_pos),
                 retain=train.subset(retain),
                 rows={"train": ("train", train_rows), "test": ("test", test_rows), "attack": ("train", attack_rows),
                       "pool": ("train", pool_rows)})


@contextmanager
def _timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    """Adds the block's wall time to seconds[part] (summed over seeds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - t0


# ---- the auditor (caches passes so a bench can audit many methods against one original/reference) ---
class _Auditor:
    def __init__(self, tokenizer, forget: Sequence[str], train: Notes, test: Notes, config: AuditConfig,
                 device, progress: Progress | None, disk: AuditCache | None = None) -> None:
        self.tokenizer = tokenizer
        self.forget = list(forget)
        self.config = config
        self.device = device
        self.progress = progress
        self.splits = {"train": train, "test": test}
        first = _draw(train, test, forget, config, config.seed)
        self.draws = [first] + [_draw(train, test, forget, config, config.seed + s, first.rows["test"][1])
                                for s in range(1, config.seeds)]
        # (model id, "train" / "test" / "bypass") -> (model, its pass); the model is kept so its id is not reused
        self._cache: dict[tuple[int, str], tuple[Any, _SplitPass]] = {}
        # (model id, seed) -> (model, retain-relearn F1): that fine-tune is the costly attack, and a bench
        # audits many methods against the same original and reference
        self._retain_memo: dict[tuple[int, int], tuple[Any, float]] = {}
        self._twins: dict[int, tuple[Any, list[int]]] = {}  # edited model -> (original, edited token ids)
        self.shortcut_notes = 0  # texts whose encoder pass an edited model took from the original's
        self._bypass: dict[str, dict[str, list[str]]] | None = None
        # the audit cache on disk (auditcache.py): the fixed models' passes and attacks
        self.disk = disk
        self._fixed: dict[int, tuple[Any, str, str]] = {}  # model id -> (model, role, fingerprint)
        # the edited model: its passes are on disk too (apply's evaluation leaves its held-out pass there), its
        # attacks are what the audit is for, so they always run
        self._passes_only: dict[int, tuple[Any, str, str]] = {}
        self._values: dict[int, dict[str, Any]] = {}  # model id -> its attack results on disk (read once)
        self._new_values: dict[int, dict[str, Any]] = {}  # model id -> results computed now (written by save)
        self._split_keys: dict[str, str] = {}
        self.reused: dict[str, dict[str, int]] = {}  # role -> {"notes": n, "retain_relearn": seeds}
        self.rejected: list[str] = []  # entries found on disk that did not match a fresh pass
        self._distrusted: set[int] = set()  # fixed models with a rejected pass: their attacks are run again

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(phase, done, total)

    def passes(self, model, which: str, draw: _Draw | None = None) -> _Pass:
        """The model's pass over one seed's "train" / "test" / "attack" / "pool" notes, or over the bypass
        notes (which="bypass", no seed): rows of its pass over the split they come from, each row computed
        once for every seed and sample (see _SplitPass)."""
        split, rows = ("bypass", np.arange(len(self.bypass_texts()))) if which == "bypass" else draw.rows[which]
        return self._rows(model, split, rows)

    def split_logits(self, model, split: str) -> np.ndarray:
        """The model's logits on every note of "train" / "test" (rows the audit computed are reused)."""
        return self._rows(model, split, np.arange(len(self.splits[split]))).logits

    def _texts_of(self, split: str) -> list[str]:
        return self.bypass_texts() if split == "bypass" else self.splits[split].texts

    def _rows(self, model, split: str, rows: np.ndarray) -> _Pass:
        texts = self._texts_of(split)
        key = (id(model), split)
        if key not in self._cache:
            self._cache[key] = (model, self._stored_pass(model, split) or _SplitPass(len(texts)))
        store = self._cache[key][1]
        missing = store.missing(rows)
        if len(missing):
            model.to(self.device)
            store.write(missing, self._compute(model, split, missing, [texts[i] for i in missing]))
        return store.take(rows)

    def _compute(self, model, split: str, rows: np.ndarray, texts: Sequence[str]) -> _Pass:
        twin = self._twins.get(id(model))
        shared = self._shared_pass(model, split, rows, texts, *twin) if twin else None
        if shared is not None:
            return shared
        return _forward_pass(model, self.tokenizer, texts, batch_size=self.config.batch_size,
                             max_length=self.config.max_length, device=self.device, keep_cache=True)

    def _shared_pass(self, model, split: str, rows: np.ndarray, texts: Sequence[str], original,
                     token_ids: Sequence[int]) -> _Pass | None:
        """The edited model's pass from the original's: only texts with an edited token run the encoder;
        the rest reuse the original's encoder outputs (identical: see _same_encoder), then the edited
        head runs on all. None when the original's cache cannot be replayed exactly."""
        base = self._rows(original, split, rows)
        if not base.exact:
            return None
        hit = np.flatnonzero(self._touched(texts, token_ids))
        cache = base.cache
        size = self.config.batch_size
        if len(hit):
            fresh = _forward_pass(model, self.tokenizer, [texts[i] for i in hit], batch_size=size,
                                  max_length=self.config.max_length, device=self.device, keep_cache=True)
            if not fresh.exact:
                return None
            cache = cache.replace(hit.tolist(), fresh.cache)
        self.shortcut_notes += len(texts) - len(hit)
        return _head_pass(model, cache, batch_size=size, device=self.device)

    def share_encoder(self, original, edited, token_ids: Sequence[int] | None) -> None:
        """Let `edited` reuse the original's encoder outputs when only the head and `token_ids` rows differ."""
        if edited is not original and _same_encoder(original, edited, token_ids or []):
            self._twins[id(edited)] = (original, list(token_ids or []))

    def release(self, model) -> None:
        for key in [k for k in self._cache if k[0] == id(model)]:
            del self._cache[key]
        for key in [k for k in self._retain_memo if k[0] == id(model)]:
            del self._retain_memo[key]
        self._twins.pop(id(model), None)
        self._passes_only.pop(id(model), None)
        for memo in (self._fixed, self._values, self._new_values):
            memo.pop(id(model), None)

    # ---- the audit cache on disk -----------------------------------------------------------------------
    def fix(self, model, role: str) -> None:
        """`model` is a fixed model of this audit (the original, the reference): its passes and retain-only
        fine-tunes depend on it and the data only, so they are read from and written to the audit cache."""
        from steuops.modeling import fingerprint

        if self.disk is None or id(model) in self._fixed:
            return
        fp = fingerprint(model)
        self._fixed[id(model)] = (model, role, fp)
        for split in ("train", "test", "bypass"):  # loaded (and checked) now: its remembered attacks rest on them
            self._rows(model, split, np.zeros(0, dtype=np.int64))
        self._values[id(model)] = self.disk.values(fp) if id(model) not in self._distrusted else {}

    def keep_passes(self, model, role: str) -> None:
        """Read `model`'s passes from the audit cache and write them there, but run its attacks every time."""
        from steuops.modeling import fingerprint

        if self.disk is not None and id(model) not in self._fixed and id(model) not in self._passes_only:
            self._passes_only[id(model)] = (model, role, fingerprint(model))

    def _on_disk(self, model) -> tuple[Any, str, str] | None:
        """(model, role, fingerprint) of a model whose passes the audit cache holds, else None."""
        return self._fixed.get(id(model)) or self._passes_only.get(id(model))

    def _split_key(self, split: str) -> str:
        from steuops.auditcache import texts_sha

        if split not in self._split_keys:
            self._split_keys[split] = texts_sha(self._texts_of(split))
        return self._split_keys[split]

    def _stored_pass(self, model, split: str) -> _SplitPass | None:
        """A fixed (or passes-only) model's pass over `split` from the audit cache, once a few of its notes, run
        again now, give the same logits and features (else None: it is computed afresh and overwritten)."""
        if self._on_disk(model) is None:
            return None
        _, role, fp = self._on_disk(model)
        texts = self._texts_of(split)
        store = _SplitPass.from_arrays(self.disk.load_arrays(fp, self._split_key(split)), len(texts), self.device)
        if store is None:
            return None
        if not _still_matches(model.to(self.device), self.tokenizer, texts, store, self.config, self.device):
            self.rejected.append(f"the {role}'s passes over the {split} notes (they differ from a fresh pass)")
            self._distrusted.add(id(model))  # fix() then reads none of its remembered attacks either
            return None
        self._count(role, "notes", int(store.done.sum()))
        return store

    def _remembered(self, model, attack: str, draw: _Draw, compute: Callable[[], Any], *details: Any) -> Any:
        """compute(): one seed's `attack` on `model`; for a fixed model read from (or written to) the audit
        cache, under a key of everything else that decides it: both splits' notes, the audit options, the
        seed, the forget classes and label layout, and `details` (the attacker's rows, the steps)."""
        if id(model) not in self._fixed:
            return compute()
        from steuops.auditcache import sha256_of
        from steuops.reference import notes_sha256

        if "notes" not in self._split_keys:
            self._split_keys["notes"] = sha256_of([notes_sha256(self.splits[s]) for s in ("train", "test")])
        options = {k: v for k, v in self.config.to_dict().items() if k not in PER_AUDIT_OPTIONS}
        name = f"{attack}." + sha256_of([self._split_keys["notes"], options, draw.seed, self.forget, self.labels,
                                         self.multi_label, details])[:24]
        role = self._fixed[id(model)][1]
        stored = self._values[id(model)]
        if name in stored:
            self._count(role, attack, 1)
            return stored[name]
        value = compute()
        stored[name] = self._new_values.setdefault(id(model), {})[name] = value  # save() writes it
        return value

    def _count(self, role: str, what: str, n: int) -> None:
        counts = self.reused.setdefault(role, {})
        counts[what] = counts.get(what, 0) + n

    def save(self) -> None:
        """Write the passes that gained rows (fixed and passes-only models), and the fixed models' attacks run now,
        to the audit cache."""
        for (_mid, split), (model, store) in self._cache.items():
            if self._on_disk(model) is not None and store.dirty and store.logits is not None:
                self._write(lambda fp=self._on_disk(model)[2], split=split, store=store:
                            self.disk.save_arrays(fp, self._split_key(split), store.arrays()))
                store.dirty = False
        for mid, new in self._new_values.items():
            if mid in self._fixed:
                self._write(lambda fp=self._fixed[mid][2], new=new: self.disk.put_values(fp, new))
        self._new_values.clear()

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # a read-only or full home: the audit stands, only the memo is lost
            self.rejected.append(f"not written to the audit cache ({type(exc).__name__}: {exc.strerror or exc})")

    def cache_summary(self) -> dict[str, Any]:
        if self.disk is None:
            return {}
        return {"dir": str(self.disk.root), "reused": {r: dict(c) for r, c in self.reused.items()},
                "rejected": list(self.rejected)}

    def bind(self, original) -> None:
        """Read the label layout off the original: names, forget columns, the retain columns, multi-label."""
        from steuops.modeling import check_forget, is_multi_label, label_names

        self.labels = label_names(original)
        self.cols = check_forget(original, self.forget)
        self.keep = [j for j in range(len(self.labels)) if j not in self.cols]  # the retain columns
        self.multi_label = is_multi_label(original)

    # ---- one audit: every seed, then bypass once ----------------------------------------------------
    def run(self, original, edited, *, reference=None, token_ids: Sequence[int] | None = None,
            edit_reason: str | None = None) -> AuditReport:
        self.bind(original)
        models = {"original": original, "edited": edited, "reference": reference}
        self.share_encoder(original, edited, token_ids)
        seconds: dict[str, float] = {}
        with _timed(seconds, "cache"):
            for role in ("original", "reference"):
                if models[role] is not None and models[role] is not edited:
                    self.fix(models[role], role)
            if edited is not original:
                self.keep_passes(edited, "edited")
        per_seed = [self.one_seed(models, draw, token_ids, seconds) for draw in self.draws]
        skipped = self._skipped(models, per_seed, token_ids, edit_reason)
        with _timed(seconds, "bypass"):
            bypass = self.bypass(models, skipped)
        with _timed(seconds, "cache"):
            self.save()
        report = _summarise(self.forget, per_seed, bypass, self.config, self._sizes(per_seed), skipped, seconds)
        report.cache = self.cache_summary()
        return report

    def one_seed(self, models: dict[str, Any], draw: _Draw, token_ids, seconds: dict[str, float]) -> dict[str, Any]:
        """Every sampled attack on one seed's draw: that seed's sections, as in `per_seed`."""
        live = {role: m for role, m in models.items() if m is not None}
        out: dict[str, Any] = {"seed": draw.seed, "sizes": self.sizes(draw)}
        with _timed(seconds, "probe"):
            out["probe"] = {role: self._remembered(m, "probe", draw, lambda m=m: self.probe(m, draw))
                            for role, m in live.items()}
        with _timed(seconds, "relearn"):
            out["relearn_curves"] = self.relearn(models, draw, token_ids)
        with _timed(seconds, "relearn_sizes"):
            out["relearn_sizes"] = self.relearn_sizes(models, draw)
        with _timed(seconds, "membership"):
            out["membership"] = {role: self.membership(m, draw) for role, m in live.items()}
        deep = self.gradient(draw)
        with _timed(seconds, "retain_relearn"):
            out["retain_relearn_f1"] = {role: self.retain_relearn(live[role], draw)
                                        if role in live and deep and self.attacks_retain(role) else None
                                        for role in ROLES}
        with _timed(seconds, "cka"):
            out["cka"] = self.cka(models, draw)
        return out

    def attacks_retain(self, role: str) -> bool:
        """Whether the retain-only fine-tune runs on `role`: the edited model always, the others as controls."""
        return role == "edited" or self.config.retain_relearn_controls

    def gradient(self, draw: _Draw) -> bool:
        """Whether this seed runs the attacks that train through the encoder (see AuditConfig.gradient_seeds)."""
        return draw.seed - self.config.seed < self.config.gradient_seeds

    def _skipped(self, models, per_seed, token_ids, edit_reason) -> dict[str, str]:
        skipped: dict[str, str] = {}
        if models["reference"] is None:
            skipped["reference"] = "no reference model (retrained without the class) was given"
        if not token_ids:
            skipped["relearn_rows"] = edit_reason or "the edited model carries no token edit (no embedding rows to re-fit)"
        if not self.config.relearn_sizes:
            skipped["relearn_sizes"] = "relearn_sizes is empty"
        if self.config.retain_relearn_steps == 0:
            skipped["retain_relearn"] = "retain_relearn_steps is 0"
        elif not all(len(d.retain) for d in self.draws):
            skipped["retain_relearn"] = "every training note carries the forget class (no retain-only notes)"
        elif not self.config.retain_relearn_controls:
            skipped["retain_relearn_controls"] = ("the original's and the reference's retain-only fine-tunes are "
                                                  "controls; set retain_relearn_controls to run them")
        if any(v.get("auc") is None for one in per_seed for v in one["membership"].values()):
            skipped["membership"] = "need forget-class notes in both the train (cohort) and test sets"
        return skipped

    def sizes(self, draw: _Draw) -> dict[str, int]:
        return {"train": len(draw.train), "test": len(draw.test), "attack": len(draw.attack),
                "forget_train": int(draw.train.has_any(self.forget).sum()),
                "forget_test": int(draw.test.has_any(self.forget).sum()), "retain_relearn": len(draw.retain)}

    def _sizes(self, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        """Counts every seed shares as ints; the forget counts vary with the subsample: a list, one per seed."""
        first = per_seed[0]["sizes"]
        out: dict[str, Any] = {k: v for k, v in first.items() if not k.startswith("forget_")}
        for key in ("forget_train", "forget_test"):
            out[key] = [one["sizes"][key] for one in per_seed]
        out["shortcut_notes"] = self.shortcut_notes
        return out

    # ---- the attacks, one seed at a time -------------------------------------------------------------
    def probe(self, model, draw: _Draw) -> dict[str, Any]:
        """Per forget class: a logistic-regression probe on train features, F1 on test; f1 = max."""
        train, test = self.passes(model, "train", draw), self.passes(model, "test", draw)
        per_class, capped = {}, 0
        for cls, col in zip(self.forget, self.cols, strict=True):
            y_train = draw.train.multi_hot(self.labels)[:, col]
            y_test = draw.test.multi_hot(self.labels)[:, col]
            per_class[cls], stopped = _probe_fit(train.features, y_train, test.features, y_test, self.config)
            capped += stopped
        values = [v for v in per_class.values() if v is not None]
        return {"f1": max(values) if values else None, "per_class": per_class, "capped": capped}

    def forget_f1(self, logits: np.ndarray, notes: Notes) -> float:
        """F1 of the forget column(s) against the notes' labels; the max over forget classes."""
        pred = _predict(logits, self.multi_label)
        truth = notes.multi_hot(self.labels)
        return max(f1(truth[:, c], pred[:, c]) for c in self.cols)

    def relearn(self, models: dict[str, Any], draw: _Draw, token_ids) -> dict[str, Any]:
        steps = list(self.config.relearn_steps)
        out: dict[str, Any] = {"steps": steps, "head": {}, "rows": {}, "sample": len(draw.attack)}
        out["original_f1"] = self.forget_f1(self.passes(models["original"], "test", draw).logits, draw.test)
        for role in ("edited", "reference"):
            if models[role] is not None:
                out["head"][role] = self.relearn_head(models[role], draw)
        if token_ids and self.gradient(draw):
            out["rows"]["edited"] = self.relearn_rows(models["edited"], draw, token_ids)
        return out

    def relearn_sizes(self, models: dict[str, Any], draw: _Draw) -> dict[str, Any]:
        """The head re-fit for each attacker size n: n forget + n retain notes (fewer where the train split
        has fewer), the forget F1 on test after the last relearn step."""
        out: dict[str, Any] = {}
        for n in self.config.relearn_sizes:
            rows = draw.size_rows(n)
            forget_notes = int(np.sum(rows < draw.pool_forget))
            entry: dict[str, Any] = {"forget_notes": forget_notes, "retain_notes": len(rows) - forget_notes}
            for role in ("edited", "reference"):
                model = models[role]
                entry[role] = None if model is None else self.relearn_head(
                    model, draw, rows=rows, steps=[self.config.relearn_steps[-1]], phase="relearn sizes")[-1]
            out[str(n)] = entry
        return out

    def relearn_head(self, model, draw: _Draw, *, rows: np.ndarray | None = None, steps: Sequence[int] | None = None,
                     phase: str = "relearn head") -> list[float]:
        """The head re-fit attack's forget F1 after each of `steps` (see _relearn_head)."""
        steps = list(steps or self.config.relearn_steps)
        return self._remembered(model, "relearn_head", draw, lambda: self._relearn_head(model, draw, rows, steps, phase),
                                None if rows is None else np.asarray(rows).tolist(), steps)

    def _relearn_head(self, model, draw: _Draw, rows: np.ndarray | None, steps: list[int], phase: str) -> list[float]:
        """Re-fit ONLY the head on the attack sample (or on the pool `rows`: relearn_sizes), on the cached
        encoder outputs (the encoder is frozen, so its outputs do not change; this keeps the attack cheap on
        a CPU). A head the cache cannot replay exactly gets full passes through the frozen encoder instead:
        the same attack."""
        from steuops.features import head_logits
        from steuops.modeling import head_param_names

        which = "attack" if rows is None else "pool"
        source, test = self.passes(model, which, draw), self.passes(model, "test", draw)
        index = np.arange(len(draw.attack)) if rows is None else np.asarray(rows)
        sample = getattr(draw, which).subset(index)
        work = copy.deepcopy(model).to(self.device)
        head = set(head_param_names(work))
        params = [p for n, p in work.named_parameters() if n in head]
        for p in work.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        if source.exact and test.exact:
            def step(batch: list[int]):
                return head_logits(work, source.cache, index[batch].tolist())

            def evaluate() -> float:
                return self.forget_f1(_head_pass(work, test.cache, batch_size=self.config.batch_size,
                                                 device=self.device).logits, draw.test)
        else:
            step, evaluate = self._full_logits(work, sample), self._full_evaluate(work, draw)
        return self._fit(work, params, self.config.relearn_lr_head, step, evaluate, phase, draw=draw, sample=sample,
                         steps=steps)

    def relearn_rows(self, model, draw: _Draw, token_ids: Sequence[int], *, shortcut: bool = True) -> list[float]:
        """Re-fit ONLY the edited embedding rows (forward and backward through the frozen encoder).

        `shortcut`: only notes that contain an edited token run the encoder. With the encoder and the head
        frozen, every other note's logits stay exactly the model's own (its cached pass), in each step's loss
        and in each evaluation: the same curve for the notes that matter (most, on a class-specific edit)."""
        work = copy.deepcopy(model).to(self.device)
        for p in work.parameters():
            p.requires_grad_(False)
        rows = sorted(set(int(i) for i in token_ids))
        trained = _rows_only(work, rows)  # only the edited rows may move
        step, evaluate = self._full_logits(work, draw.attack), self._full_evaluate(work, draw)
        if shortcut:
            step = self._touched_logits(work, draw.attack, self.passes(model, "attack", draw).logits, rows,
                                        trained=trained)
            evaluate = self._touched_evaluate(work, draw, self.passes(model, "test", draw).logits, rows)
        # before the first step the copy is the model itself: its F1 is read off its own pass
        start = self.forget_f1(self.passes(model, "test", draw).logits, draw.test) if shortcut else None
        return self._fit(work, [trained], self.config.relearn_lr_rows, step, evaluate, "relearn rows", draw=draw,
                         sample=draw.attack, steps=self.config.rows_steps(), start=start)

    def _touched(self, texts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        from steuops.features import touched

        return touched(self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)["input_ids"],
                       token_ids)

    def _touched_logits(self, work, sample: Notes, cached: np.ndarray, token_ids: Sequence[int], *,
                        trained=None) -> Callable[[list[int]], Any]:
        """Like _full_logits, with the encoder run only on the batch's notes that contain an edited row.
        `trained`: the parameter being trained (default: the embedding matrix)."""
        import torch

        from steuops.modeling import embedding

        full, hit = self._full_logits(work, sample), self._touched(sample.texts, token_ids)
        weight = embedding(work).weight if trained is None else trained

        def step(rows: list[int]):
            z = torch.from_numpy(cached[rows]).to(self.device)
            fresh = [i for i, r in enumerate(rows) if hit[r]]
            if not fresh:  # the rows' gradient is exactly zero, as on the full path, and Adam still steps
                return z + 0.0 * weight.flatten()[0]
            got = full([rows[i] for i in fresh])
            return z.to(got.dtype).index_put((torch.tensor(fresh, device=self.device),), got)

        return step

    def _touched_evaluate(self, work, draw: _Draw, cached: np.ndarray, token_ids: Sequence[int]) -> Callable[[], float]:
        hit = np.flatnonzero(self._touched(draw.test.texts, token_ids))

        def evaluate() -> float:
            logits = cached.copy()
            if len(hit):
                logits[hit] = _forward_pass(work, self.tokenizer, [draw.test.texts[i] for i in hit],
                                            batch_size=self.config.batch_size, max_length=self.config.max_length,
                                            device=self.device).logits
            return self.forget_f1(logits, draw.test)

        return evaluate

    def retain_relearn(self, model, draw: _Draw) -> float | None:
        """Forget F1 on test after fine-tuning ALL of a copy's parameters on retain-only notes (the class's
        column(s) out of the loss: `retain_relearned`). None when skipped (see `_skipped`)."""
        if self.config.retain_relearn_steps == 0 or not len(draw.retain):
            return None
        key = (id(model), draw.seed)
        if key not in self._retain_memo:
            value = self._remembered(model, "retain_relearn", draw,
                                     lambda: self._full_evaluate(self.retain_relearned(model, draw), draw)())
            self._retain_memo[key] = (model, value)
        return self._retain_memo[key][1]

    def retain_relearned(self, model, draw: _Draw):
        """The fine-tuned copy: the attacker holds labelled notes of the other classes only, so the loss
        covers only the retain columns. Any forget F1 it regains came through the shared encoder and head
        layers, never from a gradient on the forget logit (zero: it is not in the loss)."""
        work = copy.deepcopy(model).to(self.device)
        params = list(work.parameters())
        for p in params:
            p.requires_grad_(True)
        steps = [self.config.retain_relearn_steps]
        self._fit(work, params, self.config.retain_relearn_lr, self._full_logits(work, draw.retain), lambda: 0.0,
                  "retain relearn", draw=draw, sample=draw.retain, steps=steps, keep=self.keep)
        return work

    def _full_logits(self, work, sample: Notes) -> Callable[[list[int]], Any]:
        """Sample rows -> logits of a full forward pass (with gradients)."""
        from steuops.modeling import tokenize

        def step(rows: list[int]):
            enc = tokenize(self.tokenizer, [sample.texts[i] for i in rows], self.config.max_length)
            return work(**enc.to(self.device)).logits

        return step

    def _full_evaluate(self, work, draw: _Draw) -> Callable[[], float]:
        def evaluate() -> float:
            return self.forget_f1(_forward_pass(work, self.tokenizer, draw.test.texts, batch_size=self.config.batch_size,
                                                max_length=self.config.max_length, device=self.device).logits, draw.test)

        return evaluate

    def _fit(self, work, params, lr: float, step: Callable[[list[int]], Any], evaluate: Callable[[], float],
             phase: str, *, draw: _Draw, sample: Notes, steps: Sequence[int], keep: Sequence[int] | None = None,
             start: float | None = None) -> list[float]:
        """Adam on `sample` in relearn_batch_size batches (random batch order, seeded by the draw); the
        forget F1 on test after each of `steps` optimiser steps. `keep`: the loss's columns (None = all);
        `start`: the F1 at step 0 when the caller has it (else evaluated)."""
        import torch

        from steuops.modeling import adam

        torch.manual_seed(draw.seed)
        rng = np.random.default_rng(draw.seed)
        optimiser = adam(params, lr=lr)
        work.eval()  # dropout off: a deterministic attack; gradients still flow
        y = torch.tensor(sample.multi_hot(self.labels))
        size = self.config.relearn_batch_size
        batches = [list(range(s, min(s + size, len(sample)))) for s in range(0, len(sample), size)]
        curve: list[float] = []
        done, order = 0, []
        total = steps[-1]
        for target in steps:
            while done < target:
                if not order:
                    order = list(rng.permutation(len(batches)))
                rows = batches[order.pop()]
                loss = self._loss(step(rows).float(), y[rows].to(self.device), keep)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                done += 1
                self._tell(phase, done, total)
            curve.append(round(float(start if done == 0 and start is not None else evaluate()), 6))
        return curve

    def _loss(self, logits, targets, keep: Sequence[int] | None = None):
        """BCE (multi-label) or cross-entropy (single-label) over the `keep` columns (None = all). Leaving
        a column out removes its logit from the loss, so that row of the head gets exactly zero gradient."""
        import torch

        if keep is not None:
            logits, targets = logits[:, list(keep)], targets[:, list(keep)]
        if self.multi_label:
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return torch.nn.functional.cross_entropy(logits, targets.argmax(dim=1))

    def membership(self, model, draw: _Draw) -> dict[str, Any]:
        """Members: forget-class notes of the train sample (the unlearning cohort); non-members:
        forget-class notes of the test sample. Score = log-likelihood of the forget label(s)."""
        members = draw.train.has_any(self.forget)
        held_out = draw.test.has_any(self.forget)
        s_in = self._label_score(self.passes(model, "train", draw).logits, draw.train)[members]
        s_out = self._label_score(self.passes(model, "test", draw).logits, draw.test)[held_out]
        return {"auc": roc_auc(s_in, s_out), "members": int(members.sum()), "non_members": int(held_out.sum()),
                "score": "log-likelihood of the forget label(s)"}

    def _label_score(self, logits: np.ndarray, notes: Notes) -> np.ndarray:
        truth = notes.multi_hot(self.labels)[:, self.cols]
        z = logits.astype(np.float64)
        # log sigmoid of each forget logit (multi-label) or its log softmax (single-label)
        ll = -np.logaddexp(0.0, -z[:, self.cols]) if self.multi_label else (z - _logsumexp(z))[:, self.cols]
        carried = np.maximum(truth.sum(axis=1), 1.0)
        return (ll * truth).sum(axis=1) / carried

    def cka(self, models: dict[str, Any], draw: _Draw) -> dict[str, float | None]:
        """Linear CKA between two models' head-input features on the seed's test notes (None where a
        model is missing or a side has no variance)."""
        out: dict[str, float | None] = {}
        for key, a, b in CKA_PAIRS:
            if models[a] is None or models[b] is None or not len(draw.test):
                out[key] = None
                continue
            value = linear_cka(self.passes(models[a], "test", draw).features,
                               self.passes(models[b], "test", draw).features)
            out[key] = None if np.isnan(value) else value
        return out

    # ---- bypass: fixed phrases, no sampling, so once (not per seed) ----------------------------------
    def bypass_texts(self) -> list[str]:
        sets = self.bypass_sets()
        texts: list[str] = []
        for entry in sets.values():
            for t in entry["positive"] + entry["negative"]:
                if t not in texts:
                    texts.append(t)
        return texts

    def bypass_sets(self) -> dict[str, dict[str, list[str]]]:
        from steuops.bypass import bypass_sets

        if self._bypass is None:
            self._bypass = bypass_sets(self.labels, self.forget, self.config.bypass_phrases)
        return self._bypass

    def bypass(self, models: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
        """Forget F1 on rewordings: positives name the forgotten class in other words, negatives
        reword the model's other classes and unrelated diagnoses. recall = the positive rate."""
        from steuops.bypass import TEMPLATES

        sets = self.bypass_sets()
        if not sets:
            skipped["bypass"] = (f"no built-in rewordings for {', '.join(self.forget)} and no user phrases "
                                 "(pass bypass_phrases / --bypass-phrases)")
            return {}
        texts = self.bypass_texts()
        index = {t: i for i, t in enumerate(texts)}
        out: dict[str, Any] = {"positives": {c: len(s["positive"]) for c, s in sets.items()},
                               "negatives": len(next(iter(sets.values()))["negative"]),
                               "user_phrases": list(self.config.bypass_phrases), "phrases": [],
                               "seeds": "none: fixed phrases, deterministic, computed once"}
        preds = {}
        for role, model in models.items():
            if model is None:
                continue
            preds[role] = _predict(self.passes(model, "bypass").logits, self.multi_label)
            f1s, recalls = [], []
            for cls, entry in sets.items():
                col = self.labels.index(cls)
                pos = [index[t] for t in entry["positive"]]
                neg = [index[t] for t in entry["negative"]]
                y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
                p = np.r_[preds[role][pos, col], preds[role][neg, col]]
                f1s.append(f1(y, p))
                recalls.append(float(preds[role][pos, col].mean()))
            out[role] = {"f1": max(f1s), "recall": max(recalls)}
        per = len(TEMPLATES)
        for cls, entry in sets.items():
            col = self.labels.index(cls)
            for i in range(0, len(entry["positive"]), per):
                group = [index[t] for t in entry["positive"][i : i + per]]
                phrase = _phrase_of(entry["positive"][i], TEMPLATES[0])
                row = {"class": cls, "phrase": phrase}
                row.update({role: float(p[group, col].mean()) for role, p in preds.items()})
                out["phrases"].append(row)
        return out


# ---- per-seed sections -> the report (means, spread) -----------------------------------------------
def _figures(one: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """One seed's headline figures, keyed like the report's top level."""
    curves = one["relearn_curves"]
    return {
        "probe_f1": {role: (one["probe"].get(role) or {}).get("f1") for role in ROLES},
        "relearn_f1": {"edited": _last(curves["head"].get("edited")), "reference": _last(curves["head"].get("reference")),
                       "edited_rows": _last(curves["rows"].get("edited"))},
        "membership_auc": {role: (one["membership"].get(role) or {}).get("auc") for role in ROLES},
        "retain_relearn_f1": dict(one["retain_relearn_f1"]),
        "cka": dict(one["cka"]),
    }


def _summarise(forget: list[str], per_seed: list[dict[str, Any]], bypass: dict[str, Any], config: AuditConfig,
               sizes: dict[str, Any], skipped: dict[str, str], seconds: dict[str, float]) -> AuditReport:
    figures = [_figures(one) for one in per_seed]
    spread = {figure: {key: _stat([f[figure][key] for f in figures]) for key in figures[0][figure]}
              for figure in figures[0]}
    return AuditReport(
        forget=forget, probe=_mean_probe(per_seed), relearn=_mean_curves([one["relearn_curves"] for one in per_seed]),
        membership=_mean_membership(per_seed), bypass=bypass, config=config.to_dict(), sizes=sizes,
        skipped=skipped, seconds={k: round(v, 3) for k, v in seconds.items()}, seeds=[one["seed"] for one in per_seed],
        spread=spread, relearn_sizes=_mean_sizes([one["relearn_sizes"] for one in per_seed]), per_seed=per_seed,
    )


def _mean_curves(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The relearn curves averaged step by step (so the last point is relearn_f1's mean)."""
    first = runs[0]
    out: dict[str, Any] = {"steps": first["steps"], "head": {}, "rows": {}, "sample": first["sample"],
                           "original_f1": _mean([r["original_f1"] for r in runs])}
    for kind in ("head", "rows"):
        for role in first[kind]:  # the rows re-fit runs on the first gradient_seeds seeds only
            curves = [r[kind][role] for r in runs if role in r[kind]]
            out[kind][role] = [_mean(column) for column in zip(*curves, strict=True)]
    return out


def _mean_probe(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for role in per_seed[0]["probe"]:
        runs = [one["probe"][role] for one in per_seed]
        out[role] = {"f1": _mean([r["f1"] for r in runs]),
                     "per_class": {c: _mean([r["per_class"][c] for r in runs]) for c in runs[0]["per_class"]},
                     # fits (class x seed) where lbfgs stopped at probe_steps short of its tolerance
                     "capped": sum(int(r.get("capped", 0)) for r in runs)}
    return out


def _mean_membership(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """AUC means; the cohort counts per seed (they vary when max_train / max_test subsample)."""
    out = {}
    for role in per_seed[0]["membership"]:
        runs = [one["membership"][role] for one in per_seed]
        out[role] = {"auc": _mean([r["auc"] for r in runs]), "members": [r["members"] for r in runs],
                     "non_members": [r["non_members"] for r in runs], "score": runs[0]["score"]}
    return out


def _mean_sizes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{n: {"forget_notes", "retain_notes", "edited": stat, "reference": stat | None}}; the counts depend
    only on the train split, so every seed has the same."""
    out: dict[str, Any] = {}
    for n, entry in runs[0].items():
        out[n] = {"forget_notes": entry["forget_notes"], "retain_notes": entry["retain_notes"]}
        for role in ("edited", "reference"):
            values = [r[n][role] for r in runs]
            out[n][role] = None if all(v is None for v in values) else _stat(values)
    return out


def _predict(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    from steuops.modeling import predict

    return predict(logits, multi_label)


def _phrase_of(text: str, template: str) -> str:
    head, _, tail = template.partition("{phrase}")
    return text[len(head) : len(text) - len(tail)] if text.startswith(head) and text.endswith(tail) else text


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _sample(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Rows of `cap` of `n` notes drawn without replacement (in their order), or every row when under the cap."""
    if cap is None or n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def _attack_rows(train: Notes, forget: Sequence[str], config: AuditConfig, rng: np.random.Generator) -> np.ndarray:
    """The attacker's labelled data: up to relearn_forget forget-class notes + relearn_retain others."""
    is_forget = train.has_any(forget)
    pos = np.flatnonzero(is_forget)
    neg = np.flatnonzero(~is_forget)
    pick = np.r_[rng.choice(pos, size=min(len(pos), config.relearn_forget), replace=False),
                 rng.choice(neg, size=min(len(neg), config.relearn_retain), replace=False)]
    return rng.permutation(pick).astype(np.int64)


def _probe_f1(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              config: AuditConfig) -> float | None:
    """F1 on test of a logistic-regression probe fitted on train (`_fit_probe`), at the threshold that
    maximises F1 on the probe's own training data (a strong but honest attacker). None when a class has
    no positive or no negative train example."""
    return _probe_fit(x_train, y_train, x_test, y_test, config)[0]


def _probe_fit(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               config: AuditConfig) -> tuple[float | None, bool]:
    """(`_probe_f1`, whether lbfgs stopped at probe_steps before reaching its tolerance)."""
    y_train = np.asarray(y_train).astype(bool).astype(np.int8)
    if len(x_train) == 0 or y_train.min() == y_train.max():
        return None, False
    probe = _fit_probe(x_train, y_train, config)
    capped = bool(np.max(probe[-1].n_iter_) >= config.probe_steps)
    threshold = _best_f1_threshold(y_train, probe.decision_function(np.asarray(x_train, dtype=np.float64)))
    if len(x_test) == 0:
        return 0.0, capped
    test_scores = probe.decision_function(np.asarray(x_test, dtype=np.float64))
    return round(f1(y_test, test_scores >= threshold), 6), capped


def _fit_probe(x: np.ndarray, y: np.ndarray, config: AuditConfig) -> Any:
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


# ---- public entry points -------------------------------------------------------------------------
def run_audit(
    original,
    edited,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    *,
    reference=None,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
    edit: Any = None,
    cache_dir: Any = None,
) -> AuditReport:
    """Audit `edited` (made from `original` by forgetting `forget`) next to `reference` (retrained
    without the class, or None). `train` holds the unlearning cohort (membership members, probe
    training data, the attacker's samples); `test` is held out. `edit` is the TokenEdit (or its token
    ids) when the method edited embedding rows: only then is the rows re-fit attack run. Every
    sampled attack runs for config.seeds seeds; the figures are means (see AuditReport.spread).
    No model passed in is modified (the attacks train copies). `cache_dir`: the audit cache (auditcache.py)
    for the original's and the reference's work; None computes everything."""
    auditor = _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir)
    token_ids, reason = _edit_tokens(edit)
    return auditor.run(original, edited, reference=reference, token_ids=token_ids, edit_reason=reason)


def audit_methods(
    original,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    results: Mapping[str, Any],
    *,
    reference=None,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Audit every method's result against one original and one reference, sharing their forward
    passes. `results` maps a method name to its UnlearnResult (or a bare model). The reference is
    `reference`, else results["retrain"] when present. Returns {method: AuditReport.to_dict()}."""
    if reference is None and "retrain" in results:
        reference = getattr(results["retrain"], "model", results["retrain"])
    auditor = _auditor(tokenizer, forget, train, test, config, device, progress)
    out: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        model = getattr(result, "model", result)
        token_ids, reason = _edit_tokens(getattr(result, "edit", None))
        report = auditor.run(original, model, reference=reference, token_ids=token_ids, edit_reason=reason)
        out[name] = {"method": name, **report.to_dict()}
        if model is not reference:
            auditor.release(model)  # keep only the original's and the reference's passes
    return out


def _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir: Any = None) -> _Auditor:
    from steuops.errors import CohortError
    from steuops.modeling import resolve_device

    if not isinstance(config, AuditConfig):
        config = AuditConfig.from_dict(config)
    config.validate()
    if not train.has_any(forget).any():
        raise CohortError(f"audit: no training note carries {', '.join(forget)}",
                          hint="the audit needs the forget cohort (notes with the forgotten class)")
    dev = resolve_device(device) if isinstance(device, str) else device
    disk = _disk(cache_dir, tokenizer, config, dev) if cache_dir is not None else None
    return _Auditor(tokenizer, forget, train, test, config, dev, progress, disk)


def _disk(cache_dir: Any, tokenizer, config: AuditConfig, device) -> AuditCache:
    """The audit cache under `cache_dir`, in the context an audit at `config` reads and writes (the one place that
    says what of the options keys an entry: an audit, remember_pass and recall_pass must all agree)."""
    from steuops.auditcache import AuditCache, context

    return AuditCache(cache_dir, context(tokenizer, {"batch_size": config.batch_size,
                                                     "max_length": config.max_length}, device))


def remember_pass(cache_dir: Any, model, tokenizer, texts: Sequence[str], logits: np.ndarray, cache: Any, *,
                  max_length: int, device: Any = "auto", rows: Sequence[int] | None = None) -> bool:
    """Keep `model`'s pass over `texts` (or over its notes `rows`), run elsewhere with its encoder outputs recorded
    (`cache`, which replays `logits` exactly), in the audit cache, where an audit at `max_length` looks for it:
    apply's evaluation runs the parent over the held-out notes and STEU's teacher over the training notes, and a
    later audit of any version of that parent reads them back (after running VERIFY_NOTES of them again) instead
    of running the encoder over them once more. The tokenizer must truncate as the audit's will. False when an
    entry is there already, the split is larger than REMEMBER_NOTES (an audit samples ~1,500 of them; it computes
    those itself) or the home is not writable."""
    from steuops.auditcache import texts_sha
    from steuops.modeling import fingerprint, resolve_device

    if len(texts) > REMEMBER_NOTES:
        return False
    dev = resolve_device(device) if isinstance(device, str) else device
    config = AuditConfig(max_length=max_length)
    disk = _disk(cache_dir, tokenizer, config, dev)
    fp, key = fingerprint(model), texts_sha(texts)
    if disk.load_arrays(fp, key) is not None:
        return False
    store = _SplitPass(len(texts))
    home = next(model.parameters()).device
    try:  # the head on the cache: the features, as the audit taps them
        head = _head_pass(model.to(dev), cache, batch_size=config.batch_size, device=dev)
    finally:
        model.to(home)
    where = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    store.write(where, _Pass(np.asarray(logits, np.float32), head.features, cache, True))
    try:
        disk.save_arrays(fp, key, store.arrays())
    except OSError:  # the audit computes them itself
        return False
    return True


def recall_pass(cache_dir: Any, model, tokenizer, texts: Sequence[str], *, max_length: int,
                device: Any = "auto") -> tuple[np.ndarray, Any] | None:
    """remember_pass's other half: `model`'s pass over every one of `texts` from the audit cache, as (logits,
    the encoder outputs that replay them exactly), once VERIFY_NOTES of them run again now give the same
    numbers. None when the cache holds no whole, exact pass of this model over these texts at `max_length`, or
    it no longer matches: the caller runs the pass itself. Apply reads its parent's held-out pass this way (the
    pass that made the parent, or an audit of it, kept it)."""
    from steuops.auditcache import texts_sha
    from steuops.modeling import fingerprint, resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    config = AuditConfig(max_length=max_length)
    arrays = _disk(cache_dir, tokenizer, config, dev).load_arrays(fingerprint(model), texts_sha(texts))
    store = _SplitPass.from_arrays(arrays, len(texts), dev)
    if store is None or not store.done.all() or not store.exact or store.cache is None:
        return None
    home = next(model.parameters()).device
    try:
        if not _still_matches(model.to(dev), tokenizer, texts, store, config, dev):
            return None
    finally:
        model.to(home)
    return store.logits, store.cache.take(list(range(len(texts))))  # dense, note i at row i, as a fresh pass's


def _still_matches(model, tokenizer, texts: Sequence[str], store: _SplitPass, config: AuditConfig, device) -> bool:
    """Whether VERIFY_NOTES of the notes `store` holds, run through `model` now, give its logits and features
    (a stale or foreign entry must never stand in for a pass)."""
    from steuops import features

    rows = np.flatnonzero(store.done)[:VERIFY_NOTES]
    fresh = _forward_pass(model, tokenizer, [texts[i] for i in rows], batch_size=config.batch_size,
                          max_length=config.max_length, device=device)
    return all(np.allclose(a, b[rows], atol=features.EXACT_ATOL, rtol=1e-4)
               for a, b in ((fresh.logits, store.logits), (fresh.features, store.features)))


def _edit_tokens(edit: Any) -> tuple[list[int] | None, str | None]:
    if edit is None:
        return None, "the method made no token edit (no embedding rows to re-fit)"
    ids = getattr(edit, "token_ids", edit)
    ids = [int(i) for i in ids]
    if not ids:
        return None, "the token edit changes no embedding rows (head only)"
    return ids, None


def audit_and_report(
    original,
    edited,
    tokenizer,
    forget: Sequence[str],
    train: Notes,
    test: Notes,
    evaluation: Mapping[str, Any],
    gate: Mapping[str, Any] | None,
    edit: Any,
    meta: Mapping[str, Any],
    out_dir: Any,
    reference=None,
    *,
    config: AuditConfig | Mapping[str, Any] | None = None,
    device: Any = "auto",
    progress: Progress | None = None,
    tokens: Sequence[Mapping[str, Any]] | None = None,
    cache_dir: Any = None,
) -> dict[str, Any]:
    """For the pipeline: run the audit, compute the before/after confusion on `test`, write
    audit.json + report.html + report.json into `out_dir`. Returns {"audit": AuditReport.to_dict(),
    "files": {"audit.json": path, "report.html": path, "report.json": path}, "confusion": ..., "tokens": [...]}.
    `edit` is the TokenEdit (or None); `tokens` (default: edit.info["tokens"]) feed the token table;
    `cache_dir`: the audit cache (see run_audit)."""
    import json
    from pathlib import Path

    from steuops import modeling
    from steuops.report import confusion, write_report

    auditor = _auditor(tokenizer, forget, train, test, config, device, progress, cache_dir)
    token_ids, reason = _edit_tokens(edit)
    report = auditor.run(original, edited, reference=reference, token_ids=token_ids, edit_reason=reason).to_dict()
    labels = modeling.label_names(original)
    multi = modeling.is_multi_label(original)
    # every held-out note: the test rows the audit's samples covered are not run again
    preds = [modeling.predict(auditor.split_logits(m, "test"), multi) for m in (original, edited)]
    auditor.save()  # the original's rows the samples did not cover
    matrix = confusion(test.multi_hot(labels), preds[0], preds[1], labels, multi)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    audit_path = out / "audit.json"
    audit_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if tokens is None:
        tokens = list((getattr(edit, "info", None) or {}).get("tokens") or [])
    html_path, json_path = write_report(out, evaluation, audit=report, gate=gate, tokens=tokens, confusion=matrix,
                                        meta=meta)
    return {"audit": report, "confusion": matrix, "tokens": list(tokens),
            "files": {"audit.json": audit_path, "report.html": html_path, "report.json": json_path}}
