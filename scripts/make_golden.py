"""Golden outputs that guard refactors: each bundled model's pictures for fixed prompts and seeds, and the
weights of a 20-step tiny training run.  tests/test_golden.py compares against them.

    python scripts/make_golden.py            # (re)write tests/golden/ (only for a deliberate numeric change)
    python scripts/make_golden.py --check    # repaint and retrain; print the differences, exit 1 if too large

Pictures must match within 1 grey level (CPUs differ in their last bits); on the machine that wrote them
they match byte for byte, which --check reports.  Weights must match to float tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
MANIFEST = GOLDEN / "manifest.json"
WEIGHTS = "train-tiny-digits.safetensors"
GREY_TOLERANCE = 1  # grey levels (0…255), per channel
WEIGHT_ATOL, WEIGHT_RTOL = 1e-5, 1e-4  # float32 weights after 20 AdamW steps
NORM_RTOL = 1e-3  # per-tensor L2 norms of the exported fp16 EMA weights

# model → [(prompt, seed)]: each paints NUM_IMAGES images (seeds seed, seed+1) with the model's own defaults.
# The second prompt is off the model's vocabulary, so prompt snapping is covered too.
CASES = {
    "emoji": [("burrito", 0), ("a tasty taco", 3)],
    "emoji-fast": [("grinning face", 5), ("a tasty taco", 3)],
    "digits": [("a handwritten seven", 0), ("the number 4", 2)],
    "digits-fast": [("a handwritten three", 11), ("the number 4", 2)],
    "digits-1step": [("a handwritten five", 9), ("the number 4", 2)],
}
NUM_IMAGES = 2
TRAIN_ARGS = ["--data", "digits", "--model-size", "tiny", "--max-steps", "20", "--batch-size", "16", "--seed", "0",
              "--threads", "1", "--warmup-steps", "5", "--sample-every", "0", "--checkpoint-every", "20",
              "--log-every", "10"]


def picture_name(model: str, prompt: str, seed: int) -> str:
    return f"{model}--{prompt.replace(' ', '-')}--s{seed}.png"


def paint_cases(models: list[str] | None = None) -> dict[str, tuple[np.ndarray, dict]]:
    """Paint the cases of `models` (default: all): file name → (uint8 array (H, W) or (H, W, 3), the resolved
    PaintParams as a dict)."""
    from unnoise import Painter

    out: dict[str, tuple[np.ndarray, dict]] = {}
    for model in models or list(CASES):
        painter = Painter.from_pretrained(model)
        for prompt, seed in CASES[model]:
            for i, im in enumerate(painter(prompt, num_images=NUM_IMAGES, seed=seed)):
                out[picture_name(model, prompt, seed + i)] = (np.asarray(im), asdict(im.unnoise_params))
    return out


def train_tiny(run: Path) -> dict:
    """Run `unnoise train` (TRAIN_ARGS) into `run` as a user would; → raw float32 weights, EMA norms, losses."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "unnoise", "train", *TRAIN_ARGS, "--out", str(run)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latest = json.loads((run / "checkpoints" / "latest").read_text())
    weights = load_file(str(run / "checkpoints" / latest / "model.safetensors"))
    exported = load_file(str(run / "model" / "model.safetensors"))
    losses = {str(m["step"]): m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    return {"weights": weights, "ema_norms": {k: v.double().norm().item() for k, v in sorted(exported.items())},
            "losses": losses}


def environment() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": sys.version.split()[0], "numpy": np.__version__}


def write() -> None:
    (GOLDEN / "pictures").mkdir(parents=True, exist_ok=True)
    pictures = paint_cases()
    for old in (GOLDEN / "pictures").glob("*.png"):
        old.unlink()
    for name, (arr, _) in pictures.items():
        Image.fromarray(arr).save(GOLDEN / "pictures" / name, optimize=True)
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_tiny(Path(tmp) / "run")
    save_file(trained["weights"], str(GOLDEN / WEIGHTS))
    manifest = {
        "environment": environment(),
        "pictures": {name: params for name, (_, params) in pictures.items()},
        "num_images": NUM_IMAGES,
        "training": {"command": ["unnoise", "train", *TRAIN_ARGS, "--out", "RUN"], "weights": WEIGHTS,
                     "losses": trained["losses"], "ema_norms": trained["ema_norms"]},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(pictures)} pictures, {WEIGHTS} and {MANIFEST.relative_to(ROOT)}")


def compare_pictures(pictures: dict[str, tuple[np.ndarray, dict]], manifest: dict) -> list[dict]:
    """One row per stored picture: max and mean absolute grey-level difference, whether the params match."""
    rows = []
    for name, stored_params in manifest["pictures"].items():
        if stored_params["model"] not in {p["model"] for _, p in pictures.values()}:
            continue
        arr, params = pictures.get(name, (np.zeros(0, np.uint8), {}))
        gold = np.asarray(Image.open(GOLDEN / "pictures" / name))
        diff = np.abs(arr.astype(np.int16) - gold.astype(np.int16)) if arr.shape == gold.shape else None
        same_params = {k: v for k, v in params.items() if k != "unnoise_version"} == \
            {k: v for k, v in stored_params.items() if k != "unnoise_version"}
        rows.append({"name": name, "max": None if diff is None else int(diff.max()),
                     "mean": None if diff is None else float(diff.mean()), "params_match": same_params})
    return rows


def compare_training(trained: dict, manifest: dict) -> dict:
    """Largest absolute weight, EMA-norm (relative) and loss differences against the stored run."""
    gold = load_file(str(GOLDEN / manifest["training"]["weights"]))
    weights = trained["weights"]
    keys_match = sorted(gold) == sorted(weights)
    max_abs = max((weights[k] - gold[k]).abs().max().item() for k in gold) if keys_match else float("inf")
    within = keys_match and all(torch.allclose(weights[k], gold[k], atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL) for k in gold)
    norms = manifest["training"]["ema_norms"]
    norm_rel = max(abs(trained["ema_norms"].get(k, 0.0) - v) / max(v, 1e-12) for k, v in norms.items())
    loss_diff = max(abs(trained["losses"].get(k, float("inf")) - v) for k, v in manifest["training"]["losses"].items())
    return {"keys_match": keys_match, "max_abs": max_abs, "within": within, "ema_norm_rel": norm_rel,
            "loss_diff": loss_diff, "identical": keys_match and all(torch.equal(weights[k], gold[k]) for k in gold)}


def check() -> int:
    manifest = json.loads(MANIFEST.read_text())
    print(f"stored with {manifest['environment']}\nthis run:   {environment()}")
    rows = compare_pictures(paint_cases(), manifest)
    for r in rows:
        shown = "MISSING OR RESHAPED" if r["max"] is None else f"max {r['max']}  mean {r['mean']:.4f}"
        print(f"{r['name']:50s} {shown}" + ("" if r["params_match"] else "  PARAMS DIFFER"))
    maxes = [r["max"] for r in rows]
    worst = max(m if m is not None else 999 for m in maxes)
    mean = float(np.mean([r["mean"] for r in rows if r["mean"] is not None]))
    print(f"pictures: {len(rows)}, max grey-level diff {worst}, mean {mean:.5f}, "
          f"byte-identical {sum(m == 0 for m in maxes)}/{len(rows)}")
    with tempfile.TemporaryDirectory() as tmp:
        t = compare_training(train_tiny(Path(tmp) / "run"), manifest)
    print(f"training: max |Δweight| {t['max_abs']:.3g} (identical: {t['identical']}), EMA norm rel. diff "
          f"{t['ema_norm_rel']:.3g}, loss diff {t['loss_diff']:.3g}")
    ok = worst <= GREY_TOLERANCE and all(r["params_match"] for r in rows) and t["within"] \
        and t["ema_norm_rel"] <= NORM_RTOL
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))  # paint with this checkout's code, as train_tiny does
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored outputs instead of writing them")
    args = ap.parse_args()
    sys.exit(check()) if args.check else write()


if __name__ == "__main__":
    main()
