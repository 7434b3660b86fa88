"""Seeded synthetic discharge summaries over six diagnosis classes (multi-label).

How a note is composed. Each class has a phrase bank written as slot grammars: a template such as
``"<s_cx> [grew|returned|speciated to] <s_org>[ in 2/2 bottles|]."`` is expanded by picking one
alternative per ``<slot>`` (a named list, itself made of templates) and per inline ``[a|b]`` choice, and
``{key}`` takes a number from the note's vitals and labs (drawn per note, shifted by its true diagnoses
with overlapping ranges). So the same fact is said in hundreds of ways: criteria, organisms, sources,
drugs and their abbreviations, exam findings, numbers, terse sign-out fragments. A note picks a style
(discharge summary, brief hospital course by problem, ED sign-out, assessment/plan only) and is built from:
a one-liner (age, sex, history with chronic look-alikes such as "COPD on 2L home O2" or "CKD 3b", the
complaint); narrative sentences (findings of each true class, findings shared between classes when the
physiology shows them - fever, tachycardia, hypoxia, a raised creatinine - negated or ruled-out other
diagnoses, a stray finding of an absent class, filler); optional vitals, labs and medication lines; and
last an assessment and plan with one item per diagnosis, named by one of many names or left unnamed
behind a problem heading ("Hypotension", "AG metabolic acidosis"). The plan comes last so the end of a
note (what a classifier that truncates the start keeps) usually carries the diagnosis. Words are
misspelt at `typo_rate` and a few labels are wrong (`label_noise`). Pure Python + numpy: no pandas
unless `to_frame` is called.
"""

from __future__ import annotations

import math
import re
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
_KEY = {SEPSIS: "s", PNA: "p", HF: "h", AKI: "k", COPD: "c", DKA: "d"}  # slot-name prefix of each class

# Clinically plausible co-occurrence: P(add other | primary).
_COOCCUR: dict[str, tuple[tuple[str, float], ...]] = {
    SEPSIS: ((PNA, 0.40), (AKI, 0.35)),
    PNA: ((SEPSIS, 0.22), (COPD, 0.15)),
    HF: ((AKI, 0.25), (COPD, 0.10)),
    AKI: ((HF, 0.15), (SEPSIS, 0.15), (DKA, 0.10)),
    COPD: ((PNA, 0.35), (HF, 0.12)),
    DKA: ((AKI, 0.40), (SEPSIS, 0.08)),
}

# ---- phrase banks --------------------------------------------------------------------------------
# Slot grammar: <name> expands one alternative of _SLOTS[name]; [a|b|] one inline alternative (may be
# empty); {key} a value of the note (see _VALUES). Class slots ("s_...", "find:s", ...) form the class's
# phrase bank; "g_..." slots are shared by all classes.
_SLOTS: dict[str, list[str]] = {
    # ---- sepsis -----------------------------------------------------------------------------------
    "ment:s": [
        "sepsis", "septic shock", "severe sepsis", "urosepsis", "sepsis 2/2 <s_src_dx>", "septicemia",
        "septic shock from a <s_src> source", "sepsis secondary to <s_src_dx>", "sepsis with hypotension",
        "gram negative sepsis", "sepsis due to <s_src_dx>", "<s_org> sepsis", "sepsis, present on admission",
        "septic shock requiring pressors", "sepsis with end-organ dysfunction", "sepsis from a <s_src> source",
    ],
    "s_src": ["urinary", "pulmonary", "biliary", "abdominal", "skin/soft tissue", "line", "GU", "respiratory",
              "intra-abdominal", "urinary tract", "catheter-related", "soft tissue"],
    "s_src_dx": ["UTI", "pyelonephritis", "cholangitis", "cellulitis", "line infection", "pyelo", "CLABSI",
                 "an infected obstructing stone", "a diverticular abscess", "an infected sacral ulcer",
                 "a complicated UTI", "ascending cholangitis", "a PICC line infection", "perforated appendicitis"],
    "s_org": ["E. coli", "Klebsiella pneumoniae", "MSSA", "MRSA", "Proteus mirabilis", "Pseudomonas",
              "ESBL E. coli", "Enterococcus faecalis", "gram negative rods", "GPCs in clusters",
              "Strep pyogenes", "Bacteroides fragilis", "Enterobacter cloacae", "Serratia", "GNRs",
              "Klebsiella", "pan-sensitive E coli", "coag-negative staph", "Staph aureus", "Citrobacter"],
    "s_press": ["norepinephrine", "levophed", "vasopressin", "norepi", "phenylephrine", "neo", "pressors",
                "vasopressors", "a norepinephrine drip", "levo", "norepinephrine plus vasopressin",
                "peripheral levophed", "low-dose norepi", "pressor support"],
    "s_abx": ["vancomycin and piperacillin-tazobactam", "vanc/zosyn", "vancomycin and cefepime", "vanc/cefepime",
              "meropenem", "cefepime and metronidazole", "zosyn", "pip-tazo", "vancomycin plus meropenem",
              "vanc + cefepime + flagyl", "broad-spectrum antibiotics", "empiric broad spectrum abx",
              "vanco/pip-tazo", "aztreonam and vancomycin", "ertapenem", "vanc/mero"],
    "s_narrow": ["ceftriaxone", "cefazolin", "ciprofloxacin", "IV ertapenem via PICC", "nafcillin", "ampicillin",
                 "oral cephalexin", "Bactrim", "cefpodoxime", "daptomycin", "PO levofloxacin", "amox-clav"],
    "s_fluid": ["{mlkg} mL/kg of IVF", "a {mlkg} cc/kg bolus", "{fluid_l} L of LR", "{fluid_l} L NS",
                "{mlkg} mL/kg crystalloid", "{fluid_l}L of lactated ringers", "aggressive IVF", "{fluid_l} liters of fluid"],
    "s_crit": ["Met SIRS criteria", "qSOFA was 2", "Met 3/4 SIRS criteria", "qSOFA of 3", "Met Sepsis-3 criteria",
               "SIRS positive", "SOFA rose by {sofa} points", "Met 2 of 4 SIRS criteria", "qSOFA 2/3",
               "Positive SIRS screen"],
    "s_cx": ["Blood cultures", "BCx", "Blood cx", "Both sets of blood cultures", "Admission cultures",
             "Blood cultures x2", "2/2 blood culture bottles", "BCx from the ED"],
    "s_evid": ["a positive UA with pyuria", "a UA with >50 WBC and nitrites", "CT showing perinephric stranding",
               "RUQ US with a dilated CBD", "erythema and purulence at the PICC site", "dysuria and CVA tenderness",
               "CT abd with a perforated appendix", "a foul-smelling foley", "cloudy urine and flank pain",
               "spreading erythema of the leg", "a pericholecystic fluid collection", "a positive urine culture"],
    "s_control": ["IR drainage of the abscess", "ERCP with stent placement", "removal of the infected line",
                  "I&D of the abscess", "a ureteral stent by urology", "perc nephrostomy placement",
                  "exchange of the chronic foley", "lap appy", "debridement of the ulcer", "PICC removal"],
    "s_unit": ["MICU", "ICU", "unit", "medical ICU", "step-down unit", "SICU"],
    "find:s": [
        "Lactate [was |of |]{lac}[ mmol/L|] [on arrival|at presentation|initially|in the ED][, down to {lac2} after fluids|].",
        "<s_crit> on arrival with [T {t}|temp {t}|Tmax {tf}F], HR {hr}[ and RR {rr}|].",
        "<s_cx> [grew|were positive for|returned|speciated to] <s_org>[ in 2/2 bottles| in 1 of 2 sets| in both sets|].",
        "MAP [dropped to|as low as|nadir of|in the] {mapn} [despite|after] <s_fluid>[, so <s_press> was started|].",
        "Required <s_press> [for {days} days|overnight|via a central line|for about 36 hours][ to keep MAP >65| for a MAP goal of 65|].",
        "[Started on|Received|Given|Covered with] <s_abx> [in the ED|within the first hour|after cultures were drawn|empirically].",
        "Source [was felt to be|thought to be|presumed|likely] <s_src>[ given <s_evid>|].",
        "[Workup notable for|Found to have|Exam and imaging with] <s_evid>[, consistent with a <s_src> source|].",
        "Source control [with|via|achieved with] <s_control>[ on HD{days}|].",
        "ID [was consulted|consulted|followed] and [recommended|rec'd] [narrowing to|de-escalating to|a {abx_days} day course of] <s_narrow>.",
        "[Hypotensive|Soft BPs] to {sbpn}/{dbpn} [with|and] [mottled extremities|cool extremities|delayed cap refill|new confusion].",
        "[Rigors|Shaking chills] at home[ with confusion|], [WBC|white count] {wbc}[ with {bands}% bands| with bandemia|].",
        "Procalcitonin {pct}[ on admission|, trending down|].",
        "Repeat lactate [cleared|normalized|came down] to {lac2} after [the fluid bolus|{fluid_l} L|resuscitation].",
        "[Admitted to|Transferred to|Went to] the <s_unit> for [pressor support|shock|hemodynamic monitoring|a pressor requirement].",
        "[Distributive|Vasodilatory] shock [with a lactate of|and lactate] {lac}[, MAP {mapn}|].",
        "Surveillance [blood cultures|BCx] [cleared|were negative] after {days} days[; TTE without vegetation|].",
        "[Urine culture|UCx] [grew|with] >100k <s_org>[, matching the blood|].",
        "Stress-dose hydrocortisone [added|started] for [refractory hypotension|rising pressor needs|shock on two pressors].",
        "[Broad spectrum abx|Antibiotics] [narrowed|de-escalated] to <s_narrow> once [sensitivities|speciation] returned.",
        "[End-organ dysfunction|Organ dysfunction] with [a lactate of {lac}|new confusion and a lactate of {lac}|oliguria and a lactate of {lac}].",
        "[Pressors|<s_press>] weaned off by HD{days}[ with MAPs >65|].",
        "[Blood and urine cultures|Cultures|BCx x2] [sent|drawn] [before|prior to] <s_abx>[; lactate {lac}|].",
        "Lactate {lac} with [hypotension|soft pressures|a MAP of {mapn}], [given|started on] <s_fluid>.",
        "[Remained|Stayed] hypotensive [after|despite] <s_fluid> and [needed|required] <s_press>.",
        "[Febrile|Fever] to {t} with [a lactate of|lactate] {lac} and [positive blood cultures|bacteremia|a <s_src> source].",
        "[Central line|CVC|Right IJ line] placed for <s_press>[; MAP goal >65|].",
        "Cultures [grew|positive for] <s_org>[, sensitive to <s_narrow>|]; [antibiotics|abx] [narrowed|tailored] accordingly.",
        "<s_org> bacteremia [from|with] a <s_src> source[, treated with <s_narrow>|].",
        "Hypotension [responded to|improved with] fluids[ and low-dose <s_press>|]; lactate [cleared|normalized].",
        "[Altered|Confused|Lethargic] with [fever|rigors] and [hypotension|a lactate of {lac}][ on arrival|].",
        "Infectious workup: UA [positive|with pyuria], [blood cultures|BCx] [pending|growing <s_org>], CXR [clear|without infiltrate].",
        "[Tachycardic to|HR] {hr} and [hypotensive to|BP] {sbpn}/{dbpn} with [fever|rigors|a lactate of {lac}].",
        "WBC {wbc} with [bandemia|a left shift|{bands}% bands] and [lactate|lactic acid] {lac}.",
    ],
    "brief:s": ["lactate {lac}", "lactate {lac} -> {lac2}", "BCx + <s_org>", "required <s_press>", "MAP {mapn}",
                "s/p <s_fluid>", "on <s_abx>", "<s_src> source", "<s_crit>", "pressors weaned HD{days}",
                "<s_org> in blood and urine", "procal {pct}", "off <s_press>", "source control: <s_control>",
                 "<s_cx> + <s_org>", "hypotensive to {sbpn}/{dbpn}", "WBC {wbc}", "febrile {t}", "needed <s_fluid>", "ICU x{days}d"],
    "head:s": ["Hypotension", "Shock", "Bacteremia", "Lactic acidosis", "Fever", "<s_org> bacteremia",
               "Pyelonephritis", "Hypotension/lactic acidosis", "SIRS", "Distributive shock", "Fever, hypotension",
               "Cholangitis", "Complicated UTI", "Line infection", "Infection, source <s_src>", "Shock, resolved",
                "Bacteremia, <s_src> source", "Hypotension requiring pressors", "Fever and lactic acidosis", "<s_org> UTI with bacteremia", "Shock, on pressors", "SIRS, infectious"],
    "plan:s": ["complete {abx_days} days of <s_narrow>", "f/u final culture sensitivities", "PICC for IV <s_narrow>",
               "off pressors since HD{days}, trend lactate", "ID follow up in 2 weeks",
               "repeat blood cultures to document clearance", "source control done, continue abx",
               "narrowed to <s_narrow> per ID", "<s_narrow> x {abx_days}d total from first negative culture",
               "monitor for recurrent fever, CBC in 1 week", "TTE negative, no TEE needed",
               "weaned off <s_press>, MAPs stable",
                "continue <s_narrow> to finish {abx_days} days", "afebrile >48h, cultures cleared", "lactate normalized, off pressors", "outpatient ID clinic for OPAT", "follow up blood cultures", "remove foley, repeat UA if febrile"],
    "neg:s": [
        "[No evidence of|No signs of|Low concern for|No concern for] [sepsis|septic shock|bacteremia].",
        "[Sepsis|Septic shock|Bacteremia] [ruled out|was ruled out|felt unlikely|excluded].",
        "[Lactate normal|Lactate {lac}|Cultures negative|BCx NGTD x5 days|Afebrile and normotensive][, low concern for sepsis|; sepsis not suspected].",
        "Did not meet [SIRS criteria|sepsis criteria|criteria for sepsis].",
        "Initially on <s_abx> for possible [sepsis|infection], [stopped|discontinued] at 48h with negative cultures.",
        "Met SIRS criteria [from pancreatitis|from withdrawal|from pain|from a PE] rather than infection; no antibiotics.",
        "Blood cultures [no growth|negative] at 5 days, [no bacteremia|not septic].",
        "[Not septic|Not felt to be septic|No signs of sepsis] on arrival; [lactate|lactic acid] {lac}.",
    ],
    "cc:s": ["fever and confusion", "fevers and rigors", "altered mental status", "low blood pressure",
             "lethargy and fever", "rigors and dysuria", "fever and flank pain", "being found down with fever",
             "chills and weakness", "fever at the nursing home", "hypotension noted by EMS", "fever and somnolence",
             "confusion and foul-smelling urine", "fever after a recent procedure"],
    "hist:s": ["prior admission for urosepsis", "recurrent UTIs", "neurogenic bladder with a chronic foley",
               "prior MRSA bacteremia", "recurrent cellulitis", "h/o pyelonephritis", "asplenia",
               "recurrent C diff", "prior ESBL UTI", "h/o septic shock in 2020"],
    "chron:s": ["h/o urosepsis: no active infection, UA bland", "recurrent UTIs: no abx this admission",
                "neurogenic bladder: foley exchanged, UA clean", "prior bacteremia: afebrile, cultures negative",
                "h/o MRSA: contact precautions"],
    # ---- pneumonia --------------------------------------------------------------------------------
    "ment:p": [
        "pneumonia", "PNA", "CAP", "community-acquired pneumonia", "RLL pneumonia", "HCAP", "aspiration pneumonia",
        "lobar pneumonia", "multifocal pneumonia", "LLL PNA", "bacterial pneumonia", "hospital-acquired pneumonia",
        "post-obstructive pneumonia", "CAP with a parapneumonic effusion", "pneumococcal pneumonia",
        "atypical pneumonia", "bronchopneumonia", "<p_loc> pneumonia", "aspiration PNA", "CAP, <p_loc>",
    ],
    "p_loc": ["RLL", "LLL", "right lower lobe", "left lower lobe", "RML", "lingular", "left upper lobe",
              "bibasilar", "right middle lobe", "multilobar", "LUL", "right basilar", "left basilar", "RUL"],
    "p_img": ["CXR", "chest x-ray", "CT chest", "CTA chest", "portable CXR", "PA/lateral film", "chest CT",
              "CXR PA/lat", "repeat film", "chest radiograph"],
    "p_opac": ["consolidation", "infiltrate", "opacity", "airspace disease", "consolidation with air bronchograms",
               "dense consolidation", "patchy opacities", "focal airspace opacity", "lobar consolidation",
               "infiltrates", "airspace opacity", "ground glass and consolidation"],
    "p_org": ["Strep pneumoniae", "H. flu", "Moraxella", "MRSA", "Pseudomonas", "Legionella", "Mycoplasma",
              "Klebsiella", "S. pneumo", "Haemophilus influenzae", "MSSA", "pneumococcus"],
    "p_abx": ["ceftriaxone and azithromycin", "CTX/azithro", "levofloxacin", "levaquin", "ceftriaxone + doxycycline",
              "amoxicillin-clavulanate", "augmentin", "cefepime/vanc", "ampicillin-sulbactam", "unasyn",
              "moxifloxacin", "cefpodoxime", "ceftriaxone/azithromycin", "doxy", "CAP coverage",
              "ceftriaxone and doxy"],
    "p_sx": ["productive cough", "cough with rusty sputum", "purulent sputum", "pleuritic chest pain",
             "fevers and chills", "green sputum", "cough productive of yellow phlegm", "blood-tinged sputum",
             "cough and SOB", "right-sided pleuritic pain", "wet cough", "night sweats and cough"],
    "p_exam": ["crackles", "rales", "bronchial breath sounds", "egophony", "dullness to percussion",
               "increased tactile fremitus", "rhonchi", "decreased breath sounds", "coarse crackles",
               "focal rales"],
    "p_side": ["right base", "left base", "right lower field", "left lower field", "R base", "L base",
               "right posterior lung", "left posterior lung"],
    "p_test": ["Legionella urine antigen", "Strep pneumo urine antigen", "Sputum gram stain", "Respiratory viral panel",
               "Legionella Ag", "Urine pneumococcal antigen", "RVP", "MRSA nares PCR"],
    "find:p": [
        "<p_img> [showed|with|demonstrated|revealed|read as] [a |][new |]<p_loc> <p_opac>[ concerning for infection| c/w infection|].",
        "[Reports|Endorses|Had|Presented with] <p_sx> for {days} days[ and <p_sx>|].",
        "<p_exam> [at|over] the <p_side> on exam[ with <p_exam>|].",
        "[Treated with|Started on|Received|Completed] <p_abx>[ for {abx_days} days| x {abx_days}d|].",
        "Sputum [culture|cx|gram stain] [grew|positive for|showing|with] <p_org>.",
        "<p_test> [positive|negative]; [covered for|treated for|continued coverage for] [typicals and atypicals|CAP pathogens|typical organisms].",
        "[Required|On|Needed] {o2}L NC for [hypoxia|desaturation|sats in the high 80s] [with|from] the <p_loc> [process|consolidation|infiltrate].",
        "CURB-65 [of |]{curb}[; PSI class {psi}|].",
        "Small [parapneumonic effusion|left effusion|pleural effusion] [noted|seen][, too small to tap|; thoracentesis not needed|].",
        "[Witnessed aspiration event|Aspirated|Choked on food] [at home|after a fall|while eating][; SLP evaluated|].",
        "MRSA nares negative, so vancomycin was [stopped|discontinued|de-escalated].",
        "[Sats|SpO2] {spo2}% on RA with <p_exam> at the <p_side>.",
        "[Procalcitonin|Procal] {pct} with [a new|an evolving] <p_loc> <p_opac>.",
        "[Febrile to|Tmax] {t} with <p_sx>[, improving on <p_abx>|].",
        "[Fever curve|Cough] [improved|settled] by hospital day {days} on <p_abx>.",
        "[Cough|Sputum] cultures [grew|notable for] <p_org>[, sensitive to ceftriaxone|, treated accordingly|].",
        "<p_img> [today|on HD{days}] [stable|unchanged|with evolving] <p_loc> <p_opac>.",
        "Incentive spirometry and [chest PT|flutter valve|ambulation] for [the consolidation|secretion clearance|atelectasis with infiltrate].",
        "[Hypoxic|Desatting] to {spo2}% with [fever|chills] and a <p_loc> <p_opac>.",
        "Blood cultures negative; <p_org> [on sputum|in the sputum] treated with <p_abx>.",
        "[Cough|Cough and fever|Fever and cough] with a <p_loc> <p_opac> on <p_img>.",
        "<p_exam> at the <p_side> and [a|an] <p_opac> on <p_img>.",
        "[Febrile|Fever] and [hypoxic|desatting] with <p_sx>; <p_img> [showed|with] <p_loc> <p_opac>.",
        "[Sputum|Sputum culture|Sputum cx] [sent|obtained]; started on <p_abx>[ for CAP|].",
        "[Leukocytosis|WBC {wbc}] and [fever|Tmax {t}] with <p_sx>.",
        "[Oxygen|O2] requirement [up to|of] {o2}L [from|due to] the <p_opac>, weaned to RA by discharge.",
        "<p_img> [with|showing] <p_loc> <p_opac>[ and a small effusion|]; <p_abx> [started|begun].",
        "Completed a {abx_days} day course of <p_abx> with [resolution of fever|improving cough|improved O2 needs].",
        "Rhonchi and <p_sx>; [chest PT|nebs] [given|started] with <p_abx>.",
        "<p_sx> with <p_exam> and [fever|leukocytosis|hypoxia]; <p_img> [c/w|concerning for] infection.",
    ],
    "brief:p": ["<p_loc> <p_opac> on <p_img>", "<p_org> in sputum", "{o2}L NC", "CURB-65 {curb}", "on <p_abx>",
                "<p_exam> <p_side>", "procal {pct}", "<p_sx>", "<p_test> neg", "sats {spo2}% RA",
                "<p_img>: <p_loc> <p_opac>", "s/p {abx_days}d <p_abx>",
                 "febrile {t}", "WBC {wbc}", "<p_exam> on exam", "cough x{days}d", "sputum cx <p_org>", "required {o2}L"],
    "head:p": ["Hypoxia", "Cough", "<p_loc> opacity", "Acute hypoxic respiratory failure", "Fever and cough",
               "LRTI", "<p_loc> infiltrate", "Pleuritic chest pain", "Hypoxemia", "Lung consolidation",
               "Productive cough", "Respiratory infection",
                "Cough/fever with infiltrate", "<p_loc> consolidation", "Fever and hypoxia", "Infiltrate on CXR", "Hypoxic respiratory failure", "Sputum-producing cough"],
    "plan:p": ["finish {abx_days} days of <p_abx>", "repeat <p_img> in 6-8 weeks to document resolution",
               "wean O2, incentive spirometry", "pneumococcal and flu vaccines before discharge",
               "SLP recs: aspiration precautions", "transition to PO <p_abx>", "<p_abx> for {abx_days}d total",
               "f/u sputum cx", "ambulatory sat before discharge", "PCP to repeat <p_img>",
               "switched to oral <p_abx> once afebrile", "follow-up chest imaging in 6 weeks",
                "<p_abx> to finish {abx_days} days", "incentive spirometry, ambulate", "O2 weaned to RA", "f/u <p_test>", "aspiration precautions, HOB >30", "CXR in 6 weeks"],
    "neg:p": [
        "[Pneumonia|PNA] [ruled out|was ruled out|felt unlikely|not favored].",
        "<p_img> [clear|without infiltrate|without consolidation|negative for an acute process|with no focal opacity].",
        "No evidence of [pneumonia|PNA|an infiltrate] on [CT|imaging|CXR].",
        "[Antibiotics stopped|No antibiotics given] as [PNA|pneumonia|a lung infection] was felt unlikely.",
        "[Lungs clear bilaterally|Lungs CTAB|Clear lungs on exam]; [no consolidation|procal {pct}].",
        "Procalcitonin {pct} and a clear <p_img>, [not c/w|not consistent with] [pneumonia|PNA|CAP].",
        "[No cough or sputum|Denies cough or fever], [PNA unlikely|no pneumonia].",
        "[Viral bronchitis|Viral URI] rather than [pneumonia|PNA]; no infiltrate.",
    ],
    "cc:p": ["cough and fever", "productive cough", "pleuritic chest pain", "cough with green sputum",
             "fever and shortness of breath", "cough for five days", "chills and cough", "hypoxia and cough",
             "cough and right-sided chest pain", "fever and wet cough"],
    "hist:p": ["remote pneumonia", "prior aspiration events", "recurrent aspiration", "bronchiectasis",
               "h/o CAP requiring admission", "dysphagia after a stroke", "prior lung abscess"],
    "chron:p": ["h/o aspiration: SLP recs continued, no new infiltrate", "bronchiectasis: at baseline, airway clearance",
                "prior PNA: no active issues", "dysphagia: mechanical soft diet"],
    # ---- heart failure ----------------------------------------------------------------------------
    "ment:h": [
        "heart failure", "CHF exacerbation", "ADHF", "acute on chronic systolic heart failure", "decompensated CHF",
        "HFrEF exacerbation", "acute diastolic heart failure", "acute decompensated heart failure",
        "HFpEF exacerbation", "volume overload from CHF", "acute on chronic HFrEF", "CHF",
        "cardiogenic pulmonary edema", "systolic CHF exacerbation", "congestive heart failure exacerbation",
        "acute HF", "acute on chronic diastolic CHF", "decompensated HFrEF",
    ],
    "h_bnp": ["BNP", "NT-proBNP", "proBNP", "pro-BNP", "BNP level", "NTproBNP"],
    "h_diur": ["IV furosemide", "IV lasix", "lasix {lasix} mg IV BID", "a furosemide drip", "bumetanide", "IV bumex",
               "IV diuresis", "torsemide", "metolazone with lasix", "a lasix gtt", "furosemide {lasix} mg IV",
               "lasix {lasix} IV TID"],
    "h_exam": ["JVD", "JVP to the angle of the jaw", "JVP at 12 cm", "3+ pitting edema", "bilateral LE edema",
               "bibasilar crackles", "an S3", "hepatojugular reflux", "sacral edema", "pitting edema to the knees",
               "rales to the mid-lung fields", "anasarca", "2+ edema to the shins", "elevated JVP"],
    "h_sx": ["orthopnea", "PND", "3-pillow orthopnea", "DOE", "weight gain", "leg swelling", "abdominal bloating",
             "early satiety", "exertional dyspnea", "dyspnea walking one block", "sleeping in a recliner",
             "waking up gasping"],
    "h_cxr": ["CXR with pulmonary vascular congestion", "CXR showing cephalization and small bilateral effusions",
              "chest film with Kerley B lines", "CXR: interstitial edema, cardiomegaly", "imaging c/w pulmonary edema",
              "CXR with bilateral effusions and vascular congestion", "CXR: cardiomegaly with edema",
              "portable film with hazy perihilar edema"],
    "h_echo": ["TTE", "echo", "transthoracic echo", "repeat echo", "bedside echo", "echocardiogram"],
    "h_gdmt": ["metoprolol succinate", "carvedilol", "sacubitril-valsartan", "entresto", "spironolactone",
               "empagliflozin", "dapagliflozin", "losartan", "GDMT", "eplerenone", "jardiance", "coreg"],
    "h_trigger": ["dietary indiscretion", "medication nonadherence", "running out of lasix", "a salty meal",
                  "new AF with RVR", "uncontrolled hypertension", "NSAID use", "missed diuretic doses",
                  "a high-sodium diet over the holidays", "stopping torsemide"],
    "h_wt": ["{wt} lbs", "{wt} pounds", "{wtkg} kg"],
    "find:h": [
        "<h_bnp> [was |of |]{bnp}[ on admission|, up from a prior of {bnp0}|].",
        "[Exam|On exam|Exam notable for] <h_exam>[ and <h_exam>|].",
        "Reports <h_sx>[ and <h_sx>|][ over the past {days} days| for a week|].",
        "<h_echo> [showed|with|demonstrated] [an |]EF [of |]{ef}%[ with global hypokinesis| and moderate MR| with a dilated LV| and grade 2 diastolic dysfunction|].",
        "Diuresed with <h_diur>[, net negative {net} L|, {net} L out|][ over the stay| by discharge|].",
        "<h_cxr>.",
        "Weight up <h_wt> from [dry weight|a dry weight of {dryw} kg|baseline][ after <h_trigger>|].",
        "[Likely|Felt to be|Probably] [precipitated|triggered] by <h_trigger>.",
        "[Discharge|Dry] weight {dryw} kg[, down <h_wt>|; target weight reached|].",
        "<h_gdmt> [started|uptitrated|resumed|restarted] [prior to discharge|once euvolemic|on HD{days}].",
        "Troponin [flat|mildly elevated and flat] at {trop}, felt to be demand in the setting of [volume overload|pulmonary edema].",
        "[Placed on|Required|Improved on] BiPAP [for flash pulmonary edema|for pulmonary edema|overnight] then [diuresed|lasix].",
        "[Cardiology|The HF team|The heart failure service] [consulted|following|saw {obj}][ for GDMT titration|].",
        "Sats {spo2}% on RA, improving with diuresis[ and 2L NC|].",
        "[Strict I/Os|Daily weights] with [a 2 g sodium diet|fluid restriction to 1.5 L|a 2g Na diet].",
        "[Creatinine|Cr] rose to {cr} with [diuresis|aggressive diuresis][, attributed to cardiorenal physiology|].",
        "<h_exam> improved with <h_diur>[, net -{net} L|].",
        "[Newly reduced EF|EF down] to {ef}% on <h_echo>[; ischemic workup as outpatient|].",
        "[Transitioned to|Discharged on] PO [torsemide|furosemide|lasix] {lasixpo} mg [daily|BID].",
        "Orthopnea and <h_exam> on arrival, <h_bnp> {bnp}.",
        "<h_bnp> {bnp} with <h_exam> and <h_sx>.",
        "[Volume overloaded|Hypervolemic] on exam with <h_exam>; [started|given] <h_diur>.",
        "[Net|Total] -{net} L with <h_diur>, [weight|wt] down <h_wt>.",
        "<h_echo> [EF|LVEF] {ef}%[, unchanged from prior| (prior 45%)|].",
        "<h_sx> with [pulmonary edema|vascular congestion|bilateral effusions] on CXR[; <h_bnp> {bnp}|].",
        "[Edema|Swelling|Leg edema] [improved|resolved] after <h_diur>[, net -{net} L|].",
        "[Lasix|Furosemide|Diuretics] [held|paused] for a bump in [Cr|creatinine] to {cr}[, then resumed|].",
        "[Orthopnea|PND] and [weight gain|<h_wt> of weight gain] after <h_trigger>.",
        "Hypoxic to {spo2}% with [pulmonary edema|bilateral effusions|vascular congestion] on CXR[, <h_diur> given|].",
        "[Crackles|Rales] [at both bases|bibasilar] with <h_exam> and a <h_bnp> of {bnp}.",
    ],
    "brief:h": ["<h_bnp> {bnp}", "EF {ef}%", "net -{net} L", "+JVD, edema", "weight up <h_wt>", "on <h_diur>",
                "<h_exam>", "<h_cxr>", "dry wt {dryw} kg", "<h_sx>", "trigger: <h_trigger>", "GDMT: <h_gdmt>",
                 "<h_bnp> up to {bnp}", "edema 3+", "diuresed -{net} L", "orthopnea", "JVP elevated", "<h_wt> weight gain"],
    "head:h": ["Volume overload", "Dyspnea", "Hypoxia", "LE edema", "Acute hypoxic respiratory failure",
               "Hypervolemia", "Pulmonary edema", "Cardiomyopathy, EF {ef}%", "Fluid overload", "Orthopnea/edema",
               "Dyspnea and edema", "Elevated BNP",
                "Volume overload, EF {ef}%", "Hypervolemia/edema", "Dyspnea with edema", "Pulmonary edema on CXR", "Weight gain and edema", "Cardiomyopathy"],
    "plan:h": ["continue PO [torsemide|lasix] {lasixpo} mg daily", "daily weights, call for gain >3 lbs in a day",
               "2 g Na diet, 1.5-2 L fluid restriction", "GDMT: <h_gdmt>", "cardiology f/u in 1 week",
               "BMP in 1 week on the new diuretic dose", "dry weight {dryw} kg", "start <h_gdmt> as BP allows",
               "HF clinic referral", "continue <h_gdmt> and <h_gdmt>", "repeat <h_echo> in 3 months",
               "low sodium diet teaching done",
                "net negative goal 1-2 L/day until euvolemic", "lasix {lasixpo} PO BID", "titrate GDMT at HF clinic", "repeat BMP, monitor K on spironolactone", "weigh daily, low salt diet", "diurese to dry weight {dryw} kg"],
    "neg:h": [
        "<h_bnp> {bnp}, [not c/w|not consistent with] [a CHF exacerbation|heart failure|volume overload].",
        "No [JVD|edema|orthopnea|signs of volume overload][ on exam|].",
        "<h_echo> with a normal EF[ ({ef}%)|]; [heart failure|CHF] [unlikely|not favored].",
        "[Euvolemic|Appears euvolemic|Dry] on exam, [no CHF|not in heart failure].",
        "Denies orthopnea, PND or leg swelling.",
        "No evidence of [heart failure|CHF|volume overload][ on exam or imaging|].",
        "[Heart failure|CHF exacerbation|Cardiogenic edema] [ruled out|felt unlikely|excluded].",
    ],
    "cc:h": ["shortness of breath", "leg swelling", "weight gain and dyspnea", "orthopnea", "dyspnea on exertion",
             "abdominal distension and edema", "SOB lying flat", "swelling in both legs", "waking up short of breath",
             "a 10 lb weight gain"],
    "hist:h": ["chronic systolic CHF (EF 35%)", "HFpEF", "CHF on home furosemide", "HFrEF, EF 25%, s/p ICD",
               "ischemic cardiomyopathy", "diastolic dysfunction", "NICM", "chronic HFrEF on entresto",
               "CHF", "heart failure with preserved EF"],
    "chron:h": ["chronic HFrEF: euvolemic, continue home <h_gdmt>", "HFpEF: compensated, continue home lasix",
                "ischemic CM: no signs of volume overload", "chronic systolic CHF: at dry weight, continue GDMT",
                "CHF: compensated, no diuresis needed"],
    "meds:h": ["furosemide 40 mg", "carvedilol 12.5 mg BID", "spironolactone 25 mg", "entresto 24/26 BID",
               "torsemide 20 mg", "metoprolol succinate 50 mg"],
    # ---- acute kidney injury ----------------------------------------------------------------------
    "ment:k": [
        "acute kidney injury", "AKI", "acute renal failure", "ARF", "AKI on CKD", "prerenal azotemia", "ATN",
        "acute tubular necrosis", "KDIGO stage {kdigo} AKI", "contrast nephropathy", "AKI 2/2 hypovolemia",
        "prerenal AKI", "acute on chronic kidney injury", "obstructive uropathy with AKI", "AIN",
        "acute kidney injury, prerenal", "AKI, likely ATN", "acute renal insufficiency",
    ],
    "k_cr": ["creatinine", "Cr", "serum creatinine", "SCr", "creat", "Cr"],
    "k_neph": ["NSAIDs", "ibuprofen", "lisinopril", "losartan", "the ACE inhibitor", "metformin", "IV contrast",
               "vancomycin", "the diuretic", "ketorolac", "gentamicin", "naproxen", "the ARB", "toradol"],
    "k_cause": ["volume depletion from poor PO intake", "hypovolemia", "diarrhea", "contrast", "obstruction from BPH",
                "ATN after hypotension", "NSAID use", "overdiuresis", "vomiting", "vanc/zosyn",
                "urinary retention", "dehydration"],
    "k_us": ["renal US", "renal ultrasound", "RUS", "renal sono", "bladder scan", "kidney ultrasound"],
    "k_rrt": ["dialysis", "HD", "RRT", "CRRT", "emergent dialysis", "renal replacement therapy"],
    "find:k": [
        "<k_cr> [rose|bumped|increased|went up] from [a baseline of |baseline ]{cr0} to {cr}[ on admission| by HD2| at peak|].",
        "[Oliguric|Oliguria] with [urine output|UOP|output] [under|<] 0.5 mL/kg/h [for 12 hours|overnight|x 6h].",
        "FENa [was |]{fena}%[, suggesting a prerenal process|, c/w prerenal|, c/w ATN|].",
        "<k_us> [without|showed no|negative for] hydronephrosis.",
        "[Held|Stopped|Discontinued] <k_neph>[ and <k_neph>|][ given the rising creatinine|].",
        "<k_cr> peaked at {cr} and [improved|trended down|downtrended|recovered] with [IVF|IV fluids|LR|volume repletion|holding diuretics] to {cr1}.",
        "Nephrology [was consulted|consulted|following]; [no indication for|no emergent need for|did not require] <k_rrt>.",
        "Urine [microscopy|sediment] [with|showed] [muddy brown granular casts|granular casts|renal tubular epithelial cells][, c/w ATN|].",
        "BUN/Cr {bun}/{cr}[ with a ratio >20|, prerenal pattern|].",
        "[Likely|Felt to be|Thought to be] [prerenal from|secondary to|2/2] <k_cause>.",
        "[K|Potassium] {k} [treated with|requiring] [lokelma|kayexalate|insulin/dextrose|calcium gluconate][ in the setting of the renal injury|].",
        "[Renally dosed|Renally adjusted] all medications[ for a CrCl of {crcl}|].",
        "Met KDIGO stage {kdigo} criteria[ by creatinine| by urine output|].",
        "PVR {pvr} mL; foley placed with [brisk|good] output and <k_cr> [improved|down] to {cr1}.",
        "UOP [only |]{uop} mL over 24h[ despite fluids|].",
        "<k_cr> {cr}, [more than double|about twice|triple] the baseline of {cr0}.",
        "<k_cr> [doubled|more than doubled] from {cr0} to {cr}[ over {days} days|].",
        "<k_us> with [bilateral hydronephrosis|moderate hydronephrosis|a distended bladder]; foley placed.",
        "[Bicarb|HCO3] {hco3} with [uremia|BUN {bun}][, no uremic symptoms|].",
        "[Given|Received] {fluid_l} L [IVF|LR|NS] for [the rising creatinine|a prerenal picture|the Cr bump].",
        "<k_cr> [back to|returned to|near] baseline ({cr1}) by discharge.",
        "<k_cr> {cr} [from|vs a] baseline [of |]{cr0}[, with BUN {bun}|].",
        "[Poor PO intake|Vomiting|Diarrhea] [for {days} days|x{days}d] [with|and] <k_cr> {cr}[ from {cr0}|].",
        "<k_neph> [held|stopped] and [IVF|fluids] given; <k_cr> [improved|down] to {cr1}.",
        "[Decreased|Low] urine output with a rising <k_cr>[ to {cr}|].",
        "[Hyperkalemia|K {k}] and <k_cr> {cr}[ in the setting of <k_neph>|].",
        "[Foley|Straight cath] for [retention|a PVR of {pvr}]; <k_cr> [improved|trended down] to {cr1}.",
        "[Renal|Kidney] function [worsened|declined] with <k_cr> [up to|peaking at] {cr}[, now {cr1}|].",
        "[Urine lytes|Urine studies] [sent|obtained]: FENa {fena}%[, urine Na <20|].",
        "BUN {bun} and <k_cr> {cr}[, baseline {cr0}|] with [dry mucous membranes|orthostasis|poor intake].",
        "[Contrast|IV contrast] given [for a CT|for a CTA] {days} days prior; <k_cr> [rose|climbed] to {cr}.",
    ],
    "brief:k": ["Cr {cr0} -> {cr}", "FENa {fena}%", "UOP low", "no hydro on <k_us>", "held <k_neph>", "Cr peak {cr}",
                "BUN {bun}", "K {k}", "Cr {cr} (bl {cr0})", "KDIGO {kdigo}", "<k_cr> now {cr1}", "prerenal",
                 "creatinine {cr}", "baseline Cr {cr0}", "oliguric", "BUN/Cr {bun}/{cr}", "K {k} treated", "Cr improved to {cr1}"],
    "head:k": ["Elevated creatinine", "Oliguria", "Hyperkalemia", "Renal", "Cr bump", "Elevated Cr",
               "Renal function", "Decreased UOP", "Creatinine rise", "Uremia", "Rising Cr", "Kidney function",
                "Creatinine elevation", "Renal insufficiency", "Low urine output", "Cr {cr} from {cr0}", "Hyperkalemia/elevated Cr", "Elevated BUN/Cr"],
    "plan:k": ["recheck BMP in {days} days", "avoid NSAIDs", "hold lisinopril until Cr back to baseline",
               "renally dose meds", "encourage PO intake", "nephrology follow up", "strict I/Os",
               "trend Cr daily", "restart <k_neph> when Cr at baseline", "BMP at PCP visit", "avoid nephrotoxins",
               "urology f/u for retention, foley in place",
                "IVF until euvolemic, trend creatinine", "hold diuretics until Cr improves", "renal US done, no hydro", "nephrology clinic in 2 weeks", "BMP in 3 days", "avoid contrast"],
    "neg:k": [
        "[Creatinine|Cr] at baseline[ ({cr0})|], no [AKI|kidney injury].",
        "Renal function [remained stable|stable|normal] throughout.",
        "[Cr|Creatinine] stable at {cr0}.",
        "No [acute kidney injury|AKI|renal failure].",
        "BMP [unremarkable|normal] with a normal creatinine.",
        "[AKI|Acute kidney injury|Renal injury] [ruled out|not present|excluded]; Cr {cr0}.",
        "[UOP|Urine output] adequate, [creatinine|Cr] unchanged.",
    ],
    "cc:k": ["decreased urine output", "abnormal labs", "weakness", "elevated creatinine on outpatient labs",
             "poor PO intake and dizziness", "lightheadedness", "not making much urine", "fatigue after a diarrheal illness",
             "dizziness and vomiting", "abnormal kidney labs"],
    "hist:k": ["CKD stage 3 with baseline Cr 1.6", "CKD 3b", "solitary kidney", "CKD IV", "diabetic nephropathy",
               "chronic kidney disease", "s/p nephrectomy", "CKD 3a", "hypertensive nephropathy"],
    "chron:k": ["CKD 3: Cr at baseline {cr0}, renally dose meds", "CKD: stable, Cr {cr0}",
                "CKD IV: at baseline, nephrology f/u", "solitary kidney: Cr stable"],
    # ---- COPD exacerbation ------------------------------------------------------------------------
    "ment:c": [
        "COPD exacerbation", "AECOPD", "COPD flare", "acute exacerbation of COPD", "AE-COPD",
        "acute on chronic hypercapnic respiratory failure from COPD", "emphysema exacerbation",
        "chronic bronchitis flare", "acute COPD exacerbation", "COPD with acute bronchospasm",
        "obstructive lung disease exacerbation", "COPD exacerbation, viral", "exacerbation of COPD",
        "COPD flare with hypercapnia",
    ],
    "c_neb": ["DuoNebs", "albuterol/ipratropium nebs", "duonebs q4h", "albuterol nebs q2h", "continuous albuterol",
              "ipratropium-albuterol nebs", "nebulizers", "bronchodilators", "stacked nebs", "xopenex nebs",
              "back-to-back nebs", "scheduled duonebs"],
    "c_ster": ["prednisone 40 mg", "prednisone 40 mg x 5 days", "IV methylprednisolone", "solumedrol 125 mg",
               "IV steroids", "pred 40", "methylpred 60 mg IV q8", "a steroid burst", "systemic steroids",
               "a 5 day prednisone burst", "solu-medrol"],
    "c_abx": ["azithromycin", "doxycycline", "azithro", "levofloxacin", "augmentin", "a Z-pack", "doxy",
              "cefpodoxime"],
    "c_exam": ["diffuse expiratory wheezes", "a prolonged expiratory phase", "poor air movement", "tight lungs",
               "scattered wheezes", "accessory muscle use", "pursed-lip breathing", "tripoding",
               "diminished breath sounds throughout", "coarse rhonchi and wheezes", "end-expiratory wheeze",
               "speaking in 3-word sentences"],
    "c_vent": ["BiPAP", "NIPPV", "BiPAP 12/5", "bipap", "non-invasive ventilation", "NIV"],
    "c_trigger": ["a viral URI", "rhinovirus", "influenza A", "running out of inhalers", "wildfire smoke", "a cold",
                  "RSV", "continued smoking", "a recent URI", "cold weather", "parainfluenza"],
    "c_sx": ["increased sputum production", "a change in sputum color", "worsening dyspnea", "wheezing",
             "chest tightness", "more frequent rescue inhaler use", "increased sputum purulence",
             "cough and wheeze", "needing the albuterol every hour", "breathlessness at rest"],
    "c_home": ["tiotropium", "Spiriva", "Trelegy", "Symbicort", "Advair", "albuterol PRN", "Breo", "Anoro",
               "home O2", "budesonide-formoterol"],
    "find:c": [
        "[On exam|Exam notable for|Had|Exam with] <c_exam>[ and <c_exam>|].",
        "[Reports|Endorses|Several days of] <c_sx> and <c_sx>[ after <c_trigger>|][ for {days} days|].",
        "[Treated with|Received|Given|Started] <c_neb> and <c_ster>[, then transitioned to oral prednisone| x 5d|].",
        "[ABG|VBG] {ph}/{pco2}[/{po2}|][ on arrival|], [requiring|placed on|improved on] <c_vent>[ overnight| for {days} days|].",
        "[Normally|At baseline|Usually] on {o2home}L home O2, [now requiring|needing|up to] {o2}L to keep sats [88-92%|above 88%|>88%].",
        "[Started|Added|Received] <c_abx>[ for increased sputum purulence| given purulent sputum| for a 5 day course|].",
        "[Peak flow|PEF] {pef}[ L/min|][, improving to {pef2} with nebs|].",
        "[Triggered by|Likely precipitated by|In the setting of] <c_trigger>[; viral panel positive|].",
        "CXR hyperinflated [without focal consolidation|with flattened diaphragms|, no infiltrate].",
        "[Weaned|Titrated] back to [baseline|{o2home}L] O2 [by discharge|on HD{days}][; ambulatory sat {spo2}%|].",
        "[Resumed|Continued] <c_home>[ and <c_home>|]; inhaler technique reviewed.",
        "Hypercapnic with a pCO2 of {pco2}[ and somnolence|]; <c_vent> started in the ED.",
        "[Wheezy|Tight and wheezy|Diffusely wheezy] on arrival, [much improved|improved|moving air better] after <c_neb>.",
        "[Sats|SpO2] {spo2}% on {o2}L[ with <c_exam>|], goal 88-92%.",
        "[Received|Given] magnesium 2 g IV for [bronchospasm|refractory wheezing|persistent wheeze].",
        "[Smoker|Active smoker], {pack} pack-years; [nicotine patch started|counseled on cessation][ and <c_neb>|].",
        "[Steroids|<c_ster>] [continued|tapered] with [improving|resolving] <c_exam>.",
        "[Respiratory acidosis|Acute on chronic respiratory acidosis] with pH {ph} and pCO2 {pco2}.",
        "[Flu|RVP|Viral swab] positive for <c_trigger>[, oseltamivir given|].",
        "[Increased|Worsening] work of breathing with <c_exam>, [RR|resp rate] {rr}.",
        "<c_exam> with [sats|SpO2] {spo2}% on {o2}L[ (baseline {o2home}L)|].",
        "[Dyspnea|SOB] and <c_sx> after <c_trigger>; [wheezy|tight] on exam.",
        "<c_neb>, <c_ster> and <c_abx>[ started in the ED| given|].",
        "[Hypercapnic|pCO2 {pco2}] [and|with] [somnolence|drowsiness|acidemia], [placed on|trial of] <c_vent>.",
        "[Wheezing|Wheezes] [improved|resolved] on <c_ster> and <c_neb>.",
        "Home <c_home> [continued|resumed][; spacer teaching done|].",
        "[Smoker|Former smoker] with <c_sx> and <c_exam>.",
        "[Baseline|Home] O2 {o2home}L; [needed|required] {o2}L with <c_exam>.",
        "[Air movement|Aeration] [poor|diminished] with <c_exam>[, RR {rr}|]; <c_neb> given.",
        "<c_sx> with a pCO2 of {pco2} on [VBG|ABG][, pH {ph}|].",
    ],
    "brief:c": ["wheezy", "VBG {ph}/{pco2}", "required <c_vent>", "{o2}L (baseline {o2home}L)", "s/p <c_neb> and <c_ster>",
                "<c_exam>", "on <c_ster>", "trigger <c_trigger>", "pCO2 {pco2}", "PEF {pef}", "<c_abx> x5d",
                "<c_sx>",
                 "wheezes", "on <c_neb>", "pCO2 {pco2} on VBG", "sats {spo2}% on {o2}L", "<c_vent> x{days}d", "steroids"],
    "head:c": ["Acute hypercapnic respiratory failure", "Dyspnea/wheezing", "Hypoxia", "Bronchospasm", "Wheezing",
               "Acute on chronic hypoxic respiratory failure", "Hypercapnia", "SOB and wheeze", "Respiratory distress",
               "Dyspnea", "Resp acidosis", "Acute respiratory failure",
                "Wheezing/SOB", "Hypoxia, baseline {o2home}L", "Acute respiratory acidosis", "Dyspnea with wheeze", "Hypercapnic respiratory failure", "Shortness of breath"],
    "plan:c": ["finish prednisone taper", "continue <c_home>", "pulmonary rehab referral",
               "smoking cessation counseling, nicotine patch", "wean O2 to baseline {o2home}L", "albuterol q4h PRN",
               "<c_abx> to complete 5 days", "pulm f/u in 4 weeks", "new rescue inhaler and spacer",
               "ambulatory O2 eval", "prednisone 40 mg through day 5", "add <c_home> to the regimen",
                "<c_ster> to complete 5 days", "<c_neb> q4h PRN", "O2 goal 88-92%", "resume home <c_home>", "quit smoking, patch", "PFTs as outpatient"],
    "neg:c": [
        "No wheezing; not felt to be [a COPD exacerbation|a COPD flare|AECOPD].",
        "[Lungs clear to auscultation bilaterally|Good air movement, no wheezes|No wheezes or rhonchi].",
        "COPD [stable|at baseline], no [flare|exacerbation].",
        "No increase in sputum or [inhaler use|rescue inhaler use].",
        "[Not|Not felt to be] [a COPD exacerbation|an AECOPD]; steroids [not given|held].",
        "[COPD exacerbation|AECOPD|Bronchospasm] [ruled out|unlikely|not suspected].",
        "On baseline {o2home}L without wheeze; [not a flare|no exacerbation].",
    ],
    "cc:c": ["shortness of breath", "wheezing", "worsening dyspnea", "chest tightness", "increased sputum",
             "SOB and cough", "inhalers not helping", "breathlessness", "wheeze and cough", "dyspnea at rest"],
    "hist:c": ["COPD on home inhalers", "COPD (GOLD 3)", "a 50 pack-year smoking history with emphysema",
               "COPD on 2L home O2", "emphysema", "severe COPD, FEV1 35%", "chronic bronchitis", "COPD",
               "COPD on Trelegy", "COPD GOLD 4"],
    "chron:c": ["COPD: at baseline, continue <c_home>", "COPD: no wheezing, continue home inhalers",
                "emphysema: on baseline O2, stable", "COPD: stable, albuterol PRN"],
    "meds:c": ["tiotropium", "albuterol inhaler PRN", "fluticasone-salmeterol", "Trelegy", "Symbicort 160/4.5",
               "Spiriva"],
    # ---- diabetic ketoacidosis --------------------------------------------------------------------
    "ment:d": [
        "diabetic ketoacidosis", "DKA", "euglycemic DKA", "diabetic keto-acidosis", "DKA in T1DM", "severe DKA",
        "mild DKA", "DKA 2/2 insulin nonadherence", "ketoacidosis", "new onset T1DM presenting in DKA",
        "SGLT2i-associated euglycemic DKA", "moderate DKA", "DKA, resolved", "diabetic ketoacidosis, type 1",
    ],
    "d_gluc": ["glucose", "BG", "blood sugar", "serum glucose", "FSBG", "fingerstick", "POC glucose", "gluc"],
    "d_ket": ["beta-hydroxybutyrate", "BHB", "beta-OHB", "serum ketones", "urine ketones", "UA ketones",
              "B-hydroxybutyrate", "ketones"],
    "d_drip": ["an insulin drip", "an insulin gtt", "an IV insulin infusion", "insulin infusion per DKA protocol",
               "a regular insulin gtt", "the DKA protocol", "insulin gtt at 0.1 u/kg/h", "IV insulin"],
    "d_basal": ["glargine", "lantus", "basal-bolus insulin", "levemir", "detemir", "SQ insulin", "basal insulin",
                "degludec", "tresiba", "glargine/lispro"],
    "d_trigger": ["missed insulin doses", "insulin omission", "running out of insulin", "insulin pump failure", "a viral gastroenteritis",
                  "a UTI", "a new diagnosis of diabetes", "SGLT2 inhibitor use", "alcohol use", "a pump site failure",
                  "being unable to afford insulin", "skipping lantus", "a kinked pump catheter"],
    "d_sx": ["polyuria", "polydipsia", "nausea and vomiting", "abdominal pain", "weight loss", "fruity breath",
             "Kussmaul breathing", "confusion", "blurry vision", "intractable vomiting", "extreme thirst",
             "generalized abdominal pain"],
    "d_lyte": ["potassium", "K", "phos", "magnesium", "K and phos", "lytes"],
    "find:d": [
        "<d_gluc> {glu}[ with an anion gap of {ag}| with AG {ag}|, AG {ag}][ and bicarb {hco3}| and HCO3 {hco3}|].",
        "[Anion gap|AG|Gap] [of |]{ag}[ with a bicarbonate of {hco3}| and HCO3 {hco3}|], [closed|closing] on HD{days}.",
        "<d_ket> [markedly elevated|{bhb}|large|positive|>4][ and urine ketones large|].",
        "[Started on|Placed on|Managed with|Received] <d_drip>[ with fluids and potassium repletion| per protocol| and LR|].",
        "[Reports|Endorses|Presented with] <d_sx> and <d_sx>[ after <d_trigger>| for {days} days|].",
        "[VBG|ABG|Venous gas] pH {ph}[ with pCO2 {pco2low}|]; <d_lyte> [repleted|replaced|monitored q2h][ on the drip| while on insulin|].",
        "[Transitioned to|Bridged to|Converted to] <d_basal>[ once the gap closed| after gap closure| with a 2h overlap|].",
        "[Precipitated by|Trigger felt to be|In the setting of] <d_trigger>.",
        "[Kussmaul respirations|Deep rapid breathing|Fruity odor on the breath|Dry mucous membranes] on exam[ with <d_sx>|].",
        "A1c {a1c}%[; diabetes educator saw {obj}|; endocrine consulted|].",
        "K {k} on admission; insulin [held|delayed] until K above 3.3[ per protocol|].",
        "[Endocrine|The diabetes team] [consulted|following|saw {obj}] for [the insulin regimen|pump settings|insulin dosing].",
        "[Corrected sodium {nac}|Pseudohyponatremia] in the setting of <d_gluc> {glu}.",
        "[Admitted to the ICU|Admitted to the MICU|Went to the unit] on <d_drip> with q1h [fingersticks|FSBG|glucose checks].",
        "[Serum|Plasma] [osm|osmolality] {osm} with <d_gluc> {glu}[ and AG {ag}|].",
        "[Gap|AG] [closed|normalized] after {days} days on <d_drip>[; started <d_basal>|].",
        "[Glucose|BG] {glu} with [large|positive|moderate] <d_ket> and [vomiting|abdominal pain].",
        "Dextrose added to fluids once <d_gluc> fell below 250[ while the gap was still open|].",
        "[Bicarb|HCO3|Serum bicarbonate] {hco3}[ and pH {ph}|], [AG|anion gap] {ag}.",
        "[Lipase|Amylase] normal; abdominal pain felt to be from the acidosis[ and resolved with insulin|].",
        "<d_gluc> {glu}, [AG|gap] {ag}, <d_ket> [positive|elevated|large].",
        "[Acidotic|Acidemic] with pH {ph} and [bicarb|HCO3] {hco3}; <d_drip> started.",
        "[Nausea|Vomiting] and <d_sx> with <d_gluc> {glu} after <d_trigger>.",
        "[Fluids|IVF] and <d_drip>, with <d_lyte> repletion[ q2h|].",
        "Insulin [resumed|restarted] as <d_basal>[ with| and] [lispro|humalog|novolog] with meals.",
        "[Ketones|BHB|Beta-hydroxybutyrate] [cleared|normalized] by HD{days}.",
        "[Hyperglycemic|Hyperglycemia] to {glu} with [an anion gap|AG] of {ag} and <d_sx>.",
        "<d_ket> {bhb} and [gap|AG] {ag}[, pH {ph}|] on arrival.",
        "[Ketonemia|Ketonuria and ketonemia|Ketotic] with [an anion gap|a gap] of {ag}[ and <d_gluc> {glu}|].",
        "[Insulin|Basal insulin] [omitted|missed] for {days} days [before admission|prior to presentation]; <d_gluc> {glu}.",
        "[Tachypneic|Kussmaul breathing|Deep breathing] with [bicarb|HCO3] {hco3} and <d_gluc> {glu}.",
    ],
    "brief:d": ["AG {ag}", "bicarb {hco3}", "BG {glu}", "BHB {bhb}", "gap closed HD{days}", "on <d_drip>",
                "pH {ph}", "<d_ket> positive", "trigger: <d_trigger>", "A1c {a1c}%", "K {k}", "now on <d_basal>",
                 "glucose {glu}", "gap {ag}", "HCO3 {hco3}", "ketones positive", "insulin gtt {days}d", "K {k}, repleted"],
    "head:d": ["Hyperglycemia", "AG metabolic acidosis", "T1DM, uncontrolled", "Anion gap acidosis", "Ketosis",
               "Hyperglycemia with acidosis", "Uncontrolled diabetes", "Metabolic acidosis", "Insulin-dependent DM",
               "High anion gap acidosis", "Hyperglycemic crisis", "T1DM",
                "Hyperglycemia/ketosis", "Anion gap metabolic acidosis", "Uncontrolled T1DM", "Acidosis with hyperglycemia", "Hyperglycemia, AG {ag}", "Glucose {glu}"],
    "plan:d": ["basal-bolus: <d_basal> {units} units qHS + lispro with meals", "endocrine f/u", "diabetes education",
               "sick day rules reviewed", "check fingersticks QID", "insulin teaching completed",
               "continue <d_basal> {units} units daily", "new glucometer and supplies", "hold SGLT2 inhibitor",
               "pump restarted with endocrine", "diabetes educator follow up", "A1c {a1c}%, titrate insulin",
                "<d_basal> {units} units + correction scale", "endocrine clinic 2 weeks", "insulin teaching, glucometer", "check BG before meals and qHS", "never stop basal insulin", "nutrition consult for carb counting"],
    "neg:d": [
        "Anion gap [normal|{ag}]; [DKA|ketoacidosis] [excluded|ruled out].",
        "[Glucose|BG] [mildly elevated|{glu}] without ketosis, not DKA.",
        "No evidence of [diabetic ketoacidosis|DKA|ketoacidosis].",
        "[Ketones|BHB|Serum ketones] negative[, gap {ag}|].",
        "[Glucose|BG] {glu} [without|with no] [acidosis|anion gap|ketones]; [not DKA|DKA excluded].",
        "[DKA|Ketoacidosis] [ruled out|not present] with a normal [gap|bicarb].",
        "[Bicarb|HCO3] {hco3} and [gap|AG] {ag}, [no ketoacidosis|not in DKA].",
    ],
    "cc:d": ["nausea and vomiting", "abdominal pain", "hyperglycemia", "high sugars", "polyuria and polydipsia",
             "vomiting and confusion", "a glucometer reading HI", "weakness and vomiting", "thirst and vomiting",
             "high blood sugar"],
    "hist:d": ["type 1 diabetes", "insulin-dependent diabetes", "type 2 diabetes on metformin", "T1DM on an insulin pump",
               "IDDM", "DM2 on insulin", "brittle T1DM", "T1DM", "diabetes on lantus", "T2DM on empagliflozin"],
    "chron:d": ["T1DM: continue home <d_basal>, A1c {a1c}%", "DM2: hold metformin, SSI while inpatient",
                "T1DM: pump resumed, sugars controlled", "IDDM: continue home insulin"],
    "meds:d": ["insulin glargine", "insulin lispro sliding scale", "insulin pump", "lantus 20 units", "metformin 1000 mg BID"],
    # ---- shared by every class ----------------------------------------------------------------------
    "g_filler": [
        "Lives at home with [family|{poss} daughter|{poss} spouse|a roommate] and is independent in ADLs.",
        "[PT|Physical therapy] [evaluated|saw {obj}] and recommended [home with services|home without needs|SNF placement|home PT].",
        "Code status [confirmed as|is] [full code|DNR/DNI|full].",
        "Home medications were reconciled [on admission|at discharge].",
        "Social work met with [the family|{obj}] regarding discharge planning.",
        "Tolerated a [regular|cardiac|carb-consistent|soft] diet prior to discharge.",
        "Hemoglobin [stable|remained stable at {hgb}] throughout the admission.",
        "[Ambulating|Walking the halls] independently at discharge.",
        "DVT prophylaxis with [subcutaneous heparin|SQ heparin|enoxaparin|lovenox].",
        "Seen and examined on the day of discharge.",
        "[Mild|Chronic] anemia, [at baseline|no signs of bleeding].",
        "Sugars controlled with sliding scale insulin while inpatient.",
        "Blood pressure [controlled|well controlled] on home [amlodipine|losartan|HCTZ].",
        "Discharged [home|to home] in stable condition.",
        "Follow up with PCP in [1 week|one week|7-10 days|2 weeks].",
        "[Denies|No] chest pain[ or palpitations|].",
        "Delirium precautions maintained overnight.",
        "Pain controlled with acetaminophen.",
        "Incidental [thyroid nodule|adrenal nodule|renal cyst] noted on imaging; outpatient follow up.",
        "Family updated at bedside.",
        "Fall risk; PT/OT consulted.",
        "Electrolytes repleted PRN.",
        "{Pron} was [eager|ready] to go home.",
        "Sodium {na}, stable.",
        "Telemetry without arrhythmia.",
        "Outpatient labs were reviewed.",
    ],
    "g_hist": ["hypertension", "HTN", "hyperlipidemia", "HLD", "atrial fibrillation on apixaban", "GERD",
               "osteoarthritis", "hypothyroidism", "depression", "BPH", "obesity", "CAD s/p PCI", "gout",
               "OSA on CPAP", "prior stroke", "anxiety", "PVD", "breast cancer in remission",
               "alcohol use disorder", "migraine", "DVT on warfarin", "dementia"],
    "g_meds": ["aspirin 81 mg", "atorvastatin 40 mg", "metoprolol tartrate 25 mg BID", "amlodipine 5 mg",
               "omeprazole 20 mg", "levothyroxine 50 mcg", "sertraline 50 mg", "apixaban 5 mg BID",
               "tamsulosin 0.4 mg", "gabapentin 300 mg TID", "rosuvastatin 10 mg", "pantoprazole 40 mg"],
    "g_plan": ["HTN: continue home amlodipine", "HLD: continue atorvastatin", "DVT ppx: SQ heparin", "Code: full",
               "GERD: continue PPI", "Hypothyroidism: continue levothyroxine", "Depression: continue sertraline",
               "AF: rate controlled, continue apixaban", "Anemia: Hgb stable, outpatient workup", "BPH: tamsulosin",
               "Pain: tylenol PRN", "OSA: CPAP at night"],
    "g_dispo": ["Dispo: home with services", "Dispo: home", "Dispo: SNF", "Dispo: home with PT",
                "Discharge home today", "Dispo: home once ambulating", "Dispo: rehab", "F/u PCP in 1 week"],
    "g_ed_dispo": ["Admit to MICU", "Admit to medicine", "Admit to stepdown", "Dispo: floor", "Admitting to the ICU",
                   "Bed request placed for tele", "Dispo: stepdown", "Admit to hospitalist"],
    "g_agesex": ["{age}-year-old {sexw}", "{age}{sexl}", "{age} y/o {sexl}", "{age}yo {sexword}",
                 "{age} year old {sexw}", "{age}-year-old {sexword}", "{age} yo {sexl}"],
    "g_with": ["with", "w/", "with a history of", "with PMH of", "with PMHx", "h/o", "with a PMH significant for"],
    "g_pw": ["presenting with", "p/w", "who presented with", "admitted with", "brought in by EMS for",
             "sent in from clinic with", "who presents with", "here with"],
    "g_vitals": [
        "Vitals: T {t} HR {hr} BP {sbp}/{dbp} RR {rr} SpO2 {spo2}% {o2dev}.",
        "VS: {t}, {hr}, {sbp}/{dbp}, {rr}, {spo2}% {o2dev}.",
        "T {t}, P {hr}, BP {sbp}/{dbp}, RR {rr}, O2 sat {spo2}% on {o2dev}.",
        "On arrival: temp {tf}F, pulse {hr}, BP {sbp}/{dbp}, RR {rr}, sat {spo2}% on {o2dev}.",
        "Vitals on admission: Tmax {t}, HR {hr}, BP {sbp}/{dbp} (MAP {map}), RR {rr}, {spo2}% {o2dev}.",
    ],
}

# Shared findings, stated when the note's physiology shows them (so they overlap between classes).
_SHARED: list[tuple[str, Callable[[dict], bool]]] = [
    ("[Febrile to|Tmax|Temp up to|Fever to] [{t} C|{tf}F|{t}][ on arrival| overnight|].", lambda v: v["t"] >= 38.0),
    ("[Tachycardic to|HR up to|Tachycardic at] {hr}[ on presentation| in the ED|].", lambda v: v["hr"] > 100),
    ("[Worsening|Progressive|Increased] [shortness of breath|SOB|dyspnea|dyspnea on exertion][ over {days} days|].",
     lambda v: v["rr"] > 21),
    ("[Leukocytosis to|WBC|White count] {wbc}[ on admission|].", lambda v: v["wbc"] > 11.5),
    ("[Creatinine|Cr] [elevated at|of|was] {cr}[ on admission|].", lambda v: v["cr"] >= 1.4),
    ("[Hypoxic to|Sats|SpO2|Desatted to] {spo2}% on [RA|room air].", lambda v: v["spo2"] < 93),
    ("[Hypotensive to {sbp}/{dbp}|BP {sbp}/{dbp}|SBP in the {sbp10}s|SBP {sbp}][ in the ED|].", lambda v: v["sbp"] < 97),
    ("[Generalized weakness|Fatigue|Malaise] and poor [oral|PO] intake for [several|a few|{days}] days.", lambda v: True),
    ("[Nausea and vomiting|N/V] with [abdominal pain|poor PO intake].", lambda v: v["hco3"] < 18 or v["cr"] >= 1.4),
    ("[Received|Got|Given] [IV fluid boluses|{fluid_l} L IVF|fluids] in the ED.",
     lambda v: v["sbp"] < 97 or v["glu"] > 300 or v["cr"] >= 1.4),
    ("[Tachypneic|RR] [to |]{rr}[ on arrival|].", lambda v: v["rr"] > 23),
    ("[Lactate|Lactic acid] {lac}[ in the ED|].", lambda v: v["lac"] > 2.2),
]

_CLASS_MEDS = {HF: "meds:h", COPD: "meds:c", DKA: "meds:d"}
# How often a note states its diagnosis's usual chronic background (COPD exacerbations happen to COPD patients).
_BACKGROUND = {HF: 0.5, COPD: 0.7, DKA: 0.6, AKI: 0.15, SEPSIS: 0.1, PNA: 0.1}

_TYPOS = {
    "patient": "pateint", "received": "recieved", "creatinine": "creatnine", "shortness": "shortnes",
    "abdominal": "abdominl", "bilateral": "bilaterl", "antibiotics": "antibiotcs", "admission": "admision",
    "pneumonia": "pnuemonia", "sepsis": "sepis", "failure": "faliure", "injury": "injry",
    "exacerbation": "exacerbaton", "ketoacidosis": "ketoacidossis", "diabetic": "diabetc", "furosemide": "furosemid",
    "vancomycin": "vancomcyin", "ceftriaxone": "ceftriaxon", "azithromycin": "azithromicin",
    "norepinephrine": "norepinepherine", "lactate": "lactat", "hypotension": "hypotenstion",
    "tachycardic": "tachycardiac", "wheezing": "wheezeing", "albuterol": "albuteral", "edema": "edma",
    "consolidation": "consolodation", "infiltrate": "infilrate", "cultures": "culures", "ketones": "ketons",
    "glucose": "glucoe", "dyspnea": "dypsnea", "acidosis": "acidossis", "respiratory": "respiratroy",
    "pressors": "presors", "discharge": "dischrage", "emphysema": "emphysyma", "bacteremia": "bacteremeia",
    "hydronephrosis": "hydronephorsis", "nephrology": "nephrolgy", "potassium": "potasium", "sputum": "sputem",
    "levophed": "levofed", "zosyn": "zoysn", "cefepime": "cefapime", "meropenem": "meropenam",
    "orthopnea": "orthopnia", "insulin": "insuln", "hypoxic": "hypoxix", "diuresis": "diuresiss",
}

# ---- grammar machinery ---------------------------------------------------------------------------
_Parts = tuple  # of str | (0, value key) | (1, slot name) | (2, tuple of _Parts)
_VALUE = re.compile(r"\{([A-Za-z0-9_]+)\}")
_SLOT = re.compile(r"<([a-z]+[a-z_:]*)>")


def _compile(text: str) -> _Parts:
    return _parse(text, 0, top=True)[0]


def _parse(text: str, i: int, top: bool) -> tuple[_Parts, int]:
    """Parse from i to the end (top) or to the ']' or '|' closing an inline alternative."""
    parts: list = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            parts.append("".join(literal))
            literal.clear()

    while i < len(text):
        ch = text[i]
        if ch == "[":
            flush()
            alts = []
            i += 1
            while True:
                alt, i = _parse(text, i, top=False)
                alts.append(alt)
                if text[i] == "]":
                    i += 1
                    break
                i += 1  # '|'
            parts.append((2, tuple(_plain(a) for a in alts)))
        elif not top and ch in "|]":
            break
        elif ch == "{" and (m := _VALUE.match(text, i)):
            flush()
            parts.append((0, m.group(1)))
            i = m.end()
        elif ch == "<" and (m := _SLOT.match(text, i)):
            flush()
            parts.append((1, m.group(1)))
            i = m.end()
        else:
            literal.append(ch)
            i += 1
    else:
        if not top:
            raise ValueError(f"unclosed '[' in {text!r}")
    flush()
    return tuple(parts), i


def _plain(parts: _Parts) -> _Parts | str:
    """An alternative without markup as a bare string (expanded without a recursive call)."""
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 and isinstance(parts[0], str) else parts


def _is_class_slot(name: str) -> bool:
    return ":" in name or name[:2] in {"s_", "p_", "h_", "k_", "c_", "d_"}


_COMPILED: dict[str, tuple[_Parts | str, ...]] = {
    name: tuple(_plain(_compile(t)) for t in alts) for name, alts in _SLOTS.items()
}
_SHARED_COMPILED = [(_compile(t), shows) for t, shows in _SHARED]
_BANK_CACHE: dict[str | None, dict[str, tuple[_Parts, ...]]] = {}


def _bank(which: str | None) -> dict[str, tuple[_Parts, ...]]:
    """The slot table. which="a"/"b": each class slot keeps only its even/odd alternatives (two disjoint
    halves of every class's phrase bank, for checking generalisation to unseen phrasings); None: all."""
    if which not in _BANK_CACHE:
        if which not in (None, "a", "b"):
            raise ValueError(f"bank must be None, 'a' or 'b', got {which!r}")
        start = {"a": 0, "b": 1}.get(which or "")
        table = {}
        for name, alts in _COMPILED.items():
            if start is not None and _is_class_slot(name) and len(alts) > 1:
                alts = alts[start::2]
            table[name] = alts
        _BANK_CACHE[which] = table
    return _BANK_CACHE[which]


class _Rand:
    """Uniform draws from a numpy Generator, buffered: one scalar numpy call per draw would be 10x slower."""

    __slots__ = ("u",)

    def __init__(self, gen: np.random.Generator) -> None:
        def stream():
            while True:
                yield from gen.random(4096).tolist()

        self.u: Callable[[], float] = stream().__next__  # the next uniform in [0, 1)

    def pick(self, seq: Sequence):
        return seq[int(self.u() * len(seq))]

    def ri(self, lo: int, hi: int) -> int:
        return lo + int(self.u() * (hi - lo + 1))

    def rf(self, lo: float, hi: float, digits: int = 1) -> float:
        return round(lo + (hi - lo) * self.u(), digits)

    def shuffle(self, xs: list) -> None:
        for i in range(len(xs) - 1, 0, -1):
            j = int(self.u() * (i + 1))
            xs[i], xs[j] = xs[j], xs[i]

    def sample(self, seq: Sequence, k: int) -> list:
        xs = list(seq)
        for i in range(min(k, len(xs))):
            j = i + int(self.u() * (len(xs) - i))
            xs[i], xs[j] = xs[j], xs[i]
        return xs[:k]

    def poisson(self, lam: float) -> int:
        limit, k, p = math.exp(-lam), 0, self.u()
        while p > limit:
            k += 1
            p *= self.u()
        return k


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


class _Vals(dict):
    """The note's vitals and labs, drawn on first use and shifted by its true diagnoses (overlapping ranges)."""

    def __init__(self, r: _Rand, truth: Sequence[str], patient: _Patient) -> None:
        super().__init__()
        self.r, self.has, self.chronic = r, frozenset(truth), frozenset(patient.chronic)
        woman = patient.sex == "woman"
        self.update(age=patient.age, sexw=patient.sex, sexl="F" if woman else "M",
                    sexword="female" if woman else "male", Pron="She" if woman else "He",
                    obj="her" if woman else "him", poss="her" if woman else "his")

    def __missing__(self, key: str):
        value = _VALUES[key](self, self.r, self.has)
        self[key] = value
        return value


def _two(sick: bool, r: _Rand, bad: tuple[float, float], good: tuple[float, float], digits: int = 0):
    lo, hi = bad if sick else good
    return r.ri(int(lo), int(hi)) if digits == 0 else r.rf(lo, hi, digits)


_VALUES: dict[str, Callable[[_Vals, _Rand, frozenset], object]] = {
    "t": lambda v, r, h: _two(bool(h & {SEPSIS, PNA}) and r.u() < 0.8, r, (38.1, 40.0), (36.4, 37.9), 1),
    "tf": lambda v, r, h: round(v["t"] * 9 / 5 + 32, 1),
    "hr": lambda v, r, h: _two(bool(h & {SEPSIS, DKA, COPD}) or r.u() < 0.2, r, (102, 138), (62, 104)),
    "sbp": lambda v, r, h: _two((SEPSIS in h and r.u() < 0.7) or r.u() < 0.06, r, (72, 96), (98, 168)),
    "dbp": lambda v, r, h: min(_two(v["sbp"] < 100, r, (38, 58), (54, 92)), v["sbp"] - 25),
    "sbp10": lambda v, r, h: v["sbp"] // 10 * 10,
    "map": lambda v, r, h: round((v["sbp"] + 2 * v["dbp"]) / 3),
    "sbpn": lambda v, r, h: r.ri(68, 92),  # the nadir during a shock state
    "dbpn": lambda v, r, h: r.ri(32, 54),
    "mapn": lambda v, r, h: r.ri(46, 64),
    "rr": lambda v, r, h: _two(bool(h & {COPD, PNA, HF, DKA}), r, (22, 34), (14, 21)),
    "spo2": lambda v, r, h: _two(bool(h & {COPD, PNA, HF}), r, (82, 92), (93, 99)),
    "o2": lambda v, r, h: r.ri(2, 6),
    "o2home": lambda v, r, h: r.ri(1, 3),
    "o2dev": lambda v, r, h: f"{v['o2']}L NC" if v["spo2"] < 90 and r.u() < 0.5 else "RA",
    "wbc": lambda v, r, h: _two(bool(h & {SEPSIS, PNA}) or (DKA in h and r.u() < 0.5), r, (12.5, 24.0), (4.5, 11.8), 1),
    "bands": lambda v, r, h: r.ri(8, 22),
    "cr0": lambda v, r, h: r.rf(1.4, 1.9) if AKI in v.chronic else r.rf(0.6, 1.2),
    "cr": lambda v, r, h: round(v["cr0"] * (r.rf(1.8, 3.5, 2) if AKI in h else r.rf(0.9, 1.25, 2)), 1),
    "cr1": lambda v, r, h: round(v["cr0"] * r.rf(1.0, 1.4, 2), 1) if AKI in h else v["cr"],
    "crcl": lambda v, r, h: r.ri(18, 45),
    "bun": lambda v, r, h: _two(AKI in h, r, (38, 96), (9, 24)),
    "k": lambda v, r, h: _two(bool(h & {AKI, DKA}) and r.u() < 0.7, r, (5.3, 6.8), (3.4, 4.9), 1),
    "na": lambda v, r, h: r.ri(132, 142),
    "nac": lambda v, r, h: r.ri(128, 136),
    "hgb": lambda v, r, h: r.rf(8.5, 13.5),
    "bnp": lambda v, r, h: _two((HF in h and r.u() < 0.85) or (bool(h & {AKI, COPD}) and r.u() < 0.2), r,
                                (620, 3900), (15, 480)),
    "bnp0": lambda v, r, h: r.ri(150, 600),
    "ef": lambda v, r, h: r.pick((15, 20, 25, 30, 35, 40, 45, 55, 60) if HF in h else (55, 60, 65)),
    "trop": lambda v, r, h: r.rf(0.02, 0.09, 2),
    "net": lambda v, r, h: r.rf(2.0, 8.5),
    "wt": lambda v, r, h: r.ri(4, 16),
    "wtkg": lambda v, r, h: r.ri(2, 7),
    "dryw": lambda v, r, h: r.ri(58, 118),
    "lasix": lambda v, r, h: r.pick((40, 60, 80, 120)),
    "lasixpo": lambda v, r, h: r.pick((20, 40, 60, 80)),
    "glu": lambda v, r, h: _two(DKA in h or (DKA in v.chronic and r.u() < 0.3), r, (340, 720), (85, 260)),
    "ag": lambda v, r, h: _two(DKA in h or (SEPSIS in h and r.u() < 0.3), r, (19, 34), (8, 15)),
    "hco3": lambda v, r, h: (r.ri(5, 15) if DKA in h else r.ri(14, 20) if bool(h & {AKI, SEPSIS}) and r.u() < 0.5
                              else r.ri(19, 29)),
    "bhb": lambda v, r, h: _two(DKA in h, r, (3.5, 9.8), (0.1, 0.5), 1),
    "a1c": lambda v, r, h: _two(DKA in h or DKA in v.chronic, r, (8.5, 14.5), (5.2, 7.4), 1),
    "osm": lambda v, r, h: r.ri(298, 335),
    "ph": lambda v, r, h: _two(bool(h & {DKA, COPD}), r, (7.05, 7.32), (7.35, 7.45), 2),
    "pco2": lambda v, r, h: _two(COPD in h, r, (52, 82), (33, 46)),
    "pco2low": lambda v, r, h: r.ri(12, 24),
    "po2": lambda v, r, h: r.ri(52, 78),
    "lac": lambda v, r, h: _two((SEPSIS in h and r.u() < 0.85) or r.u() < 0.1, r, (2.3, 6.8), (0.7, 1.9), 1),
    "lac2": lambda v, r, h: r.rf(1.0, 2.2),
    "pct": lambda v, r, h: _two(bool(h & {SEPSIS, PNA}), r, (1.2, 38.0), (0.03, 0.24), 2),
    "fena": lambda v, r, h: r.rf(0.2, 0.9) if r.u() < 0.6 else r.rf(2.1, 4.5),
    "uop": lambda v, r, h: r.ri(150, 400),
    "pvr": lambda v, r, h: r.ri(450, 1100),
    "kdigo": lambda v, r, h: r.ri(1, 3),
    "sofa": lambda v, r, h: r.ri(2, 6),
    "pef": lambda v, r, h: r.ri(110, 220),
    "pef2": lambda v, r, h: v["pef"] + r.ri(30, 90),
    "pack": lambda v, r, h: r.ri(20, 90),
    "days": lambda v, r, h: r.ri(2, 5),
    "abx_days": lambda v, r, h: r.pick((5, 7, 10, 14)),
    "fluid_l": lambda v, r, h: r.pick((2, 2.5, 3, 4)),
    "mlkg": lambda v, r, h: 30,
    "curb": lambda v, r, h: r.ri(1, 4),
    "psi": lambda v, r, h: r.pick(("II", "III", "IV", "V")),
    "units": lambda v, r, h: r.ri(10, 40),
}


class _Writer:
    """Expands slots for one note: `say("find:s")` -> one sentence of the slot's grammar."""

    __slots__ = ("r", "v", "slots")

    def __init__(self, r: _Rand, v: _Vals, slots: dict[str, tuple[_Parts, ...]]) -> None:
        self.r, self.v, self.slots = r, v, slots

    def say(self, slot: str) -> str:
        alts = self.slots[slot]
        alt = alts[int(self.r.u() * len(alts))]
        if alt.__class__ is str:
            return alt
        out: list[str] = []
        self._expand(alt, out)
        return "".join(out)

    def text(self, parts: _Parts | str) -> str:
        if parts.__class__ is str:
            return parts
        out: list[str] = []
        self._expand(parts, out)
        return "".join(out)

    def _expand(self, parts: _Parts, out: list[str]) -> None:
        u = self.r.u
        for p in parts:
            if p.__class__ is str:
                out.append(p)
            elif p[0] == 0:
                out.append(str(self.v[p[1]]))
            else:
                alts = self.slots[p[1]] if p[0] == 1 else p[1]
                alt = alts[int(u() * len(alts))]
                if alt.__class__ is str:
                    out.append(alt)
                else:
                    self._expand(alt, out)


def _cap(s: str) -> str:
    """Upper-case a sentence's first letter unless its first word has capitals already (pH, qSOFA, mL)."""
    space = s.find(" ")
    first = s if space < 0 else s[:space]
    return s[0].upper() + s[1:] if first.islower() else s


# ---- public API -------------------------------------------------------------------------------------
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
    """`n` seeded discharge summaries. `min/max_sentences` bound the drawn length of the narrative (findings,
    shared findings, negations; filler tops it up to the draw, many findings may run past it); `mention_rate` is the chance a true diagnosis is named in the plan (and
    scales how often it is named in the complaint), `negation_rate` the chance of a negated other diagnosis
    in the plan (a third of it per absent class in the narrative), `stray_rate` the chance per absent class
    of one of its findings (overlap); `typo_rate` the chance per word of a misspelling (words under 5
    letters and numbers are left alone); `notes_per_patient` is the mean number of notes per patient.
    Label noise and misspellings draw from their own random streams: `label_noise` never changes a text,
    and `typo_rate` changes only the misspelt words."""
    return _generate(n, seed, min_sentences=min_sentences, max_sentences=max_sentences, label_noise=label_noise,
                     mention_rate=mention_rate, negation_rate=negation_rate, stray_rate=stray_rate,
                     typo_rate=typo_rate, notes_per_patient=notes_per_patient)


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


# ---- generation -------------------------------------------------------------------------------------
def _generate(
    n: int,
    seed: int,
    *,
    min_sentences: int = 5,
    max_sentences: int = 10,
    label_noise: float = 0.03,
    mention_rate: float = 0.5,
    negation_rate: float = 0.5,
    stray_rate: float = 0.1,
    typo_rate: float = 0.02,
    notes_per_patient: float = 1.6,
    bank: str | None = None,
) -> Notes:
    """`generate`, plus `bank`: "a"/"b" draws every class phrase from one half of its bank (see `_bank`)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= min_sentences <= max_sentences:
        raise ValueError(f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}")
    style = _Style(min_sentences, max_sentences, mention_rate, negation_rate, stray_rate, typo_rate)
    slots = _bank(bank)
    r = _Rand(np.random.default_rng(seed))
    noise_rng = np.random.default_rng([seed, 1])  # separate streams: texts depend on neither label noise
    typo_r = _Rand(np.random.default_rng([seed, 2]))  # nor on the misspelling draws
    texts: list[str] = []
    labels: list[list[str]] = []
    note_ids: list[str] = []
    patient_ids: list[str] = []
    n_patients = 0
    while len(texts) < n:
        n_patients += 1
        patient = _new_patient(r, slots, n_patients)
        visits = 1 + r.poisson(max(notes_per_patient - 1.0, 0.0))
        primary = ""
        for _ in range(min(visits, n - len(texts))):
            # Readmissions tend to repeat the diagnosis.
            primary = primary if primary and r.u() < 0.4 else r.pick(CLASSES)
            truth = _label_set(r, primary)
            text = _note(r, slots, patient, truth, primary, style)
            texts.append(_misspell(typo_r, text, typo_rate))
            labels.append(_noisy(noise_rng, truth, label_noise))
            note_ids.append(f"N{len(texts):06d}")
            patient_ids.append(patient.pid)
    meta = {"source": "steuops.demo.notes", "seed": seed, "classes": list(CLASSES)}
    return Notes(texts=texts, labels=labels, note_ids=note_ids, patient_ids=patient_ids, meta=meta)


def _new_patient(r: _Rand, slots: dict, number: int) -> _Patient:
    chronic = [c for c in CLASSES if r.u() < 0.12]
    w = _Writer(r, _Vals(r, (), _Patient("", 0, "man", [])), slots)
    history = [w.say(f"hist:{_KEY[c]}") for c in chronic]
    history += [w.text(p) for p in r.sample(slots["g_hist"], r.ri(1, 3))]
    r.shuffle(history)
    return _Patient(f"P{number:05d}", r.ri(24, 91), r.pick(("man", "woman")), history, chronic)


def _label_set(r: _Rand, primary: str) -> list[str]:
    chosen = {primary}
    for other, p in _COOCCUR[primary]:
        if r.u() < p:
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


_KINDS = (("discharge", 0.35), ("course", 0.25), ("signout", 0.2), ("plan", 0.2))


_AN = re.compile(r" a (?=[aeioAEIO])")


def _note(r: _Rand, slots: dict, patient: _Patient, truth: list[str], primary: str, style: _Style) -> str:
    return _AN.sub(" an ", _compose(r, slots, patient, truth, primary, style))  # "a abdominal" -> "an abdominal"


def _compose(r: _Rand, slots: dict, patient: _Patient, truth: list[str], primary: str, style: _Style) -> str:
    v = _Vals(r, truth, patient)
    w = _Writer(r, v, slots)
    absent = [c for c in CLASSES if c not in truth]
    roll, kind = r.u(), _KINDS[-1][0]
    for name, p in _KINDS:
        if roll < p:
            kind = name
            break
        roll -= p

    # The diagnosis's own findings, per class: some diagnoses leave little trace in the narrative (hard cases).
    findings = {c: [_cap(w.text(t)) for t in r.sample(slots[f"find:{_KEY[c]}"], r.pick((0, 1, 2, 2, 2, 3, 3, 3, 4, 4)))]
                for c in truth}
    other = _background(r, w, v, absent, style)
    count = r.ri(style.min_sentences, style.max_sentences)
    have = sum(len(f) for f in findings.values()) + len(other)
    if have < count:
        other += [_cap(w.text(p)) for p in r.sample(slots["g_filler"], count - have)]

    one = _one_liner(r, w, patient, truth, primary, style, terse=kind == "signout")
    dx_items, other_items = _plan_items(r, w, patient, truth, absent, style)
    if not dx_items and not other_items:
        other_items = [_cap(w.say("g_dispo")) + "."]
    extras = _extras(r, w, patient, truth, kind)

    if kind == "course":  # brief hospital course by problem: each diagnosis's findings sit under its problem
        r.shuffle(other)
        head = r.pick(("Brief hospital course:", "Hospital course:", "BHC:", "Hospital course by problem:"))
        problems = []
        for c in truth:
            sentences = findings[c] + [_cap(w.say(f"plan:{_KEY[c]}")) + "."]
            problems.append(f"# {_problem_name(r, w, c, style)}: " + " ".join(sentences))
        r.shuffle(problems)
        tail = [f"# {item}" for item in other_items if not item.startswith(("Dispo", "Discharge", "F/u"))]
        return "\n".join([f"{head} {one}. " + " ".join(other), *extras, *problems, *tail,
                          _cap(w.say("g_dispo")) + "."])

    plan = other_items + dx_items if r.u() < 0.3 else dx_items + other_items
    bullet = r.pick(("# ", "- ", "", "{i}. ", "{i}) "))
    plan_lines = [(bullet.replace("{i}", str(i + 1)) if bullet else "") + item for i, item in enumerate(plan)]
    plan_text = "\n".join(plan_lines) if bullet else " ".join(plan_lines)
    sentences = [s for f in findings.values() for s in f] + other
    r.shuffle(sentences)
    if kind == "signout":
        head = r.pick(("ED sign-out:", "ED signout:", "Sign-out from ED:", "ED course:", "Admission H&P (ED summary):"))
        return "\n".join([f"{head} {one}. " + " ".join([*extras, *sentences]) + f" {w.say('g_ed_dispo')}.",
                          r.pick(("A/P:", "Plan:", "Assessment/plan:")) + (" " if not bullet else "\n") + plan_text])
    if kind == "plan":
        head = r.pick(("Assessment and plan:", "A/P:", "Assessment/Plan:", "Impression and plan:", "ASSESSMENT AND PLAN:"))
        return "\n".join([f"{head} {one}. " + " ".join(sentences), *extras, plan_text])
    cut = r.ri(0, len(sentences) - 1)  # the hospital course gets at least one sentence
    cc = w.say(f"cc:{_KEY[primary]}") if r.u() >= style.mention_rate * 0.4 else _mention(w, primary)
    return "\n".join([
        r.pick(("Chief complaint:", "CC:", "Reason for admission:")) + f" {cc}.",
        r.pick(("HPI:", "History of present illness:", "HPI -")) + f" {one}. " + " ".join(sentences[:cut]),
        r.pick(("Hospital course:", "Course:", "Hospital course summary:")) + " " + " ".join(sentences[cut:]),
        *extras,
        r.pick(("Assessment and plan:", "A/P:", "Discharge diagnoses and plan:", "Assessment/Plan:"))
        + ("\n" if bullet else " ") + plan_text,
    ])


def _background(r: _Rand, w: _Writer, v: _Vals, absent: list[str], style: _Style) -> list[str]:
    """Shared findings (when the physiology shows them), negated absent classes, stray findings."""
    out = []
    for parts, shows in _SHARED_COMPILED:
        if r.u() < 0.3 and shows(v):  # draw first: most values are then never computed
            out.append(_cap(w.text(parts)))
    for c in absent:
        if r.u() < style.negation_rate / 3:
            out.append(_cap(w.say(f"neg:{_KEY[c]}")))
        elif r.u() < style.stray_rate:  # a stray finding of an absent class: overlap and noise
            out.append(_cap(w.say(f"find:{_KEY[c]}")))
    return out


def _mention(w: _Writer, c: str) -> str:
    return w.say(f"ment:{_KEY[c]}")


def _problem_name(r: _Rand, w: _Writer, c: str, style: _Style) -> str:
    return _cap(_mention(w, c) if r.u() < style.mention_rate else w.say(f"head:{_KEY[c]}"))


def _one_liner(r: _Rand, w: _Writer, patient: _Patient, truth: list[str], primary: str, style: _Style,
               terse: bool) -> str:
    history = list(patient.history)
    for c in truth:  # the usual background of the diagnosis (a COPD flare in a COPD patient)
        if c not in patient.chronic and r.u() < _BACKGROUND[c]:
            history.insert(r.ri(0, len(history)), w.say(f"hist:{_KEY[c]}"))
    complaint = _mention(w, primary) if r.u() < style.mention_rate * 0.3 else w.say(f"cc:{_KEY[primary]}")
    if terse:
        return f"{w.v['age']}{w.v['sexl']} h/o {', '.join(history)} p/w {complaint}"
    joined = history[0] if len(history) == 1 else ", ".join(history[:-1]) + " and " + history[-1]
    return f"{_cap(w.say('g_agesex'))} {w.say('g_with')} {joined} {w.say('g_pw')} {complaint}"


def _plan_items(r: _Rand, w: _Writer, patient: _Patient, truth: list[str], absent: list[str],
                style: _Style) -> tuple[list[str], list[str]]:
    """Assessment/plan items: (one per true diagnosis, named or behind a problem heading; the others: chronic
    look-alikes, a negated other diagnosis, a stray treatment, generic items, maybe a dispo line last)."""
    ordered = sorted(truth, key=lambda c: r.u())
    items = []
    for c in ordered:
        if r.u() > 0.92:  # the plan leaves this diagnosis out
            continue
        k = _KEY[c]
        roll = r.u()
        if roll < 0.55:
            body = f"{w.say(f'brief:{k}')}; {w.say(f'plan:{k}')}"
        elif roll < 0.75:
            body = w.say(f"plan:{k}")
        else:
            body = f"{w.say(f'brief:{k}')}, {w.say(f'brief:{k}')}. {_cap(w.say(f'plan:{k}'))}"
        if r.u() < style.mention_rate:
            items.append(f"{_cap(_mention(w, c))}: {body}.")
        elif r.u() < 0.85:
            items.append(f"{_cap(w.say(f'head:{k}'))}: {body}.")
        else:
            items.append(f"{_cap(body)}.")
    others = []
    for c in absent:
        if c in patient.chronic and r.u() < 0.5:
            others.append(_cap(w.say(f"chron:{_KEY[c]}")) + ".")
        if r.u() < style.stray_rate / 3:  # plans overlap: antibiotics, fluids and diuretics serve several diagnoses
            others.append(_cap(w.say(f"plan:{_KEY[c]}")) + ".")
    if absent and r.u() < style.negation_rate:
        others.append(_cap(w.say(f"neg:{_KEY[r.pick(absent)]}")))
    others += [w.text(p) + "." for p in r.sample(w.slots["g_plan"], r.pick((0, 0, 0, 1, 1, 2)))]
    r.shuffle(others)
    if r.u() < 0.4:
        others.append(w.say("g_dispo") + ".")
    return items, others


def _extras(r: _Rand, w: _Writer, patient: _Patient, truth: list[str], kind: str) -> list[str]:
    """Optional medication, vitals and labs lines."""
    out = []
    if kind == "discharge" and r.u() < 0.25:
        meds = [w.text(p) for p in r.sample(w.slots["g_meds"], r.ri(2, 4))]
        for c in CLASSES:  # fixed order: reproducible under any PYTHONHASHSEED
            if c in _CLASS_MEDS and (c in patient.chronic or c in truth) and r.u() < 0.6:
                meds.append(w.say(_CLASS_MEDS[c]))
        out.append("Medications: " + ", ".join(meds) + ".")
    if r.u() < 0.5:
        out.append(w.say("g_vitals"))
    if r.u() < 0.55:
        out.append(_labs(r, w.v, truth))
    return out


# Lab items: (value key, name variants, which classes make the lab worth stating).
_LABS: list[tuple[str, tuple[str, ...], frozenset]] = [
    ("wbc", ("WBC", "WBC", "white count"), frozenset({SEPSIS, PNA})),
    ("cr", ("Cr", "creatinine", "Creat"), frozenset({AKI})),
    ("bun", ("BUN",), frozenset({AKI})),
    ("k", ("K", "potassium"), frozenset({AKI, DKA})),
    ("bnp", ("BNP", "proBNP"), frozenset({HF})),
    ("glu", ("glucose", "BG", "gluc"), frozenset({DKA})),
    ("ag", ("AG", "anion gap", "gap"), frozenset({DKA})),
    ("hco3", ("HCO3", "bicarb", "CO2"), frozenset({DKA})),
    ("lac", ("lactate", "lactic acid", "LA"), frozenset({SEPSIS})),
    ("ph", ("pH", "VBG pH"), frozenset({DKA, COPD})),
    ("pco2", ("pCO2",), frozenset({COPD})),
    ("pct", ("procal", "procalcitonin"), frozenset({PNA, SEPSIS})),
]


def _labs(r: _Rand, v: _Vals, truth: list[str]) -> str:
    has = set(truth)
    items = [f"{r.pick(names)} {v[key]}" for key, names, why in _LABS if r.u() < (0.75 if why & has else 0.25)]
    if not items:
        items = [f"WBC {v['wbc']}", f"Cr {v['cr']}"]
    return r.pick(("Labs: ", "Labs notable for ", "Pertinent labs: ", "Admission labs: ")) + ", ".join(items) + "."


def _misspell(r: _Rand, text: str, rate: float) -> str:
    """Common clinical misspellings, else a swapped, dropped or doubled letter in a word of 5+ letters.
    Positions are drawn by geometric skips, so a note costs a few draws rather than one per word."""
    if rate <= 0:
        return text
    words = text.split(" ")
    log_keep = math.log1p(-rate) if rate < 1 else -math.inf
    i = -1
    while True:
        u = r.u()
        i += 1 + (int(math.log(u) / log_keep) if u > 0 and log_keep > -math.inf else 0)
        if i >= len(words):
            break
        word = words[i]
        core = word.rstrip(".,;:)")
        rest = word[len(core):]
        lower = core.lower()
        if lower in _TYPOS:
            typo = _TYPOS[lower]
            words[i] = (typo[0].upper() + typo[1:] if core[:1].isupper() else typo) + rest
        elif len(core) >= 5 and core.isalpha():
            j = r.ri(1, len(core) - 2)
            op = r.u()
            if op < 0.5:
                core = core[:j] + core[j + 1] + core[j] + core[j + 2:]
            elif op < 0.75:
                core = core[:j] + core[j + 1:]
            else:
                core = core[:j] + core[j] + core[j:]
            words[i] = core + rest
    return " ".join(words)
