"""UniPC, Zhao et al. 2023: a unified predictor–corrector for the diffusion ODE (data prediction).

Each step predicts x_{i+1} with UniP-p from the x̂0 history, evaluates the network there (the only
call of the step), and uses that value to correct x_{i+1} with UniC-p before moving on; the corrected
point keeps the value evaluated at the predicted one, so the correction costs no extra call and
raises the order from p to p + 1 (Zhao et al. 2023, Theorem 3.3).

``variant=None`` (the default) solves every order condition exactly; B(h) then cancels out of the
update, so it needs no name.  ``variant="bh1"`` (B(h) = h) or ``"bh2"`` (B(h) = e^h − 1) is the
reference code's update (Zhao et al.'s repository, as diffusers' UniPCMultistepScheduler runs it):
the one-weight systems, UniP-2's and UniC-1's, use the constant ½ instead of their solved value, so
B(h) no longer cancels there and the two variants differ at O(h³) per step.
"""

from __future__ import annotations

import math

import torch

from .core import SamplingError, lambdas, phi_functions, start, toward

UNIPC_VARIANTS = ("bh1", "bh2")
REFERENCE_WEIGHT = [0.5]  # the reference's a_1 for UniP-2 and UniC-1: the h → 0 limit of the solved one


def _weights(rks: list[float], b: list[float]) -> list[float]:
    """Solve Σ_k a_k·r_k^(j) = b_j for j = 0 … len(rks) − 1 (the UniPC order conditions, eq. 7/9)."""
    n = len(rks)
    if n == 0:
        return []
    lhs = torch.tensor([[r**j for r in rks] for j in range(n)], dtype=torch.float64)
    return torch.linalg.solve(lhs, torch.tensor(b[:n], dtype=torch.float64)).tolist()


def _combine(base: torch.Tensor, b_h: float, weights: list[float], diffs: list[torch.Tensor]) -> torch.Tensor:
    """x = x_base − B(h)·Σ_k a_k·D_k (α = 1 in the σ view)."""
    for a, d in zip(weights, diffs):
        base = base - (b_h * a) * d
    return base


def unipc(denoiser, x: torch.Tensor, sigmas, *, generator=None, callback=None, order: int = 2,
          variant: str | None = None, corrector: bool = True) -> torch.Tensor:
    """UniPC-p (Zhao et al. 2023, Algorithms 1–3); order p + 1 with the corrector.  ``variant``: None
    solves the order conditions exactly, "bh1" (B(h) = h) / "bh2" (B(h) = e^h − 1) use the reference's
    constant ½ for UniP-2 and UniC-1.  Lower order at the start (history) and the end (p ≤ steps − i)."""
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise SamplingError(f"unipc order must be 1, 2 or 3, got {order!r}")
    if variant is not None and variant not in UNIPC_VARIANTS:
        raise SamplingError(f"unknown unipc variant {variant!r}; choose from None, {', '.join(UNIPC_VARIANTS)}")
    reference = variant is not None
    run = start(denoiser, x, sigmas, generator, callback)
    lam = lambdas(run.sigmas)
    history: list[tuple[float, torch.Tensor]] = []  # (λ_j, x̂0_j) of earlier steps, newest last
    pending = None  # what the corrector needs from the previous prediction, or None
    for i in range(run.steps):
        # Notation (Zhao et al. 2023, data prediction): m0 = x̂0 at λ_i, h = λ_{i+1} − λ_i, hh = −h,
        # r_k = (λ_{i−k} − λ_i)/h, D_k = (m_k − m0)/r_k, b_j = hh·φ_{j+1}(hh)·j!/B(h).
        sigma_next = run.sigmas[i + 1]
        m0 = run.denoise(x, run.sigmas[i])  # (B, …) x̂0 at the *predicted* x_i
        # 1. UniC: correct x_i with the value just computed (D_t = m_t − m0_prev with r = 1)
        if pending is not None and corrector:
            base, b_h, rks, b, diffs, m_prev = pending
            weights = REFERENCE_WEIGHT if reference and not rks else _weights(rks + [1.0], b)
            x = _combine(base, b_h, weights, diffs + [m0 - m_prev])
        run.report(i, x, m0)
        history = (history + [(lam[i], m0)])[-order:]
        if sigma_next == 0:
            # h = ∞: the first-order step lands on x̂0 exactly
            x, pending = m0, None
            continue
        # 2. UniP-p from the corrected x_i
        h = lam[i + 1] - lam[i]
        p = min(order, len(history), run.steps - i)
        phis = phi_functions(-h, p + 1)
        b_h = -h if variant == "bh1" else -h * phis[0]
        b = [-h * phis[j] * math.factorial(j) / b_h for j in range(1, p + 1)]
        rks = [(lam_k - lam[i]) / h for lam_k, _ in history[-2::-1][: p - 1]]
        diffs = [(m_k - m0) / r for (_, m_k), r in zip(history[-2::-1], rks)]
        base = toward(m0, x, math.exp(-h))
        weights = REFERENCE_WEIGHT if reference and len(rks) == 1 else _weights(rks, b)
        x = _combine(base, b_h, weights, diffs)
        pending = (base, b_h, rks, b, diffs, m0)
    return x
