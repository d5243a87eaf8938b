"""The official IEMOCAP_full_release layout, read from a small fixture written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.data import load_corpus
from model.iemocap_release import read_iemocap_release

EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"

# dialogue -> [(utterance id, start, end, raw label, transcript or None)]; listed out of time order on purpose
DIALOGUES = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_M000", 7.5712, 10.475, "fru", "Do you have your forms?"),
        ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", "Excuse me."),
        ("Ses01F_impro01_F001", 10.01, 11.3925, "exc", "Yeah."),
        ("Ses01F_impro01_M001", 10.9266, 14.6649, "ang", None),
    ],
    "Ses05M_script01_1": [
        ("Ses05M_script01_1_F000", 1.0, 2.5, "sad", "I miss him."),
        ("Ses05M_script01_1_M000", 2.6, 4.0, "xxx", "I know."),
    ],
}


def write_release(root: Path) -> Path:
    for did, utts in DIALOGUES.items():
        session = root / f"Session{int(did[3:5])}"
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True)
        wav_dir = session / "sentences" / "wav" / did
        wav_dir.mkdir(parents=True)
        ev, tr = [EVAL_HEADER], []
        for k, (uid, start, end, emo, text) in enumerate(utts):
            ev.append(f"[{start:.4f} - {end:.4f}]\t{uid}\t{emo}\t[2.5000, 2.5000, 2.5000]\n")
            ev.append(f"C-E1:\t{emo.title()};\t()\nA-E1:\tval 3; act 3; dom  3;\t()\n\n")
            if text is not None:
                tr.append(f"{uid} [{start:08.4f}-{end:08.4f}]: {text}\n")
            t = np.arange(int(16000 * 0.2)) / 16000
            sf.write(
                wav_dir / f"{uid}.wav",
                (0.1 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32),
                16000,
            )
        tr.append("M_noise [000.0000-000.5000]: [LAUGHTER]\n")  # not an utterance of the evaluation file
        (session / "dialog" / "EmoEvaluation" / f"{did}.txt").write_text("".join(ev))
        (session / "dialog" / "transcriptions" / f"{did}.txt").write_text("".join(tr))
    return root


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "IEMOCAP_full_release")


def test_release_layout_gives_dialogues_in_time_order_with_text_audio_and_labels(release):
    corpus = read_iemocap_release(release)
    assert [d.dialogue_id for d in corpus.dialogues] == ["Ses01F_impro01", "Ses05M_script01_1"]
    d = corpus.dialogues[0]
    assert [u.utterance_id for u in d.utterances] == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01F_impro01_F001",
        "Ses01F_impro01_M001",
    ]
    assert [u.label for u in d.utterances] == [
        "neutral",
        None,
        "happy",
        "angry",
    ]  # exc -> happy, fru unlabelled
    assert [u.text for u in d.utterances] == ["Excuse me.", "Do you have your forms?", "Yeah.", None]
    assert all(Path(u.audio).exists() and Path(u.audio).suffix == ".wav" for u in d.utterances)
    assert d.session == 1 and d.split == "train"


def test_release_layout_session5_is_test_and_labelled_only_drops_context(release):
    corpus = read_iemocap_release(release, labelled_only=True)
    test = corpus.split("test")
    assert [d.dialogue_id for d in test.dialogues] == ["Ses05M_script01_1"]
    assert [u.utterance_id for u in test.dialogues[0].utterances] == ["Ses05M_script01_1_F000"]
    assert corpus.n_labelled() == 4


def test_release_layout_is_detected_from_a_directory_and_takes_iemocap6(release):
    corpus = load_corpus(release, "iemocap6")
    assert [u.label for u in corpus.dialogues[0].utterances] == ["neutral", "frustrated", "excited", "angry"]


def test_release_layout_features_come_through_the_audio_encoder(release, tmp_path):
    from model.encoders.base import EncoderSpec
    from model.features import FeatureCache, extract_features

    class Duration:  # a stand-in audio encoder: waveform length in seconds
        spec = EncoderSpec("duration", "1", 1, "audio")
        sample_rate = 8000

        def __init__(self):
            self.calls = 0

        def encode_batch(self, items):
            import torch

            self.calls += len(items)
            return torch.tensor([[len(y) / self.sample_rate] for y in items], dtype=torch.float32)

    enc = Duration()
    fs = extract_features(read_iemocap_release(release), {"audio": enc}, FeatureCache(tmp_path / "cache"))
    d = fs.dialogues[0]
    assert d.audio_mask.all() and not d.text_mask.any()  # no text encoder given
    assert d.audio[:, 0].tolist() == pytest.approx([0.2] * 4, abs=1e-3)  # resampled 16 kHz -> 8 kHz
    assert d.labels.tolist() == [0, -1, 1, 3]
    assert enc.calls == 4  # 6 files, but the second dialogue's two are byte-identical to two of the first
