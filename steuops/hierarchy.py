"""Four-level medical concept hierarchies: which words of a class to forget and which to keep.

Hierarchical Dual-Strategy Unlearning (arXiv 2511.19498) removes a class from a BERT-family
classifier without damaging the clinical language every class shares. A hierarchy sorts each
class's vocabulary into four levels, from foundational to target-specific:

- **L1 foundational**: general clinical language shared by every class (patient, admitted, history,
  discharge, vital signs). Preservation-critical: never a forget target.
- **L2 related**: findings shared with other classes (fever, hypotension, tachycardia). Mostly preserved.
- **L3 class-associated**: workup and treatment typical for the class (blood cultures, lactate,
  vasopressors for sepsis). Partly targeted.
- **L4 target-specific**: the class's own names, synonyms, abbreviations and codes (sepsis, septic
  shock, urosepsis, 995.91, A41.9). Fully targeted.

File format (YAML, read with ``yaml.safe_load``)::

    format: steuops.hierarchy/v1
    classes:
      sepsis:
        L4: [sepsis, septic shock, urosepsis, "995.91", "A41.9"]
        L3: [blood cultures, lactate, vasopressors, 're:\\bnorepinephrine\\b']
        L2: [fever, hypotension, tachycardia]
        L1: [patient, admitted, discharge]

Class names are any non-empty string (quote codes such as ``"995.91"``, or YAML reads a number).
A level may be missing or empty. An entry is either

- a **term**: matched case-insensitively on word boundaries ("sepsis" does not match "asepsis");
  several words match across any run of whitespace; punctuation and digits are literal
  ("995.91", "E. coli", "h/o"); or
- a **regular expression** prefixed ``re:``, searched case-insensitively in the note as written
  (``(?-i:...)`` makes a part case-sensitive: ``'re:(?-i:\\bCAP\\b)'`` skips "cap refill").

An entry belongs to one level of a class; the same entry may sit at different levels of different
classes (fever is L2 of sepsis and of pneumonia). Token ids come from terms only: a regular
expression has no fixed spelling to tokenize, so it counts for notes (`note_levels`) but not for
embedding rows (`token_levels`).

Every problem is a ConfigError naming the file and the field (``classes.sepsis.L5``). See
docs/HIERARCHY.md for how the weights below are used and how to build a hierarchy from ICD-10.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from steuops.errors import ConfigError
from steuops.tokens import bare
from steuops.yamlfile import read_yaml

FORMAT = "steuops.hierarchy/v1"
LEVELS = (1, 2, 3, 4)
REGEX_PREFIX = "re:"
BUILTIN_SOURCE = "built-in"
# Forget-loss weight of a note by the highest level it contains (L1 never targets a note).
DEFAULT_LEVEL_WEIGHTS: dict[int, float] = {1: 0.0, 2: 0.25, 3: 0.5, 4: 1.0}
ICD10_COLUMNS = ("chapter", "block", "category", "code", "description")

_DOCS = "see docs/HIERARCHY.md"
_LEVEL_HINT = "levels are L1 (foundational), L2 (related), L3 (class-associated), L4 (target-specific)"
_TOP_KEYS = ("format", "classes")


def _where(name: str, level: int | None = None, index: int | None = None) -> str:
    """A field path such as classes.sepsis.L4[2]; odd class names are quoted so the path stays readable."""
    path = f"classes.{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f"classes[{name!r}]"
    if level is not None:
        path += f".L{level}"
    return path if index is None else f"{path}[{index}]"


def _norm(term: str) -> str:
    """The form terms and notes are compared in: lower case, single spaces."""
    return " ".join(term.lower().split())


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _has_term(text: str, needle: str) -> bool:
    """needle occurs in text (both _norm'ed) with no letter, digit or _ right before or after it."""
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        if (start == 0 or not _is_word_char(text[start - 1])) and (end == len(text) or not _is_word_char(text[end])):
            return True
        start = text.find(needle, start + 1)
    return False


def _compile(entry: str, where: str, source: str) -> re.Pattern[str]:
    pattern = entry[len(REGEX_PREFIX):]
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{source}: {where}: invalid regular expression {entry!r} ({exc})",
                          hint="fix the pattern after 're:' (Python re syntax), or drop the 're:' prefix to match it "
                               "as a plain term") from None
    if compiled.search(""):  # it would match every note and make the level meaningless
        raise ConfigError(f"{source}: {where}: regular expression {entry!r} matches the empty string",
                          hint="make it require at least one character, e.g. 're:\\bfoo\\w*' instead of 're:(foo)?'")
    return compiled


# Function words inside multi-word terms ("dullness to percussion"): every note uses them.
_FUNCTION_WORDS = frozenset({"an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "no", "not", "of", "on",
                             "or", "per", "the", "to", "with", "without"})


def _generic_piece(token: str) -> bool:
    """A piece every note uses: fewer than two letters (digits, punctuation, 'a', '##s') or a function word."""
    core = bare(token)
    return sum(ch.isalpha() for ch in core) < 2 or core.lower() in _FUNCTION_WORDS


@dataclass
class _Level:
    """What one level matches: plain terms (normalised) and compiled regular expressions."""

    terms: list[str] = field(default_factory=list)
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    def found(self, norm_text: str, text: str) -> bool:
        return any(_has_term(norm_text, t) for t in self.terms) or any(p.search(text) for p in self.patterns)


@dataclass
class Hierarchy:
    """Classes -> level (1..4) -> entries. Build with `load`, `from_dict`, `builtin` or `from_icd10`."""

    classes: dict[str, dict[int, list[str]]]
    source: str = "in-memory"
    _levels: dict[int, _Level] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalise to all four levels, copied (YAML aliases share one list between classes), and check
        # every entry once here so that a hierarchy built in code is as safe as one read from a file.
        checked: dict[str, dict[int, list[str]]] = {}
        for name, levels in self.classes.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{self.source}: classes: class name {name!r} is not a non-empty string",
                                  hint='quote class names that YAML reads otherwise: "995.91": ...')
            if not isinstance(levels, Mapping):
                raise ConfigError(f"{self.source}: {_where(name)}: expected level -> entries, got {type(levels).__name__}",
                                  hint=_LEVEL_HINT)
            unknown = [lv for lv in levels if lv not in LEVELS]
            if unknown:
                raise ConfigError(f"{self.source}: {_where(name)}: unknown level {unknown[0]!r}", hint=_LEVEL_HINT)
            checked[name] = {lv: list(levels.get(lv) or []) for lv in LEVELS}
            self._check_class(name, checked[name])
        self.classes = checked

    def _check_class(self, name: str, levels: dict[int, list[str]]) -> None:
        seen: dict[str, int] = {}
        for level, entries in levels.items():
            for i, entry in enumerate(entries):
                where = _where(name, level, i)
                if not isinstance(entry, str):
                    raise ConfigError(f"{self.source}: {where}: entry {entry!r} is a {type(entry).__name__}, not a string",
                                      hint=f'quote it: "{entry}" (YAML reads codes such as 995.91 as numbers)')
                if not entry.strip() or entry.strip() == REGEX_PREFIX:
                    raise ConfigError(f"{self.source}: {where}: empty entry", hint="remove it or write a term")
                if entry.startswith(REGEX_PREFIX):
                    _compile(entry, where, self.source)
                key = entry if entry.startswith(REGEX_PREFIX) else _norm(entry)
                if key in seen:
                    raise ConfigError(f"{self.source}: {where}: {entry!r} is already at L{seen[key]} of class {name!r}",
                                      hint="an entry belongs to one level of a class: keep the one you mean")
                seen[key] = level

    # ---- reading and writing ---------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Hierarchy:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such hierarchy file",
                              hint=f"pass the path of a {FORMAT} YAML file; {_DOCS} (steuops/hierarchies/demo.yaml "
                                   "is an example)")
        data = read_yaml(path, ConfigError, "hierarchy", "check indentation and colons; quote entries containing "
                                                        "': ', '#', ',' or brackets")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "in-memory") -> Hierarchy:
        """The parsed YAML (a mapping with `format` and `classes`) as a Hierarchy; every problem a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the top level must be a mapping with `format` and `classes`, "
                              f"got {type(data).__name__}", hint=_DOCS)
        unknown = [str(k) for k in data if k not in _TOP_KEYS]
        if unknown:
            raise ConfigError(f"{source}: unknown top-level key {unknown[0]!r}",
                              hint=f"allowed: {', '.join(_TOP_KEYS)} (class sections go under `classes:`)")
        if data.get("format") != FORMAT:
            got = "missing" if "format" not in data else f"{data['format']!r}"
            raise ConfigError(f"{source}: format: {got}, expected {FORMAT}", hint=f"put `format: {FORMAT}` first")
        raw = data.get("classes")
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(f"{source}: classes: empty or not a mapping of class name -> levels",
                              hint="add at least one class, e.g.\nclasses:\n  sepsis:\n    L4: [sepsis, septic shock]")
        return cls({name: _parse_levels(name, body, source) for name, body in raw.items()}, source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (levels L4..L1, empty ones left out): `from_dict(h.to_dict())` gives h back."""
        classes = {name: {f"L{lv}": list(levels[lv]) for lv in reversed(LEVELS) if levels[lv]}
                   for name, levels in self.classes.items()}
        return {"format": FORMAT, "classes": classes}

    def for_classes(self, forget: Sequence[str]) -> Hierarchy:
        """The hierarchy of the forget classes only (their L1/L2 is what a forget run must preserve)."""
        if not forget:
            raise ConfigError(f"{self.source}: no class given to take from the hierarchy", hint="name the forget class")
        for name in forget:
            if name not in self.classes:
                raise ConfigError(f"class {name!r} is not in the hierarchy {self.source}",
                                  hint=f"it has: {', '.join(self.classes)}; add a `classes:` section for "
                                       f"{name!r} or pass a file that has it (--hierarchy FILE)")
        return Hierarchy({name: self.classes[name] for name in forget}, self.source)

    # ---- matching --------------------------------------------------------------------------------
    def _matchers(self) -> dict[int, _Level]:
        if self._levels is None:  # compiled once per hierarchy, over all its classes
            levels = {lv: _Level() for lv in LEVELS}
            for name, entries_by_level in self.classes.items():
                for lv, entries in entries_by_level.items():
                    for i, entry in enumerate(entries):
                        if entry.startswith(REGEX_PREFIX):
                            levels[lv].patterns.append(_compile(entry, _where(name, lv, i), self.source))
                        elif _norm(entry) not in levels[lv].terms:
                            levels[lv].terms.append(_norm(entry))
            self._levels = levels
        return self._levels

    def note_levels(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 4) bool: column j says whether note i contains an entry of level L(j+1) of any class."""
        matchers = self._matchers()
        out = np.zeros((len(texts), len(LEVELS)), dtype=bool)
        for i, text in enumerate(texts):
            norm = _norm(text)
            for j, lv in enumerate(LEVELS):
                out[i, j] = matchers[lv].found(norm, text)
        return out

    def token_levels(self, tokenizer: Any) -> dict[int, int]:
        """Word-piece id -> level, from the plain terms (regular expressions have no token ids).

        Each term is tokenized as written and with a leading space (BPE tokenizers such as RoBERTa's
        give a word after a space other ids). An id reached from several levels keeps the LOWEST:
        preservation wins, a piece of a foundational term must never be edited. Special tokens
        ([UNK] included) are left out. Pieces every note uses are level 1 whatever the term: those
        with fewer than two letters (digits, punctuation, 'a', '##s': the pieces of codes such as
        A41.9) and function words ('to' of "dullness to percussion").
        """
        special = set(getattr(tokenizer, "all_special_ids", None) or [])
        out: dict[int, int] = {}
        for levels in self.classes.values():
            for lv, entries in levels.items():
                for term in (e for e in entries if not e.startswith(REGEX_PREFIX)):
                    for text in (term, " " + term):
                        for i in tokenizer(text, add_special_tokens=False)["input_ids"]:
                            if i in special:
                                continue
                            level = 1 if _generic_piece(tokenizer.convert_ids_to_tokens(i)) else lv
                            out[i] = min(out.get(i, level), level)
        return out


def _parse_levels(name: Any, body: Any, source: str) -> dict[int, list[Any]]:
    """One class section of the YAML (L1..L4 -> list) as level -> entries; entries are checked by Hierarchy."""
    label = _where(str(name))
    if not isinstance(name, str):
        raise ConfigError(f"{source}: {label}: class name {name!r} is a {type(name).__name__}, not a string",
                          hint=f'quote it: "{name}": ...')
    if not isinstance(body, Mapping) or not body:
        raise ConfigError(f"{source}: {label}: expected a mapping of levels L1..L4 to lists of terms",
                          hint=f"e.g.\n  {name}:\n    L4: [{name}]\n{_LEVEL_HINT}")
    levels: dict[int, list[Any]] = {}
    for key, entries in body.items():
        match = re.fullmatch(r"L([1-4])", str(key))
        if not match:
            raise ConfigError(f"{source}: {label}.{key}: unknown level", hint=f"{_LEVEL_HINT} (written L1..L4)")
        level = int(match.group(1))
        if entries is not None and not isinstance(entries, list):
            raise ConfigError(f"{source}: {_where(name, level)}: expected a list of terms, got {type(entries).__name__}",
                              hint=f"write L{level}: [term one, term two] (or a '- term' per line)")
        levels[level] = entries or []
    if not any(levels.values()):
        raise ConfigError(f"{source}: {label}: every level is empty", hint="give the class at least its L4 names")
    return levels


# ---- weights -----------------------------------------------------------------------------------------
def note_weights(hierarchy: Hierarchy, texts: Sequence[str], weights: Mapping[int, float] = DEFAULT_LEVEL_WEIGHTS,
                 unmatched: float = 0.5) -> np.ndarray:
    """(n,) float32 forget-loss weight per note: the weight of the highest level among L2..L4 it contains,
    `unmatched` when it contains none (L1 is shared by every class, so it never makes a note a target)."""
    missing = [lv for lv in (2, 3, 4) if lv not in weights]
    if missing:
        raise ConfigError(f"level weights: no weight for L{missing[0]}", hint=f"give L2, L3 and L4, e.g. "
                                                                             f"{DEFAULT_LEVEL_WEIGHTS}")
    levels = hierarchy.note_levels(texts)
    out = np.full(len(texts), unmatched, dtype=np.float32)
    for lv in (2, 3, 4):  # ascending: a higher level overwrites a lower one
        out[levels[:, lv - 1]] = weights[lv]
    return out


def protected(hierarchy: Hierarchy, texts: Sequence[str]) -> np.ndarray:
    """(n,) bool: notes containing an L1 or L2 entry (preservation-critical inputs)."""
    levels = hierarchy.note_levels(texts)
    return levels[:, 0] | levels[:, 1]


# ---- built-in --------------------------------------------------------------------------------------
def builtin() -> Hierarchy:
    """The hierarchy of the demo's six classes, shipped as steuops/hierarchies/demo.yaml."""
    from importlib.resources import files

    text = (files("steuops") / "hierarchies" / "demo.yaml").read_text(encoding="utf-8")
    return Hierarchy.from_dict(yaml.safe_load(text), source=BUILTIN_SOURCE)


AUTO = "auto"  # a method's `hierarchy` option: the built-in one when it has every forget class, else none
NONE = "none"


def resolve(spec: str | None, forget: Sequence[str]) -> Hierarchy | None:
    """The hierarchy a run uses for `forget`: a YAML file's, the built-in one ("auto", when it has every
    forget class), or none ("none" / None)."""
    if spec is None or spec == NONE:
        return None
    if spec == AUTO:
        built = builtin()
        return built.for_classes(forget) if all(c in built.classes for c in forget) else None
    return Hierarchy.load(spec).for_classes(forget)


def highest_level(hierarchy: Hierarchy, texts: Sequence[str]) -> np.ndarray:
    """(n,) int: the highest level (1-4) each note mentions, 0 when it mentions none."""
    levels = hierarchy.note_levels(texts)
    return np.where(levels.any(axis=1), 4 - np.argmax(levels[:, ::-1], axis=1), 0)


# ---- ICD-10 ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _IcdRow:
    chapter: str  # title only: "Certain infectious and parasitic diseases"
    block: str  # title only: "Other bacterial diseases"
    category_code: str  # "A41"
    category: str  # title only: "Other sepsis"
    code: str
    description: str


def _code_key(code: str) -> str:
    """Codes compare without case, spaces or dots: A41.9 == a419."""
    return re.sub(r"[\s.]", "", code).upper()


def _strip_label(text: str, leading: str) -> str:
    """A chapter/block title without its numeral or code range ("I ...", "A30-A49 ...", "... (A00-B99)")."""
    text = re.sub(r"\s*\([A-Z]?\d[\w.\-–]*\)\s*$", "", text.strip())
    return re.sub(leading, "", text).strip()


def _icd_row(row: Any, number: int, source: str) -> _IcdRow:
    if not isinstance(row, Mapping):
        raise ConfigError(f"{source}: row {number} is a {type(row).__name__}, not a mapping",
                          hint=f"each row needs the keys {', '.join(ICD10_COLUMNS)}")
    missing = [c for c in ICD10_COLUMNS if c not in row]
    if missing:
        raise ConfigError(f"{source}: row {number}: missing {', '.join(missing)}",
                          hint=f"each row needs the keys {', '.join(ICD10_COLUMNS)}")
    value = {c: str(row[c] or "").strip() for c in ICD10_COLUMNS}
    category = re.match(r"([A-Z]\d[0-9A-Z](?:\.[0-9A-Z]+)?)\s+(.*)", value["category"])
    return _IcdRow(
        chapter=_strip_label(value["chapter"], r"^(?:(?i:chapter)\s+)?[IVXLC\d]+[.:]?\s+"),
        block=_strip_label(value["block"], r"^[A-Z]\d\d[\w.]*\s*[-–]\s*[A-Z]\d\d[\w.]*\s+"),
        category_code=category.group(1) if category else "",
        category=category.group(2) if category else value["category"],
        code=value["code"],
        description=value["description"],
    )


def from_icd10(rows: Iterable[Mapping[str, Any]], forget_code: str, *, name: str | None = None,
               source: str = "ICD-10 rows") -> Hierarchy:
    """A one-class hierarchy from an ICD-10 style table, by distance in the tree from `forget_code`.

    forget_code a code (A41.9): L4 = that code and its description; L3 = sibling codes of its category,
    their descriptions, the category code and title; L2 = the block title and the block's other
    categories (codes, titles); L1 = the chapter title and the chapter's other block titles.
    forget_code a category (A41): L4 = the category (code, title, all its codes and descriptions);
    L3 = the block's other categories; L2 = the block title and the chapter's other block titles;
    L1 = the chapter title. Rows of other chapters are not used. The class is `name`, else the
    code's description (the category title for a category).
    """
    table = [_icd_row(row, i, source) for i, row in enumerate(rows, 1)]
    key = _code_key(forget_code)
    target = [r for r in table if r.code and _code_key(r.code) == key]
    by_category = not target
    if by_category:
        target = [r for r in table if r.category_code and _code_key(r.category_code) == key]
    if not target:
        known = sorted({r.category_code for r in table if r.category_code} | {r.code for r in table if r.code})
        raise ConfigError(f"{source}: no code or category {forget_code!r}",
                          hint=f"codes and categories there: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")
    t = target[0]
    chapter = [r for r in table if r.chapter == t.chapter]
    block = [r for r in chapter if r.block == t.block]
    others_in_block = [e for r in block if r.category_code != t.category_code for e in (r.category_code, r.category)]
    other_blocks = [r.block for r in chapter if r.block != t.block]
    if by_category:
        levels = {
            4: [t.category_code, t.category, *(e for r in target for e in (r.code, r.description))],
            3: others_in_block,
            2: [t.block, *other_blocks],
            1: [t.chapter],
        }
    else:
        siblings = [r for r in block if r.category_code == t.category_code and _code_key(r.code) != key]
        levels = {
            4: [e for r in target for e in (r.code, r.description)],
            3: [t.category_code, t.category, *(e for r in siblings for e in (r.code, r.description))],
            2: [t.block, *others_in_block],
            1: [t.chapter, *other_blocks],
        }
    label = name or (t.category if by_category else t.description) or forget_code
    return Hierarchy({label: _dedupe(levels)}, source)


def _dedupe(levels: dict[int, list[str]]) -> dict[int, list[str]]:
    """Drop empty and repeated entries; an entry met at several levels stays at the one nearest the target."""
    seen: set[str] = set()
    out: dict[int, list[str]] = {}
    for lv in sorted(levels, reverse=True):
        out[lv] = []
        for entry in levels[lv]:
            if entry and _norm(entry) not in seen:
                seen.add(_norm(entry))
                out[lv].append(entry)
    return out


def read_icd10_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV with a header naming chapter, block, category, code, description (other columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ICD-10 table", hint=f"a CSV with the columns {', '.join(ICD10_COLUMNS)}")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ICD10_COLUMNS if c not in header]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}",
                              hint=f"the first row must name the columns {', '.join(ICD10_COLUMNS)}; "
                                   f"it has: {', '.join(header) or '(nothing)'}")
        reader.fieldnames = header
        return [{c: (row.get(c) or "").strip() for c in ICD10_COLUMNS} for row in reader]
