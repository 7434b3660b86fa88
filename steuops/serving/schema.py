"""Typed request and response models of the served API (pydantic only: no bentoml, no torch).

The limits are `Field` constraints, so `/docs.json` shows them (maxItems, maxLength, pattern) and
pydantic enforces them. A wrap validator checks the same limits first with `Limits.check`, whose
messages name the field, the index and the counts (never the text): a client sees
`texts[3] has 20001 characters; the limit is 20000 (STEUOPS_MAX_CHARS)` rather than pydantic's wording.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidatorFunctionWrapHandler, WrapValidator

from steuops.serving import FORGOTTEN_NOTE, Limits

NON_BLANK = r"\S"  # at least one character that is not whitespace


def request_model(limits: Limits) -> type[BaseModel]:
    """`ClassifyRequest` with `limits` as its constraints (STEUOPS_MAX_TEXTS / STEUOPS_MAX_CHARS)."""

    def explained(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            limits.check(value)
        return handler(value)

    text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars, pattern=NON_BLANK)]

    class ClassifyRequest(BaseModel):
        """Clinical notes to classify, one answer per text in the same order."""

        model_config = ConfigDict(title="ClassifyRequest")  # BentoML subclasses it; errors and docs keep this name
        texts: Annotated[list[text], Field(  # type: ignore[valid-type]
            min_length=1, max_length=limits.max_texts,
            description=f"1 to {limits.max_texts} texts (STEUOPS_MAX_TEXTS), each 1 to {limits.max_chars} "
                        "characters (STEUOPS_MAX_CHARS) with at least one that is not whitespace",
            examples=[["72 y/o with fever, lactate 4.1, blood cultures drawn"]],
        ), WrapValidator(explained)]

    return ClassifyRequest


class Prediction(BaseModel):
    """One text's answer; forgotten classes never appear in either field."""

    labels: list[str] = Field(description="classes predicted for the text (score over the threshold; "
                                          "single-label models: the best class)")
    scores: dict[str, float] = Field(description="probability per retained class")


class LimitsModel(BaseModel):
    max_texts: int = Field(description="most texts in one request (STEUOPS_MAX_TEXTS)")
    max_chars: int = Field(description="most characters in one text (STEUOPS_MAX_CHARS)")


class Metadata(BaseModel):
    """What is served: the model version, its forgotten classes, lineage and the ONNX file."""

    model_config = ConfigDict(protected_namespaces=(), title="Metadata")

    model: str | None = Field(description="registered model name")
    version: str | None = Field(description="registered model version")
    alias: str | None = Field(description="alias it was resolved from, if any")
    source: dict[str, Any] = Field(description="where the files came from: directory, registry or bento store")
    labels: list[str] = Field(description="classes the service answers with")
    forgotten: list[str] = Field(description="classes removed from the model and from every answer")
    forgotten_note: str = Field(default=FORGOTTEN_NOTE)
    multi_label: bool
    threshold: float = Field(description="decision threshold on the sigmoid (multi-label)")
    lineage: list[dict[str, Any]] = Field(description="this version and its parents, newest first")
    onnx_sha256: str | None = Field(description="sha256 of the exported model.onnx")
    served_file: str = Field(description="ONNX file the session runs")
    served_sha256: str
    exporter: str | None
    fused_ops: dict[str, int] = Field(description="fused operator counts of the served graph")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use")
    max_length: int = Field(description="tokens per text; longer texts are truncated")
    truncation_side: str
    limits: LimitsModel | None
