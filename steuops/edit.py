"""TokenEdit: the whole change a sparse unlearning method makes, as a tiny re-appliable artifact.

An edit is a set of replacement rows of the token-embedding matrix plus the new classification
head, pinned to the exact base model it was made from (sha256 of the state dict). `apply` writes
the rows and head into a model in place and refuses any other base; `revert` writes the original
values back, so the base is restored bit for bit. Methods that touch no rows (head_only) or no
head (embedding_only keeps the original head in `head`) fit the same shape.

On disk: `edit.safetensors` (the tensors) + `edit.json` (ids, fingerprints, method, config,
forget classes, labels). For k=256 rows of a 384-wide MiniLM that is well under a megabyte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env  # noqa: F401
from steuops.errors import ConfigError, EditMismatchError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "steuops.token-edit"
FORMAT_VERSION = 1
TENSORS = "edit.safetensors"
META = "edit.json"


@dataclass
class TokenEdit:
    token_ids: list[int]
    rows: torch.Tensor  # (k, d) replacement rows, same order as token_ids
    original_rows: torch.Tensor  # (k, d) the base model's rows
    head: dict[str, torch.Tensor]  # head parameter name -> new value
    original_head: dict[str, torch.Tensor]
    base_fingerprint: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    embedding_name: str = ""  # state-dict name of the embedding matrix in the base model
    edited_fingerprint: str = ""  # fingerprint of the base after apply(); checked by revert()
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (selected tokens, ...)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def capture(
        cls,
        base: nn.Module,
        edited: nn.Module,
        token_ids: list[int],
        *,
        method: str,
        config: dict[str, Any] | None = None,
        forget: list[str] | None = None,
        base_fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> TokenEdit:
        """Read the edit out of an (unmodified) base model and its edited copy.

        Only the listed embedding rows and the head are captured; the caller guarantees nothing
        else changed (metrics.param_diff proves it, and edited_fingerprint makes apply() honest).
        """
        from steuops import modeling

        ids = [int(i) for i in token_ids]
        emb_name = modeling.embedding_param_name(base)
        base_w = modeling.embedding(base).weight.detach()
        new_w = modeling.embedding(edited).weight.detach()
        base_params = dict(base.named_parameters())
        new_params = dict(edited.named_parameters())
        names = modeling.head_param_names(base)
        return cls(
            token_ids=ids,
            rows=_take(new_w, ids),
            original_rows=_take(base_w, ids),
            head={n: new_params[n].detach().cpu().clone() for n in names},
            original_head={n: base_params[n].detach().cpu().clone() for n in names},
            base_fingerprint=base_fingerprint or modeling.fingerprint(base),
            method=method,
            config=dict(config or {}),
            forget=list(forget or []),
            labels=modeling.label_names(base),
            embedding_name=emb_name,
            edited_fingerprint=modeling.fingerprint(edited),
            info=dict(info or {}),
        )

    # ---- use ----------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self.token_ids)

    def num_changed_values(self) -> int:
        """Values the edit can change: k*d rows plus every head parameter."""
        return int(self.rows.numel()) + sum(int(t.numel()) for t in self.head.values())

    def apply(self, model: nn.Module, *, check: bool = True) -> nn.Module:
        """Write rows + head into `model` in place; refuses a model that is not the base."""
        if check:
            self._check(model, self.base_fingerprint, "apply")
        self._write(model, self.rows, self.head)
        return model

    def revert(self, model: nn.Module, *, check: bool = True) -> nn.Module:
        """Write the original rows + head back; the base is restored bit for bit."""
        if check and self.edited_fingerprint:
            self._check(model, self.edited_fingerprint, "revert")
        self._write(model, self.original_rows, self.original_head)
        return model

    def _check(self, model: nn.Module, expected: str, action: str) -> None:
        from steuops import modeling

        got = modeling.fingerprint(model)
        if got == expected:
            return
        if action == "apply" and got == self.edited_fingerprint:
            raise EditMismatchError(
                "the edit is already applied to this model",
                hint="apply a TokenEdit to the unedited base model, or revert() first",
            )
        what = "base" if action == "apply" else "edited"
        raise EditMismatchError(
            f"cannot {action} the {self.method} edit: model fingerprint {got[:12]} is not the "
            f"{what} model it was made for (expected {expected[:12]})",
            hint=f"load the exact model version the edit was made from (fingerprint {expected[:12]}...)",
        )

    def _write(self, model: nn.Module, rows: torch.Tensor, head: dict[str, torch.Tensor]) -> None:
        import torch

        from steuops import modeling

        weight = modeling.embedding(model).weight
        params = dict(model.named_parameters())
        missing = [n for n in head if n not in params]
        if missing:
            raise EditMismatchError(
                f"model has no head parameter(s) {', '.join(missing)}",
                hint="apply the edit to the architecture it was made from",
            )
        with torch.no_grad():
            if self.token_ids:
                ids = torch.tensor(self.token_ids, dtype=torch.long, device=weight.device)
                weight[ids] = rows.to(device=weight.device, dtype=weight.dtype)
            for name, value in head.items():
                params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))

    # ---- disk ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"rows": self.rows, "original_rows": self.original_rows}
        tensors.update({f"head.{n}": t for n, t in self.head.items()})
        tensors.update({f"original_head.{n}": t for n, t in self.original_head.items()})
        save_file({n: t.detach().cpu().contiguous().clone() for n, t in tensors.items()}, str(out / TENSORS))
        (out / META).write_text(json.dumps(self._meta(), indent=2, sort_keys=True, default=str) + "\n")
        return out

    def _meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "token_ids": self.token_ids,
            "head_names": list(self.head),
            "embedding_name": self.embedding_name,
            "base_fingerprint": self.base_fingerprint,
            "edited_fingerprint": self.edited_fingerprint,
            "forget": self.forget,
            "labels": self.labels,
            "config": self.config,
            "info": self.info,
        }

    @classmethod
    def load(cls, directory: str | Path) -> TokenEdit:
        from safetensors.torch import load_file

        src = Path(directory)
        meta_path, tensor_path = src / META, src / TENSORS
        for path in (meta_path, tensor_path):
            if not path.is_file():
                raise ConfigError(f"{path}: no such file; not a TokenEdit directory", hint=f"pass a directory holding {META} and {TENSORS}")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})", hint="re-save the edit") from exc
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"{meta_path}: format {meta.get('format')!r} v{meta.get('format_version')} is not {FORMAT} v{FORMAT_VERSION}",
                hint="re-create the edit with this steuops version",
            )
        tensors = load_file(str(tensor_path))
        names = meta["head_names"]
        return cls(
            token_ids=[int(i) for i in meta["token_ids"]],
            rows=tensors["rows"],
            original_rows=tensors["original_rows"],
            head={n: tensors[f"head.{n}"] for n in names},
            original_head={n: tensors[f"original_head.{n}"] for n in names},
            base_fingerprint=meta["base_fingerprint"],
            method=meta["method"],
            config=meta.get("config", {}),
            forget=meta.get("forget", []),
            labels=meta.get("labels", []),
            embedding_name=meta.get("embedding_name", ""),
            edited_fingerprint=meta.get("edited_fingerprint", ""),
            info=meta.get("info", {}),
        )


def _take(weight: torch.Tensor, ids: list[int]) -> torch.Tensor:
    import torch

    index = torch.tensor(ids, dtype=torch.long, device=weight.device)
    return weight.index_select(0, index).detach().cpu().clone()
