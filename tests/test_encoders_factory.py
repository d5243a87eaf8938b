"""`checkpoint_encoders`, the one function that builds a checkpoint's encoders for the service,
`lpgnet evaluate` and `lpgnet export`: only the checkpoint's modalities, specs checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from model.encoders.base import EncoderMismatchError, EncoderSpec
from model.encoders.factory import checked_encoders, checkpoint_encoders
from model.encoders.profiles import profile_specs

TEXT = EncoderSpec("fake-text", "v1", 4, "text")
AUDIO = EncoderSpec("fake-audio", "v1", 3, "audio")


@dataclasses.dataclass
class FakeEncoder:
    spec: EncoderSpec
    sample_rate: int | None = None

    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor:
        return torch.zeros(len(items), self.spec.dim)


def test_only_the_checkpoints_modalities_are_kept() -> None:
    encoders = {"text": FakeEncoder(TEXT), "audio": FakeEncoder(AUDIO, 16_000)}
    kept = checked_encoders({"text": TEXT}, encoders)
    assert kept == {"text": encoders["text"]}


def test_a_mismatch_names_the_source_and_both_specs() -> None:
    other = dataclasses.replace(TEXT, version="v2")
    with pytest.raises(EncoderMismatchError) as info:
        checked_encoders({"text": other}, {"text": FakeEncoder(TEXT)}, "the encoders of profile 'fake'")
    message = str(info.value)
    assert "profile 'fake' do not match" in message
    assert "version='v2'" in message and "version='v1'" in message


def test_a_checkpoint_gets_its_profiles_encoders_or_a_mismatch(tiny_encoder_paths) -> None:
    root = tiny_encoder_paths.text.parent
    specs = profile_specs("tiny", tiny_dir=root)
    built = checkpoint_encoders(
        {"audio": specs["audio"]}, "tiny", device="cpu", precision="fp32", tiny_dir=root
    )
    assert {m: e.spec for m, e in built.items()} == {"audio": specs["audio"]}
    wrong = {"text": dataclasses.replace(specs["text"], version="retrained")}
    with pytest.raises(EncoderMismatchError, match="profile 'tiny'"):
        checkpoint_encoders(wrong, "tiny", device="cpu", precision="fp32", tiny_dir=root)
