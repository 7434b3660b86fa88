"""Seeded synthetic discharge summaries over six diagnosis classes (multi-label).

The notes are built to be learnable but not trivially separable: the class name is often absent
(only findings, numbers and treatments point to it), findings overlap between classes (fever,
tachycardia, dyspnea, leukocytosis, a raised creatinine), other classes are mentioned negated
("no evidence of sepsis", "pneumonia ruled out") or as chronic history ("COPD on home inhalers"
without an exacerbation), words are misspelt and a few labels are wrong. Pure Python + numpy:
no pandas unless `to_frame` is called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from steuops.data import Notes, split_indices

if TYPE_CHECKING:
    import pandas as pd

CLASSES = [
    "sepsis",
    "pneumonia",
    "heart failure",
    "acute kidney injury",
    "copd exacerbation",
    "diabetic ketoacidosis",
]
SEPSIS, PNA, HF, AKI, COPD, DKA = CLASSES

# Clinically plausible co-occurrence: P(add other | primary).
_COOCCUR: dict[str, tuple[tuple[str, float], ...]] = {
    SEPSIS: ((PNA, 0.40), (AKI, 0.35)),
    PNA: ((SEPSIS, 0.22), (COPD, 0.15)),
    HF: ((AKI, 0.25), (COPD, 0.10)),
    AKI: ((HF, 0.15), (SEPSIS, 0.15), (DKA, 0.10)),
    COPD: ((PNA, 0.35), (HF, 0.12)),
    DKA: ((AKI, 0.40), (SEPSIS, 0.08)),
}

# How a diagnosis is named when it is named at all: full names, abbreviations, synonyms, misspellings.
_MENTIONS: dict[str, list[str]] = {
    SEPSIS: ["sepsis", "sepsis", "septic shock", "severe sepsis", "urosepsis", "sepis", "sepsis syndrome"],
    PNA: ["pneumonia", "pneumonia", "PNA", "community-acquired pneumonia", "CAP", "pnuemonia", "RLL pneumonia",
          "aspiration pneumonia", "HCAP"],
    HF: ["heart failure", "CHF exacerbation", "acute on chronic systolic heart failure", "ADHF",
         "decompensated CHF", "HFrEF exacerbation", "heart faliure", "acute diastolic heart failure"],
    AKI: ["acute kidney injury", "AKI", "AKI", "acute renal failure", "ARF", "AKI on CKD", "acute kidney injry",
          "prerenal azotemia"],
    COPD: ["COPD exacerbation", "AECOPD", "COPD flare", "acute exacerbation of COPD", "copd exacerbaton",
           "COPD exacerbation"],
    DKA: ["diabetic ketoacidosis", "DKA", "DKA", "diabetic keto-acidosis", "diabetic ketoacidossis",
          "euglycemic DKA"],
}

# Findings pointing at a class without naming it. {x} fields come from the note's physiology.
_FINDINGS: dict[str, list[str]] = {
    SEPSIS: [
        "Lactate was {lac} mmol/L and she met SIRS criteria on arrival.",
        "Blood cultures grew {org} in 2 of 2 bottles.",
        "Hypotensive to {sbp}/{dbp} despite 30 mL/kg of IV fluids.",
        "Required norepinephrine for {days} days in the ICU.",
        "Started on broad-spectrum antibiotics with vancomycin and piperacillin-tazobactam.",
        "Source was felt to be urinary given a positive UA and UTI symptoms.",
        "Mentating poorly with rigors at home and a lactate of {lac}.",
        "qSOFA was 2 with altered mental status and hypotension.",
    ],
    PNA: [
        "CXR showed a right lower lobe consolidation.",
        "Reports productive cough with purulent yellow sputum for {days} days.",
        "Crackles and egophony at the left base on exam.",
        "Treated with ceftriaxone and azithromycin.",
        "Chest CT demonstrated a new infiltrate in the lingula.",
        "Sputum culture grew Streptococcus pneumoniae.",
        "Pleuritic chest pain and cough, with a new opacity on imaging.",
        "Legionella urinary antigen negative; treated for a lobar process.",
    ],
    HF: [
        "BNP was {bnp} on admission.",
        "Bilateral 3+ pitting edema to the knees with JVD to the angle of the jaw.",
        "Reports orthopnea, now sleeping on 4 pillows, and PND.",
        "Echo showed an EF of {ef}% with global hypokinesis.",
        "Diuresed with IV furosemide 80 mg BID, net negative {net} L.",
        "CXR with pulmonary vascular congestion and small bilateral effusions.",
        "Weight up {wt} lbs from dry weight after dietary indiscretion.",
        "S3 gallop on auscultation; started on metoprolol succinate and lisinopril at discharge.",
    ],
    AKI: [
        "Creatinine rose from a baseline of {cr0} to {cr}.",
        "Urine output fell to under 0.5 mL/kg/h for 12 hours.",
        "FENa was under 1%, suggesting a prerenal process.",
        "Renal ultrasound showed no hydronephrosis.",
        "Nephrotoxins were held, including NSAIDs and lisinopril.",
        "Cr peaked at {cr} and improved with IV fluids to {cr0}.",
        "Nephrology was consulted for the rising creatinine; no indication for dialysis.",
        "Muddy brown casts on urine microscopy, consistent with ATN.",
    ],
    COPD: [
        "Diffuse expiratory wheezing with a prolonged expiratory phase.",
        "Increased sputum production and dyspnea over {days} days after a viral illness.",
        "Treated with DuoNebs q4h and prednisone 40 mg for 5 days.",
        "ABG: pH {ph} / pCO2 {pco2}, requiring BiPAP overnight.",
        "Normally on 2L home O2, now requiring {o2}L to keep sats above 88%.",
        "Started on azithromycin and a steroid taper for the flare.",
        "Pursed-lip breathing and accessory muscle use on arrival.",
    ],
    DKA: [
        "Glucose was {glu} with an anion gap of {ag} and bicarbonate of {hco3}.",
        "Serum beta-hydroxybutyrate was markedly elevated and urine ketones were large.",
        "Started on an insulin drip per protocol; the gap closed after {days} days.",
        "Reports polyuria, polydipsia and vomiting after missing insulin doses.",
        "Kussmaul respirations with a fruity odor on the breath.",
        "VBG pH {ph}; potassium repleted while on the insulin infusion.",
        "Transitioned to subcutaneous glargine once the anion gap closed.",
    ],
}

# Findings shared between classes, stated when the note's physiology shows them (so they overlap).
_SHARED: list[tuple[str, Callable[[dict], bool]]] = [
    ("Febrile to {t} C on arrival.", lambda v: v["t"] >= 38.0),
    ("Tachycardic to {hr} on presentation.", lambda v: v["hr"] > 100),
    ("Complained of worsening shortness of breath and dyspnea on exertion.", lambda v: v["rr"] > 21),
    ("Leukocytosis with a WBC of {wbc}.", lambda v: v["wbc"] > 11.5),
    ("Creatinine was elevated at {cr}.", lambda v: v["cr"] >= 1.4),
    ("Hypoxic to {spo2}% on room air.", lambda v: v["spo2"] < 93),
    ("Hypotensive to {sbp}/{dbp}.", lambda v: v["sbp"] < 97),
    ("Generalized weakness and poor oral intake for several days.", lambda v: True),
    ("Nausea and vomiting with abdominal pain.", lambda v: v["hco3"] < 18 or v["cr"] >= 1.4),
    ("Received IV fluid boluses in the ED.", lambda v: v["sbp"] < 97 or v["glu"] > 300 or v["cr"] >= 1.4),
]

# Negated or ruled-out mentions of a class the note does NOT carry.
_NEGATIONS: dict[str, list[str]] = {
    SEPSIS: ["No evidence of sepsis.", "Sepsis was ruled out; cultures negative.", "Did not meet sepsis criteria.",
             "Lactate normal, low concern for septic shock."],
    PNA: ["Pneumonia ruled out.", "CXR without infiltrate or consolidation.", "No evidence of pneumonia on CT.",
          "Antibiotics stopped as PNA was felt unlikely."],
    HF: ["BNP within normal limits, not consistent with a CHF exacerbation.", "No signs of volume overload.",
         "Echo with normal EF; heart failure unlikely.", "Denies orthopnea or leg swelling."],
    AKI: ["Creatinine at baseline, no AKI.", "Renal function remained stable throughout.",
          "No acute kidney injury.", "Cr stable at {cr0}."],
    COPD: ["No wheezing; not felt to be a COPD exacerbation.", "Lungs clear to auscultation bilaterally.",
           "COPD stable, no flare.", "No increase in sputum or inhaler use."],
    DKA: ["Anion gap normal; DKA excluded.", "Glucose mildly elevated without ketosis, not DKA.",
          "No evidence of diabetic ketoacidosis.", "Ketones negative."],
}

# Chronic history that resembles a class without being its acute diagnosis.
_HISTORY: dict[str, list[str]] = {
    SEPSIS: ["prior admission for urosepsis in 2019", "recurrent UTIs"],
    PNA: ["remote pneumonia", "prior aspiration events"],
    HF: ["chronic systolic CHF (EF 35%)", "HFpEF", "CHF on home furosemide"],
    AKI: ["CKD stage 3 with baseline Cr 1.6", "CKD", "solitary kidney"],
    COPD: ["COPD on home inhalers", "COPD (GOLD 3)", "50 pack-year smoking history with emphysema"],
    DKA: ["type 1 diabetes", "insulin-dependent diabetes", "type 2 diabetes on metformin"],
}
_OTHER_HISTORY = ["hypertension", "hyperlipidemia", "atrial fibrillation on apixaban", "GERD", "osteoarthritis",
                  "hypothyroidism", "depression", "BPH", "obesity", "coronary artery disease s/p PCI", "gout"]

_COMPLAINTS: dict[str, list[str]] = {
    SEPSIS: ["fever and confusion", "fevers and rigors", "altered mental status", "low blood pressure"],
    PNA: ["cough and fever", "productive cough", "pleuritic chest pain"],
    HF: ["shortness of breath", "leg swelling", "weight gain and dyspnea"],
    AKI: ["decreased urine output", "abnormal labs", "weakness"],
    COPD: ["shortness of breath", "wheezing", "worsening dyspnea"],
    DKA: ["nausea and vomiting", "abdominal pain", "hyperglycemia"],
}

_TREATMENT_ONLY: dict[str, list[str]] = {
    SEPSIS: ["completed 7 days of IV antibiotics; cultures cleared", "weaned off pressors; follow up cultures"],
    PNA: ["complete a 5 day course of oral antibiotics for the lung infection", "repeat chest imaging in 6 weeks"],
    HF: ["continue furosemide 40 mg daily, daily weights, 2 g sodium diet", "GDMT optimized; cardiology follow up"],
    AKI: ["recheck BMP in 1 week; avoid NSAIDs", "renal function improving; hold ACE inhibitor"],
    COPD: ["finish the steroid taper; continue tiotropium", "pulmonary rehab referral"],
    DKA: ["insulin teaching completed; endocrine follow up", "continue basal-bolus insulin"],
}

_FILLER = [
    "Lives at home with family and is independent in ADLs.",
    "Physical therapy evaluated and recommended home with services.",
    "Code status was confirmed as full code.",
    "Home medications were reconciled on admission.",
    "Social work met with the family regarding discharge planning.",
    "Tolerated a regular diet prior to discharge.",
    "Hemoglobin was stable throughout the admission.",
    "Ambulating independently at the time of discharge.",
    "DVT prophylaxis with subcutaneous heparin.",
    "Patient was seen and examined on the day of discharge.",
]

_MEDS = ["aspirin 81 mg", "atorvastatin 40 mg", "metoprolol tartrate 25 mg BID", "lisinopril 10 mg",
         "amlodipine 5 mg", "omeprazole 20 mg", "levothyroxine 50 mcg", "sertraline 50 mg", "apixaban 5 mg BID"]
_CLASS_MEDS: dict[str, list[str]] = {
    HF: ["furosemide 40 mg", "carvedilol 12.5 mg BID", "spironolactone 25 mg"],
    COPD: ["tiotropium", "albuterol inhaler PRN", "fluticasone-salmeterol"],
    DKA: ["insulin glargine", "insulin lispro sliding scale"],
}
_ORGANISMS = ["E. coli", "Klebsiella", "MSSA", "Streptococcus pneumoniae", "Proteus", "gram negative rods"]
_TYPOS = {"patient": "pateint", "received": "recieved", "creatinine": "creatnine", "shortness": "shortnes",
          "abdominal": "abdominl", "bilateral": "bilaterl", "antibiotics": "antibiotcs", "admission": "admision"}


@dataclass(frozen=True)
class _Style:
    min_sentences: int
    max_sentences: int
    mention_rate: float
    negation_rate: float
    stray_rate: float
    typo_rate: float


@dataclass
class _Patient:
    pid: str
    age: int
    sex: str
    history: list[str]
    chronic: list[str] = field(default_factory=list)  # classes whose chronic form the patient carries


def generate(
    n: int = 2000,
    seed: int = 0,
    *,
    min_sentences: int = 5,
    max_sentences: int = 10,
    label_noise: float = 0.03,
    mention_rate: float = 0.5,
    negation_rate: float = 0.5,
    stray_rate: float = 0.1,
    typo_rate: float = 0.02,
    notes_per_patient: float = 1.6,
) -> Notes:
    """`n` seeded discharge summaries. `min/max_sentences` bound the hospital-course sentences;
    `mention_rate` is the chance a true diagnosis is named in the plan, `negation_rate` the chance of a
    negated other diagnosis there, `stray_rate` the chance per absent class of one of its findings (overlap);
    `notes_per_patient` is the mean number of notes per patient."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= min_sentences <= max_sentences:
        raise ValueError(f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}")
    style = _Style(min_sentences, max_sentences, mention_rate, negation_rate, stray_rate, typo_rate)
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 1])  # separate stream: the texts do not depend on label_noise
    texts: list[str] = []
    labels: list[list[str]] = []
    note_ids: list[str] = []
    patient_ids: list[str] = []
    patients: list[_Patient] = []
    last_primary: dict[str, str] = {}
    while len(texts) < n:
        patient = _new_patient(rng, len(patients) + 1)
        patients.append(patient)
        visits = 1 + int(rng.poisson(max(notes_per_patient - 1.0, 0.0)))
        for _ in range(min(visits, n - len(texts))):
            # Readmissions tend to repeat the diagnosis.
            previous = last_primary.get(patient.pid)
            primary = previous if previous and rng.random() < 0.4 else str(rng.choice(CLASSES))
            last_primary[patient.pid] = primary
            truth = _label_set(rng, primary)
            texts.append(_note(rng, patient, truth, style))
            labels.append(_noisy(noise_rng, truth, label_noise))
            note_ids.append(f"N{len(texts):06d}")
            patient_ids.append(patient.pid)
    meta = {"source": "steuops.demo.notes", "seed": seed, "classes": list(CLASSES)}
    return Notes(texts=texts, labels=labels, note_ids=note_ids, patient_ids=patient_ids, meta=meta)


def to_frame(notes: Notes, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """One row per note: note_id, patient_id, text, labels (list[str]), split ("train"/"test")."""
    import pandas as pd

    _, test_idx = split_indices(notes, test_fraction=test_fraction, seed=seed)
    split = np.full(len(notes), "train", dtype=object)
    split[test_idx] = "test"
    ids = notes.note_ids or [f"N{i + 1:06d}" for i in range(len(notes))]
    return pd.DataFrame(
        {
            "note_id": ids,
            "patient_id": notes.patient_ids or ids,
            "text": list(notes.texts),
            "labels": [list(x) for x in notes.labels],
            "split": list(split),
        }
    )


def _new_patient(rng: np.random.Generator, number: int) -> _Patient:
    chronic = [c for c in CLASSES if rng.random() < 0.12]
    history = [str(rng.choice(_HISTORY[c])) for c in chronic]
    history += list(rng.choice(_OTHER_HISTORY, size=int(rng.integers(1, 4)), replace=False))
    return _Patient(f"P{number:05d}", int(rng.integers(24, 92)), str(rng.choice(["man", "woman"])), history, chronic)


def _label_set(rng: np.random.Generator, primary: str) -> list[str]:
    chosen = {primary}
    for other, p in _COOCCUR[primary]:
        if rng.random() < p:
            chosen.add(other)
    return [c for c in CLASSES if c in chosen]


def _noisy(rng: np.random.Generator, truth: list[str], rate: float) -> list[str]:
    """Label noise that never leaves a note unlabelled: drop one of several labels, or swap/add one."""
    if rng.random() >= rate:
        return list(truth)
    labels = set(truth)
    absent = [c for c in CLASSES if c not in labels]
    roll = rng.random()
    if roll < 0.35 and len(labels) > 1:
        labels.discard(str(rng.choice(sorted(labels))))
    elif roll < 0.7 and absent:
        labels.add(str(rng.choice(absent)))
    elif absent:
        labels.discard(str(rng.choice(sorted(labels))))
        labels.add(str(rng.choice(absent)))
    return [c for c in CLASSES if c in labels]


def _physiology(rng: np.random.Generator, truth: Sequence[str], patient: _Patient) -> dict[str, object]:
    """Vitals and labs, shifted by the true diagnoses with overlapping ranges."""
    has = set(truth)

    def pick(cond: bool, sick: tuple[float, float], well: tuple[float, float], digits: int = 0) -> float | int:
        lo, hi = sick if cond else well
        value = round(float(rng.uniform(lo, hi)), digits)
        return int(value) if digits == 0 else value

    infected = bool(has & {SEPSIS, PNA})
    cr0 = round(float(rng.uniform(1.4, 1.9) if AKI in patient.chronic else rng.uniform(0.7, 1.2)), 1)
    cr = round(cr0 * float(rng.uniform(1.8, 3.5)), 1) if AKI in has else round(cr0 * float(rng.uniform(0.9, 1.3)), 1)
    return {
        "t": pick(infected and rng.random() < 0.8, (38.1, 39.9), (36.4, 37.9), 1),
        "hr": pick(bool(has & {SEPSIS, DKA, COPD}) or rng.random() < 0.2, (102, 138), (64, 104)),
        "sbp": pick((SEPSIS in has and rng.random() < 0.7) or rng.random() < 0.06, (72, 96), (98, 162)),
        "dbp": pick(SEPSIS in has, (38, 58), (54, 92)),
        "rr": pick(bool(has & {COPD, PNA, HF, DKA}), (22, 32), (14, 21)),
        "spo2": pick(bool(has & {COPD, PNA, HF}), (82, 92), (93, 99)),
        "wbc": pick(infected or (DKA in has and rng.random() < 0.5), (12.5, 24.0), (4.5, 11.8), 1),
        "cr0": cr0,
        "cr": cr,
        "bnp": pick((HF in has and rng.random() < 0.85) or (bool(has & {AKI, COPD}) and rng.random() < 0.2),
                    (620, 3900), (15, 480)),
        "glu": pick(DKA in has or (DKA in patient.chronic and rng.random() < 0.3), (340, 720), (85, 260)),
        "ag": pick(DKA in has or (SEPSIS in has and rng.random() < 0.3), (19, 32), (8, 15)),
        "hco3": pick(DKA in has, (5, 15), (19, 29)),
        "lac": pick((SEPSIS in has and rng.random() < 0.85) or rng.random() < 0.1, (2.3, 6.5), (0.7, 2.0), 1),
        "ph": pick(bool(has & {DKA, COPD}), (7.05, 7.32), (7.35, 7.45), 2),
        "pco2": pick(COPD in has, (52, 78), (33, 46)),
        "ef": int(rng.choice([20, 25, 30, 35, 40, 55])),
        "net": round(float(rng.uniform(2.0, 7.5)), 1),
        "wt": int(rng.integers(4, 15)),
        "o2": int(rng.integers(3, 7)),
        "days": int(rng.integers(2, 6)),
        "org": str(rng.choice(_ORGANISMS)),
    }


def _note(rng: np.random.Generator, patient: _Patient, truth: list[str], style: _Style) -> str:
    v = _physiology(rng, truth, patient)
    absent = [c for c in CLASSES if c not in truth]
    primary = truth[int(rng.integers(len(truth)))]
    cc = (_mention(rng, primary) if rng.random() < 0.25 else str(rng.choice(_COMPLAINTS[primary])))

    body = _course(rng, v, truth, absent, style)
    meds = list(rng.choice(_MEDS, size=int(rng.integers(2, 5)), replace=False))
    for c in [c for c in CLASSES if c in patient.chronic or c in truth]:  # fixed order: reproducible under any PYTHONHASHSEED
        if c in _CLASS_MEDS and rng.random() < 0.6:
            meds.append(str(rng.choice(_CLASS_MEDS[c])))
    plan = _plan(rng, truth, absent, style)
    sections = [
        f"Chief complaint: {cc}.",
        f"HPI: {patient.age}-year-old {patient.sex} with {', '.join(patient.history)} presenting with "
        f"{rng.choice(_COMPLAINTS[primary])}. " + " ".join(body),
        f"Medications: {', '.join(meds)}.",
        "Vitals: T {t} C, HR {hr}, BP {sbp}/{dbp}, RR {rr}, SpO2 {spo2}% RA.",
        _labs(rng),
        "Assessment and plan: " + " ".join(plan),
    ]
    text = "\n".join(sections).format(**v)
    return _misspell(rng, text, style.typo_rate)


def _course(rng: np.random.Generator, v: dict, truth: list[str], absent: list[str], style: _Style) -> list[str]:
    """Hospital-course sentences: findings for each true class, shared findings, confusers and filler."""
    count = int(rng.integers(style.min_sentences, style.max_sentences + 1))
    out: list[str] = []
    for c in truth:
        # Some diagnoses leave little trace in the narrative (hard cases).
        k = int(rng.choice([0, 1, 2, 3], p=[0.12, 0.45, 0.30, 0.13]))
        out += list(rng.choice(_FINDINGS[c], size=k, replace=False))
    for sentence, shows in _SHARED:
        if shows(v) and rng.random() < 0.35:
            out.append(sentence)
    for c in absent:
        if rng.random() < style.negation_rate / 3:
            out.append(str(rng.choice(_NEGATIONS[c])))
        elif rng.random() < style.stray_rate:  # a stray finding of an absent class: overlap and noise
            out.append(str(rng.choice(_FINDINGS[c])))
    if len(out) < count:
        need = min(count - len(out), len(_FILLER))
        out += [str(x) for x in rng.choice(_FILLER, size=need, replace=False)]
    rng.shuffle(out)
    return out


def _plan(rng: np.random.Generator, truth: list[str], absent: list[str], style: _Style) -> list[str]:
    plan = []
    for c in truth:
        if rng.random() < style.mention_rate:
            plan.append(f"# {_mention(rng, c)}: {rng.choice(_TREATMENT_ONLY[c])}.")
        elif rng.random() < 0.7:  # otherwise the plan leaves this diagnosis implicit
            step = str(rng.choice(_TREATMENT_ONLY[c]))
            plan.append(f"# {step[0].upper()}{step[1:]}.")
    for c in absent:  # plans overlap: antibiotics, fluids and diuretics are given for several diagnoses
        if rng.random() < style.stray_rate / 2:
            plan.append(f"# {rng.choice(_TREATMENT_ONLY[c])}.")
    if absent and rng.random() < style.negation_rate:
        plan.append(str(rng.choice(_NEGATIONS[str(rng.choice(absent))])))
    return plan


def _labs(rng: np.random.Generator) -> str:
    items = ["WBC {wbc}", "Cr {cr}", "BNP {bnp}", "glucose {glu}", "AG {ag}", "HCO3 {hco3}", "lactate {lac}",
             "pH {ph}"]
    keep = sorted(rng.choice(len(items), size=int(rng.integers(4, len(items) + 1)), replace=False))
    return "Labs: " + ", ".join(items[i] for i in keep) + "."


def _mention(rng: np.random.Generator, c: str) -> str:
    return str(rng.choice(_MENTIONS[c]))


def _misspell(rng: np.random.Generator, text: str, rate: float) -> str:
    """Common clinical misspellings plus random adjacent-letter swaps in long words."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if rng.random() >= rate:
            continue
        lower = word.lower()
        if lower in _TYPOS:
            words[i] = _TYPOS[lower]
        elif len(word) >= 6 and word.isalpha():
            j = int(rng.integers(1, len(word) - 2))
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)
