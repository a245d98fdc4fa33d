"""ONNX exports on the CPU: onnxruntime vs PyTorch for one UNet call, and the text encoder's precision.

1. One guided UNet call of a bundled model (default emoji: batch 2 = the CFG pair, 8 tokens) and one call of
   its student (emoji-fast: batch 1 with w), onnxruntime vs PyTorch, both on one thread, calls interleaved;
   medians.  `ratio:` PyTorch / onnxruntime (> 1: onnxruntime is faster).
2. The text encoder exported at fp32 / fp16 / int8 (unnoise.onnx_export): file size, how far its token states
   and pooled vectors move from PyTorch's float32 `TextEncoder.encode` on PROMPTS (max |Δ| over real tokens),
   the median time of one prompt, and how far the pictures move: the emoji model painting the same prompts and
   seeds from each encoder's states (mean and max |Δ| in grey levels against the PyTorch-conditioned paintings).

    python benchmarks/onnx_cpu.py [--repeats 200] [--paint 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = [  # 50: caption-like, paraphrases, unicode, an empty one and one over 77 tokens
    "1st place medal", "burrito", "four o’clock", "man fairy", "nut and bolt", "cat face", "red heart", "rocket",
    "grinning face", "pizza", "fox", "a kitten's face", "a slice of pizza", "smiling face with sunglasses",
    "waving hand: medium skin tone", "flag: Japan", "couple with heart: woman, man", "party popper",
    "steaming bowl", "snowman without snow", "sparkles", "crying cat", "hot beverage", "bicycle",
    "a handwritten zero", "a handwritten seven", "the digit 9", "a handwritten three, slanted", "seven",
    "red heart, noto style", "cat face, twemoji style", "rocket, openmoji style", "pizza, fluent style",
    "a very happy dog with a ball", "moon viewing ceremony", "😀", "🐱 cat", "café crème", "naïve façade",
    "日本の旗", "Ünïcödé ñame", "", "a", "x", "the quick brown fox jumps over the lazy dog",
    "an emoji of a tired face at night", "two hearts", "face with tears of joy", "thumbs up: dark skin tone",
    "word " * 100,
]


def median_ms(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median wall time of each fn, calls interleaved so load on the shared machine hits both alike."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def unet_call(model: str, batch: int, tmp: Path, repeats: int) -> None:
    from unnoise.modeldir import load_model_dir
    from unnoise.onnx_export import UNetGraph, export_unet, unet_inputs

    unet, _, _ = load_model_dir(model, "cpu")
    inputs = unet_inputs(unet, batch=batch, length=8)
    sess = session(export_unet(unet, tmp / f"{model}.onnx"))
    feed = {k: v.numpy() for k, v in inputs.items()}
    graph, args = UNetGraph(unet).eval(), tuple(inputs.values())

    def torch_call():
        with torch.inference_mode():
            graph(*args)

    diff = np.abs(sess.run(None, feed)[0] - graph(*args).detach().numpy()).max()
    ms = median_ms({"torch": torch_call, "ort": lambda: sess.run(None, feed)}, repeats)
    print(f"unet {model} batch {batch}, 8 tokens: onnxruntime {ms['ort']:.2f} ms, PyTorch {ms['torch']:.2f} ms "
          f"(1 thread each, median of {repeats}); max |Δ| {diff:.1e}")
    print(f"ratio: {ms['torch'] / ms['ort']:.2f} (PyTorch / onnxruntime, {model} UNet call, batch {batch})")


class OrtEncoder:
    """`TextEncoder.encode` computed by an exported text encoder (tokenizer from the PyTorch one)."""

    def __init__(self, encoder, sess):
        self.encoder, self.sess = encoder, sess

    def encode(self, prompts):
        ids, mask = self.encoder.tokenize(prompts)
        tokens, pooled = self.sess.run(None, {"input_ids": ids.numpy(), "mask": mask.numpy()})
        return {"tokens": torch.from_numpy(tokens), "mask": mask, "pooled": torch.from_numpy(pooled)}


def text_precisions(tmp: Path, repeats: int, paint: int) -> None:
    from unnoise.conditioning.text import TextEncoder
    from unnoise.onnx_export import PRECISIONS, export_text_encoder
    from unnoise.pipeline import Painter

    encoder = TextEncoder.load()
    ref = encoder.encode(PROMPTS)
    real = ref["mask"]
    painter = Painter.from_pretrained("emoji")
    prompts = PROMPTS[:paint]
    base = [np.asarray(painter(p, seed=i)[0], dtype=np.int16) for i, p in enumerate(prompts)]
    fp32_size = None
    for precision in PRECISIONS:
        path = export_text_encoder(encoder, tmp / f"text-{precision}.onnx", precision)
        size = path.stat().st_size
        fp32_size = fp32_size or size
        ort_encoder = OrtEncoder(encoder, session(path))
        out = ort_encoder.encode(PROMPTS)
        d_tok = (out["tokens"] - ref["tokens"])[real].abs().max().item()
        d_pool = (out["pooled"] - ref["pooled"]).abs().max().item()
        cos = torch.nn.functional.cosine_similarity(out["pooled"], ref["pooled"]).min().item()
        ms = median_ms({"one": lambda enc=ort_encoder: enc.encode(["a kitten's face"])}, repeats // 4)["one"]
        painter._encoder = ort_encoder  # the Painter encodes prompts through this
        pics = [np.asarray(painter(p, seed=i)[0], dtype=np.int16) for i, p in enumerate(prompts)]
        painter._encoder = encoder
        delta = np.abs(np.stack(pics) - np.stack(base))
        print(f"text encoder {precision}: {size / 1e6:.1f} MB, token states max |Δ| {d_tok:.2e}, pooled max |Δ| "
              f"{d_pool:.2e} (min cosine {cos:.6f}) on {len(PROMPTS)} prompts; one prompt {ms:.2f} ms (1 thread); "
              f"emoji pictures ({len(prompts)} prompts, 20 steps) mean |Δ| {delta.mean():.2f}, "
              f"max {delta.max()} grey levels")
        print(f"ratio: {size / fp32_size:.3f} (text encoder file size, {precision} / fp32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--paint", type=int, default=8, help="prompts painted per text encoder precision")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        unet_call("emoji", 2, Path(tmp), args.repeats)
        unet_call("emoji-fast", 1, Path(tmp), args.repeats)
        text_precisions(Path(tmp), args.repeats, args.paint)


if __name__ == "__main__":
    main()
