"""`model.audio_transform = "prosody8-log"`: prosody-8's level features read as logs, so that a
microphone's gain becomes a shift the conversation's statistics remove (issue 15: speakers and
microphones the training data does not have)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.config import TrainConfig
from model.encoders.prosody import FEATURE_NAMES, GAIN_POWER
from model.export import check_graph_parity, export_lpgnet
from model.inputs import Prosody8Log
from model.lpgnet import LPGNet, LPGNetConfig

LEVEL_POWER = torch.tensor(GAIN_POWER)  # how each prosody-8 feature scales with a gain (checked below)


def _cfg(transform: str, mean_prior: float | None = None) -> LPGNetConfig:
    return LPGNetConfig(
        text_dim=6, audio_dim=8, hidden=8, context="causal", audio_norm="conversation",
        audio_transform=transform, audio_mean_prior=mean_prior,  # type: ignore[arg-type]
    )  # fmt: skip


def _conversation(u: int = 28, seed: int = 0) -> torch.Tensor:
    """(1, U, 8) prosody-8-like features: positive levels spread over a decade, silence in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.exp(torch.randn(1, u, 8, generator=g) - 4.0)
    x[..., 4] = torch.rand(1, u, generator=g)
    x[..., 5] = 0.01 * torch.randn(1, u, generator=g)  # the signed harmonic mean
    return x


def _standardised_audio(net: LPGNet, audio: torch.Tensor) -> torch.Tensor:
    """What the network's projection sees of each row: read, globally then conversation-standardised."""
    mask = torch.ones(audio.shape[:2])
    x = net.audio_norm(net.read_audio(audio)) * mask.unsqueeze(-1)
    assert net.audio_conv_norm is not None
    return net.audio_conv_norm(x, mask)


def _with_training_statistics(net: LPGNet, audio: torch.Tensor) -> LPGNet:
    from model.features import normalization_stats

    u = audio.shape[1]
    dialogue = SimpleNamespace(
        text=torch.zeros(u, 6), text_mask=torch.zeros(u, dtype=torch.bool), audio=audio[0],
        audio_mask=torch.ones(u, dtype=torch.bool),
    )  # fmt: skip
    features = SimpleNamespace(dialogues=[dialogue])  # what normalization_stats reads of a FeatureSet
    net.set_normalization(normalization_stats(features, {"audio": net.read_audio}))  # type: ignore[arg-type]
    return net


def test_the_log_reading_covers_every_feature_a_gain_scales() -> None:
    """Prosody8Log's logs are the features a gain multiplies (`GAIN_POWER` > 0) but the signed harmonic
    mean, which goes through asinh; the silence fraction, which no gain moves, stays as it is."""
    scaled = {i for i, power in enumerate(GAIN_POWER) if power > 0}
    assert set(Prosody8Log.LOG_DIMS) == scaled - {Prosody8Log.ASINH_DIM}
    assert FEATURE_NAMES[Prosody8Log.ASINH_DIM] == "harmonic" and Prosody8Log.ASINH_DIM in scaled
    assert GAIN_POWER[FEATURE_NAMES.index("silence")] == 0


def test_the_log_reading_keeps_a_quiet_microphones_spread_that_the_plain_one_loses() -> None:
    """A quieter microphone multiplies the level features by g or g^2. Read plainly, the conversation's
    standardisation then sees a tiny spread that its prior outweighs, and every utterance looks alike;
    read as logs, the gain is a shift the conversation's mean removes and the spread survives."""
    audio = _conversation()
    levels = list(Prosody8Log.LOG_DIMS)
    kept = {}
    for transform in ("none", "prosody8-log"):
        net = _with_training_statistics(LPGNet(_cfg(transform)).eval(), audio)
        for gain in (1 / 4, 1 / 16):  # -12 and -24 dB on the waveform
            with torch.no_grad():
                loud = _standardised_audio(net, audio)[0, 8:, levels]  # once the conversation has begun
                soft = _standardised_audio(net, audio * gain**LEVEL_POWER)[0, 8:, levels]
            kept[transform, gain] = float((soft.std(0) / loud.std(0)).mean())
    assert kept["prosody8-log", 1 / 4] > 0.75 > 0.5 > kept["none", 1 / 4]
    assert kept["prosody8-log", 1 / 16] > 3 * kept["none", 1 / 16]


def test_read_as_logs_and_centred_on_the_conversation_a_gain_changes_nothing() -> None:
    """audio_mean_prior = 0: the conversation's own mean (no prior on it), so the shift a gain becomes
    in log space is removed exactly, from the second utterance on."""
    audio = _conversation()
    levels = list(Prosody8Log.LOG_DIMS)
    net = _with_training_statistics(LPGNet(_cfg("prosody8-log", mean_prior=0.0)).eval(), audio)
    with torch.no_grad():
        loud = _standardised_audio(net, audio)[0, :, levels]
        soft = _standardised_audio(net, audio * (1 / 16) ** LEVEL_POWER)[0, :, levels]
    assert torch.allclose(loud, soft, atol=1e-4)
    assert float(loud[1:].std()) > 0.3  # not by answering nothing: the spread is there
    assert torch.equal(loud[0], torch.zeros_like(loud[0]))  # the first utterance has no reference yet


def test_statistics_are_taken_over_the_log_reading() -> None:
    audio = _conversation()
    net = _with_training_statistics(LPGNet(_cfg("prosody8-log")), audio)
    read = Prosody8Log()(audio[0])
    assert torch.allclose(net.audio_norm.mean, read.mean(0), atol=1e-5)
    assert float(net.audio_norm.mean[0]) < 0  # log of levels well under 1, not the levels themselves


def test_missing_audio_rows_stay_finite_and_a_network_without_the_reading_keeps_its_weights() -> None:
    x = torch.zeros(2, 3, 8)  # missing rows are zeros
    assert torch.isfinite(Prosody8Log()(x)).all()
    plain, logged = LPGNet(_cfg("none")), LPGNet(_cfg("prosody8-log"))
    assert set(logged.state_dict()) - set(plain.state_dict()) == {
        "audio_transform.log_dims",
        "audio_transform.asinh_dims",
    }  # so the reading is in `Checkpoint.version`, and every existing checkpoint keeps its digest


def test_a_mean_prior_is_part_of_the_checkpoint_version(tmp_path: Path) -> None:
    from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from model.encoders.base import EncoderSpec

    versions = {}
    for mean_prior in (None, 0.0, 1.0):
        torch.manual_seed(0)  # the same weights each time
        net = LPGNet(_cfg("prosody8-log", mean_prior))
        specs = {"audio": EncoderSpec("prosody8", "test", 8, "audio")}
        saved = Checkpoint(model=net, labels=["a", "b", "c", "d"], encoders=specs, profile="offline")
        path = save_checkpoint(saved, tmp_path / f"{mean_prior}.pt")
        loaded = load_checkpoint(path)
        assert loaded.config.audio_mean_prior == mean_prior
        versions[mean_prior] = loaded.version
    assert len(set(versions.values())) == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="8-d prosody-8"):
        LPGNet(LPGNetConfig(audio_dim=768, audio_transform="prosody8-log"))
    with pytest.raises(ValueError, match="audio_transform"):
        LPGNetConfig(audio_dim=8, audio_transform="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audio_mean_prior"):
        LPGNetConfig(audio_norm="global", audio_mean_prior=0.0)
    with pytest.raises(ValueError, match="kind = lpgnet"):
        TrainConfig.from_dict({"kind": "linear", "model": {"audio_transform": "prosody8-log"}})


def test_the_onnx_graph_reads_audio_as_the_module_does(tmp_path: Path) -> None:
    audio = _conversation()
    net = _with_training_statistics(LPGNet(_cfg("prosody8-log", mean_prior=1.0)).eval(), audio)
    path = export_lpgnet(net, tmp_path / "lpgnet.onnx")
    assert check_graph_parity(net, path) < 1e-3


def _voiced_with_pauses(seconds: float = 2.0) -> np.ndarray:
    """A 180 Hz voice-like tone, amplitude-modulated, with two pauses, at prosody-8's 44.1 kHz."""
    from model.encoders.prosody import SAMPLE_RATE

    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    y = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    y[(t > 0.5) & (t < 0.8)] = 0.0
    y[(t > 1.4) & (t < 1.6)] = 0.0
    return (y + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def _dialogue(audio: torch.Tensor):
    from model.features import DialogueFeatures

    u = audio.shape[0]
    return DialogueFeatures(
        "d", torch.zeros(u, 6), audio, torch.zeros(u, dtype=torch.bool), torch.ones(u, dtype=torch.bool),
        torch.zeros(u, dtype=torch.long),
    )  # fmt: skip


@pytest.mark.parametrize("db", [-12.0, -24.0, 6.0])
def test_gain_augmentation_gives_the_vectors_a_louder_or_quieter_microphone_would(db: float) -> None:
    """`augment.audio_gain_db` scales stored prosody-8 vectors; the features of the scaled waveform
    itself must agree, or training would teach a gain no microphone makes."""
    from model.augment import with_gain
    from model.encoders.prosody import prosody8

    y = _voiced_with_pauses()
    stored = torch.from_numpy(prosody8(y)).view(1, 8)
    augmented = with_gain(_dialogue(stored), db).audio[0]
    measured = torch.from_numpy(prosody8(np.clip(y * 10 ** (db / 20), -1, 1)))
    assert float(stored[0, 4]) > 0.05  # the pauses are there, so the silence fraction is tested too
    assert torch.allclose(augmented, measured, rtol=0.02, atol=1e-6)


@pytest.mark.parametrize("mean_prior", [None, 0.0, 1.0])
def test_the_knobs_round_trip_through_a_recipe_file(tmp_path: Path, mean_prior: float | None) -> None:
    sets = ["model.audio_norm=conversation", "model.audio_transform=prosody8-log", "augment.audio_gain_db=24"]
    sets += [] if mean_prior is None else [f"model.audio_mean_prior={mean_prior}"]
    cfg = TrainConfig().with_overrides(sets)
    (tmp_path / "train.toml").write_text(cfg.to_toml())
    back = TrainConfig.from_toml(tmp_path / "train.toml")
    assert back == cfg and back.model.audio_mean_prior == mean_prior


def test_gain_augmentation_draws_nothing_when_off_and_refuses_other_audio() -> None:
    from model.augment import with_gain

    with pytest.raises(ValueError, match="prosody-8"):
        with_gain(_dialogue(torch.ones(3, 768)), -12.0)
    with pytest.raises(ValueError, match="audio_gain_db"):
        TrainConfig.from_dict({"augment": {"audio_gain_db": -3}})
