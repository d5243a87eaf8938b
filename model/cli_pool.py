"""`lpgnet pool-audio`: a checkpoint whose answers hear the voice apart from the words, by a set amount.

Kept apart from `model.cli` so that module stays readable; `model.cli` registers the command.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer


def pool_audio_command(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint to re-serve.")],
    weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="w: an utterance with audio is answered by (1 - w) * logits + w * logits with the words"
            " hidden (0: as trained).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the checkpoint.")],
) -> None:
    """Write CHECKPOINT with serving.audio_weight = WEIGHT (`model.serving.audio_pooled`): the same
    weights, answers that let a neutral transcript outvote the voice less, a new version. The service
    and `lpgnet evaluate` read it from the file, so score the result on your own validation data first:
    on IEMOCAP the words carry most of the emotion and every step costs accuracy (model card)."""
    from model.checkpoint import load_checkpoint, save_checkpoint

    if not checkpoint.is_file():
        typer.echo(f"error: checkpoint not found: {checkpoint}", err=True)
        raise typer.Exit(2)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.config.modalities != "both":
        typer.echo(f"error: {checkpoint} is not a fused network (model.modalities = both)", err=True)
        raise typer.Exit(2)
    # the recorded figures were measured before any pool was set: keep naming that version
    trained = (ckpt.training.get("audio_weight_set") or {}).get("previous_version", ckpt.version)
    ckpt.serving = replace(ckpt.serving, audio_weight=weight)
    ckpt.training = {**ckpt.training, "audio_weight_set": {"weight": weight, "previous_version": trained}}
    save_checkpoint(ckpt, out)
    typer.echo(f"wrote {out} (version {ckpt.version}, serving.audio_weight {weight})")
