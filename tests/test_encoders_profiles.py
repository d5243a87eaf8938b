"""Encoder profiles: what each one holds, that they build (tiny, offline), deterministic tiny specs,
overrides that keep the spec, and the mismatch error naming both sides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from model.encoders.base import EncoderMismatchError, EncoderSpec, check_encoders_match
from model.encoders.profiles import (
    MINILM_NAME,
    PROFILES,
    build_encoders,
    encoder_specs,
    profile_specs,
    resolve_profile,
)


def test_profiles_hold_the_documented_encoders() -> None:
    assert set(PROFILES) == {"production", "offline", "offline-tuned", "tiny"}
    production, offline, tiny = PROFILES["production"], PROFILES["offline"], PROFILES["tiny"]
    assert (production.text.model, production.text.pooling) == ("bert-base-uncased", "cls")
    assert (production.audio.kind, production.audio.model) == ("emotion2vec", "iic/emotion2vec_base")
    assert (offline.text.name, offline.text.pooling, offline.audio.kind) == (MINILM_NAME, "mean", "prosody8")
    assert tiny.text.name == "tiny-bert" and tiny.audio.name == "tiny-emotion2vec"


def test_offline_tuned_profile_is_minilm_with_the_committed_delta(minilm_dir: Path, tmp_path: Path) -> None:
    """The committed delta applies to the packaged MiniLM (same base weights) and changes only its
    top layers: same architecture and tokenizer as the frozen encoder, other weights, other vectors."""
    tuned_config = PROFILES["offline-tuned"].text
    assert tuned_config.delta is not None and Path(tuned_config.delta).is_file()
    specs = {name: profile_specs(name)["text"] for name in ("offline", "offline-tuned")}
    assert specs["offline-tuned"].name == "hf:minilm-erc-v1:mean" and specs["offline-tuned"].dim == 384
    assert specs["offline-tuned"].version != specs["offline"].version
    encoders = {name: build_encoders(name, device="cpu")["text"] for name in ("offline", "offline-tuned")}
    sentences = ["I can't believe you did that to me!", "The train leaves at nine."]
    frozen, tuned = (encoders[n].encode_batch(sentences) for n in ("offline", "offline-tuned"))
    assert torch.allclose(tuned.norm(dim=1), torch.ones(2), atol=1e-5)  # still L2-normalised
    assert not torch.allclose(tuned, frozen, atol=1e-3)


def test_tiny_profile_builds_with_stable_specs(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    encoders = build_encoders("tiny", device="cpu", tiny_dir=tiny_encoder_dir)
    specs = encoder_specs(encoders)
    assert specs["text"].name == "hf:tiny-bert:cls" and specs["text"].dim == 32
    assert specs["audio"].name == "emotion2vec:tiny-emotion2vec" and specs["audio"].dim == 32
    # written afresh elsewhere (the one test that writes them again, on purpose): same weights, same specs
    assert profile_specs("tiny", tiny_dir=tmp_path / "elsewhere") == specs


def test_offline_profile_builds_minilm_and_prosody(minilm_dir: Path) -> None:
    specs = profile_specs("offline")
    assert specs["text"].name == f"hf:{MINILM_NAME}:mean" and specs["text"].dim == 384
    assert specs["audio"] == EncoderSpec("prosody8", specs["audio"].version, 8, "audio")


def test_model_override_keeps_the_canonical_spec(
    tiny_encoder_paths, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "models" / "my-bert"
    shutil.copytree(tiny_encoder_paths.text, moved)
    root = tiny_encoder_dir
    resolved = resolve_profile("tiny", text_model=str(moved), tiny_dir=root)
    assert resolved.text.model == str(moved) and resolved.text.name == "tiny-bert"
    overridden = encoder_specs(build_encoders("tiny", device="cpu", text_model=str(moved), tiny_dir=root))
    assert overridden["text"] == profile_specs("tiny", tiny_dir=root)["text"]


def test_spec_mismatch_raises_naming_both_sides(tiny_encoder_dir: Path) -> None:
    tiny = profile_specs("tiny", tiny_dir=tiny_encoder_dir)
    trained_on = {"text": tiny["text"], "audio": EncoderSpec("prosody8", "iemocap-readme-1", 8, "audio")}
    with pytest.raises(EncoderMismatchError) as info:
        check_encoders_match(trained_on, tiny)
    message = str(info.value)
    assert "prosody8" in message and "emotion2vec:tiny-emotion2vec" in message
    assert "text" not in message.split(";")[0].split(":")[0]  # only the audio side differs
    check_encoders_match(tiny, dict(tiny))  # equal specs pass


def test_unknown_profile_and_impossible_overrides_are_errors() -> None:
    with pytest.raises(KeyError):
        resolve_profile("enormous")
    with pytest.raises(ValueError):
        resolve_profile("offline", audio_model="/models/emotion2vec")  # prosody8 has no model
