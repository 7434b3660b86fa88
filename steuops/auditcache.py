"""The audit's memo on disk: work that depends on one FIXED model and the data, never on the edit.

An audit reads the edited model against two fixed models, its parent (the original) and the model
retrained without the class (the reference). Their forward passes over the cohort split and their
retain-only fine-tunes are most of an audit's cost on a CPU, and they are the same for every version
made from the same parent and for every re-run (`steuops report --refresh-audit`). So the auditor
keeps them here, under `$STEUOPS_HOME/cache/audit/`, keyed by:

- the model's fingerprint (sha256 of every tensor: `modeling.fingerprint`);
- the texts of the split (passes) or the texts and labels of both splits plus the seed (fine-tunes);
- a context: the audit options, the tokenizer, the device kind, torch and transformers versions and the
  source of the modules that compute the figures, so that changing any of them misses the memo.

The edited model's own work is never kept: a refresh measures it again. What is stored is logits,
head-input features and the few encoder outputs the head reads (numbers, never note text). The auditor
also re-runs a few stored notes on load and drops the entry if they do not match (`audit/auditor.py`).
Delete the folder to start over; nothing else reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "steuops.audit-cache/v1"
# the code that decides the cached numbers (every module of the audit package, and these): a change to any of it
# misses every entry
SOURCES = ("auditcache.py", "features.py", "modeling.py")
VALUES_FILE = "values.json"


# what an audit can read back, as people read it (the CLI's line and the report page)
WHAT = {"notes": "notes' passes", "probe": "probe fit(s)", "relearn_head": "head re-fit(s)",
        "retain_relearn": "retain-only fine-tune(s)"}


def describe(reused: Mapping[str, Mapping[str, int]]) -> str:
    """{"original": {"notes": 2276, ...}, ...} -> "the original's 2,276 notes' passes and ...; the reference's ..."."""
    return "; ".join(f"the {role}'s " + ", ".join(f"{int(n):,} {WHAT.get(what, what)}" for what, n in counts.items())
                     for role, counts in reused.items() if counts)


def root(home: str | Path) -> Path:
    """Where a steuops home keeps the audit cache."""
    return Path(home).expanduser() / "cache" / "audit"


def sha256_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def texts_sha(texts: Sequence[str]) -> str:
    """A hash of the texts in order (what a forward pass reads)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def tokenizer_key(tokenizer: Any) -> dict[str, Any]:
    """What decides how the tokenizer cuts a text: its full serialisation when it is a fast tokenizer,
    else its class and vocabulary; plus the sides it truncates and pads on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # without "truncation" and "padding": the fast tokenizer keeps the last call's settings there
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        body = sha256_of(spec)
    else:
        body = sha256_of(sorted(tokenizer.get_vocab().items()))
    return {"class": type(tokenizer).__name__, "body": body,
            "truncation_side": getattr(tokenizer, "truncation_side", None),
            "padding_side": getattr(tokenizer, "padding_side", None)}


def context(tokenizer: Any, options: Mapping[str, Any], device: Any) -> dict[str, Any]:
    import torch
    import transformers

    here = Path(__file__).parent
    files = sorted((here / "audit").glob("*.py")) + [here / name for name in SOURCES]
    code = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    return {"schema": SCHEMA, "options": dict(options), "tokenizer": tokenizer_key(tokenizer),
            "device": getattr(device, "type", str(device)), "torch": torch.__version__,
            "transformers": transformers.__version__, "code": code}


class AuditCache:
    """One folder per (model fingerprint, context): `pass-<split>.npz` files and a `values.json`."""

    def __init__(self, root: str | Path, context: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.key = sha256_of(dict(context))[:16]

    def folder(self, fingerprint: str) -> Path:
        return self.root / fingerprint[:24] / self.key

    # ---- arrays (one model's pass over one split) ---------------------------------------------------
    def load_arrays(self, fingerprint: str, split: str) -> dict[str, np.ndarray] | None:
        path = self.folder(fingerprint) / f"pass-{split[:24]}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a torn or foreign file: recompute, overwrite
            return None

    def save_arrays(self, fingerprint: str, split: str, arrays: Mapping[str, np.ndarray]) -> None:
        folder = self.folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        with _replacing(folder / f"pass-{split[:24]}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    # ---- values (one model's scalar results, by key) --------------------------------------------------
    def values(self, fingerprint: str) -> dict[str, Any]:
        path = self.folder(fingerprint) / VALUES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def put_values(self, fingerprint: str, new: Mapping[str, Any]) -> None:
        if not new:
            return
        folder = self.folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        merged = {**self.values(fingerprint), **new}
        with _replacing(folder / VALUES_FILE) as tmp:
            Path(tmp).write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """`with _replacing(path) as tmp:` write tmp; it then replaces `path` in one step (readers never see
    half a file; two audits writing the same entry leave one whole copy)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
