"""The plain-Python WordPiece tokenizer against Hugging Face `tokenizers`, token for token."""

from __future__ import annotations

import random

import pytest

from unnoise.conditioning.text import MAX_LENGTH, TextEncoderError, model_dir, original_model_dir
from unnoise.conditioning.wordpiece import TokenizerError, WordPiece, normalize, split_words

tokenizers = pytest.importorskip("tokenizers")

TYPED = [
    "a cat face", "", "   ", "7", "the digit seven", "A Red HEART!!", "kitten", "puppy", "spaceship", "love",
    "smiling face with sunglasses, noto style", "Ünïcödé: café, naïve, 東京タワー, 😀 grinning face, ñ",
    "ΟΔΟΣ Σίσυφος", "İstanbul straße ﬁne ½ ™ №", "Ελληνικά, русский, العربية, עברית, हिन्दी, ไทย, 한국어",
    "tab\tnew\nline\r\v\f\x85\u2028\u00a0\u3000 spaces", "zero\u200bwidth\u200djoiner \ufeffbom", "nul\0and\ufffd",
    "x" * 101 + " after", "x" * 100, "don't-stop: (a) [b] {c} <d> @e #f $g %h ^i &j *k _l `m ~n |o \\p /q",
    "🏳️‍🌈 👩🏽‍🚀 🇫🇷 1️⃣", "[SEP]", "a[SEP]b [sep] x [MASK]y [CLS][CLS] [UNK] ä[PAD] [Mask]", "a " * 120, "supercalifragilisticexpialidocious", "e\u0301 o\u0308 n\u0303",
]


@pytest.fixture(scope="module")
def pair():
    folder = model_dir()
    theirs = tokenizers.Tokenizer.from_file(str(_tokenizer_json()))
    theirs.enable_truncation(max_length=MAX_LENGTH)
    theirs.no_padding()
    return WordPiece.from_file(folder / "vocab.txt", max_length=MAX_LENGTH), theirs


def _tokenizer_json():
    try:
        return original_model_dir() / "tokenizer.json"
    except TextEncoderError as e:
        pytest.skip(str(e))


def _random_prompts(n: int, seed: int) -> list[str]:
    """Mixed-script noise: letters, marks, punctuation, CJK, emoji, controls, unassigned code points."""
    rng = random.Random(seed)
    pool = [*range(0x20, 0x2FFF), *range(0x3000, 0xA000, 7), *range(0x1F300, 0x1FAFF), *range(0x10000, 0x1E9FF, 13),
            0, 0x85, 0xB, 0xC, 0x2028, 0x200B, 0x3A3, 0x130, 0xE0001, 0xE0100, 0xF0000]
    return ["".join(chr(rng.choice(pool)) if rng.random() < 0.6 else rng.choice("abc DEF, .!?'-") for _ in range(rng.randint(0, 40)))
            for _ in range(n)]


def test_typed_prompts_give_the_reference_ids(pair):
    ours, theirs = pair
    for prompt in TYPED:
        assert ours.encode(prompt) == theirs.encode(prompt).ids, prompt


def test_random_unicode_gives_the_reference_ids(pair):
    ours, theirs = pair
    prompts = _random_prompts(600, seed=0)
    for prompt, ref in zip(prompts, theirs.encode_batch(prompts)):
        assert ours.encode(prompt) == ref.ids, repr(prompt)


def test_long_prompts_are_cut_to_max_length_with_cls_and_sep(pair):
    ours, theirs = pair
    ids = ours.encode("a " * 200)
    assert len(ids) == MAX_LENGTH and ids[0] == ours.cls and ids[-1] == ours.sep
    assert ids == theirs.encode("a " * 200).ids


def test_batch_pads_to_the_longest(pair):
    ours, _ = pair
    ids, mask = ours.encode_batch(["a cat face", "", "kitten"])
    assert [len(r) for r in ids] == [5, 5, 5] and ids[1] == [ours.cls, ours.sep, 0, 0, 0]
    assert mask == [[1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]  # "kitten" is one piece


def test_steps_read_as_documented():
    assert normalize("Café\tNAÏVE\x07") == "cafe naive"  # accents stripped, lowercased, control dropped, tab → space
    assert normalize("ΟΔΟΣ") == "οδοσ"  # per character: no final-sigma rule
    assert split_words("don't  stop!") == ["don", "'", "t", "stop", "!"]
    assert split_words(normalize("東京")) == ["東", "京"]


def test_bad_vocabulary_is_one_clear_error(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n")
    with pytest.raises(TokenizerError, match=r"no \[UNK\]"):
        WordPiece.from_file(tmp_path / "vocab.txt", max_length=77)
    with pytest.raises(TokenizerError, match="cannot read"):
        WordPiece.from_file(tmp_path / "missing.txt", max_length=77)
