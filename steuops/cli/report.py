"""`steuops report`: the forgetting report of a registered version, as one self-contained HTML page.

Reads the version's artifacts (evaluation.json, gate.json, audit.json, edit/edit.json) through the
registry. A version with no audit yet is audited now (its parent and itself are loaded, the cohort
comes from the logged dataset and split.json) and the audit and confusion counts are logged on the
version. `--reference N` audits next to version N, a model retrained without the same class(es) from
the same parent (`steuops apply --method retrain`): the gold standard the figures are read against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from steuops.cli import EXIT_BAD_INPUT, app, epilog

AUDIT_FILE = "audit.json"
CONFUSION_FILE = "confusion.json"
EVALUATION_FILE = "evaluation.json"
GATE_FILE = "gate.json"
SPLIT_FILE = "split.json"
EDIT_META = "edit/edit.json"
REPORT_JSON = "report.json"


@app.command("report", epilog=epilog(
    "steuops report --model clinical-dx --version 2 --out report.html",
    "steuops report --model clinical-dx --version 2 --reference 3   (next to a retrained version)",
    codes="0 report written; " + EXIT_BAD_INPUT))
def report_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Version made by `steuops apply`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default report-MODEL-vN.html)."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    audit: bool = typer.Option(True, "--audit/--no-audit", help="Audit the version now if it has no audit yet."),
    refresh_audit: bool = typer.Option(False, "--refresh-audit", help="Re-run the audit even if one is logged."),
    bypass_phrases: Path | None = typer.Option(
        None, "--bypass-phrases", help="Text file of extra rewordings of the class, one per line (for a new audit)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="Version retrained without the same class(es) from the same parent "
        "(`steuops apply --method retrain`); the audit is run again next to it."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for a new audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a summary."),
) -> None:
    """Render the version's forgetting report: F1 before/after, confusion, tokens, audit, gate."""
    from steuops.cli.render import console, emit_json, progress_bar

    with progress_bar(enabled=not as_json) as progress:
        result = version_report(model, version, out=out, home=home, audit=audit, refresh_audit=refresh_audit,
                                bypass_phrases=bypass_phrases, reference=reference, device=device,
                                progress=progress)
    if as_json:
        emit_json("report", result)
        return
    console.print(f"report for {model} v{result['version']}: [bold]{result['html']}[/bold]", highlight=False)
    console.print(f"facts as JSON: {result['json']}  (audit: {result['audit_source']})", highlight=False)
    figures = dict(result.get("figures") or {})
    reference = figures.pop("reference", None)
    if figures:
        console.print("  ".join(f"{k} {_fmt(v)}" for k, v in figures.items()), highlight=False)
    if reference:
        console.print("retrained reference: " + "  ".join(f"{k} {_fmt(v)}" for k, v in reference.items()),
                      highlight=False)


def version_report(
    model: str,
    version: str,
    *,
    out: Path | None = None,
    home: Path | None = None,
    audit: bool = True,
    refresh_audit: bool = False,
    bypass_phrases: Path | None = None,
    reference: str | None = None,
    device: str = "auto",
    progress: Any = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Gather the version's artifacts (auditing it if asked and needed), write the HTML + JSON."""
    from steuops.errors import UsageError
    from steuops.registry import Registry
    from steuops.report import write_report

    registry = registry or Registry(home)
    ref = registry.resolve(model, alias=None, version=version)
    tags = registry.tags(ref)
    if not tags.get("steuops.parent_version"):
        raise UsageError(f"{ref} was not made by steuops (no steuops.parent_version tag), so it has no report",
                         hint="report on a version that `steuops apply` registered; see `steuops history`")
    names = set(registry.artifact_names(ref)) | set(registry.artifact_names(ref, "edit"))
    evaluation = registry.read_json_artifact(ref, EVALUATION_FILE)
    gate = registry.read_json_artifact(ref, GATE_FILE) if GATE_FILE in names else None
    tokens = _tokens(registry, ref, names)
    reference_ref = _reference(registry, ref, tags, reference) if reference is not None else None
    confusion = _logged_confusion(registry, ref, names)
    audit_data, source = None, "none"
    if AUDIT_FILE in names and not refresh_audit and reference_ref is None:
        audit_data, source = registry.read_json_artifact(ref, AUDIT_FILE), "logged artifact"
    elif audit or refresh_audit or reference_ref is not None:
        audit_data, confusion = _audit_now(registry, ref, tags, evaluation, bypass_phrases, device, progress,
                                           reference_ref)
        source = "computed now and logged" + (f" (reference: v{reference_ref.version})" if reference_ref else "")
    meta = _meta(registry, ref, tags, evaluation)
    target = Path(out) if out else Path(f"report-{model}-v{ref.version}.html")
    html_path, json_path = write_report(target.parent, evaluation, audit=audit_data, gate=gate, tokens=tokens,
                                        confusion=confusion, meta=meta, html_name=target.name)
    return {"model": model, "version": ref.version, "html": str(html_path), "json": str(json_path),
            "audit_source": source, "figures": _figures(evaluation, audit_data, gate)}


def _logged_confusion(registry, ref, names: set[str]) -> dict[str, Any] | None:
    """Confusion counts logged by `report` (confusion.json) or by `apply --audit` (inside report.json)."""
    if CONFUSION_FILE in names:
        return registry.read_json_artifact(ref, CONFUSION_FILE)
    if REPORT_JSON in names:
        return registry.read_json_artifact(ref, REPORT_JSON).get("confusion")
    return None


def _reference(registry, ref, tags: dict[str, str], version: str):
    """The reference version, refused (exit 2) unless it forgot the same classes from the same parent."""
    from steuops.errors import UsageError
    from steuops.registry import split_list

    other = registry.resolve(ref.name, alias=None, version=version)
    theirs = registry.tags(other)
    same_parent = theirs.get("steuops.parent_version") == tags.get("steuops.parent_version")
    same_classes = set(split_list(theirs.get("steuops.forgotten"))) == set(split_list(tags.get("steuops.forgotten")))
    if other.version == ref.version or not same_parent or not same_classes:
        found = (f"it forgot {theirs.get('steuops.forgotten') or 'nothing'} from v{theirs['steuops.parent_version']}"
                 if theirs.get("steuops.parent_version") else "it was not made by `steuops apply`")
        raise UsageError(
            f"--reference {version}: v{other.version} must forget the same classes as v{ref.version} "
            f"({tags.get('steuops.forgotten')}) from the same parent (v{tags.get('steuops.parent_version')}); "
            f"{found}",
            hint=f"make one with `steuops apply --model {ref.name} --version {tags.get('steuops.parent_version')} "
                 f"--forget CLASS --method retrain --config '{{\"base\": \"ENCODER_DIR\"}}'`")
    return other


def _tokens(registry, ref, names: set[str]) -> list[dict[str, Any]]:
    if EDIT_META not in names:
        return []
    meta = registry.read_json_artifact(ref, EDIT_META)
    return list((meta.get("info") or {}).get("tokens") or [])


def _audit_now(registry, ref, tags, evaluation, bypass_phrases, device, progress, reference_ref=None):
    """Load the parent, the version (and the reference), rebuild the split, run the audit, log
    audit.json and confusion.json on the version."""
    import json
    import tempfile

    from steuops import cohort as cohorts
    from steuops import modeling
    from steuops.audit import AuditConfig, run_audit
    from steuops.demo.bypass import load_phrases
    from steuops.edit import TokenEdit
    from steuops.errors import UsageError
    from steuops.report import confusion

    forget = list(evaluation.get("forget") or [c for c in tags.get("steuops.forgotten", "").split(",") if c])
    parent = registry.parent(ref)
    frame = registry.logged_dataset(ref)
    if parent is None or frame is None:
        raise UsageError(f"{ref} has no audit and its parent or logged cohort cannot be found, so none can be run",
                         hint="run `steuops apply` again, or pass --no-audit to render the report without one")
    train, test = _split(registry, ref, frame)
    original = registry.load(parent).model
    loaded = registry.load(ref)
    edit_ids = None
    names = set(registry.artifact_names(ref, "edit"))
    if "edit/edit.safetensors" in names:
        edit_ids = TokenEdit.load(registry.download_artifact(ref, "edit")).token_ids
    from steuops.inference import InferenceSettings

    settings = InferenceSettings.resolve(loaded.tags, loaded.tokenizer)  # what the version was gated at
    settings.apply_to(loaded.tokenizer)
    config = AuditConfig(bypass_phrases=load_phrases(bypass_phrases) if bypass_phrases else [],
                         max_length=settings.max_length)
    reference = registry.load(reference_ref).model if reference_ref is not None else None
    report = run_audit(original, loaded.model, loaded.tokenizer, forget, cohorts.to_notes(train),
                       cohorts.to_notes(test), reference=reference, config=config, device=device,
                       progress=progress, edit=edit_ids).to_dict()
    dev = modeling.resolve_device(device)
    multi = modeling.is_multi_label(original)
    test_notes = cohorts.to_notes(test)
    preds = [modeling.predict(modeling.logits(m, loaded.tokenizer, test_notes.texts, max_length=config.max_length,
                                              device=dev), multi) for m in (original.to(dev),
                                                                                          loaded.model.to(dev))]
    matrix = confusion(test_notes.multi_hot(loaded.labels), preds[0], preds[1], loaded.labels, multi)
    with tempfile.TemporaryDirectory(prefix="steuops-audit-") as tmp:
        files = {AUDIT_FILE: report, CONFUSION_FILE: matrix}
        for name, data in files.items():
            (Path(tmp) / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        registry.log_artifacts(ref, {name: Path(tmp) / name for name in files})
    return report, matrix


def _split(registry, ref, frame):
    """The held-out rows the version was evaluated on (split.json's note ids), else a fresh seeded split."""
    from steuops import cohort as cohorts

    names = set(registry.artifact_names(ref))
    ids = registry.read_json_artifact(ref, SPLIT_FILE).get("test_note_ids") if SPLIT_FILE in names else None
    if ids and "note_id" in frame.columns:
        held = frame["note_id"].astype(str).isin({str(i) for i in ids})
        return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
    return cohorts.split(frame, test_fraction=0.2, seed=0)


def _meta(registry, ref, tags: dict[str, str], evaluation: dict[str, Any]) -> dict[str, Any]:
    created = next((v.created for v in registry.versions(ref.name) if v.version == ref.version), None)
    return {
        "model": ref.name,
        "version": ref.version,
        "parent_version": tags.get("steuops.parent_version"),
        "forget": evaluation.get("forget") or tags.get("steuops.forgotten", "").split(","),
        "method": tags.get("steuops.method"),
        "policy": tags.get("steuops.policy"),
        "policy_sha256": tags.get("steuops.policy_sha256"),
        "cohort_sha256": tags.get("steuops.cohort_sha256"),
        "cohort_rows": tags.get("steuops.cohort_rows"),
        "gate": tags.get("steuops.gate"),
        "created": created,
        "steuops_version": tags.get("steuops.version"),
        "registry": getattr(registry, "tracking_uri", None) or str(getattr(registry, "home", "") or ""),
    }


def _figures(evaluation: dict[str, Any], audit: dict[str, Any] | None, gate: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"forget_f1": (evaluation.get("after") or {}).get("forget_f1"),
                           "retain_macro_f1": (evaluation.get("after") or {}).get("retain_macro_f1")}
    if audit:
        keys = ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1")
        out.update({key: (audit.get(key) or {}).get("edited") for key in keys})
        reference = {key: (audit.get(key) or {}).get("reference") for key in keys}
        if any(value is not None for value in reference.values()):
            out["reference"] = reference
    if gate is not None:
        out["gate"] = "passed" if gate.get("passed") else "rejected"
    return out


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
