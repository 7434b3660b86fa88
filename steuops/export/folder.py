"""The folder a server needs, parity-checked: `write_export` writes the .onnx files, the tokenizer at the version's
settings, labels.json and manifest.json. Each file is checked against PyTorch (or against the logits the gate
scored) and the served one scored on every held-out note; a byte-identical re-export reuses those figures."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steuops.export.checks import (
    FP16_ATOL,
    FP32_ATOL,
    OPTIMIZED_ATOL,
    compare_logits,
    require_parity,
    score_logits,
)
from steuops.export.graph import (
    FP16_FILE,
    META_FORGOTTEN,
    META_NAME,
    META_VERSION,
    MODEL_FILE,
    NOT_OPTIMIZED,
    OPTIMIZED_FILE,
    OptimizeResult,
    export_onnx,
    exporter_of,
    heads_and_hidden,
    label_props,
    optimize,
    served_file,
)
from steuops.export.runtime import (
    OnnxRunError,
    cuda_available,
    fixed_length,
    onnx_run_errors,
    ort_logits,
    session,
    settings_for,
    torch_logits,
)
from steuops.inference import DEFAULT_MAX_LENGTH, InferenceSettings

if TYPE_CHECKING:
    from torch import nn

    from steuops.data import Notes

log = logging.getLogger(__name__)


LABELS_FILE = "labels.json"


MANIFEST_FILE = "manifest.json"


# Held-out notes whose logits every shipped file must match PyTorch's on (the first ones). Why a cap: PyTorch over
# 1,200 notes was 12 s of the demo's export on 2 cores. The file a server serves is also scored on every held-out
# note (and must agree with the gate's figures); the others are fallbacks, parity-checked only (each full ONNX
# pass over the demo's 1,200 notes costs ~10 s on 2 cores).
PARITY_TEXTS = 256


# model.onnx is the optimiser's input; an export ships the optimised file too (its parity is required), and servers
# pick that one, so model.onnx is checked on the first 64 parity texts only (~3 s less on 2 cores). Where no optimised
# file is made (graph.NOT_OPTIMIZED), model.onnx is the served file and gets its full check.
FALLBACK_PARITY_TEXTS = 64


@dataclass
class ExportResult:
    name: str
    version: str
    out_dir: Path | None  # None when export_version worked in a temporary folder (the files are on the version)
    files: dict[str, str]  # file name -> sha256
    onnx_sha256: str
    exporter: str
    fused_ops: dict[str, int]
    parity: dict[str, dict[str, Any]]  # "fp32" / "optimized" / "fp16" -> ParityReport.to_dict() or {"skipped": why}
    forgotten: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)  # InferenceSettings.to_dict() of every step
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # onnx file -> score_onnx() on held-out notes
    agreement: dict[str, Any] = field(default_factory=dict)  # agreement() with the evaluated PyTorch figures

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir) if self.out_dir else None
        return out


def write_export(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    forgotten: Sequence[str] = (),
    lineage: list[dict[str, Any]] | None = None,
    check_texts: Sequence[str] | None = None,
    max_length: int | None = None,
    settings: InferenceSettings | None = None,
    held_out: Notes | None = None,
    fp16: bool | None = None,
    evaluated: np.ndarray | None = None,
    earlier: dict[str, Any] | None = None,
) -> ExportResult:
    """The folder a server needs, parity-checked: onnx files, tokenizer, labels.json, manifest.json.

    Everything runs at `settings` (else `max_length` on the tokenizer's side, else the tokenizer's own
    model_max_length/truncation_side); the saved tokenizer and manifest.json carry them for the server.
    Parity texts: check_texts, else the first PARITY_TEXTS held-out notes, else fresh synthetic notes. With
    `held_out`, the files a server serves (model.opt.onnx on CPU, model.fp16.onnx on GPU, model.onnx where no
    other was made) are scored on all of it (ExportResult.scores, manifest "scores").
    `fp16`: also make model.fp16.onnx (None: only where a CUDA device is visible, the one place it is served).
    `evaluated`: the model's fp32 logits on every `held_out` note, at `settings` (what the gate scored). Parity
    is then checked against them on every held-out note (model.onnx: the first FALLBACK_PARITY_TEXTS), and
    no PyTorch pass runs: the served file is shown to give, note for note, the logits that were gated.
    `earlier`: the manifest of an earlier export of this version, whose scores a byte-identical file may reuse.
    """
    work = Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings = settings or (settings_for(tokenizer, max_length) if max_length
                            else InferenceSettings.from_tokenizer(tokenizer))
    settings.check_model(model)
    if evaluated is not None and (held_out is None or check_texts or len(evaluated) != len(held_out)):
        raise ValueError("evaluated logits need the held-out notes they were computed on (and no check_texts)")
    if check_texts:
        texts = list(check_texts)
    elif held_out is not None:  # with the gate's logits: every held-out note
        texts = list(held_out.texts if evaluated is not None else held_out.texts[:PARITY_TEXTS])
    else:
        texts = default_check_texts()
    forgotten = list(forgotten)
    # name, version, labels, forgotten classes (JSON lists) and settings in every shipped .onnx file
    props = {META_NAME: name, META_VERSION: version, META_FORGOTTEN: json.dumps(forgotten), **label_props(model),
             **settings.to_tags()}
    built = build_onnx_dir(model, tokenizer, work, texts, settings=settings, held_out=held_out, forget=forgotten,
                           fp16=fp16, evaluated=evaluated, metadata=props, earlier=earlier)
    _write_json(work / LABELS_FILE, labels_doc(model, forgotten))
    shas = {p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"name": name, "version": version, "files": shas, "exporter": built.exporter,
                "fused_ops": built.fused_ops, "forgotten": forgotten,
                "lineage": lineage or [{"version": version, "forgotten": forgotten}],
                "max_length": settings.max_length, "truncation_side": settings.truncation_side,
                "inference": settings.to_dict(), "parity": {k: _brief(v) for k, v in built.parity.items()},
                "scores": {f: _brief_scores(v) for f, v in built.scores.items()}, "fixed_length": built.fixed_length}
    _write_json(work / MANIFEST_FILE, manifest)
    return ExportResult(name=name, version=version, out_dir=work, files=shas, onnx_sha256=shas[MODEL_FILE],
                        exporter=built.exporter, fused_ops=built.fused_ops, parity=built.parity, forgotten=forgotten,
                        inference=settings.to_dict(), scores=built.scores)


@dataclass
class OnnxBuild:
    files: list[Path]
    parity: dict[str, dict[str, Any]]  # "fp32" / "optimized" / "fp16" -> ParityReport.to_dict() or {"skipped": why}
    fused_ops: dict[str, int]
    exporter: str
    scores: dict[str, dict[str, Any]]  # shipped file -> score_logits() on the held-out notes
    fixed_length: int | None = None  # the one sequence length the files run at (None: any)


def build_onnx_dir(
    model: nn.Module,
    tokenizer: Any,
    out_dir: Path,
    texts: Sequence[str],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    settings: InferenceSettings | None = None,
    held_out: Notes | None = None,
    forget: Sequence[str] = (),
    fp16: bool | None = None,
    evaluated: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    earlier: dict[str, Any] | None = None,
) -> OnnxBuild:
    """Everything the server needs in one folder, parity-checked at `settings`: onnx files, tokenizer.
    `fp16` None: the fp16 file only where a CUDA device is visible (servers pick it on GPUs only).
    `evaluated`: PyTorch logits of `texts` already computed at `settings` (see write_export). `metadata`: more
    metadata_props for every file (each file is written once). `earlier`: see write_export."""
    settings = settings or settings_for(tokenizer, max_length)
    path = export_onnx(model, tokenizer, out_dir, settings=settings, metadata=metadata)
    path, sess = _at_any_length(model, tokenizer, out_dir, path, settings, metadata)
    exporter = exporter_of(path)  # read once: optimize and the manifest both need it
    check = _FileCheck(model, tokenizer, texts, settings, held_out, forget, evaluated, earlier)
    model_type = getattr(model.config, "model_type", None)
    served = model_type in NOT_OPTIMIZED  # no optimised file: model.onnx is served, so it gets the served file's check
    parity = {"fp32": check.run(path, FP32_ATOL, MODEL_FILE, sess, score=served,
                                limit=None if served else FALLBACK_PARITY_TEXTS)}
    heads, hidden = heads_and_hidden(model)
    opt = optimize(path, num_heads=heads, hidden_size=hidden, out_dir=out_dir,
                   fp16=cuda_available() if fp16 is None else fp16, metadata=metadata, exporter=exporter,
                   model_type=model_type)
    parity["optimized"] = ({"skipped": opt.skipped} if opt.optimized is None
                           else check.run(opt.optimized, OPTIMIZED_ATOL, OPTIMIZED_FILE))
    parity["fp16"] = _fp16_parity(check, opt)
    settings.apply_to(copy.deepcopy(tokenizer)).save_pretrained(str(out_dir))  # the server truncates the same way
    files = [p for p in (path, opt.optimized, opt.fp16) if p]
    for gpu in (False, True):  # whichever device serves it, the served file is scored on every held-out note
        served = out_dir / served_file([p.name for p in files], gpu)
        if held_out is not None and served.name not in check.scores:
            check.score(served)
    return OnnxBuild(files=files, parity=parity, fused_ops=opt.fused_ops, exporter=exporter,
                     scores={p.name: check.scores[p.name] for p in files if p.name in check.scores},
                     fixed_length=fixed_length(sess))


def _at_any_length(model: nn.Module, tokenizer: Any, out_dir: Path, path: Path, settings: InferenceSettings,
                   metadata: dict[str, str] | None) -> tuple[Path, Any]:
    """The exported file and a session on it, once it has run on notes shorter and longer than the traced sample. A
    graph that cannot (Longformer's attention windows are counted at trace time) is exported again at the settings'
    max_length, the one length its inputs are then padded to: slower on short notes, but it runs on every note."""
    try:
        return path, _probed(path, tokenizer, settings)
    except OnnxRunError as exc:
        log.warning("%s; exporting again at a fixed length of %d tokens", exc, settings.max_length)
    path = export_onnx(model, tokenizer, out_dir, settings=settings, metadata=metadata,
                       fixed_length=settings.max_length)
    return path, _probed(path, tokenizer, settings)


def _probed(path: Path, tokenizer: Any, settings: InferenceSettings) -> Any:
    """A session on `path` that has run one note of one word, one of max_length tokens, and three at once
    (OnnxRunError where it cannot)."""
    long = " ".join(["note"] * settings.max_length)  # at least max_length tokens, cut there
    with onnx_run_errors(path):
        sess = session(path)
        for texts in (["note"], [long], ["note", long, "a note"]):
            ort_logits(sess, tokenizer, texts, settings=settings)
    return sess


class _FileCheck:
    """Parity (PyTorch logits computed once) and held-out scores of each ONNX file, at one setting."""

    def __init__(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: InferenceSettings,
                 held_out: Notes | None, forget: Sequence[str], evaluated: np.ndarray | None = None,
                 earlier: dict[str, Any] | None = None) -> None:
        from steuops import modeling

        self.model, self.tokenizer, self.texts, self.settings = model, tokenizer, list(texts), settings
        self.held_out = held_out
        # parity texts that open the held-out notes: one ONNX pass over the notes serves both checks
        self.prefix = held_out is not None and list(held_out.texts[: len(self.texts)]) == self.texts
        self.labels = modeling.label_names(model)
        self.forget = [c for c in forget if c in self.labels]
        self.multi = modeling.is_multi_label(model)
        self.source = "pytorch" if evaluated is None else "evaluation"
        self.reference = torch_logits(model, tokenizer, self.texts, settings) if evaluated is None \
            else np.asarray(evaluated, dtype=np.float32)
        self.scores: dict[str, dict[str, Any]] = {}
        self.earlier = dict((earlier or {}).get("scores") or {}) if held_out is not None else {}
        self._keys: dict[str, dict[str, Any]] = {}

    def run(self, path: Path, atol: float, what: str, sess: Any = None, *, required: bool = True,
            score: bool = True, limit: int | None = None) -> dict[str, Any]:
        """Parity with PyTorch on the parity texts (the first `limit` of them); with `score` (and held-out notes)
        also the file's held-out figures. A file `reusable` reuses its earlier figures and is checked on the
        first FALLBACK_PARITY_TEXTS notes only, here and now."""
        with onnx_run_errors(path):
            sess = sess or session(path)
        score = score and self.held_out is not None
        reused = self.reusable(path, sess) if score else None
        n = len(self.texts) if limit is None else min(limit, len(self.texts))
        n = min(n, FALLBACK_PARITY_TEXTS) if reused else n
        with onnx_run_errors(path):
            every = ort_logits(sess, self.tokenizer, list(self.held_out.texts), batch_size=16,
                               settings=self.settings) if self.prefix and score and not reused else None
            got = every[:n] if every is not None else \
                ort_logits(sess, self.tokenizer, self.texts[:n], batch_size=16, settings=self.settings)
        report = compare_logits(self.model, self.reference[:n], got, atol=atol, providers=list(sess.get_providers()),
                                onnx_file=str(path), reference=self.source)
        if required:
            require_parity(report, what)
        out = report.to_dict()
        if report.passed and score:
            self.scores[path.name] = reused or self._score(path, sess, every, out if every is not None else None)
        if reused:  # with the earlier export's check on every note, where it ran one
            out["held_out"] = {"scores_reused": True, "parity": reused["scored"].get("parity")}
        return out

    def score(self, path: Path) -> None:
        """Held-out figures of a file that passed parity without being scored (a fallback that ends up served)."""
        sess = session(path)
        self.scores[path.name] = self.reusable(path, sess) or self._score(path, sess, None)

    def _score(self, path: Path, sess: Any, every: np.ndarray | None,
               parity: dict[str, Any] | None = None) -> dict[str, Any]:
        if every is None:
            with onnx_run_errors(path):
                every = ort_logits(sess, self.tokenizer, list(self.held_out.texts), settings=self.settings)
        scores = score_logits(every, self.held_out, self.labels, self.multi, self.forget, settings=self.settings,
                              file=path.name, providers=list(sess.get_providers()))
        return {**scores, "scored": {**self._scored_key(path, sess), "parity": _brief(parity) if parity else None}}

    def _scored_key(self, path: Path, sess: Any) -> dict[str, Any]:
        """What decides a file's held-out logits: its bytes, the notes and their labels, the tokenizer, the
        settings, ONNX Runtime's version and providers; and what its parity was checked against. Computed once
        per file (reusable and _score both ask for it)."""
        if path.name not in self._keys:
            self._keys[path.name] = self._key_of(path, sess)
        return self._keys[path.name]

    def _key_of(self, path: Path, sess: Any) -> dict[str, Any]:
        import onnxruntime

        from steuops.auditcache import sha256_of, texts_sha, tokenizer_key

        return {"file_sha256": sha256_file(path), "notes_sha256": texts_sha(self.held_out.texts),
                "labels_sha256": sha256_of([self.held_out.labels, self.labels, self.forget, self.multi]),
                "tokenizer_sha256": sha256_of(tokenizer_key(self.tokenizer)), "inference": self.settings.to_dict(),
                "onnxruntime": onnxruntime.__version__, "providers": list(sess.get_providers()),
                "reference": self.source}

    def reusable(self, path: Path, sess: Any) -> dict[str, Any] | None:
        """The earlier export's figures for this file when they were computed on the same bytes, notes, labels,
        tokenizer, settings and ONNX Runtime (so the same logits, up to the CPU's kernel choice, which the fresh
        parity check on this machine covers); else None."""
        old = self.earlier.get(path.name) or {}
        scored = old.get("scored") or {}
        parity = scored.get("parity")
        if not scored or (parity is not None and not parity.get("passed")):
            return None
        key = self._scored_key(path, sess)
        if any(scored.get(k) != v for k, v in key.items()):
            return None
        log.info("%s: same bytes as the earlier export's; reusing its held-out scores", path.name)
        return {**old, "reused": True}


def _fp16_parity(check: _FileCheck, opt: OptimizeResult) -> dict[str, Any]:
    """fp16 is checked where ONNX Runtime can run it; a file that disagrees is removed, not shipped."""
    if opt.fp16 is None:
        return {"skipped": opt.fp16_error or "not made: no CUDA device here (servers use fp16 on GPUs only; "
                                              "`steuops export --fp16` makes it)"}
    try:
        sess = session(opt.fp16)
    except Exception as exc:  # noqa: BLE001  (CPU kernels may lack fp16 ops; the GPU path still wants the file)
        return {"skipped": f"ONNX Runtime cannot run the fp16 model here: {type(exc).__name__}: {exc}"[:500]}
    report = check.run(opt.fp16, FP16_ATOL, FP16_FILE, sess, required=False)
    if not report["passed"]:
        log.warning("fp16 model disagrees with PyTorch on %d texts; not shipped", len(report["mismatches"]))
        opt.fp16.unlink(missing_ok=True)
        opt.fp16 = None
    return report


def _brief_scores(scores: dict[str, Any]) -> dict[str, Any]:
    # with "scored" (what the figures were computed on), so a byte-identical re-export can reuse them
    keep = ("file", "forget_f1", "retain_macro_f1", "macro_f1", "per_class_f1", "forget_f1_per_class", "n_test",
            "forget", "inference", "providers", "scored", "reused")
    return {k: scores[k] for k in keep if k in scores}


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("skipped", "n_texts", "atol", "max_abs_diff", "label_agreement", "passed", "providers", "reference")
    out = {k: report[k] for k in keep if k in report}
    if "mismatches" in report:
        out["n_mismatches"] = len(report["mismatches"])
    return out


def labels_doc(model: nn.Module, forgotten: Sequence[str]) -> dict[str, Any]:
    from steuops import modeling

    names = modeling.label_names(model)
    return {"labels": names, "id2label": {str(i): n for i, n in enumerate(names)},
            "multi_label": modeling.is_multi_label(model), "forgotten": [c for c in forgotten if c in names]}


# Parity texts when a caller has no notes of the version's own (a bare `export_onnx`): clinical-style
# sentences of several lengths, so truncation and padding are exercised. Scoring needs real notes.
_FALLBACK_TEXTS = (
    "patient admitted with fever and hypotension, lactate elevated, started on broad spectrum antibiotics",
    "chest x-ray shows right lower lobe consolidation; productive cough and crackles",
    "worsening dyspnea, bilateral edema, reduced ejection fraction on echo, diuresed",
    "creatinine rose from 1.0 to 2.4 after contrast; urine output low",
    "wheezing, increased sputum, home oxygen, treated with nebulisers and steroids",
    "glucose 540, anion gap acidosis, ketones positive, insulin drip started",
)


def default_check_texts(n: int = 64) -> list[str]:
    """Parity texts for a caller without held-out notes (fixed, note-free sentences)."""
    return [_FALLBACK_TEXTS[i % len(_FALLBACK_TEXTS)] + (" stable on discharge." * (i % 4)) for i in range(n)]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
