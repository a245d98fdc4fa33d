""""Did you mean …": the nearest known name to a misspelled one, for one-line errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice most like `word` (case-insensitive, difflib's ratio ≥ cutoff), or None."""
    if not isinstance(word, str):
        return None
    by_key: dict[str, str] = {}
    for c in choices:  # the first spelling of a name wins: list the canonical ones first
        by_key.setdefault(c.lower(), c)
    match = difflib.get_close_matches(word.strip().lower(), list(by_key), n=1, cutoff=cutoff)
    return by_key[match[0]] if match else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the nearest choice, or "" when nothing is near: append it to an error."""
    match = nearest(word, choices)
    return f"; did you mean {match!r}?" if match is not None else ""
