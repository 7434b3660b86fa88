"""Process settings that must be in place before heavy libraries are imported."""

from __future__ import annotations

import os

_QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars; steuops draws its own
}


def quiet() -> None:
    """Telemetry and hub access off; idempotent, never overrides an explicit setting."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)


quiet()
