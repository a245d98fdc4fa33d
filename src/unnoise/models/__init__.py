"""Denoiser networks: `UNet(UNetConfig)` predicts ε, v or x0 from (x_t, t, text condition)."""

from .unet import CONFIG_NAME, WEIGHTS_NAME, UNet, UNetConfig, UNetConfigError, UNetInputError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "UNet", "UNetConfig", "UNetConfigError", "UNetInputError"]
