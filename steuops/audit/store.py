"""The audit's pass store: every model's encoder pass over the audit's notes, each row computed once whichever seed or
sample asks first, shared with an edited twin where the encoders agree, and kept in the audit cache on disk with the
fixed models' remembered attacks. The auditor (auditor.py) asks it for passes and runs the attacks on them."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.audit import passes as encoder
from steuops.audit.config import AuditConfig

if TYPE_CHECKING:
    from steuops.auditcache import AuditCache
    from steuops.data import Notes
    from steuops.modeling import Progress


class PassStore:
    """Passes by (model, split), split "train", "test" or "bypass" (`rows`). An edited model that differs from the
    original only in the head and some embedding rows takes the original's encoder outputs for every note without
    those rows (`share_encoder`). With an audit cache (`disk`): a fixed model's passes and attacks are read from it
    and written back (`fix`: the original, the reference), a passes-only model's passes alone (`keep_passes`: the
    edited model, whose attacks are what an audit is for). A bench keeps one store for many methods (`release`)."""

    def __init__(self, tokenizer, splits: Mapping[str, Notes], bypass_texts: Callable[[], list[str]],
                 config: AuditConfig, device, disk: AuditCache | None = None,
                 progress: Progress | None = None) -> None:
        self.tokenizer = tokenizer
        self.progress = progress  # told each encoder pass's batches, as "<role> pass"
        self.splits = dict(splits)
        self.bypass_texts = bypass_texts
        self.config = config
        self.device = device
        self.disk = disk
        # (model id, split) -> (model, its pass); the model is kept so its id is not reused
        self._cache: dict[tuple[int, str], tuple[Any, encoder.SplitPass]] = {}
        self._twins: dict[int, tuple[Any, list[int]]] = {}  # edited model -> (original, edited token ids)
        self.shortcut_notes = 0  # texts whose encoder pass an edited model took from the original's
        # the encoder passes run for this store (_encode): wall time, and notes per role
        self.encoder_seconds = 0.0
        self.encoder_notes: dict[str, int] = {}
        self.role_of: dict[int, str] = {}  # model id -> its role in the current audit
        self._fixed: dict[int, tuple[Any, str, str]] = {}  # model id -> (model, role, fingerprint)
        self._passes_only: dict[int, tuple[Any, str, str]] = {}
        self._values: dict[int, dict[str, Any]] = {}  # model id -> its attack results on disk (read once)
        self._new_values: dict[int, dict[str, Any]] = {}  # model id -> results computed now (written by save)
        self._split_keys: dict[str, str] = {}
        self.reused: dict[str, dict[str, int]] = {}  # role -> {"notes": n, "retain_relearn": seeds}
        self.rejected: list[str] = []  # entries found on disk that did not match a fresh pass
        self._distrusted: set[int] = set()  # fixed models with a rejected pass: their attacks are run again

    # ---- passes ------------------------------------------------------------------------------------
    def texts_of(self, split: str) -> list[str]:
        return self.bypass_texts() if split == "bypass" else self.splits[split].texts

    def rows(self, model, split: str, rows: np.ndarray) -> encoder.Pass:
        """`model`'s pass over those rows of `split`, computing only the rows no one asked for before."""
        texts = self.texts_of(split)
        key = (id(model), split)
        if key not in self._cache:
            self._cache[key] = (model, self._stored_pass(model, split) or encoder.SplitPass(len(texts)))
        store = self._cache[key][1]
        missing = store.missing(rows)
        if len(missing):
            model.to(self.device)
            store.write(missing, self._compute(model, split, missing, [texts[i] for i in missing]))
        return store.take(rows)

    def _compute(self, model, split: str, rows: np.ndarray, texts: Sequence[str]) -> encoder.Pass:
        twin = self._twins.get(id(model))
        shared = self._shared_pass(model, split, rows, texts, *twin) if twin else None
        if shared is not None:
            return shared
        return self._encode(model, texts)

    def _encode(self, model, texts: Sequence[str]) -> encoder.Pass:
        """`model`'s encoder over `texts`, timed and counted by role: the audit's seconds["passes"] and
        sizes["encoder_notes"] (a first audit runs a new reference over every note)."""
        started = time.perf_counter()
        role = self.role_of.get(id(model), "edited")
        out = encoder.forward_pass(model, self.tokenizer, texts, batch_size=self.config.batch_size,
                                   max_length=self.config.max_length, device=self.device, keep_cache=True,
                                   progress=self.progress, phase=f"{role} pass")
        self.encoder_seconds += time.perf_counter() - started
        self.encoder_notes[role] = self.encoder_notes.get(role, 0) + len(texts)
        return out

    def _shared_pass(self, model, split: str, rows: np.ndarray, texts: Sequence[str], original,
                     token_ids: Sequence[int]) -> encoder.Pass | None:
        """The edited model's pass from the original's: only texts with an edited token run the encoder;
        the rest reuse the original's encoder outputs (identical: see encoder.same_encoder), then the edited
        head runs on all. None when the original's cache cannot be replayed exactly."""
        base = self.rows(original, split, rows)
        if not base.exact:
            return None
        hit = np.flatnonzero(self.touched(texts, token_ids))
        cache = base.cache
        if len(hit):
            fresh = self._encode(model, [texts[i] for i in hit])
            if not fresh.exact:
                return None
            cache = cache.replace(hit.tolist(), fresh.cache)
        self.shortcut_notes += len(texts) - len(hit)
        return encoder.head_pass(model, cache, batch_size=self.config.batch_size, device=self.device)

    def touched(self, texts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        """Which texts contain one of `token_ids` once tokenized as the audit's passes tokenize them."""
        from steuops.features import touched

        return touched(self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)["input_ids"],
                       token_ids)

    def share_encoder(self, original, edited, token_ids: Sequence[int] | None) -> None:
        """Let `edited` reuse the original's encoder outputs when only the head and `token_ids` rows differ."""
        if edited is not original and encoder.same_encoder(original, edited, token_ids or []):
            self._twins[id(edited)] = (original, list(token_ids or []))

    def release(self, model) -> None:
        for key in [k for k in self._cache if k[0] == id(model)]:
            del self._cache[key]
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
            self.rows(model, split, np.zeros(0, dtype=np.int64))
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
            self._split_keys[split] = texts_sha(self.texts_of(split))
        return self._split_keys[split]

    def _stored_pass(self, model, split: str) -> encoder.SplitPass | None:
        """A fixed (or passes-only) model's pass over `split` from the audit cache, once a few of its notes, run
        again now, give the same logits and features (else None: it is computed afresh and overwritten)."""
        if self._on_disk(model) is None:
            return None
        _, role, fp = self._on_disk(model)
        texts = self.texts_of(split)
        store = encoder.SplitPass.from_arrays(self.disk.load_arrays(fp, self._split_key(split)), len(texts), self.device)
        if store is None:
            return None
        if not encoder.still_matches(model.to(self.device), self.tokenizer, texts, store, self.config, self.device):
            self.rejected.append(f"the {role}'s passes over the {split} notes (they differ from a fresh pass)")
            self._distrusted.add(id(model))  # fix() then reads none of its remembered attacks either
            return None
        self._count(role, "notes", int(store.done.sum()))
        return store

    def remembered(self, model, attack: str, key: Sequence[Any], compute: Callable[[], Any]) -> Any:
        """compute(): one attack on `model`; for a fixed model read from (or written to) the audit cache, under
        `attack` and a hash of both splits' notes and `key` (everything else that decides the attack)."""
        if id(model) not in self._fixed:
            return compute()
        from steuops.auditcache import sha256_of
        from steuops.reference import notes_sha256

        if "notes" not in self._split_keys:
            self._split_keys["notes"] = sha256_of([notes_sha256(self.splits[s]) for s in ("train", "test")])
        name = f"{attack}." + sha256_of([self._split_keys["notes"], *key])[:24]
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
