"""Painter(…, noise=Tensor): a caller's start noise instead of the seed's draw (the browser lab's contract:
the page and Python paint the same picture from the same noise)."""


import numpy as np
import pytest
import torch

from unnoise.errors import UnnoiseError
from unnoise.pipeline import Painter, PaintError


@pytest.fixture(scope="module")
def painter(model_dir):
    return Painter.from_pretrained(model_dir)


def seed_draw(shape, seeds):
    """The start noise the seeds give, written out as the docstring of Painter.__call__ states it."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def arr(im):
    return np.asarray(im, dtype=np.int16)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_the_seeds_own_draw_as_noise_paints_the_seeded_picture_exactly(painter, sampler):
    seeded = painter("a cat", num_images=2, seed=7, steps=4, sampler=sampler)
    given = painter("a cat", num_images=2, seed=7, steps=4, sampler=sampler, noise=seed_draw(painter.shape, [7, 8]))
    for a, b in zip(seeded, given):
        assert np.array_equal(arr(a), arr(b))


def test_same_noise_same_picture_whatever_the_seed(painter):
    """For a deterministic sampler the noise alone fixes the picture; other noise paints another one."""
    noise = torch.randn((1, *painter.shape), generator=torch.Generator().manual_seed(123))
    a = painter("a cat", seed=1, steps=4, sampler="ddim", noise=noise)[0]
    b = painter("a cat", seed=2, steps=4, sampler="ddim", noise=noise.clone())[0]
    assert np.array_equal(arr(a), arr(b))
    c = painter("a cat", seed=1, steps=4, sampler="ddim", noise=-noise)[0]
    assert np.abs(arr(a) - arr(c)).max() > 10


def test_noise_also_starts_image_to_image(painter):
    from PIL import Image

    init = Image.new("RGB", (16, 16), (200, 30, 30))
    seeded = painter("a cat", seed=3, steps=4, init_image=init, strength=0.5)[0]
    given = painter("a cat", seed=3, steps=4, init_image=init, strength=0.5, noise=seed_draw(painter.shape, [3]))[0]
    assert np.array_equal(arr(seeded), arr(given))


def test_a_bundled_student_takes_noise_too():
    """The guidance-embedding path (one pass, w as input) with the consistency sampler's fresh noise."""
    painter = Painter.from_pretrained("digits-1step")
    seeded = painter("a handwritten seven", seed=11)[0]
    given = painter("a handwritten seven", seed=11, noise=seed_draw(painter.shape, [11]))[0]
    assert np.array_equal(arr(seeded), arr(given))


@pytest.mark.parametrize("noise, message", [
    ([[0.0]], "noise must be a torch.Tensor"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.int64), "floating-point"),
    (torch.zeros(2, 3, 16, 16), "shape (1, 3, 16, 16)"),
    (torch.zeros(3, 16, 16), "shape (1, 3, 16, 16)"),
    (torch.full((1, 3, 16, 16), float("nan")), "finite"),
    (torch.full((1, 3, 16, 16), float("inf")), "finite"),
])
def test_bad_noise_is_a_one_line_error(painter, noise, message):
    with pytest.raises(PaintError) as e:
        painter("a cat", steps=2, noise=noise)
    assert isinstance(e.value, UnnoiseError) and isinstance(e.value, ValueError)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_float64_and_float16_noise_are_taken_as_float32(painter):
    noise = seed_draw(painter.shape, [5])
    ref = painter("a cat", seed=5, steps=3, sampler="ddim", noise=noise)[0]
    assert np.array_equal(arr(ref), arr(painter("a cat", seed=5, steps=3, sampler="ddim", noise=noise.double())[0]))
    assert painter("a cat", seed=5, steps=3, sampler="ddim", noise=noise.half())[0].size == (16, 16)
