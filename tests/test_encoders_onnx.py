"""ONNX export of the encoders: onnxruntime gives the PyTorch vectors (tiny models, dynamic batch and
length), and the ONNX encoders carry the PyTorch encoders' specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.encoders.emotion2vec import Emotion2VecEncoder
from model.encoders.onnx import (
    OnnxEmotion2VecEncoder,
    OnnxTextEncoder,
    create_session,
    export_emotion2vec,
    export_text_encoder,
)
from model.encoders.text import HFTextEncoder
from tests.conftest_encoders import noise_waves

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["Yeah.", "", "Do you have your forms? " * 10, "I'm so happy for you!", "well " * 200]


def assert_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    cosine = F.cosine_similarity(actual, expected, dim=1)
    assert (cosine >= 0.9999).all() or torch.allclose(actual, expected, atol=1e-4), cosine


@pytest.fixture(scope="module")
def onnx_text_dir(tiny_text_encoder: HFTextEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_text_encoder(tiny_text_encoder, tmp_path_factory.mktemp("onnx-text"))  # dynamo exporter


@pytest.fixture(scope="module")
def onnx_e2v_dir(tiny_emotion2vec: Emotion2VecEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_emotion2vec(tiny_emotion2vec, tmp_path_factory.mktemp("onnx-e2v"))  # dynamo exporter


def test_text_graph_matches_pytorch(tiny_text_encoder: HFTextEncoder, onnx_text_dir: Path) -> None:
    onnx_encoder = OnnxTextEncoder(onnx_text_dir, device="cpu", intra_op_threads=1)
    assert onnx_encoder.spec == tiny_text_encoder.spec
    expected, expected_truncated = tiny_text_encoder.encode_with_info(TEXTS)
    actual, truncated = onnx_encoder.encode_with_info(TEXTS)  # batch 5, up to 64 tokens
    assert truncated == expected_truncated and truncated[-1] and not truncated[0]
    assert_parity(actual, expected)
    assert_parity(onnx_encoder.encode_batch(TEXTS[:1]), expected[:1])  # another batch size and length


ODD_TEXTS = [
    "Café, naïve résumé — ÉLAN!",
    "  spaced\tout\n\nlines  ",
    "東京 and 北京 😀👍🏽",
    "[CLS] not a token [SEP] [PAD]",
    "don't,won't;can't...?!",
    "x" * 300,
]


def _same_tokens(directory: Path, texts: list[str], max_length: int) -> None:
    from transformers import AutoTokenizer

    from model.encoders.text import FastTokenizer, tokenize_texts

    fast = FastTokenizer.load(directory, max_length)
    assert fast is not None
    reference = AutoTokenizer.from_pretrained(str(directory))
    for start in range(0, len(texts), 16):  # batches pad to their longest text
        batch = texts[start : start + 16]
        want, want_flags = tokenize_texts(reference, batch, max_length)
        got, flags = fast(batch)
        assert flags == want_flags
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), (name, batch)


@pytest.mark.parametrize("max_length", [6, 64])
def test_fast_tokenizer_gives_transformers_ids_masks_and_flags(onnx_text_dir: Path, max_length: int) -> None:
    """The served text graph tokenises without transformers: the same tensors and truncation flags as
    transformers' tokenizer on the same directory, odd texts included."""
    _same_tokens(onnx_text_dir, TEXTS + ODD_TEXTS, max_length)
    assert OnnxTextEncoder(onnx_text_dir, device="cpu", intra_op_threads=1).tokenize.__class__.__name__ == (
        "FastTokenizer"
    )


def test_fast_tokenizer_matches_on_minilm_and_every_iemocap_transcript(minilm_dir: Path) -> None:
    from tests.conftest_encoders import IEMOCAP_TABLE

    if not IEMOCAP_TABLE.is_file():
        pytest.skip(f"IEMOCAP table not found at {IEMOCAP_TABLE} (../shared beside the repository)")
    with IEMOCAP_TABLE.open() as f:
        texts = [json.loads(line)["transcript"] or "" for line in f if line.strip()]
    _same_tokens(minilm_dir, texts + ODD_TEXTS, 128)


def test_a_directory_without_tokenizer_json_is_read_through_transformers(
    onnx_text_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from transformers import AutoTokenizer

    from model.encoders.text import FastTokenizer, tokenize_texts

    copy = tmp_path / "slow"
    shutil.copytree(onnx_text_dir, copy)
    (copy / "tokenizer.json").unlink()
    assert FastTokenizer.load(copy, 64) is None
    encoder = OnnxTextEncoder(copy, device="cpu", intra_op_threads=1)
    got, flags = encoder.tokenize(TEXTS)
    want, want_flags = tokenize_texts(AutoTokenizer.from_pretrained(str(copy)), TEXTS, encoder.max_length)
    assert flags == want_flags and all(torch.equal(got[k], want[k]) for k in want)
    assert encoder.encode_batch(TEXTS).shape == (len(TEXTS), encoder.spec.dim)


def test_text_graph_from_the_torchscript_exporter(tiny_text_encoder: HFTextEncoder, tmp_path: Path) -> None:
    directory = export_text_encoder(tiny_text_encoder, tmp_path, dynamo=False)
    assert_parity(
        OnnxTextEncoder(directory, device="cpu").encode_batch(TEXTS), tiny_text_encoder.encode_batch(TEXTS)
    )


def test_emotion2vec_graph_matches_pytorch(tiny_emotion2vec: Emotion2VecEncoder, onnx_e2v_dir: Path) -> None:
    onnx_encoder = OnnxEmotion2VecEncoder(onnx_e2v_dir, device="cpu", intra_op_threads=1)
    assert onnx_encoder.spec == tiny_emotion2vec.spec and onnx_encoder.sample_rate == 16_000
    waves = noise_waves([0.5, 7.5, 2.2], seed=4)  # lengths the export never saw, padded together
    assert_parity(onnx_encoder.encode_batch(waves), tiny_emotion2vec.encode_batch(waves))
    assert_parity(onnx_encoder.encode_batch(waves[:1]), tiny_emotion2vec.encode_batch(waves[:1]))


def test_graphs_have_dynamic_batch_and_length_axes(onnx_text_dir: Path, onnx_e2v_dir: Path) -> None:
    for directory in (onnx_text_dir, onnx_e2v_dir):
        session = create_session(directory / "model.onnx", device="cpu", intra_op_threads=1)
        for graph_input in session.get_inputs():
            assert all(isinstance(d, str) for d in graph_input.shape), (graph_input.name, graph_input.shape)


def test_session_runs_on_cpu_with_the_requested_threads(onnx_text_dir: Path) -> None:
    session = create_session(onnx_text_dir / "model.onnx", device="cpu", intra_op_threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1


def test_loading_the_wrong_kind_of_export_fails(onnx_text_dir: Path) -> None:
    meta = json.loads((onnx_text_dir / "encoder.json").read_text())
    assert meta["kind"] == "hf-text"
    with pytest.raises(ValueError):
        OnnxEmotion2VecEncoder(onnx_text_dir, device="cpu")
