"""Offline CLIP byte-level BPE tokenizer.

Produces the same ids as the Hugging Face ``CLIPTokenizer`` of ``openai/clip-vit-base-patch32``
called the way SEEM calls it (``padding='max_length'``, ``truncation=True``,
``max_length=77``): ``<|startoftext|>`` + BPE ids + ``<|endoftext|>``, padded with
``<|endoftext|>`` (49407), attention mask 1 on the real tokens.

Text cleaning follows the Hugging Face path taken when ``ftfy`` is *not* installed (a BERT-style
basic cleanup): control characters dropped, whitespace collapsed, CJK ideographs split off,
NFC normalisation, lower-casing. For plain ASCII prompts this is identical to the ``ftfy`` path;
they can differ on unusual unicode (curly quotes, HTML entities, ligatures, full-width forms),
which ``ftfy`` would repair first.

The 48 894 BPE merges ship with the package (``bpe_simple_vocab_16e6.txt.gz``, OpenAI CLIP, MIT);
the vocabulary is derived from them exactly as CLIP defines it.
"""
from __future__ import annotations

import functools
import gzip
import unicodedata
from pathlib import Path
from typing import Sequence

import regex
import torch

BPE_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")

SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
VOCAB_SIZE = 49408
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
PAD_TOKEN_ID = EOT_TOKEN_ID
CONTEXT_LENGTH = 77

_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2
_END_OF_WORD = "</w>"
_PRE_TOKENIZE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_SPECIAL_SPLIT = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map of the 256 byte values to printable unicode characters.

    Printable latin-1 bytes map to themselves; the remaining 68 bytes (controls, space, ...)
    map to code points 256, 257, ... in byte order. The dict order (printable bytes first, then
    the remapped ones) is the order of the first 256 vocabulary entries.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_control(char: str) -> bool:
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_cjk(code_point: int) -> bool:
    return (
        0x4E00 <= code_point <= 0x9FFF
        or 0x3400 <= code_point <= 0x4DBF
        or 0x20000 <= code_point <= 0x2A6DF
        or 0x2A700 <= code_point <= 0x2B73F
        or 0x2B740 <= code_point <= 0x2B81F
        or 0x2B820 <= code_point <= 0x2CEAF
        or 0xF900 <= code_point <= 0xFAFF
        or 0x2F800 <= code_point <= 0x2FA1F
    )


def clean_text(text: str) -> str:
    """Basic cleanup + lower-casing (the Hugging Face CLIP path without ``ftfy``).

    Drops NUL, U+FFFD and control/format characters, turns every whitespace character into a
    space, surrounds CJK ideographs with spaces, NFC-normalises, lower-cases and joins the
    whitespace-separated words with single spaces.
    """
    chars = []
    for char in text:
        code_point = ord(char)
        if code_point == 0 or code_point == 0xFFFD or _is_control(char):
            continue
        if _is_whitespace(char):
            chars.append(" ")
        elif _is_cjk(code_point):
            chars.append(f" {char} ")
        else:
            chars.append(char)
    text = unicodedata.normalize("NFC", "".join(chars))
    return " ".join(word.lower() for word in text.split())


class CLIPTokenizer:
    """CLIP BPE tokenizer (vocabulary of ``openai/clip-vit-base-patch32``, 49 408 tokens).

    Args:
        context_length: length every tokenised text is padded / truncated to (SEEM: 77).
        bpe_path: gzip file of BPE merges in CLIP's format (default: the packaged one).
    """

    vocab_size = VOCAB_SIZE
    sot_token_id = SOT_TOKEN_ID
    eot_token_id = EOT_TOKEN_ID
    pad_token_id = PAD_TOKEN_ID

    def __init__(self, context_length: int = CONTEXT_LENGTH, bpe_path: str | Path = BPE_PATH) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        self.context_length = context_length
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : _NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != _NUM_MERGES:
            raise ValueError(f"{bpe_path}: expected {_NUM_MERGES} merges, found {len(merges)}")
        self.byte_encoder = bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        symbols += [s + _END_OF_WORD for s in symbols]
        symbols += ["".join(pair) for pair in merges]
        symbols += [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(symbols)}
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[str, tuple[str, ...]] = {SOT_TEXT: (SOT_TEXT,), EOT_TEXT: (EOT_TEXT,)}

    def bpe(self, word: str) -> tuple[str, ...]:
        """Split one pre-token (already byte-mapped) into BPE symbols, last one ending in ``</w>``."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + _END_OF_WORD]
        while len(parts) > 1:
            pair = min(zip(parts[:-1], parts[1:]), key=lambda p: self.bpe_ranks.get(p, _NUM_MERGES))
            if pair not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        self._cache[word] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """BPE symbols of ``text`` (no start/end tokens). Literal special tokens are kept whole."""
        symbols: list[str] = []
        for chunk in _SPECIAL_SPLIT.split(text):
            if chunk in (SOT_TEXT, EOT_TEXT):
                symbols.append(chunk)
                continue
            for piece in _PRE_TOKENIZE.findall(clean_text(chunk)):
                mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                symbols.extend(self.bpe(mapped))
        return symbols

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``<|startoftext|>`` / ``<|endoftext|>``."""
        return [self.encoder[s] for s in self.tokenize(text)]

    def num_tokens(self, text: str) -> int:
        """Length of ``text`` in tokens including start and end tokens (before truncation)."""
        return len(self.encode(text)) + 2

    def __call__(self, texts: str | Sequence[str], truncation: bool = True) -> dict[str, torch.Tensor]:
        """Tokenise, pad and truncate to ``context_length``.

        Args:
            texts: one string or a sequence of N strings (a single string gives N = 1).
            truncation: if True, texts longer than the context keep their first
                ``context_length - 2`` tokens followed by ``<|endoftext|>``; if False they raise
                ``ValueError``.

        Returns:
            ``{"input_ids": int64 [N, L], "attention_mask": int64 [N, L]}`` with
            L = ``context_length``; padding uses ``<|endoftext|>`` (49407) and mask 0.
        """
        if isinstance(texts, str):
            texts = [texts]
        n, length = len(texts), self.context_length
        input_ids = torch.full((n, length), PAD_TOKEN_ID, dtype=torch.int64)
        attention_mask = torch.zeros((n, length), dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > length - 2:
                if not truncation:
                    raise ValueError(
                        f"text is {len(ids) + 2} tokens long, the text encoder takes at most "
                        f"{length}: {text!r}"
                    )
                ids = ids[: length - 2]
            ids = [SOT_TOKEN_ID, *ids, EOT_TOKEN_ID]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """Shared tokenizer instance per context length (loading the merges takes ~0.3 s)."""
    return CLIPTokenizer(context_length)
