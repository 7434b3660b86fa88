"""Concept hierarchies (steuops.hierarchy): the file format and its errors, matching notes and word pieces,
level weights, the built-in demo hierarchy and building one from an ICD-10 table. No mocks: real YAML
files, real tokenizers built in code, real demo notes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from steuops.errors import ConfigError
from steuops.hierarchy import (
    DEFAULT_LEVEL_WEIGHTS,
    FORMAT,
    Hierarchy,
    builtin,
    from_icd10,
    note_weights,
    protected,
    read_icd10_csv,
)

DEMO_CLASSES = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation",
                "diabetic ketoacidosis"]

SEPSIS = {4: ["sepsis", "septic shock", "995.91", "A41.9"], 3: ["blood cultures", "lactate", r"re:\bnorepi\w*"],
          2: ["fever", "hypotension"], 1: ["patient", "admitted"]}


def write(tmp_path, text: str, name: str = "h.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- built-in -----------------------------------------------------------------------------------------
def test_builtin_has_every_demo_class():
    h = builtin()
    assert h.source == "built-in"
    assert list(h.classes) == DEMO_CLASSES
    for name in DEMO_CLASSES:
        assert h.classes[name][4], name
        assert h.classes[name][1], name  # the shared foundational list (a YAML alias) reached every class
    assert h.classes["sepsis"][1] == h.classes["diabetic ketoacidosis"][1]
    assert h.classes["sepsis"][1] is not h.classes["pneumonia"][1]  # copied, not one list shared


def test_builtin_l4_names_no_other_class():
    h = builtin()
    for a in DEMO_CLASSES:
        only_a = Hierarchy({a: {4: h.classes[a][4]}}, "test")
        for b in DEMO_CLASSES:
            if a != b:
                hits = only_a.note_levels(h.classes[b][4])[:, 3]
                assert not hits.any(), (a, b, [e for e, hit in zip(h.classes[b][4], hits, strict=True) if hit])


@pytest.fixture(scope="module")
def demo_notes():
    from steuops.demo.notes import generate

    return generate(n=300, seed=11)


def test_builtin_levels_on_demo_notes(demo_notes):
    h = builtin()
    for name in DEMO_CLASSES:
        levels = h.for_classes([name]).note_levels(demo_notes.texts)
        labelled = np.array([name in labels for labels in demo_notes.labels])
        with_class, without = levels[labelled, 3].mean(), levels[~labelled, 3].mean()
        # Class names also sit in negations and chronic histories of other notes: enriched, not exclusive.
        assert with_class > 0.4 and with_class > 2 * without, (name, with_class, without)
    assert h.note_levels(demo_notes.texts)[:, 0].mean() > 0.95  # foundational language is in every note


def test_builtin_l4_pieces_stay_out_of_other_classes(demo_notes):
    from steuops.tiny import wordpiece_tokenizer

    tok = wordpiece_tokenizer(demo_notes.texts, vocab_size=600)
    h = builtin()
    maps = {name: h.for_classes([name]).token_levels(tok) for name in DEMO_CLASSES}
    # the pieces of each class's own names: forgetting another class must not fully target any of them
    # ("failure" of acute renal failure is also heart failure's; the AKI section keeps it at L2)
    names = {name: set(Hierarchy({name: {4: h.classes[name][4]}}).token_levels(tok)) for name in DEMO_CLASSES}
    for a in DEMO_CLASSES:
        targets = {i for i, level in maps[a].items() if level == 4}
        assert targets, a
        for b in DEMO_CLASSES:
            shared = targets & names[b] if a != b else set()
            assert not shared, (a, b, tok.convert_ids_to_tokens(sorted(shared)))
    assert tok.convert_tokens_to_ids("sepsis") in {i for i, lv in maps["sepsis"].items() if lv == 4}
    assert maps["sepsis"][tok.convert_tokens_to_ids("admitted")] == 1


# ---- format: round trip and odd class names ----------------------------------------------------------
def test_to_dict_from_dict_round_trip(tmp_path):
    h = Hierarchy({"sepsis": SEPSIS, "Sepsis, unspecified organism": {4: ["A41.9"]}, "995.91": {4: ["995.91"]}},
                  "test")
    data = h.to_dict()
    assert data["format"] == FORMAT
    assert list(data["classes"]["sepsis"]) == ["L4", "L3", "L2", "L1"]
    assert data["classes"]["995.91"] == {"L4": ["995.91"]}  # empty levels left out
    again = Hierarchy.from_dict(data, "test")
    assert again == h
    assert again.classes["995.91"] == {1: [], 2: [], 3: [], 4: ["995.91"]}
    loaded = Hierarchy.load(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    assert loaded.classes == h.classes
    assert loaded.source == str(tmp_path / "h.yaml")


def test_class_names_with_commas_and_codes(tmp_path):
    path = write(tmp_path, f"""format: {FORMAT}
classes:
  "Sepsis, unspecified organism":
    L4: [sepsis]
  "995.91":
    L4: [sepsis, "995.91"]
    L2: []
    L1:
""")
    h = Hierarchy.load(path)
    assert list(h.classes) == ["Sepsis, unspecified organism", "995.91"]
    assert h.for_classes(["995.91"]).classes["995.91"][4] == ["sepsis", "995.91"]
    assert h.for_classes(["Sepsis, unspecified organism"]).note_levels(["dx 995.91"])[0, 3] == np.False_
    assert h.for_classes(["995.91"]).note_levels(["dx 995.91"])[0, 3] == np.True_


def test_for_classes_subset_and_unknown_class(tmp_path):
    h = Hierarchy.load(write(tmp_path, f"format: {FORMAT}\nclasses:\n  sepsis: {{L4: [sepsis]}}\n"
                                       "  pneumonia: {L4: [pneumonia]}\n"))
    sub = h.for_classes(["pneumonia"])
    assert list(sub.classes) == ["pneumonia"] and sub.source == h.source
    assert sub.note_levels(["sepsis"])[0, 3] == np.False_
    with pytest.raises(ConfigError) as info:
        h.for_classes(["heart failure"])
    assert "'heart failure'" in str(info.value) and str(tmp_path / "h.yaml") in str(info.value)
    assert "sepsis, pneumonia" in info.value.hint
    with pytest.raises(ConfigError):
        h.for_classes([])


# ---- validation ---------------------------------------------------------------------------------------
ERRORS = {
    "unknown top-level key": (f"format: {FORMAT}\ndescription: x\nclasses: {{a: {{L4: [a]}}}}\n",
                              ["unknown top-level key 'description'"]),
    "missing format": ("classes: {a: {L4: [a]}}\n", ["format: missing", FORMAT]),
    "wrong format": ("format: steuops.hierarchy/v2\nclasses: {a: {L4: [a]}}\n", ["format:", "v2", FORMAT]),
    "unknown level": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L5: [sepsis]\n", ["classes.sepsis.L5", "unknown level"]),
    "level as a number": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    4: [sepsis]\n", ["classes.sepsis.4"]),
    "unquoted code": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L4: [sepsis, 995.91]\n",
                      ["classes.sepsis.L4[1]", "995.91", "float"]),
    "invalid regex": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L3: ['re:(lactate']\n",
                      ["classes.sepsis.L3[0]", "'re:(lactate'", "invalid regular expression"]),
    "regex matching nothing in particular": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L3: ['re:(lac)?']\n",
                                             ["classes.sepsis.L3[0]", "empty string"]),
    "empty classes": (f"format: {FORMAT}\nclasses: {{}}\n", ["classes: empty"]),
    "no classes": (f"format: {FORMAT}\n", ["classes: empty"]),
    "unquoted numeric class": (f"format: {FORMAT}\nclasses:\n  995.91:\n    L4: [sepsis]\n", ["995.91", "float"]),
    "class without levels": (f"format: {FORMAT}\nclasses:\n  sepsis:\n  L4: [sepsis]\n", ["classes.sepsis"]),
    "all levels empty": (f"format: {FORMAT}\nclasses:\n  sepsis: {{L4: [], L1: }}\n", ["classes.sepsis", "empty"]),
    "level not a list": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L4: sepsis\n", ["classes.sepsis.L4", "list"]),
    "empty entry": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L4: [sepsis, '  ']\n", ["classes.sepsis.L4[1]"]),
    "entry at two levels": (f"format: {FORMAT}\nclasses:\n  sepsis:\n    L4: [sepsis, Fever]\n    L2: [fever]\n",
                            ["classes.sepsis.L4[1]", "'Fever' is already at L2"]),
    "odd class name in the path": (f"format: {FORMAT}\nclasses:\n  heart failure:\n    L9: [chf]\n",
                                   ["classes['heart failure'].L9"]),
    "top level a list": ("- sepsis\n", ["top level must be a mapping"]),
    "not YAML": (f"format: {FORMAT}\nclasses:\n  sepsis: [a\n    L4: b: c\n", ["not valid YAML", "line"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_validation_errors_name_file_and_field(tmp_path, case):
    text, expected = ERRORS[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Hierarchy.load(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, (part, message)
    assert info.value.hint
    assert info.value.exit_code == 2


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such hierarchy file") as info:
        Hierarchy.load(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)
    assert "HIERARCHY.md" in info.value.hint


def test_hierarchy_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match=r"classes\.sepsis: unknown level 5"):
        Hierarchy({"sepsis": {5: ["sepsis"]}}, "code")
    with pytest.raises(ConfigError, match=r"code: classes\.sepsis\.L3\[0\]: invalid regular expression"):
        Hierarchy({"sepsis": {3: ["re:["]}}, "code")
    assert Hierarchy({"sepsis": {4: ["sepsis"]}}).classes["sepsis"] == {1: [], 2: [], 3: [], 4: ["sepsis"]}


# ---- matching notes -----------------------------------------------------------------------------------
def levels_of(entries: list[str], texts: list[str], level: int = 4) -> list[bool]:
    return Hierarchy({"x": {level: entries}}, "test").note_levels(texts)[:, level - 1].tolist()


def test_terms_match_case_insensitively_on_word_boundaries():
    texts = ["SEPSIS from a urinary source", "Sepsis.", "asepsis was maintained", "sepsiss", "(sepsis)", "x_sepsis", ""]
    assert levels_of(["sepsis"], texts) == [True, True, False, False, True, False, False]


def test_multi_word_terms_match_across_whitespace():
    texts = ["in SEPTIC  shock", "septic\nshock overnight", "septic, shock", "septic shockwave"]
    assert levels_of(["septic shock"], texts) == [True, True, False, False]


def test_codes_with_punctuation_and_digits():
    texts = ["dx: 995.91.", "ICD 995.911", "1995.91", "995,91", "code A41.9 coded", "a41.9", "A41.90"]
    assert levels_of(["995.91", "A41.9"], texts) == [True, False, False, False, True, True, False]
    assert levels_of(["E. coli"], ["grew e. coli", "grew E coli", "grew E. colic"]) == [True, False, False]


def test_regex_entries():
    texts = ["on norepinephrine", "Norepi at 0.1", "no pressors", "cap refill delayed", "admitted for CAP"]
    assert levels_of([r"re:\bnorepi\w*"], texts) == [True, True, False, False, False]
    assert levels_of([r"re:(?-i:\bCAP\b)"], texts) == [False, False, False, False, True]  # case-sensitive part


def test_note_levels_shape_and_columns():
    h = Hierarchy({"sepsis": SEPSIS}, "test")
    out = h.note_levels(["Patient admitted with fever", "septic shock, blood cultures x2", "nothing here"])
    assert out.dtype == np.bool_ and out.shape == (3, 4)
    assert out.tolist() == [[True, True, False, False], [False, False, True, True], [False, False, False, False]]
    assert h.note_levels([]).shape == (0, 4)


def test_note_levels_cover_every_class():
    h = Hierarchy({"sepsis": {4: ["sepsis"]}, "pneumonia": {4: ["pneumonia"], 2: ["cough"]}}, "test")
    assert h.note_levels(["pneumonia", "sepsis", "cough"])[:, [1, 3]].tolist() == [[False, True], [False, True],
                                                                                  [True, False]]


# ---- weights -------------------------------------------------------------------------------------------
WEIGHT_TEXTS = [
    "Patient admitted with urosepsis and septic shock.",  # L1 + L4 (septic shock); fever absent
    "Lactate 4.1, blood cultures pending; fever to 39.",  # L3 + L2
    "Fever and hypotension overnight.",  # L2 only
    "Patient admitted for elective knee surgery.",  # L1 only: not a target
    "Knee surgery, uneventful.",  # nothing
]


def test_note_weights_take_the_highest_targeted_level():
    h = Hierarchy({"sepsis": SEPSIS}, "test")
    weights = note_weights(h, WEIGHT_TEXTS)
    assert weights.dtype == np.float32 and weights.shape == (5,)
    assert weights.tolist() == [1.0, 0.5, 0.25, 0.5, 0.5]
    custom = note_weights(h, WEIGHT_TEXTS, weights={2: 0.1, 3: 0.3, 4: 0.9}, unmatched=0.0)
    assert custom.tolist() == pytest.approx([0.9, 0.3, 0.1, 0.0, 0.0])
    assert DEFAULT_LEVEL_WEIGHTS == {1: 0.0, 2: 0.25, 3: 0.5, 4: 1.0}
    with pytest.raises(ConfigError, match="L3"):
        note_weights(h, WEIGHT_TEXTS, weights={2: 0.1, 4: 1.0})


def test_protected_notes_have_l1_or_l2():
    h = Hierarchy({"sepsis": SEPSIS}, "test")
    assert protected(h, WEIGHT_TEXTS).tolist() == [True, True, True, True, False]
    assert protected(h, []).shape == (0,)


# ---- word pieces ---------------------------------------------------------------------------------------
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sepsis", "septic", "shock", "blood", "cultures", "lactate",
         "fever", "patient", "poison", "##ing", "a", "##41", ".", "9", "to", "dull", "##ness", "percussion"]


@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"  # one word piece a line, id = line number
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    assert len(tok) == len(VOCAB)
    return tok


def ids(tok, *words):
    return [tok.convert_tokens_to_ids(w) for w in words]


def test_token_levels_lowest_level_wins(bert_tok):
    h = Hierarchy({"sepsis": {4: ["septic shock", "blood poisoning", "A41.9", "qSOFA"],
                              3: ["lactate", "dullness to percussion", r"re:\bsepsis\b"],
                              2: ["shock", "fever"], 1: ["blood", "patient"]}}, "test")
    levels = h.token_levels(bert_tok)
    septic, shock, blood, poison, ing, lactate, fever, patient = ids(bert_tok, "septic", "shock", "blood", "poison",
                                                                     "##ing", "lactate", "fever", "patient")
    assert levels[septic] == 4 and levels[poison] == 4 and levels[ing] == 4
    assert levels[shock] == 2  # L4 "septic shock" and L2 "shock": preservation wins
    assert levels[blood] == 1  # L4 "blood poisoning" and L1 "blood"
    assert levels[lactate] == 3 and levels[fever] == 2 and levels[patient] == 1
    # pieces of codes and function words are foundational whatever the term's level
    for piece in ("a", "##41", ".", "9", "to"):
        assert levels[bert_tok.convert_tokens_to_ids(piece)] == 1, piece
    dull, ness, percussion = ids(bert_tok, "dull", "##ness", "percussion")
    assert levels[dull] == levels[ness] == levels[percussion] == 3
    # [UNK] (qsofa is not in the vocabulary) and other special tokens are never mapped; the regex adds nothing
    assert not set(levels) & set(bert_tok.all_special_ids)
    assert ids(bert_tok, "sepsis")[0] not in levels


def test_token_levels_follow_the_classes_taken(bert_tok):
    h = Hierarchy({"sepsis": {4: ["septic shock"]}, "other": {1: ["septic"]}}, "test")
    septic = bert_tok.convert_tokens_to_ids("septic")
    assert h.token_levels(bert_tok)[septic] == 1  # all classes: the other class's foundational use wins
    assert h.for_classes(["sepsis"]).token_levels(bert_tok)[septic] == 4


def test_token_levels_bpe_leading_space():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    corpus = ["sepsis", "septic shock", "patient with sepsis", "urosepsis or sepsis", "the patient had sepsis"] * 50
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    bare = tok("sepsis", add_special_tokens=False)["input_ids"]
    spaced = tok(" sepsis", add_special_tokens=False)["input_ids"]
    assert set(bare) != set(spaced)  # RoBERTa-style: a word after a space has other ids
    levels = Hierarchy({"sepsis": {4: ["sepsis"], 1: ["patient"]}}, "test").token_levels(tok)
    assert set(bare) | set(spaced) <= set(levels)
    assert {levels[i] for i in bare} == {4}
    assert 4 in {levels[i] for i in spaced}


# ---- ICD-10 --------------------------------------------------------------------------------------------
INFECTIOUS = "I Certain infectious and parasitic diseases (A00-B99)"
ROWS = [
    {"chapter": INFECTIOUS, "block": "A30-A49 Other bacterial diseases", "category": "A41 Other sepsis",
     "code": "A41.9", "description": "Sepsis, unspecified organism"},
    {"chapter": INFECTIOUS, "block": "A30-A49 Other bacterial diseases", "category": "A41 Other sepsis",
     "code": "A41.0", "description": "Sepsis due to Staphylococcus aureus"},
    {"chapter": INFECTIOUS, "block": "A30-A49 Other bacterial diseases", "category": "A41 Other sepsis",
     "code": "A41.51", "description": "Sepsis due to Escherichia coli [E. coli]"},
    {"chapter": INFECTIOUS, "block": "A30-A49 Other bacterial diseases", "category": "A40 Streptococcal sepsis",
     "code": "A40.0", "description": "Sepsis due to streptococcus, group A"},
    {"chapter": INFECTIOUS, "block": "A15-A19 Tuberculosis", "category": "A15 Respiratory tuberculosis",
     "code": "A15.0", "description": "Tuberculosis of lung"},
    {"chapter": "X Diseases of the respiratory system (J00-J99)", "block": "J09-J18 Influenza and pneumonia",
     "category": "J18 Pneumonia, unspecified organism", "code": "J18.9", "description": "Pneumonia, unspecified"},
]


def test_from_icd10_code():
    h = from_icd10(ROWS, "A41.9")
    name = "Sepsis, unspecified organism"
    assert list(h.classes) == [name]
    assert h.classes[name] == {
        4: ["A41.9", "Sepsis, unspecified organism"],
        3: ["A41", "Other sepsis", "A41.0", "Sepsis due to Staphylococcus aureus", "A41.51",
            "Sepsis due to Escherichia coli [E. coli]"],
        2: ["Other bacterial diseases", "A40", "Streptococcal sepsis"],
        1: ["Certain infectious and parasitic diseases", "Tuberculosis"],
    }
    assert from_icd10(ROWS, "a419", name="sepsis").classes["sepsis"] == h.classes[name]  # case and dot free
    levels = h.for_classes([name]).note_levels(["coded A41.9", "coded A41.0", "A40 coded", "tuberculosis"])
    assert [int(np.flatnonzero(row).max()) + 1 for row in levels] == [4, 3, 2, 1]  # highest level found
    assert levels[0].tolist() == [False, False, True, True]  # A41.9 also carries its category A41


def test_from_icd10_category():
    h = from_icd10(ROWS, "A41", name="sepsis")
    assert h.classes["sepsis"] == {
        4: ["A41", "Other sepsis", "A41.9", "Sepsis, unspecified organism", "A41.0",
            "Sepsis due to Staphylococcus aureus", "A41.51", "Sepsis due to Escherichia coli [E. coli]"],
        3: ["A40", "Streptococcal sepsis"],
        2: ["Other bacterial diseases", "Tuberculosis"],
        1: ["Certain infectious and parasitic diseases"],
    }
    assert list(from_icd10(ROWS, "A41").classes) == ["Other sepsis"]


def test_from_icd10_errors():
    with pytest.raises(ConfigError, match="no code or category 'B99.9'") as info:
        from_icd10(ROWS, "B99.9")
    assert "A41.9" in info.value.hint
    with pytest.raises(ConfigError, match="row 2: missing description"):
        from_icd10([ROWS[0], {k: v for k, v in ROWS[1].items() if k != "description"}], "A41.9")


def test_read_icd10_csv(tmp_path):
    path = tmp_path / "icd10.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["chapter", "block", "category", "code", "description", "extra"])
        writer.writeheader()
        writer.writerows({**row, "extra": "x"} for row in ROWS)
    assert '"Sepsis, unspecified organism"' in path.read_text(encoding="utf-8")  # the comma is quoted
    rows = read_icd10_csv(path)
    assert rows == ROWS
    assert from_icd10(rows, "A41.9", source=str(path)).classes == from_icd10(ROWS, "A41.9").classes


def test_read_icd10_csv_errors(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("chapter,block,code\nI x,A00-A09 y,A00.0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_icd10_csv(path)
    assert str(path) in str(info.value) and "category, description" in str(info.value)
    assert "chapter, block, code" in info.value.hint
    with pytest.raises(ConfigError, match="no such ICD-10 table"):
        read_icd10_csv(tmp_path / "missing.csv")
