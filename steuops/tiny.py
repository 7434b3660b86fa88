"""Tiny models and tokenizers built in code, for tests and quick checks (no model hub, ever)."""

from __future__ import annotations

from collections.abc import Sequence

from steuops import env  # noqa: F401

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """A BERT-style WordPiece tokenizer trained on `corpus` (lower-cased)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(list(corpus), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", do_lower_case=True,
    )


def classifier(
    labels: Sequence[str],
    vocab_size: int,
    *,
    arch: str = "bert",
    multi_label: bool = True,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
):
    """A random-init sequence classifier with `labels` as its id2label."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    from steuops.modeling import MULTI_LABEL, SINGLE_LABEL

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=MULTI_LABEL if multi_label else SINGLE_LABEL,
        max_position_embeddings=512,
    )
    if arch == "bert":
        cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=hidden * 2, **common)
        return BertForSequenceClassification(cfg).eval()
    if arch == "distilbert":
        cfg = DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 2, **common)
        return DistilBertForSequenceClassification(cfg).eval()
    raise ValueError(f"unknown tiny arch {arch!r}")
