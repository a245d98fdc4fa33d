"""Issue 27's pictures: held-out emoji painted "<name>, noto style" beside their training styles, and one
untagged prompt over 8 seeds with the style the classifier reads in each.

    python scripts/emoji_styles_grids.py --model DIR --out docs/images/emoji-styles

writes DIR-held-out.png (one row per held-out emoji: its real Noto picture, which training never saw, then
its real Twemoji and OpenMoji pictures, which it did see, then the model's paintings of "<name>, noto style"
and of "<name>, twemoji style" and "<name>, openmoji style", a white gap between the groups) and
DIR-untagged.png (the plain prompt over 8 seeds), and prints what each row and tile is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from unnoise import Painter
from unnoise.data.base import to_float
from unnoise.data.emoji_styles import held_out_emoji, load_styles
from unnoise.evaluation.style_classifier import classify_styles, load_style_classifier
from unnoise.images import grid, to_pil, to_tensor

# held-out emoji shown by default: a spread of kinds (faces, animals, food, objects, vehicles), none a flag
HELD_OUT = ["pile of poo", "banana", "automobile", "mouse face", "parrot", "flushed face", "bomb", "satellite"]


def _blank(size: int) -> Image.Image:
    return Image.new("RGB", (size, size), (255, 255, 255))


def held_out_grid(painter: Painter, names: list[str], seeds: int, scale: int) -> Image.Image:
    meta, styles = load_styles()
    seq_of = {n.lower(): s for s in held_out_emoji() for n in meta["index"][s]["names"]}
    tiles = []
    for name in names:
        seq = seq_of.get(name.lower())
        if seq is None:
            raise SystemExit(f"{name!r} is not held out of Noto (see emoji_styles.is_held_out)")
        real = [styles[s][1][styles[s][0].index(seq)] if seq in styles[s][0] else None for s in styles]
        row = [to_pil(to_float(t)) if t is not None else _blank(32) for t in real] + [_blank(32)]
        for style in ("noto", "twemoji", "openmoji"):
            row += painter(f"{name}, {style} style", num_images=seeds, seed=0) + [_blank(32)]
        tiles += row[:-1]
    cols = len(tiles) // len(names)
    tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST) for t in tiles]
    return grid(tiles, cols=cols)


def untagged_grid(painter: Painter, prompt: str, seeds: int, scale: int) -> tuple[Image.Image, list[str]]:
    pictures = painter(prompt, num_images=seeds, seed=0)
    _, classes = load_style_classifier()
    ids, conf = classify_styles(torch.stack([to_tensor(p) for p in pictures]))
    reads = [f"{classes[i]} {c:.2f}" for i, c in zip(ids.tolist(), conf.tolist())]
    tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST) for t in pictures]
    return grid(tiles, cols=seeds), reads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model directory trained on emoji-styles (or a bundled name)")
    ap.add_argument("--out", required=True, help="path prefix: PREFIX-held-out.png and PREFIX-untagged.png")
    ap.add_argument("--held-out", default=",".join(HELD_OUT), help="comma-separated held-out emoji names")
    ap.add_argument("--prompt", default="cat face", help="the untagged prompt painted over --untagged-seeds")
    ap.add_argument("--seeds", type=int, default=3, help="paintings per held-out emoji and style (seeds 0 … N−1)")
    ap.add_argument("--untagged-seeds", type=int, default=8)
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling")
    args = ap.parse_args()
    painter = Painter.from_pretrained(args.model)
    names = [n.strip() for n in args.held_out.split(",") if n.strip()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    held = held_out_grid(painter, names, args.seeds, args.scale)
    held.save(f"{args.out}-held-out.png")
    print(f"wrote {args.out}-held-out.png: rows = {names}; columns = real noto (never trained on) | real twemoji | "
          f"real openmoji || {args.seeds} × '<name>, noto style' || twemoji style || openmoji style")
    picture, reads = untagged_grid(painter, args.prompt, args.untagged_seeds, args.scale)
    picture.save(f"{args.out}-untagged.png")
    print(f"wrote {args.out}-untagged.png: {args.prompt!r}, seeds 0 … {args.untagged_seeds - 1}; "
          f"the style classifier reads: {', '.join(reads)}")


if __name__ == "__main__":
    main()
