"""`lpgnet train | evaluate | convert | params | export | tune-text`: the training command line.

`app.cli` mounts `cli` under the `lpgnet` console script (adding `serve`); `python -m model.cli ...`
runs it alone. Progress goes to stderr; `evaluate --json` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from model.cli_pool import pool_audio_command
from model.cli_text_only import add_text_only_command
from model.cli_tune import tune_text_command
from model.cli_voice import add_voice_command

cli = typer.Typer(help="Train and evaluate LPGNet emotion recognition in conversation.", no_args_is_help=True)
logger = logging.getLogger("model.cli")


class ModalityChoice(StrEnum):
    both = "both"
    text = "text"
    audio = "audio"


class SplitChoice(StrEnum):
    train = "train"
    valid = "valid"
    test = "test"
    all = "all"


class ProtocolChoice(StrEnum):
    served = "served"
    offline = "offline"


# Options several commands take, declared once.
CheckpointOption = Annotated[Path | None, typer.Option(help="Checkpoint (default: the bundled weights).")]
CacheDirOption = Annotated[Path | None, typer.Option(help="Feature cache (~/.cache/lpgnet/features).")]
DeviceOption = Annotated[str, typer.Option(help="Encoder device.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _existing_checkpoint(checkpoint: Path | None) -> Path:
    """The checkpoint given, else the bundled weights; a missing file ends the command."""
    from model.checkpoint import DEFAULT_CHECKPOINT

    path = checkpoint or DEFAULT_CHECKPOINT
    if not path.exists():
        raise _fail(f"checkpoint not found: {path}")
    return path


@cli.command()
def train(
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Corpus: IEMOCAP table / release dir / generic JSONL; repeat for several."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config TOML (model, loss, optim, augment, select).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config field: table.field=value (repeatable)."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Encoder profile: offline | offline-tuned | production | tiny (default: the config's)."
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="iemocap4 | iemocap6 | a,b,c (default: the config's, else each corpus's own)."),
    ] = None,
    labelled_only: Annotated[bool, typer.Option(help="Keep only labelled utterances as context.")] = False,
    train_dialogues: Annotated[
        list[str] | None,
        typer.Option(help="CORPUS=N: train on the first N training dialogues of that corpus only."),
    ] = None,
    holdout_session: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=4,
            help="Leave-one-session-out fold: hold IEMOCAP session 1-4 out as the run's test split, "
            "session 5 unseen, other corpora's test splits dropped (default: the config's, 0 = standard).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (0..N-1 + --seed-start).")] = 1,
    seed_start: Annotated[int, typer.Option(help="First seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default runs/<kind>-<profile>-<context>).")
    ] = None,
    save_as: Annotated[
        Path | None, typer.Option(help="Also copy the representative checkpoint here.")
    ] = None,
    cache_dir: CacheDirOption = None,
    device: DeviceOption = "auto",
    plots: Annotated[bool, typer.Option(help="Write confusion and learning-curve PNGs.")] = True,
    verbose: VerboseOption = False,
) -> None:
    """Train LPGNet or a baseline over N seeds; write checkpoints, metrics.json, train.toml, figures.

    Everything about the run is one config: --config FILE, --set table.field=value.
    The committed default weights: --config weights/lpgnet-offline-causal.toml.
    """
    _setup_logging(verbose)
    if plots and importlib.util.find_spec("matplotlib") is None:
        # before hours of training, not after: the figures are the run's last step
        raise _fail("the figures need matplotlib: pip install 'lpgnet-erc[train]', or pass --no-plots")
    from dataclasses import replace

    from model.config import TrainConfig
    from model.data import combine_corpora, default_iemocap_table, load_corpus
    from model.data import labelled_only as keep_labelled
    from model.encoders.base import Encoder
    from model.encoders.profiles import build_encoders
    from model.features import FeatureCache, extract_features
    from model.splits import split_rule, training_corpora
    from model.train import format_summary, train_seeds

    try:
        cfg = TrainConfig.from_toml(config) if config else TrainConfig()
        cfg = cfg.with_overrides(list(overrides or []))
    except (OSError, ValueError, TypeError) as exc:
        raise _fail(f"training config: {exc}") from exc
    try:
        cfg = replace(
            cfg,
            data=replace(
                cfg.data,
                paths=tuple(str(p) for p in data) if data else cfg.data.paths,
                labels=labels if labels is not None else cfg.data.labels,
                profile=profile or cfg.data.profile,
                train_dialogues={k: int(v) for k, _, v in (t.partition("=") for t in train_dialogues)}
                if train_dialogues
                else cfg.data.train_dialogues,
                holdout_session=cfg.data.holdout_session if holdout_session is None else holdout_session,
            ),
        )
    except ValueError as exc:
        raise _fail(f"--train-dialogues: use CORPUS=N ({exc})") from exc
    paths = [Path(p) for p in cfg.data.paths] or [default_iemocap_table()]
    for p in paths:
        if not p.exists():
            raise _fail(f"data not found: {p}")
    profile = cfg.data.profile
    try:
        corpora = [load_corpus(p, cfg.data.labels or None) for p in paths]
        corpora = training_corpora(corpora, cfg.data)
        corpus = combine_corpora(corpora) if len(corpora) > 1 else corpora[0]
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if labelled_only:
        corpus = keep_labelled(corpus)
    if not corpus.split("train").n_labelled() or not corpus.split("valid").n_labelled():
        raise _fail(f"the train and valid splits need labelled utterances (labels {corpus.labels})")
    built = build_encoders(profile, device=device)
    encoders: dict[str, Encoder | None] = {str(m): e for m, e in built.items()}
    cache = FeatureCache(cache_dir)
    try:
        features = extract_features(corpus, encoders, cache, progress=True)
    finally:
        cache.close()
    typer.echo(f"features: {len(features.dialogues)} dialogues, coverage {features.coverage()}", err=True)
    out = out or Path("runs") / f"{cfg.kind}-{profile}-{cfg.model.context}"
    data_info = {
        "paths": [str(p) for p in paths],
        "corpus": corpus.name,
        "label_set": corpus.label_set.name,
        "labelled_only": labelled_only,
        "train_dialogues": dict(cfg.data.train_dialogues),
        "split_rule": split_rule(cfg.data),
        "holdout_session": cfg.data.holdout_session,
        "split_overrides": dict(cfg.data.splits),
        "valid_from_train": dict(cfg.data.valid_from_train),
    }
    seed_list = list(range(seed_start, seed_start + seeds))
    result = train_seeds(features, cfg, seed_list, out, profile, data_info, plots=plots)
    typer.echo(format_summary(result), err=True)
    if save_as:
        save_as.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "model.pt", save_as)
    typer.echo(f"wrote {out}" + (f" and {save_as}" if save_as else ""), err=True)


@cli.command()
def evaluate(
    data: Annotated[Path | None, typer.Option(help="Corpus (default: the shared IEMOCAP table).")] = None,
    checkpoint: CheckpointOption = None,
    split: Annotated[SplitChoice, typer.Option(help="Which split to score.")] = SplitChoice.test,
    modalities: Annotated[
        ModalityChoice, typer.Option(help="Modalities a client sends: both, text only or audio only.")
    ] = ModalityChoice.both,
    protocol: Annotated[
        ProtocolChoice,
        typer.Option(help="served: what the service answers (window K, float16); offline: whole dialogues."),
    ] = ProtocolChoice.served,
    window: Annotated[
        int | None,
        typer.Option(min=1, help="Context window K (default: the checkpoint's; mirror the service's)."),
    ] = None,
    label_map: Annotated[
        str | None, typer.Option(help="Named raw-code mapping for a generic JSONL holding corpus codes.")
    ] = None,
    labelled_only: Annotated[
        bool | None, typer.Option(help="Context setting (default: the checkpoint's training setting).")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Also write every answered utterance's probabilities (JSONL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    cache_dir: CacheDirOption = None,
    device: DeviceOption = "auto",
    encoder_backend: Annotated[
        str,
        typer.Option(help="auto (the service's rule: onnxruntime graphs on CPU) | torch | onnx."),
    ] = "auto",
    encoder_precision: Annotated[
        str,
        typer.Option(
            help="auto (the service's rule: onnxruntime int8 where parity holds, else fp32; PyTorch bf16"
            " on native-bf16 CPUs) | fp32 | bf16 | int8."
        ),
    ] = "auto",
    verbose: VerboseOption = False,
) -> None:
    """Score a checkpoint on a corpus split as the service answers it (accuracy, UA, F1s, per class)."""
    _setup_logging(verbose)
    from model.data import default_iemocap_table
    from model.encoders.base import EncoderMismatchError
    from model.evaluate import evaluation_report, predict_checkpoint, prediction_rows

    data = data or default_iemocap_table()
    if not data.exists():
        raise _fail(f"data not found: {data}")
    ckpt_path = _existing_checkpoint(checkpoint)
    try:
        ckpt, features, contract, preds = predict_checkpoint(
            ckpt_path,
            data,
            split.value,
            modalities=modalities.value,
            protocol=protocol.value,
            window=window,
            cache_dir=cache_dir,
            label_map=label_map,
            only_labelled=labelled_only,
            device=device,
            precision=encoder_precision,  # type: ignore[arg-type]
            backend=encoder_backend,  # type: ignore[arg-type]
            progress=True,
        )
    except EncoderMismatchError as exc:  # its message names the profile and both specs
        raise _fail(str(exc)) from exc
    except (KeyError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    metrics = evaluation_report(
        ckpt,
        features,
        contract,
        preds,
        split=split.value,
        modalities=modalities.value,
        protocol=protocol.value,
    )
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        rows = prediction_rows(features, preds)
        predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    from model.metrics import print_metrics

    print_metrics(metrics)


@cli.command()
def convert(
    data: Annotated[Path, typer.Option(help="Corpus: IEMOCAP table / release dir / RAVDESS folder / JSONL.")],
    out: Annotated[Path, typer.Option(help="Generic JSONL to write (audio as absolute paths).")],
    labels: Annotated[
        str | None, typer.Option(help="Class names or a named set (default: the corpus's).")
    ] = None,
) -> None:
    """Write any supported corpus as a generic JSONL (class-name labels, splits, audio paths)."""
    from model.data import load_corpus, write_jsonl

    if not data.exists():
        raise _fail(f"data not found: {data}")
    try:
        corpus = load_corpus(data, labels)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    write_jsonl(corpus, out)
    typer.echo(f"wrote {out}: {len(corpus.dialogues)} dialogues, {corpus.n_labelled()} labelled", err=True)


@cli.command()
def params(
    checkpoint: CheckpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameter counts: LPGNet at the paper's size (d = 768) and the checkpoint's."""
    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.evaluate import load_any_checkpoint
    from model.lpgnet import LPGNet, count_parameters, paper_config

    result: dict[str, Any] = {"paper_d768": count_parameters(LPGNet(paper_config()))}
    path = checkpoint or DEFAULT_CHECKPOINT
    if path.exists():
        ckpt = load_any_checkpoint(path)
        result["checkpoint"] = {
            "path": str(path),
            "parameters": count_parameters(ckpt.model),
            "config": ckpt.config.to_dict(),
            "version": ckpt.version,
        }
    else:
        result["checkpoint"] = None
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"LPGNet at the paper's size (d=768, 768-d text and audio, 4 classes): {result['paper_d768']:,}"
    )
    if result["checkpoint"]:
        c = result["checkpoint"]
        typer.echo(f"checkpoint {c['path']} (hidden {c['config']['hidden']}): {c['parameters']:,}")
    else:
        typer.echo(f"checkpoint {path}: not found")


@cli.command()
def export(
    out: Annotated[Path, typer.Option(help="Directory for the graphs and manifest.json.")],
    checkpoint: CheckpointOption = None,
    text_model: Annotated[str | None, typer.Option(help="Local text encoder directory.")] = None,
    audio_model: Annotated[str | None, typer.Option(help="Local emotion2vec directory.")] = None,
    tiny_dir: Annotated[Path | None, typer.Option(help="Directory of the tiny profile's encoders.")] = None,
) -> None:
    """ONNX graphs of LPGNet and of the checkpoint's encoders, with a manifest the service loads."""
    from model.encoders.base import EncoderMismatchError
    from model.export import MANIFEST, export_bundle

    path = _existing_checkpoint(checkpoint)
    try:
        bundle = export_bundle(path, out, text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir)
    except EncoderMismatchError as exc:
        raise _fail(str(exc)) from exc
    manifest = json.loads((bundle / MANIFEST).read_text())
    for modality, entry in manifest["encoders"].items():
        typer.echo(f"{modality}: {entry['spec']['name']} ({entry['backend']})")
    typer.echo(f"wrote {bundle / MANIFEST}")


cli.command("tune-text")(tune_text_command)
cli.command("add-text-only")(add_text_only_command)
cli.command("pool-audio")(pool_audio_command)
cli.command("add-voice")(add_voice_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
