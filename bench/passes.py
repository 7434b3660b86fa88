"""An audit's encoder pass with its notes in order against sorted by length (modeling.length_batches), in one run.

    python bench/passes.py --out bench/results/passes-cpu-<host>-<date>.json     # ~12 min on 2 cores
    python bench/passes.py --pass teacher --max-lengths 256 512 --out ...         # STEU's teacher pass the same way

The demo's encoder (MiniLM, with a head over the demo's labels) runs over the first 512 demo notes (--notes; a first
audit runs a new reference over 1,376) at the audit's batch size, at each of --max-lengths. "in order" runs each batch
of 32 consecutive notes as its own `forward_pass` (so each pads to its own longest note, as every pass did before
length_batches); "by length" is one `forward_pass` over all of them, as an audit runs it now. The two alternate
(ABAB...), so a host whose speed moves (see bench/demo.py) moves both alike; the figure is the ratio of the medians.
Also recorded: the tokens each runs (pads included) and the largest logit and feature difference between them.
The demo's own version runs at 96 tokens, where nearly every note fills its batch: there sorting saves nothing, and
the figure shows what it costs (one tokenizer call over all notes instead of one per batch).

`--pass teacher` times STEU's teacher pass (methods.loop.teacher_pass: the frozen original's logits and the features
the shortcut replays, over notes `Batches` tokenized once, outside the timing) the same two ways: "in order" is the
pass as it was before 2359b8c (`teacher_pass_in_order`: batches of 32 consecutive notes), "by length" as it is now.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def in_order(model, tok, texts: list[str], batch_size: int, max_length: int, device) -> Any:
    """Batches of consecutive notes, each its own pass: what an audit's pass did before length_batches."""
    from steuops.audit.passes import Pass, forward_pass

    parts = [forward_pass(model, tok, texts[s : s + batch_size], batch_size=batch_size, max_length=max_length,
                          device=device, keep_cache=True) for s in range(0, len(texts), batch_size)]
    return Pass(np.concatenate([p.logits for p in parts]), np.concatenate([p.features for p in parts]))


def by_length(model, tok, texts: list[str], batch_size: int, max_length: int, device) -> Any:
    from steuops.audit.passes import forward_pass

    return forward_pass(model, tok, texts, batch_size=batch_size, max_length=max_length, device=device,
                        keep_cache=True)


def teacher_pass_in_order(model, batches, batch_size: int, *, features: bool = True, rows=None):
    """methods.loop.teacher_pass as it was before it sorted its notes by length (2359b8c's parent): batches of
    consecutive notes, each padded to its longest. bench/long_notes.py runs STEU with it."""
    from contextlib import nullcontext

    import torch

    from steuops import modeling
    from steuops.features import record

    order = range(len(batches)) if rows is None else list(rows)
    out = []
    with torch.no_grad(), (record(model) if features else nullcontext()) as recorder:
        for start in range(0, len(order), batch_size):
            ids, mask = batches.get(order[start : start + batch_size])
            with modeling.autocast(batches.device):
                out.append(model(input_ids=ids, attention_mask=mask).logits.float())
    return torch.cat(out), (recorder.cache() if recorder is not None else None)


def teacher_in_order(model, batches, batch_size: int) -> Any:
    from steuops.audit.passes import Pass

    logits, cache = teacher_pass_in_order(model, batches, batch_size)
    return Pass(logits.numpy(), _recorded(cache))


def teacher_by_length(model, batches, batch_size: int) -> Any:
    from steuops.audit.passes import Pass
    from steuops.methods.loop import teacher_pass

    logits, cache = teacher_pass(model, batches, batch_size)
    return Pass(logits.numpy(), _recorded(cache))


def _recorded(cache) -> np.ndarray:
    """Every field the teacher pass recorded for the shortcut, a row a note (to compare the two modes)."""
    return np.concatenate([v.reshape(len(v), -1).float().numpy() for _, v in sorted(cache.fields.items())
                           if v is not None], axis=1)


def padded_tokens(tok, texts: list[str], batch_size: int, max_length: int, sort: bool) -> int:
    lengths = np.array([len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]])
    if sort:
        lengths = np.sort(lengths)[::-1]
    return int(sum(len(c) * c.max() for c in np.array_split(lengths, range(batch_size, len(lengths), batch_size))))


def measure(model, tok, texts: list[str], batch_size: int, max_length: int, runs: int, device,
            which: str = "audit") -> dict[str, Any]:
    """Both modes of one pass (`which`: "audit" or "teacher") at one max length, alternating: seconds, their medians
    and ratio, tokens, differences."""
    modes = {"in_order": in_order, "by_length": by_length}
    if which == "teacher":
        from steuops.data import Notes
        from steuops.methods.loop import Batches

        batches = Batches(tok, Notes(texts, [[] for _ in texts]), max_length, device)  # tokenized once, untimed
        modes = {"in_order": lambda *_: teacher_in_order(model, batches, batch_size),
                 "by_length": lambda *_: teacher_by_length(model, batches, batch_size)}
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    out: dict[str, Any] = {}
    from demo import gflops  # bench/demo.py's CPU probe

    by_length(model, tok, texts[:64], batch_size, max_length, device)  # warm-up at this length, not timed
    speed = gflops()
    for run in range(runs):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            out[name] = fn(model, tok, texts, batch_size, max_length, device)
            seconds[name].append(round(time.perf_counter() - t0, 2))
            print(f"max_length {max_length}, run {run + 1}, {name}: {seconds[name][-1]} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    real = sum(len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"])
    return {
        "max_length": max_length, "gflops_before": speed, "gflops_after": gflops(), "seconds": seconds,
        "median_seconds": median,
        "notes_per_s": {name: round(len(texts) / s, 1) for name, s in median.items()},
        "speedup": round(median["in_order"] / median["by_length"], 3),
        "tokens": {"real": int(real), "in_order": padded_tokens(tok, texts, batch_size, max_length, sort=False),
                   "by_length": padded_tokens(tok, texts, batch_size, max_length, sort=True)},
        "max_abs_diff": {"logits": float(np.abs(out["in_order"].logits - out["by_length"].logits).max()),
                         "features": float(np.abs(out["in_order"].features - out["by_length"].features).max())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=512, help="demo notes to run (default 512)")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[96, 256, 512],
                        help="token limits to measure at (default 96, the demo version's, 256 and 512)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, alternating (default 3)")
    parser.add_argument("--pass", dest="which", choices=("audit", "teacher"), default="audit",
                        help="the audit's encoder pass (default) or STEU's teacher pass")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/passes-cpu-DATE.json)")
    args = parser.parse_args(argv)

    import torch
    from unlearn import cpu_model  # bench/ is on the path when a bench runs

    from steuops.audit import AuditConfig
    from steuops.demo.model import CLASSES, demo_notes, load_base

    batch_size = AuditConfig().batch_size
    model, tok = load_base(list(CLASSES))
    model.eval()
    texts = list(demo_notes().texts)[: args.notes]
    result = {"date": dt.date.today().isoformat(), "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0], "pass": args.which, "notes": len(texts), "batch_size": batch_size,
              "lengths": [measure(model, tok, texts, batch_size, n, args.runs, torch.device("cpu"), args.which)
                          for n in args.max_lengths]}
    path = args.out or RESULTS / f"passes-cpu-{result['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["lengths"]:
        print(f"max_length {row['max_length']}: in order {row['median_seconds']['in_order']} s, by length "
              f"{row['median_seconds']['by_length']} s, {row['speedup']}x; tokens {row['tokens']}; "
              f"max |diff| {row['max_abs_diff']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
