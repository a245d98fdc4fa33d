"""Prompt snapping: a prompt the model does not know is conditioned on the most similar training caption
(by the real MiniLM sentence vectors); known prompts, the empty prompt and prompts unlike anything known
are left alone; the vocabulary file round-trips and a broken one is a clear error; the Painter, the PNG
parameters, `--from` and `--no-snap` carry it."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from unnoise import schedules
from unnoise.conditioning.text import TextEncoder
from unnoise.conditioning.vocabulary import FILE, Vocabulary, VocabularyError
from unnoise.modeldir import save_model_dir
from unnoise.models import UNet, UNetConfig
from unnoise.pipeline import Painter, PaintParams

NAMES = ["cat face", "dog face", "rocket", "pizza", "red heart", "banana", "fire"]
KNOWN = NAMES + [f"{n} emoji" for n in NAMES]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.load()


@pytest.fixture(scope="module")
def vocab(encoder):
    return Vocabulary.build(NAMES, encoder, known=KNOWN)


def snap(vocab, encoder, prompt):
    return vocab.snap([prompt], encoder.encode([prompt])["pooled"])[0]


@pytest.mark.parametrize("prompt, caption", [("a kitten's face", "cat face"), ("a slice of pizza", "pizza"),
                                             ("a love heart", "red heart"), ("a burning flame", "fire"),
                                             ("a yellow banana", "banana")])
def test_paraphrases_snap_to_the_caption_they_mean(vocab, encoder, prompt, caption):
    s = snap(vocab, encoder, prompt)
    assert s.caption == caption and vocab.threshold <= s.similarity < 1, s


@pytest.mark.parametrize("prompt", ["cat face", "Cat  Face", "rocket emoji", "", "   "])
def test_known_and_empty_prompts_are_left_alone(vocab, encoder, prompt):
    assert snap(vocab, encoder, prompt).caption is None


@pytest.fixture(scope="module")
def tagged(encoder):
    suffixes = [", noto style", ", twemoji style"]
    return Vocabulary.build(NAMES, encoder, known=KNOWN + [f"{n}{s}" for n in NAMES for s in suffixes],
                            suffixes=suffixes)


@pytest.mark.parametrize("prompt, caption", [("a kitten's face, twemoji style", "cat face, twemoji style"),
                                             ("A slice of pizza ,  noto  style", "pizza, noto style"),
                                             ("a kitten's face", "cat face")])
def test_a_style_tagged_prompt_snaps_by_its_head_and_keeps_its_tag(tagged, encoder, prompt, caption):
    """Only the plain captions have vectors; the head is compared and the tag kept."""
    s = tagged.snap([prompt], encoder.encode([tagged.query(prompt)])["pooled"])[0]
    assert s.caption == caption and s.similarity >= tagged.threshold, s


@pytest.mark.parametrize("prompt", ["cat face, twemoji style", "cat face emoji, noto style", ", noto style",
                                    "quarterly tax filing deadline, noto style"])
def test_known_tagged_prompts_and_bare_tags_are_left_alone(tagged, encoder, prompt):
    """Known; a known head (painted as typed, nothing to snap to); no head; a head unlike anything known."""
    assert tagged.snap([prompt], encoder.encode([tagged.query(prompt)])["pooled"])[0].caption is None
    assert tagged.split(", noto style") == (", noto style", "")


def test_suffixes_round_trip_and_blank_ones_are_refused(tagged, tmp_path):
    tagged.save(tmp_path)
    back = Vocabulary.load(tmp_path)
    assert back.suffixes == tagged.suffixes and back.known == tagged.known
    with pytest.raises(VocabularyError, match="suffixes"):
        Vocabulary(tagged.captions, tagged.vectors, [], suffixes=[" "])


def test_prompts_unlike_anything_known_are_left_alone(vocab, encoder):
    s = snap(vocab, encoder, "quarterly tax filing deadline")
    assert s.caption is None and s.similarity < vocab.threshold, s


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(KNOWN), st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=1, max_size=3),
       st.booleans())
def test_a_known_caption_is_never_snapped_whatever_its_case_or_spacing(name, gaps, upper):
    vocab = Vocabulary(["something else"], torch.nn.functional.normalize(torch.ones(1, 4), dim=-1), KNOWN, threshold=-2)
    words = name.split()
    prompt = "".join(w + gaps[i % len(gaps)] for i, w in enumerate(words)).strip()
    prompt = prompt.upper() if upper else prompt
    assert vocab.snap([prompt], torch.ones(1, 4))[0].caption is None  # threshold −2: anything unknown would snap
    assert vocab.snap(["unknown words"], torch.ones(1, 4))[0].caption == "something else"


def test_file_round_trip_and_broken_file(vocab, encoder, tmp_path):
    vocab.save(tmp_path)
    back = Vocabulary.load(tmp_path)
    assert back.captions == vocab.captions and back.known == vocab.known and back.threshold == vocab.threshold
    torch.testing.assert_close(back.vectors, vocab.vectors, atol=1e-3, rtol=0)  # stored as fp16
    assert snap(back, encoder, "a kitten's face").caption == "cat face"
    assert Vocabulary.load(tmp_path / "none") is None
    (tmp_path / FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(VocabularyError, match="unreadable"):
        Vocabulary.load(tmp_path)
    with pytest.raises(VocabularyError):
        Vocabulary(["a", "b"], torch.zeros(3, 4), [])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab):
    torch.manual_seed(0)
    net = UNet(UNetConfig.tiny().replace(image_size=16))
    meta = SimpleNamespace(channels=3, image_size=16, name="test", example_prompts=["cat face"])
    out = tmp_path_factory.mktemp("m") / "model"
    save_model_dir(out, net, schedule=schedules.get("linear"), prediction_type="epsilon", dataset=meta,
                   text_encoder="test", defaults={"steps": 4, "guidance": 2.0, "sampler": "dpmpp_2m"})
    vocab.save(out)
    return out


def test_painter_conditions_on_the_snapped_caption(model_dir):
    painter = Painter.from_pretrained(model_dir)
    encoded, encode = [], painter.encoder.encode
    painter.encoder.encode = lambda texts: encoded.append(list(texts)) or encode(texts)  # a spy, passes through
    kitten = painter("a kitten's face", seed=3)[0]
    assert ["cat face"] in encoded and ["a kitten's face"] in encoded  # the snap looks at it; the model sees the caption
    assert kitten.unnoise_params.snap and kitten.unnoise_params.conditioned_on == "cat face"
    exact = painter("cat face", seed=3)[0]
    assert exact.unnoise_params.conditioned_on is None
    assert np.array_equal(np.asarray(kitten), np.asarray(exact))  # the same conditioning, the same seed
    encoded.clear()
    typed = painter("a kitten's face", seed=3, snap=False)[0]
    assert not typed.unnoise_params.snap and typed.unnoise_params.conditioned_on is None
    assert encoded == [["a kitten's face"], [""]]  # condition and unconditional, nothing else


def test_cli_snaps_says_so_stores_it_and_from_reproduces(model_dir, tmp_path, cli):
    out = tmp_path / "k.png"
    code, _, err = cli(["paint", "a kitten's face", "--model", str(model_dir), "--seed", "1", "--size", "0",
                      "--out", str(out)])
    assert code == 0 and "'cat face'" in err and "--no-snap" in err
    params = PaintParams.from_png(out)
    assert params.prompt == "a kitten's face" and params.conditioned_on == "cat face" and params.snap
    assert "Conditioned on: cat face" in Image.open(out).text["parameters"]
    again = tmp_path / "again.png"
    assert cli(["paint", "--from", str(out), "--model", str(model_dir), "--out", str(again), "--size", "0"]).code == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    plain = tmp_path / "plain.png"
    code, _, err = cli(["paint", "a kitten's face", "--model", str(model_dir), "--seed", "1", "--size", "0", "--no-snap",
                      "--out", str(plain)])
    assert code == 0 and "cat face" not in err
    assert PaintParams.from_png(plain).conditioned_on is None and not PaintParams.from_png(plain).snap
    again = tmp_path / "plain-again.png"  # --from keeps the stored --no-snap
    assert cli(["paint", "--from", str(plain), "--model", str(model_dir), "--out", str(again), "--size", "0"]).code == 0
    assert np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(again)))


def test_old_pngs_without_snap_fields_still_load(model_dir, tmp_path, cli):
    out = tmp_path / "old.png"
    assert cli(["paint", "cat face", "--model", str(model_dir), "--seed", "2", "--out", str(out)]).code == 0
    data = json.loads(Image.open(out).text["unnoise"])
    for key in ("snap", "conditioned_on"):
        data.pop(key)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("unnoise", json.dumps(data))
    Image.open(out).save(tmp_path / "older.png", pnginfo=info)
    assert PaintParams.from_png(tmp_path / "older.png").snap is False


def test_a_model_without_vocabulary_paints_prompts_as_typed(model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / FILE).unlink()
    painter = Painter.from_pretrained(bare)
    assert painter.vocabulary is None and painter.snap("a kitten's face") is None
    p = painter.params("a kitten's face", seed=0)
    assert not p.snap and p.conditioned_on is None


def test_bundled_emoji_model_ships_a_vocabulary():
    vocab = Vocabulary.load(Painter.from_pretrained("emoji").path)
    assert vocab is not None and len(vocab.captions) > 4000 and "cat face" in vocab.captions


def test_model_card_describes_the_vocabulary_or_how_to_add_one(vocab, model_dir, tmp_path):
    from unnoise.training.card import vocabulary_section

    card = "\n".join(vocabulary_section(model_dir, "emoji"))
    assert f"{len(vocab.captions):,} training captions" in card
    assert f"python -m unnoise.conditioning.vocabulary --model {model_dir} --data emoji" in card
    assert "None: prompts are painted as typed" in "\n".join(vocabulary_section(tmp_path, "emoji"))
    (tmp_path / FILE).write_bytes(b"broken")
    assert "**Broken:**" in "\n".join(vocabulary_section(tmp_path, "emoji"))
