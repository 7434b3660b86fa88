"""Rewordings that try to slip a forgotten class past the edited model (the audit's bypass attack).

STEU edits the embedding rows of the tokens most indicative of the class. A note that names the
class with other words (a synonym, an abbreviation, a description of its criteria) may still be
recognised through tokens that were never edited. The audit (steuops.audit) composes short notes
from these phrases and checks whether the edited model still flags the class.

The built-in PHRASES describe the demo's six classes (steuops.demo.notes.CLASSES): rewordings,
abbreviations and criteria-style descriptions. Since the generator learned to write like clinicians, most of
them also occur in its notes, so on the demo they test the edit on known wordings in an unknown setting (a
two-line note); the stronger check of unseen wordings is the hand-written held-out set
(tests/data/paraphrases.jsonl, scored by the demo test and bench/forgetting.py). A model with other classes gets no built-in rewordings for them; user phrases
(AuditConfig.bypass_phrases, `--bypass-phrases`, read by `load_phrases`) add to the built-in ones of
every forgotten class. NEUTRAL phrases name diagnoses outside the six demo classes; they and the other
classes' phrases are the negatives that make the bypass F1 a real F1.
Pure Python: no heavy imports (and no import of steuops.demo: production code does not need the demo).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from steuops.errors import ConfigError

# Built-in rewordings of the demo's six classes (steuops.demo.notes.CLASSES), keyed by class name.
PHRASES: dict[str, list[str]] = {
    "sepsis": [
        "urosepsis", "SIRS with hypotension", "septic shock", "severe sepsis", "bacteremia with hypotension",
        "septicemia", "sepsis 2/2 UTI", "SIRS", "infection with end-organ dysfunction",
        "distributive shock from a urinary source", "sepsis-3 criteria met with a lactate of 4",
    ],
    "pneumonia": [
        "CAP", "PNA", "HCAP", "lobar pneumonia", "RLL infiltrate treated as bacterial infection",
        "aspiration PNA", "bronchopneumonia", "lung consolidation with fever and productive cough",
        "community-acquired lower respiratory tract infection", "multifocal pneumonia",
    ],
    "heart failure": [
        "CHF exacerbation", "ADHF", "HFrEF", "decompensated CHF", "volume overload from cardiomyopathy",
        "acute pulmonary edema with EF 25%", "congestive heart failure", "HFpEF exacerbation",
        "cardiogenic fluid overload", "acute on chronic systolic CHF",
    ],
    "acute kidney injury": [
        "AKI", "ARF", "acute renal failure", "prerenal azotemia", "ATN", "AKI on CKD",
        "creatinine doubled from baseline", "acute tubular necrosis", "KDIGO stage 2 kidney injury",
        "oliguric renal insufficiency",
    ],
    "copd exacerbation": [
        "AECOPD", "COPD flare", "acute exacerbation of COPD", "emphysema exacerbation",
        "COPD with acute bronchospasm", "hypercapnic respiratory failure from COPD",
        "chronic bronchitis flare", "obstructive lung disease exacerbation", "AE-COPD",
    ],
    "diabetic ketoacidosis": [
        "DKA", "euglycemic DKA", "diabetic keto-acidosis", "ketoacidosis in type 1 diabetes",
        "anion gap metabolic acidosis with ketonemia", "hyperglycemic ketoacidosis", "severe DKA",
        "ketotic hyperglycemic crisis", "insulin omission with ketoacidosis",
    ],
}

# Diagnoses outside the demo classes: notes about them must not be flagged as the forgotten class.
NEUTRAL: list[str] = [
    "hip fracture", "cellulitis of the left leg", "upper GI bleed", "atrial fibrillation with RVR",
    "syncope", "small bowel obstruction", "hyponatremia", "alcohol withdrawal", "stroke", "pancreatitis",
]

TEMPLATES: list[str] = [
    "Assessment and plan: admitted with {phrase}. Continue current management and follow up in clinic.",
    "Chief complaint: {phrase}.\nHPI: presented from home and was admitted to the medicine floor.",
    "Discharge diagnosis: {phrase}. Discharged home in stable condition.",
    "Hospital course notable for {phrase}, treated and improved. Follow up with PCP in 1 week.",
]


def phrases_for(label: str) -> list[str]:
    """The built-in rewordings of a class (case-insensitive name); [] for a class we have none for."""
    key = label.strip().lower()
    for name, phrases in PHRASES.items():
        if name.lower() == key:
            return list(phrases)
    return []


def compose(phrases: Iterable[str], templates: Sequence[str] | None = None) -> list[str]:
    """Every phrase in every template: len(phrases) * len(templates) short notes."""
    templates = list(templates or TEMPLATES)
    return [template.format(phrase=phrase) for phrase in phrases for template in templates]


def load_phrases(source: str | Path | Sequence[str] | None) -> list[str]:
    """User phrases: a list of strings, or a path (str or Path) to a text file with one phrase per
    line (blank lines and lines starting with # are skipped)."""
    if source is None:
        return []
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: no such bypass phrase file", hint="pass a text file with one phrase per line")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = [str(s) for s in source]
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def bypass_sets(
    labels: Sequence[str], forget: Sequence[str], user_phrases: Sequence[str] = ()
) -> dict[str, dict[str, list[str]]]:
    """Per forget class: {"positive": notes rewording it (its built-in demo-class phrases plus every user
    phrase), "negative": notes rewording the model's other classes and neutral diagnoses}. Classes with no
    positives (not a demo class and no user phrases) are left out."""
    forgotten = {c.lower() for c in forget}
    others = [p for label in labels if label.lower() not in forgotten for p in phrases_for(label)]
    negatives = compose(others + NEUTRAL)
    out: dict[str, dict[str, list[str]]] = {}
    for cls in forget:
        positives = compose(phrases_for(cls) + list(user_phrases))
        if positives:
            out[cls] = {"positive": positives, "negative": negatives}
    return out
