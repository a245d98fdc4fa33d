"""Sampler and spacing names people already use — AUTOMATIC1111's display names ("Euler a",
"DPM++ 2M Karras"), ComfyUI's (euler_ancestral, uni_pc, lcm) and k-diffusion's (k_euler, sample_heun) —
mapped onto the registry's own, case-insensitively.  Resolved once at the edge (Painter, CLI), so the
registry and everything under it only ever see the canonical names of SAMPLERS.
"""

from __future__ import annotations

import re

from ..schedules import LAST_SIGMA_SPACING, SPACINGS
from ..suggest import did_you_mean

# AUTOMATIC1111's display name of each sampler: what its infotext writes after "Sampler:" (LCM is its
# name for multistep consistency sampling; A1111 has no DDPM, ComfyUI calls it ddpm)
A1111_NAMES = {
    "ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_3m_sde": "DPM++ 3M SDE", "unipc": "UniPC",
    "consistency": "LCM",
}
# more names beyond the canonical and the A1111 one (k_… and sample_… prefixes are dropped anyway)
OTHER_NAMES = {"euler_ancestral": ("euler_a",), "unipc": ("uni_pc",), "consistency": ("lcm",)}
# A1111's scheduler labels for the spacings that are the same σ grid: Karras et al. eq. 5 (ρ = 7), and
# "Exponential", k-diffusion's get_sigmas_exponential, uniform in log σ, i.e. in log-SNR
A1111_SPACINGS = {"karras": "Karras", "log_snr": "Exponential"}
SPACING_ALIASES = {label.lower(): ours for ours, label in A1111_SPACINGS.items()}

# what each sampler is, in one line (`unnoise samplers`)
SUMMARIES = {
    "ddpm": "ancestral DDPM: denoise, then add back fresh noise each step (DDIM with η = 1)",
    "ddim": "deterministic DDIM (η = 0): an Euler step of the probability-flow ODE in the σ view",
    "euler": "Euler's method on the probability-flow ODE (the same update as ddim)",
    "euler_ancestral": "Euler down past the next σ, then fresh noise back up to it",
    "heun": "Euler plus a trapezoidal correction: second order for two calls a step",
    "dpmpp_2m": "second-order multistep ODE solver reusing the last step's x̂0 (the usual default)",
    "dpmpp_2m_sde": "DPM++ 2M with fresh noise each step (SDE form)",
    "dpmpp_3m_sde": "third-order multistep solver, SDE form",
    "unipc": "unified predictor-corrector multistep solver, third order for one call a step",
    "consistency": "for consistency students: jump to the image, re-noise to the next σ, repeat",
}


def _key(name: str) -> str:
    """Lower case, "++" → "pp", runs of spaces/underscores/hyphens → "_", no k_/sample_ prefix."""
    key = re.sub(r"[\s_\-]+", "_", name.strip().lower()).replace("++", "pp")
    return re.sub(r"^(k|sample)_", "", key)


def _table() -> dict[str, str]:
    from . import SAMPLERS

    table = {_key(name): name for name in SAMPLERS}
    for name, display in A1111_NAMES.items():
        table[_key(display)] = name
    for name, others in OTHER_NAMES.items():
        table.update({_key(o): name for o in others})
    return table


def aliases(name: str) -> list[str]:
    """The other names of a registered sampler, A1111's first."""
    names = [n for n in (A1111_NAMES.get(name), *OTHER_NAMES.get(name, ())) if n and n.lower() != name]
    return list({n.lower(): n for n in reversed(names)}.values())[::-1]  # one spelling per name, the first


def resolve_sampler(name: str) -> tuple[str, str | None]:
    """(canonical sampler, spacing or None) for any known name, e.g. "DPM++ 2M Karras" → ("dpmpp_2m",
    "karras"), "Euler a" → ("euler_ancestral", None); UnknownSamplerError with the nearest name."""
    from . import SAMPLERS, UnknownSamplerError

    if isinstance(name, str):
        table = _table()
        key = _key(name)
        if key in table:
            return table[key], None
        for label, spacing in SPACING_ALIASES.items():  # an A1111 name with its schedule type: "… Karras"
            if key.endswith("_" + label) and key[: -len(label) - 1] in table:
                return table[key[: -len(label) - 1]], spacing
    known = [*SAMPLERS, *A1111_NAMES.values(), *(o for others in OTHER_NAMES.values() for o in others)]
    raise UnknownSamplerError(f"unknown sampler {name!r}{did_you_mean(name, known)} "
                              f"(choose from {', '.join(SAMPLERS)}; `unnoise samplers` lists the other names)")


def resolve_spacing(spacing: str) -> str:
    """Our spacing name for a known one in any case or an A1111 schedule type ("Karras", "Exponential");
    anything else comes back as it is, for schedules.check_spacing to judge."""
    if not isinstance(spacing, str):
        return spacing
    low = spacing.strip().lower()
    if low.startswith(LAST_SIGMA_SPACING):
        return low
    if low in SPACINGS:
        return low
    return SPACING_ALIASES.get(low, spacing)


def a1111_name(sampler: str, spacing: str | None) -> str:
    """The sampler as A1111's infotext names it, its spacing as a suffix where A1111 has that σ grid:
    ("dpmpp_2m", "karras") → "DPM++ 2M Karras", ("dpmpp_2m", "log_snr") → "DPM++ 2M Exponential"."""
    display = A1111_NAMES.get(sampler, sampler)
    suffix = A1111_SPACINGS.get(spacing or "")
    return f"{display} {suffix}" if suffix else display


def listing() -> list[str]:
    """`unnoise samplers`: each sampler with its other names, order, calls per step and what it is."""
    from . import SAMPLERS

    lines = []
    for name, s in SAMPLERS.items():
        other = ", ".join(f'"{a}"' if " " in a else a for a in aliases(name))
        calls = f"{s.calls_per_step} call{'s' * (s.calls_per_step != 1)} a step"
        kind = "stochastic" if s.stochastic else "deterministic"
        lines.append(f"{name:16s} order {s.order}, {calls}, {kind}" + (f"; also {other}" if other else ""))
        lines.append(f"{'':16s} {SUMMARIES.get(name, s.paper)}")
    lines.append("Names work in any case, with spaces or underscores and a k_ or sample_ prefix (k_euler_a); an A1111 "
                 'schedule type at the end sets the spacing: "DPM++ 2M Karras" = dpmpp_2m --spacing karras, '
                 '"… Exponential" = log_snr.')
    return lines
