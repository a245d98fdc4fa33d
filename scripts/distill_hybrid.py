"""Which of a trajectory student's K jumps costs the quality?  Paint with the student for the first j
intervals of its grid and the guided teacher's fine solve (the student's own training target, ⌈N/K⌉
DPM-Solver++(2M) steps per interval) for the rest, j = 0 … K, and score each split with the judge.

    python scripts/distill_hybrid.py --student runs/digits-tr/model -n 500 --threads 2

j = K is the student alone, j = 0 the teacher alone on the student's nested grid; the FD step between
j − 1 and j is what the student's j-th jump adds.  With --teacher-first the teacher solves the first j
intervals and the student jumps the rest (each jump's error from the teacher's own states).  With
--last-call the student makes its first K − 1 jumps and the last interval (to 0) is finished three ways:
the student's call, the teacher's fine solve, and the teacher's guided x̂0 in one call.  Digits students are
scored by FD-digits and adherence (the classifier reads the digit), emoji students as `unnoise eval distill`
scores them: ⌊n/60⌋ seeds for each of the judge's 60 names, top-5/top-1 name retrieval and FD-ENL0.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", required=True, help="a trajectory student's model directory")
    ap.add_argument("-n", "--num-images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--teacher-first", action="store_true", help="the teacher solves the first j intervals")
    ap.add_argument("--last-call", action="store_true", help="compare finishes of the last interval instead")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unnoise import schedules
    from unnoise.conditioning.guidance import CFGDenoiser
    from unnoise.conditioning.text import TextEncoder
    from unnoise.denoisers import DiscreteDenoiser
    from unnoise.distill.loop import ode_segment, trajectory_segments
    from unnoise.evaluation.quality import DigitsJudge, EmojiJudge
    from unnoise.modeldir import load_model_dir
    from unnoise.sampling import seeded_generators
    from unnoise.sampling.core import randn_like, toward

    student, s_info, _ = load_model_dir(args.student)
    cfg = s_info.training["config"]
    if cfg["method"] != "trajectory":
        raise SystemExit(f"{args.student} is a {cfg['method']} student; this splits a trajectory student's jumps")
    teacher, t_info, _ = load_model_dir(s_info.training["distilled_from"])
    if t_info.dataset not in ("digits", "emoji"):
        raise SystemExit(f"no judge for {t_info.dataset!r}: digits and emoji students only")
    schedule = schedules.get(t_info.schedule, t_info.num_train_steps)
    segments = trajectory_segments(schedule, cfg["steps"], cfg["spacing"], cfg["ode_steps"],
                                   cfg.get("last_target", "ode"))
    w = float(s_info.defaults["guidance"])
    if t_info.dataset == "digits":
        judge = DigitsJudge(fd_enl0=False)
        metrics = {"adherence": "adherence", "fd_digits": "FD-digits"}
    else:
        judge = EmojiJudge(image_size=t_info.image_size)
        metrics = {"top5_names": "top-5", "top1_names": "top-1", "fd_enl0": "FD-ENL0"}
    prompts, targets = judge.distinct_prompts()  # as `unnoise eval distill` paints them
    per = max(1, args.num_images // len(prompts))
    labels = targets.repeat_interleave(per)
    encoder = TextEncoder.load()
    cond = encoder.encode([p for p in prompts for _ in range(per)])
    uncond = encoder.encode([""] * len(labels))
    seeds = [s for _ in prompts for s in range(per)]

    def scored(images) -> str:
        m = judge.score(images.clamp(-1, 1), labels)
        return " ".join(f"{m[k]:>9.3f}" if m[k] <= 1 else f"{m[k]:>9.2f}" for k in metrics)
    shape = (t_info.channels, t_info.image_size, t_info.image_size)
    start = randn_like(torch.empty(len(seeds), *shape), seeded_generators(seeds)) * segments[0][0]  # as sample draws it
    t_den = DiscreteDenoiser(teacher.float().eval(), schedule, t_info.prediction_type)
    s_den = DiscreteDenoiser(student.float().eval(), schedule, s_info.prediction_type)
    ws = torch.full((len(labels),), w)

    cfg_teacher = CFGDenoiser(t_den, cond, uncond, w)

    def guided(x, sigma):  # x̂0 clamped, as generate does
        return cfg_teacher(x, sigma).clamp(-1.0, 1.0)

    print(f"{args.student}: K = {len(segments)}, teacher steps per interval {[len(s) - 1 for s in segments]}, "
          f"w = {w}, {len(labels)} images")
    def student_jump(x, seg):  # the student's DDIM jump σ_i → σ_{i+1}
        x0 = s_den(x, torch.full((len(x),), seg[0]), {**cond, "guidance": ws}).clamp(-1.0, 1.0)
        return toward(x0, x, seg[-1] / seg[0])

    if args.last_call:
        with torch.no_grad():
            x = start.clone()
            for seg in segments[:-1]:
                x = student_jump(x, seg)
            fine = trajectory_segments(schedule, cfg["steps"], cfg["spacing"], cfg["ode_steps"])[-1]
            finishes = {"student, 1 call": student_jump(x, segments[-1]),
                        f"teacher fine solve, {len(fine) - 1} calls": ode_segment(guided, x, fine),
                        "teacher x̂0, 1 call": ode_segment(guided, x, [segments[-1][0], 0.0])}
            print(f"the student's first {len(segments) - 1} jumps to σ = {segments[-1][0]:.4g}, then:")
            print(f"{'':>32} " + " ".join(f"{v:>9}" for v in metrics.values()))
            for name, y in finishes.items():
                print(f"{name:>32} {scored(y)}", flush=True)
        return
    first = "teacher" if args.teacher_first else "student"
    print(f"{first + ' first j':>15} {'teacher calls':>13} " + " ".join(f"{v:>9}" for v in metrics.values()))
    with torch.no_grad():
        for j in range(len(segments) + 1):
            x = start.clone()
            for i, seg in enumerate(segments):
                if (i < j) != args.teacher_first:
                    x = student_jump(x, seg)
                else:
                    x = ode_segment(guided, x, seg)
            calls = sum(len(s) - 1 for s in (segments[:j] if args.teacher_first else segments[j:]))
            print(f"{j:>15} {calls:>13} {scored(x)}", flush=True)


if __name__ == "__main__":
    main()
