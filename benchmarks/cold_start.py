"""Cold start: how long from a shell prompt to a painted PNG?  Goal ≤ 5 s on the 2-core CPU.

    python benchmarks/cold_start.py [--repeats 5] [--model emoji] [--prompt "a cat face"]

Each repeat runs a fresh `python -m unnoise paint PROMPT --out …` process (import + load model and
text encoder + the model's default steps + PNG) and measures its wall time; medians are reported.
The peer, in the same run and the same way (fresh processes): the usual diffusers + sentence-
transformers route to the same job — load sentence-transformers' MiniLM, a diffusers
`UNet2DModel` of about the same FLOPs from a local `save_pretrained` directory and a
`DPMSolverMultistepScheduler`, then 20 guided steps at 32×32.  It ends with `ratio: X`
(peer wall time ÷ ours; > 1 means we start faster).

One in-process breakdown (import / load / paint) follows, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = r"""
import sys, time
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel
from sentence_transformers import SentenceTransformer
from unnoise.conditioning.text import original_model_dir  # the float32 original in the PyPI package
enc = SentenceTransformer(str(original_model_dir()), device="cpu")
text = torch.from_numpy(enc.encode([sys.argv[2], ""]))
unet = UNet2DModel.from_pretrained(sys.argv[1]).eval()
sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear")
sched.set_timesteps(20)
g = torch.Generator().manual_seed(0)
x = torch.randn(1, 3, 32, 32, generator=g)
with torch.inference_mode():
    for t in sched.timesteps:
        eps = unet(torch.cat([x, x]), t).sample  # cond + uncond in one batch, as CFG does
        e_c, e_u = eps.chunk(2)
        x = sched.step(e_u + 3.0 * (e_c - e_u), t, x).prev_sample
from PIL import Image
Image.fromarray(((x[0].clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).numpy()).save(sys.argv[3])
"""


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed:\n{r.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--prompt", default="a cat face")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both (default: unset)")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        from diffusers import UNet2DModel

        peer_dir = Path(tmp) / "peer-unet"
        UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64, 128),
                    layers_per_block=1, down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
                    up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3).save_pretrained(peer_dir)
        ours_cmd = [sys.executable, "-m", "unnoise", "paint", args.prompt, "--model", args.model, "--seed", "0",
                    "--out", str(Path(tmp) / "ours.png")]
        peer_cmd = [sys.executable, "-c", PEER, str(peer_dir), args.prompt, str(Path(tmp) / "peer.png")]
        wall(ours_cmd, env), wall(peer_cmd, env)  # warm the OS file cache for both
        ours, peer = [], []
        for _ in range(args.repeats):  # alternate so both see the same machine
            ours.append(wall(ours_cmd, env))
            peer.append(wall(peer_cmd, env))

    t0 = time.perf_counter()
    from unnoise import Painter

    t1 = time.perf_counter()
    painter = Painter.from_pretrained(args.model)
    t2 = time.perf_counter()
    painter(args.prompt, seed=0)
    t3 = time.perf_counter()

    mo, mp = statistics.median(ours), statistics.median(peer)
    print(f"cold `unnoise paint` ({args.model}, default {painter.defaults['steps']} steps {painter.defaults['sampler']}): "
          f"median {mo:.2f} s over {args.repeats} fresh processes (min {min(ours):.2f}, max {max(ours):.2f}); goal ≤ 5 s: "
          f"{'met' if mo <= 5 else 'NOT met'}")
    print(f"peer diffusers + sentence-transformers, 20 steps: median {mp:.2f} s (min {min(peer):.2f}, max {max(peer):.2f})")
    print(f"in-process: import {t1 - t0:.2f} s, load model + text encoder {t2 - t1:.2f} s, paint {t3 - t2:.2f} s")
    print(f"ratio: {mp / mo:.2f}")


if __name__ == "__main__":
    main()
