"""What the audit's two gradient attacks cost, and what a smaller budget would still find, on a registered version.

    steuops demo --home H
    python bench/attack_budget.py --home H --out bench/results/attack-budget-cpu-DATE.json [--seeds 3]

The attacks that train through the encoder (the embedding-rows re-fit and the retain-only fine-tune) are most of an
audit's cost on a CPU. This audits the version (default: the demo's v2) once per budget in BUDGETS, with both
attacks on every seed and the retain-only fine-tune of the original and of the reference as controls, next to the
version's reference (steuops.reference: the cached one, else trained now). Encoder passes come from the home's audit
cache. Writes one JSON file (per budget: the options, each attack's per-seed values, the seconds per phase) and
prints a Markdown table. A budget is only as good as the verdicts it keeps: compare the edited model's and the
reference's figures, and the original's (the control: how much of a class such a fine-tune leaves in a model that
has it), with the thorough budget's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env  # noqa: F401  (offline + quiet before transformers loads)
from steuops.audit import DEPTHS

# budget name -> AuditConfig overrides: the named audit depths' attack budgets (the script itself runs both
# gradient attacks on every seed, with the controls, for each). bench/results/attack-budget-cpu-2026-11-30.json
# names them "default" (thorough's, the defaults until then) and "half" (standard's, but with the head re-fit
# stopped at 25 steps too: standard keeps the cheap head re-fit's 50).
BUDGETS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in DEPTHS[name].items() if k not in ("gradient_seeds", "retain_relearn_controls")}
    for name in ("thorough", "standard")
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def version_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a bench that reads one registered version (`version_world`): --home, --out, --model,
    --version, --device. bench/audit_error.py takes the same."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--home", type=Path, required=True, help="a steuops home with the version (e.g. `steuops demo`'s)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="clinical-dx")
    p.add_argument("--version", default="2")
    p.add_argument("--device", default="cpu")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = version_parser(__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", default=",".join(BUDGETS), help="comma-separated subset of: " + ",".join(BUDGETS))
    return p.parse_args(argv)


def version_world(home: Path, model: str, version: str, device: str) -> tuple[Any, list[str], Any]:
    """(the registered version's world as `steuops report` loads it, its forgotten classes, its reference: the
    cached one, else trained now). bench/audit_error.py loads its version the same way."""
    from steuops import lineage
    from steuops import reference as references
    from steuops.pipeline.report import _load_world
    from steuops.registry import Registry

    registry = Registry(home)
    ref = registry.resolve(model, version=version)
    record = lineage.VersionRecord.from_tags(registry.tags(ref))
    world = _load_world(registry, ref)
    forget = list(record.forgotten)
    reference = references.get_or_train(world.original, world.loaded.tokenizer, forget, world.train,
                                        model_name=model, parent_version=str(record.parent_version), home=home,
                                        registry=registry, exclude_version=ref.version,
                                        max_length=world.settings.max_length, device=device)
    return world, forget, reference


def main(argv: list[str] | None = None) -> int:
    from steuops import auditcache
    from steuops.audit import AuditConfig, run_audit

    args = parse(argv)
    world, forget, reference = version_world(args.home, args.model, args.version, args.device)
    out: dict[str, Any] = {"bench": "attack_budget", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "model": args.model, "version": args.version, "forget": forget, "seeds": args.seeds,
                           "environment": _environment(), "budgets": {}}
    for name in args.budgets.split(","):
        overrides = BUDGETS[name]
        config = AuditConfig(max_length=world.settings.max_length, seeds=args.seeds, gradient_seeds=args.seeds,
                             retain_relearn_controls=True, **overrides)
        log(f"{name}: {overrides or 'the defaults'}")
        start = time.perf_counter()
        audit = run_audit(world.original, world.loaded.model, world.loaded.tokenizer, forget, world.train, world.test,
                          reference=reference.model, config=config, device=args.device, edit=world.edit,
                          cache_dir=auditcache.root(args.home)).to_dict()
        out["budgets"][name] = {"overrides": overrides, "wall_seconds": round(time.perf_counter() - start, 1),
                                **_figures(audit)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
    print(table(out))
    return 0


def _figures(audit: dict[str, Any]) -> dict[str, Any]:
    """Each attack's per-seed values by role, and the audit's seconds per phase."""
    spread = audit.get("spread") or {}
    pick = ("retain_relearn_f1", "relearn_f1")
    return {"seconds": audit["seconds"], "original_f1": (audit.get("relearn_curves") or {}).get("original_f1"),
            "curves": audit.get("relearn_curves"),
            **{key: {role: stat.get("values") for role, stat in (spread.get(key) or {}).items()} for key in pick}}


def _environment() -> dict[str, Any]:
    import os
    import platform

    import torch
    from unlearn import cpu_model  # bench/ is on the path when a bench runs, as in bench/serve.py

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}


def table(out: dict[str, Any]) -> str:
    def cell(values: list[float] | None) -> str:
        return "n/a" if not values else " / ".join(f"{v:.3f}" for v in values)

    rows = ["| budget | retain-only: original (control) | edited | reference | rows re-fit: edited | head re-fit: "
            "edited | reference | rows re-fit s | retain-only s |", "|---" * 9 + "|"]
    for name, b in out["budgets"].items():
        retain, relearn, sec = b["retain_relearn_f1"], b["relearn_f1"], b["seconds"]
        rows.append(f"| {name} | {cell(retain.get('original'))} | {cell(retain.get('edited'))} | "
                    f"{cell(retain.get('reference'))} | {cell(relearn.get('edited_rows'))} | "
                    f"{cell(relearn.get('edited'))} | {cell(relearn.get('reference'))} | {sec.get('relearn', 0):.1f} | "
                    f"{sec.get('retain_relearn', 0):.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
