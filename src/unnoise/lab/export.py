"""The lab as a static site (`unnoise lab --export DIR [--model NAME|DIR …]`): the page paints in the browser.

    DIR/index.html, DIR/static/…        the lab page and its scripts (runtime.js, engine/, vendor/ort/: ONNX
                                        Runtime Web, built by scripts/build_web_runtime.sh)
    DIR/site.json                       what the page reads first: models, defaults, limits, samplers
    DIR/text_encoder.onnx.gz.*, vocab.txt the MiniLM text encoder (one for all models) and its WordPiece vocabulary
    DIR/models/NAME/unet.onnx.gz        each model's UNet (fp16-stored weights; unnoise.onnx_export)
    DIR/models/NAME/model.json          its card for the page: shape, prediction type, ᾱ_t, defaults, examples
    DIR/vocabularies/HASH.json, .bin.gz prompt snapping: captions + known prompts, and the fp16 unit vectors (V, D);
                                        models trained on the same captions share one pair

The big binaries are gzipped files (not a Content-Encoding: any host serves them as they are; runtime.js inflates
them with the browser's DecompressionStream), which keeps the default site (five models) under 60 MB; one over
16 MiB (the text encoder) is cut in parts.  site.json and model.json list each binary as its list of parts.

Written to a hidden sibling folder and renamed into place, so a reader never sees half a site; a DIR that exists
must be empty or a previous export (its site.json says so), which is then replaced.  Any static host serves the
result (`python -m http.server -d DIR`); the page needs no Python process.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import __version__, limits, schedules
from ..atomic import fsync_dir, tmp_name
from ..errors import UnnoiseError
from ..sampling import SAMPLERS

SITE_FILE = "site.json"
GENERATOR = "unnoise lab --export"
FORMAT = 1
STATIC = Path(__file__).parent / "static"
TEXT_PRECISION = "fp16-int8rows"  # 33.6 MB instead of fp16's 45.2: keeps the default site under 60 MB (docs/onnx.md)
MAX_PROMPT_CHARS = 300  # as the served lab's LabConfig.max_prompt_chars
MAX_FILE_BYTES = 16 * 2**20  # larger files are written in parts: static hosts cap single files (25 MiB and up)


class ExportError(UnnoiseError, ValueError):
    """A static-site export that cannot be written (a foreign folder in the way, a missing package)."""


def check_target(out: Path) -> None:
    """`out` may be absent, an empty folder, or an earlier export; anything else is refused (one line)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; pick a new folder for the static lab")
    if not any(out.iterdir()):
        return
    try:
        site = json.loads((out / SITE_FILE).read_text())
    except (OSError, ValueError):
        site = None
    if not isinstance(site, dict) or site.get("generator") != GENERATOR:
        raise ExportError(f"{out} is a non-empty folder that is not an earlier `{GENERATOR}`; pick a new or empty one")


def _need_packages() -> None:
    """onnx (a dependency of unnoise) rewrites the graphs' weights to fp16 / int8; a broken install says so."""
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ExportError(f"`{GENERATOR}` needs the onnx package ({e}): pip install onnx") from None


def export_site(out_dir: str | os.PathLike, models: list[str] | None = None, *,
                text_precision: str = TEXT_PRECISION) -> Path:
    """Write the static lab for `models` (bundled names or model directories; default: every bundled model)."""
    from ..modeldir import BUNDLED, resolve

    out = Path(out_dir)
    check_target(out)
    if not out.parent.is_dir():
        raise ExportError(f"the folder {out.parent} does not exist")
    _need_packages()
    names = _model_names(models or list(BUNDLED), resolve)
    tmp = tmp_name(out)
    try:
        _write_site(tmp, names, text_precision)
        _swap(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _model_names(models: list[str], resolve) -> dict[str, Path]:
    """{name shown in the page: model directory}: a bundled model by its name, a directory by its folder name."""
    from ..modeldir import BUNDLED

    named: dict[str, Path] = {}
    for m in models:
        path = resolve(m)  # ModelDirError (one line) for neither a name nor a model directory
        name = m if m in BUNDLED else path.resolve().name
        if name in named:
            raise ExportError(f"two models would be called {name!r} in the page; rename one folder")
        named[name] = path
    return named


def _write_site(tmp: Path, models: dict[str, Path], text_precision: str) -> None:
    from ..conditioning.text import TextEncoder
    from ..onnx_export import export_text_encoder
    from .site import write_lab_site

    shutil.copytree(STATIC, tmp / "static", ignore=shutil.ignore_patterns("__pycache__", "*.map", ".*", "index.html"))
    (tmp / "index.html").write_text(static_page((STATIC / "index.html").read_text(encoding="utf-8")), encoding="utf-8")
    lab = write_lab_site(tmp, models)  # webparts: pictures/cat.png and site.json's "lab" (the page's /api answers)
    encoder = TextEncoder.load()
    text_files = _gzip(export_text_encoder(encoder, tmp / "text_encoder.onnx", text_precision))
    shutil.copyfile(_vocab_txt(), tmp / "vocab.txt")
    cards = {name: _write_model(tmp, name, path) for name, path in models.items()}
    site = {
        "generator": GENERATOR, "format": FORMAT, "unnoise_version": __version__,
        "text_encoder": {"file": text_files, "vocab": "vocab.txt", "precision": text_precision,
                         "max_length": encoder.max_length, "id": encoder.id, "dim": 384},
        "default_model": next(iter(cards)),
        "models": cards,
        "samplers": list(SAMPLERS),  # the engine (static/engine/samplers.js) has every one; runtime.js checks
        "spacings": list(schedules.SPACINGS),
        "schedules": schedules.available(),
        "limits": {"max_steps": limits.MAX_STEPS, "max_images": limits.MAX_IMAGES,
                   "max_guidance": limits.LAB_MAX_GUIDANCE, "max_prompt_chars": MAX_PROMPT_CHARS,
                   "default_strength": limits.DEFAULT_STRENGTH, "max_seed": 2**32 - 1},
        "lab": lab,  # what the page's static mode answers /api with (unnoise.lab.site)
        "ort": (STATIC / "vendor" / "ort" / "VERSIONS").read_text().splitlines()[0],
    }
    _write_json(tmp / SITE_FILE, site)


def static_page(html: str) -> str:
    """The lab page as the static site serves it: its own files by relative paths (the site may live in a
    sub-folder of a host), and a `<meta name="unnoise-site">` that tells the page's scripts to paint in the
    browser (static/runtime.js defines window.unnoise) instead of asking a server."""
    html = html.replace('"/static/', '"static/')
    head = ('<meta name="unnoise-site" content="site.json">\n'
            '<script type="module" src="static/runtime.js"></script>\n')
    if "static/runtime.js" in html:
        head = head.split("\n")[0] + "\n"
    return html.replace("</head>", head + "</head>", 1)


def _vocab_txt() -> Path:
    from ..conditioning.text import model_dir

    return model_dir() / "vocab.txt"


def _write_model(tmp: Path, name: str, path: Path) -> dict[str, Any]:
    """models/NAME/unet.onnx + model.json; returns what site.json lists for the model."""
    from ..conditioning.vocabulary import Vocabulary
    from ..modeldir import guidance_range, load_model_dir, model_schedule, paint_defaults
    from ..onnx_export import export_unet

    unet, info, _ = load_model_dir(path, "cpu")
    if info.scheduler:
        raise ExportError(f"{path} is a diffusers pipeline folder; the static lab paints unnoise model directories")
    folder = tmp / "models" / name
    unet_files = _gzip(export_unet(unet.float(), folder / "unet.onnx"))
    c: Any = unet.config
    vocabulary = Vocabulary.load(path)
    defaults = paint_defaults(info)
    card = {
        "name": name,
        "unet": [f"models/{name}/{f}" for f in unet_files],
        "inputs": ["x", "t", "tokens", "mask", "pooled"] + (["guidance"] if c.guidance_embedding else []),
        "takes_guidance": bool(c.guidance_embedding),
        "shape": [info.channels, info.image_size, info.image_size],
        "prediction_type": info.prediction_type,
        "schedule": info.schedule, "num_train_steps": info.num_train_steps,
        "alphas_cumprod": model_schedule(info).alphas_cumprod.tolist(),  # float64 as JSON numbers: exact
        "clip_sample": info.clip_sample,
        "defaults": defaults,
        "guidance_range": guidance_range(info),
        "example_prompts": info.example_prompts,
        "vocabulary": _write_vocabulary(tmp, vocabulary) if vocabulary is not None else None,
        "dataset": info.dataset,
    }
    _write_json(folder / "model.json", card)
    return {"card": f"models/{name}/model.json", "defaults": defaults, "shape": card["shape"],
            "takes_guidance": card["takes_guidance"], "guidance_range": card["guidance_range"],
            "example_prompts": info.example_prompts}


def _write_vocabulary(tmp: Path, vocabulary) -> str:
    """vocabularies/HASH.bin.gz (fp16 unit vectors, row-major (V, D), little-endian: the Python snap's own numbers)
    and HASH.json (captions, known prompts, threshold, suffixes); the same vocabulary is written once."""
    import numpy as np

    vectors = vocabulary.vectors.half().numpy().astype("<f2")  # stored fp16 in the model dir: exact
    index = {"captions": vocabulary.captions, "known": sorted(vocabulary.known), "threshold": vocabulary.threshold,
             "suffixes": vocabulary.suffixes, "count": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
             "dtype": "float16"}
    digest = hashlib.sha256(np.ascontiguousarray(vectors).tobytes() + json.dumps(index).encode()).hexdigest()[:16]
    folder = tmp / "vocabularies"
    folder.mkdir(exist_ok=True)
    if not (folder / f"{digest}.json").exists():
        (folder / f"{digest}.bin").write_bytes(np.ascontiguousarray(vectors).tobytes())
        parts = _gzip(folder / f"{digest}.bin")
        _write_json(folder / f"{digest}.json", {**index, "vectors": [f"vocabularies/{f}" for f in parts]})
    return f"vocabularies/{digest}.json"


def _gzip(path: Path) -> list[str]:
    """path → path.gz (level 9, no name or time stored: the same bytes every export), the original removed; a
    .gz over MAX_FILE_BYTES is cut into path.gz.0, .1, … (hosts cap single files: Cloudflare Pages at 25 MiB).
    Returns the file names, in order: the page fetches them all and inflates their concatenation."""
    packed = gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)
    path.unlink()
    if len(packed) <= MAX_FILE_BYTES:
        path.with_name(path.name + ".gz").write_bytes(packed)
        return [path.name + ".gz"]
    names = []
    for k, start in enumerate(range(0, len(packed), MAX_FILE_BYTES)):
        names.append(f"{path.name}.gz.{k}")
        path.with_name(names[-1]).write_bytes(packed[start:start + MAX_FILE_BYTES])
    return names


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def _swap(tmp: Path, out: Path) -> None:
    """Rename the finished site into place; an earlier export moves aside first and is removed after."""
    old = tmp_name(out, "old")
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    if old.exists():
        shutil.rmtree(old)


def site_bytes(out_dir: str | os.PathLike) -> int:
    """The whole site's size in bytes (what a static host stores and a first visit may fetch at most)."""
    return sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
