"""How precise the audit's figures are at its sample sizes, and what smaller samples would cost in precision.

    steuops demo --home H && steuops report --model clinical-dx --version 2 --home H
    python bench/audit_error.py --home H --out bench/results/audit-error-cpu-DATE.json

The first audit of a (parent, class) pair runs the reference it has just trained over the audit's train and test
samples (on the demo, 2-core EPYC: about 30 of its 90 s). Smaller samples would cut that time. This measures what
they would cost. The report reads each figure against the reference's, within a margin of
steuops.report.REFERENCE_MARGIN. For each model (original, edited, reference) it gives:

- the sampling error (bootstrap SE, steuops.audit.stats) of the forget F1, the probe F1 and the membership AUC,
  over the test sample the audit draws (max_test) and over half of it (for the AUC: half its non-members);
- the probe F1 when the probe is fitted on half the train sample, over several draws of that half;
- for the original and the edited model, the gap of each figure to the reference's and the sampling error of that
  gap: a paired bootstrap, both models resampled on the same notes (stats.gap_error), as the report's verdict reads it.

The passes come from the home's audit cache, and any missing ones are computed and kept there, as an audit does.
This runs no gradient attack, so it takes seconds once the cache is warm. Writes one JSON file and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from attack_budget import log, version_parser, version_world  # bench/ is on the path when a bench runs

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)

ROLES = ("original", "edited", "reference")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = version_parser(__doc__)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test sample")
    p.add_argument("--fit-draws", type=int, default=5, help="draws of half the train sample for the probe")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from steuops import auditcache
    from steuops.audit import AuditConfig, _auditor, _edit_tokens
    from steuops.report import REFERENCE_MARGIN

    args = parse(argv)
    world, forget, reference = version_world(args.home, args.model, args.version, args.device)
    config = AuditConfig(max_length=world.settings.max_length, seeds=1)
    auditor = _auditor(world.loaded.tokenizer, forget, world.train, world.test, config, args.device, None,
                       cache_dir=auditcache.root(args.home))
    models = {"original": world.original, "edited": world.loaded.model, "reference": reference.model}
    auditor.bind(world.original)
    auditor.store.role_of = {id(model): role for role, model in models.items()}  # encoder_notes counts by role
    auditor.store.share_encoder(world.original, world.loaded.model, _edit_tokens(world.edit)[0])
    auditor.store.fix(world.original, "original")
    auditor.store.fix(reference.model, "reference")
    auditor.store.keep_passes(world.loaded.model, "edited")
    draw = auditor.draws[0]
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    figures = {role: _figures(auditor, model, draw, rng, args) for role, model in models.items()}
    resamples = {role: figures[role].pop("resamples") for role in ROLES}
    auditor.store.save()
    out: dict[str, Any] = {
        "bench": "audit_error", "date": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model,
        "version": args.version, "forget": forget, "margin": REFERENCE_MARGIN, "resamples": args.resamples,
        "fit_draws": args.fit_draws, "seconds": round(time.perf_counter() - start, 1),
        "sizes": {"train": len(draw.train), "test": len(draw.test),
                  "forget_train": int(draw.train.has_any(forget).sum()),
                  "forget_test": int(draw.test.has_any(forget).sum())},
        "encoder_notes": dict(auditor.store.encoder_notes), "figures": figures,
        "gaps": {role: _gaps(figures, resamples, role) for role in ("original", "edited")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
    print(table(out))
    return 0


def _figures(auditor, model, draw, rng: np.random.Generator, args: argparse.Namespace) -> dict[str, Any]:
    """One model's figures, each with its sampling error over the whole test sample and over half of it."""
    from steuops.audit.auditor import _predict
    from steuops.audit.stats import (
        auc_resamples,
        f1,
        f1_resamples,
        probe_f1,
        probe_predictions,
        resample_error,
        roc_auc,
    )

    col = auditor.cols[0]
    train, test = auditor.passes(model, "train", draw), auditor.passes(model, "test", draw)
    y_train = draw.train.multi_hot(auditor.labels)[:, col].astype(np.int8)
    y_test = draw.test.multi_hot(auditor.labels)[:, col].astype(np.int8)
    forget_pred = _predict(test.logits, auditor.multi_label)[:, col].astype(bool)  # as the audit's forget F1
    probe_pred, _ = probe_predictions(train.features, y_train, test.features, auditor.config)
    members = auditor._label_score(train.logits, draw.train)[draw.train.has_any(auditor.forget)]
    outsiders = auditor._label_score(test.logits, draw.test)[draw.test.has_any(auditor.forget)]
    half = len(draw.train) // 2
    halves = [probe_f1(train.features[r], y_train[r], test.features, y_test, auditor.config)
              for r in (rng.choice(len(draw.train), half, replace=False) for _ in range(args.fit_draws))]
    n, count = len(y_test), args.resamples
    kept: dict[str, dict[str, np.ndarray]] = {}  # the bootstrap resamples, for the gaps (same rows for every model)

    def with_errors(name: str, value: float, full: np.ndarray, halved: np.ndarray) -> dict[str, float]:
        kept[name] = {"se": full, "se_half_test": halved}
        return {"value": value, "se": resample_error(full), "se_half_test": resample_error(halved)}

    out = {name: with_errors(name, f1(y_test, pred), f1_resamples(y_test, pred, resamples=count),
                             f1_resamples(y_test, pred, size=n // 2, resamples=count))
           for name, pred in (("forget_f1", forget_pred), ("probe_f1", probe_pred))}
    out["membership_auc"] = with_errors(
        "membership_auc", roc_auc(members, outsiders), auc_resamples(members, outsiders, resamples=count),
        auc_resamples(members, outsiders, negative_size=len(outsiders) // 2, resamples=count))
    out["probe_f1_half_train"] = {"mean": float(np.mean(halves)), "std": float(np.std(halves)), "fit_notes": half}
    log(f"{auditor.store.role_of[id(model)]}: " + ", ".join(
        f"{k} {v['value']:.3f} (SE {v['se']:.3f}, half the test sample {v['se_half_test']:.3f})"
        for k, v in out.items() if "se" in v))
    return {**out, "resamples": kept}


def _gaps(figures: dict[str, Any], resamples: dict[str, Any], role: str) -> dict[str, Any]:
    """Each figure's gap from `role` to the reference, with the gap's own sampling error (paired bootstrap)."""
    from steuops.audit.stats import gap_error

    return {name: {"gap": figures[role][name]["value"] - figures["reference"][name]["value"],
                   **{size: gap_error(resamples[role][name][size], resamples["reference"][name][size])
                      for size in ("se", "se_half_test")}}
            for name in ("forget_f1", "probe_f1", "membership_auc")}


def table(out: dict[str, Any]) -> str:
    rows = ["| model | forget F1 | probe F1 | membership AUC | probe F1, fitted on half the train sample |",
            "|---|---|---|---|---|"]
    for role, f in out["figures"].items():
        cells = [f"{f[k]['value']:.3f} ± {f[k]['se']:.3f} (± {f[k]['se_half_test']:.3f})"
                 for k in ("forget_f1", "probe_f1", "membership_auc")]
        half = f["probe_f1_half_train"]
        rows.append(f"| {role} | {' | '.join(cells)} | {half['mean']:.3f} ± {half['std']:.3f} |")
    rows += ["", "| gap to the reference | forget F1 | probe F1 | membership AUC |", "|---|---|---|---|"]
    for role, g in out["gaps"].items():
        cells = [f"{g[k]['gap']:+.3f} ± {g[k]['se']:.3f} (± {g[k]['se_half_test']:.3f})"
                 for k in ("forget_f1", "probe_f1", "membership_auc")]
        rows.append(f"| {role} | {' | '.join(cells)} |")
    return "\n".join(rows) + (f"\n\n± bootstrap SE over the {out['sizes']['test']} test notes (over half of them); "
                              f"the report's margin to the reference: {out['margin']}")


if __name__ == "__main__":
    raise SystemExit(main())
