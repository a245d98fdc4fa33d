"""Issue 27's diagnostic: can this recipe learn the three-style emoji data at all, when capacity is not the limit?

    python scripts/emoji_styles_subset.py --out runs/diag-subset --threads 2          # start (or --resume)
    unnoise export runs/diag-subset --out /tmp/diag --steps 20 --guidance 3 --sampler dpmpp_2m
    unnoise eval styles --model /tmp/diag --seeds 4 --threads 2

trains the main run's recipe (small preset, v-prediction, `--balance families`, `--caption-draw names`, lr 1e-3
constant) from scratch on a few hundred emoji families in all three styles: the families of the evaluation's
60 names and 20 paraphrase targets, then others drawn at random (seed 0) up to --families.  The held-out Noto
pictures stay out, as in the full data.  If retrieval climbs here and not in the full run, the full run's limit
is capacity or exposure, not the captions.

The run is an ordinary `unnoise train` run (config.json, checkpoints, metrics.jsonl; `unnoise export` reads it),
except that its data is the subset: continue it with this script's --resume, not `unnoise train --resume`,
which would go on with the full data.  Its config.json says so under extra.
"""

from __future__ import annotations

import argparse
import random
import sys

from unnoise import data as data_package
from unnoise.data.emoji import family_of
from unnoise.data.emoji_styles import EmojiStylesDataset, load_styles
from unnoise.evaluation.quality import EMOJI_NAMES, EMOJI_PARAPHRASES
from unnoise.training.config import TrainConfig
from unnoise.training.loop import resume_config, train


def chosen_families(n: int) -> set[str]:
    """The families of the evaluated names and paraphrase targets, then random others (seed 0) up to n."""
    full = EmojiStylesDataset()
    index = load_styles()[0]["index"]
    judged = {name.lower() for name in EMOJI_NAMES} | {target.lower() for _, target in EMOJI_PARAPHRASES}
    chosen = {family_of(e) for e in full.emoji if any(name.lower() in judged for name in index[e]["names"])}
    rest = [f for f in dict.fromkeys(family_of(e) for e in full.emoji) if f not in chosen]
    random.Random(0).shuffle(rest)
    return chosen | set(rest[: max(0, n - len(chosen))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--families", type=int, default=300, help="families to keep (default 300)")
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args(argv)

    if args.resume:
        overrides = {"max_steps": args.max_steps, **({"threads": args.threads} if args.threads else {})}
        cfg = resume_config(args.out, overrides)
        n = int(cfg.extra.get("subset_families", args.families))
    else:
        n = args.families
        cfg = TrainConfig(
            data="emoji-styles", out=args.out, model_size="small", prediction_type="v_prediction",
            balance="families", caption_draw="names", lr=1e-3, max_steps=args.max_steps, checkpoint_every=250,
            sample_every=0, threads=args.threads,
            extra={"subset_families": n,
                   "note": "issue-27 diagnostic: data cut to a family subset; resume with "
                           "scripts/emoji_styles_subset.py --resume, not unnoise train --resume"})
    families = chosen_families(n)
    subset = EmojiStylesDataset(families=families)
    print(f"subset: {len(families)} families, {len(subset)} pictures", file=sys.stderr)
    full_data = data_package.get_dataset
    # the trainer builds its data by name; hand it the subset instead (this process only)
    data_package.get_dataset = lambda name, **kw: subset if name == "emoji-styles" else full_data(name, **kw)
    train(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
