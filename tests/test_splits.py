"""Choosing a recipe without touching the test data: leave-one-session-out folds
(`model.splits.holdout_session`, `lpgnet train --holdout-session`, `scripts/loso.py`), split
overrides (`model.splits.override_splits`) and validation carved from training for a corpus without
a test split (`model.splits.valid_from_train`).

A recipe is chosen on IEMOCAP sessions 1-4 held out in turn; session 5 must never be loaded as data
in a fold, and no other corpus may print a test figure while a recipe is chosen.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.cli import cli
from model.config import DataConfig, TrainConfig
from model.data import (
    IEMOCAP_VALID_DIALOGUES,
    Corpus,
    Dialogue,
    Utterance,
    load_corpus,
    read_iemocap_table,
)
from model.labels import get_label_set
from model.paths import SHARED_ROOT
from model.splits import holdout_session, override_splits, training_corpora, valid_from_train

REPO = Path(__file__).resolve().parents[1]
TABLE = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
needs_table = pytest.mark.skipif(not TABLE.exists(), reason=f"shared IEMOCAP table absent ({TABLE})")
WORDS = {"hap": "great wonderful love yes", "sad": "sorry miss cry alone", "ang": "stop hate never shut"}


@needs_table
@pytest.mark.parametrize("session", [1, 2, 3, 4])
def test_a_fold_holds_one_session_out_and_never_loads_session_5(session):
    corpus = read_iemocap_table(TABLE)
    fold = holdout_session(corpus, session)
    assert {d.session for d in fold.dialogues} == {1, 2, 3, 4}
    test = fold.split("test").dialogues
    assert {d.session for d in test} == {session}
    # the whole session is held out, its COSMIC validation dialogues included
    whole = [d for d in corpus.dialogues if d.session == session]
    assert [d.dialogue_id for d in test] == [d.dialogue_id for d in whole]
    assert sum(d.n_labelled for d in test) == sum(d.n_labelled for d in whole) > 900
    # early stopping reads the validation dialogues of the other sessions; training the rest
    valid = {d.dialogue_id for d in fold.split("valid").dialogues}
    assert valid == {d for d in IEMOCAP_VALID_DIALOGUES if int(d[3:5]) != session}
    train = fold.split("train").dialogues
    assert all(d.session != session and d.dialogue_id not in IEMOCAP_VALID_DIALOGUES for d in train)
    assert len(train) + len(valid) + len(test) == sum(d.session != 5 for d in corpus.dialogues)


def _corpus(name: str, sessions: tuple[int | None, ...] = (None, None, None)) -> Corpus:
    ls = get_label_set("iemocap4")
    dialogues = [
        Dialogue(f"{name}-{split}", [Utterance(f"{name}-{split}-0", "hi", label="happy")], session, split)
        for split, session in zip(("train", "valid", "test"), sessions, strict=True)
    ]
    return Corpus(name, dialogues, ls)


def test_corpora_without_sessions_lose_their_test_split_and_bad_sessions_are_refused():
    for name in ("dailydialog", "ravdess", "iemocap_lookalike"):
        fold = holdout_session(_corpus(name), 2)
        assert [d.split for d in fold.dialogues] == ["train", "valid"]
    # the sessions decide, not the corpus's name: an IEMOCAP export under another name is a fold too
    fold = holdout_session(_corpus("mychat", (1, 2, 5)), 2)
    assert [(d.dialogue_id, d.split) for d in fold.dialogues] == [
        ("mychat-train", "train"),
        ("mychat-valid", "test"),
    ]
    for bad in (0, 5, 6):
        with pytest.raises(ValueError, match="held-out session must be one of"):
            holdout_session(_corpus("iemocap"), bad)
    with pytest.raises(ValueError, match="holdout_session"):
        TrainConfig().with_overrides(["data.holdout_session=5"])


def write_iemocap_table(path: Path) -> Path:
    """A tiny table in the shared IEMOCAP format: sessions 1-5, one COSMIC validation dialogue and
    one training dialogue each (session 5's are named like its real ones)."""
    rng = random.Random(0)
    valid = {1: "Ses01M_impro01", 2: "Ses02F_impro02", 3: "Ses03F_impro01", 4: "Ses04F_impro07"}
    rows = []
    for session in range(1, 6):
        for did in (valid.get(session, f"Ses05F_impro0{session}"), f"Ses0{session}M_script09_1"):
            for turn in range(6):
                code = rng.choice(list(WORDS))
                rows.append(
                    {
                        "utterance_id": f"{did}_F{turn:03d}",
                        "dialogue_id": did,
                        "session": session,
                        "speaker": "F",
                        "transcript": " ".join(rng.sample(WORDS[code].split(), 2)),
                        "emotion": code,
                        "prosody": [rng.random() + (code == "ang") for _ in range(8)],
                    }
                )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _train(*args: str) -> object:
    return CliRunner().invoke(
        cli,
        ["train", *args, "--profile", "offline", "--set", "model.hidden=8", "--set", "optim.epochs=1"]
        + ["--seeds", "1", "--no-plots", "--device", "cpu"],
    )


def test_a_fold_is_whole_under_a_training_limit_and_needs_sessions(tmp_path):
    table = write_iemocap_table(tmp_path / "utterances.jsonl")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    result = _train(
        "--data", str(table), "--holdout-session", "2", "--train-dialogues", "iemocap=2",
        "--out", str(tmp_path / "run"), *cache,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the limit counts this run's training dialogues; the held-out session stays whole
    assert metrics["splits"]["test"] == {"dialogues": 2, "labelled": 12}
    assert metrics["splits"]["train"]["dialogues"] == 2
    assert "held-out session 2" in result.output
    generic = tmp_path / "chat.jsonl"
    generic.write_text(
        "\n".join(
            json.dumps({"dialogue_id": f"d{i}", "text": "great love", "label": "happy", "split": split})
            for i, split in enumerate(["train", "train", "valid", "test"])
        )
    )
    result = _train("--data", str(generic), "--holdout-session", "1", "--out", str(tmp_path / "r2"), *cache)
    assert result.exit_code == 2 and "no labelled utterance of that session" in result.output


@pytest.mark.slow
def test_loso_script_trains_four_folds_and_pools_their_held_out_figures(tmp_path):
    table = write_iemocap_table(tmp_path / "utterances.jsonl")
    assert load_corpus(table).name == "iemocap"
    config = tmp_path / "train.toml"
    config.write_text(
        f'[data]\npaths = ["{table}"]\nlabels = "iemocap4"\nprofile = "offline"\n'
        '[model]\nhidden = 8\ncontext = "causal"\n[optim]\nepochs = 2\npatience = 2\n'
    )
    common = [sys.executable, str(REPO / "scripts" / "loso.py")]
    for out in ("a", "b"):
        result = subprocess.run(
            [*common, "--config", str(config), "--out", str(tmp_path / out), "--seeds", "1", "--jobs", "2"]
            + ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
            + (["--set", "optim.lr=0.01"] if out == "b" else []),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    for session in (1, 2, 3, 4):
        metrics = json.loads((tmp_path / "a" / f"fold{session}" / "metrics.json").read_text())
        assert metrics["data"]["holdout_session"] == session
        # the held-out split is the whole session (12 utterances, 3 classes of 4 may be absent)
        assert metrics["splits"]["test"] == {"dialogues": 2, "labelled": 12}
        assert metrics["splits"]["valid"]["dialogues"] == 3  # the other sessions' validation dialogues
        assert metrics["splits"]["train"]["dialogues"] == 3  # session 5 never
    summary = json.loads((tmp_path / "a" / "loso.json").read_text())
    assert summary["runs"] == 4 and summary["folds"] == [1, 2, 3, 4]
    assert summary["held_out"]["both"]["accuracy"]["n"] == 4
    assert set(summary["per_fold_accuracy"]["both"]) == {"1", "2", "3", "4"}
    again = subprocess.run(
        [*common, "--out", str(tmp_path / "b"), "--summary-only", "--baseline", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    paired = json.loads((tmp_path / "b" / "loso.json").read_text())["paired_accuracy_difference"]

    def accuracy(out: str, session: int) -> float:
        metrics = json.loads((tmp_path / out / f"fold{session}" / "metrics.json").read_text())
        return metrics["runs"][0]["test"]["both"]["accuracy"]

    # each fold's run against the same fold's run (a mispairing changes the spread, not the mean)
    diffs = [accuracy("b", k) - accuracy("a", k) for k in (1, 2, 3, 4)]
    assert paired["both"]["n"] == 4
    assert paired["both"]["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-9)
    assert paired["both"]["std"] == pytest.approx(statistics.stdev(diffs), abs=1e-9)
    assert paired["both"]["stderr"] == pytest.approx(statistics.stdev(diffs) / 2, abs=1e-9)
    assert "paired difference [both]" in again.stdout


def test_split_overrides_move_named_dialogues_and_refuse_unknown_ones(tmp_path):
    iemocap, ravdess = _corpus("iemocap"), _corpus("ravdess")
    moved = override_splits([iemocap, ravdess], {"ravdess-valid": "train", "iemocap-test": "valid"})
    assert [d.split for d in moved[0].dialogues] == ["train", "valid", "valid"]
    assert [d.split for d in moved[1].dialogues] == ["train", "train", "test"]
    assert [d.split for d in ravdess.dialogues] == ["train", "valid", "test"]  # the input is unchanged
    with pytest.raises(ValueError, match=r"no dialogue \['ravdess-actor99'\]"):
        override_splits([ravdess], {"ravdess-actor99": "train"})
    with pytest.raises(ValueError, match="unknown splits"):
        override_splits([ravdess], {"ravdess-valid": "training"})
    with pytest.raises(ValueError, match="session 5, the test set"):
        override_splits([_corpus("iemocap", (1, 4, 5))], {"iemocap-test": "train"})
    # the override is part of the run's config, and survives its TOML
    cfg = TrainConfig().with_overrides(['data.splits={"ravdess-actor01" = "train"}'])
    path = tmp_path / "train.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig.from_toml(path).data.splits == {"ravdess-actor01": "train"}


def _chat(n_train: int = 5, n_valid: int = 2) -> Corpus:
    ls = get_label_set("iemocap4")
    dialogues = [
        Dialogue(f"chat-{split}-{i}", [Utterance(f"chat-{split}-{i}-0", "hi", label="happy")], None, split)
        for split, n in (("train", n_train), ("valid", n_valid))
        for i in range(n)
    ]
    return Corpus("chat", dialogues, ls)


def test_validation_carved_from_training_leaves_the_corpus_validation_split_for_reporting(tmp_path):
    carved = valid_from_train(_chat(), 2)
    assert {
        s: [d.dialogue_id for d in carved.dialogues if d.split == s] for s in ("train", "valid", "test")
    } == {
        "train": ["chat-train-0", "chat-train-1", "chat-train-2"],
        "valid": ["chat-train-3", "chat-train-4"],  # the last training dialogues choose
        "test": ["chat-valid-0", "chat-valid-1"],  # the corpus's own validation only reports
    }
    for n in (0, 5):
        with pytest.raises(ValueError, match="valid_from_train"):
            valid_from_train(_chat(), n)
    with pytest.raises(ValueError, match="test split of its own"):
        valid_from_train(_corpus("iemocap"), 1)
    # with a training limit, the limit counts what is left for training after the carving
    both = training_corpora(
        [_corpus("iemocap"), _chat()], DataConfig(valid_from_train={"chat": 2}, train_dialogues={"chat": 1})
    )
    assert [(d.dialogue_id, d.split) for d in both[1].dialogues] == [
        ("chat-train-0", "train"),
        ("chat-train-3", "valid"),
        ("chat-train-4", "valid"),
        ("chat-valid-0", "test"),
        ("chat-valid-1", "test"),
    ]
    assert [d.split for d in both[0].dialogues] == ["train", "valid", "test"]  # other corpora untouched
    with pytest.raises(ValueError, match=r"both move \['chat-train-4'\]"):  # never moved twice, silently
        training_corpora(
            [_chat()], DataConfig(valid_from_train={"chat": 2}, splits={"chat-train-4": "valid"})
        )
    with pytest.raises(ValueError, match=r"no corpus \['mail'\]"):
        training_corpora([_chat()], DataConfig(valid_from_train={"mail": 1}))
    # part of the run's config: it survives the TOML
    cfg = TrainConfig().with_overrides(['data.valid_from_train={"dailydialog" = 1000}'])
    path = tmp_path / "train.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig.from_toml(path).data.valid_from_train == {"dailydialog": 1000}
