"""The served model, without BentoML: where it comes from, how it classifies, what it says about itself.

`serving.service` (the only bentoml importer) wraps a `ServedModel` in a BentoML service; the
benchmark and tests use `ServedModel` in-process too. Settings come from the environment so that
`bentoml serve` and a container need nothing else; `ServeSettings` (pydantic-settings) reads and checks them,
an empty variable counts as unset. ONNX files from the registry are cached under
`$STEUOPS_HOME/cache/onnx/<model>/<version>/`, verified by sha256 before every reuse:

    STEUOPS_MODEL        registered model name (registry mode)
    STEUOPS_ALIAS        alias to serve (default production), or STEUOPS_VERSION
    STEUOPS_HOME / MLFLOW_TRACKING_URI   where the registry is
    STEUOPS_ONNX_DIR     serve an exported folder instead of the registry (local mode)
    STEUOPS_BENTO_MODEL  serve a model packed into BentoML's model store (service.pack); a Bento built with it
                         set carries the model and serves it with no registry (checked before the two above)
    STEUOPS_ONNX_FILE    which ONNX file of the folder (default: fp16 on GPU, optimised on CPU)
    STEUOPS_DEVICE       auto | cpu | cuda
    STEUOPS_THRESHOLD    multi-label decision threshold on the sigmoid (default 0.5)
    STEUOPS_MAX_TEXTS / STEUOPS_MAX_CHARS   request limits (default 64 texts, 20000 characters each)
    STEUOPS_MAX_LATENCY_MS  adaptive-batching deadline; later requests get 503 + Retry-After (default 2000)
    STEUOPS_MAX_INFLIGHT    requests one worker holds at once; more get 429 + Retry-After (default 32)
    STEUOPS_MAX_BODY_BYTES  request body limit, 413 before the body is read (default: from the text limits)
    STEUOPS_API_KEY      when set, every API call needs `Authorization: Bearer KEY` or `x-api-key: KEY`
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from steuops import env, lineage  # noqa: F401  (env: telemetry off before heavy imports)
from steuops.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from steuops.inference import InferenceSettings

# onnxruntime-gpu's Linux build has 1DS telemetry: on import it writes a `.ses` session file into the
# system temp folder (and would report usage). Off before anything here imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

FORGOTTEN_NOTE = "forgotten classes are removed from every /classify response"
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})


class ServeSettings(BaseSettings):
    """The STEUOPS_* variables above (field `max_texts` <- STEUOPS_MAX_TEXTS), read when constructed.
    Use `serve_settings()`: it turns a bad value into a one-line ConfigError naming the variable."""

    model_config = SettingsConfigDict(env_prefix="STEUOPS_", env_ignore_empty=True, frozen=True)

    model: str | None = None
    alias: str = "production"
    version: str | None = None
    home: str | None = None
    onnx_dir: str | None = None
    onnx_file: str | None = None
    bento_model: str | None = None
    device: str = "auto"
    threshold: float = 0.5
    max_texts: int = Field(64, ge=1)
    max_chars: int = Field(20_000, ge=1)
    max_latency_ms: int = Field(2000, ge=1)
    max_inflight: int = Field(32, ge=1)
    max_body_bytes: int | None = Field(None, ge=1)  # None: from the text limits (Limits.max_body_bytes)
    api_key: SecretStr | None = None


def serve_settings() -> ServeSettings:
    """The serving settings in the environment now; ConfigError (one line, every bad variable) if any is invalid."""
    try:
        return ServeSettings()
    except ValidationError as err:
        raise _settings_error(err) from None


def _settings_error(err: ValidationError) -> ConfigError:
    """The messages the hand-written parsers gave: `STEUOPS_X='abc' is not an integer`, `STEUOPS_X=0 must be
    at least 1`, `STEUOPS_X='abc' is not a number`; the hint says what to set for the first of them."""
    messages, hints = [], []
    for e in err.errors():
        name = "STEUOPS_" + str(e["loc"][0]).upper()
        raw = e.get("input")
        if e["type"] == "greater_than_equal":
            messages.append(f"{name}={str(raw).strip()} must be at least {e['ctx']['ge']}")
            hints.append(f"set {name} to a positive integer")
        elif e["type"].startswith("int_"):
            messages.append(f"{name}={raw!r} is not an integer")
            hints.append(f"set {name} to a positive integer")
        elif e["type"].startswith("float_"):
            messages.append(f"{name}={raw!r} is not a number")
            hints.append(f"set {name} to e.g. 0.5")
        else:
            messages.append(f"{name}={raw!r}: {e['msg']}")
            hints.append(f"fix or unset {name}")
    return ConfigError("; ".join(messages), hint=hints[0])


@dataclass(frozen=True)
class Limits:
    max_texts: int = ServeSettings.model_fields["max_texts"].default
    max_chars: int = ServeSettings.model_fields["max_chars"].default

    @classmethod
    def from_env(cls) -> Limits:
        settings = serve_settings()
        return cls(max_texts=settings.max_texts, max_chars=settings.max_chars)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body worth reading: every text at its limit, JSON-escaped, plus the envelope.

        6 bytes a character covers `\\uXXXX` escapes (what json.dumps writes for non-ASCII by default) and
        raw UTF-8; 64 KiB covers the keys, quotes and commas. STEUOPS_MAX_BODY_BYTES overrides it.
        """
        return serve_settings().max_body_bytes or self.max_texts * self.max_chars * 6 + 65_536

    def check(self, texts: list[str]) -> list[str]:
        """Raise ValueError with a message a client can act on; BentoML turns it into a 400.

        Messages name the index and counts only: they end up in responses, never the text itself.
        """
        if not texts:
            raise ValueError("'texts' is empty: send at least one text")
        if len(texts) > self.max_texts:
            raise ValueError(f"{len(texts)} texts in one request; the limit is {self.max_texts} (STEUOPS_MAX_TEXTS)")
        for i, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise ValueError(
                    f"texts[{i}] has {len(text)} characters; the limit is {self.max_chars} (STEUOPS_MAX_CHARS)"
                )
            if not text.strip():  # nothing to classify: a 200 with made-up scores would mislead the caller
                raise ValueError(f"texts[{i}] is empty or whitespace only")
        return texts


class ServedModel:
    """An exported folder (onnx files, tokenizer, labels.json, manifest.json) ready to classify."""

    def __init__(self, onnx_dir: str | Path, *, device: str = "auto", file_name: str | None = None,
                 threshold: float = 0.5, source: dict[str, Any] | None = None) -> None:
        from transformers import AutoTokenizer

        from steuops.export import LABELS_FILE, MANIFEST_FILE, session, sha256_file

        self.dir = Path(onnx_dir)
        labels_path, manifest_path = self.dir / LABELS_FILE, self.dir / MANIFEST_FILE
        if not labels_path.is_file():
            raise ConfigError(f"{self.dir}: no {LABELS_FILE}", hint="point at a folder written by `steuops export`")
        self.labels_doc = json.loads(labels_path.read_text())
        self.manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        self.file = self.dir / (file_name or self._default_file(device))
        if not self.file.is_file():
            raise ConfigError(f"{self.file} does not exist", hint="check STEUOPS_ONNX_FILE or re-run `steuops export`")
        self.sha256 = sha256_file(self.file)
        expected = self.manifest.get("files", {}).get(self.file.name)
        if expected and expected != self.sha256:
            raise ConfigError(f"{self.file}: sha256 differs from manifest.json", hint="re-download or re-export")
        self.session = session(self.file, device=device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir))
        self.threshold = threshold
        self.settings = served_settings(self.manifest, self.tokenizer)
        self.max_length = self.settings.max_length
        self.tokenizer.truncation_side = self.settings.truncation_side  # every call truncates as export did
        self.source = source or {"mode": "directory", "path": str(self.dir)}
        labels = list(self.labels_doc["labels"])
        forgotten = set(self.labels_doc.get("forgotten", []))
        self.keep = [j for j, name in enumerate(labels) if name not in forgotten]
        self.kept_labels = [labels[j] for j in self.keep]

    def _default_file(self, device: str) -> str:
        from steuops.export import cuda_available, served_file

        gpu = cuda_available() if device == "auto" else device == "cuda"
        return served_file([p.name for p in self.dir.glob("*.onnx")], gpu)

    @property
    def multi_label(self) -> bool:
        return bool(self.labels_doc.get("multi_label", True))

    def logits(self, texts: list[str]) -> np.ndarray:
        from steuops.export import ort_logits

        return ort_logits(self.session, self.tokenizer, texts, batch_size=max(len(texts), 1),
                          max_length=self.max_length)

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: labels over the threshold and a score per retained class. Forgotten classes never appear."""
        if not texts:
            return []
        kept = self.logits(texts)[:, self.keep]
        if self.multi_label:
            scores = 1.0 / (1.0 + np.exp(-kept))
            chosen = scores >= self.threshold
        else:  # the original distribution renormalised over the retained classes
            shifted = np.exp(kept - kept.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
            chosen = np.zeros_like(scores, dtype=bool)
            chosen[np.arange(len(scores)), scores.argmax(axis=1)] = True
        return [
            {"labels": [self.kept_labels[j] for j in np.flatnonzero(row_chosen)],
             "scores": {name: round(float(s), 6) for name, s in zip(self.kept_labels, row, strict=True)}}
            for row, row_chosen in zip(scores, chosen, strict=True)
        ]

    def metadata(self, limits: Limits | None = None) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": m.get("name") or self.source.get("model"),
            "version": m.get("version") or self.source.get("version"),
            "alias": self.source.get("alias"),
            "source": self.source,
            "labels": self.kept_labels,
            "forgotten": list(self.labels_doc.get("forgotten", [])),
            "forgotten_note": FORGOTTEN_NOTE,
            "multi_label": self.multi_label,
            "threshold": self.threshold,
            "lineage": m.get("lineage", []),
            "onnx_sha256": m.get("files", {}).get("model.onnx"),
            "served_file": self.file.name,
            "served_sha256": self.sha256,
            "exporter": m.get("exporter"),
            "fused_ops": m.get("fused_ops", {}),
            "providers": list(self.session.get_providers()),
            "max_length": self.max_length,
            "truncation_side": self.settings.truncation_side,
            "limits": vars(limits) if limits else None,
        }


def served_settings(manifest: dict[str, Any], tokenizer: Any) -> InferenceSettings:
    """The inference settings the folder was exported (and parity-checked) at: manifest.json's
    `inference`, else its `max_length` on the saved tokenizer's side, else the saved tokenizer's own."""
    from steuops.inference import InferenceSettings

    if isinstance(manifest.get("inference"), dict):
        return InferenceSettings.from_dict(manifest["inference"])
    if "max_length" in manifest:
        side = manifest.get("truncation_side") or getattr(tokenizer, "truncation_side", None) or "right"
        return InferenceSettings(max_length=int(manifest["max_length"]), truncation_side=side)
    return InferenceSettings.from_tokenizer(tokenizer)


def from_env() -> ServedModel:
    """The model the environment names: STEUOPS_ONNX_DIR, else STEUOPS_MODEL resolved in the registry."""
    settings = serve_settings()
    opts = {"device": settings.device, "file_name": settings.onnx_file, "threshold": settings.threshold}
    if settings.onnx_dir:
        return ServedModel(settings.onnx_dir, **opts)
    if not settings.model:
        raise ConfigError("no model to serve: STEUOPS_MODEL (or STEUOPS_ONNX_DIR) is unset",
                          hint="steuops serve --model NAME sets it")
    onnx_dir, source = download(settings.model, alias=settings.alias, version=settings.version, home=settings.home)
    return ServedModel(onnx_dir, source=source, **opts)


def download(name: str, *, alias: str | None, version: str | None, home: str | None = None,
             dst: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The onnx/ artifacts of models:/NAME@ALIAS (or /VERSION) in a local folder.

    Without `dst` the folder is the cache `$STEUOPS_HOME/cache/onnx/<model>/<version>/`: reused when every
    file still matches manifest.json and model.onnx matches the version's steuops.onnx_sha256 tag, else
    downloaded again. Nothing is left in the system temp folder (a serve start used to leave 219 MB there).
    """
    from steuops.export import ARTIFACT_PATH, MODEL_FILE
    from steuops.registry import Registry

    registry = Registry(home=home)
    ref = registry.resolve(name, alias=alias, version=version)
    source = {"mode": "registry", "model": name, "version": ref.version, "alias": ref.alias,
              "uri": f"models:/{name}@{alias}" if version is None else ref.uri, "registry": registry.home.as_posix()
              if registry.embedded else "tracking server"}
    if f"{ARTIFACT_PATH}/{MODEL_FILE}" not in registry.artifact_names(ref, ARTIFACT_PATH):
        raise RegistryError(f"{ref} has no ONNX export", hint=f"run: steuops export --model {name} --version {ref.version}")
    if dst:
        return registry.download_artifact(ref, ARTIFACT_PATH, dst), source
    expected = registry.tags(ref).get(lineage.ONNX_SHA)
    folder = cache_dir(registry.home, name, ref.version)
    source["cache"] = "reused" if verify_folder(folder, expected) else "downloaded"
    if source["cache"] == "downloaded":
        _download_into_cache(registry, ref, folder, expected)
    return folder, source


def cache_dir(home: str | Path, name: str, version: str) -> Path:
    """`<home>/cache/onnx/<model>/<version>`; a name unsafe as a folder name gets a hash suffix."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe != name or safe in {".", ".."}:
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
    return Path(home).expanduser() / "cache" / "onnx" / safe / str(version)


def verify_folder(folder: Path, expected_model_sha: str | None) -> bool:
    """Every file manifest.json lists is there with its sha256, and model.onnx matches the registry tag."""
    from steuops.export import MANIFEST_FILE, MODEL_FILE, sha256_file

    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return False
    try:
        files = dict(json.loads(manifest_path.read_text()).get("files") or {})
    except (OSError, ValueError, TypeError):
        return False
    if MODEL_FILE not in files or (expected_model_sha and files[MODEL_FILE] != expected_model_sha):
        return False
    return all((folder / f).is_file() and sha256_file(folder / f) == sha for f, sha in files.items())


def _download_into_cache(registry: Any, ref: Any, folder: Path, expected: str | None) -> None:
    """Download next to the cache folder, verify, then swap it in with a rename (never half a folder)."""
    from steuops.export import ARTIFACT_PATH

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))  # same filesystem: rename works
    try:
        got = registry.download_artifact(ref, ARTIFACT_PATH, staging)
        if not verify_folder(got, expected):
            raise RegistryError(f"{ref}: downloaded onnx/ files do not match their sha256",
                                hint="re-run `steuops export` for this version")
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        try:
            got.rename(folder)
        except OSError:  # another server start won the race; its folder passed the same check
            if not verify_folder(folder, expected):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(folder.with_name(f".{folder.name}-old-{os.getpid()}"), ignore_errors=True)


def api_key_ok(headers: dict[str, str], key: str) -> bool:
    """`Authorization: Bearer KEY` or `x-api-key: KEY`, compared in constant time."""
    import hmac

    given = headers.get("x-api-key", "")
    auth = headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())
