"""The in-browser lab's pure JavaScript engine (src/unnoise/lab/static/engine/) against the Python it mirrors.

Each test writes a fixture computed by the Python side, runs a node harness (tests/js/*.mjs) on it and
compares the harness's JSON answer here.  Skipped, with the reason, where `node` is not installed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from unnoise import schedules

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js ≥ 20) is not installed")
HARNESS = Path(__file__).parent / "js"


def run_node(harness: str, fixture, tmp_path: Path):
    """Run tests/js/<harness>.mjs on the fixture (written as JSON) and return its JSON stdout."""
    path = tmp_path / f"{harness}.json"
    path.write_text(json.dumps(fixture, allow_nan=False))
    done = subprocess.run([NODE, str(HARNESS / f"{harness}.mjs"), str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def max_rel(ours, theirs) -> float:
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(theirs, dtype=torch.float64)
    assert a.shape == b.shape
    return float(((a - b).abs() / b.abs().clamp(min=1e-300)).max()) if a.numel() else 0.0


# ---------------------------------------------------------------------------------------------------------
# schedules.js


SCHEDULES = [*schedules.available()]
STEPS = [1, 2, 4, 20, 50, 1000]
SPACINGS = [*schedules.SPACINGS, "log_snr@0.5", "log_snr@0.02"]


def test_schedules_match_python(tmp_path):
    probe = [0.0, 1e-3, 0.0064, 0.01, 0.3, 1.0, 1.7, 80.0, 157.0, 1e5]
    cases = [{"name": n, "numSteps": 1000, "steps": STEPS, "spacing": SPACINGS, "probe": probe} for n in SCHEDULES]
    cases.append({"name": "cosine", "numSteps": 37, "steps": [1, 2, 5, 37], "spacing": SPACINGS, "probe": probe})
    worst = {"alphas_cumprod": 0.0, "sigmas": 0.0, "t": 0.0}
    for case, got in zip(cases, run_node("schedules", {"cases": cases}, tmp_path)):
        s = schedules.get(case["name"], case["numSteps"])
        worst["alphas_cumprod"] = max(worst["alphas_cumprod"], max_rel(got["alphasCumprod"], s.alphas_cumprod))
        t = s.sigma_to_t(torch.tensor(probe, dtype=torch.float64))
        worst["t"] = max(worst["t"], float((torch.tensor(got["t"], dtype=torch.float64) - t).abs().max()))
        for steps in case["steps"]:
            for spacing in case["spacing"]:
                js = got["sigmas"][str(steps)][spacing]
                try:
                    py = s.sigmas(steps, spacing)
                except schedules.ScheduleError:
                    assert isinstance(js, dict), (case["name"], steps, spacing, "Python refuses, JS does not")
                    continue
                assert not isinstance(js, dict), (case["name"], steps, spacing, js)
                assert js[-1] == 0.0
                worst["sigmas"] = max(worst["sigmas"], max_rel(js[:-1], py[:-1]))
    print("schedules.js max relative differences:", worst)
    assert worst["alphas_cumprod"] < 1e-12 and worst["sigmas"] < 1e-6 and worst["t"] < 1e-9, worst


# ---------------------------------------------------------------------------------------------------------
# samplers.js: every sampler, every step, on the same analytic denoiser as Python


IMAGE = (3, 4, 4)  # C, H, W of the toy images; a batch of 2 whose noise comes from seeds 11 and 12


def _toy_data():
    g = torch.Generator().manual_seed(5)
    mu = torch.rand(IMAGE, generator=g, dtype=torch.float64) * 1.6 - 0.8
    s2 = torch.rand(IMAGE, generator=g, dtype=torch.float64) * 0.5 + 0.05
    return mu, s2


def _analytic(mu, s2, calls):
    """x̂0 = (s²·x + σ²·μ)/(s² + σ²) + 0.05·tanh(x)·σ/(1 + σ²), in float64, returned in x's dtype (= tests/js)."""
    def denoiser(x, sigma):
        calls.append(float(sigma[0]))
        x64 = x.to(torch.float64)
        s = sigma.to(torch.float64).view(-1, 1, 1, 1)
        v = s * s
        out = (s2 * x64 + v * mu) / (s2 + v) + 0.05 * torch.tanh(x64) * s / (1 + v)
        return out.to(x.dtype)
    return denoiser


def _draws(x: torch.Tensor, count: int) -> list[list[float]]:
    """The first `count` fresh-noise draws a sampler makes with generators seeded 11 and 12 (core.randn_like)."""
    from unnoise.sampling.core import randn_like

    gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
    return [randn_like(x, gens).flatten().tolist() for _ in range(count)]


SAMPLER_RUNS = [(name, {}) for name in ("ddim", "ddpm", "euler", "euler_ancestral", "heun", "dpmpp_2m",
                                         "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc", "consistency")] + [
    ("euler", {"s_churn": 1.5}), ("heun", {"s_churn": 1.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("ddim", {"eta": 0.5}), ("euler_ancestral", {"eta": 1.7}), ("dpmpp_2m_sde", {"eta": 0.5}),
    ("dpmpp_3m_sde", {"order3_max_h": math.inf}), ("unipc", {"order": 3}), ("unipc", {"variant": "bh1"}),
    ("unipc", {"variant": "bh2", "order": 3}), ("unipc", {"corrector": False}),
]


def _sampler_runs():
    from unnoise.sampling import SAMPLERS

    mu, s2 = _toy_data()
    sched = schedules.get("linear")
    runs, expected = [], []
    for dtype in (torch.float64, torch.float32):
        grid = [(n, sp) for n in (1, 2, 5, 20) for sp in ("log_snr", "karras", "trailing", "log_snr@0.5")]
        if dtype == torch.float32:
            grid = [(5, "log_snr_trailing"), (20, "log_snr")]
        for (name, options), (steps, spacing) in [(r, g) for r in SAMPLER_RUNS for g in grid]:
            sigmas = sched.sigmas(steps, spacing)
            x = torch.randn((2, *IMAGE), generator=torch.Generator().manual_seed(steps), dtype=dtype) * float(sigmas[0])
            calls, seen = [], []
            gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
            final = SAMPLERS[name](_analytic(mu, s2, calls), x, sigmas, generator=gens, callback=seen.append, **options)
            runs.append({"sampler": name, "options": options, "sigmas": sigmas.tolist(), "x": x.flatten().tolist(),
                         "dtype": str(dtype).removeprefix("torch."), "noises": _draws(x, 2 * steps)})
            expected.append((final, seen, len(calls)))
    return {"mu": mu.flatten().tolist(), "s2": s2.flatten().tolist(), "runs": runs}, expected


def test_samplers_match_python_at_every_step(tmp_path):
    from unnoise.sampling import SAMPLERS

    fixture, expected = _sampler_runs()
    fixture["runs"] = [{**r, "options": {k: (1e308 if v == math.inf else v) for k, v in r["options"].items()}}
                       for r in fixture["runs"]]
    worst = {"float64": 0.0, "float32": 0.0, "float32 final": 0.0}
    for run, got, (final, seen, calls) in zip(fixture["runs"], run_node("samplers", fixture, tmp_path), expected):
        what = (run["sampler"], run["options"], len(run["sigmas"]) - 1, run["dtype"])
        assert got["calls"] == calls == SAMPLERS[run["sampler"]].nfe(len(run["sigmas"]) - 1), what
        assert got["kind"] == ("Float32Array" if run["dtype"] == "float32" else "Float64Array"), what
        assert len(got["steps"]) == len(seen), what
        for js, py in zip(got["steps"], seen):
            assert (js["index"], js["total"]) == (py.i, py.steps), what
            assert js["sigma"] == pytest.approx(py.sigma, rel=1e-12) and js["sigmaNext"] == py.sigma_next, what
            scale = max(1.0, py.sigma)
            for key in ("x", "denoised"):
                diff = float((torch.tensor(js[key], dtype=torch.float64) - py[key].flatten().double()).abs().max())
                worst[run["dtype"]] = max(worst[run["dtype"]], diff / scale)
        diff = float((torch.tensor(got["final"], dtype=torch.float64) - final.flatten().double()).abs().max())
        worst[run["dtype"]] = max(worst[run["dtype"]], diff)
        if run["dtype"] == "float32":
            worst["float32 final"] = max(worst["float32 final"], diff)
    print(f"samplers.js max |Δx|/max(1, σ) over {len(expected)} runs, every step:", worst)
    assert worst["float64"] < 1e-10 and worst["float32"] < 1e-5 and worst["float32 final"] < 1e-5, worst


# ---------------------------------------------------------------------------------------------------------
# denoiser.js + guidance.js around a fake network written in both languages


def _fake_network(x_t, t, cond):
    """out = 0.6·tanh(x_t) + 0.001·t·cos(i) + c_n with c_n = mean(tokens_n) + 0.1·Σ mask_n + 0.3·pooled_n[0]
    (+ 0.05·guidance_n): a closed form of (x_t, t, cond), float32 out (= tests/js/guidance.mjs)."""
    n = x_t.shape[0]
    i = torch.arange(x_t[0].numel(), dtype=torch.float64).view(x_t.shape[1:])
    c = torch.zeros(n, dtype=torch.float64)
    if cond is not None:
        c = (cond["tokens"].double().reshape(n, -1).mean(1) + 0.1 * cond["mask"].double().sum(1)
             + 0.3 * cond["pooled"][:, 0].double())
        if "guidance" in cond:
            c = c + 0.05 * cond["guidance"].double()
    view = (n, 1, 1, 1)
    out = 0.6 * torch.tanh(x_t.double()) + 0.001 * t.double().view(view) * torch.cos(i) + c.view(view)
    return out.float()


def _condition(rows: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[:, length - 1] = False
    return {"tokens": torch.randn(rows, length, 4, generator=g) * mask[..., None], "mask": mask,
            "pooled": torch.randn(rows, 4, generator=g)}


def _as_json(cond):
    if cond is None:
        return None
    return {k: {"data": v.flatten().tolist(), "dims": list(v.shape), "bool": v.dtype == torch.bool} for k, v in cond.items()}


def _guidance_cases():
    cond, uncond, short, one = _condition(2, 5, 1), _condition(2, 5, 2), _condition(1, 3, 3), _condition(1, 5, 4)
    conditions = [(cond, uncond), (cond, short), (one, uncond), (None, None)]
    base = {"schedule": "linear", "predictionType": "epsilon", "scale": 3.0, "takesGuidance": False, "rescale": 0.0,
            "rescaleSpace": "x0", "clip": None}
    variants = [{"scale": 1.0}, {"scale": 0.0}, {}, {"scale": [1.5, 4.0]}, {"clip": 1.0},
                *({"rescale": 0.7, "rescaleSpace": sp} for sp in ("x0", "eps", "v")),
                {"takesGuidance": True}, {"takesGuidance": True, "scale": [2.0, 5.0]},
                {"predictionType": "v_prediction"}, {"predictionType": "sample"},
                {"schedule": "cosine+ztsnr", "predictionType": "v_prediction", "rescale": 0.5, "rescaleSpace": "v"}]
    for sigma in (0.0, 0.002, 0.5, 1.0, 14.6, 157.0, 4000.0, [0.3, 60.0]):
        for k, (c, u) in enumerate(conditions):
            for v in variants if k == 0 else variants[2:4]:
                if v.get("takesGuidance") and c is None:
                    continue
                yield {**base, **v, "sigma": sigma, "cond": c, "uncond": u}


def test_denoiser_and_guidance_match_python(tmp_path):
    from unnoise.conditioning.guidance import guided
    from unnoise.denoisers import DiscreteDenoiser

    x = torch.randn((2, *IMAGE), generator=torch.Generator().manual_seed(3)) * 2.0
    cases = list(_guidance_cases())
    fixture = {"imageSize": x[0].numel(), "x": x.flatten().tolist(),
               "cases": [{**c, "cond": _as_json(c["cond"]), "uncond": _as_json(c["uncond"])} for c in cases]}
    worst = 0.0
    for case, got in zip(cases, run_node("guidance", fixture, tmp_path)):
        denoiser = DiscreteDenoiser(_fake_network, schedules.get(case["schedule"]), case["predictionType"])
        g = guided(denoiser, case["cond"], case["uncond"], case["scale"], takes_guidance=case["takesGuidance"],
                   rescale=case["rescale"], rescale_space=case["rescaleSpace"])
        sigma = torch.tensor(case["sigma"], dtype=torch.float32).expand(2)
        raw = g(x, sigma).float()
        want = raw if case["clip"] is None else raw.clamp(-case["clip"], case["clip"])
        # relative to the size of x̂0 before clipping: ε prediction at σ = 4000 gives |x̂0| in the thousands,
        # where float32's ulp is 2e-4
        diff = float((torch.tensor(got) - want.flatten().double()).abs().max()) / max(1.0, float(raw.abs().max()))
        worst = max(worst, diff)
        assert diff < 1e-6, {k: v for k, v in case.items() if k not in ("cond", "uncond")}
    print(f"denoiser.js + guidance.js max |Δx̂0|/max(1, |x̂0|) over {len(cases)} cases:", worst)


# ---------------------------------------------------------------------------------------------------------
# random.js: torch.randn's CPU draws


def test_random_matches_torch_randn(tmp_path):
    from unnoise.sampling import seeded_generators
    from unnoise.sampling.core import randn_like

    seeds = [0, 1, 42, 123456789, 2**31 + 5, 2**40 + 7]
    single = [[s, n] for s in seeds for n in (1, 2, 7, 15, 16, 17, 31, 100, 3072, 6144)]
    sequences = [[5, [3, 5, 20, 1, 1, 16, 7, 3072]], [9, [17, 1, 33, 2, 15]]]
    painter = [[0, 1, 3, 32, 32, 2], [1234, 3, 3, 32, 32, 2], [7, 2, 1, 32, 32, 1]]
    got = run_node("random", {"single": [[str(s), n] for s, n in single], "sequences": sequences, "painter": painter},
                   tmp_path)
    worst = 0.0

    def check(js, want):
        nonlocal worst
        js = torch.tensor(js, dtype=torch.float32)
        assert js.shape == want.shape
        worst = max(worst, float((js - want).abs().max()))

    for (seed, n), js in zip(single, got["single"]):
        check(js, torch.randn(n, generator=torch.Generator().manual_seed(seed)))
    for (seed, sizes), js in zip(sequences, got["sequences"]):
        g = torch.Generator().manual_seed(seed)
        for n, draw in zip(sizes, js):
            check(draw, torch.randn(n, generator=g))
    for (seed, k, c, h, w, _), js in zip(painter, got["painter"]):
        gens = seeded_generators(range(seed, seed + k))  # the Painter's start noise, then a sampler's draws
        for draw in js:
            check(draw, randn_like(torch.empty(k, c, h, w), gens).flatten())
    print("random.js max |Δ| vs torch.randn:", worst)
    assert worst <= 1e-6


# ---------------------------------------------------------------------------------------------------------
# wordpiece.js: token for token against the Python tokenizer (itself checked against `tokenizers`)


def _prompts() -> list[str]:
    from test_wordpiece import TYPED, _random_prompts  # the Python tokenizer's own test prompts

    own = ["", "😀", "grinning face with big eyes 😃", "Crème Brûlée à la mode", "naïve café résumé", "東京タワー 北京",
           "ctrl\x01\x02\x7f\x9f chars", "lone \ud800 surrogate", "ΣΊΣΥΦΟΣ", "İIıi", "ﬀ ﬁ ﬂ ǅ Ⅻ ⓐ", "a\u0301\u0327b",
           "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙", "the digit " + "seven " * 80, "\u1c89\ua7cb\U00011383\u1acf punct\u1b4e x"]
    return TYPED + own + _random_prompts(600, seed=1)


# wordpiece.js pins Unicode 14 (Python 3.11's unicodedata), the tables on which the Python tokenizer and
# `tokenizers` are checked to agree; with another Python the Python side is no reference for non-ASCII text.
UNICODE_14 = __import__("unicodedata").unidata_version == "14.0.0"


def _vocab_path() -> str:
    from unnoise.conditioning.text import model_dir

    return str(model_dir() / "vocab.txt")


def test_wordpiece_matches_python_token_for_token(tmp_path):
    from unnoise.conditioning.text import MAX_LENGTH
    from unnoise.conditioning.wordpiece import WordPiece

    prompts = _prompts()
    ours = WordPiece.from_file(_vocab_path(), max_length=MAX_LENGTH)
    batch = ["a cat face", "", "kitten", "x " * 100, "東京"]
    got = run_node("wordpiece", {"vocab": _vocab_path(), "prompts": prompts, "batch": batch}, tmp_path)
    for prompt, ids in zip(prompts, got["one"]):
        if UNICODE_14 or prompt.isascii():  # wordpiece.js reads text with Unicode 14's tables, as tokenizers agrees
            assert ids == ours.encode(prompt), repr(prompt)
    want_ids, want_mask = ours.encode_batch(batch)
    assert got["batch"]["length"] == len(want_ids[0]) == MAX_LENGTH
    assert got["batch"]["ids"] == [i for row in want_ids for i in row]
    assert got["batch"]["mask"] == [m for row in want_mask for m in row]
    try:
        import tokenizers

        from unnoise.conditioning.text import original_model_dir

        theirs = tokenizers.Tokenizer.from_file(str(original_model_dir() / "tokenizer.json"))
    except Exception as e:  # tokenizers or the original model missing: the Python tokenizer is the reference
        if not UNICODE_14:
            pytest.skip(f"no tokenizers to compare with, and Python's Unicode is not 14 ({type(e).__name__}: {e})")
        print("wordpiece.js checked against the Python tokenizer only:", type(e).__name__, e)
        return
    theirs.enable_truncation(max_length=MAX_LENGTH)
    theirs.no_padding()
    valid = [(p, ids) for p, ids in zip(prompts, got["one"]) if p.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == p]
    same = [p for p, ids in valid if ids == theirs.encode(p).ids]  # tokenizers takes no lone surrogates
    print(f"wordpiece.js: {len(prompts)} prompts equal to the Python tokenizer, {len(same)} of {len(valid)} to tokenizers")
    assert len(same) == len(valid)


@pytest.mark.slow
@pytest.mark.skipif(not UNICODE_14, reason="wordpiece.js pins Unicode 14's tables; this Python has other ones")
def test_wordpiece_unicode_tables_match_python_everywhere(tmp_path):
    """Every code point: the category class the tokenizer asks for and normalize() of the character alone, so
    a JS engine with newer Unicode tables (node 20: Unicode 17; Python: 14) tokenizes as Python does."""
    import unicodedata

    from unnoise.conditioning.wordpiece import _category, normalize

    got = run_node("wordpiece", {"vocab": _vocab_path(), "prompts": [], "batch": ["a"], "table": True}, tmp_path)

    def short(cat: str) -> str:
        return cat[1] if cat in ("Cc", "Cf", "Co", "Cs") else "M" if cat == "Mn" else "P" if cat[0] == "P" else "L"

    differ = [cp for cp in range(0x110000) if short(_category(chr(cp))) != got["classes"][cp]
              or (not 0xD800 <= cp <= 0xDFFF and normalize(chr(cp)) != got["normalized"][cp])]
    print(f"Unicode {unicodedata.unidata_version} (Python) vs node: {len(differ)} code points differ")
    assert not differ, [hex(cp) for cp in differ[:20]]


# ---------------------------------------------------------------------------------------------------------
# generation.js: the whole painting (seeds' noise, guidance, clip, sampler) against generation.generate


def _paint_cases():
    cond, short, one = _condition(1, 6, 21), _condition(1, 3, 22), _condition(2, 6, 23)
    base = {"schedule": "linear", "predictionType": "v_prediction", "imageShape": [3, 32, 32], "seeds": [7, 8],
            "cond": cond, "uncond": short, "steps": 20, "guidance": 3.0, "guidanceRescale": 0.0, "sampler": "dpmpp_2m",
            "spacing": "log_snr", "takesGuidance": False, "clip": 1.0, "noise": None}
    yield base  # the emoji model's defaults
    yield {**base, "sampler": "ddim", "steps": 4, "spacing": "log_snr@0.5", "takesGuidance": True, "uncond": None}
    yield {**base, "sampler": "euler_ancestral", "steps": 10, "spacing": "karras", "predictionType": "epsilon",
           "guidance": [2.0, 5.0], "guidanceRescale": 0.5, "cond": one}
    yield {**base, "sampler": "consistency", "steps": 2, "spacing": "log_snr_trailing", "takesGuidance": True,
           "predictionType": "sample", "imageShape": [1, 32, 32], "seeds": [0, 1, 2], "uncond": None}
    yield {**base, "sampler": "unipc", "steps": 5, "guidance": 1.0, "noise": "given", "cond": one}
    yield {**base, "sampler": "dpmpp_2m_sde", "steps": 6, "noise": "given", "seeds": [3]}
    yield {**base, "sampler": "ddpm", "steps": 3, "spacing": "trailing", "clip": None, "cond": None, "uncond": None,
           "imageShape": [2, 5, 7], "predictionType": "epsilon"}
    yield {**base, "sampler": "heun", "steps": 5, "schedule": "cosine", "spacing": "karras"}


def test_generate_matches_python_generate(tmp_path):
    from unnoise.generation import generate

    cases = list(_paint_cases())
    for case in cases:
        if case["noise"] == "given":
            shape = (len(case["seeds"]), *case["imageShape"])
            case["noise"] = torch.randn(shape, generator=torch.Generator().manual_seed(99)).flatten().tolist()
    fixture = {"cases": [{**c, "cond": _as_json(c["cond"]), "uncond": _as_json(c["uncond"])} for c in cases]}
    worst = 0.0
    for case, got in zip(cases, run_node("paint", fixture, tmp_path)):
        calls, steps = [], []
        shape = tuple(case["imageShape"])

        def model(x_t, t, cond, calls=calls):
            calls.append(x_t.shape[0])
            return _fake_network(x_t, t, cond)

        noise = None if case["noise"] is None else torch.tensor(case["noise"]).view(-1, *shape)
        want = generate(model, schedules.get(case["schedule"]), case["predictionType"], case["cond"], case["uncond"],
                        shape=shape, seeds=case["seeds"], steps=case["steps"], guidance=case["guidance"],
                        guidance_rescale=case["guidanceRescale"], sampler=case["sampler"], spacing=case["spacing"],
                        callback=lambda info, steps=steps: steps.append(info.i), takes_guidance=case["takesGuidance"],
                        noise=noise, clip=case["clip"], device="cpu")
        what = (case["sampler"], case["steps"], case["spacing"])
        assert got["calls"] == len(calls) and got["steps"] == steps, what
        diff = float((torch.tensor(got["x"]) - want.flatten()).abs().max()) / max(1.0, float(want.abs().max()))
        worst = max(worst, diff)
        assert diff < 1e-5, (what, diff)
    print(f"generation.js max |Δx0|/max(1, |x0|) over {len(cases)} paintings:", worst)


# ---------------------------------------------------------------------------------------------------------
# names, registry metadata and the engine's own contract (stopping, errors)


def test_registry_and_names_match_python(tmp_path):
    from unnoise import limits
    from unnoise.conditioning.guidance import RESCALE_SPACES
    from unnoise.diffusion import PREDICTION_TYPES
    from unnoise.sampling import SAMPLERS

    got = run_node("registry", {}, tmp_path)
    want = [{"name": s.name, "order": s.order, "stochastic": s.stochastic, "callsPerStep": s.calls_per_step,
             "paper": s.paper, "odeOptions": None if s.ode_options is None else dict(s.ode_options), "model": s.model,
             "nfe20": s.nfe(20)} for s in SAMPLERS.values()]
    assert got["samplers"] == want
    assert (got["NAMES"], got["SPACINGS"]) == (list(schedules.NAMES), list(schedules.SPACINGS))
    assert got["DEFAULT_SPACING"] == limits.DEFAULT_SPACING
    assert (got["PREDICTION_TYPES"], got["RESCALE_SPACES"]) == (list(PREDICTION_TYPES), list(RESCALE_SPACES))


def test_engine_contract_under_node_test():
    """tests/js/contract.test.mjs: onStep → false and AbortSignal stop every sampler; bad input is one clear error."""
    done = subprocess.run([NODE, "--test", str(HARNESS / "contract.test.mjs")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------
# the same modules in Debian chromium (the page's engine): tokens, start noise and a painting as in Python


@pytest.mark.browser
def test_engine_in_chromium_matches_python(tmp_path):
    import functools
    import http.server
    import threading

    from unnoise.conditioning.text import MAX_LENGTH
    from unnoise.conditioning.wordpiece import WordPiece
    from unnoise.generation import generate

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    static = Path(__file__).resolve().parents[1] / "src" / "unnoise" / "lab" / "static"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(static))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prompts = [p for p in _prompts()[:200] if UNICODE_14 or p.isascii()]
    case = {"schedule": "linear", "predictionType": "v_prediction", "imageShape": [3, 32, 32], "seeds": [7, 8],
            "steps": 20, "guidance": 1.0, "sampler": "euler_ancestral", "spacing": "karras"}
    script = """async ({vocab, prompts, c}) => {
      const {WordPiece} = await import('/engine/wordpiece.js');
      const {alphasCumprod} = await import('/engine/schedules.js');
      const {generate} = await import('/engine/generation.js');
      const wp = new WordPiece(vocab);
      const network = async (xt, t) => Float32Array.from(xt, (v, i) => 0.6 * Math.tanh(v) + 0.001 * t[Math.floor(i / 3072)] * Math.cos(i % 3072));
      const x = await generate({...c, network, alphasCumprod: alphasCumprod(c.schedule)});
      return {ids: prompts.map((p) => wp.encodeOne(p)), x: Array.from(x)};
    }"""
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/package.json")
            got = page.evaluate(script, {"vocab": Path(_vocab_path()).read_text(encoding="utf-8"), "prompts": prompts, "c": case})
            browser.close()
    finally:
        server.shutdown()
    assert not errors
    ours = WordPiece.from_file(_vocab_path(), max_length=MAX_LENGTH)
    assert got["ids"] == [ours.encode(prompt) for prompt in prompts]
    want = generate(lambda x_t, t, cond: _fake_network(x_t, t, None), schedules.get("linear"), "v_prediction", None,
                    None, shape=(3, 32, 32), seeds=[7, 8], steps=20, guidance=1.0, sampler="euler_ancestral",
                    spacing="karras", takes_guidance=False, device="cpu")
    diff = float((torch.tensor(got["x"]) - want.flatten()).abs().max())
    print(f"chromium: {len(prompts)} prompts token for token; euler_ancestral painting max |Δ| {diff:.2e}")
    assert diff < 1e-5


# ---------------------------------------------------------------------------------------------------------
# images.js (pixels in and out) and generation.js image to image


def test_pixels_and_img2img_match_python(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from unnoise import images
    from unnoise.generation import generate
    from unnoise.pipeline import Painter

    g = torch.Generator().manual_seed(8)
    halves = (torch.arange(256, dtype=torch.float32) + 0.5) / 127.5 - 1.0  # the rounding ties, and beyond the box
    outs = [(torch.cat([halves, torch.randn(3 * 100 - 256, generator=g) * 1.5]).view(3, 10, 10)),
            torch.rand(1, 7, 5, generator=g) * 2.2 - 1.1]
    rgbas = [torch.randint(0, 256, (6, 9, 4), generator=g, dtype=torch.uint8) for _ in range(2)]
    rgbas[0][..., 3] = 255
    rgbas[1][0, :4, 3] = torch.tensor([0, 1, 128, 254], dtype=torch.uint8)
    picture = Image.fromarray(torch.randint(0, 256, (40, 56, 3), generator=g, dtype=torch.uint8).numpy(), "RGB")
    runs = [{"channels": 3, "size": 32, "steps": 5, "strength": 0.5, "spacing": "log_snr", "sampler": "ddpm",
             "seeds": [4, 5]},
            {"channels": 1, "size": 32, "steps": 20, "strength": 0.6, "spacing": "karras", "sampler": "dpmpp_2m",
             "seeds": [9]}]
    for r in runs:  # the fitted picture's bytes, as the page would hand them over after its own resize
        fitted = images.fit(picture.convert("L" if r["channels"] == 1 else "RGB"), r["size"]).convert("RGBA")
        r["bytes"] = np.asarray(fitted).flatten().tolist()
    fixture = {"toRGBA": [{"x": x.flatten().tolist(), "c": x.shape[0], "h": x.shape[1], "w": x.shape[2]} for x in outs],
               "fromRGBA": [{"bytes": b.flatten().tolist(), "c": c, "h": 6, "w": 9} for b in rgbas for c in (3, 1)],
               "img2img": runs}
    got = run_node("images", fixture, tmp_path)
    for x, js in zip(outs, got["rgba"]):
        assert js == np.asarray(images.to_pil(x).convert("RGBA")).flatten().tolist()
    worst = 0.0
    for k, js in enumerate(got["tensors"]):
        rgba, mode = rgbas[k // 2], ("RGB", "L")[k % 2]
        want = images.to_tensor(images.flatten(Image.fromarray(rgba.numpy(), "RGBA"), mode)).flatten()
        diff = float((torch.tensor(js) - want).abs().max())
        worst = max(worst, diff)
        assert diff == 0.0 if k < 2 else diff <= 1 / 127.5 + 1e-6, (k, diff)  # transparency: within a level of Pillow's
    for r, js in zip(runs, got["img2img"]):
        shape = (r["channels"], r["size"], r["size"])
        painter = SimpleNamespace(info=SimpleNamespace(channels=r["channels"], image_size=r["size"]),
                                  schedule=schedules.get("linear"), shape=shape)
        params = SimpleNamespace(steps=r["steps"], spacing=r["spacing"], strength=r["strength"])
        x_init, sigmas = Painter._img2img_start(painter, picture, params, r["seeds"])
        assert js["sigmas"] == pytest.approx(sigmas.tolist(), rel=1e-12)
        # the seeds' noise is torch.randn's within an ulp (random.js), scaled by σ_start
        assert float((torch.tensor(js["xInit"]) - x_init.flatten()).abs().max()) <= 1e-6 * max(1.0, float(sigmas[0]))
        want = generate(_fake_network, schedules.get("linear"), "v_prediction", None, None, shape=shape,
                        seeds=r["seeds"], guidance=1.0, sampler=r["sampler"], x_init=x_init, sigmas=sigmas,
                        takes_guidance=False, device="cpu")
        assert float((torch.tensor(js["x"]) - want.flatten()).abs().max()) < 1e-5
    print("images.js: to_pil bytes equal; to_tensor max |Δ| (transparent pixels incl.)", worst, "; img2img starts and paintings within 1e-5")
