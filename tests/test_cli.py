"""`train`, `evaluate --json` and `params` through the typer app, on a tiny corpus in tmp_path.

The offline profile is used (MiniLM bundled by a pip package, prosody8 precomputed in the JSONL), so
nothing is downloaded.
"""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from model.checkpoint import load_checkpoint, save_checkpoint
from model.cli import cli

REQUIRED = {
    "accuracy",
    "unweighted_accuracy",
    "weighted_f1",
    "macro_f1",
    "binary_accuracy",
    "binary_f1",
    "per_class",
    "n",
}
WORDS = {"happy": "great wonderful love yes", "sad": "sorry miss cry alone", "angry": "stop hate never shut"}


def write_corpus(path):
    rng = random.Random(0)
    rows = []
    for i, split in enumerate(["train"] * 4 + ["valid", "test"]):
        for turn in range(5):
            label = rng.choice(list(WORDS))
            text = " ".join(rng.sample(WORDS[label].split(), 2))
            prosody = [rng.random() + (turn % 2) for _ in range(8)]
            rows.append(
                {
                    "dialogue_id": f"d{i}",
                    "turn": turn,
                    "text": text,
                    "label": label,
                    "split": split,
                    "features": {"prosody8": prosody},
                }
            )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_corpus(root / "tiny.jsonl")
    out = root / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--profile",
            "offline",
            "--labels",
            "happy,sad,angry",
            "--set",
            "model.hidden=8",
            "--set",
            "optim.epochs=2",
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--no-plots",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    return data, out / "model.pt", root / "cache"


def test_evaluate_json_prints_one_object_with_the_required_metrics(trained):
    data, ckpt, cache = trained
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--split",
            "test",
            "--json",
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics.keys() >= REQUIRED
    assert metrics["n"] == 5
    assert set(metrics["per_class"]) == {"happy", "sad", "angry"}
    # every labelled utterance of the split is read and scored, counted per class
    assert metrics["labelled_read"]["total"] == metrics["labelled_scored"]["total"] == 5
    assert sum(metrics["labelled_scored"][c] for c in ("happy", "sad", "angry")) == 5
    assert (metrics["modalities"], metrics["protocol"], metrics["window"]) == ("both", "served", 64)
    assert metrics["binary_accuracy"] == pytest.approx(1 - 2 * (1 - metrics["accuracy"]) / 3)


def test_evaluate_refuses_a_checkpoint_whose_encoders_differ_from_its_profile(trained, tmp_path):
    from dataclasses import replace

    data, ckpt_path, cache = trained
    ckpt = load_checkpoint(ckpt_path)
    ckpt.encoders["text"] = replace(ckpt.encoders["text"], version="something-else")
    bad = save_checkpoint(ckpt, tmp_path / "bad.pt")
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--checkpoint",
            str(bad),
            "--data",
            str(data),
            "--json",
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "do not match" in result.output and "something-else" in result.output


def test_evaluate_fails_clearly_on_a_missing_checkpoint(tmp_path):
    data = write_corpus(tmp_path / "c.jsonl")
    result = CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--data", str(data)]
    )
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_train_without_matplotlib_fails_at_once_and_names_the_extra(tmp_path, monkeypatch):
    # the image installs no [train] extra: the figures must not fail a run after its training
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    data = write_corpus(tmp_path / "c.jsonl")
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "lpgnet-erc[train]" in result.output and "--no-plots" in result.output
    assert not (tmp_path / "run").exists()


def test_params_prints_the_paper_size_count(trained):
    _, ckpt, _ = trained
    result = CliRunner().invoke(cli, ["params", "--checkpoint", str(ckpt), "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["paper_d768"] > 1_000_000
    assert 0 < counts["checkpoint"]["parameters"] < counts["paper_d768"]
    text = CliRunner().invoke(cli, ["params", "--checkpoint", str(ckpt)])
    assert f"{counts['paper_d768']:,}" in text.stdout


@pytest.mark.slow
def test_export_writes_the_default_checkpoints_graphs_and_manifest(tmp_path):
    from model.checkpoint import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.exists():
        pytest.fail(f"the default checkpoint is committed and must exist: {DEFAULT_CHECKPOINT}")
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["checkpoint"]["labels"] == load_checkpoint(DEFAULT_CHECKPOINT).labels
    # MiniLM becomes a graph; prosody-8 is computed natively (numpy/librosa)
    assert manifest["encoders"]["text"]["backend"] == "onnx"
    assert manifest["encoders"]["audio"] == {
        **manifest["encoders"]["audio"],
        "backend": "native",
        "kind": "prosody8",
    }
    assert (tmp_path / "bundle" / "lpgnet.onnx").exists()
    assert (tmp_path / "bundle" / "text" / "model.onnx").exists()


def _evaluate(args, trained):
    _, ckpt, cache = trained
    return CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", str(ckpt), "--cache-dir", str(cache), "--device", "cpu", *args]
    )


def test_evaluate_scores_every_class_name_label_of_a_generic_jsonl(trained, tmp_path):
    """The bug of issue 10: class names were read through IEMOCAP's raw codes and mostly dropped."""
    data, _, _ = trained
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for r in rows:
        r["split"] = "test"
    path = tmp_path / "all-test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _evaluate(["--data", str(path), "--split", "test", "--json"], trained)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    counts = {c: sum(r["label"] == c for r in rows) for c in ("happy", "sad", "angry")}
    assert metrics["n"] == len(rows) == 30
    assert metrics["labelled_read"] == {"total": 30, **counts}
    assert metrics["labelled_scored"] == {"total": 30, **counts}


def test_evaluate_refuses_unknown_labels_naming_them_and_their_counts(trained, tmp_path):
    data, _, _ = trained
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["label"], rows[1]["label"], rows[2]["label"] = "hap", "hap", "furious"
    path = tmp_path / "codes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _evaluate(["--data", str(path), "--json"], trained)
    assert result.exit_code == 2
    assert "'hap' (2)" in result.output and "'furious' (1)" in result.output
    assert result.stdout == ""  # no half-result on stdout


def test_evaluate_reads_raw_codes_only_through_a_named_label_map(trained, tmp_path):
    data, ckpt, cache = trained
    codes = {"happy": "hap", "sad": "sad", "angry": "ang"}
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for r in rows:
        r["label"] = codes[r["label"]]
    path = tmp_path / "codes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # iemocap4's classes differ from this checkpoint's three: a clear error, not a silent subset
    result = _evaluate(["--data", str(path), "--label-map", "iemocap4", "--json"], trained)
    assert result.exit_code == 2 and "label map 'iemocap4' gives" in result.output


def test_evaluate_checks_the_split_before_loading_anything(tmp_path):
    result = CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--split", "tset", "--json"]
    )
    assert result.exit_code == 2
    assert "tset" in result.output and "checkpoint not found" not in result.output


@pytest.mark.parametrize("modalities", ["text", "audio"])
def test_evaluate_removes_a_modality_from_every_utterance(trained, modalities):
    data, _, _ = trained
    result = _evaluate(["--data", str(data), "--modalities", modalities, "--json"], trained)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["modalities"] == modalities and metrics["n"] == 5
