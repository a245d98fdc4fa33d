"""Memory and time of training on a large image folder: all in RAM (the old way) vs the on-disk cache.

    python benchmarks/folder_memory.py [--images 50000] [--size 64] [--repeats 1] [--workdir DIR]

Generates (once, kept in --workdir, default $TMPDIR/unnoise-bench-folder) a folder of N captioned
PNGs of size×size, then runs each case in a fresh process, which builds the dataset and reads one
epoch of training batches (64 images a step, the training loop's own `Batches.draw`):

    in RAM     every image decoded into one array before the first step (unnoise ≤ 0.x: FolderDataset)
    cache 1st  FolderDataset, first use: decodes image by image into the .npy cache, then reads rows
    cache 2nd  FolderDataset again: the cache is found by its fingerprint, nothing is decoded

and prints, per case, the start time (dataset ready), the time to the end of the first epoch and the
peak RSS of the process (ru_maxrss), with the RSS of a process that only imports torch and unnoise.
It ends with `ratio:` lines (in RAM ÷ cache).  Others may share the CPU: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
import numpy as np, torch
from unnoise.data.base import CaptionedImages
from unnoise.data.folder import FolderDataset, load_image, read_metadata, DEFAULT_MAX_PIXELS
from unnoise.training.harness import Batches, step_generator
case, folder, size, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t_import = time.perf_counter()
if case == "import":
    ds = None
elif case == "ram":  # what FolderDataset did before the cache: decode everything, stack, permute
    rows = read_metadata(Path(folder))
    images = np.stack([load_image(Path(folder) / n, size, 3, DEFAULT_MAX_PIXELS) for _, n, _ in rows])
    ds = CaptionedImages("ram", torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), sets=[t for _, _, t in rows])
    del images
else:
    ds = FolderDataset(folder, image_size=size, cache_dir=cache)
t_ready = time.perf_counter()
if ds is not None:
    batches, b = Batches(ds, seed=0), 64
    for step in range(len(ds) // b):
        x0, captions = batches.draw(step, b, 0.1, len(ds.captions), step_generator(0, step))
t_epoch = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "start_s": t_ready - t_import, "epoch_s": t_epoch - t_import,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CAPTIONS = ["a red", "a green", "a blue", "a yellow", "a purple", "an orange", "a gray", "a teal"]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (150, 30, 150), (230, 120, 20),
           (128, 128, 128), (20, 150, 150)]


def make_folder(folder: Path, n: int, size: int) -> None:
    """N PNGs of a coloured rectangle on a gradient with a little noise (~5 kB each), once."""
    import numpy as np
    from PIL import Image

    if (folder / ".complete").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 80, size)[None, :, None]
    t = time.perf_counter()
    with open(folder / "metadata.jsonl", "w") as meta:
        for i in range(n):
            k = i % len(CAPTIONS)
            arr = np.broadcast_to(ramp, (size, size, 3)) + rng.normal(0, 6, (size, size, 3))
            x, y, w, h = rng.integers(0, size // 2, 4)
            arr[y : y + h + 8, x : x + w + 8] += COLOURS[k]
            name = f"{i // 1000:03d}/{i:06d}.png"
            (folder / name).parent.mkdir(exist_ok=True)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / name)
            meta.write(json.dumps({"file_name": name, "text": f"{CAPTIONS[k]} rectangle"}) + "\n")
    (folder / ".complete").write_text(f"{n} images in {time.perf_counter() - t:.0f} s\n")


def run(case: str, folder: Path, size: int, cache: Path) -> dict:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, case, str(folder), str(size), str(cache)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        raise SystemExit(f"{case} failed:\n{r.stderr[-2000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each case (medians)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unnoise-bench-folder")
    args = ap.parse_args()
    folder = args.workdir / f"folder-{args.images}-{args.size}"
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    make_folder(folder, args.images, args.size)
    print(f"folder: {folder} ({(folder / '.complete').read_text().strip()})", flush=True)
    cache = args.workdir / "cache"
    results: dict[str, list[dict]] = {"import": [], "ram": [], "build": [], "cached": []}
    for _ in range(args.repeats):
        shutil.rmtree(cache, ignore_errors=True)
        results["import"].append(run("import", folder, args.size, cache))
        results["ram"].append(run("ram", folder, args.size, cache))
        results["build"].append(run("cache", folder, args.size, cache))
        results["cached"].append(run("cache", folder, args.size, cache))
    med = {case: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for case, rows in results.items()}
    names = {"import": "import only", "ram": "in RAM (old)", "build": "cache, 1st start", "cached": "cache, 2nd start"}
    print(f"{args.images} images {args.size}×{args.size}, medians of {args.repeats}; times after imports")
    print(f"{'case':<18} {'start s':>8} {'1st epoch s':>12} {'peak RSS MiB':>13}")
    for case, m in med.items():
        print(f"{names[case]:<18} {m['start_s']:>8.1f} {m['epoch_s']:>12.1f} {m['rss_mib']:>13.0f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    ram, build, cached = med["ram"], med["build"], med["cached"]
    print(f"ratio: {ram['rss_mib'] / build['rss_mib']:.2f}  peak RSS, in RAM ÷ cache 1st start")
    print(f"ratio: {ram['rss_mib'] / cached['rss_mib']:.2f}  peak RSS, in RAM ÷ cache 2nd start")
    print(f"ratio: {ram['epoch_s'] / build['epoch_s']:.2f}  to the end of the 1st epoch, in RAM ÷ cache 1st start")
    print(f"ratio: {ram['epoch_s'] / cached['epoch_s']:.2f}  to the end of the 1st epoch, in RAM ÷ cache 2nd start")


if __name__ == "__main__":
    main()
