"""Policy files: typed, strict (extra="forbid"), versioned YAML that the gate reads.

A policy says how much forgetting is enough (forget F1 ceiling), how much utility may be lost
(retain macro F1 floor and drops against the parent), how sparse the edit must be, how big the
cohort must be, and what promotion does on a pass. `load` turns every problem into a PolicyError
naming the file and the field by dotted path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from steuops.errors import PolicyError
from steuops.yamlfile import read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GatePolicy(_Strict):
    forget_f1_max: float = Field(0.01, ge=0.0, le=1.0, description="forget-class F1 after the edit, at most")
    retain_macro_f1_min: float = Field(0.0, ge=0.0, le=1.0, description="retained-class macro F1 after, at least")
    retain_macro_f1_drop_max: float = Field(0.02, ge=0.0, le=1.0, description="retain macro F1 drop vs parent")
    retain_class_f1_drop_max: float = Field(0.05, ge=0.0, le=1.0, description="worst single retained class drop")
    params_fraction_max: float = Field(0.01, ge=0.0, le=1.0, description="fraction of parameters changed")


class CohortPolicy(_Strict):
    forget_rows_min: int = Field(20, ge=1, description="rows carrying a forget class, at least")
    retain_rows_min: int = Field(100, ge=0, description="rows carrying no forget class, at least")
    duplicate_text_fraction_max: float = Field(0.0, ge=0.0, le=1.0, description="rows sharing their text")
    expectation_suite: str | None = Field(
        None, min_length=1, description="a GX expectation-suite JSON run alongside steuops' own (relative: to the policy file)"
    )


class PromotionPolicy(_Strict):
    # null: never promote automatically, even on a pass (a person moves the alias).
    on_pass: str | None = Field(
        "production", pattern=r"^[A-Za-z0-9_-]+$", description="MLflow alias moved to a passing candidate"
    )
    # A promoted alias must always be servable: the version needs its checked ONNX export first.
    require_onnx: bool = Field(True, description="promote only versions whose ONNX export (with parity) is logged")


class AuditPolicy(_Strict):
    """Optional limits on the forgetting audit; null means not checked."""

    probe_f1_max: float | None = Field(None, ge=0.0, le=1.0, description="linear probe on frozen features")
    relearn_f1_max: float | None = Field(None, ge=0.0, le=1.0, description="forget F1 after re-fitting the head")
    membership_auc_max: float | None = Field(None, ge=0.0, le=1.0, description="membership inference AUC")
    bypass_f1_max: float | None = Field(None, ge=0.0, le=1.0, description="forget F1 on paraphrased notes")


class SelectionPolicy(_Strict):
    """What token selection may reveal about the forget cohort (the pipeline passes these to the method)."""

    # A token may be edited (and named in the report) only if notes of at least this many distinct
    # forget-cohort patients contain it: a word from one patient's notes must never be selected.
    min_patients: int = Field(5, ge=1, description="distinct forget-cohort patients a selected token occurs in")
    show_tokens: bool = Field(True, description="false: reports and the edit show token ids and scores, not strings")


COMPLIANCE_FIELDS = ("requester", "reason", "approver")
COMPLIANCE_MAX_CHARS = 300


class CompliancePolicy(_Strict):
    """Who asked for the deletion, why, and who signs it off: shown on the report (`steuops report
    --requester/--reason/--approver` override each). Free text a person types: names and a reason,
    never note text. One line each."""

    requester: str | None = Field(None, min_length=1, max_length=COMPLIANCE_MAX_CHARS, pattern=r"^[^\r\n]*$",
                                  description="who requested the deletion (person, team or ticket)")
    reason: str | None = Field(None, min_length=1, max_length=COMPLIANCE_MAX_CHARS, pattern=r"^[^\r\n]*$",
                               description="why the class is removed (e.g. consent withdrawn, policy 12.3)")
    approver: str | None = Field(None, min_length=1, max_length=COMPLIANCE_MAX_CHARS, pattern=r"^[^\r\n]*$",
                                 description="who approves the removal and signs the report")


class Policy(_Strict):
    schema_version: Literal[1] = 1
    name: str | None = Field(None, description="defaults to the file name without .yaml")
    description: str | None = None
    gate: GatePolicy = Field(default_factory=GatePolicy)
    cohort: CohortPolicy = Field(default_factory=CohortPolicy)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)
    compliance: CompliancePolicy = Field(default_factory=CompliancePolicy)
    # Set by load(), never read from the file: where it came from and its content hash.
    _path: str | None = PrivateAttr(None)
    _sha256: str | None = PrivateAttr(None)

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def sha256(self) -> str | None:
        return self._sha256

    def summary(self) -> dict[str, Any]:
        """What `policy check` prints and what the registry tags: name, file, hash, every threshold."""
        return {**self.model_dump(mode="json"), "path": self.path, "sha256": self.sha256}


def load(path: str | Path) -> Policy:
    """Read and validate a policy file; PolicyError names the file and each bad field."""

    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: no such policy file", hint=f"available here: {_available_hint()}")
    raw = read_yaml(path, PolicyError, "policy", "check indentation and colons; see policies/default.yaml")
    if raw is None or raw == {}:
        # An empty file (or only comments / `null` / `{}`) is a half-written or truncated policy,
        # not a decision to take every default: the gate must not pass on nothing.
        raise PolicyError(f"{path}: the policy file is empty (no settings)",
                          hint="copy policies/default.yaml and edit it, or pass --policy default")
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: the top level must be a mapping, got {type(raw).__name__}",
                          hint="see policies/default.yaml for the layout")
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{path}: " + "; ".join(_field_errors(exc)), hint=_FIELDS_HINT) from None
    policy._path = str(path)
    policy._sha256 = sha256(path)
    if policy.name is None:
        policy.name = path.stem
    return policy


_FIELDS_HINT = "compare with policies/default.yaml (it lists every field); `steuops policy check FILE` re-checks"


def _field_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{where}: {error['msg']}")
    return lines


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_path() -> Path:
    """policies/default.yaml of the checkout when run inside one, else the copy shipped in the package."""
    local = Path.cwd() / "policies" / "default.yaml"
    if local.is_file():
        return local
    from importlib.resources import files

    return Path(str(files("steuops") / "policies" / "default.yaml"))


def resolve(path: str | Path | None) -> Path:
    """A policy argument as the CLI gets it: None = default; a bare name ('strict') = policies/strict.yaml."""
    if path is None:
        return default_path()
    candidate = Path(path)
    if candidate.exists() or candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        return candidate
    return default_path().parent / f"{candidate}.yaml"


def _available_hint() -> str:
    folder = default_path().parent
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return f"{folder} ({', '.join(names)})" if names else str(folder)
