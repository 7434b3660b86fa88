"""Tiny models and tokenizers built in code, for tests and quick checks (no model hub, ever)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from steuops import env  # noqa: F401

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0-4
ARCHS = ("bert", "distilbert", "roberta", "mpnet", "xlm-roberta", "albert", "electra", "deberta-v2", "modernbert",
         "modernbert-mean", "longformer", "llama")


def wordpiece_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """A BERT-style WordPiece tokenizer trained on `corpus` (lower-cased)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok = Tokenizer(models.WordPiece(_vocab(corpus, vocab_size, normalizer, pre_tokenizer), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", do_lower_case=True,
    )


def mpnet_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """MPNet's tokenizer shape: WordPiece pieces ("##") framed by <s> ... </s>, no token type ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import MPNetTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    vocab = _vocab(corpus, vocab_size, normalizer, pre_tokenizer, specials=BPE_SPECIALS)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    return MPNetTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                              cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def bpe_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """A RoBERTa-style byte-level BPE tokenizer (case kept; a word after a space is "Ġword").

    The merges are built here, deterministically: every byte is a base piece, and each of the corpus's most
    frequent words gets the chain of merges that joins it left to right. A word whose merges clash with
    another's stays in pieces, as real BPE vocabularies leave rare words. `vocab_size` counts the merged pieces
    on top of the 5 specials and 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import RobertaTokenizerFast

    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab = {p: i for i, p in enumerate(BPE_SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    for word, _ in _frequent_words(corpus, pre_tokenizer):
        for end in range(2, len(word) + 1):
            if len(merges) >= vocab_size:
                break
            if word[:end] not in vocab:
                vocab[word[:end]] = len(vocab)
                merges.append((word[: end - 1], word[end - 1]))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                      add_prefix_space=False, trim_offsets=True)
    return RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def sentencepiece_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """An XLM-R-style SentencePiece (Unigram) tokenizer: a word starts with "▁" ("▁sepsis"), case kept.

    The pieces are the corpus's most frequent "▁word"s, scored by log frequency, plus every character seen
    (alone and after "▁") so that any other word is spelled out; Viterbi segmentation is deterministic."""
    import math

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    words = _frequent_words(corpus, pre_tokenizer)
    chars = sorted({ch for word, _ in words for ch in word.lstrip("▁")})
    scores = dict.fromkeys(BPE_SPECIALS, 0.0)
    for word, n in words[:vocab_size]:
        if len(word) > 2:  # "▁" plus one char is a char piece below
            scores.setdefault(word, math.log(n) - 10.0)
    for piece in (p for ch in chars for p in (ch, "▁" + ch)):
        scores.setdefault(piece, -20.0)
    tok = Tokenizer(models.Unigram(list(scores.items()), unk_id=BPE_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def tokenizer_for(arch: str, corpus: Sequence[str], vocab_size: int = 600):
    """The tokenizer shape that goes with a tiny `arch`: <s>-framed WordPiece for MPNet, byte-level BPE for
    RoBERTa and Longformer, SentencePiece for XLM-R, WordPiece for the rest (BERT, DistilBERT, and ALBERT, ELECTRA,
    DeBERTa-v2, ModernBERT and Llama, whose structure, not tokenizer, the tests are after)."""
    if arch in ("roberta", "longformer"):
        return bpe_tokenizer(corpus, vocab_size)
    if arch == "xlm-roberta":
        return sentencepiece_tokenizer(corpus, vocab_size)
    if arch == "mpnet":
        return mpnet_tokenizer(corpus, vocab_size)
    return wordpiece_tokenizer(corpus, vocab_size)


def _vocab(corpus: Sequence[str], size: int, normalizer, pre_tokenizer,
           specials: Sequence[str] = SPECIALS) -> dict[str, int]:
    """The specials, then the corpus's most frequent words (ties alphabetical); any other word is [UNK].

    Built here rather than by the tokenizers trainer, which breaks ties in hash order: the same corpus gave
    different vocabularies under different PYTHONHASHSEEDs, and so different test results. Whole words only:
    falling back to characters would spread one rare word over many positions of a short max_length.
    """
    words = [w for w, _ in _frequent_words(corpus, pre_tokenizer, normalizer) if w not in specials]
    return {p: i for i, p in enumerate(list(specials) + words[: max(0, size - len(specials))])}


def _frequent_words(corpus: Sequence[str], pre_tokenizer, normalizer=None) -> list[tuple[str, int]]:
    """(word, count) of the corpus's pre-tokenized words, most frequent first, ties alphabetical (never hash order)."""
    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text) if normalizer
                                                                     else text))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


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
        AlbertConfig,
        AlbertForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        LongformerConfig,
        LongformerForSequenceClassification,
        ModernBertConfig,
        ModernBertForSequenceClassification,
        MPNetConfig,
        MPNetForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    from steuops.modeling import MULTI_LABEL, SINGLE_LABEL

    torch.manual_seed(seed)
    # BERT's defaults (init std 0.02, dropout 0.1) are sized for 768-wide models; a 32-wide one trained for
    # a few dozen steps with them often never leaves "always negative". 0.1 and no dropout learn reliably.
    common = dict(
        initializer_range=0.1,
        vocab_size=vocab_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=MULTI_LABEL if multi_label else SINGLE_LABEL,
        max_position_embeddings=512,
    )
    if arch == "bert":
        cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=hidden * 2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         **common)
        return BertForSequenceClassification(cfg).eval()
    if arch == "distilbert":
        cfg = DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 2, dropout=0.0,
                               attention_dropout=0.0, seq_classif_dropout=0.0, **common)
        return DistilBertForSequenceClassification(cfg).eval()
    plain = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
    # ALBERT and ELECTRA factorise the embedding (narrower rows, projected up): STEU edits those narrow rows
    if arch == "albert":
        return AlbertForSequenceClassification(AlbertConfig(embedding_size=hidden // 2, classifier_dropout_prob=0.0,
                                                            **plain)).eval()
    if arch == "electra":
        return ElectraForSequenceClassification(ElectraConfig(embedding_size=hidden // 2, **plain)).eval()
    # ModernBERT: rotary positions, alternating local attention, a dense+norm head on the [CLS] state or (-mean)
    # on the mean over the note's tokens. The wordpiece specials' ids; the released model's are 50281-50283.
    if arch in ("modernbert", "modernbert-mean"):
        return ModernBertForSequenceClassification(ModernBertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
            local_attention=8, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3,
            classifier_pooling="mean" if arch == "modernbert-mean" else "cls", **common)).eval()
    if arch == "llama":  # a decoder classifier: causal attention, the head reads the last non-pad token
        return LlamaForSequenceClassification(LlamaConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            intermediate_size=hidden * 2, pad_token_id=0, bos_token_id=2, eos_token_id=3, **common)).eval()
    if arch == "deberta-v2":  # relative attention, and a pooler inside the head (ContextPooler)
        return DebertaV2ForSequenceClassification(DebertaV2Config(pooler_dropout=0.0, pooler_hidden_size=hidden,
                                                                  **plain)).eval()
    # RoBERTa, XLM-R and MPNet: <pad> is id 1 (BPE_SPECIALS), and position ids start after it, as released
    bpe = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1, bos_token_id=0,
               eos_token_id=2, **{**common, "max_position_embeddings": 514})
    if arch == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(type_vocab_size=1, **bpe)).eval()
    if arch == "mpnet":
        return MPNetForSequenceClassification(MPNetConfig(**bpe)).eval()
    if arch == "xlm-roberta":
        return XLMRobertaForSequenceClassification(XLMRobertaConfig(type_vocab_size=1, **bpe)).eval()
    if arch == "longformer":  # sliding-window attention, global on the first token (Clinical-Longformer's family)
        return LongformerForSequenceClassification(LongformerConfig(type_vocab_size=1, attention_window=[8] * layers,
                                                                    **bpe)).eval()
    raise ValueError(f"unknown tiny arch {arch!r}; known: {', '.join(ARCHS)}")
