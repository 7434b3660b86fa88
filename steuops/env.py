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

CPU_BF16_ENV = "STEUOPS_CPU_BF16"
_ON, _OFF = ("", "1", "true", "on", "yes"), ("0", "false", "off", "no")


def cpu_bf16_allowed() -> bool:
    """Whether training steps may use bf16 on a CPU that has it natively (they may unless STEUOPS_CPU_BF16=0).
    Off, a bf16 CPU runs every step in fp32 as a CPU without bf16 does: the way to compare two hosts, or to
    keep one precision across a mixed CI fleet. Any other value is refused, not guessed."""
    raw = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if raw in _ON or raw in _OFF:
        return raw in _ON
    from steuops.errors import ConfigError

    raise ConfigError(f"{CPU_BF16_ENV}: expected 0 or 1, got {raw[:40]!r}",
                      hint=f"{CPU_BF16_ENV}=0 keeps every CPU step in fp32; unset it for bf16 where the CPU has it")
