"""`lpgnet tune-text`: fine-tune the offline profile's MiniLM for emotion (`model.encoders.tuned`).

Kept apart from `model.cli` so that module stays readable; `model.cli` registers the command.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

logger = logging.getLogger("model.cli")


def tune_text_command(
    out: Annotated[Path, typer.Option(help="Delta file to write (weights/encoders/<name>.safetensors).")],
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Corpus whose training split is tuned on; repeat for several (default: IEMOCAP)."),
    ] = None,
    labels: Annotated[str, typer.Option(help="Class names or a named set.")] = "iemocap4",
    cap: Annotated[
        list[str] | None,
        typer.Option(help="CORPUS=N: at most N utterances of that corpus, stratified by class."),
    ] = None,
    layers: Annotated[int, typer.Option(help="Top transformer layers trained.")] = 3,
    epochs: Annotated[int, typer.Option()] = 3,
    lr: Annotated[float, typer.Option()] = 5e-5,
    seed: Annotated[int, typer.Option()] = 0,
    base: Annotated[
        Path | None, typer.Option(help="Base model folder (default: the bundled all-MiniLM-L6-v2).")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
) -> None:
    """Tune the text encoder's top layers on the training splits; write the changed tensors."""
    from model.data import default_iemocap_table, load_corpus
    from model.encoders.profiles import minilm_dir
    from model.encoders.tuned import TuneConfig, save_delta, tune_text, tuning_examples

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    caps: dict[str, int] = {}
    for item in cap or []:
        name, _, count = item.partition("=")
        if not count.isdigit():
            typer.echo(f"error: --cap wants CORPUS=N, got {item!r}", err=True)
            raise typer.Exit(2)
        caps[name] = int(count)
    paths = data or [default_iemocap_table()]
    corpora = [load_corpus(p, labels) for p in paths]
    classes = list(corpora[0].labels)
    if any(list(c.labels) != classes for c in corpora):
        typer.echo("error: the corpora do not share one label set", err=True)
        raise typer.Exit(2)
    config = TuneConfig(layers=layers, epochs=epochs, lr=lr, seed=seed, corpus_caps=caps)
    base_dir = Path(base) if base else Path(minilm_dir())
    examples = tuning_examples(corpora)
    started = time.perf_counter()
    delta = tune_text(base_dir, examples, len(classes), config, threads=threads, progress=True)
    save_delta(out, delta, base_dir, config=config, classes=classes, corpora=[c.name for c in corpora])
    typer.echo(
        json.dumps(
            {"out": str(out), "tensors": len(delta), "seconds": round(time.perf_counter() - started, 1)}
        )
    )
