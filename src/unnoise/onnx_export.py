"""ONNX export of a model directory's UNet and of the MiniLM text encoder, for runtimes without PyTorch
(onnxruntime, ONNX Runtime Web in the browser lab).

    python -m unnoise.onnx_export MODEL OUTDIR [--text-precision fp32|fp16|fp16-int8emb|fp16-int8rows|int8w|int8]

writes OUTDIR/unet.onnx, OUTDIR/text_encoder.onnx and OUTDIR/onnx.json (what each graph takes and gives).
The graphs are the networks themselves, not the sampler: the caller does what `DiscreteDenoiser` does
(σ → fractional t and x_t = x/sqrt(1 + σ²) in, the prediction → x̂0 out) and classifier-free guidance.

UNet inputs (B = batch, L = text tokens, both dynamic; C, H, W fixed to the model's):
    x        (B, C, H, W) float32  the DDPM-scaled x_t
    t        (B,) float32          the timestep, fractional allowed (schedule.sigma_to_t(σ))
    tokens   (B, L, 384) float32   text token states, zero at padding (TextEncoder.encode()["tokens"])
    mask     (B, L) bool           True at real tokens
    pooled   (B, 384) float32      the sentence embedding
    guidance (B,) float32          only for guidance-distilled students (config.guidance_embedding): w
    → out    (B, C, H, W) float32  ε, v or x0, as unnoise.json's prediction_type says
Text encoder: input_ids (B, L) int64 and mask (B, L) bool (the WordPiece tokenizer's, [CLS] … [SEP]) →
tokens (B, L, 384) and pooled (B, 384), exactly `TextEncoder.encode`'s.

The exporter is torch's TorchScript-based one (`dynamo=False`): present in torch 2.13 (deprecated there), no
onnxscript needed, and a few seconds per graph.  Precision of the text encoder (docs/onnx.md): fp32; fp16
stores the weights as float16 and casts them up once at load (compute stays float32); fp16-int8emb is fp16 with
the word-embedding table (half the weights) in int8 (onnxruntime's quantizer, one scale for the table);
fp16-int8rows the same with a scale per row and only the looked-up rows widened (onnx alone: what the static lab
ships); int8w adds per-column int8 MatMul weights (weight-only, float32 arithmetic); int8 is
onnxruntime's dynamic quantization (`quantize_dynamic`, per-channel int8 weights of MatMul and Gather, activations
quantized per call).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .errors import UnnoiseError

OPSET = 18
UNET_FILE, TEXT_FILE, MANIFEST = "unet.onnx", "text_encoder.onnx", "onnx.json"
UNET_INPUTS = ("x", "t", "tokens", "mask", "pooled")  # + "guidance" for guidance-distilled students
TEXT_INPUTS = ("input_ids", "mask")
PRECISIONS = ("fp32", "fp16", "fp16-int8emb", "fp16-int8rows", "int8w", "int8")
FP16_MIN_SIZE = 1024  # fp16 storage for weights of at least this many numbers; small ones (biases, norms) stay fp32


class OnnxExportError(UnnoiseError, ValueError):
    """An ONNX export was asked for something it cannot do (unknown precision, missing package)."""


class UNetGraph(nn.Module):
    """The UNet with its condition dict unrolled into positional inputs (ONNX graphs take no dicts)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, tokens, mask, pooled, guidance=None):
        cond = {"tokens": tokens, "mask": mask, "pooled": pooled}
        return self.unet(x, t, cond if guidance is None else {**cond, "guidance": guidance})


class TextGraph(nn.Module):
    """MiniLM plus `TextEncoder.encode`'s masking and SBERT pooling: (ids, mask) → (tokens, pooled)."""

    def __init__(self, minilm: nn.Module):
        super().__init__()
        self.minilm = minilm

    def forward(self, input_ids, mask):
        tokens = self.minilm(input_ids, mask).float() * mask[..., None]  # (B, L, d), zero at padding
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True)  # (B, d) mean over real tokens
        return tokens, nn.functional.normalize(pooled, p=2, dim=1)


class OnnxUNet:
    """An exported UNet run by onnxruntime, callable as the PyTorch one is (model(x_t, t, cond) → tensor), so
    `generate` and the Painter sample with it unchanged: `painter.model = OnnxUNet(session, painter.model.config)`."""

    def __init__(self, session, config):
        self.session, self.config = session, config  # config: the UNetConfig (generate reads guidance_embedding)
        self.names = [i.name for i in session.get_inputs()]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        given = {"x": x, "t": t, **cond}
        feed = {k: given[k].detach().cpu().to(torch.bool if k == "mask" else torch.float32).contiguous().numpy()
                for k in self.names}
        return torch.from_numpy(self.session.run(None, feed)[0]).to(x.device, x.dtype)


def unet_inputs(unet: nn.Module, batch: int = 2, length: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example inputs of the UNet graph's names and shapes (random, reproducible; row 0 padded after 3 tokens)."""
    g = torch.Generator().manual_seed(seed)
    c: Any = unet.config  # the UNet's UNetConfig
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, min(3, length):] = False
    inputs = {
        "x": torch.randn(batch, c.in_channels, c.image_size, c.image_size, generator=g),
        "t": torch.rand(batch, generator=g) * 999,
        "tokens": torch.randn(batch, length, c.cond_dim, generator=g) * mask[..., None],
        "mask": mask,
        "pooled": nn.functional.normalize(torch.randn(batch, c.cond_dim, generator=g), dim=1),
    }
    if c.guidance_embedding:
        inputs["guidance"] = 1 + 5 * torch.rand(batch, generator=g)
    return inputs


def _export(module: nn.Module, inputs: dict[str, torch.Tensor], outputs: list[str], dynamic: dict, path: Path) -> Path:
    """torch.onnx.export, written atomically (readers never see half a file)."""
    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # The UNet's input checks read shapes as Python values (TracerWarning), and the exporter itself is
            # deprecated in favour of the dynamo one (DeprecationWarning): both are expected here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module.eval(), tuple(inputs.values()), tmp, dynamo=False, opset_version=OPSET,
                              input_names=list(inputs), output_names=outputs, dynamic_axes=dynamic)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path


def export_unet(unet: nn.Module, path: str | os.PathLike) -> Path:
    """Write the UNet graph (inputs as the module docstring lists them) to `path`; weights that float16 holds
    exactly (all of them for fp16-shipped models) are stored as float16, so the file is half as big and the
    graph computes exactly what an all-float32 one does."""
    inputs = unet_inputs(unet)
    dynamic = {name: {0: "batch"} for name in (*inputs, "out")}
    dynamic["tokens"] = dynamic["mask"] = {0: "batch", 1: "length"}
    with torch.no_grad():
        _export(UNetGraph(unet), inputs, ["out"], dynamic, Path(path))
    return weights_to_fp16(path, path, lossless_only=True)


def export_text_encoder(encoder, path: str | os.PathLike, precision: str = "fp32") -> Path:
    """Write `TextEncoder.load()`'s network (whatever weights it loads) to `path` at `precision`."""
    if precision not in PRECISIONS:
        raise OnnxExportError(f"text encoder precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path = Path(path)
    ids, mask = encoder.tokenize(["a cat face", "a red heart, noto style"])
    dynamic = {name: {0: "batch", 1: "length"} for name in ("input_ids", "mask", "tokens")}
    dynamic["pooled"] = {0: "batch"}
    minilm = encoder.model if encoder.dtype == torch.float32 else copy.deepcopy(encoder.model).float()  # the
    # graph computes in float32 whatever the encoder was loaded as, and the caller's encoder stays as it was
    graph = TextGraph(minilm)
    with torch.no_grad():
        _export(graph, {"input_ids": ids.cpu(), "mask": mask.cpu()}, ["tokens", "pooled"], dynamic, path)
    if precision == "fp16":
        weights_to_fp16(path, path)
    elif precision == "fp16-int8emb":  # the table is read by Gather: int8 there, the rest as fp16
        weights_to_fp16(quantize_int8(path, path, ops=("Gather",)), path)
    elif precision == "fp16-int8rows":
        weights_to_int8(path, path, ops=("Gather",))
    elif precision == "int8w":
        weights_to_int8(path, path)
    elif precision == "int8":
        quantize_int8(path, path)
    return path


def weights_to_int8(src: str | os.PathLike, dst: str | os.PathLike,
                    ops: tuple[str, ...] = ("MatMul", "Gather")) -> Path:
    """Weight-only int8 for the weights of `ops`, symmetric, a float32 scale per channel: a MatMul weight (K, N)
    per output column behind a DequantizeLinear; a Gather table (V, D) per row, gathered as int8 and scaled after
    the lookup (only the looked-up rows are ever widened).  The other big weights are stored as fp16 (as
    `weights_to_fp16`).  Unlike `quantize_int8`, activations stay float32: the arithmetic is float32 on weights
    rounded to 1/254 of each channel's largest magnitude.  Needs only `onnx`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph, inserted, after = model.graph, [], {}
    axis_of = {n.input[1]: 1 for n in graph.node if n.op_type == "MatMul" and "MatMul" in ops}  # (K, N): per column
    axis_of.update({n.input[0]: 0 for n in graph.node if n.op_type == "Gather" and "Gather" in ops})  # (V, D): per row
    for init in list(graph.initializer):  # a snapshot: the scales appended below are not visited
        if init.data_type != TensorProto.FLOAT or _numel(init) < FP16_MIN_SIZE:
            continue
        full = numpy_helper.to_array(init)
        axis = axis_of.get(init.name)
        if axis is None or full.ndim != 2:
            half = numpy_helper.from_array(full.astype("float16"), init.name + "_fp16")
            inserted.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
            init.CopyFrom(half)
            continue
        scale = (np.abs(full).max(axis=1 - axis) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.round(full / scale.reshape((-1, 1) if axis == 0 else (1, -1))), -127, 127).astype(np.int8)
        name = init.name
        init.CopyFrom(numpy_helper.from_array(q, name + "_int8"))
        graph.initializer.append(numpy_helper.from_array(scale, name + "_scale"))
        if axis == 1:
            graph.initializer.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), name + "_zero"))
            inserted.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero"],
                                             [name], axis=1))
            continue
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), name + "_last"))
        for node in graph.node:
            if node.op_type == "Gather" and node.input[0] == name:  # rows = int8 rows · their scales
                out, ids = node.output[0], node.input[1]
                node.input[0], node.output[0] = name + "_int8", out + "_int8"
                after[node.output[0]] = [  # keyed by name: protobuf wrappers' id()s are not stable
                    helper.make_node("Cast", [out + "_int8"], [out + "_wide"], to=TensorProto.FLOAT),
                    helper.make_node("Gather", [name + "_scale", ids], [out + "_rowscale"]),
                    helper.make_node("Unsqueeze", [out + "_rowscale", name + "_last"], [out + "_rowscale1"]),
                    helper.make_node("Mul", [out + "_wide", out + "_rowscale1"], [out]),
                ]
    nodes = [*inserted]  # the weights' casts first keep the graph topologically sorted
    for node in graph.node:
        kept = onnx.NodeProto()
        kept.CopyFrom(node)  # a copy: the originals go with `del` below
        nodes += [kept, *after.get(node.output[0] if node.output else "", [])]
    del graph.node[:]
    graph.node.extend(nodes)
    dst = Path(dst)
    atomic_write(dst, lambda tmp: onnx.save(model, str(tmp)))
    return dst


def weights_to_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, lossless_only: bool = False) -> Path:
    """Store each float32 weight of ≥ FP16_MIN_SIZE numbers as float16 behind a Cast to float32: half the
    file, the same float32 arithmetic (onnxruntime folds the casts once when it loads the graph).
    `lossless_only`: only weights that float16 holds exactly (the bundled UNets ship fp16 weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph, casts = model.graph, []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or _numel(init) < FP16_MIN_SIZE:
            continue
        full = numpy_helper.to_array(init)
        if lossless_only and not (full.astype("float16").astype("float32") == full).all():
            continue
        half = numpy_helper.from_array(full.astype("float16"), init.name + "_fp16")
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "_cast"))
        init.CopyFrom(half)
    for node in reversed(casts):  # first in the node list keeps the graph topologically sorted
        graph.node.insert(0, node)
    dst = Path(dst)
    atomic_write(dst, lambda tmp: onnx.save(model, str(tmp)))
    return dst


def _numel(init) -> int:
    n = 1
    for d in init.dims:
        n *= d
    return n


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, ops: tuple[str, ...] | None = None) -> Path:
    """onnxruntime's dynamic quantization: per-channel int8 weights for `ops` (default: MatMul, Gather and the
    rest it knows), activations quantized per call."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise OnnxExportError(f"int8 needs onnxruntime ({e}): pip install onnxruntime") from None
    dst = Path(dst)
    atomic_write(dst, lambda tmp: quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                                       op_types_to_quantize=list(ops) if ops else None))
    return dst


def export_model(name_or_dir: str | os.PathLike, out_dir: str | os.PathLike, *, text_precision: str = "fp32") -> Path:
    """A bundled model's name or a model directory → OUTDIR with unet.onnx, text_encoder.onnx and onnx.json."""
    from .conditioning.text import TextEncoder
    from .modeldir import load_model_dir

    if text_precision not in PRECISIONS:
        raise OnnxExportError(f"text encoder precision must be one of {', '.join(PRECISIONS)}, got {text_precision!r}")
    unet, info, _ = load_model_dir(name_or_dir, "cpu")
    out = Path(out_dir)
    export_unet(unet.float(), out / UNET_FILE)
    encoder = TextEncoder.load()
    export_text_encoder(encoder, out / TEXT_FILE, text_precision)
    c: Any = unet.config  # the UNet's UNetConfig
    manifest = {
        "opset": OPSET,
        "unet": {"file": UNET_FILE, "inputs": list(UNET_INPUTS) + (["guidance"] if c.guidance_embedding else []),
                 "output": "out", "prediction_type": info.prediction_type, "schedule": info.schedule,
                 "num_train_steps": info.num_train_steps, "shape": [c.in_channels, c.image_size, c.image_size]},
        "text_encoder": {"file": TEXT_FILE, "inputs": list(TEXT_INPUTS), "outputs": ["tokens", "pooled"],
                         "precision": text_precision, "max_length": encoder.max_length, "id": encoder.id},
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(text))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unnoise.onnx_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a bundled model's name (emoji, emoji-fast, digits, …) or a model directory")
    parser.add_argument("out_dir", help="folder for unet.onnx, text_encoder.onnx and onnx.json")
    parser.add_argument("--text-precision", choices=PRECISIONS, default="fp32",
                        help="text encoder weights (docs/onnx.md)")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.model, args.out_dir, text_precision=args.text_precision)
    except UnnoiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / UNET_FILE}, {out / TEXT_FILE} ({args.text_precision}) and {out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
