"""Training throughput of unnoise's UNet against a diffusers UNet2DModel of about the same FLOPs per image.

    python benchmarks/train_throughput.py                    # default preset, batch 64, 1-channel 32×32
    python benchmarks/train_throughput.py --batch-sizes 32 64 128 --modes fp32 fp32-cl bf16-cl

One training step = forward + MSE loss + backward + AdamW step (+ zero_grad), on random MNIST-like data
(1×32×32 in [−1, 1], t uniform in [0, 1000)); ours also reads a random 16-token text condition, the
peer is unconditional (UNet2DModel has no text input), so ours does strictly more kinds of work.
Timed steps alternate between the two networks, so a busy machine slows both alike; each figure is
the median over the timed steps after warm-up.  FLOPs come from torch.utils.flop_counter (forward +
backward, per image; matmuls, convolutions and attention only, as that counter defines them).  The
CPU's matmul peak (fp32 and bf16) is measured in the same run.

The last line is `ratio: X` = (ours images/s · ours FLOPs/image) / (peer images/s · peer FLOPs/image),
each network in its fastest mode among those run (the same modes are offered to both).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from unnoise.models import UNet, UNetConfig

MODES = ("fp32", "fp32-cl", "bf16-cl", "bf16", "compile-fp32-cl", "compile-bf16-cl")


def matmul_peak(dtype: torch.dtype, budget_s: float = 3.0) -> float:
    """Best GFLOP/s of square matmuls (sizes 512…2048) in dtype: this machine's practical peak.

    The best single repetition, not the median: contention only ever slows a run down.
    """
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        t0 = time.perf_counter()
        a @ b  # warm-up, and a cost estimate: slow dtypes (bf16 without hardware support) stop early
        first = time.perf_counter() - t0
        for _ in range(max(3, min(15, int(budget_s / max(first, 1e-4))))):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        if first * 8 > budget_s:  # the next size would take too long
            break
    return best


def conv_rates(reps: int = 5) -> tuple[float, float]:
    """Best forward and forward+backward GFLOP/s of one conv3×3 128→128 on 64×128×16×16, channels_last.

    oneDNN's convolution is the op a conv net spends most of its time in; its fwd+bwd rate (the weight
    gradient is the slow part) is the ceiling for any network built of such convs, ours and the peer.
    """
    x = torch.randn(64, 128, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    gy = torch.randn(64, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * 256 * 128 * 128 * 9
    rates = []
    for fn, mult in ((lambda: conv(x), 1), (lambda: torch.autograd.grad(conv(x), [x, conv.weight], gy), 3)):
        fn()
        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = max(best, mult * flops / (time.perf_counter() - t0) / 1e9)
        rates.append(best)
    return rates[0], rates[1]


def peer_candidates(channels: int):
    """Usual UNet2DModel layouts (DDPM-CIFAR-like and smaller), attention at the lowest resolution."""
    for widths in ((32, 64, 64), (32, 64, 128), (64, 64, 128), (64, 128, 128), (32, 64, 64, 128), (64, 128, 128, 256)):
        for layers in (1, 2):
            attn = (False,) * (len(widths) - 1) + (True,)
            yield dict(
                sample_size=32, in_channels=channels, out_channels=channels, block_out_channels=widths,
                layers_per_block=layers, norm_num_groups=32, attention_head_dim=32,
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            )


def flops_per_image(step_fn, batch: int) -> float:
    """Forward + backward FLOPs per image of one training step."""
    with FlopCounterMode(display=False) as counter:
        step_fn(optimizer_step=False)
    return counter.get_total_flops() / batch


@dataclass
class Trainee:
    """One network set up for training steps in one mode on fixed random data."""

    name: str
    model: torch.nn.Module
    inputs: tuple
    target: torch.Tensor
    autocast: bool
    optimizer: torch.optim.Optimizer
    forward: callable

    def step(self, optimizer_step: bool = True) -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            out = self.forward(*self.inputs)
        loss = F.mse_loss(out.float(), self.target)
        loss.backward()
        if optimizer_step:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_trainee(kind: str, config, mode: str, batch: int, channels: int, seed: int = 0) -> Trainee:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # module init uses the global RNG
    if kind == "ours":
        model = UNet(config)
    else:
        from diffusers import UNet2DModel

        model = UNet2DModel(**config)
    x = torch.rand(batch, channels, 32, 32, generator=g) * 2 - 1  # (B, C, 32, 32)
    t = torch.rand(batch, generator=g) * 1000
    channels_last = mode.endswith("-cl")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if kind == "ours":
        L = 16
        lengths = torch.randint(3, L + 1, (batch,), generator=g)
        cond = {
            "tokens": torch.randn(batch, L, 384, generator=g),
            "mask": torch.arange(L)[None] < lengths[:, None],
            "pooled": torch.randn(batch, 384, generator=g),
        }
        inputs, fwd = (x, t, cond), model
    else:
        inputs, fwd = (x, t), (lambda x, t: model(x, t).sample)
    if mode.startswith("compile"):
        compiled = torch.compile(model)
        fwd = compiled if kind == "ours" else (lambda x, t: compiled(x, t).sample)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randn(x.shape, generator=g)
    return Trainee(kind, model, inputs, target, "bf16" in mode, optimizer, fwd)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=["tiny", "small", "default"])
    ap.add_argument("--channels", type=int, default=1, help="image channels (1 digits, 3 emoji)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--modes", nargs="+", default=["fp32", "fp32-cl", "bf16-cl"], choices=MODES)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 modes even where bf16 matmuls are slow")
    ap.add_argument("--ratio-batch", type=int, default=None, help="batch size for the ratio line (default: the first)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    conv_fwd, conv_train = conv_rates()
    print(f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s; for context, one fp32 "
          f"conv3×3 128ch 16×16: forward {conv_fwd:.1f}, forward+backward {conv_train:.1f} GFLOP/s")
    if peak["bf16"] < peak["fp32"] and not args.force_bf16:
        dropped = [m for m in args.modes if "bf16" in m]
        args.modes = [m for m in args.modes if "bf16" not in m]
        if dropped:
            print(f"skipping {', '.join(dropped)}: bf16 matmuls are slower than fp32 here "
                  "(measured above: no native bf16 path, or one slower than fp32's; --force-bf16 runs them anyway)")

    ours_cfg = getattr(UNetConfig, args.preset)().replace(in_channels=args.channels, out_channels=args.channels)
    probe = make_trainee("ours", ours_cfg, "fp32", 2, args.channels)
    ours_flops = flops_per_image(probe.step, 2)
    # The peer: the usual UNet2DModel layout whose FLOPs per image are nearest ours.
    scored = []
    for cand in peer_candidates(args.channels):
        p = make_trainee("peer", cand, "fp32", 2, args.channels)
        scored.append((abs(flops_per_image(p.step, 2) / ours_flops - 1), cand))
    peer_cfg = min(scored, key=lambda s: s[0])[1]
    peer_probe = make_trainee("peer", peer_cfg, "fp32", 2, args.channels)
    peer_flops = flops_per_image(peer_probe.step, 2)
    print(f"ours: UNetConfig.{args.preset}() {params(probe.model) / 1e6:.2f}M params, "
          f"{ours_flops / 1e9:.3f} GFLOP/image (fwd+bwd)")
    print(f"peer: diffusers UNet2DModel block_out_channels={peer_cfg['block_out_channels']} "
          f"layers_per_block={peer_cfg['layers_per_block']} attention at the lowest level, "
          f"{params(peer_probe.model) / 1e6:.2f}M params, {peer_flops / 1e9:.3f} GFLOP/image "
          f"({100 * (peer_flops / ours_flops - 1):+.1f}% vs ours)")

    results = {}  # (batch, mode, kind) → seconds per step (median)
    for batch in args.batch_sizes:
        for mode in args.modes:
            pair = [make_trainee("ours", ours_cfg, mode, batch, args.channels),
                    make_trainee("peer", peer_cfg, mode, batch, args.channels)]
            for trainee in pair:
                for _ in range(args.warmup):
                    trainee.step()
            times = {tr.name: [] for tr in pair}
            for _ in range(args.iters):
                for trainee in pair:  # alternate, so both see the same machine
                    t0 = time.perf_counter()
                    trainee.step()
                    times[trainee.name].append(time.perf_counter() - t0)
            for trainee in pair:
                results[batch, mode, trainee.name] = statistics.median(times[trainee.name])
            print(f"timed batch {batch} {mode}: ours {results[batch, mode, 'ours']:.2f} s/step, "
                  f"peer {results[batch, mode, 'peer']:.2f} s/step (load average {os.getloadavg()[0]:.2f})", flush=True)
            del pair
    # A peak is an upper bound, so keep the better of the two measurements.
    peak["fp32"] = max(peak["fp32"], matmul_peak(torch.float32))

    print(f"\nfp32 matmul peak used: {peak['fp32']:.1f} GFLOP/s; bf16: {peak['bf16']:.1f} GFLOP/s")
    # The share of the bf16 peak (the moonshot's yardstick) only means something where bf16 is the faster
    # path; where it is slower than fp32 its "peak" is a slow emulation, and fp32 work would read as > 100 %.
    show_bf16 = peak["bf16"] >= peak["fp32"]
    print(f"{'batch':>5} {'mode':>16} {'net':>5} {'img/s':>8} {'GFLOP/s':>8} {'%fp32pk':>8}"
          + (f" {'%bf16pk':>8}" if show_bf16 else "") + f" {'ms/step':>8}")
    for (batch, mode, kind), sec in results.items():
        gfs = batch / sec * (ours_flops if kind == "ours" else peer_flops) / 1e9
        print(f"{batch:>5} {mode:>16} {kind:>5} {batch / sec:>8.1f} {gfs:>8.1f} {100 * gfs / peak['fp32']:>7.1f}%"
              + (f" {100 * gfs / peak['bf16']:>7.1f}%" if show_bf16 else "") + f" {1e3 * sec:>8.0f}")
    if not show_bf16:
        print("(no %bf16pk column: bf16 matmuls are slower than fp32 on this CPU)")

    batch = args.ratio_batch or args.batch_sizes[0]

    def flop_rate(kind: str, mode: str) -> float:
        return batch / results[batch, mode, kind] * (ours_flops if kind == "ours" else peer_flops)

    for mode in args.modes:
        print(f"same mode {mode}: ratio {flop_rate('ours', mode) / flop_rate('peer', mode):.2f}")
    best = {k: max(args.modes, key=lambda m: flop_rate(k, m)) for k in ("ours", "peer")}
    print(f"best modes at batch {batch}: ours {best['ours']}, peer {best['peer']}")
    print(f"ratio: {flop_rate('ours', best['ours']) / flop_rate('peer', best['peer']):.2f}")


if __name__ == "__main__":
    main()
