"""The auditor: every attack of one audit (probe, head and rows re-fits, retain-only fine-tune, membership, CKA,
bypass), on the passes of its store (store.py), which computes each once (or reads it from the audit cache) and
shares it between seeds, samples and, for a bench, between the methods it audits against one original."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.audit import passes as encoder
from steuops.audit.config import CKA_PAIRS, PER_AUDIT_OPTIONS, ROLES, AuditConfig
from steuops.audit.draw import Draw, draw_notes
from steuops.audit.stats import auc_resamples, f1, gap_error, linear_cka, probe_fit, resample_error, roc_auc
from steuops.audit.store import PassStore
from steuops.audit.summary import AuditReport, summarise

if TYPE_CHECKING:
    from steuops.auditcache import AuditCache
    from steuops.data import Notes
    from steuops.modeling import Progress


# ---- the auditor ---------------------------------------------------------------------------------
class Auditor:
    """One audit's attacks (`run`), on the passes its store keeps (store.py: each note's encoder pass runs once, or
    is read from the audit cache, and an edited model shares the original's where their encoders agree). A bench
    keeps one auditor for many methods against one original and reference (`release` drops one model)."""

    def __init__(self, tokenizer, forget: Sequence[str], train: Notes, test: Notes, config: AuditConfig,
                 device, progress: Progress | None, disk: AuditCache | None = None) -> None:
        self.tokenizer = tokenizer
        self.forget = list(forget)
        self.config = config
        self.device = device
        self.progress = progress
        first = draw_notes(train, test, forget, config, config.seed)
        self.draws = [first] + [draw_notes(train, test, forget, config, config.seed + s, first.rows["test"][1])
                                for s in range(1, config.seeds)]
        self.store = PassStore(tokenizer, {"train": train, "test": test}, self.bypass_texts, config, device, disk,
                               progress)
        # (model id, seed) -> (model, retain-relearn F1): that fine-tune is the costly attack, and a bench
        # audits many methods against the same original and reference
        self._retain_memo: dict[tuple[int, int], tuple[Any, float]] = {}
        self._bypass: dict[str, dict[str, list[str]]] | None = None

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(phase, done, total)

    def passes(self, model, which: str, draw: Draw | None = None) -> encoder.Pass:
        """The model's pass over one seed's "train" / "test" / "attack" / "pool" notes, or over the bypass
        notes (which="bypass", no seed): rows of its pass over the split they come from, each row computed
        once for every seed and sample (see encoder.SplitPass)."""
        split, rows = ("bypass", np.arange(len(self.bypass_texts()))) if which == "bypass" else draw.rows[which]
        return self.store.rows(model, split, rows)

    def split_logits(self, model, split: str) -> np.ndarray:
        """The model's logits on every note of "train" / "test" (rows the audit computed are reused)."""
        return self.store.rows(model, split, np.arange(len(self.store.splits[split]))).logits

    def release(self, model) -> None:
        """Forget `model`: its passes, and its attacks kept for other audits."""
        self.store.release(model)
        for key in [k for k in self._retain_memo if k[0] == id(model)]:
            del self._retain_memo[key]

    def _remembered(self, model, attack: str, draw: Draw, compute: Callable[[], Any], *details: Any) -> Any:
        """compute(): one seed's `attack` on `model`, kept in the audit cache for a fixed model (store.remembered)
        under everything else that decides it: the audit options, the seed, the forget classes and label layout,
        and `details` (the attacker's rows, the steps)."""
        options = {k: v for k, v in self.config.to_dict().items() if k not in PER_AUDIT_OPTIONS}
        key = [options, draw.seed, self.forget, self.labels, self.multi_label, list(details)]
        return self.store.remembered(model, attack, key, compute)

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
        store = self.store
        store.role_of, store.encoder_notes = {}, {}
        for role, model in models.items():
            if model is not None:
                store.role_of.setdefault(id(model), role)
        store.share_encoder(original, edited, token_ids)
        seconds: dict[str, float] = {}
        with self._timed(seconds, "cache"):
            for role in ("original", "reference"):
                if models[role] is not None and models[role] is not edited:
                    store.fix(models[role], role)
            if edited is not original:
                store.keep_passes(edited, "edited")
        per_seed = [self.one_seed(models, draw, token_ids, seconds) for draw in self.draws]
        skipped = self._skipped(models, per_seed, token_ids, edit_reason)
        with self._timed(seconds, "bypass"):
            bypass = self.bypass(models, skipped)
        with self._timed(seconds, "cache"):
            store.save()
        report = summarise(self.forget, per_seed, bypass, self.config, self._sizes(per_seed), skipped, seconds)
        report.cache = store.cache_summary()
        return report

    @contextmanager
    def _timed(self, seconds: dict[str, float], part: str) -> Iterator[None]:
        """Adds the block's wall time to seconds[part] (summed over seeds), less the encoder passes it ran: those go
        to seconds["passes"], so that a new model's passes are not read as the cost of the attack that asked first."""
        t0, e0 = time.perf_counter(), self.store.encoder_seconds
        try:
            yield
        finally:
            passes = self.store.encoder_seconds - e0
            seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - t0 - passes
            seconds["passes"] = seconds.get("passes", 0.0) + passes

    def one_seed(self, models: dict[str, Any], draw: Draw, token_ids, seconds: dict[str, float]) -> dict[str, Any]:
        """Every sampled attack on one seed's draw: that seed's sections, as in `per_seed`."""
        live = {role: m for role, m in models.items() if m is not None}
        out: dict[str, Any] = {"seed": draw.seed, "sizes": self.sizes(draw)}
        with self._timed(seconds, "probe"):
            out["probe"] = {role: self._remembered(m, "probe", draw, lambda m=m: self.probe(m, draw))
                            for role, m in live.items()}
        with self._timed(seconds, "relearn"):
            out["relearn_curves"] = self.relearn(models, draw, token_ids)
        with self._timed(seconds, "relearn_sizes"):
            out["relearn_sizes"] = self.relearn_sizes(models, draw)
        with self._timed(seconds, "membership"):
            out["membership"] = {role: self.membership(m, draw) for role, m in live.items()}
        out["gap_error"] = _gap_errors(out)
        deep = self.gradient(draw)
        with self._timed(seconds, "retain_relearn"):
            out["retain_relearn_f1"] = {role: self.retain_relearn(live[role], draw)
                                        if role in live and deep and self.attacks_retain(role) else None
                                        for role in ROLES}
        with self._timed(seconds, "cka"):
            out["cka"] = self.cka(models, draw)
        return out

    def attacks_retain(self, role: str) -> bool:
        """Whether the retain-only fine-tune runs on `role`: the edited model always, the others as controls."""
        return role == "edited" or self.config.retain_relearn_controls

    def gradient(self, draw: Draw) -> bool:
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

    def sizes(self, draw: Draw) -> dict[str, int]:
        return {"train": len(draw.train), "test": len(draw.test), "attack": len(draw.attack),
                "forget_train": int(draw.train.has_any(self.forget).sum()),
                "forget_test": int(draw.test.has_any(self.forget).sum()), "retain_relearn": len(draw.retain)}

    def _sizes(self, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        """Counts every seed shares as ints; the forget counts vary with the subsample: a list, one per seed."""
        first = per_seed[0]["sizes"]
        out: dict[str, Any] = {k: v for k, v in first.items() if not k.startswith("forget_")}
        for key in ("forget_train", "forget_test"):
            out[key] = [one["sizes"][key] for one in per_seed]
        out["shortcut_notes"] = self.store.shortcut_notes
        out["encoder_notes"] = dict(self.store.encoder_notes)
        return out

    # ---- the attacks, one seed at a time -------------------------------------------------------------
    def probe(self, model, draw: Draw) -> dict[str, Any]:
        """Per forget class: a logistic-regression probe on train features, F1 on test; f1 = max."""
        train, test = self.passes(model, "train", draw), self.passes(model, "test", draw)
        per_class, capped, resamples = {}, 0, {}
        for cls, col in zip(self.forget, self.cols, strict=True):
            y_train = draw.train.multi_hot(self.labels)[:, col]
            y_test = draw.test.multi_hot(self.labels)[:, col]
            per_class[cls], stopped, resamples[cls] = probe_fit(train.features, y_train, test.features, y_test,
                                                                self.config)
            capped += stopped
        # the figure is the best class's F1, with that class's sampling error over the test notes
        best = max((c for c, v in per_class.items() if v is not None), key=per_class.get, default=None)
        return {"f1": None if best is None else per_class[best], "per_class": per_class, "capped": capped,
                **_with_error(None if best is None else resamples[best])}

    def forget_f1(self, logits: np.ndarray, notes: Notes) -> float:
        """F1 of the forget column(s) against the notes' labels; the max over forget classes."""
        pred = _predict(logits, self.multi_label)
        truth = notes.multi_hot(self.labels)
        return max(f1(truth[:, c], pred[:, c]) for c in self.cols)

    def relearn(self, models: dict[str, Any], draw: Draw, token_ids) -> dict[str, Any]:
        steps = list(self.config.relearn_steps)
        out: dict[str, Any] = {"steps": steps, "head": {}, "rows": {}, "sample": len(draw.attack)}
        out["original_f1"] = self.forget_f1(self.passes(models["original"], "test", draw).logits, draw.test)
        for role in ("edited", "reference"):
            if models[role] is not None:
                out["head"][role] = self.relearn_head(models[role], draw)
        if token_ids and self.gradient(draw):
            out["rows"]["edited"] = self.relearn_rows(models["edited"], draw, token_ids)
        return out

    def relearn_sizes(self, models: dict[str, Any], draw: Draw) -> dict[str, Any]:
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

    def relearn_head(self, model, draw: Draw, *, rows: np.ndarray | None = None, steps: Sequence[int] | None = None,
                     phase: str = "relearn head") -> list[float]:
        """The head re-fit attack's forget F1 after each of `steps` (see _relearn_head)."""
        steps = list(steps or self.config.relearn_steps)
        return self._remembered(model, "relearn_head", draw, lambda: self._relearn_head(model, draw, rows, steps, phase),
                                None if rows is None else np.asarray(rows).tolist(), steps)

    def _relearn_head(self, model, draw: Draw, rows: np.ndarray | None, steps: list[int], phase: str) -> list[float]:
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
        cached = source.exact and test.exact
        with (_head_copy if cached else _whole_copy)(model, self.device) as work:
            head = set(head_param_names(work))
            params = [p for n, p in work.named_parameters() if n in head]
            for p in params:
                p.requires_grad_(True)
            if cached:
                def step(batch: list[int]):
                    return head_logits(work, source.cache, index[batch].tolist())

                def evaluate() -> float:
                    return self.forget_f1(encoder.head_pass(work, test.cache, batch_size=self.config.batch_size,
                                                            device=self.device).logits, draw.test)
            else:
                step, evaluate = self._full_logits(work, sample), self._full_evaluate(work, draw)
            return self._fit(work, params, self.config.relearn_lr_head, step, evaluate, phase, draw=draw,
                             sample=sample, steps=steps)

    def relearn_rows(self, model, draw: Draw, token_ids: Sequence[int], *, shortcut: bool = True) -> list[float]:
        """Re-fit ONLY the edited embedding rows (forward and backward through the frozen encoder).

        `shortcut`: only notes that contain an edited token run the encoder. With the encoder and the head
        frozen, every other note's logits stay exactly the model's own (its cached pass), in each step's loss
        and in each evaluation: the same curve for the notes that matter (most, on a class-specific edit)."""
        with _whole_copy(model, self.device) as work:
            rows = sorted(set(int(i) for i in token_ids))
            trained = _rows_only(work, rows)  # only the edited rows may move
            step, evaluate = self._full_logits(work, draw.attack), self._full_evaluate(work, draw)
            if shortcut:
                step = self._touched_logits(work, draw.attack, self.passes(model, "attack", draw).logits, rows,
                                            trained=trained)
                evaluate = self._touched_evaluate(work, draw, self.passes(model, "test", draw).logits, rows)
            # before the first step the copy is the model itself: its F1 is read off its own pass
            start = self.forget_f1(self.passes(model, "test", draw).logits, draw.test) if shortcut else None
            return self._fit(work, [trained], self.config.relearn_lr_rows, step, evaluate, "relearn rows",
                             draw=draw, sample=draw.attack, steps=self.config.rows_steps(), start=start)

    def _touched_logits(self, work, sample: Notes, cached: np.ndarray, token_ids: Sequence[int], *,
                        trained=None) -> Callable[[list[int]], Any]:
        """Like _full_logits, with the encoder run only on the batch's notes that contain an edited row.
        `trained`: the parameter being trained (default: the embedding matrix)."""
        import torch

        from steuops.modeling import embedding

        full, hit = self._full_logits(work, sample), self.store.touched(sample.texts, token_ids)
        weight = embedding(work).weight if trained is None else trained

        def step(rows: list[int]):
            z = torch.from_numpy(cached[rows]).to(self.device)
            fresh = [i for i, r in enumerate(rows) if hit[r]]
            if not fresh:  # the rows' gradient is exactly zero, as on the full path, and Adam still steps
                return z + 0.0 * weight.flatten()[0]
            got = full([rows[i] for i in fresh])
            return z.to(got.dtype).index_put((torch.tensor(fresh, device=self.device),), got)

        return step

    def _touched_evaluate(self, work, draw: Draw, cached: np.ndarray, token_ids: Sequence[int]) -> Callable[[], float]:
        hit = np.flatnonzero(self.store.touched(draw.test.texts, token_ids))

        def evaluate() -> float:
            logits = cached.copy()
            if len(hit):
                logits[hit] = encoder.forward_pass(work, self.tokenizer, [draw.test.texts[i] for i in hit],
                                                   batch_size=self.config.batch_size,
                                                   max_length=self.config.max_length, device=self.device).logits
            return self.forget_f1(logits, draw.test)

        return evaluate

    def retain_relearn(self, model, draw: Draw) -> float | None:
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

    def retain_relearned(self, model, draw: Draw):
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

    def _full_evaluate(self, work, draw: Draw) -> Callable[[], float]:
        def evaluate() -> float:
            logits = encoder.forward_pass(work, self.tokenizer, draw.test.texts, batch_size=self.config.batch_size,
                                          max_length=self.config.max_length, device=self.device,
                                          progress=self.progress, phase="attack evaluation").logits
            return self.forget_f1(logits, draw.test)

        return evaluate

    def _fit(self, work, params, lr: float, step: Callable[[list[int]], Any], evaluate: Callable[[], float],
             phase: str, *, draw: Draw, sample: Notes, steps: Sequence[int], keep: Sequence[int] | None = None,
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

    def membership(self, model, draw: Draw) -> dict[str, Any]:
        """Members: forget-class notes of the train sample (the unlearning cohort); non-members:
        forget-class notes of the test sample. Score = log-likelihood of the forget label(s)."""
        members = draw.train.has_any(self.forget)
        held_out = draw.test.has_any(self.forget)
        s_in = self._label_score(self.passes(model, "train", draw).logits, draw.train)[members]
        s_out = self._label_score(self.passes(model, "test", draw).logits, draw.test)[held_out]
        return {"auc": roc_auc(s_in, s_out), **_with_error(auc_resamples(s_in, s_out)), "members": int(members.sum()),
                "non_members": int(held_out.sum()), "score": "log-likelihood of the forget label(s)"}

    def _label_score(self, logits: np.ndarray, notes: Notes) -> np.ndarray:
        truth = notes.multi_hot(self.labels)[:, self.cols]
        z = logits.astype(np.float64)
        # log sigmoid of each forget logit (multi-label) or its log softmax (single-label)
        ll = -np.logaddexp(0.0, -z[:, self.cols]) if self.multi_label else (z - _logsumexp(z))[:, self.cols]
        carried = np.maximum(truth.sum(axis=1), 1.0)
        return (ll * truth).sum(axis=1) / carried

    def cka(self, models: dict[str, Any], draw: Draw) -> dict[str, float | None]:
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


@contextmanager
def _whole_copy(model, device) -> Iterator[Any]:
    """A frozen copy of every parameter of `model`, on `device`."""
    work = copy.deepcopy(model).to(device)
    for p in work.parameters():
        p.requires_grad_(False)
    yield work


@contextmanager
def _head_copy(model, device) -> Iterator[Any]:
    """A copy of `model` with a head of its own and `model`'s base model itself, frozen while the copy is in use: a
    head re-fit on cached encoder outputs trains the head alone, so the base's weights need no copy (MiniLM: 90 MB,
    about 60 ms, and an audit re-fits 24 heads). `model` is moved to `device`, as a pass over it would be."""
    from steuops.modeling import head_param_names

    model.to(device)
    head = set(head_param_names(model))
    shared = [p for n, p in model.named_parameters() if n not in head]
    flags = [p.requires_grad for p in shared]
    work = copy.deepcopy(model, {id(p): p for p in shared})
    for p in work.parameters():
        p.requires_grad_(False)
    try:
        yield work
    finally:
        for p, flag in zip(shared, flags, strict=True):
            p.requires_grad_(flag)


def _rows_only(model, token_ids: Sequence[int]):
    """A Parameter of the embedding rows `token_ids`, put in place of the frozen matrix's rows by a forward hook on
    the embedding (modeling.RowTable): training it trains those rows alone, with the values and gradients of a masked
    update of the whole matrix, minus that matrix's dense gradient and optimiser state (30,522 rows for MiniLM)."""
    from steuops.modeling import RowTable, embedding

    module = embedding(model)
    table = RowTable(module.weight, token_ids)
    module.register_forward_hook(table.hook)
    return table.rows


def _predict(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    from steuops.modeling import predict

    return predict(logits, multi_label)


def _phrase_of(text: str, template: str) -> str:
    head, _, tail = template.partition("{phrase}")
    return text[len(head) : len(text) - len(tail)] if text.startswith(head) and text.endswith(tail) else text


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _with_error(resamples: np.ndarray | None) -> dict[str, Any]:
    """A figure's sampling error (the spread of its bootstrap resamples) and the resamples themselves, which the
    seed's gap errors read (`_gap_errors`) before they leave its sections."""
    if resamples is None:
        return {"error": None, "resamples": None}
    return {"error": resample_error(resamples), "resamples": [round(float(v), 6) for v in resamples]}


def _gap_errors(seed: dict[str, Any]) -> dict[str, float | None]:
    """The sampling error of each figure's gap between the edited model and the reference (stats.gap_error: both
    were resampled on the same notes), for the verdict to tell a gap from noise. The resamples then leave the seed's
    sections: 500 numbers a model and figure are not worth keeping in audit.json. Copies, so that a remembered
    attack (kept for the audit cache) keeps its own."""
    gaps = {}
    for figure, section in (("probe_f1", "probe"), ("membership_auc", "membership")):
        cells = seed[section]
        gaps[figure] = gap_error(*((cells.get(role) or {}).get("resamples") for role in ("edited", "reference")))
        seed[section] = {role: {k: v for k, v in cell.items() if k != "resamples"} for role, cell in cells.items()}
    return gaps
