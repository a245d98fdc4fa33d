"""Quality of a trained model, measured: Fréchet distances to real data and prompt adherence.

Two judges, one per bundled dataset:

* `DigitsJudge` — prompts "a handwritten seven" …, cycling over the ten digits.  Adherence is the
  share of generated digits the project's own classifier (≥ 99 % on MNIST test) reads as the
  prompted digit.  FD-digits is the Fréchet distance in that classifier's 128-d features to the
  10 000 test digits; FD-ENL0 the one in EfficientNet-Lite0 features to 2 000 test digits.
* `EmojiJudge` — adherence is retrieval: the generated image's ENL0 feature is compared (cosine)
  with those of all 3 789 real emoji, and it counts when the prompted emoji is among the 5 nearest.
  Prompts are exact names (a fixed list of 60 emoji without skin-tone variants) and hand-written
  paraphrases.  FD-ENL0 is measured against all real emoji.

Reference features are computed once and cached (safetensors) under $UNNOISE_CACHE_DIR/eval.
Network calls (NFE) are counted, not assumed: one batched call of the conditional and unconditional
halves for classifier-free guidance counts once.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UnnoiseError
from ..limits import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from .frechet import Stats, frechet_distance

# Exact names for the emoji retrieval test: 60 emoji with no skin-tone variants, chosen across the
# categories (faces, animals, food, travel, objects, symbols) before any model was evaluated.
EMOJI_NAMES = (
    "grinning face", "face with tears of joy", "smiling face with heart-eyes", "thinking face", "pile of poo",
    "ghost", "alien", "robot", "cat face", "dog face", "fox", "lion", "tiger face", "horse face", "unicorn",
    "cow face", "pig face", "frog", "panda", "chicken", "penguin", "turtle", "spouting whale", "octopus",
    "snail", "butterfly", "sunflower", "cactus", "four leaf clover", "maple leaf", "red apple", "banana",
    "watermelon", "strawberry", "carrot", "pizza", "hamburger", "doughnut", "birthday cake", "hot beverage",
    "soccer ball", "basketball", "globe showing Europe-Africa", "rocket", "automobile", "bicycle",
    "sun", "crescent moon", "rainbow", "snowflake", "fire", "droplet", "red heart", "star", "light bulb",
    "gem stone", "crown", "musical note", "hourglass done", "alarm clock",
)

# Paraphrases: (prompt, the emoji it means).  None of these prompts is one of the training captions.
EMOJI_PARAPHRASES = (
    ("a kitten's face", "cat face"), ("a puppy", "dog face"), ("a happy yellow face", "grinning face"),
    ("laughing so hard it cries", "face with tears of joy"), ("a face in love", "smiling face with heart-eyes"),
    ("a slice of pizza", "pizza"), ("a cheeseburger", "hamburger"), ("a yellow banana", "banana"),
    ("a red apple fruit", "red apple"), ("a cup of coffee", "hot beverage"), ("a spaceship", "rocket"),
    ("a red car", "automobile"), ("a football", "soccer ball"), ("a burning flame", "fire"),
    ("a love heart", "red heart"), ("a shiny diamond", "gem stone"), ("a king's crown", "crown"),
    ("a smiling pile of poop", "pile of poo"), ("a friendly robot", "robot"), ("a black and white bear", "panda"),
)


class JudgeError(UnnoiseError, ValueError):
    """A model the evaluation has no judge for (it knows digits and emoji)."""


@dataclass(frozen=True)
class Setting:
    """How to sample: the knobs a sweep turns."""

    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    spacing: str | None = None

    def label(self) -> str:
        spacing = f", {self.spacing}" if self.spacing else ""
        return f"{self.sampler} {self.steps} steps, guidance {self.guidance:g}{spacing}"


class _Counter(torch.nn.Module):
    """Counts the network's forward calls (a batched CFG call counts once)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def paint_many(painter, prompts: Sequence[str], seeds: Sequence[int], setting: Setting, *, batch_size: int = 100,
               progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, int]:
    """Images (N, C, H, W) in [−1, 1] for prompt i with seed i, and the NFE per image."""
    from ..generation import generate

    if len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt")
    counter = _Counter(painter.model)
    out, nfe = [], 0
    for k in range(0, len(prompts), batch_size):
        ps, ss = list(prompts[k : k + batch_size]), list(seeds[k : k + batch_size])
        counter.calls = 0
        x = generate(
            counter, painter.schedule, painter.info.prediction_type, painter.encoder.encode(ps),
            painter.encoder.encode([""] * len(ps)), shape=painter.shape, seeds=ss, steps=setting.steps,
            guidance=setting.guidance, sampler=setting.sampler,
            spacing=setting.spacing or painter.defaults["spacing"],
            takes_guidance=bool(painter.model.config.guidance_embedding),
        )
        nfe = counter.calls
        out.append(x.clamp(-1, 1))
        if progress:
            progress(len(ps))
    return torch.cat(out), nfe


def cache_dir() -> Path:
    from ..conditioning.text import cache_root

    return cache_root() / "eval"


def _cached(name: str, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from ..conditioning.text import _atomic_save

    path = cache_dir() / f"{name}.safetensors"
    if path.exists():
        return load_file(path)
    tensors = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(tensors, path, {})
    return tensors


@dataclass
class Report:
    model: str
    setting: Setting
    num_images: int
    nfe: int
    metrics: dict[str, float]
    seconds: float
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"model": self.model, **asdict(self.setting), "num_images": self.num_images, "nfe": self.nfe,
                **self.metrics, "seconds": round(self.seconds, 1)}


class DigitsJudge:
    name = "digits"
    metric_names = ("adherence", "fd_digits", "fd_enl0")
    primary = "fd_digits"
    adherence = "adherence"  # the metric score_with_hits gives per image

    def __init__(self, fd_enl0: bool = True, enl0_reference: int = 2000):
        from ..data import get_dataset
        from ..data.digits import WORDS
        from .classifier import load_classifier

        self.classifier = load_classifier()
        self.words = WORDS
        self.fd_enl0, self.enl0_reference = fd_enl0, enl0_reference
        self._test = get_dataset("digits", "test")

    def prompts(self, n: int) -> tuple[list[str], torch.Tensor]:
        labels = torch.arange(n) % 10
        return [f"a handwritten {self.words[d]}" for d in labels.tolist()], labels

    def distinct_prompts(self) -> tuple[list[str], torch.Tensor]:
        """Each judged prompt once, with its label: "a handwritten zero" … "nine"."""
        return self.prompts(10)

    @torch.inference_mode()
    def _class_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for chunk in images.split(500):
            f = self.classifier.features(chunk.float())
            feats.append(f.double())
            logits.append(self.classifier.fc(f))
        return torch.cat(feats), torch.cat(logits)

    @functools.cached_property
    def _reference(self) -> dict[str, Stats]:
        from ..data.base import to_float
        from .features import ENL0_SIZE, enl0_features

        x = to_float(self._test.images)
        classes = _cached("digits-test-classifier", lambda: Stats.of(self._class_features(x)[0]).to_tensors())
        ref = {"fd_digits": Stats.from_tensors(classes)}
        if self.fd_enl0:
            n = self.enl0_reference
            enl0 = _cached(f"digits-test-enl0@{ENL0_SIZE}-{n}", lambda: Stats.of(enl0_features(x[:n])).to_tensors())
            ref["fd_enl0"] = Stats.from_tensors(enl0)
        return ref

    def reference(self) -> dict[str, Stats]:
        """Stats of the real test digits (computed once per machine, read once per judge)."""
        return self._reference

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return self.score_with_hits(images, labels)[0]

    def score_with_hits(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """The metrics, and each image's adherence (N,) 0/1 float64: the classifier reads its digit."""
        from .features import enl0_features

        ref = self.reference()
        feats, logits = self._class_features(images)
        hits = (logits.argmax(1) == labels).double()
        out = {"adherence": float(hits.mean()), "fd_digits": frechet_distance(Stats.of(feats), ref["fd_digits"])}
        if self.fd_enl0:
            out["fd_enl0"] = frechet_distance(Stats.of(enl0_features(images)), ref["fd_enl0"])
        return out, hits


class EmojiJudge:
    name = "emoji"
    metric_names = ("top5_names", "top1_names", "fd_enl0")
    primary = "fd_enl0"
    adherence = "top5_names"  # the metric score_with_hits gives per image

    def __init__(self, image_size: int = 32):
        from ..data.emoji import EmojiDataset

        self.data = EmojiDataset(image_size)  # what get_dataset("emoji") builds; its .names are the emoji names
        index: dict[str, int] = {}
        for i, names in enumerate(self.data.names):
            for nm in names:
                index.setdefault(nm.lower(), i)
        self.index = index
        missing = [n for n in EMOJI_NAMES + tuple(t for _, t in EMOJI_PARAPHRASES) if n.lower() not in index]
        if missing:
            raise ValueError(f"emoji names not in the data: {missing}")

    def item(self, name: str) -> int:
        return self.index[name.lower()]

    @functools.cached_property
    def _reference(self) -> tuple[torch.Tensor, Stats]:
        from ..data.base import to_float
        from .features import ENL0_SIZE, enl0_features

        size = self.data.image_size
        t = _cached(f"emoji{size}-enl0@{ENL0_SIZE}-{len(self.data)}",
                    lambda: {"features": enl0_features(to_float(self.data.images))})
        f = t["features"].double()
        return torch.nn.functional.normalize(f, dim=1), Stats.of(f)

    def reference(self) -> tuple[torch.Tensor, Stats]:
        """Unit-norm ENL0 features of every real emoji (N, 1280) and their Stats (read once per judge)."""
        return self._reference

    def prompts(self, n: int, paraphrases: bool = False) -> tuple[list[str], torch.Tensor]:
        pairs = [(t, t) for t in EMOJI_NAMES] if not paraphrases else list(EMOJI_PARAPHRASES)
        prompts = [pairs[i % len(pairs)][0] for i in range(n)]
        return prompts, torch.tensor([self.item(pairs[i % len(pairs)][1]) for i in range(n)])

    def distinct_prompts(self) -> tuple[list[str], torch.Tensor]:
        """Each judged name once (EMOJI_NAMES), with its emoji's index."""
        return self.prompts(len(EMOJI_NAMES))

    def retrieval(self, images: torch.Tensor, targets: torch.Tensor, k: int = 5) -> tuple[float, float, torch.Tensor]:
        """(top-k hit rate, top-1 hit rate, the k nearest emoji of each image (N, k))."""
        from .features import enl0_features

        top = self._nearest(enl0_features(images), k)
        return float(self._hits(top, targets).mean()), float((top[:, 0] == targets).double().mean()), top

    def _nearest(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        ref, _ = self.reference()
        return (torch.nn.functional.normalize(feats, dim=1) @ ref.T).topk(k, dim=1).indices

    @staticmethod
    def _hits(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (top == targets[:, None]).any(1).double()

    def score(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return self.score_with_hits(images, targets)[0]

    def score_with_hits(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """The metrics, and each image's adherence (N,) 0/1 float64: its emoji is among the 5 nearest."""
        from .features import enl0_features

        feats = enl0_features(images)
        top = self._nearest(feats, 5)
        hits = self._hits(top, targets)
        metrics = {"top5_names": float(hits.mean()), "top1_names": float((top[:, 0] == targets).double().mean()),
                   "fd_enl0": frechet_distance(Stats.of(feats), self.reference()[1])}
        return metrics, hits


def judge_for(painter, **kwargs):
    dataset = painter.info.dataset
    if dataset == "digits":
        return DigitsJudge(**kwargs)
    if dataset in ("emoji", "emoji-styles"):  # emoji-styles: retrieval among the Noto emoji
        return EmojiJudge(image_size=painter.info.image_size)
    raise JudgeError(f"no evaluation for models trained on {dataset!r} (digits and emoji have one)")


def evaluate(painter, judge, setting: Setting, num_images: int, *, seed: int = 0, progress: bool = True) -> Report:
    """Paint num_images images under `setting` (prompts from the judge) and score them."""
    from tqdm import tqdm

    start = time.perf_counter()
    prompts, targets = judge.prompts(num_images)
    with tqdm(total=num_images, desc=setting.label(), unit="img", disable=not progress, leave=False) as bar:
        images, nfe = paint_many(painter, prompts, [seed + i for i in range(num_images)], setting, progress=bar.update)
    metrics = judge.score(images, targets)
    return Report(painter.name, setting, num_images, nfe, metrics, time.perf_counter() - start)


def paraphrase_report(painter, judge: EmojiJudge, setting: Setting, seeds_per_prompt: int = 4, seed: int = 0,
                      snap: bool = False) -> dict:
    """Top-5 retrieval for each hand-written paraphrase (share over seeds) and overall; with `snap`, through
    the Painter's prompt snapping (`snapped_to` records the caption each paraphrase was conditioned on)."""
    n = len(EMOJI_PARAPHRASES) * seeds_per_prompt
    prompts, targets = judge.prompts(n, paraphrases=True)
    snapping = snap and painter.vocabulary is not None
    snaps = {p: painter.snap(p).caption if snapping else None for p, _ in EMOJI_PARAPHRASES}
    conditioned = [snaps[q] or q for q in prompts]  # each paraphrase's snap, once
    images, _ = paint_many(painter, conditioned, [seed + i for i in range(n)], setting)
    _, _, top = judge.retrieval(images, targets)
    hits = (top == targets[:, None]).any(1).double().view(seeds_per_prompt, -1)
    per_prompt = {p: float(h) for (p, _), h in zip(EMOJI_PARAPHRASES, hits.mean(0).tolist())}
    return {"top5": float(hits.mean()), "prompts_mostly_right": int((hits.mean(0) > 0.5).sum()),
            "num_prompts": len(EMOJI_PARAPHRASES), "snap": snap, "per_prompt": per_prompt, "snapped_to": snaps}


def paired_difference(hits_a: torch.Tensor, hits_b: torch.Tensor, groups: int, *, resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of a − b over paired images (the same prompt and seed in both) and its 95 % interval, by a
    bootstrap over prompts (images are grouped: `groups` prompts, prompt-major, equal seeds each), since
    images of one prompt are not independent.  Returns (difference, low, high)."""
    if hits_a.shape != hits_b.shape or hits_a.ndim != 1 or len(hits_a) % groups:
        raise ValueError(f"paired_difference: {tuple(hits_a.shape)} vs {tuple(hits_b.shape)} in {groups} groups")
    per_prompt = (hits_a.double() - hits_b.double()).view(groups, -1).mean(1)  # (P,)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(groups, (resamples, groups), generator=g)
    boot = per_prompt[picks].mean(1).sort().values
    lo, hi = boot[int(0.025 * (resamples - 1))], boot[int(math.ceil(0.975 * (resamples - 1)))]
    return float(per_prompt.mean()), float(lo), float(hi)


def write_table(rows: list[dict], out: Path, title: str) -> None:
    """rows → out/results.json and out/results.md (a Markdown table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    cols = [c for c in rows[0] if c != "model"]

    def fmt(v):
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
