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
)

LONG = "a very long prompt about " + " and ".join(f"a small red cat number {i}" for i in range(40))
PROMPTS = [
    "a cat face",
    "",  # the null condition
    "a handwritten seven",
    "Ünïcödé: café, naïve, 東京タワー, 😀 grinning face, ñ",
    "   ",
    LONG,  # > 77 tokens: both sides truncate to 77
    "7",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load()


@pytest.fixture(scope="module")
def sbert():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(model_dir()), device="cpu")
    model.max_seq_length = MAX_LENGTH  # same truncation as ours ([CLS] and [SEP] included in both)
    return model


def test_shapes_mask_and_truncation(encoder):
    out = encoder.encode(PROMPTS)
    B, L = len(PROMPTS), MAX_LENGTH  # LONG is the longest and is cut to exactly 77 tokens
    assert out["tokens"].shape == (B, L, 384) and out["tokens"].dtype == torch.float32
    assert out["mask"].shape == (B, L) and out["mask"].dtype == torch.bool
    assert out["pooled"].shape == (B, 384)
    lengths = out["mask"].sum(1)
    assert lengths[1] == 2  # "" is [CLS] [SEP]
    assert lengths[5] == MAX_LENGTH
    assert torch.all(out["mask"][:, :1]) and torch.all(out["tokens"][~out["mask"]] == 0)  # zero at padding
    torch.testing.assert_close(out["pooled"].norm(dim=1), torch.ones(B))


def test_pooled_equals_sentence_transformers(encoder, sbert):
    ours = encoder.encode(PROMPTS)["pooled"]
    ref = sbert.encode(PROMPTS, convert_to_tensor=True, batch_size=3)  # other batching: padding must not matter
    assert (ours - ref).abs().max() < 1e-5


def test_token_states_equal_transformers_bert(encoder):
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel.from_pretrained(str(model_dir())).eval()
    ids, mask = encoder.tokenize(PROMPTS)
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    ours = encoder.encode(PROMPTS)["tokens"]
    assert (ours - ref)[mask].abs().max() < 1e-5


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_text_matches_sentence_transformers(encoder, sbert, prompts):
    ours = encoder.encode(prompts)["pooled"]
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


def test_load_imports_no_transformers_and_no_dynamo():
    code = (
        "import sys; from unnoise.conditioning.text import TextEncoder; TextEncoder.load().encode(['x']);"
        "bad = [m for m in ('transformers', 'sentence_transformers', 'torch._dynamo') if m in sys.modules];"
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
    captions = ["a handwritten seven", "7", LONG, "the digit 7"]
    bank = CaptionBank(captions, encoder, tmp_path)
    assert len(bank) == 5 and bank.captions[bank.null_index] == ""  # "" appended
    idx = torch.tensor([3, bank.null_index, 0, 0])
    cond = bank.condition(idx)
    assert cond["tokens"].shape == (4, MAX_LENGTH, 384) and cond["mask"].shape == (4, MAX_LENGTH)
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
