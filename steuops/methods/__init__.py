"""Registry of unlearning methods, by name (like peft's PEFT_TYPE_TO_CONFIG_MAPPING).

A method is a small config dataclass plus a `fit` that returns an `UnlearnResult`.
Register with `@register("name")`; look up with `get("name")`; run with `unlearn(...)`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from steuops.errors import ConfigError

if TYPE_CHECKING:
    from steuops.data import Notes
    from steuops.edit import TokenEdit
    from steuops.modeling import Progress

# Modules whose import registers methods; imported lazily on first lookup.
_PROVIDERS = ("steuops.methods.steu.method", "steuops.methods.baselines")
_REGISTRY: dict[str, type[Method]] = {}


@dataclass
class MethodConfig:
    """Fields shared by every method. Subclasses add their own."""

    seed: int = 0
    epochs: int = 5
    batch_size: int = 16
    max_length: int = 256
    lr: float = 1e-3

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MethodConfig:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}",
                hint=f"known options: {', '.join(sorted(known))}",
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UnlearnResult:
    method: str
    model: Any  # the unlearned transformers model (a copy; the input model is untouched)
    config: dict[str, Any]
    forget: list[str]
    seconds: float
    edit: TokenEdit | None = None  # sparse methods only: the tiny artifact that re-applies the change
    info: dict[str, Any] = field(default_factory=dict)  # e.g. selected tokens, losses


class Method(Protocol):
    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]

    def fit(
        self,
        model: Any,
        tokenizer: Any,
        forget: list[str],
        notes: Notes,
        config: MethodConfig,
        *,
        device: Any,
        progress: Progress | None = None,
    ) -> UnlearnResult: ...


def register(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_providers() -> None:
    for module in _PROVIDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not an absent provider
                raise


def available() -> list[str]:
    _load_providers()
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    _load_providers()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}", hint=f"available methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def unlearn(
    method: str,
    model: Any,
    tokenizer: Any,
    forget: Sequence[str],
    notes: Notes,
    config: MethodConfig | dict[str, Any] | None = None,
    *,
    device: str = "auto",
    progress: Progress | None = None,
) -> UnlearnResult:
    """Run a registered method. Validates the forget classes and the notes first."""
    from steuops.errors import CohortError
    from steuops.modeling import check_forget, resolve_device

    impl = get(method)
    forget = list(dict.fromkeys(forget))
    check_forget(model, forget)
    if len(notes) == 0:
        raise CohortError("the cohort has no rows", hint="pass a cohort with forget and retain notes")
    if not notes.has_any(forget).any():
        raise CohortError(
            f"no notes carry the forget class(es) {', '.join(forget)}",
            hint="the cohort must contain notes labelled with the class to forget",
        )
    if not isinstance(config, MethodConfig):
        config = impl.config_class.from_dict(config)
    return impl.fit(model, tokenizer, forget, notes, config, device=resolve_device(device), progress=progress)
