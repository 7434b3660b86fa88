"""`version_report`: the forgetting report of a registered version, as one self-contained HTML page + JSON.

Reads the version's artifacts (evaluation.json, gate.json, audit.json, edit/edit.json) through the
registry. A version with no audit yet is audited now (its parent and itself are loaded, the cohort
comes from the logged dataset and split.json) and the audit and confusion counts are logged on the
version. `reference=N` audits next to version N, a model retrained without the same class(es) from
the same parent (`steuops apply --method retrain`): the gold standard the figures are read against.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import lineage
from steuops.errors import UsageError

if TYPE_CHECKING:
    from steuops.modeling import Progress
    from steuops.registry import ModelRef, Registry

AUDIT_FIGURES = ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1")


@dataclass
class ReportResult:
    model: str
    version: str
    html: str
    json: str
    audit_source: str  # "logged artifact", "computed now and logged", or "none"
    figures: dict[str, Any] = field(default_factory=dict)  # headline numbers; "reference" holds the reference's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_report(
    model: str,
    version: str | int,
    *,
    out: str | Path | None = None,
    home: str | Path | None = None,
    audit: bool = True,
    refresh_audit: bool = False,
    bypass_phrases: str | Path | None = None,
    reference: str | int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> ReportResult:
    """Gather the version's artifacts (auditing it if asked and needed), write the HTML + JSON report.

    out: the HTML file (default report-MODEL-vN.html); the JSON lands next to it."""
    from steuops.registry import Registry
    from steuops.report import write_report

    registry = registry or Registry(home)
    ref = registry.resolve(model, alias=None, version=str(version))
    tags = registry.tags(ref)
    record = lineage.VersionRecord.from_tags(tags)
    if not record.made_by_steuops:
        raise UsageError(f"{ref} was not made by steuops (no {lineage.PARENT} tag), so it has no report",
                         hint="report on a version that `steuops apply` registered; see `steuops history`")
    names = set(registry.artifact_names(ref)) | set(registry.artifact_names(ref, lineage.EDIT_DIR))
    evaluation = registry.read_json_artifact(ref, lineage.EVALUATION_FILE)
    gate = registry.read_json_artifact(ref, lineage.GATE_FILE) if lineage.GATE_FILE in names else None
    edit_meta = registry.read_json_artifact(ref, lineage.EDIT_META) if lineage.EDIT_META in names else {}
    tokens = list((edit_meta.get("info") or {}).get("tokens") or [])
    reference_ref = _reference(registry, ref, record, str(reference)) if reference is not None else None
    confusion = _logged_confusion(registry, ref, names)
    audit_data, source = None, "none"
    if lineage.AUDIT_FILE in names and not refresh_audit and reference_ref is None:
        audit_data, source = registry.read_json_artifact(ref, lineage.AUDIT_FILE), "logged artifact"
    elif audit or refresh_audit or reference_ref is not None:
        forget = list(evaluation.get("forget") or record.forgotten)
        audit_data, confusion = _audit_now(registry, ref, forget, evaluation, bypass_phrases, device, progress,
                                           reference_ref)
        source = "computed now and logged" + (f" (reference: v{reference_ref.version})" if reference_ref else "")
    meta = {**_meta(registry, ref, record, evaluation), **fingerprints(edit_meta)}
    target = Path(out) if out else Path(f"report-{model}-v{ref.version}.html")
    html_path, json_path = write_report(target.parent, evaluation, audit=audit_data, gate=gate, tokens=tokens,
                                        confusion=confusion, meta=meta, html_name=target.name)
    return ReportResult(model, ref.version, str(html_path), str(json_path), source,
                        _figures(evaluation, audit_data, gate))


def _logged_confusion(registry: Registry, ref: ModelRef, names: set[str]) -> dict[str, Any] | None:
    """Confusion counts logged by `report` (confusion.json) or by `apply --audit` (inside report.json)."""
    if lineage.CONFUSION_FILE in names:
        return registry.read_json_artifact(ref, lineage.CONFUSION_FILE)
    if lineage.REPORT_JSON in names:
        return registry.read_json_artifact(ref, lineage.REPORT_JSON).get("confusion")
    return None


def _reference(registry: Registry, ref: ModelRef, record: lineage.VersionRecord, version: str) -> ModelRef:
    """The reference version, refused (exit 2) unless it forgot the same classes from the same parent."""
    other = registry.resolve(ref.name, alias=None, version=version)
    theirs = lineage.VersionRecord.from_tags(registry.tags(other))
    same_parent = theirs.parent_version == record.parent_version
    if other.version == ref.version or not same_parent or set(theirs.forgotten) != set(record.forgotten):
        found = (f"it forgot {theirs.forgotten or 'nothing'} from v{theirs.parent_version}"
                 if theirs.made_by_steuops else "it was not made by `steuops apply`")
        raise UsageError(
            f"--reference {version}: v{other.version} must forget the same classes as v{ref.version} "
            f"({record.forgotten}) from the same parent (v{record.parent_version}); {found}",
            hint=f"make one with `steuops apply --model {ref.name} --version {record.parent_version} "
                 f"--forget CLASS --method retrain --config '{{\"base\": \"ENCODER_DIR\"}}'`")
    return other


def _audit_now(registry: Registry, ref: ModelRef, forget: list[str], evaluation: dict[str, Any], bypass_phrases,
               device, progress,
               reference_ref: ModelRef | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the parent, the version (and the reference), rebuild the held-out split, run the audit at
    the version's inference settings, and log audit.json and confusion.json on the version."""
    from steuops import cohort as cohorts
    from steuops.audit import AuditConfig, audit_and_report
    from steuops.bypass import load_phrases
    from steuops.edit import TokenEdit
    from steuops.inference import InferenceSettings
    from steuops.pipeline.unlearn import split_of

    parent = registry.parent(ref)
    frame = registry.logged_dataset(ref)
    if parent is None or frame is None:
        raise UsageError(f"{ref} has no audit and its parent or logged cohort cannot be found, so none can be run",
                         hint="run `steuops apply` again, or pass --no-audit to render the report without one")
    train, test = (cohorts.to_notes(part) for part in split_of(registry, ref, frame))
    original = registry.load(parent).model
    loaded = registry.load(ref)
    edit = None
    if lineage.EDIT_WEIGHTS in set(registry.artifact_names(ref, lineage.EDIT_DIR)):
        edit = TokenEdit.load(registry.download_artifact(ref, lineage.EDIT_DIR)).token_ids
    settings = InferenceSettings.resolve(loaded.tags, loaded.tokenizer)  # what the version was gated at
    settings.apply_to(loaded.tokenizer)
    config = AuditConfig(bypass_phrases=load_phrases(bypass_phrases) if bypass_phrases else [],
                         max_length=settings.max_length)
    reference = registry.load(reference_ref).model if reference_ref is not None else None
    with tempfile.TemporaryDirectory(prefix="steuops-audit-") as tmp:
        out = audit_and_report(original, loaded.model, loaded.tokenizer, forget, train, test, evaluation, None, edit, {},
                               Path(tmp) / "page", reference, config=config, device=device, progress=progress,
                               tokens=[])
        files = {lineage.AUDIT_FILE: out["audit"], lineage.CONFUSION_FILE: out["confusion"]}
        for name, data in files.items():
            (Path(tmp) / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        registry.log_artifacts(ref, {name: Path(tmp) / name for name in files})
    return out["audit"], out["confusion"]


def _meta(registry: Registry, ref: ModelRef, record: lineage.VersionRecord,
          evaluation: dict[str, Any]) -> dict[str, Any]:
    created = next((v.created for v in registry.versions(ref.name) if v.version == ref.version), None)
    return {
        "model": ref.name,
        "version": ref.version,
        "parent_version": record.parent_version,
        "forget": evaluation.get("forget") or record.forgotten,
        "method": record.method,
        "policy": record.policy,
        "policy_sha256": record.policy_sha256,
        "cohort_sha256": record.cohort_sha256,
        "cohort_rows": record.cohort_rows,
        "gate": record.gate,
        "created": created,
        "steuops_version": record.steuops_version,
        "registry": getattr(registry, "tracking_uri", None) or str(getattr(registry, "home", "") or ""),
    }


def _figures(evaluation: dict[str, Any], audit: dict[str, Any] | None, gate: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"forget_f1": (evaluation.get("after") or {}).get("forget_f1"),
                           "retain_macro_f1": (evaluation.get("after") or {}).get("retain_macro_f1")}
    if audit:
        out.update({key: (audit.get(key) or {}).get("edited") for key in AUDIT_FIGURES})
        reference = {key: (audit.get(key) or {}).get("reference") for key in AUDIT_FIGURES}
        if any(value is not None for value in reference.values()):
            out["reference"] = reference
    if gate is not None:
        out["gate"] = "passed" if gate.get("passed") else "rejected"
    return out


def fingerprints(edit: Any) -> dict[str, str]:
    """The sha256 fingerprints of the model an edit applies to and of the model it makes (a TokenEdit or
    its edit.json): the report shows them, so a reviewer can match them to the served model."""
    get = edit.get if isinstance(edit, dict) else (lambda key: getattr(edit, key, None))
    return {key: str(get(key)) for key in ("base_fingerprint", "edited_fingerprint") if get(key)}
