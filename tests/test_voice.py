"""The voice expert (`model.voice`): its fit, its causal reading, how it joins the networks' answer
(`model.voice.voice_added`), the checkpoint that carries it, and the encoder that feeds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint, with_voice
from model.encoders.base import EncoderSpec
from model.lpgnet import LPGNet, LPGNetConfig
from model.paths import SHARED_ROOT
from model.serving import LastRowNetwork, ServingContract, last_row_logits, served_network
from model.voice import VoiceExpert, fit_voice_expert, served_vectors, voice_added

SPEC = EncoderSpec("egemaps:test", "1", 6, "audio")
LABELS = ["neutral", "happy", "sad", "angry"]
RAVDESS_12 = SHARED_ROOT / "data" / "speech" / "ravdess-01-12"


def dialogue(generator: torch.Generator, n: int, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A speaker whose features sit at their own `level` (a microphone), shifted by class."""
    y = torch.randint(0, 4, (n,), generator=generator)
    e = level + torch.randn(n, SPEC.dim, generator=generator) * 0.5
    e[torch.arange(n), y] += 2.0  # class c raises feature c
    return e, y


def fitted(seed: int = 0, weight: float = 1.0) -> VoiceExpert:
    g = torch.Generator().manual_seed(seed)
    train = [dialogue(g, 40, level) for level in (-3.0, 0.5, 4.0, 9.0)]
    return fit_voice_expert(train, SPEC, LABELS, c=1.0, weight=weight, prior=4.0, mean_prior=1.0)


def test_a_fitted_expert_hears_the_classes_of_a_new_speaker_at_another_level() -> None:
    expert = fitted()
    e, y = dialogue(torch.Generator().manual_seed(7), 60, level=20.0)  # a level no training speaker had
    logp = expert.log_probs(e[None], torch.ones(1, 60, dtype=torch.bool), causal=True)[0]
    accuracy = float((logp.argmax(-1) == y).float().mean())
    assert accuracy > 0.6  # chance is 0.25; the conversation's own statistics remove the level
    assert torch.allclose(logp.exp().sum(-1), torch.ones(60), atol=1e-5)


def test_the_expert_reads_a_row_alike_in_the_whole_dialogue_and_in_the_window_ending_at_it() -> None:
    """Training normalises whole dialogues (causally); the service, each window it scores: the same
    vectors, so the same log-probabilities."""
    expert = fitted()
    e, _ = dialogue(torch.Generator().manual_seed(3), 12, level=2.0)
    m = torch.ones(1, 12, dtype=torch.bool)
    m[0, 4] = False  # a text-only utterance: no audio, not counted in the statistics
    whole = expert.log_probs(e[None] * m[..., None], m, causal=True)[0]
    for i in range(12):
        window = expert.log_probs(e[None, : i + 1] * m[..., : i + 1, None], m[:, : i + 1], causal=True)[0]
        assert torch.allclose(window[-1], whole[i], atol=1e-5)
    assert whole[4].abs().sum() == 0  # silent where there is no clip


@pytest.mark.parametrize("causal", [True, False])
def test_training_vectors_are_the_services_rows_when_the_window_slides(causal: bool) -> None:
    """A conversation longer than K (and bidirectional statistics): each row is trained on as the service
    reads it, the last row of the window of K clips ending at it, not from the whole dialogue."""
    expert = fitted()
    e, _ = dialogue(torch.Generator().manual_seed(4), 10, level=1.0)
    trained = served_vectors(expert, e, window=4, causal=causal)
    for i in range(10):
        lo = max(0, i - 3)
        served = expert.normalised(
            e[None, lo : i + 1], torch.ones(1, i + 1 - lo, dtype=torch.bool), causal=causal
        )
        assert torch.allclose(trained[i], served[0, -1], atol=1e-6)
    whole = expert.normalised(e[None], torch.ones(1, 10, dtype=torch.bool), causal=causal)[0]
    assert not torch.allclose(trained[9], whole[9], atol=1e-3)  # past the window the statistics differ
    if causal:  # within the first window nothing differs
        assert torch.allclose(trained[:4], whole[:4], atol=1e-6)


def test_an_expert_of_the_wrong_shape_is_refused() -> None:
    good = fitted()
    with pytest.raises(ValueError, match="coef"):
        VoiceExpert(**{**good.__dict__, "coef": torch.zeros(3, SPEC.dim)})
    with pytest.raises(ValueError, match="weight"):
        VoiceExpert(**{**good.__dict__, "weight": -1.0})


def test_the_fit_needs_every_class_and_a_positive_strength() -> None:
    g = torch.Generator().manual_seed(0)
    e, y = dialogue(g, 30, 0.0)
    with pytest.raises(ValueError, match="every class"):
        fit_voice_expert([(e, y.clamp(max=2))], SPEC, LABELS, c=1.0, weight=1.0, prior=4.0, mean_prior=None)
    with pytest.raises(ValueError, match="c > 0"):
        fit_voice_expert([(e, y)], SPEC, LABELS, c=0.0, weight=1.0, prior=4.0, mean_prior=None)


def constant_network(value: float) -> LastRowNetwork:
    def rows(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        assert a.shape[-1] == 3  # the networks read their own audio features only
        return torch.full((*t.shape[:2], 4), value)

    return LastRowNetwork(rows, last_row_logits(rows))


def test_voice_added_joins_only_the_rows_that_carry_the_experts_features() -> None:
    expert = fitted(weight=0.5)
    g = torch.Generator().manual_seed(1)
    e, _ = dialogue(g, 6, 1.0)
    a = torch.cat([torch.randn(6, 3), e], -1)[None]  # (1, 6, 3 + E): the network's part, then the expert's
    am = torch.tensor([[True, True, False, True, True, True]])
    a[0, 2] = 0
    a[0, 5, 3:] = 0  # a clip of a corpus that stores only the network's features
    t, tm = torch.zeros(1, 6, 2), torch.ones(1, 6, dtype=torch.bool)
    joined = voice_added(constant_network(1.0), expert, 3, causal=True)
    out = joined(t, a, tm, am)[0]
    heard = 0.5 * expert.log_probs(a[..., 3:], am, causal=True)[0]
    assert torch.allclose(out, 1.0 + heard)
    assert torch.equal(out[2], torch.ones(4)) and torch.equal(out[5], torch.ones(4))
    assert (out[0] != 1.0).all()
    assert isinstance(joined, LastRowNetwork)  # the service's last-row pass survives, and agrees
    assert torch.allclose(joined.last(t[:, :4], a[:, :4], tm[:, :4], am[:, :4])[0, 0], out[3])
    # a window of the networks' own width (an older store, a corpus's prosody): the networks alone
    assert torch.equal(joined(t, a[..., :3], tm, am), torch.ones(1, 6, 4))


def test_served_network_adds_the_voice_on_top_of_the_routing() -> None:
    expert = fitted()
    routed = served_network(
        constant_network(0.0), None, ServingContract(), causal=True, voice=expert, audio_dim=3
    )
    e, _ = dialogue(torch.Generator().manual_seed(2), 3, 0.0)
    a = torch.cat([torch.zeros(3, 3), e], -1)[None]
    out = routed(
        torch.zeros(1, 3, 2), a, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    )
    assert torch.allclose(
        out[0], expert.log_probs(e[None], torch.ones(1, 3, dtype=torch.bool), causal=True)[0]
    )
    with pytest.raises(ValueError, match="audio_dim"):
        served_network(constant_network(0.0), None, ServingContract(), causal=True, voice=expert)


def tiny_checkpoint(tmp_path: Path):  # type: ignore[no-untyped-def]
    from model.checkpoint import Checkpoint

    cfg = LPGNetConfig(text_dim=4, audio_dim=3, hidden=8, heads=2, num_classes=4)
    text, audio = EncoderSpec("text:test", "1", 4, "text"), EncoderSpec("audio:test", "1", 3, "audio")
    ckpt = Checkpoint(
        model=LPGNet(cfg).eval(), labels=list(LABELS), encoders={"text": text, "audio": audio}, profile="test"
    )
    save_checkpoint(ckpt, tmp_path / "plain.pt")
    return load_checkpoint(tmp_path / "plain.pt")


def test_a_checkpoint_carries_its_voice_expert_and_names_the_features_it_is_fed(tmp_path: Path) -> None:
    plain = tiny_checkpoint(tmp_path)
    expert = fitted()
    voiced = with_voice(plain, expert)
    save_checkpoint(voiced, tmp_path / "voiced.pt")
    loaded = load_checkpoint(tmp_path / "voiced.pt")
    # a reader from before voice experts checks the format number and refuses the file, rather than
    # answering without the expert under the file's version
    assert torch.load(tmp_path / "voiced.pt", weights_only=True)["format_version"] == 2
    assert torch.load(tmp_path / "plain.pt", weights_only=True)["format_version"] == 1
    assert loaded.voice is not None and loaded.version == voiced.version != plain.version
    assert torch.equal(loaded.voice.coef, expert.coef) and loaded.voice.weight == expert.weight
    assert loaded.voice.mean_prior == 1.0 and loaded.training["voice"]["clips"] == 160
    from model.encoders.voiced import voiced_spec

    served = voiced_spec(loaded.encoders["audio"], loaded.voice.spec)  # what the service stores
    assert (served.name, served.dim) == ("audio:test+egemaps:test", 3 + SPEC.dim)
    heavier = with_voice(plain, fitted(weight=2.0))
    save_checkpoint(heavier, tmp_path / "heavier.pt")
    assert heavier.version != voiced.version  # the weight changes the answers, so the version
    six = fitted()
    with pytest.raises(ValueError, match="classes"):
        with_voice(plain, VoiceExpert(**{**six.__dict__, "labels": ("a", "b", "c", "d")}))


def test_the_voiced_encoder_is_the_networks_features_then_egemaps(ravdess_paths: list[Path]) -> None:
    pytest.importorskip("opensmile")
    from model.encoders.audio import resample
    from model.encoders.egemaps import EGeMAPSEncoder
    from model.encoders.factory import voiced_encoders
    from model.encoders.prosody import Prosody8Encoder
    from model.features import load_waveform

    prosody, egemaps = Prosody8Encoder(), EGeMAPSEncoder()
    voiced = voiced_encoders({"audio": prosody}, egemaps.spec)["audio"]
    assert voiced.spec.dim == 8 + 88 and voiced.sample_rate == prosody.sample_rate
    wave = load_waveform(ravdess_paths[0], prosody.sample_rate)  # as `lpgnet evaluate` reads a file
    row = voiced.encode_batch([wave])[0]
    assert torch.equal(row[:8], prosody.encode_batch([wave])[0])
    assert torch.allclose(row[8:], egemaps.encode_batch([resample(wave, prosody.sample_rate, 16_000)])[0])
    with pytest.raises(Exception, match="trained on"):
        voiced_encoders({"audio": prosody}, EncoderSpec(egemaps.spec.name, "opensmile-0.0", 88, "audio"))


def test_a_corpus_storing_only_prosody8_is_read_with_the_expert_silent() -> None:
    pytest.importorskip("opensmile")
    from model.data import Corpus, Dialogue, Utterance
    from model.encoders.egemaps import EGeMAPSEncoder
    from model.encoders.factory import voiced_encoders
    from model.encoders.prosody import Prosody8Encoder
    from model.features import extract_features
    from model.labels import LabelSet

    labels = LabelSet("t", tuple(LABELS), {c: c for c in LABELS}, frozenset())
    prosody = Prosody8Encoder()
    utts = [
        Utterance(
            f"u{i}", raw_label="sad", label="sad", features={prosody.spec.name: list(np.arange(8.0) + i)}
        )
        for i in range(3)
    ]
    corpus = Corpus("c", [Dialogue("d", utts, None, "test")], labels)
    voiced = voiced_encoders({"audio": prosody}, EGeMAPSEncoder().spec)
    d = extract_features(corpus, voiced).dialogues[0]
    assert d.audio.shape == (3, 96) and bool(d.audio_mask.all())
    assert torch.equal(
        d.audio[:, :8], torch.tensor([list(np.arange(8.0) + i) for i in range(3)], dtype=torch.float32)
    )
    assert d.audio[:, 8:].abs().sum() == 0


@pytest.mark.skipif(not RAVDESS_12.is_dir(), reason=f"RAVDESS actors 01-12 absent ({RAVDESS_12})")
def test_an_expert_fit_on_five_ravdess_actors_hears_the_sixth(tmp_path: Path) -> None:
    """Validation actors only (01-06): fit on 01-05, heard on 06's clips as the service reads them."""
    pytest.importorskip("opensmile")
    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.cli_voice import voice_dialogues
    from model.encoders.egemaps import EGeMAPSEncoder

    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    clips = voice_dialogues(ckpt, RAVDESS_12, "valid", cache_dir=tmp_path)
    assert [d.dialogue_id for d in clips] == [f"ravdess-actor{a:02d}" for a in range(1, 7)]
    cfg = ckpt.config
    expert = fit_voice_expert(
        [(d.features, d.labels) for d in clips[:5]],
        EGeMAPSEncoder().spec,
        ckpt.labels,
        c=0.1,
        weight=1.0,
        prior=cfg.audio_prior,
        mean_prior=cfg.audio_mean_prior,
    )
    held_out = clips[5]
    logp = expert.log_probs(
        held_out.features[None], torch.ones(1, len(held_out.labels), dtype=torch.bool), causal=True
    )[0]
    predicted, y = logp.argmax(-1), held_out.labels
    ua = np.mean([float((predicted[y == c] == c).float().mean()) for c in range(4)])
    assert ua > 0.4  # chance 0.25


def test_vectors_a_shared_store_kept_from_before_the_expert_are_heard_by_the_networks_alone() -> None:
    """A rolling upgrade: Redis holds 8-d vectors of the previous checkpoint's replicas; the voiced one
    reads them with the expert's part zero (silent), and a downgrade drops the part it does not hear."""
    from app.workers import fitted_audio

    old, new = np.arange(8, dtype=np.float16), np.arange(96, dtype=np.float16)
    padded = fitted_audio(old, 96, 8)
    assert padded is not None and padded.shape == (96,) and not padded[8:].any()
    assert np.array_equal(padded[:8], old) and padded.dtype == old.dtype
    assert fitted_audio(new, 8, 8) is not None and np.array_equal(fitted_audio(new, 8, 8), new[:8])
    assert fitted_audio(new, 96, 8) is new and fitted_audio(None, 96, 8) is None
    odd = np.zeros(5, np.float16)
    assert fitted_audio(odd, 96, 8) is odd  # another encoder's vector: refused downstream, not guessed
    expert = fitted()
    e = torch.zeros(1, 1, SPEC.dim)
    assert expert.log_probs(e, torch.ones(1, 1, dtype=torch.bool), causal=True).abs().sum() == 0


def test_a_clip_with_a_stored_prosody8_vector_too_is_heard_from_its_audio(ravdess_paths: list[Path]) -> None:
    """Where the corpus has the audio, evaluation computes from it, as the service does."""
    pytest.importorskip("opensmile")
    from model.data import Corpus, Dialogue, Utterance
    from model.encoders.egemaps import EGeMAPSEncoder
    from model.encoders.factory import voiced_encoders
    from model.encoders.prosody import Prosody8Encoder
    from model.features import extract_features
    from model.labels import LabelSet

    labels = LabelSet("t", tuple(LABELS), {c: c for c in LABELS}, frozenset())
    prosody = Prosody8Encoder()
    stored: dict[str, list[float] | None] = {prosody.spec.name: [1.0] * 8}
    utt = Utterance("u0", audio=ravdess_paths[0], raw_label="sad", label="sad", features=stored)
    corpus = Corpus("c", [Dialogue("d", [utt], None, "test")], labels)
    d = extract_features(corpus, voiced_encoders({"audio": prosody}, EGeMAPSEncoder().spec)).dialogues[0]
    assert d.audio[0, 8:].abs().sum() > 0  # the expert hears the clip
    assert not torch.equal(d.audio[0, :8], torch.ones(8))  # and prosody-8 is the clip's, like the service's
