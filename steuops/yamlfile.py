"""Reading a user's YAML file (a policy, a concept hierarchy) with one-line errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steuops.errors import SteuopsError


def read_yaml(path: Path, error: type[SteuopsError], kind: str, hint: str) -> Any:
    """The parsed contents of `path`; `error` (exit 2) when it is not UTF-8 or not valid YAML. `kind` names the
    file ("policy", "hierarchy"); `hint` is the fix for invalid YAML."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8", hint=f"re-save the {kind} as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: not valid YAML{line} ({getattr(exc, 'problem', None) or exc})", hint=hint) from None
