"""`version_report`: the forgetting report of a registered version, as one self-contained HTML page + JSON.

Reads the version's artifacts (evaluation.json, gate.json, audit.json, edit/edit.json) through the
registry. A version with no audit yet is audited now (its parent and itself are loaded, the cohort
comes from the logged dataset and split.json) and the audit and confusion counts are logged on the
version. Every audit is read next to a reference, a model retrained without the same class(es) from
the same parent: `reference="auto"` (the default) takes a registered retrain of the same parent and
forgotten set, else one trained now and cached under the steuops home (steuops.reference, never
registered); `reference=N` uses version N; "none" audits without one.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import lineage
from steuops.errors import ConfigError, UsageError
from steuops.pipeline.unlearn import Clock

if TYPE_CHECKING:
    from steuops.modeling import Progress
    from steuops.registry import ModelRef, Registry

AUDIT_FIGURES = ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1")
REFERENCE_AUTO, REFERENCE_NONE = "auto", "none"
REFERENCE_SOURCE_KEY = "reference_source"  # added to audit.json: where its reference came from
COMPLIANCE_FIELDS = ("requester", "reason", "approver")


@dataclass
class ReportResult:
    model: str
    version: str
    html: str
    json: str
    audit_source: str  # "logged artifact", "computed now and logged", or "none"
    figures: dict[str, Any] = field(default_factory=dict)  # headline numbers; "reference" holds the reference's
    reference: dict[str, Any] | None = None  # where the audit's reference came from (or why there is none)
    compliance: dict[str, Any] = field(default_factory=dict)  # requester, reason, approver (+ where each came from)
    serving: dict[str, Any] = field(default_factory=dict)  # onnx_sha256 and the aliases that serve the version
    audit_cache: dict[str, Any] = field(default_factory=dict)  # an audit computed now: what the audit cache gave
    audit_time: dict[str, Any] = field(default_factory=dict)  # and where its time went (audit.audit_time)

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
    audit_cache: bool = True,
    audit_depth: str = "standard",
    bypass_phrases: str | Path | None = None,
    reference: str | int | None = REFERENCE_AUTO,
    reference_config: dict[str, Any] | None = None,
    require_reference: bool = False,
    requester: str | None = None,
    reason: str | None = None,
    approver: str | None = None,
    policy: str | Path | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> ReportResult:
    """Gather the version's artifacts (auditing it if asked and needed), write the HTML + JSON report.

    out: the HTML file (default report-MODEL-vN.html); the JSON lands next to it.
    reference: "auto" (default), a version number, or "none"/None. With "auto" a logged audit that has
    no reference figures is run again next to one; when no reference can be had (no registered retrain
    and no base encoder) the report says why, or, with require_reference, ReferenceUnavailable (exit 2).
    audit_cache: a new audit reads and keeps the parent's and the reference's work in HOME/cache/audit
    (steuops.auditcache); False computes it all again.
    audit_depth: a name in steuops.audit.DEPTHS (how hard a new audit's gradient attacks try).
    reference_config: retrain options for a reference trained now (e.g. {"base": DIR, "epochs": 2}).
    requester/reason/approver: the sign-off fields (each wins over the policy's `compliance` section);
    policy: the policy file to read that section from (default: the one the version was gated with,
    when it is found unchanged)."""
    from steuops import auditcache
    from steuops.audit import AuditConfig, audit_time
    from steuops.registry import Registry
    from steuops.report import write_report

    depth = AuditConfig.at_depth(audit_depth)  # a bad name fails before any registry or model work
    registry = registry or Registry(home)
    ref = registry.resolve(model, alias=None, version=str(version))
    tags = registry.tags(ref)
    record = lineage.VersionRecord.from_tags(tags)
    if not record.made_by_steuops:
        raise UsageError(f"{ref} was not made by steuops (no {lineage.PARENT} tag), so it has no report",
                         hint="report on a version that `steuops apply` registered; see `steuops history`")
    compliance = compliance_fields(requester=requester, reason=reason, approver=approver,
                                   policy=_report_policy(policy, record))
    mode, reference_ref = _reference_choice(registry, ref, record, reference, reference_config)
    names = set(registry.artifact_names(ref)) | set(registry.artifact_names(ref, lineage.EDIT_DIR))
    evaluation = registry.read_json_artifact(ref, lineage.EVALUATION_FILE)
    gate = registry.read_json_artifact(ref, lineage.GATE_FILE) if lineage.GATE_FILE in names else None
    edit_meta = registry.read_json_artifact(ref, lineage.EDIT_META) if lineage.EDIT_META in names else {}
    tokens = list((edit_meta.get("info") or {}).get("tokens") or [])
    confusion = _logged_confusion(registry, ref, names)
    forget = list(evaluation.get("forget") or record.forgotten)
    logged = registry.read_json_artifact(ref, lineage.AUDIT_FILE) if lineage.AUDIT_FILE in names else None
    audit_data, source, reference_info = None, "none", None
    wants_new = refresh_audit or reference_ref is not None
    if logged is not None and not wants_new and (mode != REFERENCE_AUTO or not audit or has_reference(logged)):
        audit_data, source, reference_info = logged, "logged artifact", logged_reference(logged)
    elif logged is not None or audit or wants_new:
        keep_logged = logged is not None and not wants_new  # auto only tries to add a reference to it
        clock = Clock(progress)  # steps a CI log shows as they start and end, with a line every 10 s between
        try:
            with clock.step("load"):
                world = _load_world(registry, ref)
            with clock.step("reference"):
                chosen, reference_info = _pick_reference(registry, ref, record, world, forget, mode, reference_ref,
                                                         reference_config, require_reference, device, progress)
        except UsageError as exc:
            if not keep_logged or require_reference or isinstance(exc, ConfigError):
                raise
            world, chosen, reference_info = None, None, unavailable(exc)
        if keep_logged and chosen is None:
            # nothing to add to the logged audit: keep it, and say why it has no reference
            audit_data, source = logged, "logged artifact"
        else:
            cache_dir = auditcache.root(_home(registry)) if audit_cache else None
            with clock.step("audit"):
                audit_data, confusion = _audit_now(registry, ref, world, forget, evaluation, bypass_phrases, device,
                                                   progress, chosen, reference_info, cache_dir, depth=depth)
            source = "computed now and logged" + (f" (reference: {reference_info['description']})"
                                                  if chosen is not None else "")
    rows = {row.version: row for row in registry.versions(ref.name)}
    row = rows.get(ref.version)
    serving = {"onnx_sha256": record.onnx_sha256, "aliases": list(row.aliases) if row else []}
    meta = {**_meta(registry, ref, record, evaluation, row), **fingerprints(edit_meta), **serving,
            "scorer": ((edit_meta.get("info") or {}).get("selection") or {}).get("scorer")}
    target = Path(out) if out else Path(f"report-{model}-v{ref.version}.html")
    html_path, json_path = write_report(target.parent, evaluation, audit=audit_data, gate=gate, tokens=tokens,
                                        confusion=confusion, meta=meta, html_name=target.name,
                                        compliance=compliance, reference=reference_info)
    now = source.startswith("computed now")
    cache = (audit_data or {}).get("cache") if now else None
    timing = audit_time(audit_data) if now else None
    return ReportResult(model, ref.version, str(html_path), str(json_path), source,
                        _figures(evaluation, audit_data, gate), reference_info, compliance, serving, cache or {},
                        timing or {})


def _logged_confusion(registry: Registry, ref: ModelRef, names: set[str]) -> dict[str, Any] | None:
    """Confusion counts logged by `report` (confusion.json) or by `apply --audit` (inside report.json)."""
    if lineage.CONFUSION_FILE in names:
        return registry.read_json_artifact(ref, lineage.CONFUSION_FILE)
    if lineage.REPORT_JSON in names:
        return registry.read_json_artifact(ref, lineage.REPORT_JSON).get("confusion")
    return None


# ---- the sign-off fields ----------------------------------------------------------------------------
def compliance_fields(*, requester: str | None = None, reason: str | None = None, approver: str | None = None,
                      policy: Any = None) -> dict[str, Any]:
    """requester, reason and approver: each given one (checked like the policy's fields: one line, at
    most 300 characters; UsageError naming the option) wins over the policy's `compliance` section.
    "source" says where each came from. Free text a person typed: the report escapes it."""
    from pydantic import ValidationError

    from steuops.policy import CompliancePolicy

    section = policy.compliance.model_dump() if policy is not None else {}
    given = {"requester": requester, "reason": reason, "approver": approver}
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in COMPLIANCE_FIELDS:
        value = given[name]
        if value is not None:
            value = value.strip()
            try:
                CompliancePolicy.model_validate({name: value})
            except ValidationError as exc:
                raise UsageError(f"--{name}: {exc.errors()[0]['msg']}",
                                 hint="one line of at most 300 characters: a name, team, ticket or reason "
                                      "(never note text)") from None
            out[name], sources[name] = value, "command line"
        elif section.get(name):
            out[name], sources[name] = section[name], f"policy {policy.name}"
        else:
            out[name] = None
    return {**out, "source": sources}


def _report_policy(policy: str | Path | None, record: lineage.VersionRecord) -> Any:
    """The policy whose `compliance` section the report reads: the one given (PolicyError if bad),
    else the file the version was gated with, when it is found by name and its sha256 still matches."""
    from steuops import policy as policies
    from steuops.errors import PolicyError

    if policy is not None:
        return policies.load(policies.resolve(policy))
    if not record.policy or not record.policy_sha256:
        return None
    try:
        path = policies.resolve(record.policy)
        if not path.is_file() or policies.sha256(path) != record.policy_sha256:
            return None
        return policies.load(path)
    except (PolicyError, OSError, ValueError):
        return None


# ---- the reference ----------------------------------------------------------------------------------
def has_reference(audit: dict[str, Any] | None) -> bool:
    """Whether an audit dict carries reference figures."""
    from steuops.report import has_reference_figures

    return has_reference_figures(audit)


def logged_reference(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a logged audit's reference came from, as recorded in it (older audits: only whether it had one)."""
    if not audit:
        return None
    recorded = audit.get(REFERENCE_SOURCE_KEY)
    if isinstance(recorded, dict):
        return recorded
    if has_reference(audit):
        return {"source": "logged", "description": "recorded in the logged audit"}
    return None


def _reference_choice(registry: Registry, ref: ModelRef, record: lineage.VersionRecord, reference: Any,
                      config: dict[str, Any] | None) -> tuple[str, ModelRef | None]:
    text = REFERENCE_NONE if reference is None else str(reference).strip().lower()
    if text in (REFERENCE_AUTO, REFERENCE_NONE):
        if config and text != REFERENCE_AUTO:
            raise UsageError("--reference-config: applies to --reference auto only (a reference trained now)",
                             hint="drop --reference-config, or use --reference auto")
        return text, None
    if config:
        raise UsageError(f"--reference-config: applies to --reference auto only, not to --reference {reference}",
                         hint="drop --reference-config: a registered version is used as it is")
    return "version", _reference(registry, ref, record, str(reference).strip())


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
                 f"--forget CLASS --method retrain --config '{{\"base\": \"ENCODER_DIR\"}}'`, or use --reference auto")
    return other


def _pick_reference(registry: Registry, ref: ModelRef, record: lineage.VersionRecord, world: _World,
                    forget: list[str], mode: str, reference_ref: ModelRef | None, config: dict[str, Any] | None,
                    require: bool, device: str, progress) -> tuple[Any, dict[str, Any] | None]:
    """(reference model or None, where it came from / why there is none)."""
    from steuops import reference as references

    if mode == REFERENCE_NONE:
        return None, {"source": "none", "description": "none (--reference none)"}
    if reference_ref is not None:
        chosen = references.Reference(registry.load(reference_ref).model, references.SOURCE_REGISTERED,
                                      version=reference_ref.version)
        return chosen.model, chosen.to_dict()
    try:
        if record.method == references.METHOD and references.registered(
                registry.versions(ref.name), str(record.parent_version), forget, exclude=ref.version) is None:
            chosen = references.Reference(world.loaded.model, references.SOURCE_ITSELF, version=ref.version)
        else:
            chosen = references.get_or_train(
                world.original, world.loaded.tokenizer, forget, world.train, model_name=ref.name,
                parent_version=str(record.parent_version), home=_home(registry), registry=registry,
                exclude_version=ref.version, config=config, max_length=world.settings.max_length, device=device,
                progress=progress)
    except references.ReferenceUnavailable as exc:
        if require:
            raise
        return None, unavailable(exc)
    return chosen.model, chosen.to_dict()


def unavailable(exc: Any) -> dict[str, Any]:
    """The reference record of an audit that has none because none could be had: the reason and the fix."""
    return {"source": "unavailable", "description": "none could be had", "reason": str(exc),
            "hint": getattr(exc, "hint", None)}


def _home(registry: Registry) -> Path:
    from steuops.registry import default_home

    return Path(getattr(registry, "home", None) or default_home())


# ---- auditing now -----------------------------------------------------------------------------------
@dataclass
class _World:
    """What an audit of a registered version needs: its parent, itself and its cohort split."""

    original: Any
    loaded: Any  # registry.LoadedModel of the version, tokenizer set to its inference settings
    train: Any
    test: Any
    settings: Any
    edit: list[int] | None


def _load_world(registry: Registry, ref: ModelRef) -> _World:
    from steuops import cohort as cohorts
    from steuops.edit import load_edit
    from steuops.inference import InferenceSettings
    from steuops.pipeline.unlearn import split_of

    parent = registry.parent(ref)
    frame = registry.logged_dataset(ref)
    if parent is None or frame is None:
        raise UsageError(f"{ref}: its parent or logged cohort cannot be found, so it cannot be audited now",
                         hint="run `steuops apply` again, or pass --no-audit to render the report without a new audit")
    train, test = (cohorts.to_notes(part) for part in split_of(registry, ref, frame))
    original = registry.load(parent).model
    loaded = registry.load(ref)
    edit = None
    if lineage.EDIT_WEIGHTS in set(registry.artifact_names(ref, lineage.EDIT_DIR)):
        edit = load_edit(registry.download_artifact(ref, lineage.EDIT_DIR)).token_ids
    settings = InferenceSettings.resolve(loaded.tags, loaded.tokenizer)  # what the version was gated at
    settings.apply_to(loaded.tokenizer)
    return _World(original, loaded, train, test, settings, edit)


def _audit_now(registry: Registry, ref: ModelRef, world: _World, forget: list[str], evaluation: dict[str, Any],
               bypass_phrases, device, progress, reference: Any, reference_info: dict[str, Any] | None,
               cache_dir: Path | None, *, depth: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the audit at the version's inference settings next to `reference` (a model or None) and
    log audit.json (with where its reference came from) and confusion.json on the version. `depth`: the
    AuditConfig of the chosen depth (AuditConfig.at_depth)."""
    import dataclasses

    from steuops.audit import audit_and_report
    from steuops.bypass import load_phrases

    config = dataclasses.replace(depth, bypass_phrases=load_phrases(bypass_phrases) if bypass_phrases else [],
                                 max_length=world.settings.max_length)
    with tempfile.TemporaryDirectory(prefix="steuops-audit-") as tmp:
        out = audit_and_report(world.original, world.loaded.model, world.loaded.tokenizer, forget, world.train,
                               world.test, evaluation, None, world.edit, {}, Path(tmp) / "page", reference,
                               config=config, device=device, progress=progress, tokens=[], cache_dir=cache_dir)
        audit = with_reference_source(out["audit"], reference_info)
        files = {lineage.AUDIT_FILE: audit, lineage.CONFUSION_FILE: out["confusion"]}
        for name, data in files.items():
            (Path(tmp) / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        registry.log_artifacts(ref, {name: Path(tmp) / name for name in files})
    return audit, out["confusion"]


def with_reference_source(audit: dict[str, Any], reference_info: dict[str, Any] | None) -> dict[str, Any]:
    """The audit dict with where its reference came from (or why it has none), under REFERENCE_SOURCE_KEY;
    an unavailable reference also replaces the audit's generic "skipped" reason with the specific one."""
    audit = dict(audit)
    if reference_info is None:
        return audit
    audit[REFERENCE_SOURCE_KEY] = reference_info
    if reference_info.get("source") == "unavailable":
        hint = f" ({reference_info['hint']})" if reference_info.get("hint") else ""
        audit["skipped"] = {**(audit.get("skipped") or {}), "reference": f"{reference_info['reason']}{hint}"}
    return audit


def _meta(registry: Registry, ref: ModelRef, record: lineage.VersionRecord,
          evaluation: dict[str, Any], row: Any = None) -> dict[str, Any]:
    created = getattr(row, "created", None)
    return {
        "model": ref.name,
        "version": ref.version,
        "parent_version": record.parent_version,
        "forget": evaluation.get("forget") or record.forgotten,
        "method": record.method,
        "precision": record.precision,
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
    from steuops.report import retained_macro_f1

    after = evaluation.get("after") or {}
    out: dict[str, Any] = {"forget_f1": after.get("forget_f1"),
                           "retain_macro_f1": retained_macro_f1(evaluation, "after"),
                           "macro_f1": after.get("macro_f1")}
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
