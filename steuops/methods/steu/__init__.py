"""STEU, Sparse Token Embedding Unlearning: PMI token selection (selection.py) + fit (method.py)."""

from steuops.methods.steu.method import STEU, STEUConfig
from steuops.methods.steu.selection import Selection, select_tokens

__all__ = ["STEU", "STEUConfig", "Selection", "select_tokens"]
