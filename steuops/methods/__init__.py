"""Registry of unlearning methods, by name (like peft's PEFT_TYPE_TO_CONFIG_MAPPING).

A method is a small config dataclass plus a `fit` that returns an `UnlearnResult`.
Register with `@register("name")`; look up with `get("name")`; run with `unlearn(...)`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from steuops.errors import ConfigError

if TYPE_CHECKING:
    from steuops.data import Notes
    from steuops.edit import SparseEdit
    from steuops.modeling import Progress

# Modules whose import registers methods; imported lazily on first lookup.
_PROVIDERS = ("steuops.methods.steu.method", "steuops.methods.baselines", "steuops.methods.hdsu")
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
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__}: options must be a JSON object, got {_json_type(values)}",
                              hint='e.g. --config \'{"epochs": 3}\'')
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}",
                hint=f"known options: {', '.join(sorted(known))}",
            )
        # JSON gives any type for any key: check each against the field's annotation here, so a
        # wrong type is exit 2 naming the option instead of a TypeError deep inside training.
        hints = typing.get_type_hints(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        typed = {name: _typed(cls, name, value, hints.get(name, Any), defaults[name]) for name, value in values.items()}
        return cls(**typed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_model(self, model: Any, tokenizer: Any) -> None:
        """The options' checks that need the model (ConfigError). apply runs them as soon as the model loads,
        before the cohort is validated or anything trains, dry runs included."""


def _typed(cls: type, name: str, value: Any, annotation: Any, default: Any) -> Any:
    """`value` converted to the field's type (2.0 -> 2 for an int, 3 -> 3.0 for a float), or ConfigError."""
    ok, converted = _convert(value, annotation)
    if ok:
        return converted
    example = default if default is not dataclasses.MISSING else None
    raise ConfigError(
        f"{cls.__name__}.{name}: expected {_describe(annotation)}, got {_json_type(value)}"
        + ("" if value is None else f" {_shown(value)}"),
        hint=f"e.g. --config '{{\"{name}\": {json.dumps(example)}}}'",
    )


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(True, converted value) when `value` fits `annotation`, else (False, None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True, value
    if annotation is None or annotation is type(None):
        return value is None, None
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = _convert(value, option)
            if ok:
                return True, converted
        return False, None
    if origin is Literal:
        # type() as well as ==: True == 1, but a Literal[1] field does not take true
        return any(value == a and type(value) is type(a) for a in args), value
    if annotation is bool:  # before int: bool is an int subclass, and 1 is not "true"
        return isinstance(value, bool), value
    if annotation is int:
        return _as_int(value)
    if annotation is float:
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return number, float(value) if number else None
    if origin is not None:  # list[int], dict[str, float], ...: the container kind only
        return isinstance(value, origin), value
    return isinstance(value, annotation), value


def _as_int(value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool):
        return False, None
    if isinstance(value, int):
        return True, value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return True, int(value)  # JSON writers (and people) spell 2 as 2.0; 2.5 is refused
    return False, None


def _describe(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(annotation, getattr(origin or annotation, "__name__", str(annotation)))


def _shown(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # from_dict called from Python with a non-JSON value
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    """The JSON name of a value's type: what the user typed, not Python's name for it."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (type(None), "null"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


@dataclass
class TeacherPass:
    """The input model's eval-mode pass over some of the method's notes, run anyway (its teacher logits), with the
    encoder outputs its head reads (features.FeatureCache, which replays `logits` exactly): notes `rows` (numpy
    int array), tokenized at `max_length`. The pipeline keeps it for the forgetting audit (audit.remember_pass)."""

    rows: Any
    logits: Any  # (len(rows), C) float32 numpy array
    cache: Any
    max_length: int


@dataclass
class UnlearnResult:
    method: str
    model: Any  # the unlearned transformers model (a copy; the input model is untouched)
    config: dict[str, Any]
    forget: list[str]
    seconds: float
    edit: SparseEdit | None = None  # sparse methods only: the tiny artifact that re-applies the change (a TokenEdit for STEU)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. selected tokens, losses
    teacher: TeacherPass | None = None  # frozen-encoder methods: the input model's pass they ran (not in any artifact)


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
    """Class decorator: make `cls` the method called `name`. A name is taken once: another class
    registering it raises ValueError (a programming error, not a user's) instead of silently
    replacing the method every `--method NAME` runs. The same class again, or its re-definition
    when its module is reloaded (same module and qualified name), is accepted."""

    def wrap(cls: type[Method]) -> type[Method]:
        existing = _REGISTRY.get(name)
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ValueError(f"method name {name!r} is already registered by {_qualified(existing)}; "
                             f"{_qualified(cls)} must register under another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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
    from steuops.modeling import check_forget, resolve_device, training_precision

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
    dev = resolve_device(device)
    out = impl.fit(model, tokenizer, forget, notes, config, device=dev, progress=progress)
    out.info.setdefault("precision", training_precision(dev, cpu_bf16=bool(getattr(config, "cpu_bf16", False))))
    return out
