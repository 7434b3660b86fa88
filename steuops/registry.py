"""The MLflow Model Registry as steuops uses it: the only module that imports mlflow.

Embedded by default (sqlite at `$STEUOPS_HOME/mlflow.db`, artifacts under `$STEUOPS_HOME/artifacts`);
unchanged against a real tracking server when MLFLOW_TRACKING_URI is set. Aliases and tags only,
never the deprecated stages. Every mlflow failure a user can cause (unknown name, alias or version,
a server that is down) becomes a one-line RegistryError; cohort text never goes into params or tags.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steuops import env, lineage  # noqa: F401  (env: telemetry off before mlflow loads)
from steuops.errors import ConflictError, RegistryError

EXPERIMENT = "steuops"
DATASET_SOURCE_TYPE = "steuops_run_artifact"
COHORT_SOURCE_TYPE = "steuops_cohort"
COHORT_CONTEXT = "unlearning"
DIGEST_CHARS = 36  # MLflow stores a dataset digest in 36 characters: the cohort sha256's first 36

# Promotion lock: a registered model of this name exists exactly while someone holds the lock.
# Creating a registered model is refused when the name exists, on sqlite, PostgreSQL and an HTTP
# server alike, which is the atomic test-and-set MLflow lacks for aliases.
LOCK_MARK = ".steuops-lock."
LOCK_TTL_S = 120.0  # a holder that crashed stops blocking others after this long
LOCK_WAIT_S = 60.0


def default_home() -> Path:
    return Path(os.environ.get("STEUOPS_HOME") or Path.home() / ".steuops").expanduser()


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        at = f" (@{self.alias})" if self.alias else ""
        return f"{self.name} v{self.version}{at}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass
class LoadedModel:
    ref: ModelRef
    model: Any
    tokenizer: Any
    labels: list[str]
    tags: dict[str, str]
    run_id: str | None

    @property
    def record(self) -> lineage.VersionRecord:
        return lineage.VersionRecord.from_tags(self.tags, self.labels)

    @property
    def forgotten(self) -> list[str]:
        return lineage.forgotten(self.tags, self.labels)


@dataclass
class VersionInfo:
    name: str
    version: str
    parent: str | None
    forgotten: list[str]
    gate: str | None
    policy: str | None
    method: str | None
    created: str
    aliases: list[str]
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    status: str = lineage.STATUS_COMPLETE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_name(name: str, alias: str) -> str:
    return f"{name}{LOCK_MARK}{alias}"


def is_lock(name: str) -> bool:
    return LOCK_MARK in name


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts joined by '.': anything but letters, digits, _ - . becomes
    '_' (MLflow also allows ' ', '/' and ':', but '/' nests and ' ' is awkward to query), e.g.
    metric_key("f1_after", "heart failure") == "f1_after.heart_failure"."""
    return ".".join(re.sub(r"[^0-9A-Za-z_.-]+", "_", str(part)).strip("_.") or "_" for part in parts)


@dataclass(frozen=True)
class CohortSummary:
    """What MLflow records about a deletion cohort: digest, row counts and column types. Never note text."""

    sha256: str
    columns: dict[str, str]  # column -> MLflow type name: string, long, double, boolean, array<string>
    counts: dict[str, int]

    @classmethod
    def from_frame(cls, frame: Any, sha256: str, counts: dict[str, Any]) -> CohortSummary:
        """Column names and types (dtypes; a list column is array<string>) and the integer counts given
        (`*_rows`; settings such as test_fraction are not counts)."""
        columns = {str(name): _column_type(frame[name]) for name in frame.columns}
        numbers = {str(k): int(v) for k, v in counts.items() if str(k).endswith("rows") and isinstance(v, int | float)
                   and not isinstance(v, bool)}
        return cls(sha256, columns, {"rows": int(len(frame)), **numbers})


def _column_type(series: Any) -> str:
    kind = series.dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "long"
    if kind == "f":
        return "double"
    first = series.dropna().head(1).tolist()  # only its type is read: a list (or numpy array) of labels
    value = first[0] if first else None
    is_array = isinstance(value, list | tuple) or getattr(value, "ndim", 0) > 0
    return "array<string>" if is_array else "string"


def _cohort_dataset(name: str, cohort: CohortSummary) -> Any:
    """A metadata-only mlflow Dataset: digest + schema + counts profile; its source names no file or text."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    CohortSource = _source_class(COHORT_SOURCE_TYPE, "cohort_sha256", None)

    class CohortDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, int]:
            return dict(cohort.counts)

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    def spec(column: str, kind: str) -> Any:
        return ColSpec(Array(DataType.string) if kind == "array<string>" else DataType[kind], column)

    schema = Schema([spec(column, kind) for column, kind in cohort.columns.items()])
    return CohortDataset(CohortSource(cohort.sha256), name=name, digest=cohort.sha256[:DIGEST_CHARS], schema=schema)


def _source_class(source_type: str, key: str, load: Any) -> Any:
    """An mlflow DatasetSource identified by one string (`to_dict` -> {key: value}); `load(value, dst_path)`
    fetches it, or None for a source that records metadata only and can never be loaded."""
    from mlflow.data.dataset_source import DatasetSource

    class Source(DatasetSource):
        def __init__(self, value: str) -> None:
            self.value = value

        @staticmethod
        def _get_source_type() -> str:
            return source_type

        def load(self, dst_path: str | None = None) -> str:
            if load is None:
                raise NotImplementedError("steuops logs a cohort's digest and counts, never the cohort itself")
            return load(self.value, dst_path)

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any):
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, Any]:
            return {key: self.value}

        @classmethod
        def from_dict(cls, source_dict: dict[str, Any]):
            return cls(source_dict[key])

    return Source


def _dataset_source_class():
    """A DatasetSource that points at a parquet artifact of a run (mlflow has none for runs:/ URIs)."""

    def download(uri: str, dst_path: str | None) -> str:
        import mlflow

        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)

    return _source_class(DATASET_SOURCE_TYPE, "uri", download)


class Registry:
    """One registry connection. Cheap to build; connects on first use."""

    def __init__(self, home: str | Path | None = None, tracking_uri: str | None = None) -> None:
        self.home = Path(home).expanduser() if home else default_home()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.embedded = not uri
        self.tracking_uri = uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"
        self.artifact_root = (self.home / "artifacts").resolve().as_uri() if self.embedded else None
        # Fail fast on a server that is down instead of mlflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        self._client_obj = None
        self._scratch_dir: Path | None = None

    def _scratch(self) -> Path:
        """A private temp folder for downloads, removed when the process exits (no leftovers in /tmp)."""
        if self._scratch_dir is None:
            import atexit

            self._scratch_dir = Path(tempfile.mkdtemp(prefix="steuops-"))
            atexit.register(shutil.rmtree, self._scratch_dir, True)
        return Path(tempfile.mkdtemp(dir=self._scratch_dir))

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri})"

    # ---- connection ------------------------------------------------------------------------
    @property
    def _client(self):
        if self._client_obj is None:
            from mlflow import MlflowClient

            _quiet_libraries()
            if self.embedded:
                _relocate_home(self.home, self.artifact_root)
            self._client_obj = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client_obj

    @contextmanager
    def _active(self) -> Iterator[None]:
        """Point mlflow's fluent API (start_run, log_model, register_model, download) at this registry,
        then put back whatever the process had: several registries (and a user's own mlflow calls) can
        live in one process, and mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which a
        later Registry() would mistake for a user's server.
        """
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield
        finally:
            tracking_utils._tracking_uri, registry_utils._registry_uri = saved
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _require_store(self) -> None:
        """Reads on an embedded home that was never set up fail instead of creating an empty database."""
        if self.embedded and not (self.home / "mlflow.db").exists():
            raise RegistryError(
                f"no steuops registry at {self.home} (no mlflow.db)",
                hint="run `steuops demo` to create one, pass --home DIR, or set MLFLOW_TRACKING_URI",
            )

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn connection failures into one clear line; let typed steuops errors through."""
        from steuops.errors import SteuopsError

        try:
            yield
        except SteuopsError:
            raise
        except Exception as exc:  # noqa: BLE001  (mlflow raises several unrelated types for one cause)
            if _is_unreachable(exc):
                raise RegistryError(
                    f"cannot reach the MLflow server at {self.tracking_uri}",
                    hint="start the server or fix MLFLOW_TRACKING_URI (unset it to use the embedded registry)",
                ) from exc
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                raise RegistryError(f"MLflow refused to {action}: {_first_line(exc)}", hint=None) from exc
            raise

    def _experiment_id(self) -> str:
        client = self._client
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        if self.embedded:
            self.home.mkdir(parents=True, exist_ok=True)
            return client.create_experiment(EXPERIMENT, artifact_location=self.artifact_root)
        return client.create_experiment(EXPERIMENT)

    # ---- lookups ---------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        self._require_store()
        with self._guard("list registered models"):
            found = self._client.search_registered_models(max_results=1000)
        return sorted(m.name for m in found if not is_lock(m.name))

    def _registered_model(self, name: str):
        from mlflow.exceptions import MlflowException

        self._require_store()
        with self._guard(f"read model {name!r}"):
            try:
                return self._client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        names = self.model_names()
        raise RegistryError(
            f"unknown model {name!r} in {self._where()}",
            hint=f"registered models: {', '.join(names)}" if names else "the registry has no models; run `steuops demo`",
        )

    def _where(self) -> str:
        return f"the registry at {self.home}" if self.embedded else f"the MLflow server at {self.tracking_uri}"

    def _version_numbers(self, name: str) -> list[str]:
        with self._guard(f"list versions of {name!r}"):
            found = self._client.search_model_versions(f"name='{name}'", max_results=10000)
        return sorted((str(v.version) for v in found), key=int)

    def resolve(self, name: str, alias: str | None = "production", version: str | int | None = None) -> ModelRef:
        """The version an alias (or an explicit version) names; a typed error lists what exists."""
        model = self._registered_model(name)
        aliases = dict(model.aliases or {})
        if version is not None:
            numbers = self._version_numbers(name)
            if str(version) not in numbers:
                raise RegistryError(
                    f"model {name!r} has no version {version}",
                    hint=f"versions: {', '.join(numbers) or 'none'}",
                )
            named = [a for a, v in aliases.items() if str(v) == str(version)]
            return ModelRef(name, str(version), named[0] if named else None)
        alias = alias or "production"
        if alias not in aliases:
            listed = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r}", hint=f"aliases: {listed}")
        return ModelRef(name, str(aliases[alias]), alias)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points at now, or None."""
        aliases = dict(self._registered_model(name).aliases or {})
        value = aliases.get(alias)
        return str(value) if value is not None else None

    def _model_version(self, ref: ModelRef):
        self._require_store()
        with self._guard(f"read {ref}"):
            return self._client.get_model_version(ref.name, ref.version)

    def tags(self, ref: ModelRef) -> dict[str, str]:
        return dict(self._model_version(ref).tags or {})

    def run_id(self, ref: ModelRef) -> str | None:
        return self._model_version(ref).run_id

    def parent(self, ref: ModelRef) -> ModelRef | None:
        parent = self.tags(ref).get(lineage.PARENT)
        return ModelRef(ref.name, parent) if parent else None

    # ---- models ----------------------------------------------------------------------------
    def load(self, ref: ModelRef) -> LoadedModel:
        """The transformers model + tokenizer of a version (user-logged or steuops-made), on CPU, eval mode."""
        import mlflow.transformers

        from steuops.errors import ModelError
        from steuops.modeling import label_names

        version = self._model_version(ref)
        with self._guard(f"load {ref}"), self._active():
            try:
                # A private download: without dst_path mlflow reads a local store in place and writes
                # a registered_model_meta file into it.
                with tempfile.TemporaryDirectory(prefix="steuops-load-") as tmp:
                    parts = mlflow.transformers.load_model(ref.uri, dst_path=tmp, return_type="components")
            except Exception as exc:  # noqa: BLE001
                if _is_unreachable(exc):
                    raise
                raise ModelError(
                    f"{ref} is not a transformers model steuops can load: {_first_line(exc)}",
                    hint="log it with mlflow.transformers.log_model({'model': model, 'tokenizer': tokenizer})",
                ) from exc
        model, tokenizer = parts.get("model"), parts.get("tokenizer")
        if model is None or tokenizer is None:
            raise ModelError(f"{ref} was logged without a model and a tokenizer component")
        model = model.float().to("cpu").eval()
        return LoadedModel(ref, model, tokenizer, label_names(model), dict(version.tags or {}), version.run_id)

    def register(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        parent: ModelRef | None,
        tags: dict[str, str],
        artifacts: dict[str, Path] | None = None,
        alias: str | None = "candidate",
        params: dict[str, Any] | None = None,
        run_name: str | None = None,
        settings: Any = None,
        metadata: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        cohort: CohortSummary | None = None,
        description: str | None = None,
    ) -> ModelRef:
        """A new version of `name` in its own run: metrics, the cohort as a dataset input (digest, counts
        and schema only), artifacts, then the model, then tags, description and alias."""
        import mlflow

        from steuops import __version__

        all_tags = {str(k): str(v) for k, v in tags.items()}
        all_tags[lineage.VERSION] = __version__
        if parent is not None:
            all_tags[lineage.PARENT] = str(parent.version)
        if lineage.GATE in all_tags:
            all_tags[lineage.GATE_SHORT] = all_tags[lineage.GATE]
        with self._guard(f"register a new version of {name!r}"), self._active():
            experiment_id = self._experiment_id()
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
                mlflow.set_tags({lineage.RUN_MODEL: name, **{k: v for k, v in all_tags.items() if k != lineage.GATE_SHORT}})
                if params:
                    mlflow.log_params({k: _param(v) for k, v in params.items()})
                if metrics:
                    mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
                if cohort is not None:
                    mlflow.log_input(_cohort_dataset(f"{name}-deletion-cohort", cohort), context=COHORT_CONTEXT)
                self._log_files(run.info.run_id, artifacts or {}, None)
                info = self._log_transformers(model, tokenizer, settings, metadata)
                version = _quietly(mlflow.register_model, info.model_uri, name, tags=all_tags)
            if description:
                self._client.update_model_version(name, version.version, description=description)
            if alias:
                self._client.set_registered_model_alias(name, alias, version.version)
        return ModelRef(name, str(version.version), alias)

    def log_base_model(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        dataset: Any = None,
        alias: str | None = "production",
        params: dict[str, Any] | None = None,
        run_name: str | None = None,
        settings: Any = None,
    ) -> ModelRef:
        """Log and register a model the way a user would, with its training table as a logged dataset."""
        import mlflow

        with self._guard(f"register {name!r}"), self._active():
            experiment_id = self._experiment_id()
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
                if params:
                    mlflow.log_params({k: _param(v) for k, v in params.items()})
                if dataset is not None:
                    self._log_dataset(run.info.run_id, dataset, name)
                info = self._log_transformers(model, tokenizer, settings)
                version = _quietly(mlflow.register_model, info.model_uri, name)
            if alias:
                self._client.set_registered_model_alias(name, alias, version.version)
        return ModelRef(name, str(version.version), alias)

    def _log_transformers(self, model: Any, tokenizer: Any, settings: Any = None,
                          metadata: dict[str, Any] | None = None) -> Any:
        """Log model + tokenizer so that mlflow.transformers/pyfunc loads truncate like steuops evaluated.

        settings: an InferenceSettings (default: the tokenizer's, 256 tokens when it sets no limit); written
        into the saved tokenizer (model_max_length, truncation_side) and into the pipeline's call options
        (model_config: truncation + max_length), so pyfunc predict truncates long notes instead of failing.
        metadata: JSON-able facts for the MLmodel file (forgotten classes, parent, policy); no note text.
        The input example is synthetic (inference.EXAMPLE_TEXT), never a patient's note.
        """
        import copy

        import mlflow.transformers

        from steuops.inference import EXAMPLE_TEXT, InferenceSettings

        settings = settings or InferenceSettings.from_tokenizer(tokenizer)
        settings.check_model(model)
        saved_tokenizer = settings.apply_to(copy.deepcopy(tokenizer))  # the caller's tokenizer stays as it is
        return mlflow.transformers.log_model(
            {"model": model.to("cpu"), "tokenizer": saved_tokenizer},
            name="model",
            task="text-classification",
            pip_requirements=pip_requirements(),
            input_example=EXAMPLE_TEXT,
            model_config=settings.pipeline_config(),
            metadata={"steuops_inference": settings.to_dict(), **(metadata or {})},
        )

    def _log_dataset(self, run_id: str, frame: Any, name: str) -> None:
        """The table as a parquet artifact, plus a dataset input pointing at it (schema + digest, no text)."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(lineage.DATASET_ARTIFACT).name
            frame.to_parquet(path, index=False)
            self._client.log_artifact(run_id, str(path), artifact_path=str(Path(lineage.DATASET_ARTIFACT).parent))
        source = _dataset_source_class()(f"runs:/{run_id}/{lineage.DATASET_ARTIFACT}")
        dataset = mlflow.data.from_pandas(frame, source=source, name=f"{name}-notes")
        mlflow.log_input(dataset, context="training")

    # ---- aliases and tags ------------------------------------------------------------------
    def move_alias(self, name: str, alias: str, version: str | int, *, expected_version: str | int | None) -> None:
        """Compare-and-set: move `alias` to `version` only if it still points at `expected_version`.

        The read and the write happen under the model's promotion lock, so of two processes that
        expect the same version, exactly one moves the alias and the other gets ConflictError.
        """
        expected = str(expected_version) if expected_version is not None else None
        with self.alias_lock(name, alias):
            current = self.alias_version(name, alias)
            if current != expected:
                raise ConflictError(
                    f"alias {alias!r} of {name!r} now points at {_v(current)}, not {_v(expected)} as when this "
                    f"started; refusing to move it to v{version}",
                    hint=f"someone changed {alias!r} meanwhile: check `steuops history --model {name}` and re-run",
                )
            with self._guard(f"move alias {alias!r}"):
                self._client.set_registered_model_alias(name, alias, str(version))

    @contextmanager
    def alias_lock(self, name: str, alias: str, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        """Hold the lock of `name`'s `alias`: a registered model that exists only while held."""
        import random
        import socket
        import time
        import uuid

        lock = lock_name(name, alias)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + wait_s
        while not self._try_lock(lock, owner):
            self._break_expired(lock)
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"another promotion of {name!r} has held the {alias!r} lock for over {wait_s:.0f} s",
                    hint=f"wait and re-run; a crashed holder's lock expires after {LOCK_TTL_S:.0f} s "
                         f"(or delete the registered model {lock!r})",
                )
            time.sleep(0.05 + random.random() * 0.1)
        try:
            yield
        finally:
            self._unlock(lock, owner)

    def _try_lock(self, lock: str, owner: str) -> bool:
        import time

        from mlflow.exceptions import MlflowException

        tags = {lineage.LOCK_OWNER: owner, lineage.LOCK_EXPIRES: f"{time.time() + LOCK_TTL_S:.3f}"}
        with self._guard("take the promotion lock"):
            try:
                self._client.create_registered_model(lock, tags=tags, description=_LOCK_DESCRIPTION)
                return True
            except Exception as exc:  # noqa: BLE001  (sqlite's "database is locked" is not an MlflowException)
                # ALREADY_EXISTS: someone holds it. DOES_NOT_EXIST: a server answered our create after the lock
                # was released under it (seen once in 20 racing processes on `mlflow server`). Either way the
                # owner tag read below decides.
                raced = isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_ALREADY_EXISTS",
                                                                                 "RESOURCE_DOES_NOT_EXIST")
                if not (raced or _is_busy(exc)):
                    raise
        # A busy database may have answered after committing our create: then the lock is ours.
        return (self._lock_tags(lock) or {}).get(lineage.LOCK_OWNER) == owner

    def _lock_tags(self, lock: str) -> dict[str, str] | None:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self._client.get_registered_model(lock).tags or {})
        except Exception as exc:  # noqa: BLE001
            if (isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST") or _is_busy(exc):
                return None
            raise

    def _break_expired(self, lock: str) -> None:
        import time

        tags = self._lock_tags(lock)
        if tags is None:
            return
        try:
            expires = float(tags.get(lineage.LOCK_EXPIRES, "0"))
        except ValueError:
            expires = 0.0
        owner = tags.get(lineage.LOCK_OWNER, "")
        if time.time() > expires or _holder_died(owner):
            self._unlock(lock, owner)

    def _unlock(self, lock: str, owner: str) -> None:
        """Delete the lock if `owner` still holds it (never someone else's fresh one)."""
        import time

        from mlflow.exceptions import MlflowException

        for _ in range(50):  # sqlite may be busy with another writer for a moment
            tags = self._lock_tags(lock)
            if tags is None or tags.get(lineage.LOCK_OWNER) != owner:
                return
            try:
                self._client.delete_registered_model(lock)
                return
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return
                if not _is_busy(exc):
                    raise
            time.sleep(0.1)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point an alias that carries no promise (e.g. `candidate`) at a version, without compare-and-set."""
        with self._guard(f"set alias {alias!r}"):
            self._client.set_registered_model_alias(name, alias, str(version))

    def clear_alias(self, name: str, alias: str, version: str | int) -> bool:
        """Delete `alias` only while it points at `version` (e.g. `candidate` once that version is promoted);
        True when it was deleted. An alias someone moved elsewhere stays."""
        if self.alias_version(name, alias) != str(version):
            return False
        with self._guard(f"delete alias {alias!r}"):
            self._client.delete_registered_model_alias(name, alias)
        return True

    def log_metrics(self, ref: ModelRef, metrics: dict[str, float]) -> None:
        """Metrics onto the run of a version (e.g. seconds of the steps that ran after it was registered)."""
        import time

        from mlflow.entities import Metric

        run_id = self.run_id(ref) if metrics else None
        if not run_id:
            return
        now = int(time.time() * 1000)
        with self._guard(f"log metrics on {ref}"):
            self._client.log_batch(run_id, metrics=[Metric(metric_key(k), float(v), now, 0)
                                                    for k, v in metrics.items()])

    def set_tags(self, ref: ModelRef, tags: dict[str, Any]) -> None:
        self._require_store()
        with self._guard(f"tag {ref}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(ref.name, ref.version, key, str(value))

    # ---- completeness ----------------------------------------------------------------------
    def missing_artifacts(self, ref: ModelRef, tags: dict[str, str] | None = None) -> list[str]:
        """Which of the version's required artifacts (tag steuops.required_artifacts) are not logged."""
        tags = self.tags(ref) if tags is None else tags
        required = lineage.decode_list(tags.get(lineage.REQUIRED))
        present = {Path(name).name for name in self.artifact_names(ref)}
        return [name for name in required if name not in present]

    def mark_complete(self, ref: ModelRef) -> None:
        """The last write of a version: only now is it a candidate anything may gate or promote."""
        missing = self.missing_artifacts(ref)
        if missing:
            raise RegistryError(f"{ref} cannot be marked complete: missing {', '.join(missing)}")
        self.set_tags(ref, {lineage.STATUS: lineage.STATUS_COMPLETE})

    def require_complete(self, ref: ModelRef, *, onnx: bool = False) -> dict[str, str]:
        """Refuse (exit 2) a version a crash left half-made, naming what is missing; returns its tags."""
        from steuops.errors import IncompleteVersionError

        tags = self.tags(ref)
        status = lineage.status(tags)
        missing = self.missing_artifacts(ref, tags) if status != lineage.STATUS_COMPLETE else []
        if onnx and "onnx" not in {Path(n).name for n in self.artifact_names(ref)} and "onnx" not in missing:
            missing.append("onnx")
        if status == lineage.STATUS_COMPLETE and not missing:
            return tags
        what = f"missing {', '.join(missing)}" if missing else "its last write never happened"
        later = f"; superseded by v{tags[lineage.SUPERSEDED_BY]}" if tags.get(lineage.SUPERSEDED_BY) else ""
        raise IncompleteVersionError(
            f"{ref} is {status} ({what}){later}",
            hint="a crash interrupted it: re-run `steuops apply` (or `steuops export` when only onnx is missing)",
        )

    # ---- artifacts -------------------------------------------------------------------------
    def log_artifacts(self, ref: ModelRef, files: dict[str, Path], artifact_path: str | None = None) -> None:
        """Files or folders onto the run of a version; keys are the names they get there."""
        run_id = self.run_id(ref)
        if not run_id:
            raise RegistryError(f"{ref} has no run to log artifacts to")
        with self._guard(f"log artifacts on {ref}"):
            self._log_files(run_id, files, artifact_path)

    def _log_files(self, run_id: str, files: dict[str, Path], artifact_path: str | None) -> None:
        client = self._client
        for key, local in files.items():
            local = Path(local)
            target = "/".join(p for p in (artifact_path, key) if p)
            if local.is_dir():
                client.log_artifacts(run_id, str(local), artifact_path=target)
                continue
            parent = str(Path(target).parent) if "/" in target else None
            if local.name == Path(target).name:
                client.log_artifact(run_id, str(local), artifact_path=parent)
                continue
            with tempfile.TemporaryDirectory() as tmp:  # the artifact takes the key's file name
                renamed = Path(tmp) / Path(target).name
                shutil.copyfile(local, renamed)
                client.log_artifact(run_id, str(renamed), artifact_path=parent)

    def artifact_names(self, ref: ModelRef, path: str | None = None) -> list[str]:
        run_id = self.run_id(ref)
        with self._guard(f"list artifacts of {ref}"):
            return sorted(f.path for f in self._client.list_artifacts(run_id, path)) if run_id else []

    def download_artifact(self, ref: ModelRef, path: str, dst: str | Path | None = None) -> Path:
        import mlflow

        from steuops.errors import UsageError

        run_id = self.run_id(ref)
        if not run_id:
            raise RegistryError(f"{ref} has no run, so no artifacts")
        dst_path = str(dst) if dst else str(self._scratch())
        with self._guard(f"download {path!r} of {ref}"), self._active():
            try:
                return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst_path))
            except Exception as exc:  # noqa: BLE001
                if _is_unreachable(exc):
                    raise
                raise UsageError(f"{ref} has no artifact {path!r}", hint="see the run's artifacts in MLflow") from exc

    def read_json_artifact(self, ref: ModelRef, path: str) -> dict[str, Any]:
        return json.loads(self.download_artifact(ref, path).read_text(encoding="utf-8"))

    # ---- datasets and history --------------------------------------------------------------
    def logged_dataset(self, ref: ModelRef) -> Any:
        """The table the version's training run logged with mlflow.log_input, following parents; else None."""
        seen: set[str] = set()
        current: ModelRef | None = ref
        while current is not None and current.version not in seen:
            seen.add(current.version)
            frame = self._run_dataset(self.run_id(current))
            if frame is not None:
                return frame
            current = self.parent(current)
        return None

    def _run_dataset(self, run_id: str | None) -> Any:
        if not run_id:
            return None
        with self._guard("read the run's datasets"):
            run = self._client.get_run(run_id)
        for item in run.inputs.dataset_inputs or []:
            frame = self._load_dataset(item.dataset)
            if frame is not None:
                return frame
        return None

    def _load_dataset(self, dataset: Any) -> Any:
        import mlflow
        import pandas as pd

        try:
            source = json.loads(dataset.source)
        except (TypeError, ValueError):
            return None
        uri = source.get("uri") or source.get("url") or source.get("path")
        if not uri:
            return None
        with self._guard("download the logged dataset"), self._active():
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(self._scratch()))) \
                    if "://" in uri or ":/" in uri else Path(uri)
            except Exception as exc:  # noqa: BLE001
                if _is_unreachable(exc):
                    raise
                return None
        readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True)}
        reader = readers.get(local.suffix.lower())
        return reader(local) if reader and local.is_file() else None

    def versions(self, name: str) -> list[VersionInfo]:
        model = self._registered_model(name)
        by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        with self._guard(f"list versions of {name!r}"):
            found = self._client.search_model_versions(f"name='{name}'", max_results=10000)
        rows = []
        for mv in sorted(found, key=lambda v: int(v.version)):
            tags = dict(mv.tags or {})
            rows.append(
                VersionInfo(
                    name=name,
                    version=str(mv.version),
                    parent=tags.get(lineage.PARENT),
                    forgotten=lineage.forgotten(tags),
                    gate=tags.get(lineage.GATE),
                    policy=tags.get(lineage.POLICY),
                    method=tags.get(lineage.METHOD),
                    created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
                    aliases=sorted(by_version.get(str(mv.version), [])),
                    run_id=mv.run_id,
                    tags=tags,
                    status=lineage.status(tags),
                )
            )
        return rows


_LOCK_DESCRIPTION = (
    "steuops promotion lock: exists only while a promotion moves an alias of the model it names. "
    "A holder that crashed stops blocking others when the steuops.lock_expires time passes."
)

# (table, column) pairs where MLflow's sqlite store keeps absolute artifact locations.
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                     ("model_versions", "source"))


def _relocate_home(home: Path, artifact_root: str | None) -> None:
    """A home copied, renamed or mounted elsewhere: point the stored artifact locations at this copy.

    MLflow's sqlite store records absolute `file://` paths. The experiment's location tells where the
    home was; every location under it is rewritten to the same place under this home, once.
    """
    import sqlite3

    db = home / "mlflow.db"
    if not artifact_root or not db.is_file():
        return
    try:
        con = sqlite3.connect(db, timeout=30)
    except sqlite3.Error:
        return
    try:
        row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()
        old = row[0] if row else None
        if not old or old == artifact_root or not old.startswith("file:") or Path(old).name != "artifacts":
            return
        with con:
            for table, column in _LOCATION_COLUMNS:
                _rewrite_prefix(con, table, column, old, artifact_root)
    except sqlite3.Error:
        return  # a read-only copy: reads of its artifacts will say what is missing
    finally:
        con.close()


def _rewrite_prefix(con: Any, table: str, column: str, old: str, new: str) -> None:
    import sqlite3

    try:
        con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608  (fixed names)
                    f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
    except sqlite3.OperationalError as exc:
        if "no such" not in str(exc):  # an MLflow schema without that table/column
            raise


def _holder_died(owner: str) -> bool:
    """A lock owner ("host:pid:token") on this machine whose process is gone (killed mid-promotion)."""
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, but someone else's
        return False
    return False


def _is_busy(exc: BaseException) -> bool:
    """sqlite under concurrent writers: 'database is locked' is a retry, not a failure."""
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def _quiet_libraries() -> None:
    """mlflow's INFO/WARNING chatter (model card lookups, 'creating a new version') is noise in a CLI."""
    import logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def pip_requirements() -> list[str]:
    """Explicit requirements for logged models (mlflow's inference is slow and guesses wrong here)."""
    import mlflow
    import torch
    import transformers

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        "tokenizers",
        "safetensors",
    ]


def _quietly(fn, *args, **kwargs):
    """mlflow eprints 'Created version ...' to stderr; the CLI reports that itself."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return text[:500]


def _v(version: str | None) -> str:
    return f"v{version}" if version else "nothing"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _is_unreachable(exc: BaseException) -> bool:
    """True for a refused/timed-out connection, however deeply mlflow wrapped it."""
    markers = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
               "ConnectTimeout", "Read timed out", "Name or service not known", "NameResolutionError")
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ConnectionError) or any(m in str(current) for m in markers):
            return True
        if type(current).__name__ in ("ConnectionError", "ConnectTimeout", "NewConnectionError"):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
