"""`lpgnet add-text-only`: a checkpoint that answers text-only clients with a network trained on text.

Kept apart from `model.cli` so that module stays readable; `model.cli` registers the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def add_text_only_command(
    checkpoint: Annotated[Path, typer.Argument(help="The fused checkpoint (text and audio).")],
    text_checkpoint: Annotated[
        Path, typer.Argument(help='A checkpoint trained on text alone (model.modalities = "text").')
    ],
    out: Annotated[Path, typer.Option(help="Where to write the checkpoint carrying both.")],
    chat_text: Annotated[
        Path | None,
        typer.Option(
            help="A second text network, trained mostly on written chat (a text-only checkpoint, or one "
            "carrying a text-only network: that network); rows without audio then go to the more "
            "confident of the two over their window."
        ),
    ] = None,
) -> None:
    """Write CHECKPOINT with TEXT_CHECKPOINT's network answering every utterance whose context holds no
    audio (the service and `lpgnet evaluate` alike); both must share labels, text encoder, profile,
    context and serving contract. With --chat-text, a second text network stands beside it and each such
    utterance is answered by the more confident of the two over its window."""
    from model.checkpoint import (
        as_text_checkpoint,
        load_checkpoint,
        save_checkpoint,
        with_chat_text,
        with_text_only,
    )

    for path in (checkpoint, text_checkpoint, chat_text):
        if path is not None and not path.is_file():
            typer.echo(f"error: checkpoint not found: {path}", err=True)
            raise typer.Exit(2)
    try:
        paired = with_text_only(load_checkpoint(checkpoint), load_checkpoint(text_checkpoint))
        if chat_text is not None:
            paired = with_chat_text(paired, as_text_checkpoint(load_checkpoint(chat_text)))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    save_checkpoint(paired, out)
    typer.echo(f"wrote {out} (version {paired.version})")
