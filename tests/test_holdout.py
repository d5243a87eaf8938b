"""Leave-one-session-out validation (model.data.holdout_session, scripts/loso.py) and weight averaging.

A recipe is chosen on IEMOCAP sessions 1-4 held out in turn; session 5 must never be loaded as data
in a fold, and no other corpus may print a test figure while a recipe is chosen.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from model.config import OptimConfig
from model.data import (
    IEMOCAP_VALID_DIALOGUES,
    Corpus,
    Dialogue,
    Utterance,
    holdout_session,
    load_corpus,
    read_iemocap_table,
)
from model.labels import get_label_set
from model.lpgnet import LPGNetConfig
from model.paths import SHARED_ROOT
from model.train import TrainConfig, train_one, weight_average

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


def _corpus(name: str) -> Corpus:
    ls = get_label_set("iemocap4")
    dialogues = [
        Dialogue(f"{name}-{split}", [Utterance(f"{name}-{split}-0", "hi", label="happy")], None, split)
        for split in ("train", "valid", "test")
    ]
    return Corpus(name, dialogues, ls)


def test_other_corpora_lose_their_test_split_and_bad_sessions_are_refused():
    for name in ("dailydialog", "ravdess", "mychat"):
        fold = holdout_session(_corpus(name), 2)
        assert [d.split for d in fold.dialogues] == ["train", "valid"]
    for bad in (0, 5, 6):
        with pytest.raises(ValueError, match="held-out session must be one of"):
            holdout_session(_corpus("iemocap"), bad)


def test_weight_average_is_the_exponential_moving_average_of_weights_and_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = weight_average(model, 0.9)
    assert weight_average(model, 0.0) is None
    with pytest.raises(ValueError, match="optim.ema"):
        weight_average(model, 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = None
    for _ in range(4):
        model.train()
        loss = model(torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        average.update_parameters(model)
        now = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        expected = now if expected is None else {k: 0.9 * expected[k] + 0.1 * now[k] for k in now}
    got = average.module.state_dict()
    for key in ("0.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(got[key], expected[key])
        assert not torch.allclose(got[key], model.state_dict()[key])  # an average, not the last step


def test_training_with_weight_averaging_selects_and_returns_the_average():
    from tests.test_train import _toy_features

    features = _toy_features()
    plain = TrainConfig(model=LPGNetConfig(hidden=16), optim=OptimConfig(epochs=12, patience=12, lr=5e-3))
    averaged = TrainConfig(
        model=LPGNetConfig(hidden=16), optim=OptimConfig(epochs=12, patience=12, lr=5e-3, ema=0.9)
    )
    a, b = train_one(features, plain, seed=0), train_one(features, averaged, seed=0)
    assert b.valid["both"]["accuracy"] > 0.9 and b.test["both"]["accuracy"] > 0.75
    # the same seed and steps: only the averaging differs, and it changes the returned weights
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert any(not torch.allclose(wa[k].float(), wb[k].float()) for k in wa)


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
    a = json.loads((tmp_path / "a" / "loso.json").read_text())["held_out"]["both"]["accuracy"]["mean"]
    b = json.loads((tmp_path / "b" / "loso.json").read_text())["held_out"]["both"]["accuracy"]["mean"]
    assert paired["both"]["n"] == 4
    assert paired["both"]["mean"] == pytest.approx(b - a, abs=1e-9)
    assert "paired difference [both]" in again.stdout


def test_split_overrides_move_named_dialogues_and_refuse_unknown_ones(tmp_path):
    from model.config import TrainConfig
    from model.data import override_splits

    iemocap, ravdess = _corpus("iemocap"), _corpus("ravdess")
    moved = override_splits([iemocap, ravdess], {"ravdess-valid": "train", "iemocap-test": "valid"})
    assert [d.split for d in moved[0].dialogues] == ["train", "valid", "valid"]
    assert [d.split for d in moved[1].dialogues] == ["train", "train", "test"]
    assert [d.split for d in ravdess.dialogues] == ["train", "valid", "test"]  # the input is unchanged
    with pytest.raises(ValueError, match=r"no dialogue \['ravdess-actor99'\]"):
        override_splits([ravdess], {"ravdess-actor99": "train"})
    with pytest.raises(ValueError, match="unknown splits"):
        override_splits([ravdess], {"ravdess-valid": "training"})
    # the override is part of the run's config, and survives its TOML
    cfg = TrainConfig().with_overrides(['data.splits={"ravdess-actor01" = "train"}'])
    path = tmp_path / "train.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig.from_toml(path).data.splits == {"ravdess-actor01": "train"}
