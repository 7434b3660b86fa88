"""The verbs of steuops as library calls, one module per group; the CLI is a thin layer over these.

- `unlearn`: `apply` (forget classes, gate, register, export, promote) and `export`;
- `lifecycle`: `regate`, `promote`, `rollback`, `history`;
- `report`: `version_report` (audit a version if needed, write its HTML + JSON report).

Notebooks and CI pipelines import from here: `from steuops.pipeline import apply`.
Heavy packages load inside the calls, so importing this package is cheap.
"""

from steuops.pipeline.lifecycle import GateResult, Rollback, history, promote, regate, rollback
from steuops.pipeline.report import ReportResult, version_report
from steuops.pipeline.unlearn import (
    CANDIDATE_ALIAS,
    DEFAULT_ALIAS,
    ApplyResult,
    PolicyInfo,
    Promotion,
    apply,
    export,
)

__all__ = [
    "CANDIDATE_ALIAS", "DEFAULT_ALIAS", "ApplyResult", "GateResult", "PolicyInfo", "Promotion", "ReportResult",
    "Rollback", "apply", "export", "history", "promote", "regate", "rollback", "version_report",
]
