"""BERT WordPiece tokenization exactly as sentence-transformers does it, built from a vocabulary alone.

pirag tokenizes with the Hugging Face ``tokenizers`` library (Rust, thread-safe, no torch) rather than with
llama.cpp's WPM tokenizer: the result is the tokenization ``BertTokenizerFast`` produces (BertNormalizer,
BertPreTokenizer, ``[CLS] text [SEP]``, truncation at the end of the text down to ``max_tokens`` including the
two special tokens), which is what sentence-transformers feeds its model, and it gives character offsets for
token-aware chunking. Token ids go to llama.cpp directly.

A GGUF file stores the vocabulary in llama.cpp's phantom-space form (``"▁word"`` for a word start, ``"ing"`` for
``"##ing"``, control tokens unchanged); ``vocab_from_gguf_tokens`` turns it back.
"""

from __future__ import annotations

from collections.abc import Sequence

from .checkpoint import TokenizerSpec

PHANTOM = "\u2581"


def to_phantom(token: str) -> str:
    """A WordPiece token in llama.cpp's GGUF form (the inverse of ``from_phantom``)."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return PHANTOM + token


def from_phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith(PHANTOM):
        return token[len(PHANTOM):]
    return "##" + token


class BertTokenizer:
    """Thread-safe: every method only reads the underlying Rust tokenizers."""

    def __init__(self, spec: TokenizerSpec, max_tokens: int):
        from tokenizers import AddedToken, Tokenizer
        from tokenizers.models import WordPiece
        from tokenizers.normalizers import BertNormalizer
        from tokenizers.pre_tokenizers import BertPreTokenizer
        from tokenizers.processors import TemplateProcessing

        self.max_tokens = max_tokens
        self.special = dict(spec.special)
        self.cls_id = spec.special["[CLS]"]
        self.sep_id = spec.special["[SEP]"]

        def build() -> Tokenizer:
            vocab = {token: i for i, token in enumerate(spec.vocab)}
            tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]",
                                            max_input_chars_per_word=spec.max_input_chars_per_word))
            tokenizer.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=spec.chinese_chars,
                                                  strip_accents=spec.strip_accents, lowercase=spec.lowercase)
            tokenizer.pre_tokenizer = BertPreTokenizer()
            tokenizer.post_processor = TemplateProcessing(
                single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
            tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True)
                                          for token in spec.special])
            return tokenizer

        # Two instances: truncation is a property of the tokenizer object, and chunking needs the whole text.
        self._truncating = build()
        self._truncating.enable_truncation(max_length=max_tokens)
        self._whole = build()

    def encode(self, text: str) -> list[int]:
        """Token ids fed to the model: ``[CLS] ... [SEP]``, truncated to ``max_tokens`` like sentence-transformers."""
        return self._truncating.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._truncating.encode_batch(list(texts))]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text would take without truncation, ``[CLS]`` and ``[SEP]`` included."""
        if not texts:
            return []
        return [len(encoding.ids) for encoding in self._whole.encode_batch(list(texts))]

    def tokenize_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of each token of ``text`` (no special tokens, no truncation)."""
        return [tuple(span) for span in self._whole.encode(text, add_special_tokens=False).offsets]


def spec_from_gguf_tokens(tokens: Sequence[str], *, lowercase: bool = True, strip_accents: bool | None = None,
                          chinese_chars: bool = True) -> TokenizerSpec:
    vocab = [from_phantom(token) for token in tokens]
    index = {token: i for i, token in enumerate(vocab)}
    special = {token: index[token] for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if token in index}
    missing = {"[UNK]", "[CLS]", "[SEP]"} - set(special)
    if missing:
        raise ValueError(f"the GGUF vocabulary lacks {', '.join(sorted(missing))}: not a BERT WordPiece vocabulary")
    return TokenizerSpec(vocab=vocab, lowercase=lowercase, strip_accents=strip_accents, chinese_chars=chinese_chars,
                         special=special)
