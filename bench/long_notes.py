"""STEU on long notes: its seconds, its teacher pass's share of them, and what running that pass longest first saves.

    python bench/long_notes.py --out bench/results/long-notes-cpu-<host>-<date>.json    # ~15 min on 2 cores
    python bench/long_notes.py --fp32 --cache DIR --out ...      # STEU's steps in fp32 (DIR: the classifier, kept)

The demo's classifier is trained at --max-length (default 256; the demo's own version runs at 96, where nearly
every note is cut and sorting changes nothing) with the demo's recipe otherwise, on the notes bench/unlearn.py
uses. It then forgets sepsis with bench/unlearn.py's CPU STEU options (retain sampling: the teacher pass runs the
cohort and each epoch's drawn retain notes) at the same length, --runs times each way, alternating: "in order" is
the teacher pass as it was before 2359b8c (bench/passes.py's `teacher_pass_in_order`), "by length" as it is now.
Each run records STEU's seconds and the teacher pass's own (every call summed). The edits are compared between the two ways and
between a way's first and last run (the floor: the same inputs twice), by rows, trained values and the forget and
retain F1 on the held-out notes. The two ways' teacher logits differ by float rounding (about 6e-6 at 256 tokens);
training, under bf16 autocast on a CPU with native bf16 and with Adam's steps near zero gradients, carries that
into the trained rows, as a bf16 host and an fp32 one differ (lineage.PRECISION).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@contextmanager
def teacher(way: str, seconds: list[float]):
    """STEU with its teacher pass run `way` ("in_order" or "by_length"), each call's seconds appended to `seconds`.
    Both names are patched: SampledTeacher calls loop's, the whole-split path the one method.py imported."""
    from passes import teacher_pass_in_order  # bench/passes.py: the pass as it was

    from steuops.methods import loop
    from steuops.methods.steu import method

    real = loop.teacher_pass
    chosen = teacher_pass_in_order if way == "in_order" else real

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return chosen(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    loop.teacher_pass = method.teacher_pass = timed
    try:
        yield
    finally:
        loop.teacher_pass = method.teacher_pass = real


def one_run(way: str, model, tok, train, config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from steuops.methods import unlearn

    calls: list[float] = []
    with teacher(way, calls):
        result = unlearn("steu", model, tok, ["sepsis"], train, config, device="cpu")
    row = {"way": way, "seconds": round(result.seconds, 2), "teacher_seconds": round(sum(calls), 2),
           "teacher_calls": len(calls), "rows": len(result.edit.token_ids), "epochs": len(result.info["losses"])}
    return row, result


def row_diff(a, b) -> dict[str, Any]:
    """How far apart two edits are: the same rows?, the largest element difference, and the difference's norm
    against the rows' change from the original (edit.rows minus original rows is what training moved)."""
    if a.edit.token_ids != b.edit.token_ids:
        return {"same_rows": False}
    moved = (a.edit.rows - a.edit.original_rows).norm()
    return {"same_rows": True, "max_abs_diff": float((a.edit.rows - b.edit.rows).abs().max()),
            "relative_norm_diff": float((a.edit.rows - b.edit.rows).norm() / moved)}


def compare(runs: dict[str, list[Any]], model, tok, test, max_length: int) -> dict[str, Any]:
    """The two ways' last edits against each other, and each way's first and last run against each other (the
    noise floor: training under bf16 autocast), and each way's last edit's F1 on the held-out notes."""
    from steuops.metrics import evaluate

    out: dict[str, Any] = {"between_ways": row_diff(runs["in_order"][-1], runs["by_length"][-1])}
    for way, results in runs.items():
        ev = evaluate(model, results[-1].model, tok, test, ["sepsis"], device="cpu", max_length=max_length,
                      batch_size=64)
        out[way] = {"forget_f1": ev.after.forget_f1, "retain_macro_f1": ev.after.retain_macro_f1,
                    "first_against_last_run": row_diff(results[0], results[-1]) if len(results) > 1 else None}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=256, help="tokens a note is cut at (default 256)")
    parser.add_argument("--notes", type=int, default=1000, help="demo notes, 80%% to train (default 1000)")
    parser.add_argument("--runs", type=int, default=2, help="STEU runs each way, alternating (default 2)")
    parser.add_argument("--cache", type=Path, default=None, help="keep the trained classifier here and reuse it")
    parser.add_argument("--fp32", action="store_true",
                        help="train STEU's steps in fp32 on a CPU with native bf16 too (cpu_bf16 off)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON (default bench/results/long-notes-cpu-DATE.json)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from demo import gflops
    from unlearn import PRESETS, Preset, cpu_model, demo_classifier, log

    from steuops import modeling
    from steuops.data import split_notes
    from steuops.demo.model import DEMO_MAX_SENTENCES, DEMO_MIN_SENTENCES, base_encoder_dir
    from steuops.demo.notes import generate

    cpu = PRESETS["cpu"]
    preset = Preset(notes=args.notes, max_length=args.max_length, demo_epochs=cpu.demo_epochs,
                    batch_size=cpu.batch_size, steu=cpu.steu)
    notes = generate(n=args.notes, seed=0, min_sentences=DEMO_MIN_SENTENCES, max_sentences=DEMO_MAX_SENTENCES)
    train, test = split_notes(notes, test_fraction=0.2, seed=0)
    log(f"{len(train)} train / {len(test)} test notes; training the demo classifier at {args.max_length} tokens")
    model, tok, train_seconds = demo_classifier(train, preset, base_encoder_dir(), "cpu", args.cache)
    lengths = np.array([len(ids) for ids in tok(list(train.texts), truncation=True,
                                                max_length=args.max_length)["input_ids"]])
    config = {"max_length": args.max_length, "batch_size": preset.batch_size, **preset.steu,
              **({"cpu_bf16": False} if args.fp32 else {})}
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0], "max_length": args.max_length, "train_notes": len(train),
        "test_notes": len(test), "train_tokens": {"median": float(np.median(lengths)),
                                                  "cut": float((lengths == args.max_length).mean())},
        "classifier_seconds": None if train_seconds is None else round(train_seconds, 1), "steu_config": config,
        "gflops_before": gflops(), "runs": []}
    edits: dict[str, list[Any]] = {"in_order": [], "by_length": []}
    for run in range(args.runs):
        for way in ("in_order", "by_length"):
            row, edit = one_run(way, model, tok, train, config)
            edits[way].append(edit)
            result["runs"].append({"run": run + 1, **row})
            log(f"run {run + 1}, {way}: STEU {row['seconds']} s, its teacher pass {row['teacher_seconds']} s "
                f"({row['teacher_calls']} calls)")
    result["gflops_after"] = gflops()
    for key in ("seconds", "teacher_seconds"):
        result[f"median_{key}"] = {way: statistics.median(r[key] for r in result["runs"] if r["way"] == way)
                                   for way in ("in_order", "by_length")}
    result["training_precision"] = modeling.training_precision(torch.device("cpu"), cpu_bf16=bool(config.get("cpu_bf16")))
    result["edits"] = compare(edits, model, tok, test, args.max_length)
    path = args.out or RESULTS / f"long-notes-cpu-{result['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_seconds", "median_teacher_seconds", "edits")}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
