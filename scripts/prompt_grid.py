"""A grid of a bundled model's pictures: one row of seeds per prompt, upscaled for reading.

    python scripts/prompt_grid.py --model emoji --out docs/images/emoji-prompts.png
"""

from __future__ import annotations

import argparse

from PIL import Image

from unnoise import Painter
from unnoise.images import grid

PROMPTS = {
    "emoji": ["cat face", "a kitten's face", "red heart", "grinning face", "pizza", "rocket", "fox", "sunflower",
              "Japan", "thumbs up", "fire", "a slice of watermelon"],
    "digits": [f"the digit {d}" for d in range(10)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=6, help="images per prompt (seeds 0 … N−1)")
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling")
    args = ap.parse_args()
    painter = Painter.from_pretrained(args.model)
    prompts = PROMPTS.get(args.model, PROMPTS["emoji"])
    tiles = [img for p in prompts for img in painter(p, num_images=args.seeds, seed=0)]  # image i: seed i
    tiles = [t.resize((t.width * args.scale, t.height * args.scale), Image.NEAREST) for t in tiles]
    grid(tiles, cols=args.seeds).save(args.out)
    print(f"wrote {args.out}: rows = {prompts}")


if __name__ == "__main__":
    main()
