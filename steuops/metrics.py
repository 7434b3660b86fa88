"""Forget/retain F1 before and after an edit, and parameter accounting by state-dict diff.

F1 is binary per label column: F1 = 2tp / (2tp + fp + fn). When a column has no true and no
predicted positives (tp + fp + fn == 0) its F1 is defined as 0.0 (sklearn's zero_division=0.0), so
an empty class never inflates a macro average. A model that never predicts the forget class on
notes that carry it has tp = 0 and therefore forget F1 = 0. `support` in the report says how many
test notes carry each class, so a forget F1 of 0 on zero support can be told apart.

Parameters modified are counted by comparing every parameter of the two models element by
element, never from what a method claims to have touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from steuops.data import Notes
    from steuops.inference import InferenceSettings
    from steuops.modeling import Progress


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-column binary F1 of two (n, C) 0/1 matrices; 0.0 where tp + fp + fn == 0 (sklearn's f1_score
    with zero_division=0.0, one column at a time: a one-column matrix would otherwise read as binary)."""
    from sklearn.metrics import f1_score

    t = np.asarray(y_true).astype(bool).astype(np.int8)
    p = np.asarray(y_pred).astype(bool).astype(np.int8)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.shape[0] == 0:  # sklearn refuses empty input; no notes: every column 0.0
        return np.zeros(t.shape[1], dtype=np.float64)
    return np.array([f1_score(t[:, j], p[:, j], zero_division=0.0) for j in range(t.shape[1])], dtype=np.float64)


@dataclass
class Scores:
    per_class_f1: dict[str, float]
    macro_f1: float  # over all classes
    forget_f1: float  # max over the forget classes (the worst leak)
    forget_f1_per_class: dict[str, float]
    retain_macro_f1: float  # over the non-forget classes


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], forget: Sequence[str]) -> Scores:
    f1 = f1_scores(y_true, y_pred)
    per_class = {name: float(v) for name, v in zip(labels, f1, strict=True)}
    forget_part = {c: per_class[c] for c in forget}
    retain = [per_class[c] for c in labels if c not in forget_part]
    return Scores(
        per_class_f1=per_class,
        macro_f1=float(np.mean(f1)) if len(f1) else 0.0,
        forget_f1=max(forget_part.values()) if forget_part else 0.0,
        forget_f1_per_class=forget_part,
        retain_macro_f1=float(np.mean(retain)) if retain else 0.0,
    )


@dataclass
class Evaluation:
    before: Scores
    after: Scores
    params_modified: int
    params_total: int
    params_fraction: float
    l2_distance: float
    n_test: int
    forget: list[str]
    labels: list[str]
    support: dict[str, int] = field(default_factory=dict)  # test notes carrying each class
    inference: dict[str, Any] = field(default_factory=dict)  # InferenceSettings.to_dict() the notes were scored at
    paper: dict[str, Any] = field(default_factory=dict)  # the HDSU paper's figures (paper_metrics)
    # The edited model's logits on the test notes when they are fp32 (CPU: no autocast), in memory only (not in
    # to_dict): the export checks its ONNX files against exactly what the gate scored. None under bf16 (CUDA).
    edited_logits: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the input of gate.decide."""
        out = asdict(replace(self, edited_logits=None))
        del out["edited_logits"]
        return out


def param_diff(original: nn.Module, edited: nn.Module) -> tuple[int, int, float]:
    """(values that differ, values in total, L2 distance) over every parameter, element-wise.

    Parameters are matched by name; a name missing from the edited model or with another shape
    counts as wholly modified. Non-parameter buffers (position ids) are not parameters and are
    left out of both counts.
    """
    import torch

    edited_params = dict(edited.named_parameters())
    modified, total, sq = 0, 0, 0.0
    with torch.no_grad():
        for name, a in original.named_parameters():
            total += a.numel()
            b = edited_params.get(name)
            if b is None or b.shape != a.shape:
                modified += a.numel()
                continue
            a64 = a.detach().to("cpu", torch.float64)
            b64 = b.detach().to("cpu", torch.float64)
            modified += int((a.detach().cpu() != b.detach().cpu()).sum())
            sq += float(((a64 - b64) ** 2).sum())
    return modified, total, float(np.sqrt(sq))


def evaluate(
    original: nn.Module,
    edited: nn.Module,
    tokenizer: Any,
    test: Notes,
    forget: Sequence[str],
    *,
    device: str = "auto",
    batch_size: int = 32,
    max_length: int = 256,
    progress: Progress | None = None,
    settings: InferenceSettings | None = None,
    hierarchy: Any = None,
    on_original: Callable[[np.ndarray, Any], None] | None = None,
    on_edited: Callable[[np.ndarray, Any], None] | None = None,
    original_pass: tuple[np.ndarray, Any] | None = None,
) -> Evaluation:
    """Score both models on the held-out notes and diff their parameters.

    `hierarchy` (steuops.hierarchy.Hierarchy of the forget classes, or None): the paper figures then also
    give the preservation of the retain notes grouped by the highest hierarchy level they mention.

    `settings` (max length + truncation side) is what the notes are tokenized with; it wins over
    `max_length`, which (with the tokenizer's own truncation side) is used only when settings is None.

    `on_original(logits, cache)`: called with the original's logits on `test` and the encoder outputs its head
    read (features.FeatureCache), when those replay its logits exactly; the pipeline keeps them for the audit.
    `on_edited(logits, cache)`: the same for the edited model (its cache: the original's outputs, with those of
    the notes the edited encoder ran in their place).
    `original_pass` (logits, cache): the original's pass over `test` when the caller has it already, with the
    encoder outputs that replay it exactly (the pipeline reads it back from the audit cache: audit.recall_pass);
    the original then runs on no note (and on_original is not called).
    """
    from steuops import modeling

    forget = list(forget)
    modeling.check_forget(original, forget)
    settings = settings or _settings_for(tokenizer, max_length)
    labels = modeling.label_names(original)
    multi = modeling.is_multi_label(original)
    dev = modeling.resolve_device(device)
    y_true = test.multi_hot(labels)
    logits = _paired_logits(original, edited, tokenizer, test.texts, settings, dev, batch_size, progress, on_original,
                            on_edited, original_pass)
    preds = [modeling.predict(z, multi) for z in logits]
    modified, total, l2 = param_diff(original, edited)
    cols = [labels.index(c) for c in forget]
    levels = None if hierarchy is None else _highest_level(hierarchy, test.texts)
    return Evaluation(
        before=scores(y_true, preds[0], labels, forget),
        after=scores(y_true, preds[1], labels, forget),
        params_modified=modified,
        params_total=total,
        params_fraction=modified / total if total else 0.0,
        l2_distance=l2,
        n_test=len(test),
        forget=forget,
        labels=labels,
        support={name: int(n) for name, n in zip(labels, y_true.sum(axis=0), strict=True)},
        inference=settings.to_dict(),
        paper=paper_metrics(y_true, preds[0], preds[1], cols, modified / total if total else 0.0, levels),
        edited_logits=logits[1] if _fp32(edited, dev) else None,
    )


def _fp32(model: nn.Module, dev: Any) -> bool:
    """Whether `model`'s logits on `dev` are plain fp32 (modeling.autocast casts to bf16 on CUDA only)."""
    import torch

    return dev.type == "cpu" and all(p.dtype == torch.float32 for p in model.parameters())


def _highest_level(hierarchy: Any, texts: Sequence[str]) -> np.ndarray:
    from steuops.hierarchy import highest_level

    return highest_level(hierarchy, texts)


def paper_metrics(y_true: np.ndarray, before: np.ndarray, after: np.ndarray, forget_cols: Sequence[int],
                  params_fraction: float, levels: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of the HDSU paper (arXiv 2511.19498), for a classifier:
    - forgetting rate = 1 - forget accuracy after / before; forget accuracy = share of the notes carrying a forget
      class for which every forget class they carry is predicted;
    - knowledge preservation = retain accuracy after / before; retain accuracy = share of the other notes whose
      retained columns are all predicted right (single-label: the predicted class is the true one);
    - params_percent = 100 x the share of parameters changed;
    - preservation_by_level (with `levels`, (n,) highest hierarchy level each note mentions, 0 = none): knowledge
      preservation on the retain notes of each level. None where a denominator is 0."""
    t, b, a = (np.asarray(m).astype(bool) for m in (y_true, before, after))
    fcols = list(forget_cols)
    keep = [j for j in range(t.shape[1]) if j not in set(fcols)]
    carries = t[:, fcols].any(axis=1)

    def forget_acc(p: np.ndarray) -> float | None:
        hit = ~(t[:, fcols] & ~p[:, fcols]).any(axis=1)  # every forget label the note carries is predicted
        return float(hit[carries].mean()) if carries.any() else None

    def retain_acc(p: np.ndarray, rows: np.ndarray) -> float | None:
        rows = rows & ~carries
        return float((p[rows][:, keep] == t[rows][:, keep]).all(axis=1).mean()) if rows.any() else None

    everyone = np.ones(len(t), dtype=bool)
    out: dict[str, Any] = {"forget_accuracy_before": forget_acc(b), "forget_accuracy_after": forget_acc(a),
                           "retain_accuracy_before": retain_acc(b, everyone), "retain_accuracy_after": retain_acc(a, everyone),
                           "params_percent": 100.0 * params_fraction}
    out["forgetting_rate"] = _rate(out["forget_accuracy_after"], out["forget_accuracy_before"], complement=True)
    out["knowledge_preservation"] = _rate(out["retain_accuracy_after"], out["retain_accuracy_before"])
    if levels is not None:
        out["preservation_by_level"] = {
            ("none" if lv == 0 else f"L{lv}"): {"notes": int(((levels == lv) & ~carries).sum()),
                                                "preservation": _rate(retain_acc(a, levels == lv), retain_acc(b, levels == lv))}
            for lv in range(5)}
    return out


def _rate(after: float | None, before: float | None, complement: bool = False) -> float | None:
    if after is None or not before:
        return None
    return 1.0 - after / before if complement else after / before


def _settings_for(tokenizer: Any, max_length: int) -> InferenceSettings:
    from steuops.inference import InferenceSettings

    return InferenceSettings(max_length=int(max_length), truncation_side=getattr(tokenizer, "truncation_side", "right"))


def _paired_logits(original: nn.Module, edited: nn.Module, tokenizer: Any, texts: Sequence[str],
                   settings: InferenceSettings, dev: Any, batch_size: int, progress: Progress | None,
                   on_original: Callable[[np.ndarray, Any], None] | None = None,
                   on_edited: Callable[[np.ndarray, Any], None] | None = None,
                   original_pass: tuple[np.ndarray, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both models' logits. When `edited`'s encoder differs from the original's only in some embedding rows
    (STEU: the encoder is frozen), it runs only on the notes that contain one of those tokens; every other note
    gets the original's encoder output (recorded on the way) through the edited head: the same logits
    (features.py), for a fraction of the passes. Anything else, or a head the record cannot replay: full passes.
    `on_original`, `on_edited`, `original_pass`: see evaluate."""
    from steuops import features

    if original_pass is not None:
        before, cache = np.asarray(original_pass[0], dtype=np.float32), original_pass[1]
        exact = True
    else:
        before, cache = _logits_on(original, tokenizer, texts, settings, dev, batch_size, progress)
        exact = cache is not None and _on(original, dev, lambda: features.exact(original, cache, _tensor(before),
                                                                                 device=dev))
        if exact and on_original is not None:
            on_original(before, cache)
    rows = features.changed_rows(original, edited)
    hit = np.arange(len(texts))
    if rows is None or not exact:
        cache = None
        after, fresh = _logits_on(edited, tokenizer, texts, settings, dev, batch_size, progress)
    else:
        after, fresh = _on(edited, dev, lambda: _head_logits(edited, cache, batch_size, dev)), None
        with settings.applied(tokenizer):
            ids = tokenizer(list(texts), truncation=True, max_length=settings.max_length)["input_ids"]
        hit = np.flatnonzero(features.touched(ids, rows))
        if len(hit):
            after[hit], fresh = _logits_on(edited, tokenizer, [texts[i] for i in hit], settings, dev, batch_size,
                                           progress)
    if on_edited is not None:
        _hand_over(edited, cache, hit, fresh, after, dev, on_edited)
    return before, after


def _hand_over(edited: nn.Module, base: Any, hit: np.ndarray, fresh: Any, logits: np.ndarray, dev: Any,
               to: Callable[[np.ndarray, Any], None]) -> None:
    """to(logits, cache) with the edited model's encoder outputs on every note: `base` (the original's, None after
    full passes) with the `hit` notes' `fresh` ones in their place; only when its head replays `logits` exactly
    on the notes the edited encoder ran."""
    from steuops import features

    if len(hit) and fresh is None:
        return
    cache = fresh if base is None else (base.replace(hit.tolist(), fresh) if len(hit) else base)
    if cache is None or not _on(edited, dev, lambda: features.exact(edited, cache, _tensor(logits), device=dev,
                                                                     rows=hit.tolist() or None)):
        return
    to(logits, cache)


def _head_logits(model: nn.Module, cache: Any, batch_size: int, dev: Any) -> np.ndarray:
    import torch

    from steuops.features import head_logits
    from steuops.modeling import autocast

    out = []
    with torch.no_grad():
        for start in range(0, len(cache), batch_size):
            with autocast(dev):
                out.append(head_logits(model, cache, list(range(start, min(start + batch_size, len(cache))))))
    return torch.cat(out).float().cpu().numpy()


def _on(model: nn.Module, dev: Any, work: Any) -> Any:
    """work() with `model` on `dev` in eval mode; then back where and as it was."""
    home, was_training = next(model.parameters()).device, model.training
    model.to(dev).eval()
    try:
        return work()
    finally:
        model.to(home).train(was_training)


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array)


def _logits_on(model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: InferenceSettings, dev: Any,
               batch_size: int, progress: Progress | None) -> tuple[np.ndarray, Any]:
    """The model's logits on `dev` at `settings` and its encoder outputs recorded on the way
    (modeling.recorded_logits); the model goes back to where it was."""
    from steuops import modeling

    home = next(model.parameters()).device
    model.to(dev)
    try:
        with settings.applied(tokenizer):
            return modeling.recorded_logits(model, tokenizer, list(texts), batch_size=batch_size,
                                            max_length=settings.max_length, device=dev, progress=progress)
    finally:
        model.to(home)
