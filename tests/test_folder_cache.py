"""An image folder is decoded once into an on-disk uint8 cache and read row by row (issue 29, item 7)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unnoise.data import DataError
from unnoise.data.folder import FolderDataset, cache_dir, load_image
from unnoise.training.loop import Batches

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _folder(root: Path, n: int = 6, size: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with open(root / "metadata.jsonl", "w") as meta:
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size + 3 * i, 3), dtype=np.uint8)).save(root / f"{i}.png")
            meta.write(json.dumps({"file_name": f"{i}.png", "text": [f"picture {i}", "a picture"]}) + "\n")
    return root


def _rewrite_keeping_stat(path: Path, data: bytes) -> None:
    """Change a file's bytes but not its size or mtime (what the fingerprint sees)."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_holds_the_decoded_pixels_and_is_read_back(tmp_path):
    folder, cache = _folder(tmp_path / "pics"), tmp_path / "cache"
    ds = FolderDataset(folder, image_size=16, cache_dir=cache)
    files = list(cache.iterdir())
    assert [f.suffix for f in files] == [".npy"]  # one cache file, no temporary left behind
    stored = np.load(files[0])  # a plain .npy: uint8 (N, C, S, S)
    assert stored.dtype == np.uint8 and stored.shape == (6, 3, 16, 16)
    for i in range(6):
        direct = load_image(folder / f"{i}.png", 16, 3, 10**8).transpose(2, 0, 1)
        assert np.array_equal(stored[i], direct)
    items = torch.tensor([5, 0, 3, 3])
    assert torch.equal(ds.get_images(items), torch.from_numpy(stored[[5, 0, 3, 3]]))
    assert torch.equal(ds.images[items], ds.get_images(items))  # `images` is the same array, memory-mapped
    assert torch.equal(ds[-1][0], ds.get_batch(torch.tensor([5]))[0][0])
    with pytest.raises(IndexError):
        ds.get_images(torch.tensor([6]))

    # a second start reads the cache instead of decoding: garbage of the same size and mtime goes unseen …
    path = folder / "2.png"
    _rewrite_keeping_stat(path, b"\0" * path.stat().st_size)
    again = FolderDataset(folder, image_size=16, cache_dir=cache)
    assert torch.equal(again.get_images(torch.arange(6)), torch.from_numpy(stored))
    # … and a changed mtime (the file was edited) decodes the folder again, naming the broken file
    os.utime(path)
    with pytest.raises(DataError, match=r"2\.png"):
        FolderDataset(folder, image_size=16, cache_dir=cache)
    assert [f.name for f in cache.iterdir()] == [files[0].name]  # the failed build left no temporary


def test_other_settings_and_changes_get_their_own_cache_and_stale_ones_go(tmp_path):
    folder, cache = _folder(tmp_path / "pics"), tmp_path / "cache"
    FolderDataset(folder, image_size=16, cache_dir=cache)
    gray = FolderDataset(folder, image_size=8, channels=1, cache_dir=cache)
    assert gray.images.shape == (6, 1, 8, 8)
    with open(folder / "metadata.jsonl", "a") as meta:  # one more image: a new fingerprint
        Image.new("RGB", (9, 9), (1, 2, 3)).save(folder / "new.png")
        meta.write(json.dumps({"file_name": "new.png", "text": "new"}) + "\n")
    ds = FolderDataset(folder, image_size=16, cache_dir=cache)
    assert len(ds) == 7 and ds.get_images(torch.tensor([6]))[0, :, 0, 0].tolist() == [1, 2, 3]
    assert len(list(cache.iterdir())) == 1  # earlier versions of this folder were removed


def test_broken_cache_is_rebuilt(tmp_path):
    folder, cache = _folder(tmp_path / "pics"), tmp_path / "cache"
    first = FolderDataset(folder, image_size=16, cache_dir=cache).get_images(torch.arange(6))
    (path,) = cache.iterdir()
    path.write_bytes(path.read_bytes()[:-100])  # e.g. a full disk
    assert torch.equal(FolderDataset(folder, image_size=16, cache_dir=cache).get_images(torch.arange(6)), first)
    assert path.stat().st_size > 6 * 3 * 16 * 16


def test_unwritable_cache_dir_is_one_line(tmp_path):
    folder = _folder(tmp_path / "pics")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot write the image cache .*a-file.*UNNOISE_CACHE_DIR") as e:
        FolderDataset(folder, image_size=16, cache_dir=blocker / "sub")
    assert "\n" not in str(e.value)


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("UNNOISE_FOLDER_CACHE_DIR", raising=False)
    monkeypatch.setenv("UNNOISE_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "folders"
    monkeypatch.setenv("UNNOISE_FOLDER_CACHE_DIR", str(tmp_path / "f"))
    assert cache_dir() == tmp_path / "f"
    FolderDataset(_folder(tmp_path / "pics"), image_size=8)
    assert len(list((tmp_path / "f").glob("*.npy"))) == 1


def test_a_process_draws_the_global_batch_but_reads_only_its_rows(tmp_path):
    ds = FolderDataset(_folder(tmp_path / "pics", n=8), image_size=8, cache_dir=tmp_path / "cache")
    batches = Batches(ds, seed=4)
    full, caps = batches.draw(3, 6, 0.2, 99, torch.Generator().manual_seed(7))
    for part in (slice(0, 3), slice(3, 6)):
        x0, caps_part = batches.draw(3, 6, 0.2, 99, torch.Generator().manual_seed(7), part)
        assert x0.shape == (3, 3, 8, 8) and torch.equal(x0, full[part])
        assert torch.equal(caps_part, caps)  # captions (and dropout) stay those of the global batch


@pytest.mark.slow
def test_memory_does_not_grow_with_the_folder(tmp_path):
    """Peak RSS of decoding and reading 2 000 images is that of 100 (+0.1 MiB; all in RAM, as before: +115 MiB)."""
    script = ("import resource, sys, torch; from unnoise.data.folder import FolderDataset; "
              "ds = FolderDataset(sys.argv[1], image_size=64, cache_dir=sys.argv[2]); "
              "[ds.get_images(torch.arange(i, min(i + 64, len(ds)))) for i in range(0, len(ds), 64)]; "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    rss = {}
    for n in (100, 2000):
        folder = tmp_path / f"f{n}"
        folder.mkdir()
        rng = np.random.default_rng(n)
        with open(folder / "metadata.jsonl", "w") as meta:
            for i in range(n):  # 12 kB decoded each: 24 MB for 2 000, held ~3× while stacking all in RAM
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.bmp")
                meta.write(json.dumps({"file_name": f"{i}.bmp", "text": "noise"}) + "\n")
        out = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "cache")],
                             capture_output=True, text=True, timeout=300, check=False,
                             env={**os.environ, "PYTHONPATH": SRC})
        assert out.returncode == 0, out.stderr
        rss[n] = int(out.stdout.split()[-1]) / 1024  # MiB
    assert rss[2000] - rss[100] < 15, rss
