"""What ONNX Runtime's transformer optimizer costs and buys on a Longformer graph (why graph.NOT_OPTIMIZED lists it).

    python bench/longformer_export.py --layers 2 12 --out bench/results/longformer-export-cpu-<host>-<date>.json

For each depth: a random-init Longformer classifier (steuops.tiny, 32 wide, windows of 8, global attention on the
first token) exported at a fixed length (the way steuops ships a Longformer: its traced graph keeps the window count),
the graph's node count, the optimizer's seconds (model_type "bert", opt_level 1, as graph.optimize runs it) and the
nodes it leaves, the fused operators it made, and the latency of a batch of notes on each file (ONNX Runtime CPU
sessions with their own load-time optimisations, the way servers run them; runs alternate between the two files,
the first of each is dropped, medians reported) with the largest logit difference between them.
12 layers is Clinical-Longformer's depth; its width (768) would make every pass slower, not the graph larger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def log(message: str) -> None:
    print(f"[longformer_export] {message}", file=sys.stderr, flush=True)


def one_depth(layers: int, length: int, batch: int, runs: int, work: Path) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    from steuops.demo.notes import generate
    from steuops.export import export_onnx, fused_op_counts, settings_for
    from steuops.tiny import classifier, tokenizer_for

    notes = generate(n=max(batch, 40), seed=3)
    tok = tokenizer_for("longformer", notes.texts, 600)
    model = classifier(["sepsis", "pneumonia", "copd"], vocab_size=len(tok), arch="longformer", layers=layers)
    folder = work / f"layers{layers}"
    folder.mkdir()
    t0 = time.perf_counter()
    plain = export_onnx(model, tok, folder, settings=settings_for(tok, length), fixed_length=length)
    exported = time.perf_counter() - t0
    t0 = time.perf_counter()
    opt = optimize_model(str(plain), model_type="bert", num_heads=model.config.num_attention_heads,
                         hidden_size=model.config.hidden_size, opt_level=1)
    optimized = time.perf_counter() - t0
    opt_path = folder / "model.opt.onnx"
    opt.save_model_to_file(str(opt_path), use_external_data_format=False)
    log(f"{layers} layers: exported in {exported:.1f} s, optimised in {optimized:.1f} s")

    enc = tok(notes.texts[:batch], padding="max_length", truncation=True, max_length=length, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    sessions = {p.name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (plain, opt_path)}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    logits: dict[str, Any] = {}
    for _ in range(runs + 1):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            logits[name] = sess.run(None, feeds)[0]
            times[name].append(time.perf_counter() - t0)
    return {
        "layers": layers, "fixed_length": length, "batch": batch,
        "nodes": len(onnx.load(str(plain)).graph.node), "nodes_after": len(opt.model.graph.node),
        "export_seconds": round(exported, 1), "optimize_seconds": round(optimized, 1),
        "fused_ops": fused_op_counts(opt_path),
        "batch_ms": {name: round(1000 * statistics.median(t[1:]), 1) for name, t in times.items()},
        "max_abs_logit_diff": float(np.abs(logits["model.onnx"] - logits["model.opt.onnx"]).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 12])
    parser.add_argument("--length", type=int, default=512, help="the fixed length the graph is exported at")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each file (after one untimed)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"longformer-export-cpu-{dt.date.today()}.json")
    args = parser.parse_args()
    import torch
    from unlearn import cpu_model  # bench/ is on the path when a bench runs

    rows = []
    with tempfile.TemporaryDirectory(prefix="steuops-longformer-") as tmp:
        for layers in args.layers:
            rows.append(one_depth(layers, args.length, args.batch, args.runs, Path(tmp)))
            log(json.dumps(rows[-1]))
    doc = {"date": str(dt.date.today()), "cpu": cpu_model(), "threads": torch.get_num_threads(),
           "load_average": os.getloadavg()[0], "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
