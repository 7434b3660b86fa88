"""How deep is the forgetting? Every method next to the retrained reference, over several seeds.

    python bench/forgetting.py --out bench/results/forgetting-cpu-DATE.json [--seeds 3] [--cache DIR]

Trains the demo classifier exactly as `steuops demo` does (same notes, same split, same recipe), then for
each seed runs STEU (the demo's settings), STEU with each depth objective, head_only and the reference
(retrain without the class), each with that seed, and audits them all against that seed's reference
(steuops.audit, one audit seed per method seed). Also scores the held-out paraphrase set
(tests/data/paraphrases.jsonl: notes written by hand, never used for training, selection or tuning):
the original's recall per class, and the forget class's recall after each method.

Writes one JSON file (per method: every figure's per-seed values, mean and std) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)

ROOT = Path(__file__).resolve().parents[1]
PARAPHRASES = ROOT / "tests" / "data" / "paraphrases.jsonl"
# "steu:pmi": STEU with the paper's PMI token scorer (plain "steu" uses the default, "specific")
METHODS = ["steu", "steu:pmi", "steu+neighbours", "steu+neutral", "head_only", "hdsu", "retrain"]
FIGURES = ["forget_f1", "retain_macro_f1", "probe_f1", "relearn_f1", "rows_relearn_f1", "retain_relearn_f1",
           "membership_auc", "bypass_f1", "paraphrase_forget_recall", "cka_original", "cka_reference", "params_fraction",
           "forgetting_rate", "knowledge_preservation", "retain_touched", "rows", "seconds"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--forget", default="sepsis")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ",".join(METHODS))
    p.add_argument("--cache", type=Path, default=None, help="save the demo classifier here and reuse it next run")
    p.add_argument("--device", default="auto")
    p.add_argument("--audit", default="", help="audit overrides as JSON, e.g. '{\"retain_relearn_steps\": 10}'")
    return p.parse_args(argv)


def paraphrases():
    from steuops.data import Notes

    rows = [json.loads(line) for line in PARAPHRASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Notes([r["text"] for r in rows], [r["labels"] for r in rows], note_ids=[r["id"] for r in rows])


def recall_per_class(model, tokenizer, notes, max_length: int, device) -> dict[str, float]:
    from steuops import modeling

    labels = modeling.label_names(model)
    truth = notes.multi_hot(labels).astype(bool)
    pred = modeling.predict(modeling.logits(model, tokenizer, notes.texts, max_length=max_length, device=device),
                            modeling.is_multi_label(model)).astype(bool)
    return {c: round(float(pred[truth[:, j], j].mean()), 4) for j, c in enumerate(labels) if truth[:, j].any()}


def paraphrase_macro_f1(model, tokenizer, notes, max_length: int, device) -> float:
    from sklearn.metrics import f1_score

    from steuops import modeling

    labels = modeling.label_names(model)
    pred = modeling.predict(modeling.logits(model, tokenizer, notes.texts, max_length=max_length, device=device),
                            modeling.is_multi_label(model))
    return round(float(f1_score(notes.multi_hot(labels), pred, average="macro", zero_division=0)), 4)


def configs(max_length: int, encoder: str) -> dict[str, dict[str, Any]]:
    from steuops.demo.model import demo_retrain_config
    from steuops.demo.setup import DEMO_STEU

    steu = {**DEMO_STEU, "max_length": max_length}
    return {
        "steu": {**steu, "depth": "none"},
        "steu+neighbours": {**steu, "depth": "neighbours"},
        "steu+neutral": {**steu, "depth": "neutral"},
        "steu:pmi": {**steu, "depth": "none", "scorer": "pmi"},
        "head_only": {key: value for key, value in steu.items() if key not in ("k", "depth")},
        "hdsu": {"max_length": max_length},  # its defaults: 0.1% of the elements, the built-in hierarchy
        "retrain": {**demo_retrain_config(), "max_length": max_length, "base": encoder},  # as the report's reference
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from steuops import modeling
    from steuops.audit import AuditConfig, audit_methods
    from steuops.cohort import to_notes
    from steuops.demo import model as demo
    from steuops.demo.notes import to_frame
    from steuops.hierarchy import AUTO, resolve
    from steuops.methods import unlearn
    from steuops.metrics import evaluate

    sys.path.insert(0, str(Path(__file__).parent))
    from unlearn import PRESETS, demo_classifier, device_name

    device = modeling.resolve_device(args.device)
    forget = [args.forget]
    frame = to_frame(demo.demo_notes(), test_fraction=demo.DEMO_TEST_FRACTION, seed=demo.DEMO_SEED)
    train = to_notes(frame[frame["split"] == "train"].reset_index(drop=True))
    test = to_notes(frame[frame["split"] == "test"].reset_index(drop=True))
    encoder = demo.base_encoder_dir()
    model, tokenizer, train_seconds = demo_classifier(train, PRESETS["cpu"], encoder, args.device, args.cache)
    length = demo.DEMO_MAX_LENGTH
    para = paraphrases()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "device": device_name(args.device),
        "forget": forget, "seeds": list(range(args.seeds)), "notes": {"train": len(train), "test": len(test),
                                                                      "paraphrases": len(para)},
        "original": {"train_seconds": train_seconds,
                     "paraphrase_recall": recall_per_class(model, tokenizer, para, length, device),
                     "paraphrase_macro_f1": paraphrase_macro_f1(model, tokenizer, para, length, device)},
        "methods": {},
    }
    names = [m for m in args.methods.split(",") if m]
    settings = configs(length, str(encoder))
    hierarchy = resolve(AUTO, forget)  # the paper's preservation by level, for every method alike
    audit_overrides = json.loads(args.audit) if args.audit else {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for seed in range(args.seeds):
        results = {}
        for name in names:
            log(f"seed {seed}: {name}")
            result = unlearn(name.split("+")[0].split(":")[0], model, tokenizer, forget, train, {**settings[name], "seed": seed},
                             device=args.device)
            ev = evaluate(model, result.model, tokenizer, test, forget, device=args.device, max_length=length,
                          hierarchy=hierarchy)
            out["original"].setdefault("test", {"forget_f1": ev.before.forget_f1,
                                                "retain_macro_f1": ev.before.retain_macro_f1,
                                                "macro_f1": ev.before.macro_f1})
            after = recall_per_class(result.model, tokenizer, para, length, device)
            runs[name].append({"forget_f1": ev.after.forget_f1, "retain_macro_f1": ev.after.retain_macro_f1,
                               "params_fraction": ev.params_fraction, "seconds": round(result.seconds, 2),
                               "paraphrase_forget_recall": max(after[c] for c in forget),
                               "paraphrase_recall": after, "forgetting_rate": ev.paper["forgetting_rate"],
                               "knowledge_preservation": ev.paper["knowledge_preservation"],
                               "preservation_by_level": ev.paper.get("preservation_by_level"),
                               # the share of retain notes with an edited token, and the embedding rows edited
                               "retain_touched": result.info.get("retain_touched_fraction"),
                               "rows": len(result.edit.token_ids) if result.edit is not None else None})
            results[name] = result
        reference = results.get("retrain")
        audit = AuditConfig.from_dict({"seed": seed, "max_length": length, **_bench_audit(), **audit_overrides})
        log(f"seed {seed}: audit of {len(results)} methods")
        audits = audit_methods(model, tokenizer, forget, train, test, results, reference=reference and reference.model,
                               config=audit, device=args.device)
        for name in names:
            runs[name][-1].update(_audit_figures(audits[name]))
            log(f"seed {seed} {name}: " + "  ".join(f"{k} {_fmt(runs[name][-1].get(k))}" for k in FIGURES))
        write(args.out, out, runs, settings, seed)  # a long CPU run keeps every finished seed on disk
    print(table(out))
    return 0


def write(path: Path, out: dict[str, Any], runs: dict[str, list[dict[str, Any]]], settings, seed: int) -> None:
    out["seeds_done"] = seed + 1
    for name, per_seed in runs.items():
        out["methods"][name] = {"config": settings[name], "runs": per_seed, **_summary(per_seed)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")


def _bench_audit() -> dict[str, Any]:
    """One audit seed per run (the bench repeats runs), and the retain-only fine-tune of the original and the
    reference as well, so every model has its row in the tables (options an older steuops lacks are left out)."""
    import dataclasses

    from steuops.audit import AuditConfig

    known = {f.name for f in dataclasses.fields(AuditConfig)}
    wanted = {"seeds": 1, "retain_relearn_controls": True}
    return {k: v for k, v in wanted.items() if k in known}


def _audit_figures(audit: dict[str, Any]) -> dict[str, Any]:
    cka = audit.get("cka") or {}
    return {"probe_f1": audit["probe_f1"]["edited"], "relearn_f1": audit["relearn_f1"]["edited"],
            "rows_relearn_f1": audit["relearn_f1"].get("edited_rows"),
            "bypass_f1": (audit.get("bypass_f1") or {}).get("edited"),
            "retain_relearn_f1": (audit.get("retain_relearn_f1") or {}).get("edited"),
            "membership_auc": audit["membership_auc"]["edited"],
            "cka_original": cka.get("edited_vs_original"), "cka_reference": cka.get("edited_vs_reference"),
            "relearn_sizes": {size: (entry.get("edited") or {}).get("mean")
                              for size, entry in (audit.get("relearn_sizes") or {}).items()}}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in FIGURES:
        values = [r.get(key) for r in runs if r.get(key) is not None]
        if values:
            out[key] = {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                        "values": values}
    return out


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(out: dict[str, Any]) -> str:
    head = "| method | " + " | ".join(FIGURES) + " |"
    lines = [head, "|" + "---|" * (len(FIGURES) + 1)]
    for name, entry in out["methods"].items():
        cells = [f"{entry[k]['mean']:.3f} ± {entry[k]['std']:.3f}" if k in entry else "n/a" for k in FIGURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    recall = out["original"]["paraphrase_recall"]
    lines.append("")
    lines.append("original recall on the paraphrase set: " + ", ".join(f"{c} {v:.2f}" for c, v in recall.items())
                 + f"; paraphrase macro-F1 {out['original']['paraphrase_macro_f1']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
