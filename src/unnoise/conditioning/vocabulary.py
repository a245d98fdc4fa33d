"""A model's vocabulary: the captions it was trained on, and prompt snapping to the nearest of them.

A small text-to-image model learns its captions, not the language: the bundled emoji model paints
"cat face" but not "a kitten's face", although the text encoder (MiniLM-L6, a sentence-similarity
model) puts the two close together.  Snapping lets the encoder do what it was trained for: a prompt
that is not one of the training captions is replaced by the vocabulary caption whose sentence vector
(the pooled, unit-norm MiniLM embedding) is most similar, if that similarity reaches `threshold`.
Prompts the model knows, prompts unlike anything it knows, and the empty prompt are left as they are.

A model trained on tagged captions ("cat face, twemoji style") lists its tags as `suffixes`: a prompt
ending in one is snapped by its head alone and keeps its tag ("a kitten, twemoji style" → "cat face,
twemoji style"), so the vectors need only the plain captions.

A model directory carries its vocabulary in `vocabulary.safetensors` (fp16 unit vectors (V, D), the
captions, the full list of training captions and the suffixes in the metadata), built with

    python -m unnoise.conditioning.vocabulary --model src/unnoise/bundled/emoji --data emoji
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UnnoiseError

FILE = "vocabulary.safetensors"
THRESHOLD = 0.6  # cosine similarity: above keyboard mashing, below paraphrases (README, "Prompt snapping")


class VocabularyError(UnnoiseError, ValueError):
    """A missing or unreadable vocabulary file."""


@dataclass(frozen=True)
class Snap:
    """What a prompt was conditioned on: `caption` (None: the prompt itself) and its similarity."""

    prompt: str
    caption: str | None
    similarity: float


def _key(text: str) -> str:
    return " ".join(text.lower().split())  # the tokenizer lower-cases and splits on whitespace


class Vocabulary:
    def __init__(self, captions: list[str], vectors: torch.Tensor, known: list[str], threshold: float = THRESHOLD,
                 suffixes: list[str] | tuple[str, ...] = ()):
        if vectors.ndim != 2 or vectors.shape[0] != len(captions) or not captions:
            raise VocabularyError(f"{len(captions)} captions but vectors of shape {tuple(vectors.shape)}")
        if any(not _key(s) for s in suffixes):
            raise VocabularyError(f"suffixes must not be blank, got {list(suffixes)!r}")
        self.captions, self.vectors, self.threshold = captions, vectors.float(), threshold
        self.known = {_key(c) for c in [*known, *captions]}
        self.suffixes = list(suffixes)

    @classmethod
    def build(cls, captions: list[str], encoder, known: list[str] | None = None, batch_size: int = 256,
              suffixes: list[str] | tuple[str, ...] = ()) -> Vocabulary:
        captions = list(dict.fromkeys(c for c in captions if c.strip()))
        vectors = torch.cat([encoder.encode(captions[i:i + batch_size])["pooled"].float()
                             for i in range(0, len(captions), batch_size)])
        return cls(captions, torch.nn.functional.normalize(vectors, dim=-1), known or [], suffixes=suffixes)

    def split(self, prompt: str) -> tuple[str, str]:
        """(head, suffix): a prompt ending in one of the suffixes (compared as keys) and something before it,
        else (prompt, "").  The head is what snapping compares; the suffix is kept."""
        key = _key(prompt)
        for suffix in self.suffixes:
            tail = _key(suffix)
            if key.endswith(tail) and key[:-len(tail)].strip():
                return key[:-len(tail)].strip(), suffix
        return prompt, ""

    def query(self, prompt: str) -> str:
        """The text whose pooled vector `snap` expects for this prompt: its head (see `split`)."""
        return self.split(prompt)[0]

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(directory) / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        meta = {"captions": json.dumps(self.captions), "known": json.dumps(sorted(self.known)),
                "threshold": str(self.threshold), "suffixes": json.dumps(self.suffixes)}
        save_file({"vectors": self.vectors.half().contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Vocabulary | None:
        """The model directory's vocabulary, or None if it has none."""
        from safetensors import SafetensorError, safe_open

        path = Path(directory) / FILE
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                vectors = f.get_tensor("vectors")
            return cls(json.loads(meta["captions"]), vectors, json.loads(meta.get("known", "[]")),
                       float(meta.get("threshold", THRESHOLD)), json.loads(meta.get("suffixes", "[]")))
        except (OSError, KeyError, ValueError, SafetensorError) as e:  # JSONDecodeError is a ValueError
            raise VocabularyError(
                f"{path} is unreadable ({e}); rebuild it or delete it to paint without snapping") from e

    def snap(self, prompts: list[str], pooled: torch.Tensor) -> list[Snap]:
        """Each prompt's snap, given the pooled text vectors (B, D) of its `query` from the model's encoder.
        A suffixed prompt snaps to the nearest caption with the prompt's suffix appended, unless its head is known."""
        sims = torch.nn.functional.normalize(pooled.float(), dim=-1) @ self.vectors.T  # (B, V)
        best, idx = sims.max(dim=1)
        out = []
        for prompt, s, i in zip(prompts, best.tolist(), idx.tolist()):
            head, suffix = self.split(prompt)
            caption = self.captions[i] + suffix
            if not prompt.strip() or _key(prompt) in self.known or _key(head) in self.known or s < self.threshold:
                out.append(Snap(prompt, None, s if prompt.strip() else 0.0))
            else:
                out.append(Snap(prompt, caption, s))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unnoise.conditioning.vocabulary",
                                     description="Write a model directory's vocabulary.safetensors (prompt snapping).")
    parser.add_argument("--model", required=True, help="The model directory to write into.")
    parser.add_argument("--data", required=True,
                        help="The data it was trained on: digits, emoji, emoji-styles or a folder.")
    args = parser.parse_args(argv)
    try:
        vocab = write_vocabulary(args.model, args.data)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = Path(args.model) / FILE
    print(f"{len(vocab.captions)} captions ({len(vocab.known)} known) → {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def write_vocabulary(model_dir: str | Path, data: str) -> Vocabulary:
    """Build the vocabulary of a model trained on `data` (its names where the dataset lists them, else its
    captions; its style tags as suffixes) and save it into model_dir."""
    from ..data import get_dataset
    from .text import TextEncoder

    ds = get_dataset(data, split="train")
    names = getattr(ds, "vocabulary", None)
    captions = names() if callable(names) else list(ds.captions)
    vocab = Vocabulary.build(captions, TextEncoder.load(), known=list(ds.captions),
                             suffixes=getattr(ds, "vocabulary_suffixes", ()))
    vocab.save(model_dir)
    return vocab


if __name__ == "__main__":
    sys.exit(main())
