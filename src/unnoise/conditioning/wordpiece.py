"""BERT's uncased WordPiece tokenizer (Devlin et al. 2019; Wu et al. 2016), in plain Python.

MiniLM reads prompts through the tokenizer BERT-base-uncased defined: normalise the text, split it
into words and punctuation, then cut each word greedily into the longest pieces the vocabulary
knows ("kitten" → kit, ##ten).  The steps, in the order Hugging Face's `tokenizers` applies them
(the tests check the ids token for token against that library on several hundred prompts):

1. clean: drop NUL, U+FFFD and every control, format mark, private-use or surrogate character
   (categories Cc, Cf, Co, Cs) except tab, newline and carriage return; every whitespace character becomes a space;
2. put spaces around CJK ideographs, so that each one is a word of its own;
3. strip accents: decompose (NFD) and drop the non-spacing marks (category Mn) — "café" → "cafe";
4. lowercase each character (full Unicode case mapping, no context: Σ is always σ);
5. split on whitespace, and cut every punctuation character (ASCII punctuation or category P*)
   out as a word of its own;
6. WordPiece each word: the longest vocabulary entry from the left, then "##"-prefixed
   continuations; a word that cannot be covered, or is longer than 100 characters, is [UNK].

Special tokens typed in the text ("[SEP]", "[MASK]", …) are matched first, verbatim, and kept.
`encode_batch` adds [CLS] … [SEP], truncates to `max_length` ids and pads with [PAD] = 0 to the
longest prompt in the batch, which is what the text encoder consumes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from ..errors import UnnoiseError

MAX_WORD_CHARS = 100  # longer "words" (e.g. a pasted hash) become a single [UNK]
# The ranges BERT treats as CJK ideographs (CJK Unified Ideographs and their extensions A–F,
# plus the compatibility blocks).  Hangul, kana and Thai are not in them: those stay words.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Unicode's White_Space property (what Rust's char::is_whitespace tests).  Python's str.isspace
# differs: it also counts U+001C–U+001F, which are controls and are dropped by step 1 anyway.
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


# "Other" characters that cleaning drops: controls, format marks, private use, surrogates.
# Unassigned code points (Cn) are kept, as `tokenizers` keeps them (they end up as [UNK]).
_OTHER = frozenset(("Cc", "Cf", "Co", "Cs"))


# Code points that `tokenizers` still reads with older Unicode tables than Python's: marks and
# punctuation added since (Unicode 10 onwards) are letters to it, and a few characters that
# Unicode has since re-classified keep their old category (punctuation, or a mark to strip).  Printed by
# `python scripts/wordpiece_unicode.py`, which compares the two tokenizers on every code point.
_OLD_TABLES: tuple[tuple[int, int, str], ...] = (  # (first, last, category as `tokenizers` sees it)
    (0x61D, 0x61D, "Lo"), (0x7FD, 0x7FD, "Lo"), (0x890, 0x891, "Lo"), (0x898, 0x89F, "Lo"),
    (0x8CA, 0x8E2, "Lo"), (0x9FD, 0x9FE, "Lo"), (0xA76, 0xA76, "Lo"), (0xAFA, 0xAFF, "Lo"),
    (0xB55, 0xB55, "Lo"), (0xC04, 0xC04, "Lo"), (0xC3C, 0xC3C, "Lo"), (0xC77, 0xC77, "Lo"),
    (0xC84, 0xC84, "Lo"), (0xD00, 0xD00, "Lo"), (0xD3B, 0xD3C, "Lo"), (0xD81, 0xD81, "Lo"),
    (0xEBA, 0xEBA, "Lo"), (0x166D, 0x166D, "Po"), (0x1734, 0x1734, "Mn"), (0x180F, 0x180F, "Lo"),
    (0x1885, 0x1886, "Lo"), (0x1ABF, 0x1ACE, "Lo"), (0x1B7D, 0x1B7E, "Lo"), (0x1DF6, 0x1DFB, "Lo"),
    (0x2E43, 0x2E4F, "Lo"), (0x2E52, 0x2E5D, "Lo"), (0xA82C, 0xA82C, "Lo"), (0xA8C5, 0xA8C5, "Lo"),
    (0xA8FF, 0xA8FF, "Lo"), (0xA9BD, 0xA9BD, "Lo"), (0x10D24, 0x10D27, "Lo"), (0x10EAB, 0x10EAD, "Lo"),
    (0x10F46, 0x10F50, "Lo"), (0x10F55, 0x10F59, "Lo"), (0x10F82, 0x10F89, "Lo"), (0x11070, 0x11070, "Lo"),
    (0x11073, 0x11074, "Lo"), (0x110C2, 0x110C2, "Lo"), (0x110CD, 0x110CD, "Lo"), (0x111C9, 0x111C9, "Po"),
    (0x111CF, 0x111CF, "Lo"), (0x1123E, 0x1123E, "Lo"), (0x1133B, 0x1133B, "Lo"), (0x11438, 0x1143F, "Lo"),
    (0x11442, 0x11444, "Lo"), (0x11446, 0x11446, "Lo"), (0x1144B, 0x1144F, "Lo"), (0x1145A, 0x1145B, "Lo"),
    (0x1145D, 0x1145E, "Lo"), (0x11660, 0x1166C, "Lo"), (0x116B9, 0x116B9, "Lo"), (0x1182F, 0x11837, "Lo"),
    (0x11839, 0x1183B, "Lo"), (0x1193B, 0x1193C, "Lo"), (0x1193E, 0x1193E, "Lo"), (0x11943, 0x11946, "Lo"),
    (0x119D4, 0x119D7, "Lo"), (0x119DA, 0x119DB, "Lo"), (0x119E0, 0x119E0, "Lo"), (0x119E2, 0x119E2, "Lo"),
    (0x11A01, 0x11A0A, "Lo"), (0x11A33, 0x11A38, "Lo"), (0x11A3B, 0x11A47, "Lo"), (0x11A51, 0x11A56, "Lo"),
    (0x11A59, 0x11A5B, "Lo"), (0x11A8A, 0x11A96, "Lo"), (0x11A98, 0x11A9C, "Lo"), (0x11A9E, 0x11AA2, "Lo"),
    (0x11C30, 0x11C36, "Lo"), (0x11C38, 0x11C3D, "Lo"), (0x11C3F, 0x11C3F, "Lo"), (0x11C41, 0x11C45, "Lo"),
    (0x11C70, 0x11C71, "Lo"), (0x11C92, 0x11CA7, "Lo"), (0x11CAA, 0x11CB0, "Lo"), (0x11CB2, 0x11CB3, "Lo"),
    (0x11CB5, 0x11CB6, "Lo"), (0x11D31, 0x11D36, "Lo"), (0x11D3A, 0x11D3A, "Lo"), (0x11D3C, 0x11D3D, "Lo"),
    (0x11D3F, 0x11D45, "Lo"), (0x11D47, 0x11D47, "Lo"), (0x11D90, 0x11D91, "Lo"), (0x11D95, 0x11D95, "Lo"),
    (0x11D97, 0x11D97, "Lo"), (0x11EF3, 0x11EF4, "Lo"), (0x11EF7, 0x11EF8, "Lo"), (0x11FFF, 0x11FFF, "Lo"),
    (0x12FF1, 0x12FF2, "Lo"), (0x13430, 0x13438, "Lo"), (0x16E97, 0x16E9A, "Lo"), (0x16F4F, 0x16F4F, "Lo"),
    (0x16FE2, 0x16FE2, "Lo"), (0x16FE4, 0x16FE4, "Lo"), (0x1CF00, 0x1CF2D, "Lo"), (0x1CF30, 0x1CF46, "Lo"),
    (0x1E000, 0x1E006, "Lo"), (0x1E008, 0x1E018, "Lo"), (0x1E01B, 0x1E021, "Lo"), (0x1E023, 0x1E024, "Lo"),
    (0x1E026, 0x1E02A, "Lo"), (0x1E130, 0x1E136, "Lo"), (0x1E2AE, 0x1E2AE, "Lo"), (0x1E2EC, 0x1E2EF, "Lo"),
    (0x1E944, 0x1E94A, "Lo"), (0x1E95E, 0x1E95F, "Lo"),
)
_OLD_CATEGORY = {c: cat for lo, hi, cat in _OLD_TABLES for c in range(lo, hi + 1)}


_SPECIAL = re.compile(r"(\[PAD\]|\[UNK\]|\[CLS\]|\[SEP\]|\[MASK\])")  # BERT's special tokens, matched verbatim


class TokenizerError(UnnoiseError, ValueError):
    """The WordPiece vocabulary file is missing or malformed."""


def _category(ch: str) -> str:
    """The Unicode general category as `tokenizers` sees it (see _OLD_TABLES)."""
    return _OLD_CATEGORY.get(ord(ch)) or unicodedata.category(ch)


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    ascii_punct = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
    return ascii_punct or _category(ch).startswith("P")


def normalize(text: str) -> str:
    """Steps 1–4: clean, space out CJK ideographs, strip accents, lowercase."""
    out = []
    for ch in text:
        if ch in ("\0", "\ufffd") or (ch not in "\t\n\r" and _category(ch) in _OTHER):
            continue  # dropped before whitespace is mapped: \v, \f and U+0085 are controls, so they vanish
        if ch in _WHITESPACE:
            out.append(" ")
        elif _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    # Lowercase character by character, as `tokenizers` does: str.lower() on the whole string would
    # turn a word-final Σ into ς, which the vocabulary spells σ.
    return "".join(c.lower() for c in decomposed if _category(c) != "Mn")


def split_words(text: str) -> list[str]:
    """Step 5: whitespace separates words; each punctuation character is a word of its own."""
    words: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch in _WHITESPACE or _is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            if ch not in _WHITESPACE:
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


class WordPiece:
    """Uncased BERT WordPiece over a `vocab.txt` (one token per line; the line number is its id)."""

    def __init__(self, vocab: dict[str, int], *, max_length: int):
        for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            if special not in vocab:
                raise TokenizerError(f"the vocabulary has no {special} token")
        if max_length < 2:
            raise TokenizerError(f"max_length must be ≥ 2 ([CLS] and [SEP]), got {max_length}")
        self.vocab, self.max_length = vocab, max_length
        self.unk, self.cls, self.sep, self.pad = (vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    @classmethod
    def from_file(cls, path: str | Path, *, max_length: int) -> WordPiece:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: cannot read the vocabulary ({e})") from e
        if lines and lines[-1] == "":
            lines.pop()
        return cls({token: i for i, token in enumerate(lines)}, max_length=max_length)

    def _pieces(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:  # no vocabulary entry covers word[start:]: the whole word is unknown
                return [self.unk]
        return ids

    def encode(self, text: str) -> list[int]:
        """[CLS] + the word pieces of `text` + [SEP], truncated to max_length ids in all.

        A special token typed in the text ("[SEP]", "[MASK]", … exactly so, case and all) is that
        token, not three pieces: `tokenizers` matches them in the raw text before normalising."""
        ids: list[int] = []
        for i, part in enumerate(_SPECIAL.split(text)):
            if i % 2:  # the split keeps the special tokens at odd positions
                ids.append(self.vocab[part])
            else:
                ids += [j for word in split_words(normalize(part)) for j in self._pieces(word)]
        return [self.cls, *ids[: self.max_length - 2], self.sep]

    def encode_batch(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Ids and attention masks, each row padded with [PAD] to the longest one."""
        rows = [self.encode(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = [r + [self.pad] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        return ids, mask
