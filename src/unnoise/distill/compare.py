"""The evaluation hook: teacher and student samples at several NFE, same prompts, same seeds."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .. import schedules
from ..generation import generate
from ..sampling import get_sampler
from .config import DistillError


def compare_samples(
    teacher_dir: str | os.PathLike,
    student_dir: str | os.PathLike,
    prompts: Sequence[str],
    seeds: Sequence[int],
    nfe_teacher: Sequence[int] = (4, 8, 20, 50),
    nfe_student: Sequence[int] = (1, 2, 4),
    *,
    guidance: float | None = None,
    teacher_spacing: str | None = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """{"teacher": {nfe: images}, "student": {nfe: images}}, images (P·S, C, H, W) in [−1, 1], prompt-major
    (row p·S + s is prompt p with seed s), the same start noise for both.

    The teacher paints with dpmpp_2m (1 network evaluation per step, CFG doubling the batch) and the
    student with its own default sampler (1 per step, no doubling), both at the student's default
    guidance scale unless `guidance` is given.  Each paints on its own default σ spacing (a student's
    grid may differ from its teacher's, e.g. log_snr_trailing), the teacher on `teacher_spacing` if given.
    """
    from ..conditioning.text import TextEncoder
    from ..modeldir import load_model_dir

    teacher, t_info, _ = load_model_dir(teacher_dir)
    student, s_info, _ = load_model_dir(student_dir)
    if (t_info.channels, t_info.image_size) != (s_info.channels, s_info.image_size):
        raise DistillError(f"teacher and student paint different shapes: {t_info.channels}×{t_info.image_size}² vs "
                         f"{s_info.channels}×{s_info.image_size}²")
    w = float(s_info.defaults.get("guidance", 3.0) if guidance is None else guidance)
    s_spacing = s_info.defaults.get("spacing", schedules.DEFAULT_SPACING)
    t_spacing = teacher_spacing or t_info.defaults.get("spacing", schedules.DEFAULT_SPACING)  # checked by sigmas()
    sampler = s_info.defaults.get("sampler", "consistency")
    for nfe in (*nfe_teacher, *nfe_student):
        if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= 1000:
            raise DistillError(f"NFE must be integers from 1 to 1000, got {nfe!r}")
    if get_sampler(sampler).calls_per_step != 1 or get_sampler("dpmpp_2m").calls_per_step != 1:
        raise DistillError(f"NFE = steps needs one network call per step; {sampler} makes more")
    encoder = TextEncoder.load()
    rows = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    cond, uncond = encoder.encode(rows), encoder.encode([""] * len(rows))
    shape = (t_info.channels, t_info.image_size, t_info.image_size)
    t_sched = schedules.get(t_info.schedule, t_info.num_train_steps)
    s_sched = schedules.get(s_info.schedule, s_info.num_train_steps)
    out: dict[str, dict[int, torch.Tensor]] = {"teacher": {}, "student": {}}
    for nfe in nfe_teacher:
        out["teacher"][nfe] = generate(teacher, t_sched, t_info.prediction_type, cond, uncond, shape=shape,
                                       seeds=all_seeds, steps=nfe, guidance=w, sampler="dpmpp_2m", spacing=t_spacing)
    for nfe in nfe_student:
        # a student's network has the guidance embedding: generate passes w as an input, no CFG batch
        out["student"][nfe] = generate(student, s_sched, s_info.prediction_type, cond, None, shape=shape,
                                       seeds=all_seeds, steps=nfe, guidance=w, sampler=sampler, spacing=s_spacing)
    return out
