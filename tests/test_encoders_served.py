"""Encoders served in onnxruntime by default on CPU (`model.encoders.factory.onnx_served`).

What has to hold for the default to be allowed: a graph serves only after its vectors match PyTorch
fp32 on the probes (int8 first, fp32 next, PyTorch last), it is exported once per encoder version, its
sessions follow the calling thread's core budget, and on real data the shipped checkpoint answers as
it does with the PyTorch encoders it was trained on: >= 99.5 % of its predictions unchanged on IEMOCAP
session 5 and on the RAVDESS validation actors (the issue's bound for every reduced precision).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.encoders import graphs as onnx_module
from model.encoders.factory import checkpoint_encoders, onnx_served
from model.encoders.graphs import PARITY_COSINE, parity_cosine, probe_inputs
from model.evaluate import predict_checkpoint
from model.paths import SHARED_ROOT

IEMOCAP = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
RAVDESS_12 = SHARED_ROOT / "data" / "speech" / "ravdess-01-12"


@pytest.fixture(scope="module")
def tiny_torch(tiny_encoder_dir: Path) -> dict[str, Any]:
    from model.encoders.profiles import build_encoders

    return {str(m): e for m, e in build_encoders("tiny", device="cpu", tiny_dir=tiny_encoder_dir).items()}


@pytest.fixture(scope="module")
def served(tiny_torch: dict[str, Any], graph_cache_module: Path) -> dict[str, Any]:
    return onnx_served(tiny_torch, cache_dir=graph_cache_module, precision="auto", threads=(1, 2))


@pytest.fixture(scope="module")
def graph_cache_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-graphs")


def test_every_transformer_is_served_by_a_graph_that_matches_pytorch_on_the_probes(
    tiny_torch: dict[str, Any], served: dict[str, Any]
) -> None:
    for modality, encoder in served.items():
        assert type(encoder).__name__.startswith("Onnx"), modality
        assert encoder.spec == tiny_torch[modality].spec  # a checkpoint trained on PyTorch's serves
        assert encoder.precision in ("int8", "fp32")
        probes = probe_inputs(tiny_torch[modality])
        assert parity_cosine(tiny_torch[modality], encoder, probes) >= PARITY_COSINE
        item = probes[1]
        a = tiny_torch[modality].encode_batch([item])[0]
        b = encoder.encode_batch([item])[0]
        assert a.shape == b.shape and torch.isfinite(b).all()


def test_a_served_vector_does_not_depend_on_its_batch(
    served: dict[str, Any], tiny_torch: dict[str, Any]
) -> None:
    """Dynamic int8 scales activations per call: a batch would make a text's vector depend on the texts
    beside it, and a replay or `lpgnet evaluate` (batches of 32) answer differently from the service."""
    for modality, encoder in served.items():
        items = probe_inputs(tiny_torch[modality])
        together = encoder.encode_batch(items)
        alone = torch.stack([encoder.encode_batch([item])[0] for item in items])
        assert torch.allclose(together, alone, atol=1e-6), (modality, encoder.precision)


def test_graphs_are_exported_once_per_encoder_version(
    tiny_torch: dict[str, Any],
    served: dict[str, Any],
    graph_cache_module: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graphs = sorted((graph_cache_module / "encoders").glob("*/model.onnx"))
    assert {p.parent.name.split("-")[0] for p in graphs} == {"text", "audio"}
    stamps = [p.stat().st_mtime_ns for p in graphs]
    # readable by other users of a shared cache (the image's service user, replicas on one volume)
    assert all(p.parent.stat().st_mode & 0o777 == 0o755 for p in graphs)
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in graphs)

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setitem(onnx_module._EXPORTERS, type(tiny_torch["text"]), no_export)
    monkeypatch.setitem(onnx_module._EXPORTERS, type(tiny_torch["audio"]), no_export)
    again = onnx_served(tiny_torch, cache_dir=graph_cache_module, precision="auto", threads=1)
    assert all(type(e).__name__.startswith("Onnx") for e in again.values())
    assert [p.stat().st_mtime_ns for p in graphs] == stamps


def test_a_graph_that_fails_parity_leaves_pytorch_serving_or_fails_when_onnx_is_required(
    tiny_torch: dict[str, Any], graph_cache_module: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(onnx_module, "PARITY_COSINE", 1.5)  # no graph can reach it
    with caplog.at_level(logging.WARNING):
        kept = onnx_served(tiny_torch, cache_dir=graph_cache_module, precision="auto")
    assert kept["text"] is not tiny_torch["text"]  # a copy: bf16 autocast where the CPU has it
    assert type(kept["text"]) is type(tiny_torch["text"]) and type(kept["audio"]) is type(tiny_torch["audio"])
    assert "stays in PyTorch" in caplog.text and "probe cosine" in caplog.text
    assert list((graph_cache_module / "encoders").glob("*/rejected.json"))  # remembered as failed
    with pytest.raises(ValueError, match="no onnxruntime graph serves the text encoder"):
        onnx_served(tiny_torch, cache_dir=graph_cache_module, precision="fp32", strict=True)


def test_a_warm_start_serves_the_cached_graphs_without_building_a_pytorch_encoder(
    tiny_encoder_dir: Path,
    tiny_specs: Any,
    served: dict[str, Any],
    graph_cache_module: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once exported, the checkpoint's recorded specs name the graphs and the probe vectors stored
    beside them are the reference: a start loads no PyTorch encoder (cold start) and serves the same."""
    from model.encoders import profiles

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a PyTorch encoder was built")

    monkeypatch.setattr(profiles, "build_text_encoder", no_build)
    monkeypatch.setattr(profiles, "build_audio_encoder", no_build)
    warm = checkpoint_encoders(
        tiny_specs,
        "tiny",
        device="cpu",
        precision="auto",
        backend="auto",
        cache_dir=graph_cache_module,
        tiny_dir=tiny_encoder_dir,
        intra_op_threads=(1, 2),
    )
    assert set(warm) == set(served)
    for modality, encoder in warm.items():
        assert type(encoder) is type(served[modality]) and encoder.precision == served[modality].precision
        assert encoder.spec == tiny_specs[modality]
        items = probe_inputs(encoder)
        assert torch.allclose(encoder.encode_batch(items[:2]), served[modality].encode_batch(items[:2]))


def test_a_reference_that_disagrees_is_not_served_from_the_cache_and_is_written_again(
    tiny_torch: dict[str, Any], tiny_specs: Any, tmp_path: Path
) -> None:
    """The stored vectors decide the warm path: replaced by noise, it serves nothing; the long way
    (PyTorch built) sees they are not its weights' and exports the graph again, which then serves."""
    from model.encoders.factory import cached_onnx_served

    onnx_served(tiny_torch, cache_dir=tmp_path, precision="fp32")
    references = sorted((tmp_path / "encoders").glob(f"*/{onnx_module.REFERENCE}"))
    assert len(references) == 2
    for reference in references:
        vectors = np.load(reference)
        np.save(reference, np.random.default_rng(0).standard_normal(vectors.shape).astype(np.float32))
    assert cached_onnx_served(tiny_specs, cache_dir=tmp_path, precision="fp32", device="cpu") == {}
    repaired = onnx_served(tiny_torch, cache_dir=tmp_path, precision="fp32")
    assert all(type(e).__name__.startswith("Onnx") for e in repaired.values())
    warm = cached_onnx_served(tiny_specs, cache_dir=tmp_path, precision="fp32", device="cpu")
    assert set(warm) == {"text", "audio"}


def test_an_unreadable_marker_or_a_broken_int8_copy_leaves_fp32_to_be_tried(
    tiny_torch: dict[str, Any], tiny_specs: Any, tmp_path: Path
) -> None:
    """Another process may be writing a marker, a copy may be damaged: the next candidate is tried."""
    from model.encoders.factory import cached_onnx_served

    onnx_served(tiny_torch, cache_dir=tmp_path, precision="auto")
    copies = [d for d in (tmp_path / "encoders").glob("*-int8*") if d.is_dir()]
    assert copies
    for copy_dir in copies:
        (copy_dir / onnx_module.REJECTED).write_text("")  # half written
        (copy_dir / "model.onnx").write_bytes(b"not a graph")
    served = cached_onnx_served(tiny_specs, cache_dir=tmp_path, precision="auto", device="cpu")
    assert {m: e.precision for m, e in served.items()} == {"text": "fp32", "audio": "fp32"}


def test_the_reference_is_fp32_on_cpu_whatever_the_exporting_encoder_runs_at(
    tiny_torch: dict[str, Any], tmp_path: Path
) -> None:
    import copy

    autocast = copy.copy(tiny_torch["text"])
    autocast.bf16 = True  # the engine's own encoder on a CPU with native bf16
    graph = onnx_module.export_encoder_cached(autocast, tmp_path)
    expected = onnx_module.encode_each(tiny_torch["text"], onnx_module.probe_inputs(tiny_torch["text"]))
    assert np.array_equal(np.load(graph / onnx_module.REFERENCE), expected)
    assert autocast.bf16 is True  # the encoder given is left as it was


def test_a_profile_without_the_transformer_never_takes_its_cached_graph(
    tiny_torch: dict[str, Any], tiny_specs: Any, graph_cache_module: Path, served: dict[str, Any]
) -> None:
    """A checkpoint recording emotion2vec served with a prosody profile, or the tiny BERT served with
    the profile of MiniLM, still fails the spec check although the graph of that very spec is cached:
    whether a start works never depends on what the cache holds."""
    from model.encoders.base import EncoderMismatchError

    for modality in ("audio", "text"):
        with pytest.raises(EncoderMismatchError):
            checkpoint_encoders(
                {modality: tiny_specs[modality]},
                "offline",
                device="cpu",
                precision="auto",
                backend="auto",
                cache_dir=graph_cache_module,
            )


def test_a_cpu_without_vnni_gets_seven_bit_int8_weights_beside_the_full_range_copy(
    tiny_torch: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime's u8s8 kernels saturate without VNNI (emotion2vec int8 fell to cosine 0.988 on an AVX2
    Zen 3); its remedy, 7-bit weights, is what such a CPU quantises to, in a copy of its own name."""
    import json

    from model.encoders import precision
    from model.encoders.graphs import quantize_encoder_graph, reference_cosine

    graph = onnx_module.export_encoder_cached(tiny_torch["audio"], tmp_path)
    (graph / onnx_module.REJECTED).write_text('{"cosine": 0.5}')  # the fp32 graph's verdict only
    monkeypatch.setattr(precision, "has_int8_dot_product", lambda: False)
    seven = quantize_encoder_graph(graph)
    monkeypatch.setattr(precision, "has_int8_dot_product", lambda: True)
    full = quantize_encoder_graph(graph)
    assert (seven.name, full.name) == (f"{graph.name}-int8-r7", f"{graph.name}-int8")
    for directory, reduced in ((seven, True), (full, False)):
        meta = json.loads((directory / "encoder.json").read_text())
        assert meta["precision"] == "int8" and meta["reduce_range"] is reduced
        assert not (directory / onnx_module.REJECTED).exists()
        encoder = onnx_module.load_onnx_encoder(directory, device="cpu", intra_op_threads=1)
        assert reference_cosine(directory, encoder) > 0.99  # the probes' reference travels with the copy
    assert (seven / "model.onnx").read_bytes() != (full / "model.onnx").read_bytes()


def test_precision_fp32_never_quantises(tiny_torch: dict[str, Any], graph_cache_module: Path) -> None:
    fp32 = onnx_served(tiny_torch, cache_dir=graph_cache_module, precision="fp32")
    assert {e.precision for e in fp32.values()} == {"fp32"}


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_session_per_thread_count_follows_the_callers_torch_count(
    served: dict[str, Any], restore_torch_threads: None
) -> None:
    encoder = served["text"]
    assert sorted(encoder.sessions) == [1, 2]
    torch.set_num_threads(1)
    assert encoder.session is encoder.sessions[1]
    torch.set_num_threads(2)
    assert encoder.session is encoder.sessions[2]
    torch.set_num_threads(4)  # more than any session: the widest
    assert encoder.session is encoder.sessions[2]


def test_backend_and_precision_combinations_are_checked(tiny_encoder_dir: Path, tiny_specs: Any) -> None:
    with pytest.raises(ValueError, match="int8"):
        checkpoint_encoders(
            tiny_specs, "tiny", device="cpu", precision="int8", backend="torch", tiny_dir=tiny_encoder_dir
        )
    with pytest.raises(ValueError, match="bf16"):
        checkpoint_encoders(
            tiny_specs, "tiny", device="cpu", precision="bf16", backend="onnx", tiny_dir=tiny_encoder_dir
        )
    torch_only = checkpoint_encoders(
        tiny_specs, "tiny", device="cpu", precision="bf16", backend="auto", tiny_dir=tiny_encoder_dir
    )
    assert not any(type(e).__name__.startswith("Onnx") for e in torch_only.values())


def _agreement(
    corpus: Path, split: str, modalities: str, graph_cache: Path, features: Path
) -> tuple[float, int, str]:
    """Share of the shipped checkpoint's answers that the served encoders leave unchanged, vs PyTorch fp32."""
    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    common: dict[str, Any] = {"modalities": modalities, "device": "cpu", "cache_dir": features}
    _, _, _, reference = predict_checkpoint(ckpt, corpus, split, backend="torch", precision="fp32", **common)
    ours = checkpoint_encoders(
        ckpt.encoders, ckpt.profile, device="cpu", precision="auto", backend="auto", cache_dir=graph_cache
    )
    precision = ours["text"].precision if "text" in ours else "none"
    _, _, _, served = predict_checkpoint(ckpt, corpus, split, encoders=ours, **common)
    ref = np.concatenate([p.probabilities.numpy() for p in reference])
    new = np.concatenate([p.probabilities.numpy() for p in served])
    assert ref.shape == new.shape
    return (
        float((ref.argmax(1) == new.argmax(1)).mean()),
        len(ref),
        f"{type(ours['text']).__name__}-{precision}",
    )


@pytest.mark.slow
@pytest.mark.skipif(not IEMOCAP.is_file(), reason=f"shared IEMOCAP table absent ({IEMOCAP})")
def test_shipped_checkpoint_answers_as_with_pytorch_on_iemocap_session5(
    graph_cache: Path, tmp_path: Path
) -> None:
    agreement, n, served = _agreement(IEMOCAP, "test", "text", graph_cache, tmp_path / "features")
    assert served.startswith("Onnx")  # the default really is onnxruntime here
    assert n > 1241 and agreement >= 0.995, (served, agreement)


@pytest.mark.slow
@pytest.mark.skipif(not RAVDESS_12.is_dir(), reason=f"RAVDESS actors 01-12 absent ({RAVDESS_12})")
def test_shipped_checkpoint_answers_as_with_pytorch_on_ravdess_validation(
    graph_cache: Path, tmp_path: Path
) -> None:
    agreement, n, served = _agreement(RAVDESS_12, "valid", "both", graph_cache, tmp_path / "features")
    assert n >= 168 and agreement >= 0.995, (served, agreement)
