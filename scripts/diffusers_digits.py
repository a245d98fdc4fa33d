"""A trained diffusers model painted by unnoise: train a small class-conditional UNet2DModel on 16 × 16
digits *with diffusers*, save it as a DDPMPipeline folder, then paint every class with unnoise's Painter and
with diffusers' DDIM loop (DDIMPipeline's, given unnoise's start) over the same timesteps.

    python scripts/diffusers_digits.py --minutes 12 --out runs/diffusers-digits
    unnoise paint --model runs/diffusers-digits/pipe --class-label 7 --steps 50 --out seven.png

Needs the test extras (diffusers).  Prints max |unnoise − diffusers| per class and writes compare.png
(per class: unnoise's painting, then diffusers').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def train(minutes: float, folder: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from unnoise.data import get_dataset

    data = get_dataset("digits", "train")
    x_all = F.avg_pool2d(data.images.float() / 127.5 - 1, 2)  # (N, 1, 16, 16)
    y_all = data.labels
    torch.manual_seed(0)
    net = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, num_class_embeds=10,
                      block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=16,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < 60 * minutes:
        idx = torch.randint(0, len(x_all), (64,), generator=g)
        noise = torch.randn((64, 1, 16, 16), generator=g)
        t = torch.randint(0, 1000, (64,), generator=g)
        pred = net(sched.add_noise(x_all[idx], noise, t), t, class_labels=y_all[idx]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 250 == 0:
            print(f"step {step}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s", flush=True)
    DDPMPipeline(unet=net.eval(), scheduler=sched).save_pretrained(folder)
    print(f"trained {step} steps in {time.perf_counter() - start:.0f} s; saved {folder}")


@torch.inference_mode()
def compare(folder: Path, steps: int, out: Path) -> None:
    from diffusers import DDIMScheduler, UNet2DModel

    from unnoise import images
    from unnoise.pipeline import Painter

    painter = Painter.from_pretrained(folder)
    unet = UNet2DModel.from_pretrained(folder / "unet").eval()
    tiles, worst = [], 0.0
    for label in range(10):
        p = painter.params("", seed=label, steps=steps, sampler="ddim", spacing="leading", class_label=label)
        ours = painter.paint_tensor(p, 1)
        sched = DDIMScheduler.from_pretrained(folder / "scheduler")
        sched.set_timesteps(steps)
        noise = torch.randn((1, *painter.shape), generator=torch.Generator().manual_seed(label))
        x = noise * (1 - sched.alphas_cumprod[sched.timesteps[0]]).sqrt()  # unnoise's start: x_t = ε·sqrt(1 − ᾱ)
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=torch.tensor([label])).sample, t, x, eta=0.0,
                           use_clipped_model_output=True).prev_sample
        diff = (ours - x).abs().max().item()
        worst = max(worst, diff)
        print(f"class {label}: max |unnoise − diffusers| {diff:.2e}; {(x.abs() >= 1).float().mean().item():.0%} "
              "of pixels at ±1")
        tiles += [images.to_pil(ours[0]), images.to_pil(x[0])]
    grid = images.grid(tiles, cols=4)
    grid.resize((grid.width * 6, grid.height * 6), images.Image.Resampling.NEAREST).save(out / "compare.png")
    print(f"worst {worst:.2e}; wrote {out / 'compare.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("runs/diffusers-digits"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "pipe"
    if not (folder / "model_index.json").exists():
        train(args.minutes, folder)
    compare(folder, args.steps, args.out)


if __name__ == "__main__":
    main()
