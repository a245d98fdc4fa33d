"""diffusers pipeline folders as unnoise models (read only, local only: nothing is downloaded).

    DIR/model_index.json                             {"_class_name": "DDPMPipeline", "unet": [...], "scheduler": [...]}
    DIR/unet/config.json                             a UNet2DModel config
    DIR/unet/diffusion_pytorch_model.safetensors     its weights
    DIR/scheduler/scheduler_config.json              a DDPM/DDIM-family scheduler config

as `DDPMPipeline.save_pretrained` (or DDIMPipeline's) writes it.  The scheduler config gives the β schedule,
T, the prediction type and clipping; the unet config the image shape and the number of classes.  The
network is unnoise's own re-implementation (models/diffusers_unet.py), so diffusers need not be installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import schedules
from .errors import UnnoiseError

MODEL_INDEX = "model_index.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
UNET_WEIGHTS_FP16 = "diffusion_pytorch_model.fp16.safetensors"
# Scheduler classes whose config describes a discrete β schedule the way DDPM/DDIM do, and the unnoise
# sampler that paints like each (defaults only: any unnoise sampler can paint any of them).
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler",
              "EulerAncestralDiscreteScheduler": "euler_ancestral", "HeunDiscreteScheduler": "heun",
              "DPMSolverMultistepScheduler": "dpmpp_2m", "UniPCMultistepScheduler": "unipc"}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                  "sigmoid": "sigmoid"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DEFAULT_STEPS = 50  # DDIMPipeline's num_inference_steps


class DiffusersFolderError(UnnoiseError, ValueError):
    """A diffusers pipeline folder unnoise cannot read (one line naming the file)."""


def is_pipeline_folder(path: Path) -> bool:
    return (path / MODEL_INDEX).is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffusersFolderError(f"{path} is missing (a diffusers pipeline folder needs it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffusersFolderError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise DiffusersFolderError(f"{path}: expected a JSON object")
    return data


def _component(index: dict, name: str, path: Path) -> str:
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2):
        raise DiffusersFolderError(
            f"{path / MODEL_INDEX}: no {name!r} component (unnoise reads unet + scheduler pipelines)")
    return str(entry[1])


def read_configs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(unet config with UNet2DModel defaults filled in, scheduler config) of a pipeline folder, checked."""
    from .models.diffusers_unet import check_config

    index = _json(path / MODEL_INDEX)
    unet_class = _component(index, "unet", path)
    if unet_class != "UNet2DModel":
        raise DiffusersFolderError(f"{path / MODEL_INDEX}: unet is a {unet_class}; unnoise reads UNet2DModel only")
    scheduler_class = _component(index, "scheduler", path)
    if scheduler_class not in SCHEDULERS:
        raise DiffusersFolderError(f"{path / MODEL_INDEX}: scheduler {scheduler_class!r} is not supported "
                                   f"(unnoise reads {', '.join(SCHEDULERS)})")
    unet_file = path / "unet" / "config.json"
    try:
        unet = check_config(_json(unet_file))
    except ValueError as e:
        raise DiffusersFolderError(f"{unet_file}: {e}") from None
    sched_file = path / "scheduler" / "scheduler_config.json"
    sched = _json(sched_file)
    sched.setdefault("_class_name", scheduler_class)
    _check_scheduler(sched, sched_file)
    return unet, sched


def _check_scheduler(sched: dict[str, Any], file: Path) -> None:
    if sched.get("thresholding"):
        raise DiffusersFolderError(f"{file}: thresholding=true (dynamic thresholding) is not supported")
    if sched.get("trained_betas") is not None:
        raise DiffusersFolderError(f"{file}: trained_betas is not supported (unnoise reads beta_schedule)")
    beta = sched.get("beta_schedule", "linear")
    if beta not in BETA_SCHEDULES:
        raise DiffusersFolderError(f"{file}: beta_schedule {beta!r} is not supported ({', '.join(BETA_SCHEDULES)})")
    if sched.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise DiffusersFolderError(f"{file}: prediction_type {sched['prediction_type']!r} is not supported "
                                   f"({', '.join(PREDICTION_TYPES)})")
    if sched.get("timestep_type", "discrete") != "discrete" or sched.get("use_karras_sigmas"):
        raise DiffusersFolderError(f"{file}: only discrete timesteps are supported (no continuous or karras-sigma "
                                   "training schedule)")


def schedule_from_config(sched: dict[str, Any]) -> schedules.Schedule:
    """The β schedule a scheduler config describes, as an unnoise Schedule (float64; diffusers computes the
    same formulas in float32)."""
    T = int(sched.get("num_train_timesteps", 1000))
    start, end = float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02))
    ztsnr = bool(sched.get("rescale_betas_zero_snr", False))
    name = BETA_SCHEDULES[sched.get("beta_schedule", "linear")]
    if name != "scaled_linear":
        return schedules.get(name, T, zero_terminal_snr=ztsnr, beta_start=start, beta_end=end)
    # latent-diffusion's schedule: linear in sqrt(β) (diffusers' "scaled_linear")
    betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if ztsnr:
        alphas_cumprod = schedules.rescale_zero_terminal_snr(alphas_cumprod)
        betas = 1.0 - alphas_cumprod / torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return schedules.Schedule(name="scaled_linear" + (schedules.ZTSNR_SUFFIX if ztsnr else ""), betas=betas,
                              alphas_cumprod=alphas_cumprod)


def info_fields(path: Path) -> dict[str, Any]:
    """The ModelInfo fields of a pipeline folder (modeldir.ModelInfo(**info_fields(path)))."""
    unet, sched = read_configs(path)
    size = unet.get("sample_size")
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else None
    if not isinstance(size, int) or size < 1:
        raise DiffusersFolderError(f"{path / 'unet' / 'config.json'}: sample_size {unet.get('sample_size')!r} is not "
                                   "one positive side (unnoise paints square images)")
    if unet["out_channels"] != unet["in_channels"]:
        raise DiffusersFolderError(f"{path / 'unet' / 'config.json'}: out_channels {unet['out_channels']} ≠ "
                                   "in_channels "
                                   f"{unet['in_channels']} (a learned variance is not supported)")
    spacing = sched.get("timestep_spacing", "leading")
    clip = float(sched.get("clip_sample_range", 1.0)) if sched.get("clip_sample", True) else None
    return {
        "schedule": schedule_from_config(sched).name, "num_train_steps": int(sched.get("num_train_timesteps", 1000)),
        "prediction_type": sched.get("prediction_type", "epsilon"), "text_encoder": "", "channels": unet["in_channels"],
        "image_size": size, "dataset": f"diffusers {_json(path / MODEL_INDEX).get('_class_name', 'pipeline')}",
        "defaults": {"steps": DEFAULT_STEPS, "guidance": 1.0, "sampler": SCHEDULERS[sched["_class_name"]],
                     "spacing": spacing if spacing in ("leading", "linspace", "trailing") else "leading"},
        "scheduler": sched, "num_classes": unet["num_class_embeds"], "clip_sample": clip,
    }


def load_unet(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The folder's UNet2DModel as unnoise's DiffusersUNet2D, float32, eval mode."""
    from safetensors.torch import load_file

    from .models.diffusers_unet import DiffusersUNet2D

    unet, _ = read_configs(path)
    weights = path / "unet" / UNET_WEIGHTS
    if not weights.is_file() and (path / "unet" / UNET_WEIGHTS_FP16).is_file():
        weights = path / "unet" / UNET_WEIGHTS_FP16  # saved with variant="fp16" only; computed in float32
    if not weights.is_file():
        raise DiffusersFolderError(f"{weights} is missing (unnoise reads safetensors weights only, no .bin pickles)")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise DiffusersFolderError(f"{weights}: unreadable ({e})") from None
    model = DiffusersUNet2D(unet)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise DiffusersFolderError(f"{weights}: does not match unet/config.json ({first})") from None
    return model.to(device).eval()


def class_condition(num_classes: int | None, label: int | None, batch: int) -> dict[str, torch.Tensor] | None:
    """The network's condition: {"class_labels": (B,)} for a class-conditional model, None otherwise."""
    if num_classes is None:
        return None
    return {"class_labels": torch.full((batch,), int(label or 0), dtype=torch.long)}


def prompt_label(prompt: str, num_classes: int | None) -> int | None:
    """A prompt that is a class number ("3") names the class of a class-conditional model (the lab's prompt
    box, a prompt file); anything else None."""
    text = prompt.strip() if isinstance(prompt, str) else ""
    if num_classes is None or not text.isdigit() or int(text) >= num_classes:
        return None
    return int(text)


def prompt_note(info, prompt: str, class_label: int | None) -> str | None:
    """The one-line note for a prompt a pipeline folder's model cannot read, or None."""
    if info.num_classes is None:
        unused = f"note: this diffusers model is unconditional; the prompt {prompt!r} is ignored"
        return unused if prompt.strip() else None
    if prompt.strip() and prompt_label(prompt, info.num_classes) is None:
        return (f"note: this diffusers model is class-conditional ({info.num_classes} classes) and reads no text; "
                f"painting class {class_label or 0} (--class-label N)")
    return None
