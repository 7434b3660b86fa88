"""Plain helpers for the registry / apply / CLI / promotion tests: the model name, small STEU settings,
policy files and a snapshot of a registry. The fixtures that use them (notes_frame, trained_tiny,
policies, make_home) are in conftest.py and need no import."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

MODEL = "clinical-dx"
# Small enough that one apply takes seconds on a shared 2-core machine.
# the tiny keyword world has few distinct words, each in many notes: 2% of a class leaves none to edit
FAST_STEU = {"k": 16, "epochs": 1, "max_length": 64, "batch_size": 32, "max_retain_fraction": 0.05}


def write_policy(path: Path, *, params_fraction_max: float = 0.5, forget_f1_max: float = 1.0,
                 on_pass: str | None = "production", name: str | None = None, require_onnx: bool = False) -> Path:
    """A policy whose thresholds the tiny model can meet (or, with params_fraction_max=0, cannot).
    require_onnx is off by default so tests can promote with export=False and stay fast."""
    on_pass_text = "null" if on_pass is None else on_pass
    path.write_text(textwrap.dedent(f"""\
        schema_version: 1
        name: {name or path.stem}
        gate:
          forget_f1_max: {forget_f1_max}
          retain_macro_f1_min: 0.0
          retain_macro_f1_drop_max: 1.0
          retain_class_f1_drop_max: 1.0
          params_fraction_max: {params_fraction_max}
        cohort:
          forget_rows_min: 5
          retain_rows_min: 20
          duplicate_text_fraction_max: 0.05
        promotion:
          on_pass: {on_pass_text}
          require_onnx: {str(require_onnx).lower()}
        """), encoding="utf-8")
    return path


def registry_snapshot(registry: Any, name: str | None = None) -> dict[str, Any]:
    """Everything a failed command must leave unchanged, read with MLflow's public client: per registered
    model (promotion locks left out) its aliases, tags and versions with their tags, plus the number of
    runs in the steuops experiment under "_runs". Compare two snapshots with ==."""
    from mlflow import MlflowClient

    from steuops.registry import EXPERIMENT, is_lock

    if registry.embedded:
        # The client would create an empty database; a home that was never set up has nothing to snapshot.
        assert (registry.home / "mlflow.db").exists(), f"no steuops registry at {registry.home}"
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    out: dict[str, Any] = {}
    for model in client.search_registered_models(max_results=200):
        if (name and model.name != name) or is_lock(model.name):
            continue
        rows = client.search_model_versions(f"name='{model.name}'", max_results=10000)
        out[model.name] = {
            "aliases": {alias: str(version) for alias, version in (model.aliases or {}).items()},
            "tags": dict(model.tags or {}),
            "versions": {str(v.version): dict(v.tags or {}) for v in rows},
        }
    experiment = client.get_experiment_by_name(EXPERIMENT)
    out["_runs"] = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    return out
