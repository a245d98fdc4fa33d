"""`unnoise eval styles`: the goals of issue 27 (a multi-style emoji model that generates), measured.

Five numbers, each from pictures painted with the same seeds for every prompt (seed `seed + s`):

* names, noto style — "<name>, noto style" for the judge's exact names (quality.EMOJI_NAMES): top-5
  retrieval among all 3 789 Noto emoji (ENL0 cosine, as `eval quality`).  Goal ≥ 85 %.
* paraphrases as typed — quality.EMOJI_PARAPHRASES untouched (no style, no snapping): a hit when the meant
  emoji, in any style, is among the 5 nearest of all real pictures of all styles (a plain prompt may paint
  any style).  Goal ≥ 50 %.  The Noto-only retrieval of the same pictures is reported beside it (the
  number the bundled Noto model's 20 % is comparable with).
* held-out Noto pairs — "<name>, noto style" for every emoji whose Noto picture training never saw
  (emoji_styles.held_out_emoji()): top-5 among all Noto emoji.  Goal ≥ 50 %: the model generates.
* diversity — each exact name, untagged, over 8 seeds: the share of names painted in at least two
  styles, the style read by the project's style classifier (style_classifier.py).  Goal ≥ 70 %.
* FD-ENL0 per style — the names tagged ", <style> style" against that style's whole atlas (N = names ×
  seeds per style; compare only at equal N).

Reference ENL0 features of each style's atlas are cached like `eval quality`'s (Noto shares its file).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .frechet import Stats, frechet_distance
from .quality import EMOJI_NAMES, EMOJI_PARAPHRASES, Setting, _cached, paint_many

# the goals: key → (what is measured, goal); each a share in [0, 1]
GOALS = {
    "names_noto_top5": ('exact names + ", noto style": top-5 among Noto', 0.85),
    "paraphrases_top5": ("paraphrases as typed (no snapping): top-5, any style", 0.50),
    "held_out_top5": ('held-out Noto pairs ("<name>, noto style"): top-5 among Noto', 0.50),
    "diversity": ("untagged names painting ≥ 2 styles over the diversity seeds", 0.70),
}
# a picture's style counts for diversity only when the classifier is this sure (on the held-out atlas
# families: 96.5 % of the pictures, read 98.9 % right, against 97.9 % over every read)
CONFIDENT = 0.8


class StyleReferences:
    """The real pictures of every style: unit-norm ENL0 features, their emoji, and Stats for FD-ENL0."""

    def __init__(self):
        from ..data.emoji_styles import STYLES, load_styles

        self.meta, self._styles = load_styles()
        self.styles = STYLES
        self.seqs = {s: self._styles[s][0] for s in STYLES}
        names: dict[str, str] = {}
        for seq, entry in self.meta["index"].items():
            for nm in entry["names"]:
                names.setdefault(nm.lower(), seq)
        self.by_name = names
        self._features: dict[str, torch.Tensor] = {}

    def seq(self, name: str) -> str:
        return self.by_name[name.lower()]

    def name(self, seq: str) -> str:
        """The emoji's first name, as its training captions spell it: '🐱' → 'cat face'."""
        return self.meta["index"][seq]["names"][0]

    def features(self, style: str) -> torch.Tensor:
        """(N, 1280) float64 ENL0 features of the style's atlas (cached on disk, read once per object)."""
        from ..data.base import to_float
        from .features import ENL0_SIZE, enl0_features

        if style in self._features:
            return self._features[style]
        tiles = self._styles[style][1]
        # Noto's file is the one `eval quality` caches for the same 3 789 pictures
        prefix = "emoji32" if style == "noto" else f"emoji-styles32-{style}"
        name = f"{prefix}-enl0@{ENL0_SIZE}-{len(tiles)}"
        self._features[style] = _cached(name, lambda: {"features": enl0_features(to_float(tiles))})["features"].double()
        return self._features[style]

    def stats(self, style: str) -> Stats:
        return Stats.of(self.features(style))

    def top5_hits(self, feats: torch.Tensor, targets: Sequence[str], styles: Sequence[str]) -> torch.Tensor:
        """(N,) 0/1 float64: the target emoji (in any of `styles`) is among the 5 nearest real pictures."""
        ref = torch.nn.functional.normalize(torch.cat([self.features(s) for s in styles]), dim=1)
        row_seq = [q for s in styles for q in self.seqs[s]]
        top = (torch.nn.functional.normalize(feats.double(), dim=1) @ ref.T).topk(5, dim=1).indices  # (N, 5)
        return torch.tensor([float(t in {row_seq[j] for j in row}) for t, row in zip(targets, top.tolist())],
                            dtype=torch.float64)


def spread(items: Sequence, n: int | None) -> list:
    """At most n items, evenly spaced (all of them when n is None): subsets cover every category."""
    if n is None or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def diversity(style_ids: torch.Tensor, confidence: torch.Tensor | None = None, threshold: float = 0.0,
              min_count: int = 1) -> torch.Tensor:
    """(P,) bool: prompt p's pictures (row p of (P, S) style indices) show at least two styles, each read in at
    least `min_count` pictures, counting only reads with `confidence` ≥ threshold (a misread picture must not
    make a prompt diverse)."""
    ids = style_ids if confidence is None else style_ids.masked_fill(confidence < threshold, -1)
    seen = [(ids == k).sum(1) >= min_count for k in style_ids.unique().tolist()]  # per style: (P,)
    return torch.stack(seen).sum(0) >= 2 if seen else torch.zeros(len(ids), dtype=torch.bool)


def _paint(painter, prompts: list[str], seeds: list[int], setting: Setting, desc: str, progress: bool) -> torch.Tensor:
    """(P·S, C, H, W) prompt-major: every prompt with every seed."""
    from tqdm import tqdm

    ps = [p for p in prompts for _ in seeds]
    with tqdm(total=len(ps), desc=desc, unit="img", disable=not progress) as bar:
        images, _ = paint_many(painter, ps, seeds * len(prompts), setting, progress=bar.update)
    return images


def _share_per_prompt(hits: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    return {p: float(h) for p, h in zip(prompts, hits.view(len(prompts), -1).mean(1).tolist())}


@dataclass
class _Run:
    """What every part of the evaluation paints with, and where it reports."""

    painter: Any
    setting: Setting
    refs: StyleReferences
    seeds: list[int]
    progress: bool
    echo: Callable[[str], Any]

    def paint(self, prompts: list[str], desc: str, seeds: list[int] | None = None) -> torch.Tensor:
        """(P·S, C, H, W) prompt-major: every prompt with every seed."""
        return _paint(self.painter, prompts, seeds or self.seeds, self.setting, desc, self.progress)

    def features(self, prompts: list[str], desc: str) -> torch.Tensor:
        """ENL0 features (P·S, 1280) of the prompts painted with every seed."""
        from .features import enl0_features

        return enl0_features(self.paint(prompts, desc))


def _tagged_names(run: _Run, names: list[str]) -> dict:
    """(a) + (e): every name tagged with every style; top-5 within that style, FD-ENL0 against its atlas."""
    refs = run.refs
    out: dict[str, dict[str, float]] = {"top5_tagged_per_style": {}, "fd_enl0": {}}
    targets = [refs.seq(n) for n in names for _ in run.seeds]
    for style in refs.styles:
        feats = run.features([f"{n}, {style} style" for n in names], f'names, "{style} style"')
        out["top5_tagged_per_style"][style] = float(refs.top5_hits(feats, targets, [style]).mean())
        out["fd_enl0"][style] = frechet_distance(Stats.of(feats), refs.stats(style))
        run.echo(f'names, "{style} style": top-5 {out["top5_tagged_per_style"][style]:.1%}, '
                 f'FD-ENL0 {out["fd_enl0"][style]:.1f}')
    return {**out, "fd_images_per_style": len(targets), "names_noto_top5": out["top5_tagged_per_style"]["noto"]}


def _paraphrases(run: _Run, pairs: list[tuple[str, str]]) -> dict:
    """(b) the paraphrases as typed: top-5 among every style (and among Noto only)."""
    refs = run.refs
    feats = run.features([p for p, _ in pairs], "paraphrases as typed")
    meant = [refs.seq(t) for _, t in pairs for _ in run.seeds]
    hits = refs.top5_hits(feats, meant, refs.styles)
    out = {"paraphrases_top5": float(hits.mean()),
           "paraphrases_top5_noto_only": float(refs.top5_hits(feats, meant, ["noto"]).mean()),
           "paraphrases_per_prompt": _share_per_prompt(hits, [p for p, _ in pairs])}
    run.echo(f"paraphrases as typed: top-5 {out['paraphrases_top5']:.1%} (any style), "
             f"{out['paraphrases_top5_noto_only']:.1%} (among Noto only)")
    return out


def _held_out(run: _Run, held: list[str]) -> dict:
    """(c) "<name>, noto style" for emoji whose Noto picture training never saw: top-5 among Noto."""
    prompts = [f"{run.refs.name(q)}, noto style" for q in held]
    feats = run.features(prompts, "held-out Noto pairs")
    hits = run.refs.top5_hits(feats, [q for q in held for _ in run.seeds], ["noto"])
    run.echo(f"held-out Noto pairs: top-5 {float(hits.mean()):.1%} over {len(held)} emoji")
    return {"held_out_top5": float(hits.mean()), "held_out_per_prompt": _share_per_prompt(hits, prompts)}


def _diversity(run: _Run, names: list[str], d_seeds: list[int]) -> dict:
    """(d) untagged names over the diversity seeds, each picture's style read by the style classifier."""
    from .features import enl0_features
    from .style_classifier import classify_styles, load_style_classifier

    _, classes = load_style_classifier()
    images = run.paint(names, "untagged names (diversity)", d_seeds)
    ids, conf = (t.view(len(names), len(d_seeds)) for t in classify_styles(images))
    feats, meant = enl0_features(images), [run.refs.seq(n) for n in names for _ in d_seeds]
    hits = run.refs.top5_hits(feats, meant, run.refs.styles)
    shares = {c: float((ids == i).double().mean()) for i, c in enumerate(classes)}
    out = {"diversity": float(diversity(ids, conf, CONFIDENT).double().mean()),
           "diversity_any_read": float(diversity(ids).double().mean()),
           "diversity_twice": float(diversity(ids, conf, CONFIDENT, min_count=2).double().mean()),
           "style_shares_untagged": shares,
           "styles_per_name": {n: [classes[i] if c >= CONFIDENT else f"{classes[i]}?" for i, c in zip(row, cs)]
                               for n, row, cs in zip(names, ids.tolist(), conf.tolist())},
           # a painting that is not even its emoji says little about style: the same share among recognised ones
           "diversity_recognised": float(diversity(ids, conf * hits.view_as(conf), CONFIDENT).double().mean()),
           "names_untagged_top5_any_style": float(hits.mean()),
           "names_untagged_top5_noto_only": float(run.refs.top5_hits(feats, meant, ["noto"]).mean())}  # eval quality's
    run.echo(f"diversity: {out['diversity']:.1%} of names in ≥ 2 styles over {len(d_seeds)} seeds "
             f"({out['diversity_any_read']:.1%} counting unsure reads too, {out['diversity_twice']:.1%} with two "
             "styles in ≥ 2 pictures each); " + ", ".join(f"{c} {v:.0%}" for c, v in shares.items()))
    return out


def evaluate_styles(painter, setting: Setting, *, num_prompts: int | None = None, seeds: int = 4,
                    diversity_seeds: int = 8, seed: int = 0, progress: bool = True,
                    echo: Callable[[str], Any] = print) -> dict:
    """Paint and score the issue-27 goals; a JSON-ready dict (see the module docstring)."""
    from ..data.emoji_styles import held_out_emoji

    start = time.perf_counter()
    run = _Run(painter, setting, StyleReferences(), [seed + s for s in range(seeds)], progress, echo)
    every_held = held_out_emoji()
    names, held = spread(EMOJI_NAMES, num_prompts), spread(every_held, num_prompts)
    paraphrases = spread(EMOJI_PARAPHRASES, num_prompts)
    out: dict = {"model": painter.name, "setting": asdict(setting), "seeds": seeds, "diversity_seeds": diversity_seeds,
                 "num_names": len(names), "num_paraphrases": len(paraphrases), "num_held_out": len(held),
                 "held_out_among_names": [n for n in names if run.refs.seq(n) in set(every_held)]}
    out |= _tagged_names(run, names)
    out |= _paraphrases(run, paraphrases)
    out |= _held_out(run, held)
    out |= _diversity(run, names, [seed + s for s in range(diversity_seeds)])
    out["goals"] = {k: {"label": label, "value": out[k], "goal": goal, "met": out[k] >= goal}
                    for k, (label, goal) in GOALS.items()}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def report_lines(r: dict, classifier_accuracy: float) -> list[str]:
    """The goals table as Markdown lines (printed and written to results.md)."""
    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]
    for g in r["goals"].values():
        lines.append(f"| {g['label']} | {g['value']:.1%} | ≥ {g['goal']:.0%} | {'yes' if g['met'] else 'no'} |")
    fd = " · ".join(f"{s} {v:.1f}" for s, v in r["fd_enl0"].items())
    lines += ["", f"FD-ENL0 per style (N = {r['fd_images_per_style']} per style, against that style's atlas): {fd}",
              "Top-5 of the tagged names within their own style: "
              + " · ".join(f"{s} {v:.1%}" for s, v in r["top5_tagged_per_style"].items()),
              f"Diversity counting unsure reads too: {r['diversity_any_read']:.1%}; two styles each in ≥ 2 "
              f"pictures: {r['diversity_twice']:.1%}; counting only paintings retrieved as their emoji: "
              f"{r['diversity_recognised']:.1%}; untagged styles read: "
              + " · ".join(f"{s} {v:.0%}" for s, v in r["style_shares_untagged"].items()),
              f"Paraphrases among Noto only: {r['paraphrases_top5_noto_only']:.1%}; untagged names: top-5 "
              f"{r['names_untagged_top5_any_style']:.1%} any style, "
              f"{r['names_untagged_top5_noto_only']:.1%} among Noto",
              f"Names held out of Noto among the names: {', '.join(r['held_out_among_names']) or 'none'}",
              f"Style classifier: held-out accuracy {classifier_accuracy:.1%} (split by emoji)",
              f"{r['num_names']} names, {r['num_paraphrases']} paraphrases, {r['num_held_out']} held-out emoji; "
              f"{r['seeds']} seeds ({r['diversity_seeds']} for diversity); {r['seconds']:.0f} s"]
    return lines
