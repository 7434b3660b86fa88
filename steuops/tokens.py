"""Token strings across tokenizer families: the markers a piece carries besides its text.

WordPiece (BERT, DistilBERT, MPNet) marks a word's continuation ("##ors"); byte-level BPE (RoBERTa, GPT-2)
marks a word start with the space it follows ("Ġthe", and "Ċ" for a newline); SentencePiece (XLM-R,
DeBERTa-v3, ALBERT) marks it with "▁". Rules about what a piece says ("a stop word", "a number") must look
past these markers, or "Ġthe" and "▁51" pass for content words.
"""

from __future__ import annotations

CONTINUATION = "##"
# byte-level BPE's space, newline, tab and carriage return; SentencePiece's word start
WORD_START = "Ġ▁Ċĉč"


def bare(token: str) -> str:
    """The piece's text without its tokenizer's markers: "##ors" -> "ors", "Ġthe" -> "the", "▁51" -> "51"."""
    return token.removeprefix(CONTINUATION).lstrip(WORD_START)
