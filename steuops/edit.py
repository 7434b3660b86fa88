"""Edits: the whole change an unlearning method makes, as a tiny re-appliable artifact.

A `SparseEdit` records, for each parameter it touches, the flat element indices it changes, their new
values and the base model's values there, pinned to the exact base model it was made from (sha256 of
the state dict). `apply` writes the new values into a model in place and refuses any other base;
`revert` writes the originals back, so the base is restored bit for bit. A method that moves ~0.1% of
arbitrary elements (any tensor) stores exactly those elements.

A `TokenEdit` is the special case STEU makes: whole replacement rows of the token-embedding matrix plus
every head parameter. It keeps its row/head view (token_ids, rows, head, ...) and derives its entries
from it, so both kinds are applied, reverted and stored by the same code. Methods that touch no rows
(head_only) or no head (embedding_only keeps the original head in `head`) fit the same shape.

On disk (FORMAT v1): `edit.safetensors` holds `{param}..indices`, `{param}..values` and
`{param}..originals` per entry (".." cannot occur in a torch parameter name: its parts are non-empty
and dot-free), and `edit.json` holds the format, kind ("sparse" or "token"), the entries' names and
shapes, fingerprints, method, config, forget classes, labels and info; a token edit adds its
token_ids, head names and embedding shape. `load_edit` also reads the legacy `steuops.token-edit` v1
directories that registered versions hold. For k=256 rows of a 384-wide MiniLM that is well under a
megabyte.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env  # noqa: F401
from steuops.errors import ConfigError, EditMismatchError, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "steuops.sparse-edit"
FORMAT_VERSION = 1
LEGACY_FORMAT = "steuops.token-edit"  # what TokenEdit.save wrote before sparse edits; still read
LEGACY_VERSION = 1
KIND_SPARSE = "sparse"
KIND_TOKEN = "token"
TENSORS = "edit.safetensors"
META = "edit.json"
SEP = ".."  # tensor key = f"{param}{SEP}{part}"; a parameter name never contains ".."
PARTS = ("indices", "values", "originals")


@dataclass(eq=False, repr=False)
class SparseEntry:
    """The recorded elements of one parameter: flat indices (sorted, unique), new values, originals."""

    shape: tuple[int, ...]
    indices: torch.Tensor  # int64, 1-D, flat indices into the parameter
    values: torch.Tensor  # 1-D, the parameter's dtype: what apply() writes
    originals: torch.Tensor  # 1-D, the base model's values there: what revert() writes

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        return f"SparseEntry(shape={self.shape}, values={len(self)}, dtype={self.values.dtype})"

    def problem(self) -> str | None:
        """Why this entry is malformed (None: it is fine); load and the constructor turn it into an error."""
        import torch

        n = len(self)
        numel = math.prod(self.shape)
        if self.indices.dtype != torch.long or self.indices.dim() != 1:
            return f"indices must be a 1-D int64 tensor, got {self.indices.dtype} of shape {tuple(self.indices.shape)}"
        if self.values.dim() != 1 or self.originals.dim() != 1 or self.values.numel() != n or self.originals.numel() != n:
            return f"indices, values and originals must be 1-D of the same length ({n})"
        if self.values.dtype != self.originals.dtype:
            return f"values are {self.values.dtype} but originals are {self.originals.dtype}"
        if n and (int(self.indices[0]) < 0 or int(self.indices[-1]) >= numel):
            return f"indices fall outside a parameter of shape {self.shape}"
        if n > 1 and not bool((self.indices[1:] > self.indices[:-1]).all()):
            return "indices are not sorted ascending and unique"
        return None


@dataclass(eq=False, repr=False)
class SparseEdit:
    entries: dict[str, SparseEntry]  # parameter name -> recorded elements
    base_fingerprint: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    embedding_name: str = ""  # state-dict name of the embedding matrix in the base model ("" if none)
    edited_fingerprint: str = ""  # fingerprint of the base after apply(); checked by revert()
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (selected tokens, ...)

    KIND = KIND_SPARSE

    def __post_init__(self) -> None:
        for name, entry in self.entries.items():
            if (why := entry.problem()) is not None:
                raise ConfigError(f"sparse edit entry {name}: {why}", hint="build entries with SparseEdit.capture or from_masks")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, params={len(self.entries)}, "
                f"values={self.num_changed_values()}, base={self.base_fingerprint[:12]})")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def capture(
        cls,
        base: nn.Module,
        edited: nn.Module,
        *,
        names: list[str] | None = None,
        method: str,
        config: dict[str, Any] | None = None,
        forget: list[str] | None = None,
        base_fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> SparseEdit:
        """The element-wise difference between an (unmodified) base and its edited copy.

        Every parameter (or only `names`) is compared bit for bit; parameters with no changed element
        get no entry. Refuses models whose parameters differ in names/shapes/dtypes, and any change the
        edit would not record (outside `names`, or in a buffer): apply() must rebuild `edited` exactly.
        """
        base_params, new_params = _matching_params(base, edited)
        chosen = _known_names(names if names is not None else list(base_params), base_params, "names")
        picks = {}
        for name in chosen:
            changed = _differs(base_params[name], new_params[name]).nonzero().flatten()
            if changed.numel():
                picks[name] = changed
        return cls._build(base, edited, base_params, new_params, picks, set(chosen), method=method, config=config,
                          forget=forget, base_fingerprint=base_fingerprint, info=info)

    @classmethod
    def from_masks(
        cls,
        base: nn.Module,
        edited: nn.Module,
        masks: dict[str, torch.Tensor],
        *,
        method: str,
        config: dict[str, Any] | None = None,
        forget: list[str] | None = None,
        base_fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> SparseEdit:
        """Record exactly the masked elements (what a method was allowed to train), changed or not.

        `masks` maps parameter names to bool tensors of the parameter's shape. Refuses an edited model
        that changed anything outside the masks: the edit would not reproduce it.
        """
        import torch

        base_params, new_params = _matching_params(base, edited)
        picks = {}
        for name in _known_names(list(masks), base_params, "masks"):
            mask = masks[name]
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(base_params[name].shape):
                raise ConfigError(
                    f"mask for {name} is {mask.dtype} of shape {tuple(mask.shape)}, not bool of the "
                    f"parameter's shape {tuple(base_params[name].shape)}",
                    hint="pass one torch.bool tensor per parameter, shaped like it",
                )
            chosen = mask.detach().reshape(-1).nonzero().flatten()
            if chosen.numel():
                picks[name] = chosen
        return cls._build(base, edited, base_params, new_params, picks, set(), method=method, config=config,
                          forget=forget, base_fingerprint=base_fingerprint, info=info)

    @classmethod
    def _build(cls, base: nn.Module, edited: nn.Module, base_params: dict[str, torch.Tensor],
               new_params: dict[str, torch.Tensor], picks: dict[str, torch.Tensor], diffed: set[str], *, method: str,
               config: dict[str, Any] | None, forget: list[str] | None, base_fingerprint: str | None,
               info: dict[str, Any] | None) -> SparseEdit:
        from steuops import modeling

        outside = _changes_outside(base, edited, base_params, new_params, picks, diffed)
        if outside:
            raise EditMismatchError(
                f"the edited model changed values the {method} edit would not record: {', '.join(outside[:5])}"
                + (f" and {len(outside) - 5} more" if len(outside) > 5 else ""),
                hint="record every parameter the method changed (names/masks), or train only the recorded elements",
            )
        entries = {name: _entry(base_params[name], new_params[name], idx) for name, idx in picks.items()}
        return cls(
            entries=entries,
            base_fingerprint=base_fingerprint or modeling.fingerprint(base),
            method=method,
            config=dict(config or {}),
            forget=list(forget or []),
            labels=_labels(base),
            embedding_name=_embedding_name(base),
            edited_fingerprint=modeling.fingerprint(edited),
            info=dict(info or {}),
        )

    # ---- what it changes ----------------------------------------------------------------------
    @property
    def token_ids(self) -> list[int]:
        """Sorted rows of the word-embedding matrix the edit touches (any element of the row)."""
        entry = self.entries.get(self.embedding_name) if self.embedding_name else None
        if entry is None or not len(entry):
            return []
        width = int(entry.shape[-1]) if len(entry.shape) > 1 else 1
        return [int(i) for i in (entry.indices // width).unique().tolist()]

    @property
    def k(self) -> int:
        return len(self.token_ids)

    def num_changed_values(self) -> int:
        """Elements the edit records (and can change) over all parameters."""
        return sum(len(entry) for entry in self.entries.values())

    # ---- use ----------------------------------------------------------------------------------
    def apply(self, model: nn.Module, *, check: bool = True) -> nn.Module:
        """Write the new values into `model` in place; refuses a model that is not the base."""
        if check:
            self._check(model, self.base_fingerprint, "apply")
        self._write(model, "values")
        return model

    def revert(self, model: nn.Module, *, check: bool = True) -> nn.Module:
        """Write the original values back; the base is restored bit for bit."""
        if check and self.edited_fingerprint:
            self._check(model, self.edited_fingerprint, "revert")
        self._write(model, "originals")
        return model

    def _check(self, model: nn.Module, expected: str, action: str) -> None:
        from steuops import modeling

        got = modeling.fingerprint(model)
        if got == expected:
            return
        if action == "apply" and got == self.edited_fingerprint:
            raise EditMismatchError(
                "the edit is already applied to this model",
                hint=f"apply a {type(self).__name__} to the unedited base model, or revert() first",
            )
        what = "base" if action == "apply" else "edited"
        raise EditMismatchError(
            f"cannot {action} the {self.method} edit: model fingerprint {got[:12]} is not the "
            f"{what} model it was made for (expected {expected[:12]})",
            hint=f"load the exact model version the edit was made from (fingerprint {expected[:12]}...)",
        )

    def _entries_for(self, model: nn.Module) -> dict[str, SparseEntry]:
        """The entries to write into `model` (a TokenEdit may need the model to name its embedding)."""
        return self.entries

    def _missing_word(self, missing: list[str]) -> str:
        return "parameter(s)"

    def _write(self, model: nn.Module, part: str) -> None:
        import torch

        entries = self._entries_for(model)
        params = dict(model.named_parameters())
        missing = [n for n in entries if n not in params]
        if missing:
            raise EditMismatchError(
                f"model has no {self._missing_word(missing)} {', '.join(missing)}",
                hint="apply the edit to the architecture it was made from",
            )
        for name, entry in entries.items():  # every check before the first write: no half-applied model
            if tuple(params[name].shape) != tuple(entry.shape):
                raise EditMismatchError(
                    f"parameter {name} has shape {tuple(params[name].shape)}, the edit was made for {tuple(entry.shape)}",
                    hint="apply the edit to the architecture it was made from",
                )
        with torch.no_grad():
            for name, entry in entries.items():
                _scatter(params[name], entry.indices, getattr(entry, part))

    # ---- disk ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        entries = self.entries
        tensors = {f"{name}{SEP}{part}": getattr(entry, part) for name, entry in entries.items() for part in PARTS}
        save_file({n: t.detach().cpu().contiguous().clone() for n, t in tensors.items()}, str(out / TENSORS))
        (out / META).write_text(json.dumps(self._meta(entries), indent=2, sort_keys=True, default=str) + "\n")
        return out

    def _meta(self, entries: dict[str, SparseEntry]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.KIND,
            "method": self.method,
            "entries": [{"name": n, "shape": list(e.shape), "count": len(e)} for n, e in entries.items()],
            "num_values": sum(len(e) for e in entries.values()),
            "embedding_name": self.embedding_name,
            "base_fingerprint": self.base_fingerprint,
            "edited_fingerprint": self.edited_fingerprint,
            "forget": self.forget,
            "labels": self.labels,
            "config": self.config,
            "info": self.info,
        }

    @classmethod
    def load(cls, directory: str | Path) -> SparseEdit:
        """Any edit directory (a TokenEdit comes back for a token edit); see load_edit."""
        return load_edit(directory)


class TokenEdit(SparseEdit):
    """Replacement embedding rows + the new head: STEU's edit, a SparseEdit whose entries are whole rows
    of the embedding matrix and every head parameter (all elements)."""

    KIND = KIND_TOKEN

    def __init__(
        self,
        token_ids: list[int],
        rows: torch.Tensor,  # (k, d) replacement rows, same order as token_ids
        original_rows: torch.Tensor,  # (k, d) the base model's rows
        head: dict[str, torch.Tensor],  # head parameter name -> new value
        original_head: dict[str, torch.Tensor],
        base_fingerprint: str,
        method: str,
        config: dict[str, Any] | None = None,
        forget: list[str] | None = None,
        labels: list[str] | None = None,
        embedding_name: str = "",
        edited_fingerprint: str = "",
        info: dict[str, Any] | None = None,
        embedding_shape: tuple[int, ...] | None = None,  # (vocab, d); None: read from the model at apply
    ) -> None:
        # no SparseEdit.__init__: the entries are derived from these fields on demand, never stored
        self.token_ids = token_ids
        self.rows = rows
        self.original_rows = original_rows
        self.head = head
        self.original_head = original_head
        self.base_fingerprint = base_fingerprint
        self.method = method
        self.config = config if config is not None else {}
        self.forget = forget if forget is not None else []
        self.labels = labels if labels is not None else []
        self.embedding_name = embedding_name
        self.edited_fingerprint = edited_fingerprint
        self.info = info if info is not None else {}
        self.embedding_shape = tuple(int(s) for s in embedding_shape) if embedding_shape else None

    @property  # a stored field here (in the caller's order); derived from the entries in SparseEdit
    def token_ids(self) -> list[int]:
        return self._token_ids

    @token_ids.setter
    def token_ids(self, ids: list[int]) -> None:
        self._token_ids = [int(i) for i in ids]

    @property
    def entries(self) -> dict[str, SparseEntry]:
        """The rows and head as sparse entries (rows sorted by id; needs the embedding's name and shape)."""
        if self.token_ids and (not self.embedding_name or not self.embedding_shape):
            raise ConfigError(
                f"this {self.method} TokenEdit does not record its embedding's name and shape",
                hint="apply it to its base model once (that records them), or re-capture it with TokenEdit.capture",
            )
        return self._entries(self.embedding_name, self.embedding_shape)

    def _entries(self, emb_name: str, emb_shape: tuple[int, ...] | None) -> dict[str, SparseEntry]:
        import torch

        out: dict[str, SparseEntry] = {}
        if self.token_ids:
            assert emb_shape is not None
            out[emb_name] = _rows_entry(self.token_ids, self.rows, self.original_rows, emb_shape)
        for name, value in self.head.items():
            flat = value.detach().reshape(-1)
            out[name] = SparseEntry(tuple(value.shape), torch.arange(flat.numel(), dtype=torch.long), flat,
                                    self.original_head[name].detach().reshape(-1))
        return out

    def _entries_for(self, model: nn.Module) -> dict[str, SparseEntry]:
        from steuops import modeling

        if self.token_ids and (not self.embedding_name or not self.embedding_shape):
            # an edit that predates the recorded shape: the model names its embedding (as TokenEdit always did)
            self.embedding_name = self.embedding_name or modeling.embedding_param_name(model)
            self.embedding_shape = tuple(modeling.embedding(model).weight.shape)
        return self.entries

    def _missing_word(self, missing: list[str]) -> str:
        return "head parameter(s)" if set(missing) <= set(self.head) else "parameter(s)"

    def __repr__(self) -> str:
        return f"TokenEdit(method={self.method!r}, k={self.k}, values={self.num_changed_values()}, base={self.base_fingerprint[:12]})"

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def capture(  # token_ids is positional here, as it always was
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
            embedding_shape=tuple(base_w.shape),
        )

    # ---- use ----------------------------------------------------------------------------------
    def num_changed_values(self) -> int:
        """Values the edit can change: k*d rows plus every head parameter."""
        return int(self.rows.numel()) + sum(int(t.numel()) for t in self.head.values())

    # ---- disk ---------------------------------------------------------------------------------
    def _meta(self, entries: dict[str, SparseEntry]) -> dict[str, Any]:
        return {
            **super()._meta(entries),
            "token_ids": self.token_ids,
            "head_names": list(self.head),
            "embedding_shape": list(self.embedding_shape) if self.embedding_shape else None,
        }

    @classmethod
    def load(cls, directory: str | Path) -> TokenEdit:
        """A token edit directory, in the sparse format (kind "token") or the legacy token-edit one."""
        edit = load_edit(directory)
        if not isinstance(edit, TokenEdit):
            raise ConfigError(
                f"{Path(directory) / META}: a sparse edit ({edit.num_changed_values()} values in "
                f"{len(edit.entries)} parameters), not a token edit",
                hint="load it with steuops.edit.load_edit (or SparseEdit.load): apply/revert work the same",
            )
        return edit


# ---- loading ------------------------------------------------------------------------------------
def load_edit(directory: str | Path) -> SparseEdit:
    """Read an edit directory: a TokenEdit for a token edit (sparse format kind "token", or the legacy
    steuops.token-edit v1 format), a SparseEdit otherwise."""
    src = Path(directory)
    meta_path, tensor_path = src / META, src / TENSORS
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; not an edit directory", hint=f"pass a directory holding {META} and {TENSORS}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})", hint="re-save the edit") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}: not an edit description (a JSON object)", hint="re-save the edit")
    version = (meta.get("format"), meta.get("format_version"))
    if version == (LEGACY_FORMAT, LEGACY_VERSION):
        return _legacy_token_edit(meta, _tensors(tensor_path), tensor_path)
    if version != (FORMAT, FORMAT_VERSION) or meta.get("kind") not in (KIND_SPARSE, KIND_TOKEN):
        raise ConfigError(
            f"{meta_path}: format {version[0]!r} v{version[1]} kind {meta.get('kind')!r} is not {FORMAT} "
            f"v{FORMAT_VERSION} (kind {KIND_SPARSE!r} or {KIND_TOKEN!r}) nor the legacy {LEGACY_FORMAT} v{LEGACY_VERSION}",
            hint="re-create the edit with this steuops version",
        )
    try:
        entries = _read_entries(meta, _tensors(tensor_path), tensor_path)
        if meta["kind"] == KIND_TOKEN:
            return _token_edit(meta, entries, tensor_path)
        return SparseEdit(entries=entries, **_common(meta))
    except KeyError as exc:
        raise ConfigError(f"{meta_path}: missing field {exc.args[0]!r}", hint="re-save the edit") from exc


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a truncated or foreign file
        raise ConfigError(f"{path}: not a readable safetensors file ({exc})", hint="re-save the edit") from exc


def _common(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata every edit kind shares, as constructor keywords."""
    return {
        "base_fingerprint": meta["base_fingerprint"],
        "method": meta["method"],
        "config": meta.get("config", {}),
        "forget": meta.get("forget", []),
        "labels": meta.get("labels", []),
        "embedding_name": meta.get("embedding_name", ""),
        "edited_fingerprint": meta.get("edited_fingerprint", ""),
        "info": meta.get("info", {}),
    }


def _need(tensors: dict[str, torch.Tensor], key: str, path: Path, what: str) -> torch.Tensor:
    if key not in tensors:
        raise ConfigError(f"{path}: no tensor {key!r} ({what})", hint="the edit directory is incomplete or corrupt; re-save the edit")
    return tensors[key]


def _read_entries(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> dict[str, SparseEntry]:
    entries = {}
    for item in meta["entries"]:
        name = item["name"]
        parts = [_need(tensors, f"{name}{SEP}{part}", path, f"{part} of entry {name}") for part in PARTS]
        entry = SparseEntry(tuple(int(s) for s in item["shape"]), *parts)
        if (why := entry.problem()) is not None:
            raise ConfigError(f"{path}: entry {name}: {why}", hint="the edit is corrupt; re-save it")
        entries[name] = entry
    return entries


def _token_edit(meta: dict[str, Any], entries: dict[str, SparseEntry], path: Path) -> TokenEdit:
    """A TokenEdit back from its entries: rows in the saved token_ids order, whole head parameters."""
    import torch

    ids = [int(i) for i in meta["token_ids"]]
    names = list(meta["head_names"])
    emb_shape = tuple(meta["embedding_shape"]) if meta.get("embedding_shape") else None
    for name in names:
        if name not in entries or len(entries[name]) != math.prod(entries[name].shape):
            raise ConfigError(f"{path}: head parameter {name} is not stored whole", hint="the edit is corrupt; re-save it")
    head = {n: entries[n].values.reshape(entries[n].shape) for n in names}
    original_head = {n: entries[n].originals.reshape(entries[n].shape) for n in names}
    if ids:
        entry = entries.get(meta["embedding_name"])
        if entry is None:
            raise ConfigError(f"{path}: no entry for the embedding {meta['embedding_name']!r}", hint="the edit is corrupt; re-save it")
        rows, original_rows = _rows_of(entry, ids, path)
        emb_shape = entry.shape
    else:
        width = int(emb_shape[1]) if emb_shape else 0
        dtype = next(iter(head.values())).dtype if head else torch.float32
        rows, original_rows = torch.empty((0, width), dtype=dtype), torch.empty((0, width), dtype=dtype)
    return TokenEdit(token_ids=ids, rows=rows, original_rows=original_rows, head=head, original_head=original_head,
                     embedding_shape=emb_shape, **_common(meta))


def _rows_of(entry: SparseEntry, ids: list[int], path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, original_rows) in `ids` order from an embedding entry that holds whole rows."""
    width = int(entry.shape[1])
    unique = sorted(set(ids))
    if not _same(entry.indices, _row_indices(unique, width)):
        raise ConfigError(f"{path}: the embedding entry does not hold exactly rows {unique[:8]}...", hint="the edit is corrupt; re-save it")
    pos = {t: i for i, t in enumerate(unique)}
    order = [pos[t] for t in ids]
    return entry.values.reshape(-1, width)[order], entry.originals.reshape(-1, width)[order]


def _legacy_token_edit(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> TokenEdit:
    """A steuops.token-edit v1 directory (what registered versions hold): rows/original_rows/head.{n}."""
    try:
        names = list(meta["head_names"])
        ids = [int(i) for i in meta["token_ids"]]
        common = _common(meta)
    except KeyError as exc:
        raise ConfigError(f"{path.parent / META}: missing field {exc.args[0]!r}", hint="re-save the edit") from exc
    return TokenEdit(
        token_ids=ids,
        rows=_need(tensors, "rows", path, "replacement rows"),
        original_rows=_need(tensors, "original_rows", path, "original rows"),
        head={n: _need(tensors, f"head.{n}", path, "head value") for n in names},
        original_head={n: _need(tensors, f"original_head.{n}", path, "original head value") for n in names},
        **common,
    )


# ---- tensor helpers -----------------------------------------------------------------------------
def _take(weight: torch.Tensor, ids: list[int]) -> torch.Tensor:
    import torch

    index = torch.tensor(ids, dtype=torch.long, device=weight.device)
    return weight.index_select(0, index).detach().cpu().clone()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def _row_indices(ids: list[int], width: int) -> torch.Tensor:
    """Flat indices of whole rows `ids` (sorted) of a (vocab, width) matrix, ascending."""
    import torch

    rows = torch.tensor(ids, dtype=torch.long).reshape(-1, 1)
    return (rows * width + torch.arange(width, dtype=torch.long)).reshape(-1)


def _rows_entry(ids: list[int], rows: torch.Tensor, original_rows: torch.Tensor, shape: tuple[int, ...]) -> SparseEntry:
    """Whole rows as an entry; indices must ascend, so rows are reordered by id (a repeated id keeps its last row,
    as weight[ids] = rows would)."""
    pos = {t: i for i, t in enumerate(ids)}
    unique = sorted(pos)
    order = [pos[t] for t in unique]
    width = int(rows.shape[1])
    return SparseEntry(tuple(shape), _row_indices(unique, width), rows.detach()[order].reshape(-1),
                       original_rows.detach()[order].reshape(-1))


def _scatter(param: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> None:
    """param.flat[indices] = values, in place (a non-contiguous parameter goes through a copy)."""
    target = param.detach()
    idx = indices.to(target.device)
    src = values.to(device=target.device, dtype=target.dtype)
    if target.is_contiguous():
        target.view(-1).index_copy_(0, idx, src)
        return
    flat = target.reshape(-1).clone()
    flat.index_copy_(0, idx, src)
    target.copy_(flat.view(target.shape))


def _differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flat bool mask of elements whose bits differ (so 0.0 -> -0.0 counts, and an unchanged NaN does not)."""
    import torch

    x = a.detach().reshape(-1)
    y = b.detach().to(x.device).reshape(-1)
    size = x.element_size()
    if x.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    return (x.view(torch.uint8).view(-1, size) != y.view(torch.uint8).view(-1, size)).any(dim=1)


def _entry(a: torch.Tensor, b: torch.Tensor, indices: torch.Tensor) -> SparseEntry:
    x, y = a.detach().reshape(-1), b.detach().reshape(-1)
    idx = indices.to(x.device)
    return SparseEntry(tuple(a.shape), indices.detach().cpu().clone(), y.to(x.device)[idx].cpu().clone(),
                       x[idx].cpu().clone())


def _matching_params(base: nn.Module, edited: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Both models' parameters by name; refuses two models that are not the same architecture."""
    a, b = dict(base.named_parameters()), dict(edited.named_parameters())
    problems = [f"{n} missing from the edited model" for n in a if n not in b]
    problems += [f"{n} not in the base model" for n in b if n not in a]
    problems += [f"{n} is {tuple(a[n].shape)} {a[n].dtype} vs {tuple(b[n].shape)} {b[n].dtype}"
                 for n in a if n in b and (a[n].shape != b[n].shape or a[n].dtype != b[n].dtype)]
    if problems:
        raise EditMismatchError(
            f"base and edited models differ in their parameters: {'; '.join(problems[:3])}"
            + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
            hint="capture an edit from a model and an edited copy of it (copy.deepcopy), same architecture and dtype",
        )
    return a, b


def _known_names(names: list[str], params: dict[str, torch.Tensor], what: str) -> list[str]:
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ConfigError(f"{what} name(s) {', '.join(unknown[:5])} are not parameters of the base model",
                          hint="use names from model.named_parameters()")
    return list(dict.fromkeys(names))


def _changes_outside(base: nn.Module, edited: nn.Module, base_params: dict[str, torch.Tensor],
                     new_params: dict[str, torch.Tensor], picks: dict[str, torch.Tensor], diffed: set[str]) -> list[str]:
    """Parameters/buffers whose bits changed somewhere the edit does not record (`diffed`: parameters whose
    every changed element is already in `picks`, so they need no second pass)."""
    out = []
    for name, a in base_params.items():
        if name in diffed:
            continue
        changed = _differs(a, new_params[name])
        if name in picks:
            changed[picks[name].to(changed.device)] = False
        if bool(changed.any()):
            out.append(name)
    new_buffers = dict(edited.named_buffers())
    for name, a in base.named_buffers():
        b = new_buffers.get(name)
        if b is None or b.shape != a.shape or b.dtype != a.dtype or bool(_differs(a, b).any()):
            out.append(f"buffer {name}")
    return out


def _labels(model: nn.Module) -> list[str]:
    from steuops import modeling

    try:
        return modeling.label_names(model)
    except (AttributeError, ModelError):  # a bare module without a classifier config: no labels to record
        return []


def _embedding_name(model: nn.Module) -> str:
    from steuops import modeling

    try:
        return modeling.embedding_param_name(model)
    except ModelError:  # no token embedding: token_ids is simply empty
        return ""
