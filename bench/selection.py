"""Which tokens may STEU edit? The specific scorer's max_retain_fraction, each demo class forgotten in turn.

    python bench/selection.py --out bench/results/selection-cpu-DATE.json [--fractions 0.02,0.05] [--seeds 0]
    python bench/selection.py --out ... --classes sepsis --seeds 0,1,2 --configs '{"name": {"early_stop": false}}'

Trains the demo classifier exactly as `steuops demo` does (same notes, same 800 / 1,200 split, same recipe;
`--cache DIR` keeps it for the next run), then for every class and every fraction runs STEU with the demo's
settings and that fraction, and scores the edit on the held-out notes: rows edited, share of retain notes
touched, forget F1, retain macro-F1 drop, worst retained class's drop, parameters changed, recall of the
forgotten class on the hand-written paraphrase set, epochs run, seconds. `--configs` (named STEU overrides on top of
the demo's settings, JSON) replaces the fraction sweep: e.g. the defaults against every note for every epoch.
Writes one JSON file and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fractions", default="0.02,0.05")
    p.add_argument("--classes", default="", help="comma-separated (default: every demo class)")
    p.add_argument("--seeds", default="0", help="comma-separated method seeds")
    p.add_argument("--cache", type=Path, default=None, help="save the demo classifier here and reuse it next run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="", help="JSON {name: STEU overrides}; replaces the --fractions sweep")
    return p.parse_args(argv)


def one_run(model, tokenizer, train, test, para, forget: str, config: dict[str, Any], device: str) -> dict[str, Any]:
    from forgetting import recall_per_class

    from steuops import modeling
    from steuops.demo.model import DEMO_MAX_LENGTH
    from steuops.methods import unlearn
    from steuops.metrics import evaluate

    result = unlearn("steu", model, tokenizer, [forget], train, config, device=device)
    ev = evaluate(model, result.model, tokenizer, test, [forget], device=device, max_length=DEMO_MAX_LENGTH)
    before, after = ev.before.per_class_f1, ev.after.per_class_f1
    drops = {c: round(before[c] - after[c], 4) for c in before if c != forget}
    recall = recall_per_class(result.model, tokenizer, para, DEMO_MAX_LENGTH, modeling.resolve_device(device))
    return {"rows": len(result.edit.token_ids), "retain_touched_fraction": result.info.get("retain_touched_fraction"),
            "forget_f1": round(ev.after.forget_f1, 4),
            "retain_drop": round(ev.before.retain_macro_f1 - ev.after.retain_macro_f1, 4),
            "worst_class_drop": max(drops.values()), "class_drops": drops,
            "params_fraction": round(ev.params_fraction, 6), "paraphrase_recall": recall.get(forget),
            "epochs_run": len(result.info.get("losses") or []) or None, "seconds": round(result.seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from forgetting import paraphrases
    from unlearn import PRESETS, demo_classifier, device_name, log

    from steuops.cohort import to_notes
    from steuops.demo import model as demo
    from steuops.demo.notes import CLASSES, to_frame
    from steuops.demo.setup import DEMO_STEU

    frame = to_frame(demo.demo_notes(), test_fraction=demo.DEMO_TEST_FRACTION, seed=demo.DEMO_SEED)
    train = to_notes(frame[frame["split"] == "train"].reset_index(drop=True))
    test = to_notes(frame[frame["split"] == "test"].reset_index(drop=True))
    model, tokenizer, _ = demo_classifier(train, PRESETS["cpu"], demo.base_encoder_dir(), args.device, args.cache)
    para = paraphrases()
    classes = [c for c in args.classes.split(",") if c] or list(CLASSES)
    variants = json.loads(args.configs) if args.configs else \
        {f"max_retain_fraction {f}": {"max_retain_fraction": float(f)} for f in args.fractions.split(",")}
    out: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": device_name(args.device),
                           "command": "python bench/selection.py " + " ".join(argv or sys.argv[1:]),
                           "notes": {"train": len(train), "test": len(test)}, "steu": DEMO_STEU, "runs": []}
    for forget in classes:
        for name, overrides in variants.items():
            for seed in [int(s) for s in args.seeds.split(",")]:
                log(f"{forget}: {name}, seed {seed}")
                config = {**DEMO_STEU, "max_length": demo.DEMO_MAX_LENGTH, **overrides, "seed": seed}
                run = {"forget": forget, "variant": name, "overrides": overrides, "seed": seed,
                       "max_retain_fraction": config.get("max_retain_fraction"),
                       **one_run(model, tokenizer, train, test, para, forget, config, args.device)}
                out["runs"].append(run)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out["runs"]))
    return 0


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| forget | settings | seed | rows | retain touched | forget F1 | retain drop | worst class drop "
            "| params % | paraphrase recall | epochs | s |\n|" + "---|" * 12)
    lines = [f"| {r['forget']} | {r.get('variant', r['max_retain_fraction'])} | {r['seed']} | {r['rows']} | "
             f"{r['retain_touched_fraction']:.0%} | {r['forget_f1']:.3f} | {r['retain_drop']:+.4f} | "
             f"{r['worst_class_drop']:+.3f} | {100 * r['params_fraction']:.3f} | {r['paraphrase_recall']} | "
             f"{r.get('epochs_run')} | {r['seconds']} |" for r in runs]
    return "\n".join([head, *lines])


if __name__ == "__main__":
    raise SystemExit(main())
