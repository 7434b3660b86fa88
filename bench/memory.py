"""Memory of STEU's teacher pass with retain sampling: it should follow the notes run, not the split.

The teacher pass (methods/loop.py `SampledTeacher`) runs the frozen original on the forget notes and each
epoch's drawn retain notes, and keeps what the head reads of the encoder's output for the cached-feature
shortcut. This bench runs the same cohort (`--run` notes spread over the split) inside splits of growing size
and records the feature cache's bytes and the resident memory the pass adds (VmRSS after minus before, freed
heap handed back first; one fresh process per split size).

    python bench/memory.py --out bench/results/memory-cpu-DATE.json
    python bench/memory.py --quick            # a 32-wide tiny BERT and smaller splits, seconds

Encoder: the demo's MiniLM (`--quick`: a tiny BERT built in code). Notes: the demo's generator, repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)

SIZES = [20_000, 200_000]
QUICK_SIZES = [2_000, 20_000]


def rss_mb() -> float:
    """Resident memory after handing freed heap back to the OS: without malloc_trim, what glibc keeps of the
    forward passes' freed activations swung the figure by 150-900 MB between identical runs."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(n: int, run: int, quick: bool) -> dict[str, Any]:
    """In this process: a lazily tokenized split of `n` notes, the teacher pass over `run` of them."""
    import torch

    from steuops.data import Notes
    from steuops.demo.notes import generate
    from steuops.methods import loop

    base = generate(400, seed=0)
    if quick:
        from steuops.tiny import classifier, wordpiece_tokenizer

        tok = wordpiece_tokenizer(base.texts, vocab_size=400)
        model = classifier(sorted({c for ls in base.labels for c in ls}), len(tok), hidden=32, layers=1)
    else:
        from steuops.demo.model import load_base

        model, tok = load_base()
    notes = Notes([base.texts[i % len(base)] for i in range(n)], [base.labels[i % len(base)] for i in range(n)])
    edited = loop.frozen_copy(model, torch.device("cpu"))
    batches = loop.Batches(tok, notes, 128, torch.device("cpu"), lazy=True)
    teacher = loop.SampledTeacher(edited, batches, 32, features=True)
    before = rss_mb()
    start = time.perf_counter()
    teacher.run(list(range(0, n, max(1, n // run)))[:run])
    seconds = time.perf_counter() - start
    cache = teacher.cache
    held = sum(v.numel() * v.element_size() for v in cache.fields.values() if v is not None) if cache else 0
    rows = getattr(cache, "stored", len(cache)) if cache is not None else 0  # a dense cache (older code): every note
    return {"split_notes": n, "notes_run": int(teacher.done.sum()), "rss_added_mb": round(rss_mb() - before, 1),
            "cache_mb": round(held / 2**20, 1), "cache_rows": rows, "seconds": round(seconds, 2)}


def commit() -> str | None:
    """The git commit of the steuops being measured (PYTHONPATH may point at another checkout)."""
    import steuops

    done = subprocess.run(["git", "-C", str(Path(steuops.__file__).parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--run", type=int, default=2000, help="notes the teacher runs (the cohort)")
    parser.add_argument("--quick", action="store_true", help="a tiny BERT and small splits")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.run, args.quick)))
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from unlearn import cpu_model

    rows = []
    for n in QUICK_SIZES if args.quick else SIZES:
        cmd = [sys.executable, __file__, "--one", str(n), "--run", str(args.run)] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"split {rows[-1]['split_notes']:>8,} notes, run {rows[-1]['notes_run']:,}: feature cache "
              f"{rows[-1]['cache_mb']:,.1f} MB, +{rows[-1]['rss_added_mb']:,.0f} MB resident, {rows[-1]['seconds']} s",
              flush=True)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_model(), "commit": commit(),
              "encoder": "tiny BERT (32 wide)" if args.quick else "MiniLM (demo)", "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
