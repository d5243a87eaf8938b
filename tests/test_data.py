"""Corpus readers: the shared IEMOCAP table, the generic JSONL, label sets, context, splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.data import (
    IEMOCAP_VALID_DIALOGUES,
    PROSODY_FEATURE,
    UnknownLabelsError,
    get_label_set,
    labelled_only,
    load_corpus,
    read_iemocap_table,
    read_jsonl,
    relabel,
    write_jsonl,
)
from model.paths import SHARED_ROOT

TABLE = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
needs_table = pytest.mark.skipif(not TABLE.exists(), reason=f"shared IEMOCAP table absent ({TABLE})")


@pytest.fixture(scope="module")
def iemocap():
    return read_iemocap_table(TABLE)


@needs_table
def test_iemocap4_counts_match_the_paper_protocol(iemocap):
    labelled = [(d.session, u.label) for d in iemocap.dialogues for u in d.utterances if u.label]
    assert len(labelled) == 5531
    assert sum(s != 5 for s, _ in labelled) == 4290
    assert sum(s == 5 for s, _ in labelled) == 1241
    assert Counter(lab for _, lab in labelled) == {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
    assert iemocap.labels == ["neutral", "happy", "sad", "angry"]


@needs_table
def test_iemocap_splits_test_is_session5_and_valid_is_whole_dialogues_of_sessions_1_to_4(iemocap):
    assert sum(len(d.utterances) for d in iemocap.dialogues) == 10039
    by_split = {s: iemocap.split(s) for s in ("train", "valid", "test")}
    assert {d.session for d in by_split["test"].dialogues} == {5}
    assert {d.dialogue_id for d in by_split["valid"].dialogues} == IEMOCAP_VALID_DIALOGUES
    assert all(d.session != 5 for d in by_split["valid"].dialogues + by_split["train"].dialogues)
    assert by_split["train"].n_labelled() + by_split["valid"].n_labelled() == 4290
    assert by_split["test"].n_labelled() == 1241


@needs_table
def test_iemocap_keeps_unlabelled_context_in_dialogue_order_with_prosody(iemocap):
    d = iemocap.dialogues[0]
    assert d.dialogue_id == "Ses01F_impro01"
    assert d.utterances[1].raw_label == "fru" and d.utterances[1].label is None  # context, not scored
    assert len(d.utterances[0].features[PROSODY_FEATURE]) == 8
    missing = [u.utterance_id for u in iemocap.utterances() if u.features[PROSODY_FEATURE] is None]
    assert len(missing) == 8
    assert sum(u.text is None for u in iemocap.utterances() if u.label) == 0


@needs_table
def test_labelled_only_keeps_exactly_the_labelled_utterances(iemocap):
    only = labelled_only(iemocap)
    assert sum(len(d.utterances) for d in only.dialogues) == 5531
    assert all(u.label is not None for u in only.utterances())
    assert read_iemocap_table(TABLE, labelled_only=True).n_labelled() == 5531


@needs_table
def test_iemocap6_label_set_maps_six_raw_labels(iemocap):
    six = relabel(iemocap, "iemocap6")
    assert six.labels == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert Counter(u.raw_label for u in six.utterances() if u.label).keys() == {
        "hap",
        "sad",
        "neu",
        "ang",
        "exc",
        "fru",
    }


def _generic_rows() -> list[dict]:
    return [
        {
            "dialogue_id": "d1",
            "turn": 1,
            "text": "fine, thanks",
            "label": "calm",
            "split": "test",
            "features": {"prosody8": [0.1] * 8},
        },
        {
            "dialogue_id": "d1",
            "turn": 0,
            "text": "how are you?",
            "label": None,
            "split": "test",
            "audio": "a.wav",
        },
        {"dialogue_id": "d2", "turn": 0, "text": None, "label": "angry"},
        {"dialogue_id": "d2", "turn": 1, "text": "stop it", "label": "angry"},
    ]


def test_generic_jsonl_reads_order_labels_audio_paths_and_features(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _generic_rows()) + "\n")
    corpus = read_jsonl(path)
    assert corpus.labels == ["angry", "calm"]  # the file's own labels, sorted
    d1 = next(d for d in corpus.dialogues if d.dialogue_id == "d1")
    assert [u.text for u in d1.utterances] == ["how are you?", "fine, thanks"]
    assert d1.split == "test"
    assert Path(d1.utterances[0].audio) == tmp_path / "a.wav"
    assert d1.utterances[0].label is None and d1.utterances[1].label == "calm"
    assert d1.utterances[1].features["prosody8"] == [0.1] * 8
    d2 = next(d for d in corpus.dialogues if d.dialogue_id == "d2")
    assert d2.split in ("train", "valid") and d2.utterances[0].text is None
    assert load_corpus(path).labels == corpus.labels  # format detection


def test_generic_jsonl_round_trip_preserves_everything(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _generic_rows()))
    corpus = read_jsonl(src, labels=["calm", "angry"])
    back = read_jsonl(write_jsonl(corpus, tmp_path / "out" / "copy.jsonl"), labels=["calm", "angry"])
    assert back.labels == ["calm", "angry"]

    def view(c):
        return [
            (
                d.dialogue_id,
                d.split,
                [(u.utterance_id, u.text, u.raw_label, u.label, u.features) for u in d.utterances],
            )
            for d in c.dialogues
        ]

    assert view(back) == view(corpus)


def test_generic_jsonl_hashed_validation_split_is_deterministic(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text(
        "\n".join(json.dumps({"dialogue_id": f"d{i}", "text": "x", "label": "a"}) for i in range(200))
    )
    first = [d.split for d in read_jsonl(path).dialogues]
    assert first == [d.split for d in read_jsonl(path).dialogues]
    assert 5 <= first.count("valid") <= 40 and set(first) == {"train", "valid"}


def test_label_sets_by_name_and_by_list():
    four = get_label_set("iemocap4")
    assert four.map("exc") == "happy" and four.map("fru") is None and four.index(None) == -1
    own = get_label_set("joy, anger")
    assert own.labels == ("joy", "anger") and own.map("anger") == "anger"
    assert np.array_equal([own.index("joy"), own.index("anger")], [0, 1])


def test_generic_jsonl_labels_are_class_names_and_unknown_ones_are_named(tmp_path):
    rows = [
        {"dialogue_id": "d", "text": "a", "label": "happy"},
        {"dialogue_id": "d", "text": "b", "label": "neutral"},
        {"dialogue_id": "d", "text": "c", "label": "exc"},
        {"dialogue_id": "d", "text": "d", "label": "exc"},
        {"dialogue_id": "d", "text": "e", "label": None},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UnknownLabelsError, match=r"'exc' \(2\)"):
        read_jsonl(path, labels="iemocap4")  # iemocap4's class names, not its raw codes
    rows[2]["label"] = rows[3]["label"] = "sad"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    corpus = read_jsonl(path, labels="iemocap4")
    assert corpus.labels == ["neutral", "happy", "sad", "angry"]
    assert [u.label for u in corpus.utterances()] == ["happy", "neutral", "sad", "sad", None]


def test_generic_jsonl_raw_codes_through_a_named_mapping(tmp_path):
    codes = ["hap", "exc", "neu", "fru", "ang", None]
    path = tmp_path / "codes.jsonl"
    path.write_text("\n".join(json.dumps({"dialogue_id": "d", "text": "x", "label": c}) for c in codes))
    corpus = read_jsonl(path, label_map="iemocap4")
    # fru is a code iemocap4 knowingly leaves out: unlabelled context, not an error
    assert [u.label for u in corpus.utterances()] == ["happy", "happy", "neutral", None, "angry", None]
    path.write_text(json.dumps({"dialogue_id": "d", "text": "x", "label": "joy"}))
    with pytest.raises(UnknownLabelsError, match="'joy' \\(1\\)"):
        read_jsonl(path, label_map="iemocap4")


def test_written_jsonl_holds_class_names_and_reads_back_with_the_same_labels(iemocap, tmp_path):
    if not TABLE.exists():
        pytest.skip(f"shared IEMOCAP table absent ({TABLE})")
    small = iemocap.split("test")
    back = read_jsonl(write_jsonl(small, tmp_path / "s5.jsonl"), labels=small.labels)
    assert [u.label for u in back.utterances()] == [u.label for u in small.utterances()]
    assert back.n_labelled() == 1241
