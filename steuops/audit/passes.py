"""Encoder passes: one model over a list of notes (logits, the head's input features, and what the head reads of
the encoder's output, so a head can be re-fit or re-run without the encoder), filled in row by row as samples ask,
and their form in the audit cache (remember_pass / recall_pass: apply's passes, read back by a later audit)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.audit.config import AuditConfig

if TYPE_CHECKING:
    from steuops.auditcache import AuditCache
    from steuops.modeling import Progress

VERIFY_NOTES = 4  # stored notes run again before an audit-cache entry is used
# remember_pass keeps a split of at most this many notes (MiniLM: about 3 KB a note on disk)
REMEMBER_NOTES = 10_000


# ---- forward passes ------------------------------------------------------------------------------
@dataclass
class Pass:
    """One model over one list of texts: logits, the head's input features, and (optionally) what the
    head reads of the encoder's output per note (steuops.features), so that a head can be re-fit or
    re-run without the encoder. `exact`: replaying that cache reproduces the model's logits."""

    logits: np.ndarray
    features: np.ndarray
    cache: Any = None  # steuops.features.FeatureCache | None
    exact: bool = False




class SplitPass:
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

    def write(self, rows: np.ndarray, part: Pass) -> None:
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

    def take(self, rows: np.ndarray) -> Pass:
        rows = np.asarray(rows, dtype=np.int64)
        if self.logits is None:  # no row asked for yet (an empty sample)
            return Pass(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), None, False)
        cache = self.cache.take(rows.tolist()) if self.cache is not None else None
        return Pass(self.logits[rows], self.features[rows], cache, self.exact)

    def arrays(self) -> dict[str, np.ndarray]:
        """For the audit cache (auditcache.py): the rows computed so far (numbers only; a large split's
        unsampled rows are not written)."""
        rows = np.flatnonzero(self.done)
        out = {"n": np.array(len(self.done)), "rows": rows, "logits": self.logits[rows],
               "features": self.features[rows], "exact": np.array(self.exact)}
        return out | (self.cache.take(rows.tolist()).to_arrays() if self.cache is not None else {})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray] | None, n: int, device) -> SplitPass | None:
        """The pass `arrays` (an audit-cache entry) wrote, or None: no entry, one for a split of another size, or a
        damaged or foreign one (a field missing or misshapen), which is then computed afresh and overwritten, never
        an error."""
        from steuops.features import FeatureCache

        if arrays is None or "rows" not in arrays or int(arrays.get("n", -1)) != n or not len(arrays["rows"]):
            return None
        store, rows = cls(n), arrays["rows"]
        try:
            part = FeatureCache.from_arrays(dict(arrays), device)
            store.write(rows, Pass(arrays["logits"], arrays["features"], part, bool(arrays["exact"])))
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError):
            return None
        store.dirty = False
        return store


@contextmanager
def _tapped(model) -> Iterator[dict[str, Any]]:
    """Features = the input of the first head module called (BERT: the pooled output; DistilBERT:
    hidden[:, 0]; RoBERTa-style heads get the sequence, so its first position is taken; a head that reads
    another position gets its features from the replay, see forward_pass). Eval mode."""
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


def _assemble(model, logits: list[np.ndarray], feats: list[np.ndarray], cache: Any, exact: bool) -> Pass:
    n_labels = int(model.config.num_labels)
    return Pass(
        logits=np.concatenate(logits) if logits else np.zeros((0, n_labels), np.float32),
        features=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        cache=cache, exact=exact,
    )


def forward_pass(model, tokenizer, texts: Sequence[str], *, batch_size: int, max_length: int, device,
                 keep_cache: bool = False, progress: Progress | None = None, phase: str = "encoder pass") -> Pass:
    """Eval-mode full pass: logits, head-input features and (keep_cache) the encoder outputs the head reads.
    `progress`: told (phase, batches done, batches) as it goes, so a CI log is not silent through a long pass."""
    from contextlib import nullcontext

    from steuops.features import exact, record
    from steuops.modeling import autocast, length_batches

    logits, feats, order = [], [], []
    batches = -(-len(texts) // batch_size)
    with _tapped(model) as seen, (record(model) if keep_cache else nullcontext()) as recorder:
        for done, (rows, enc) in enumerate(length_batches(tokenizer, texts, batch_size, max_length)):
            if progress:
                progress(phase, done, batches)
            with autocast(device):
                out = model(**enc.to(device))
            logits.append(out.logits.float().cpu().numpy())
            feats.append(_take_features(seen))
            order.append(rows)
        if progress and batches:
            progress(phase, batches, batches)
        if order:  # the batches ran longest notes first: note i back at row i
            back = np.argsort(np.concatenate(order))
            logits, feats = [np.concatenate(logits)[back]], [np.concatenate(feats)[back]]
        cache = recorder.cache(order) if recorder is not None else None
        # checked here, still in eval mode: a model handed over in train mode must not replay with dropout
        ok = cache is not None and exact(model, cache, _torch_of(np.concatenate(logits), device), device=device)
        seen.clear()
    if ok and cache.reading != "first":  # a head that reads the mean or the last token: its features are what it
        feats = [head_pass(model, cache, batch_size=batch_size, device=device).features]  # reads off the replay
    return _assemble(model, logits, feats, cache, ok)


def head_pass(model, cache, *, batch_size: int, device) -> Pass:
    """The same outputs as `forward_pass`, from a cache: only the head runs (exact, see features.py)."""
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


def same_encoder(original, edited, token_ids: Sequence[int]) -> bool:
    """True when `edited` differs from `original` at most in the head and in the embedding rows
    `token_ids`: then a text without those ids gets the original's encoder output exactly."""
    from steuops.features import changed_rows

    rows = changed_rows(original, edited)
    return rows is not None and set(rows) <= {int(i) for i in token_ids}


def open_cache(cache_dir: Any, tokenizer, config: AuditConfig, device) -> AuditCache:
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
    disk = open_cache(cache_dir, tokenizer, config, dev)
    fp, key = fingerprint(model), texts_sha(texts)
    if disk.load_arrays(fp, key) is not None:
        return False
    store = SplitPass(len(texts))
    home = next(model.parameters()).device
    try:  # the head on the cache: the features, as the audit taps them
        head = head_pass(model.to(dev), cache, batch_size=config.batch_size, device=dev)
    finally:
        model.to(home)
    where = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    store.write(where, Pass(np.asarray(logits, np.float32), head.features, cache, True))
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
    arrays = open_cache(cache_dir, tokenizer, config, dev).load_arrays(fingerprint(model), texts_sha(texts))
    store = SplitPass.from_arrays(arrays, len(texts), dev)
    if store is None or not store.done.all() or not store.exact or store.cache is None:
        return None
    home = next(model.parameters()).device
    try:
        if not still_matches(model.to(dev), tokenizer, texts, store, config, dev):
            return None
    finally:
        model.to(home)
    return store.logits, store.cache.take(list(range(len(texts))))  # dense, note i at row i, as a fresh pass's


def still_matches(model, tokenizer, texts: Sequence[str], store: SplitPass, config: AuditConfig, device) -> bool:
    """Whether VERIFY_NOTES of the notes `store` holds, run through `model` now, give its logits and features
    (a stale or foreign entry must never stand in for a pass)."""
    from steuops import features

    rows = np.flatnonzero(store.done)[:VERIFY_NOTES]
    fresh = forward_pass(model, tokenizer, [texts[i] for i in rows], batch_size=config.batch_size,
                         max_length=config.max_length, device=device, keep_cache=True)  # features as stored
    return all(np.allclose(a, b[rows], atol=features.EXACT_ATOL, rtol=1e-4)
               for a, b in ((fresh.logits, store.logits), (fresh.features, store.features)))
