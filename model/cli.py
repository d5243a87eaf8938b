"""`lpgnet train | evaluate | params | export`: the training side of the command line (a typer app).

`app.cli` mounts `cli` under the `lpgnet` console script (adding `serve`); `python -m model.cli ...`
runs it alone. Progress goes to stderr; `evaluate --json` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

cli = typer.Typer(help="Train and evaluate LPGNet emotion recognition in conversation.", no_args_is_help=True)
logger = logging.getLogger("model.cli")


class ModelChoice(StrEnum):
    lpgnet = "lpgnet"
    linear = "linear"
    gru = "gru"


class ContextChoice(StrEnum):
    causal = "causal"
    bidirectional = "bidirectional"


class ModalityChoice(StrEnum):
    both = "both"
    text = "text"
    audio = "audio"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@cli.command()
def train(
    data: Annotated[
        Path | None, typer.Option(help="Corpus: IEMOCAP table / release dir / generic JSONL.")
    ] = None,
    profile: Annotated[str, typer.Option(help="Encoder profile: offline | production | tiny.")] = "offline",
    context: Annotated[ContextChoice, typer.Option(help="causal (live service) or bidirectional.")] = (
        ContextChoice.causal
    ),
    labels: Annotated[
        str | None,
        typer.Option(
            help="iemocap4 | iemocap6 | a,b,c (default: iemocap4 for IEMOCAP, else the file's labels)."
        ),
    ] = None,
    labelled_only: Annotated[bool, typer.Option(help="Keep only labelled utterances as context.")] = False,
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (0..N-1 + --seed-start).")] = 1,
    seed_start: Annotated[int, typer.Option(help="First seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default runs/<model>-<profile>-<context>).")
    ] = (None),
    save_as: Annotated[
        Path | None, typer.Option(help="Also copy the representative checkpoint here.")
    ] = None,
    model: Annotated[ModelChoice, typer.Option(help="lpgnet or a baseline.")] = ModelChoice.lpgnet,
    modalities: Annotated[
        ModalityChoice, typer.Option(help="both, or a unimodal variant.")
    ] = ModalityChoice.both,
    hidden: Annotated[int, typer.Option(help="Hidden size D.")] = 128,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 1,
    kernel_size: Annotated[int, typer.Option(help="Projection kernel over utterances.")] = 1,
    dropout: Annotated[float, typer.Option()] = 0.1,
    recency_bias: Annotated[bool, typer.Option(help="Learnable distance penalty in attention.")] = False,
    intra_attention: Annotated[bool, typer.Option(help="Ablation: t->t, a->a streams.")] = True,
    inter_attention: Annotated[bool, typer.Option(help="Ablation: t<-a, a<-t streams.")] = True,
    ffn: Annotated[bool, typer.Option(help="Ablation: FFN residual stage.")] = True,
    gated_fusion: Annotated[bool, typer.Option(help="Ablation: dual gated fusion (else average).")] = True,
    w_task: Annotated[float, typer.Option(help="Loss weight of the fused teacher CE.")] = 1.5,
    w_ce: Annotated[float, typer.Option(help="Loss weight of the students' CE.")] = 1.0,
    w_kl: Annotated[float, typer.Option(help="Loss weight of the distillation KL.")] = 0.3,
    tau: Annotated[float, typer.Option(help="Distillation temperature.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of every CE term.")] = 0.1,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    patience: Annotated[int, typer.Option(min=1, help="Early stopping patience (epochs).")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Dialogues per step.")] = 4,
    lr: Annotated[float, typer.Option()] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.01,
    modality_dropout: Annotated[
        float, typer.Option(help="Fraction of utterances losing text or audio.")
    ] = 0.2,
    class_weights: Annotated[bool, typer.Option(help="Inverse-frequency class weights.")] = False,
    select_metric: Annotated[str, typer.Option(help="Validation metric selecting the epoch.")] = "accuracy",
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 1,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Feature cache (default <repo>/.cache/features).")
    ] = None,
    device: Annotated[str, typer.Option(help="Encoder device.")] = "auto",
    plots: Annotated[bool, typer.Option(help="Write confusion and learning-curve PNGs.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train LPGNet or a baseline over N seeds; write checkpoints, metrics.json and figures."""
    _setup_logging(verbose)
    import torch

    from model.data import default_iemocap_table, load_corpus
    from model.data import labelled_only as keep_labelled
    from model.encoders.base import Encoder
    from model.encoders.profiles import build_encoders
    from model.features import FeatureCache, extract_features
    from model.losses import LossWeights
    from model.train import TrainConfig, format_summary, train_seeds

    torch.set_num_threads(threads)
    data = data or default_iemocap_table()
    if not data.exists():
        raise _fail(f"data not found: {data}")
    cfg = TrainConfig(
        model=model.value,
        context=context.value,
        modalities=modalities.value,
        hidden=hidden,
        heads=heads,
        kernel_size=kernel_size,
        dropout=dropout,
        recency_bias=recency_bias,
        intra_attention=intra_attention,
        inter_attention=inter_attention,
        ffn=ffn,
        gated_fusion=gated_fusion,
        loss=LossWeights(task=w_task, ce=w_ce, kl=w_kl, tau=tau, label_smoothing=label_smoothing),
        epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        modality_dropout=modality_dropout,
        class_weights=class_weights,
        select_metric=select_metric,
        threads=threads,
    )
    corpus = load_corpus(data, labels)
    if labelled_only:
        corpus = keep_labelled(corpus)
    if not corpus.split("train").n_labelled() or not corpus.split("valid").n_labelled():
        raise _fail(f"{data}: the train and valid splits need labelled utterances (labels {corpus.labels})")
    built = build_encoders(profile, device=device)
    encoders: dict[str, Encoder | None] = {str(m): e for m, e in built.items()}
    cache = FeatureCache(cache_dir)
    try:
        features = extract_features(corpus, encoders, cache, progress=True)
    finally:
        cache.close()
    typer.echo(f"features: {len(features.dialogues)} dialogues, coverage {features.coverage()}", err=True)
    out = out or Path("runs") / f"{model.value}-{profile}-{context.value}"
    data_info = {
        "path": str(data),
        "corpus": corpus.name,
        "label_set": corpus.label_set.name,
        "labelled_only": labelled_only,
        "split_rule": "test = session 5; valid = the 12 COSMIC validation dialogues of sessions 1-4"
        if corpus.name.startswith("iemocap")
        else "split field or hashed 10% validation dialogues",
    }
    result = train_seeds(
        features, cfg, list(range(seed_start, seed_start + seeds)), out, profile, data_info, plots=plots
    )
    typer.echo(format_summary(result), err=True)
    if save_as:
        save_as.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "model.pt", save_as)
    typer.echo(f"wrote {out}" + (f" and {save_as}" if save_as else ""), err=True)


@cli.command()
def evaluate(
    data: Annotated[Path | None, typer.Option(help="Corpus (default: the shared IEMOCAP table).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (default: the bundled weights).")
    ] = None,
    split: Annotated[str, typer.Option(help="train | valid | test | all.")] = "test",
    labels: Annotated[str | None, typer.Option(help="Override the checkpoint's label mapping.")] = None,
    labelled_only: Annotated[
        bool | None, typer.Option(help="Context setting (default: the checkpoint's training setting).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache directory.")] = None,
    device: Annotated[str, typer.Option(help="Encoder device.")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Score a checkpoint on a corpus split (accuracy, UA, F1s, binary accuracy/F1, per class)."""
    _setup_logging(verbose)
    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.data import default_iemocap_table
    from model.encoders.base import EncoderMismatchError
    from model.evaluate import evaluate_checkpoint

    data = data or default_iemocap_table()
    if not data.exists():
        raise _fail(f"data not found: {data}")
    ckpt_path = checkpoint or DEFAULT_CHECKPOINT
    if not ckpt_path.exists():
        raise _fail(f"checkpoint not found: {ckpt_path}")
    try:
        metrics = evaluate_checkpoint(
            ckpt_path,
            data,
            split,
            cache_dir=cache_dir,
            labels=labels,
            only_labelled=labelled_only,
            device=device,
            progress=not as_json,
        )
    except EncoderMismatchError as exc:
        raise _fail(f"the checkpoint's encoders do not match its profile's: {exc}") from exc
    except (KeyError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    _print_metrics(metrics)


def _print_metrics(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from model.metrics import HEADLINE

    console = Console()
    head = Table(
        title=f"{metrics['split']}: {metrics['n']} labelled utterances ({metrics['context']} context)"
    )
    head.add_column("metric")
    head.add_column("value", justify="right")
    for k in HEADLINE:
        head.add_row(k, f"{metrics[k]:.4f}")
    console.print(head)
    per = Table(title="per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for label, m in metrics["per_class"].items():
        per.add_row(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(per)


@cli.command()
def params(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (default: the bundled weights).")
    ] = None,
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
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (default: the bundled weights).")
    ] = None,
    text_model: Annotated[str | None, typer.Option(help="Local text encoder directory.")] = None,
    audio_model: Annotated[str | None, typer.Option(help="Local emotion2vec directory.")] = None,
    tiny_dir: Annotated[Path | None, typer.Option(help="Directory of the tiny profile's encoders.")] = None,
) -> None:
    """ONNX graphs of LPGNet and of the checkpoint's encoders, with a manifest the service loads."""
    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.encoders.base import EncoderMismatchError
    from model.export import MANIFEST, export_bundle

    path = checkpoint or DEFAULT_CHECKPOINT
    if not path.exists():
        raise _fail(f"checkpoint not found: {path}")
    try:
        bundle = export_bundle(path, out, text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir)
    except EncoderMismatchError as exc:
        raise _fail(str(exc)) from exc
    manifest = json.loads((bundle / MANIFEST).read_text())
    for modality, entry in manifest["encoders"].items():
        typer.echo(f"{modality}: {entry['spec']['name']} ({entry['backend']})")
    typer.echo(f"wrote {bundle / MANIFEST}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
