"""HFTextEncoder: real MiniLM sentence vectors, the tiny BERT through the same code path, truncation,
batching, identity (spec) of the weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.encoders.text import HFTextEncoder

SENTENCES = [
    "I can't believe you did that to me!",
    "How could you do this to me? I'm so upset.",
    "The train to Boston leaves at nine in the morning.",
]


def test_minilm_paraphrases_are_closer_than_unrelated_sentences(minilm_encoder: HFTextEncoder) -> None:
    v = minilm_encoder.encode_batch(SENTENCES)  # (3, 384)
    paraphrase = F.cosine_similarity(v[0], v[1], dim=0)
    unrelated = max(F.cosine_similarity(v[0], v[2], dim=0), F.cosine_similarity(v[1], v[2], dim=0))
    assert paraphrase > unrelated + 0.2


def test_minilm_follows_its_sentence_transformers_folder(minilm_encoder: HFTextEncoder) -> None:
    assert minilm_encoder.spec.name == "hf:sentence-transformers/all-MiniLM-L6-v2:mean"
    assert minilm_encoder.spec.dim == 384 and minilm_encoder.spec.modality == "text"
    assert minilm_encoder.max_length == 256  # sentence_bert_config.json, not the tokenizer's 512
    assert minilm_encoder.normalize  # modules.json ends with Normalize
    norms = minilm_encoder.encode_batch(SENTENCES).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3), atol=1e-5, rtol=0)


def test_minilm_equals_sentence_transformers_encode(minilm_encoder: HFTextEncoder, minilm_dir: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    reference = torch.from_numpy(model.encode(SENTENCES + [""]))
    torch.testing.assert_close(minilm_encoder.encode_batch(SENTENCES + [""]), reference, atol=1e-5, rtol=0)


def test_tiny_bert_loads_from_a_directory_through_the_same_code_path(tiny_text_encoder: HFTextEncoder):
    assert tiny_text_encoder.spec.name == "hf:tiny-bert:cls"
    assert tiny_text_encoder.spec.dim == 32 and tiny_text_encoder.max_length == 64
    vectors = tiny_text_encoder.encode_batch(["hello there", "Don't you know what I mean?"])
    assert vectors.shape == (2, 32) and vectors.dtype == torch.float32 and torch.isfinite(vectors).all()


@pytest.mark.parametrize("encoder_name", ["tiny_text_encoder", "minilm_encoder"])
def test_long_texts_are_truncated_and_flagged(encoder_name: str, request: pytest.FixtureRequest) -> None:
    encoder: HFTextEncoder = request.getfixturevalue(encoder_name)
    long_text = "well I just don't know what to say " * 80
    vectors, truncated = encoder.encode_with_info(["short one", long_text, ""])
    assert truncated == [False, True, False]
    assert torch.isfinite(vectors).all()


@pytest.mark.parametrize("encoder_name", ["tiny_text_encoder", "minilm_encoder"])
def test_batch_equals_one_at_a_time(encoder_name: str, request: pytest.FixtureRequest) -> None:
    encoder: HFTextEncoder = request.getfixturevalue(encoder_name)
    texts = ["Yeah.", "", "Do you have your forms?", "Excuse me, I was here first and " * 5, "ok"]
    batched = encoder.encode_batch(texts)
    single = torch.cat([encoder.encode_batch([t]) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_empty_strings_and_empty_batches_work(tiny_text_encoder: HFTextEncoder) -> None:
    assert tiny_text_encoder.encode_batch([""]).shape == (1, 32)
    vectors, truncated = tiny_text_encoder.encode_with_info([])
    assert vectors.shape == (0, 32) and truncated == []


def test_non_string_input_is_rejected(tiny_text_encoder: HFTextEncoder) -> None:
    with pytest.raises(TypeError):
        tiny_text_encoder.encode_batch([None])  # type: ignore[list-item]


def test_version_follows_the_weights_not_the_path(tiny_encoder_paths, tmp_path: Path) -> None:
    copy_dir = tmp_path / "bert-copy"
    shutil.copytree(tiny_encoder_paths.text, copy_dir)
    original = HFTextEncoder(tiny_encoder_paths.text, device="cpu")
    same_weights = HFTextEncoder(copy_dir, name="tiny-bert", device="cpu")
    assert same_weights.spec == original.spec

    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(copy_dir), local_files_only=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(copy_dir)
    changed = HFTextEncoder(copy_dir, name="tiny-bert", device="cpu")
    assert changed.spec.name == original.spec.name
    assert changed.spec.version != original.spec.version


def test_pooling_is_part_of_the_spec_name(tiny_encoder_paths) -> None:
    mean = HFTextEncoder(tiny_encoder_paths.text, pooling="mean", device="cpu")
    assert mean.spec.name == "hf:tiny-bert:mean"
    with pytest.raises(ValueError):
        HFTextEncoder(tiny_encoder_paths.text, pooling="max", device="cpu")  # type: ignore[arg-type]
