"""One set of inference settings per model version: how many tokens a note keeps, and which end.

The max length and truncation side a version was evaluated with are the ones its ONNX export,
parity check, held-out scoring and server use, and the ones a user gets from
`mlflow.transformers.load_model` / `mlflow.pyfunc.load_model` without steuops. They travel as
version tags (`to_tags` / `from_tags`), in the exported manifest.json (`to_dict` / `from_dict`),
in the ONNX file's metadata_props, and in the saved tokenizer itself (`apply_to`).

Engine path: no mlflow, bentoml or great_expectations here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from steuops import lineage
from steuops.errors import ConfigError

T_MAX_LENGTH, T_TRUNCATION_SIDE = lineage.MAX_LENGTH, lineage.TRUNCATION_SIDE
DEFAULT_MAX_LENGTH = 256
SIDES = ("right", "left")
MIN_LENGTH = 2  # [CLS] + [SEP]
UNSET_LIMIT = 1_000_000  # transformers uses int(1e30) for "no limit known"
# What the logged model carries as its input example: synthetic, never a patient's note.
EXAMPLE_TEXT = "example note"


@dataclass(frozen=True)
class InferenceSettings:
    """Token limit (incl. special tokens) and truncation side ("right" keeps a note's start, "left" its end)."""

    max_length: int = DEFAULT_MAX_LENGTH
    truncation_side: str = "right"

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < MIN_LENGTH:
            raise ConfigError(f"inference max_length must be an integer >= {MIN_LENGTH}, got {self.max_length!r}",
                              hint="record the token limit the model was evaluated with")
        if self.truncation_side not in SIDES:
            raise ConfigError(f"inference truncation_side must be 'right' or 'left', got {self.truncation_side!r}")

    # ---- sources ---------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: Any, default_max_length: int = DEFAULT_MAX_LENGTH) -> InferenceSettings:
        """The tokenizer's model_max_length (default_max_length when it is unset) and truncation_side."""
        limit = getattr(tokenizer, "model_max_length", None)
        usable = isinstance(limit, int) and MIN_LENGTH <= limit <= UNSET_LIMIT
        side = getattr(tokenizer, "truncation_side", "right") or "right"
        return cls(max_length=int(limit) if usable else int(default_max_length), truncation_side=side)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> InferenceSettings | None:
        """The settings recorded on a version; None when it records none (a model a user logged)."""
        tags = tags or {}
        if T_MAX_LENGTH not in tags:
            return None
        raw = str(tags[T_MAX_LENGTH]).strip()
        if not raw.isdigit():
            raise ConfigError(f"tag {T_MAX_LENGTH}={raw!r} is not a positive integer",
                              hint=f"set {T_MAX_LENGTH} on the version to the token limit it was evaluated with")
        return cls(max_length=int(raw), truncation_side=str(tags.get(T_TRUNCATION_SIDE) or "right").strip())

    @classmethod
    def resolve(cls, tags: Mapping[str, str] | None, tokenizer: Any,
                default_max_length: int = DEFAULT_MAX_LENGTH) -> InferenceSettings:
        """A version's settings: its tags when it has them, else what its tokenizer says."""
        return cls.from_tags(tags) or cls.from_tokenizer(tokenizer, default_max_length)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceSettings:
        return cls(max_length=int(data["max_length"]), truncation_side=str(data.get("truncation_side", "right")))

    # ---- sinks -----------------------------------------------------------------------------
    def to_tags(self) -> dict[str, str]:
        return {T_MAX_LENGTH: str(self.max_length), T_TRUNCATION_SIDE: self.truncation_side}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pipeline_config(self) -> dict[str, Any]:
        """Call-time options of a transformers text-classification pipeline (mlflow's model_config)."""
        return {"truncation": True, "max_length": self.max_length}

    def apply_to(self, tokenizer: Any) -> Any:
        """Set model_max_length and truncation_side on `tokenizer` (in place), so save_pretrained keeps both."""
        tokenizer.model_max_length = self.max_length
        tokenizer.truncation_side = self.truncation_side
        init_kwargs = getattr(tokenizer, "init_kwargs", None)
        if isinstance(init_kwargs, dict):  # save_pretrained writes only init kwargs (+ model_max_length)
            init_kwargs["model_max_length"] = self.max_length
            init_kwargs["truncation_side"] = self.truncation_side
        return tokenizer

    @contextmanager
    def applied(self, tokenizer: Any) -> Iterator[Any]:
        """`tokenizer` truncating on this side for the duration; its own settings come back after."""
        before = getattr(tokenizer, "truncation_side", "right")
        tokenizer.truncation_side = self.truncation_side
        try:
            yield tokenizer
        finally:
            tokenizer.truncation_side = before

    def check_model(self, model: Any) -> None:
        """Refuse a max_length the model's position embeddings cannot hold."""
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and self.max_length > limit:
            raise ConfigError(f"inference max_length {self.max_length} exceeds the model's {limit} positions",
                              hint=f"record a max_length <= {limit} ({T_MAX_LENGTH})")
