"""The RAVDESS folder as conversations (one per actor): names, labels, splits, order, JSONL round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from model.data import load_corpus, read_jsonl, write_jsonl
from model.paths import SHARED_ROOT
from model.ravdess import parse_name, ravdess_labels, read_ravdess
from tests.app_fixtures import wav_bytes

RAVDESS_12 = SHARED_ROOT / "data" / "speech" / "ravdess-01-12"


def fixture_folder(root: Path) -> Path:
    """Actors 03 (valid) and 09 (test): neutral, calm, happy, angry clips of both statements."""
    for actor in ("03", "09"):
        for emotion in ("01", "02", "03", "05"):
            for statement in ("01", "02"):
                name = f"03-01-{emotion}-01-{statement}-01-{actor}.wav"
                (root / name).write_bytes(wav_bytes(0.2, seed=int(emotion) + int(statement)))
    (root / "README.md").write_text("not a clip")
    return root


def test_reader_makes_one_conversation_per_actor_with_spoken_text_labels_and_fixed_splits(tmp_path):
    corpus = read_ravdess(fixture_folder(tmp_path))
    assert [d.dialogue_id for d in corpus.dialogues] == ["ravdess-actor03", "ravdess-actor09"]
    assert [d.split for d in corpus.dialogues] == ["valid", "test"]  # 01-06 choose, 07-12 report
    first = corpus.dialogues[0]
    assert len(first.utterances) == 6  # calm is not a class: dropped with classes_only
    assert Counter(u.label for u in first.utterances) == {"neutral": 2, "happy": 2, "angry": 2}
    for u in first.utterances:
        assert (
            u.text
            == {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}[
                parse_name(Path(u.utterance_id + ".wav"))["statement"]
            ]
        )
        assert Path(u.audio).is_file()
    labels = [u.label for u in first.utterances]
    assert labels != sorted(labels, key=["neutral", "happy", "angry"].index)  # not blocks of one emotion
    assert [u.utterance_id for u in read_ravdess(tmp_path).dialogues[0].utterances] == [
        u.utterance_id for u in first.utterances
    ]  # the same order every run


def test_other_emotions_can_stay_as_unlabelled_context_and_text_can_be_left_out(tmp_path):
    corpus = read_ravdess(fixture_folder(tmp_path), classes_only=False, transcripts=False)
    utts = list(corpus.utterances())
    assert len(utts) == 16 and sum(u.label is None for u in utts) == 4  # the calm clips
    assert all(u.text is None for u in utts)


def test_labels_follow_the_checkpoints_classes(tmp_path):
    six = ravdess_labels(["happy", "sad", "neutral", "angry", "excited", "frustrated"])
    corpus = read_ravdess(fixture_folder(tmp_path), six)
    assert corpus.labels == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert {u.label for u in corpus.utterances()} == {"neutral", "happy", "angry"}


def test_folder_round_trips_through_the_generic_jsonl(tmp_path):
    (tmp_path / "clips").mkdir()
    folder = fixture_folder(tmp_path / "clips")
    corpus = load_corpus(folder, "iemocap4")  # a folder without Session* is read as RAVDESS
    path = write_jsonl(corpus, tmp_path / "ravdess.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(Path(r["audio"]).is_absolute() and r["label"] in corpus.labels for r in rows)
    back = read_jsonl(path, labels=corpus.labels)
    assert [(u.utterance_id, u.label, u.text) for u in back.utterances()] == [
        (u.utterance_id, u.label, u.text) for u in corpus.utterances()
    ]
    assert [d.split for d in back.dialogues] == ["valid", "test"]


def test_names_that_are_not_ravdess_speech_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a RAVDESS"):
        parse_name(Path("03-02-01-01-01-01-01.wav"))  # 02 = song, not speech
    with pytest.raises(FileNotFoundError):
        read_ravdess(tmp_path)


@pytest.mark.skipif(not RAVDESS_12.is_dir(), reason=f"RAVDESS actors 01-12 absent ({RAVDESS_12})")
def test_shared_ravdess_actors_01_to_12_four_class_clips():
    corpus = read_ravdess(RAVDESS_12)
    assert len(corpus.dialogues) == 12
    by_split = Counter((d.split, u.label) for d in corpus.dialogues for u in d.utterances)
    for split in ("valid", "test"):
        assert by_split[(split, "neutral")] == 24 and by_split[(split, "angry")] == 48
