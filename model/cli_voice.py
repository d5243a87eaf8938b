"""`lpgnet add-voice`: a checkpoint that hears each clip's eGeMAPS beside its networks (`model.voice`).

Kept apart from `model.cli` so that module stays readable; `model.cli` registers the command.
`voice_dialogues` reads a corpus's clips as the service stores them, for training and for the
leave-one-speaker-out choice (`scripts/voice_expert_probe.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the CLI starts without torch; the command imports what it runs
    import torch

    from model.checkpoint import Checkpoint


@dataclass
class VoiceDialogue:
    dialogue_id: str
    utterance_ids: list[str]  # of the clips, in the conversation's order
    features: torch.Tensor  # (U, E) the expert's part of each stored audio vector (float16-rounded)
    labels: torch.Tensor  # (U,) long, -1 unlabelled


def voice_dialogues(
    ckpt: Checkpoint, data: str | Path, split: str, *, cache_dir: str | Path | None = None
) -> list[VoiceDialogue]:
    """The clips of `split` of the corpus at `data` as an audio-only client sends them: each dialogue's
    utterances with audio, in order, their eGeMAPS part of the vector the service stores (rounded to the
    checkpoint's storage precision), labelled with the checkpoint's classes."""
    from model.encoders.egemaps import EGeMAPSEncoder
    from model.encoders.factory import checkpoint_encoders
    from model.evaluate import load_eval_corpus
    from model.features import FeatureCache, extract_features
    from model.serving import served_view

    if "audio" not in ckpt.encoders:
        raise ValueError(f"{ckpt.name} {ckpt.version} reads no audio: a voice expert has nothing to add to")
    spec = EGeMAPSEncoder().spec
    encoders = checkpoint_encoders(  # the audio encoder alone: the words are not read here
        {"audio": ckpt.encoders["audio"]}, ckpt.profile, device="cpu", precision="fp32", voice=spec
    )
    corpus = load_eval_corpus(ckpt, data, split)
    cache = FeatureCache(cache_dir)
    try:
        features = extract_features(corpus, encoders, cache)
    finally:
        cache.close()
    out = []
    for d in features.dialogues:
        view = served_view(d, "audio", ckpt.serving.storage)
        ids = [d.utterance_ids[i] for i in view.kept.tolist()] if d.utterance_ids else []
        e = view.window.audio[:, ckpt.config.audio_dim :]
        out.append(VoiceDialogue(d.dialogue_id, ids, e, d.labels[view.kept]))
    return out


def add_voice_command(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint to add the voice expert to.")],
    data: Annotated[Path, typer.Option(help="Corpus with audio clips (e.g. the RAVDESS speech folder).")],
    out: Annotated[Path, typer.Option(help="Where to write the checkpoint carrying it.")],
    split: Annotated[
        str, typer.Option(help="Whose clips train it (RAVDESS: valid = actors 01-06).")
    ] = "valid",
    c: Annotated[float, typer.Option(help="Inverse L2 strength of the logistic regression.")] = 0.1,
    weight: Annotated[float, typer.Option(help="Its log-probabilities' weight beside the logits.")] = 0.5,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (~/.cache/lpgnet).")] = None,
) -> None:
    """Write CHECKPOINT with a voice expert trained on the clips of --split of --data: a class-balanced
    logistic regression on each clip's eGeMAPS, read like the network's audio (global, then the
    conversation's own statistics so far, the checkpoint's priors). The service and `lpgnet evaluate`
    then add --weight times its log-probabilities to the answer of every utterance with audio."""
    from model.checkpoint import load_checkpoint, save_checkpoint, with_voice
    from model.encoders.egemaps import EGeMAPSEncoder
    from model.voice import fit_voice_expert

    for path in (checkpoint, data):
        if not path.exists():
            typer.echo(f"error: not found: {path}", err=True)
            raise typer.Exit(2)
    ckpt = load_checkpoint(checkpoint)
    try:
        dialogues = voice_dialogues(ckpt, data, split, cache_dir=cache_dir)
        cfg = ckpt.config
        expert = fit_voice_expert(
            [(d.features, d.labels) for d in dialogues],
            EGeMAPSEncoder().spec,
            ckpt.labels,
            c=c,
            weight=weight,
            prior=cfg.audio_prior,
            mean_prior=cfg.audio_mean_prior,
            causal=ckpt.context == "causal",
            window=ckpt.serving.window,
            training={"data": Path(data).name, "split": split, "weight": weight},
        )
        voiced = with_voice(ckpt, expert)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    save_checkpoint(voiced, out)
    typer.echo(f"wrote {out} (version {voiced.version}; voice expert on {expert.training['clips']} clips)")
