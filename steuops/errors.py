"""One error hierarchy; the CLI turns it into exit codes in one place (cli.main)."""

from __future__ import annotations


class SteuopsError(Exception):
    """Base of every error a user can cause. Carries an exit code and a hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SteuopsError):
    """Bad input or usage: nothing was changed (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A bad option, method config or parameter."""


class ForgetClassError(UsageError):
    """The forget class is not one of the model's labels."""


class CohortError(UsageError):
    """The cohort table cannot be read or lacks what is needed."""


class ValidationFailed(UsageError):
    """Great Expectations found problems in the cohort. `failures` lists them all."""

    def __init__(self, message: str, failures: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.failures = failures


class ModelError(UsageError):
    """The model has no recognisable embedding matrix or classification head."""


class EditMismatchError(UsageError):
    """An edit (SparseEdit, TokenEdit) meets a model other than the one it was made from or for."""


class PolicyError(UsageError):
    """A policy file is malformed. The message names the field and the file."""


class RegistryError(UsageError):
    """Unknown model, alias or version, or a registry that cannot be reached."""


class ConflictError(UsageError):
    """An alias moved since the candidate was made (compare-and-set refused)."""


class IncompleteVersionError(UsageError):
    """A version a crash left half-made (missing artifacts): never gated or promoted."""


class GateRejected(SteuopsError):
    """The policy gate rejected the candidate: nothing was promoted (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, decision: object = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.decision = decision


class ExportParityError(SteuopsError):
    """The ONNX file disagrees with PyTorch: `failures` lists every mismatching text (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, failures: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.failures = failures
