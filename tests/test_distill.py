"""Distillation: a short consistency-distillation run lowers the student's few-step error against the
teacher's many-step samples; exact resume; the student is a model directory Painter and `unnoise paint`
use; compare_samples; progressive rounds; the guidance embedding; bad CLI input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SQUARE_COLOURS
from safetensors.torch import load_file

from unnoise import schedules
from unnoise.distill import DistillConfig, Distiller, DistillError, compare_samples, distill
from unnoise.distill.config import resume_config
from unnoise.distill.loop import progressive_spacing
from unnoise.distill.measure import errors, student_samples
from unnoise.models import UNet, UNetConfig, UNetInputError
from unnoise.pipeline import Painter
from unnoise.training import checkpoint
from unnoise.training.config import TrainConfig
from unnoise.training.loop import train

COLOURS = SQUARE_COLOURS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(squares, tmp_path_factory) -> Path:
    """A tiny v-prediction teacher trained for 150 steps (≈ 15 s on one thread): it paints the caption's colour."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = TrainConfig(data=str(squares), out=str(out), image_size=16, model_size="tiny", max_steps=150, batch_size=16,
                      warmup_steps=20, lr=2e-3, log_every=50, sample_every=0, checkpoint_every=1000, seed=3, threads=1,
                      prediction_type="v_prediction", ema_decay=0.99, cond_dropout=0.2)
    return train(cfg, quiet=True)


def config(teacher, squares, out, **kw) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), data=str(squares), steps=2, max_steps=6, batch_size=8, lr=5e-4,
                warmup_steps=2, ode_steps=16, log_every=2, checkpoint_every=3, threads=1)
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def distilled(teacher, squares, tmp_path_factory):
    """80 steps of consistency distillation, with the K-step errors before and after."""
    cfg = config(teacher, squares, tmp_path_factory.mktemp("cd") / "run", max_steps=80, batch_size=16,
                 warmup_steps=8, checkpoint_every=80, log_every=20)
    d = Distiller(cfg, quiet=True)
    d.shape = (3, 16, 16)
    prompts = list(COLOURS)
    seeds = [s for _ in prompts for s in range(8)]
    rows = [p for p in prompts for _ in range(8)]
    cond, uncond = d.encoder.encode(rows), d.encoder.encode([""] * len(rows))
    from unnoise.generation import generate

    reference = generate(d.teacher, d.schedule, d.prediction_type, cond, uncond, shape=d.shape, seeds=seeds, steps=50,
                         guidance=3.0, sampler="dpmpp_2m", spacing=d.cfg.spacing)
    before = {k: errors(student_samples(d, d.student, "consistency", k, cond, seeds, 3.0), reference, 2) for k in (1, 2, 4)}
    model_dir = d.run()
    after = {k: errors(student_samples(d, d.ema_student(), "consistency", k, cond, seeds, 3.0), reference, 2)
             for k in (1, 2, 4)}
    return model_dir, before, after


def test_distillation_lowers_the_few_step_error(distilled):
    _, before, after = distilled
    # one step: the same start noise must land near the teacher's 50-step image (measured ≈ 0.61 → 0.36 at 100 steps)
    assert after[1]["path"] < 0.8 * before[1]["path"], (before, after)
    for k in (1, 2, 4):  # and the per-prompt mean and spread over seeds move towards the teacher's
        assert after[k]["stats"] < before[k]["stats"], (k, before, after)


def test_student_is_a_model_dir_that_painter_and_paint_use(distilled, tmp_path, cli):
    model_dir, _, _ = distilled
    meta = json.loads((model_dir / "unnoise.json").read_text())
    assert meta["defaults"]["sampler"] == "consistency" and meta["defaults"]["steps"] == 2
    assert meta["defaults"]["guidance"] == 3.0 and meta["training"]["method"] == "consistency"
    painter = Painter.from_pretrained(model_dir)
    assert painter.model.config.guidance_embedding
    seen, batches = [], []
    hook = painter.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    ims = painter("a red square", num_images=2, seed=4, callback=seen.append)
    hook.remove()
    assert len(ims) == 2 and ims[0].size == (16, 16) and len(seen) == 2  # the model's 2 steps, one callback each
    assert batches == [2, 2]  # w is an input: one pass of the batch per step, no doubled CFG batch
    assert ims[0].unnoise_params.sampler == "consistency"
    again = painter("a red square", num_images=1, seed=5)
    assert np.array_equal(np.asarray(again[0]), np.asarray(ims[1]))  # seed k: the same image whatever the batch
    out = tmp_path / "p.png"
    assert cli(["paint", "a blue square", "--model", str(model_dir), "--seed", "1", "--out", str(out)]).code == 0
    assert out.exists()


def test_compare_samples_same_seeds_and_prompts(teacher, distilled):
    model_dir, _, _ = distilled
    got = compare_samples(teacher, model_dir, ["a red square", "a blue square"], [0, 1], nfe_teacher=(4, 8),
                          nfe_student=(1, 2))
    assert set(got) == {"teacher", "student"} and set(got["teacher"]) == {4, 8} and set(got["student"]) == {1, 2}
    for images in (*got["teacher"].values(), *got["student"].values()):
        assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1
    again = compare_samples(teacher, model_dir, ["a blue square"], [1], nfe_teacher=(4,), nfe_student=(1,))
    torch.testing.assert_close(again["teacher"][4][0], got["teacher"][4][3])
    torch.testing.assert_close(again["student"][1][0], got["student"][1][3])
    # the teacher paints on its own spacing unless told another; the student's images do not change with it
    other = compare_samples(teacher, model_dir, ["a blue square"], [1], nfe_teacher=(4,), nfe_student=(1,),
                            teacher_spacing="log_snr_trailing")
    assert not torch.allclose(other["teacher"][4][0], got["teacher"][4][3], atol=1e-4)
    torch.testing.assert_close(other["student"][1][0], got["student"][1][3])
    with pytest.raises(ValueError, match="unknown spacing 'uniform'"):
        compare_samples(teacher, model_dir, ["a blue square"], [1], nfe_teacher=(4,), teacher_spacing="uniform")


def assert_resume_is_exact(teacher, squares, tmp_path, **kw):
    """6 steps straight and 3 + resume + 3 give bit-equal weights and EMA."""
    distill(config(teacher, squares, tmp_path / "straight", **kw), quiet=True)
    distill(config(teacher, squares, tmp_path / "split", max_steps=3, **kw), quiet=True)
    distill(resume_config(tmp_path / "split", {"max_steps": 6}), resume=True, quiet=True)
    for name in ("model", "ema"):
        a = load_file(str(checkpoint.latest_path(tmp_path / "straight") / f"{name}.safetensors"))
        b = load_file(str(checkpoint.latest_path(tmp_path / "split") / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_is_exact(teacher, squares, tmp_path):
    assert_resume_is_exact(teacher, squares, tmp_path)
    with pytest.raises(DistillError, match="differ"):
        resume_config(tmp_path / "split", {"lr": 0.5})


def test_guidance_distillation_learns_the_guided_teacher_in_one_pass(teacher, squares, tmp_path):
    """method="guidance": the student's single pass, given w, learns the guided teacher's x̂0 (two passes): its
    loss on held-out batches (steps it never trained on) falls; it starts as the conditional teacher, exact at
    w = 1; it paints with dpmpp_2m at K calls."""
    d = Distiller(config(teacher, squares, tmp_path / "gd", method="guidance", steps=4, max_steps=200, batch_size=16,
                         warmup_steps=5, checkpoint_every=200, log_every=50, lr=1e-3), quiet=True)

    def held_out_loss() -> float:  # mean over three batches of steps never trained on
        trained, losses = d.step, []
        for d.step in (10_000, 10_001, 10_002):
            with torch.no_grad():
                losses.append(float(d.loss()))
        d.step = trained
        return sum(losses) / len(losses)

    x, _ = d.dataset.get_batch(torch.arange(4))
    sigma, w = torch.tensor([0.3, 1.0, 3.0, 9.0]), torch.ones(4)
    idx = torch.tensor([d.bank.index("a red square")] * 4)
    cond, uncond = d.bank.condition(idx), d.bank.condition(torch.full_like(idx, d.bank.null_index))
    noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
    with torch.no_grad():  # w = 1 is the conditional teacher, which the student starts as (clamped as painting does)
        torch.testing.assert_close(d.student_d(noisy, sigma, {**cond, "guidance": w}).clamp(-1, 1),
                                   d.guided_teacher(noisy, sigma, cond, uncond, w))
    before = held_out_loss()
    model_dir = d.run()
    d.student.load_state_dict(d.ema_student().state_dict())
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)
    meta = json.loads((model_dir / "unnoise.json").read_text())
    assert meta["defaults"]["sampler"] == "dpmpp_2m" and meta["training"]["method"] == "guidance"
    ims = Painter.from_pretrained(model_dir)("a red square", num_images=1, seed=0)
    assert ims[0].unnoise_params.sampler == "dpmpp_2m" and ims[0].unnoise_params.steps == 4


def test_init_from_a_student_and_sigmas_on_the_samplers_grid(teacher, squares, tmp_path):
    """--init starts the student from an earlier student of the same teacher (not from the teacher), and
    sigma_sampling="grid" teaches it only at the K σs its own sampler queries; unnoise.json records both
    runs' wall time."""
    first = distill(config(teacher, squares, tmp_path / "a", method="guidance", steps=4, max_steps=3), quiet=True)
    d = Distiller(config(teacher, squares, tmp_path / "b", method="guidance", steps=4, max_steps=2,
                         init=str(first), sigma_sampling="grid"), quiet=True)
    start = load_file(str(first / "model.safetensors"))
    assert all(torch.equal(v.float(), d.student.state_dict()[k]) for k, v in start.items())
    grid = set(d.schedule.sigmas(4, d.cfg.spacing)[:-1].float().tolist())
    assert len(grid) == 4
    drawn = set()
    for d.step in range(5):
        drawn |= set(d.draw()[4].float().tolist())
    d.step = 0
    assert drawn <= grid and len(drawn) > 1
    training = json.loads((d.run() / "unnoise.json").read_text())["training"]
    first_wall = json.loads((first / "unnoise.json").read_text())["training"]["wall_s"]
    assert training["init"]["path"] == str(first) and training["init"]["wall_s"] == first_wall
    assert training["wall_s_total"] == pytest.approx(training["wall_s"] + first_wall, abs=0.11)
    with pytest.raises(DistillError, match="not a distilled student"):
        Distiller(config(teacher, squares, tmp_path / "c", method="guidance", init=str(teacher)), quiet=True)
    with pytest.raises(DistillError, match="for the guidance method"):
        config(teacher, squares, tmp_path / "c", sigma_sampling="grid")


def _gaussian_denoiser(mu: float, s: float):
    """The exact E[x0 | x] for x0 ~ N(mu, s²) per coordinate and x = x0 + σ·z."""
    return lambda x, sigma: (mu * sigma.view(-1, 1) ** 2 + s * s * x) / (s * s + sigma.view(-1, 1) ** 2)


def test_ode_segment_is_dpmpp_2m_and_solves_the_gaussian_ode():
    """The teacher's fine solve of one student interval: on a whole grid (ending at 0) it is the registered
    dpmpp_2m sampler; on a piece ending at σ > 0 it converges to the exact probability-flow ODE solution
    at second order; the trajectory grid nests in the teacher's own log-SNR grid."""
    from unnoise import schedules
    from unnoise.distill.loop import ode_segment, trajectory_segments
    from unnoise.sampling.dpm_solver import dpmpp_2m

    mu, s = 0.3, 0.5
    den = _gaussian_denoiser(mu, s)
    schedule = schedules.get("linear", 1000)
    grid = schedule.sigmas(16, "log_snr").tolist()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * grid[0]
    torch.testing.assert_close(ode_segment(den, x, grid), dpmpp_2m(den, x, grid), rtol=1e-12, atol=1e-12)
    hi, lo = 6.0, 0.25
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * hi
    exact = mu + (x - mu) * ((s * s + lo * lo) / (s * s + hi * hi)) ** 0.5
    err = [float((ode_segment(den, x, np.geomspace(hi, lo, m + 1).tolist()) - exact).abs().max()) for m in (4, 8, 16)]
    assert err[0] / err[1] > 3.5 and err[1] / err[2] > 3.5, err  # halving h quarters the error (measured ≈ 8, 6)
    per_sample = torch.tensor([[hi, 2.0, 1.0, lo], [2 * hi, 3.0, 0.5, 0.0], [hi, 1.5, 0.7, 0.1]], dtype=torch.float64)
    together = ode_segment(den, x[:3], per_sample)  # a grid per sample (one ends at 0): one call per step for all
    for b in range(3):
        torch.testing.assert_close(together[b:b + 1], ode_segment(den, x[b:b + 1], per_sample[b].tolist()),
                                   rtol=1e-12, atol=1e-12)
    segments = trajectory_segments(schedule, 4, "log_snr", 20)  # ⌈20/4⌉ = 5 teacher steps per interval
    assert [len(seg) - 1 for seg in segments] == [5, 5, 5, 1]  # the last interval is σ_min → 0: one x̂0
    coarse = schedule.sigmas(4, "log_snr").tolist()
    assert [seg[0] for seg in segments] == coarse[:-1] and [seg[-1] for seg in segments] == coarse[1:]
    flat = [segments[0][0]] + [p for seg in segments for p in seg[1:]]
    np.testing.assert_allclose(flat, schedule.sigmas(16, "log_snr").numpy(), rtol=1e-12)
    trailing = trajectory_segments(schedule, 4, "log_snr_trailing", 20)  # four real jumps, the last one to 0
    assert [len(seg) - 1 for seg in trailing] == [5, 5, 5, 5]
    assert [seg[0] for seg in trailing] == schedule.sigmas(4, "log_snr_trailing").tolist()[:-1]
    assert trailing[3][-2] == pytest.approx(schedule.sigma_min) and trailing[3][-1] == 0.0  # teacher: to σ_min, then x̂0
    one = trajectory_segments(schedule, 1, "karras", 4)  # one interval σ_max → 0: log-uniform to σ_min, then x̂0
    assert [len(seg) - 1 for seg in one] == [4] and one[0][-2] == pytest.approx(schedule.sigma_min)


def test_trajectory_distillation_follows_the_teachers_fine_solve(teacher, squares, tmp_path):
    """method="trajectory": the student's K-step DDIM samples move towards the guided teacher's fine solve
    (⌈N/K⌉ DPM-Solver++(2M) steps per interval) from the same start noise, image for image; it exports
    with the ddim sampler at K steps."""
    from unnoise.generation import generate

    d = Distiller(config(teacher, squares, tmp_path / "tr", method="trajectory", steps=2, ode_steps=8, max_steps=120,
                         batch_size=16, warmup_steps=5, checkpoint_every=120, log_every=40, lr=1e-3, ema_decay=0.9),
                  quiet=True)
    assert d.grid_steps() == 2 and [len(seg) - 1 for seg in d.method.segments] == [4, 1]
    d.shape = (3, 16, 16)
    prompts, seeds = list(COLOURS), [s for _ in COLOURS for s in range(6)]
    rows = [p for p in prompts for _ in range(6)]
    cond, uncond = d.encoder.encode(rows), d.encoder.encode([""] * len(rows))
    fine = [d.method.segments[0][0]] + [p for seg in d.method.segments for p in seg[1:]]  # the teacher's grid the student follows
    reference = generate(d.teacher, d.schedule, d.prediction_type, cond, uncond, shape=d.shape, seeds=seeds,
                         guidance=3.0, sampler="dpmpp_2m", sigmas=torch.tensor(fine, dtype=torch.float64))
    before = errors(student_samples(d, d.student, "ddim", 2, cond, seeds, 3.0), reference, 2)["path"]
    model_dir = d.run()
    after = errors(student_samples(d, d.ema_student(), "ddim", 2, cond, seeds, 3.0), reference, 2)["path"]
    assert after < 0.7 * before, (before, after)
    meta = json.loads((model_dir / "unnoise.json").read_text())
    assert meta["defaults"]["sampler"] == "ddim" and meta["defaults"]["steps"] == 2
    assert meta["training"]["method"] == "trajectory"


def test_last_target_x0_teaches_the_last_call_the_teachers_own_x0(teacher, squares, tmp_path):
    """last_target="x0": the interval that ends at 0 is one teacher call (its guided x̂0 at the student's last
    σ, a final denoising step) instead of the fine solve; the other intervals keep theirs."""
    d = Distiller(config(teacher, squares, tmp_path / "x0", method="trajectory", steps=2, ode_steps=8,
                         spacing="log_snr_trailing", last_target="x0"), quiet=True)
    coarse = d.schedule.sigmas(2, "log_snr_trailing").tolist()
    assert [len(seg) - 1 for seg in d.method.segments] == [4, 1] and d.method.segments[1] == [coarse[1], 0.0]
    assert coarse[1] > 10 * d.schedule.sigma_min  # never a call at σ_min
    x0, cond, uncond, w, n, noise = d.draw(0, 16)
    x, sigma, target = d.method.fresh(x0, cond, uncond, w, n, noise)
    last = n == 1
    assert last.any() and (~last).any()
    pick = lambda c: {k: v[last] for k, v in c.items()}  # noqa: E731
    direct = d.guided_teacher(x[last], sigma[last], pick(cond), pick(uncond), w[last])
    torch.testing.assert_close(target[last], direct, rtol=1e-5, atol=1e-5)
    ode = Distiller(config(teacher, squares, tmp_path / "ode", method="trajectory", steps=2, ode_steps=8,
                           spacing="log_snr_trailing"), quiet=True)
    assert [len(seg) - 1 for seg in ode.method.segments] == [4, 4]  # the default: to σ_min in 3 steps, then x̂0
    _, _, target_ode = ode.method.fresh(x0, cond, uncond, w, n, noise)
    torch.testing.assert_close(target_ode[~last], target[~last], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(target_ode[last], target[last], atol=1e-4)
    with pytest.raises(DistillError, match="last_target must be ode or x0"):
        config(teacher, squares, tmp_path / "c", method="trajectory", last_target="x1")


def test_a_ddim_student_teaches_a_student_of_fewer_calls_its_own_painting(teacher, squares, tmp_path):
    """A trajectory student (ddim, K' calls) as the teacher: the new student's target for an interval is the
    teacher's own K'-step painting from the same state (its DDIM calls, w as its input, one pass), bit for bit
    what `generate` paints; the new student starts from the teacher's weights and exports at its K calls."""
    from functools import partial

    from unnoise.distill.loop import ode_segment
    from unnoise.sampling import seeded_generators

    two = distill(config(teacher, squares, tmp_path / "two", method="trajectory", steps=2, ode_steps=4,
                         spacing="log_snr_trailing", max_steps=3), quiet=True)
    d = Distiller(config(two, squares, tmp_path / "one", method="trajectory", steps=1, max_steps=3), quiet=True)
    grid = d.schedule.sigmas(2, "log_snr_trailing").tolist()
    assert d.student_teacher and d.cfg.spacing == "log_snr_trailing" and d.method.segments == [grid]
    assert all(torch.equal(v, d.student.state_dict()[k]) for k, v in d.teacher.state_dict().items())
    d.shape = (3, 16, 16)
    seeds, rows = [0, 1, 2, 3], ["a red square", "a blue square"] * 2
    cond = d.encoder.encode(rows)
    w = torch.tensor([1.0, 2.5, 4.0, 6.0])
    painted = torch.cat([student_samples(d, d.teacher, "ddim", 2, {k: v[i:i + 1] for k, v in cond.items()}, [s],
                                         float(w[i])) for i, s in enumerate(seeds)])
    x = torch.stack([torch.randn(d.shape, generator=g) for g in seeded_generators(seeds)]) * grid[0]
    calls = []
    teacher_d = d.teacher_d
    d.teacher_d = lambda x, *a: calls.append(x.shape[0]) or teacher_d(x, *a)
    solved = ode_segment(partial(d.guided_teacher, cond=cond, uncond=None, w=w), x, grid, order=1)
    assert calls == [4, 4]  # one pass of B per call: no CFG batch
    torch.testing.assert_close(solved, painted, rtol=0, atol=1e-6)
    x0, cond, uncond, w, n, noise = d.draw(0, 4)
    _, sigma, target = d.method.fresh(x0, cond, uncond, w, n, noise)
    assert torch.equal(sigma, torch.full((4,), grid[0], dtype=torch.float32)) and target.abs().max() <= 1.0
    meta = json.loads((d.run() / "unnoise.json").read_text())
    assert meta["defaults"] == {**meta["defaults"], "steps": 1, "sampler": "ddim", "spacing": "log_snr_trailing"}
    assert meta["training"]["distilled_from"] == str(two)
    chain = json.loads((two / "unnoise.json").read_text())["training"]["wall_s_total"]  # the teacher's distillation counts
    assert meta["training"]["wall_s_total"] == pytest.approx(meta["training"]["wall_s"] + chain, abs=0.11)
    for kw, message in [(dict(method="guidance"), "can teach only --method trajectory"),
                        (dict(steps=2), "already paints in 2 calls"),
                        (dict(spacing="log_snr"), "keeps that spacing"),
                        (dict(last_target="x0"), "its own last call"),
                        (dict(guidance_max=8.0), "leave the range")]:
        with pytest.raises(DistillError, match=message):
            Distiller(config(two, squares, tmp_path / "bad", **{"method": "trajectory", "steps": 1, **kw}), quiet=True)


def test_weighting_scales_each_samples_error(teacher, squares, tmp_path):
    """truncated_snr scales a sample's x̂0 error by max(1/σ, 1), sqrt_truncated_snr by its root, uniform by
    1; the loss is the same where σ ≥ 1."""
    sigma, like = torch.tensor([0.01, 0.25, 1.0, 80.0]), torch.zeros(4, 3, 16, 16)
    snr = Distiller(config(teacher, squares, tmp_path / "a", method="guidance"), quiet=True)
    uni = Distiller(config(teacher, squares, tmp_path / "b", method="guidance", weighting="uniform"), quiet=True)
    assert snr.weight(sigma, like).flatten().tolist() == pytest.approx([100.0, 4.0, 1.0, 1.0])
    assert uni.weight(sigma, like).flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    half = Distiller(config(teacher, squares, tmp_path / "h", method="guidance", weighting="sqrt_truncated_snr"),
                     quiet=True)
    assert half.weight(sigma, like).flatten().tolist() == pytest.approx([10.0, 2.0, 1.0, 1.0])
    assert snr.weight(sigma, like).shape == (4, 1, 1, 1)
    big = torch.tensor([1.5, 3.0, 80.0, 150.0])  # σ ≥ 1: every weighting gives the error weight 1
    assert all(d.weight(big, like).flatten().tolist() == [1.0] * 4 for d in (snr, uni, half))
    with pytest.raises(DistillError, match="weighting must be one of"):
        config(teacher, squares, tmp_path / "c", weighting="snr")
    # trajectory: --interval-weights multiplies each student interval's samples by its own factor
    tr = Distiller(config(teacher, squares, tmp_path / "t", method="trajectory", weighting="uniform",
                          interval_weights=(1.0, 50.0)), quiet=True)
    x, sigma, *_, scale = tr.method.teacher_batch()
    last = sigma == tr.student_sigmas[-1].float()
    assert last.any() and (~last).any()
    assert scale.flatten().tolist() == [50.0 if v else 1.0 for v in last.tolist()]
    for bad, message in [(dict(interval_weights=(1.0, 2.0, 3.0)), "interval_weights must be 2 positive"),
                         (dict(interval_weights=(1.0, 0.0)), "interval_weights must be 2 positive"),
                         (dict(method="guidance", interval_weights=(1.0, 2.0)), "for the trajectory method")]:
        with pytest.raises(DistillError, match=message):
            config(teacher, squares, tmp_path / "c", **{"method": "trajectory", **bad})


def test_reuse_serves_each_teacher_target_for_r_steps_and_resumes_exactly(teacher, squares, tmp_path):
    """reuse=R: the batch of step n is the fresh batch_size/R samples of steps n − R + 1 … n, so each teacher
    target is learnt R times; a resume recomputes the targets of the steps before it and continues bit-exactly."""
    kw = dict(method="trajectory", steps=2, ode_steps=4, reuse=2)
    d = Distiller(config(teacher, squares, tmp_path / "a", **kw), quiet=True)
    calls = []
    teacher_d = d.teacher_d
    d.teacher_d = lambda x, *a: calls.append(x.shape[0]) or teacher_d(x, *a)
    first = d.method.teacher_batch()
    assert first[0].shape[0] == 4  # step 0: only its own 4 fresh samples
    n0 = sum(calls)
    d.train_step()
    assert sum(calls) == n0  # step 0's targets are computed once
    second = d.method.teacher_batch()
    assert 0 < sum(calls) - n0 <= 2 * 2 * 4  # step 1: its 4 fresh samples only (≤ 2 calls an interval, 2 passes)
    tensors = (0, 1, 3, 4)  # x, σ, w, target
    assert second[0].shape[0] == 8 and all(torch.equal(first[i], second[i][:4]) for i in tensors)
    fresh = Distiller(config(teacher, squares, tmp_path / "b", **kw), quiet=True)
    fresh.step = 1  # as after a resume: step 0's targets are recomputed
    again = fresh.method.teacher_batch()
    assert all(torch.equal(again[i], second[i]) for i in tensors)

    assert_resume_is_exact(teacher, squares, tmp_path, **kw)
    with pytest.raises(DistillError, match="reuse is for the trajectory and guidance methods"):
        config(teacher, squares, tmp_path / "c", reuse=2)


def test_student_states_start_intervals_where_the_students_own_painting_is(teacher, squares, tmp_path):
    """student_states=p: the first ⌈p·B⌉ fresh samples of interval i start from the student's own i DDIM steps
    (from x0 + σ_0·z, its x̂0 clamped, w as its input) — what it paints — the rest from noised data; the
    target is still the teacher's solve from that state; the window of such targets is checkpointed, so a
    resume with reuse stays exact."""
    from functools import partial

    from unnoise.distill.loop import ode_segment

    kw = dict(method="trajectory", steps=4, ode_steps=8, spacing="log_snr_trailing")
    d = Distiller(config(teacher, squares, tmp_path / "s", student_states=0.5, **kw), quiet=True)
    x0, cond, uncond, w, n, noise = d.draw(0, 16)
    n = torch.tensor([3, 2, 1, 0] * 4)  # every interval in both halves
    x, sigma, target = d.method.fresh(x0, cond, uncond, w, n, noise)
    coarse = [seg[0] for seg in d.method.segments]
    student = lambda x, s, c, w: d.student_d(x, s, {**c, "guidance": w}).clamp(-1, 1)  # noqa: E731
    with torch.no_grad():
        for i in range(8):  # the student's half: its own DDIM painting down to σ_{n_i}
            c = {k: v[i:i + 1] for k, v in cond.items()}
            own = ode_segment(partial(student, c=c, w=w[i:i + 1]), x0[i:i + 1] + coarse[0] * noise[i:i + 1],
                              coarse[:int(n[i]) + 1], order=1) if n[i] else x0[i:i + 1] + coarse[0] * noise[i:i + 1]
            torch.testing.assert_close(x[i:i + 1], own, rtol=0, atol=1e-5)
    data = x0 + sigma.view(-1, 1, 1, 1) * noise
    assert torch.equal(x[8:], data[8:]) and torch.equal(x[3], data[3]) and not torch.allclose(x[:3], data[:3])
    plain = Distiller(config(teacher, squares, tmp_path / "p", **kw), quiet=True)
    with torch.no_grad():
        _, _, plain_target = plain.method.fresh(x0, cond, uncond, w, n, noise)
    torch.testing.assert_close(target[8:], plain_target[8:], rtol=1e-5, atol=1e-5)  # same teacher, same states

    assert_resume_is_exact(teacher, squares, tmp_path, student_states=0.5, reuse=2, **kw)
    assert (checkpoint.latest_path(tmp_path / "split") / "extra.safetensors").is_file()
    with pytest.raises(DistillError, match="student_states is for the trajectory method"):
        config(teacher, squares, tmp_path / "c", student_states=0.5)
    with pytest.raises(DistillError, match="student_states must be a share from 0 to 1"):
        config(teacher, squares, tmp_path / "c", method="trajectory", student_states=1.5)


def test_a_student_twice_as_wide_starts_as_the_teacher_learns_and_goes_on(teacher, squares, tmp_path):
    """student_width=2: the student is the teacher's network widened by Net2Net duplication, the teacher's own
    function at step 0; it distils, resumes exactly, paints through Painter, and --init goes on from it (a
    narrow run is told to pass --student-width 2)."""
    from unnoise.models.widen import widened_config

    kw = dict(method="trajectory", steps=2, ode_steps=4, student_width=2)
    d = Distiller(config(teacher, squares, tmp_path / "w", max_steps=4, **kw), quiet=True)
    assert d.student.config == widened_config(d.teacher.config.replace(guidance_embedding=True))
    assert d.target.config == d.student.config
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 700.0])
    cond = dict(d.encoder.encode(list(COLOURS)))
    with torch.no_grad():
        a, b = d.teacher(x, t, cond), d.student(x, t, {**cond, "guidance": torch.tensor([3.0, 5.0])})
    assert (a - b).abs().max() < 1e-4 * (1 + a.abs().max())
    model_dir = d.run()
    with torch.no_grad():
        assert (a - d.student(x, t, {**cond, "guidance": torch.tensor([3.0, 5.0])})).abs().max() > 1e-3  # it learnt
    painter = Painter.from_pretrained(model_dir)
    assert painter.model.config == d.student.config
    assert len(painter("a red square", num_images=1, seed=0)) == 1

    assert_resume_is_exact(teacher, squares, tmp_path, **kw)
    going_on = Distiller(config(teacher, squares, tmp_path / "on", init=str(model_dir), **kw), quiet=True)
    start = load_file(str(model_dir / "model.safetensors"))
    assert all(torch.equal(v.float(), going_on.student.state_dict()[k]) for k, v in start.items())
    with pytest.raises(DistillError, match="pass --student-width 2"):
        Distiller(config(teacher, squares, tmp_path / "n", init=str(model_dir), method="trajectory", steps=2,
                         ode_steps=4), quiet=True)
    with pytest.raises(DistillError, match="student_width must be 1"):
        config(teacher, squares, tmp_path / "c", student_width=3)


def test_progressive_rounds_halve_the_steps(teacher, squares, tmp_path):
    d = Distiller(config(teacher, squares, tmp_path / "pd", method="progressive", steps=1, ode_steps=4, max_steps=4),
                  quiet=True)
    assert d.rounds == 2 and d.grid_steps() == 2
    d.run()
    assert d.grid_steps() == 1 and (tmp_path / "pd" / "round-teacher.safetensors").exists()


def test_progressive_student_paints_on_the_nested_grid_it_trained_on(teacher, squares, tmp_path):
    d = Distiller(config(teacher, squares, tmp_path / "pd", method="progressive", steps=4, ode_steps=32, max_steps=3,
                         spacing="log_snr", checkpoint_every=3), quiet=True)
    nested = d.sigmas[::8]  # the last round's grid: every 8th point of the 32-step teacher grid
    torch.testing.assert_close(nested, torch.tensor([157.4, 13.0, 1.07, 0.089, 0.0], dtype=torch.float64), rtol=5e-3, atol=0)
    model_dir = d.run()
    defaults = json.loads((model_dir / "unnoise.json").read_text())["defaults"]
    assert defaults["steps"] == 4 and defaults["spacing"].startswith("log_snr@0.088")
    seen = []
    Painter.from_pretrained(model_dir)("a red square", seed=1, callback=lambda info: seen.append(info.sigma))
    torch.testing.assert_close(torch.tensor(seen, dtype=torch.float64), nested[:-1], rtol=1e-6, atol=0)


def test_progressive_spacing_keeps_a_nesting_spacing_and_refuses_the_others():
    linear = schedules.get("linear")
    for spacing in ("log_snr_trailing", "trailing"):
        assert progressive_spacing(linear, spacing, 32, 4) == spacing
    assert progressive_spacing(linear, "karras", 32, 1) == "karras"  # one step nests in anything: [σ_max, 0]
    stored = progressive_spacing(linear, "log_snr@0.5", 16, 2)
    torch.testing.assert_close(linear.sigmas(2, stored), linear.sigmas(16, "log_snr@0.5")[::8], rtol=1e-12, atol=0)
    for spacing in ("karras", "leading", "linspace"):
        with pytest.raises(DistillError, match=f"--spacing {spacing}: progressive") as err:
            progressive_spacing(linear, spacing, 32, 4)
        assert "\n" not in str(err.value)


def test_guidance_embedding_is_optional_and_starts_as_the_teacher():
    plain = UNetConfig.tiny()
    assert "guidance_embedding" not in plain.to_dict()  # old config.json files stay as they were
    torch.manual_seed(0)
    teacher = UNet(plain)
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.05)
    student = UNet(plain.replace(guidance_embedding=True))
    student.load_state_dict(teacher.state_dict(), strict=False)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 700.0])
    assert torch.equal(student(x, t, {"guidance": torch.tensor([2.0, 7.0])}), teacher(x, t))
    with pytest.raises(UNetInputError, match="no guidance embedding"):
        teacher(x, t, {"guidance": torch.tensor([2.0, 7.0])})
    with pytest.raises(UNetInputError, match="guidance"):
        student(x, t, {"guidance": torch.ones(3)})


def test_cli_distills_and_resumes(teacher, squares, tmp_path, cli):
    out = tmp_path / "run"
    common = ["distill", "--teacher", str(teacher), "--data", str(squares), "--out", str(out), "--steps", "1",
              "--batch-size", "4", "--checkpoint-every", "2", "--threads", "1"]
    code, stdout, err = cli([*common, "--max-steps", "2"])
    assert code == 0, err
    assert "done: student in" in stdout and (out / "model" / "unnoise.json").exists()
    code, _, err = cli([*common, "--max-steps", "4", "--resume"])
    assert code == 0, err
    assert checkpoint.load(checkpoint.latest_path(out)).step == 4
    code, _, err = cli([*common, "--max-steps", "4"])  # a complete checkpoint makes a run: a fresh start is refused
    assert code == 2 and "already holds a run" in err
    code, stdout, _ = cli([*common, "--dry-run"])
    assert code == 0 and json.loads(stdout)["spacing"] == "log_snr"


@pytest.mark.parametrize("extra, message", [
    (["--steps", "3"], "steps must be one of 1, 2, 4"),
    (["--guidance-min", "5", "--guidance-max", "2"], "exceeds"),
    (["--max-minutes", "0"], "max_minutes"),
    (["--resume"], "nothing to resume"),
    (["--method", "progressive"], "--method must be consistency, guidance or trajectory"),
    (["--sigma-sampling", "grid"], "for the guidance method"),
    (["--weighting", "snr"], "weighting must be one of"),
    (["--reuse", "2"], "reuse is for the trajectory and guidance methods"),
    (["--last-target", "x0"], "last_target is for the trajectory method"),
    (["--method", "trajectory", "--reuse", "3"], "must be a multiple of reuse"),
    (["--method", "trajectory", "--interval-weights", "1,x"], "--interval-weights must be comma-separated numbers"),
    (["--student-states", "0.5"], "student_states is for the trajectory method"),
    (["--student-width", "4"], "student_width must be 1"),
    (["--method", "guidance", "--init", "{tmp}/nothing"], "--init"),
])
def test_cli_bad_input_is_one_line(teacher, tmp_path, extra, message, cli):
    extra = [a.format(tmp=tmp_path) for a in extra]
    code, _, err = cli(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "r"), *extra])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and message in err, err


def test_cli_unknown_teacher(teacher, squares, tmp_path, cli):
    code, _, err = cli(["distill", "--teacher", "flowers", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown model 'flowers'" in err and err.count("\n") == 1


def test_export_of_a_distill_run_bundles_the_student_with_its_card(teacher, squares, tmp_path, cli):
    """`unnoise export RUN` on a distillation run: the run's student, the teacher's vocabulary, and a card
    whose `unnoise distill` command rebuilds the run's config (checked through --dry-run)."""
    import shlex
    import shutil

    from unnoise.conditioning.text import TextEncoder
    from unnoise.conditioning.vocabulary import FILE, Vocabulary

    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    Vocabulary.build(list(COLOURS), TextEncoder.load()).save(own)
    run = tmp_path / "run"
    code, _, err = cli(["distill", "--teacher", str(own), "--data", str(squares), "--out", str(run), "--steps", "2",
                        "--method", "trajectory", "--reuse", "2", "--batch-size", "4", "--max-steps", "2",
                        "--lr-decay", "cosine", "--ema-decay", "0.9", "--ode-steps", "4", "--threads", "1"])
    assert code == 0, err
    assert (run / "model" / FILE).read_bytes() == (own / FILE).read_bytes()  # the student reads prompts as its teacher
    code, stdout, err = cli(["export", str(run), "--out", str(tmp_path / "fast"), "--card", "squares-fast"])
    assert code == 0 and "exported the student" in stdout, err
    fast = tmp_path / "fast"
    assert (fast / "model.safetensors").read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    assert (fast / FILE).read_bytes() == (own / FILE).read_bytes() and (fast / "loss.png").exists()
    info = json.loads((fast / "unnoise.json").read_text())
    assert info["training"]["distilled_from"] == str(own) and info["training"]["steps"] == 2
    card = (fast / "MODEL.md").read_text()
    assert "# `squares-fast`" in card and "A 2-call student" in card and "machine:" in card and "compute time" in card
    assert "--model squares-fast` uses ddim, 2 steps" in card and "copied in by the export" in card
    (command,) = [line for line in card.splitlines() if line.startswith("unnoise distill ")]
    args = shlex.split(command.split("   #")[0])[1:]
    assert "--lr-decay" in args and "--ema-decay" in args and "--max-minutes" not in args  # non-defaults only
    args[args.index("--out") + 1] = str(tmp_path / "again")
    code, stdout, err = cli([*args, "--dry-run"])
    assert code == 0, err
    rebuilt, saved = json.loads(stdout), json.loads((run / "config.json").read_text())
    assert {**rebuilt, "out": None} == {**saved, "out": None}
    assert Painter.from_pretrained(fast)("a red square", seed=0)[0].size == (16, 16)
    code, _, err = cli(["export", str(run), "--out", str(tmp_path / "x"), "--steps", "4"])
    assert code == 2 and "distilled for" in err and err.count("\n") == 1
