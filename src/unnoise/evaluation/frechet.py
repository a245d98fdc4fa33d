"""The Fréchet distance between two Gaussians fitted to feature sets (Dowson & Landau 1982; Heusel et al. 2017).

    FD = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁^½ Σ₂ Σ₁^½)^½)

The trace of the matrix square root is computed from the eigenvalues of the symmetric PSD matrix
Σ₁^½ Σ₂ Σ₁^½ (its square roots are the singular values of Σ₂^½ Σ₁^½), in float64, so no complex
`sqrtm` round-off has to be discarded.  With few samples per set the estimate is biased upwards
(≈ tr terms of order d/N); compare distances only at equal N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stats:
    """Mean (d,) and covariance (d, d) of a feature set, float64, with its size n."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    @classmethod
    def of(cls, features: torch.Tensor) -> Stats:
        f = features.double()
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"need at least 2 feature vectors (N, d), got {tuple(f.shape)}")
        return cls(f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1]), len(f))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu, "sigma": self.sigma, "n": torch.tensor(self.n)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> Stats:
        return cls(t["mu"].double(), t["sigma"].double(), int(t["n"]))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a: Stats | torch.Tensor, b: Stats | torch.Tensor) -> float:
    """FD between two Stats (or two feature sets (N, d))."""
    a = a if isinstance(a, Stats) else Stats.of(a)
    b = b if isinstance(b, Stats) else Stats.of(b)
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mu.shape)} vs {tuple(b.mu.shape)}")
    s1 = _sqrt_psd(a.sigma)
    m = s1 @ b.sigma @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = ((a.mu - b.mu) ** 2).sum() + a.sigma.trace() + b.sigma.trace() - 2 * tr_sqrt
    return float(d.clamp_min(0))
