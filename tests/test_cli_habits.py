"""Habits diffusers and AUTOMATIC1111 users bring (issue 30): --version, sampler names, A1111 `parameters`
text, output formats, prompt files, --device, --help.  Paints with the real bundled models."""

from importlib.metadata import version

import unnoise


def test_version_is_the_package_version(cli):
    code, out, err = cli(["--version"])
    assert code == 0, err
    assert out.strip() == f"unnoise {unnoise.__version__}" == f"unnoise {version('unnoise')}"


# --- sampler names people already use -------------------------------------------------------------------

import numpy as np
import pytest

from unnoise.pipeline import Painter, PaintError
from unnoise.sampling import SAMPLERS
from unnoise.sampling.names import resolve_sampler


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These paint tiny images: one torch thread is fastest, and a busy machine can't oversubscribe it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return Painter.from_pretrained("digits")


@pytest.mark.parametrize("name,expected", [
    ("Euler a", ("euler_ancestral", None)), ("euler_a", ("euler_ancestral", None)),
    ("k_euler", ("euler", None)), ("k_euler_a", ("euler_ancestral", None)), ("EULER", ("euler", None)),
    ("DPM++ 2M", ("dpmpp_2m", None)), ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("DPM++ 2M SDE", ("dpmpp_2m_sde", None)), ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
    ("DPM++ 3M SDE", ("dpmpp_3m_sde", None)), ("DPM++ 3M SDE Exponential", ("dpmpp_3m_sde", "log_snr")),
    ("UniPC", ("unipc", None)), ("uni_pc", ("unipc", None)), ("DDIM", ("ddim", None)), ("Heun", ("heun", None)),
    ("sample_heun", ("heun", None)), ("DDPM", ("ddpm", None)), ("LCM", ("consistency", None)),
    ("dpmpp_2m", ("dpmpp_2m", None)),
])
def test_a1111_comfyui_and_k_diffusion_names(name, expected):
    assert resolve_sampler(name) == expected


def test_an_a1111_name_paints_what_our_name_and_spacing_paint(digits):
    ours = digits("a handwritten seven", sampler="dpmpp_2m", spacing="karras", steps=3, seed=4)[0]
    theirs = digits("a handwritten seven", sampler="DPM++ 2M Karras", steps=3, seed=4)[0]
    assert (theirs.unnoise_params.sampler, theirs.unnoise_params.spacing) == ("dpmpp_2m", "karras")
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    default = digits("a handwritten seven", sampler="dpmpp_2m", steps=3, seed=4)[0]
    assert not np.array_equal(np.asarray(ours), np.asarray(default))  # the spacing was not dropped
    assert digits.params("x", sampler="euler a", spacing="Exponential").spacing == "log_snr"
    with pytest.raises(PaintError, match="karras spacing"):
        digits.params("x", sampler="DPM++ 2M Karras", spacing="log_snr")


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "dpmpp2m"], "did you mean 'dpmpp_2m'?"),
    (["--model", "emoj"], "did you mean 'emoji'?"),
    (["--spacing", "karas"], "did you mean 'karras'?"),
])
def test_a_misspelled_name_gets_did_you_mean(tmp_path, cli, argv, message):
    code, _, err = cli(["paint", "x", *argv, "--out", str(tmp_path / "x.png")])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_samplers_lists_names_order_and_calls(cli):
    code, out, _ = cli(["samplers"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(SAMPLERS) <= set(rows)
    assert '"DPM++ 2M"' in rows["dpmpp_2m"] and "order 2, 1 call a step" in rows["dpmpp_2m"]
    assert '"Euler a"' in rows["euler_ancestral"] and "order 2, 2 calls a step" in rows["heun"]
    assert "LCM" in rows["consistency"] and "uni_pc" in rows["unipc"]
