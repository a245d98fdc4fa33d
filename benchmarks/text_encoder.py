"""Our MiniLM-L6 text encoder vs sentence-transformers on the same weights, in one run.

Load: fresh subprocesses, alternating ours and theirs, timing library import + weights load
after `import torch` (what a user waits for).  Encode: in-process medians for one prompt and a
batch of 64 captions.  Prints medians and the ratios theirs / ours (> 1: ours is faster).

    python benchmarks/text_encoder.py [--repeats 7] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LOAD = {
    "ours": "from unnoise.conditioning.text import TextEncoder; m = TextEncoder.load({device!r})",
    "sentence-transformers": (
        "from sentence_transformers import SentenceTransformer; from unnoise.conditioning.text import original_model_dir; "
        "m = SentenceTransformer(str(original_model_dir()), device={device!r})"
    ),
}
PROMPTS = [f"{a} {b}" for a in ("a handwritten", "an emoji of a", "the digit", "a photo of a") for b in (
    "seven", "cat face", "red apple", "waving hand medium skin tone", "flag for Japan", "grinning face",
    "couple with heart woman man", "9", "rocket", "steaming bowl", "snowman without snow", "sparkles",
    "party popper", "crying cat", "hot beverage", "bicycle")]  # 64 caption-like prompts


def load_seconds(which: str, device: str, threads: int) -> float:
    code = (f"import torch, time; torch.set_num_threads({threads}); t = time.perf_counter(); "
            + LOAD[which].format(device=device) + "; print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from unnoise.conditioning.text import TextEncoder, original_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, device {args.device}")

    loads: dict[str, list[float]] = {k: [] for k in LOAD}
    for _ in range(args.repeats):  # alternate, so background load hits both alike
        for which in LOAD:
            loads[which].append(load_seconds(which, args.device, threads))

    ours = TextEncoder.load(args.device)
    theirs = SentenceTransformer(str(original_model_dir()), device=args.device)
    theirs.max_seq_length = ours.max_length
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run_ours(prompts):
        ours.encode(prompts)
        sync()

    def run_theirs(prompts):
        theirs.encode(prompts, batch_size=len(prompts), convert_to_tensor=True)
        sync()

    rows = [("load (import + weights, fresh process)", statistics.median(loads["ours"]),
             statistics.median(loads["sentence-transformers"]))]
    for label, prompts in (("encode 1 prompt", PROMPTS[:1]), ("encode 64 prompts", PROMPTS)):
        t_ours = median_seconds(lambda: run_ours(prompts), args.repeats * 3)
        t_theirs = median_seconds(lambda: run_theirs(prompts), args.repeats * 3)
        rows.append((label, t_ours, t_theirs))

    gap = (ours.encode(PROMPTS)["pooled"].cpu() - theirs.encode(PROMPTS, convert_to_tensor=True).cpu()).abs().max()
    print(f"{'':42s} {'ours':>10s} {'s-t':>10s} {'ratio s-t/ours':>15s}")
    for label, a, b in rows:
        print(f"{label:42s} {a * 1e3:8.1f}ms {b * 1e3:8.1f}ms {b / a:15.2f}")
    print(f"max |pooled difference| = {gap:.2e}")


if __name__ == "__main__":
    main()
