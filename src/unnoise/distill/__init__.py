"""Few-step students distilled from a guided teacher: consistency distillation with the guidance scale
as a network input (docs/distill.md).

    from unnoise.distill import DistillConfig, distill, compare_samples
    student_dir = distill(DistillConfig(teacher="digits", out="runs/digits-cd", steps=4))
"""

from .compare import compare_samples
from .config import DistillConfig, DistillError
from .loop import Distiller, distill

__all__ = ["DistillConfig", "DistillError", "Distiller", "compare_samples", "distill"]
