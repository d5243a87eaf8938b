"""A sentence encoder fine-tuned for emotion, shipped as the tensors that changed.

The offline profile's all-MiniLM-L6-v2 is trained for sentence similarity, not emotion. `tune_text`
fine-tunes its top `layers` transformer layers on the labelled utterances of the training splits:
the sentence vector the service computes (mean-pooled, L2-normalised) goes through a linear head
(scaled cosine logits), class-balanced cross-entropy with label smoothing, AdamW, warm-up then
linear decay. The lower layers stay frozen, so their outputs are computed once and only the top runs
per step; the head is thrown away afterwards.

What changed (the top layers' tensors, float16) is saved as one safetensors file
(`weights/encoders/<name>.safetensors`, a few MB) whose metadata names the base weights'
fingerprint and the recipe. `materialise(delta, base)` writes base + delta once into the cache as a
complete sentence-transformers folder (named by the delta's content hash), which `HFTextEncoder`
loads like any local model: training features, `lpgnet evaluate`, `lpgnet export` and the service
all read one ordinary model directory, and its spec's weights fingerprint tells it from the base.

Only training-split utterances may reach `tune_text`: validation and test text must stay unseen by
the encoder as by the network (`tuning_examples` takes the split names and refuses the others).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.paths import cache_root

logger = logging.getLogger(__name__)

DELTA_FORMAT = "lpgnet-text-delta/1"


@dataclass(frozen=True)
class TuneConfig:
    """The recipe of `tune_text`; stored in the delta file's metadata."""

    layers: int = 3  # top transformer layers trained; the rest stay frozen
    epochs: int = 3
    lr: float = 5e-5  # transformer layers (the head: head_lr)
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    batch_size: int = 32
    label_smoothing: float = 0.1
    max_length: int = 128
    seed: int = 0
    corpus_caps: dict[str, int] = field(default_factory=dict)  # corpus -> most utterances used


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # class index
    corpus: str = ""


def tuning_examples(corpora: Sequence[Any], splits: Sequence[str] = ("train",)) -> list[Example]:
    """The labelled, transcribed utterances of `splits` of each corpus (class indices of its labels).

    Only "train" is allowed: what selects or reports a model must stay unseen by its encoder.
    """
    refused = sorted(set(splits) - {"train"})
    if refused:
        raise ValueError(f"the text encoder is tuned on training splits only, not {refused}")
    examples = []
    for corpus in corpora:
        labels = list(corpus.labels)
        for dialogue in corpus.split(*splits).dialogues:
            for u in dialogue.utterances:
                if u.label is not None and u.text and u.text.strip():
                    examples.append(Example(u.text, labels.index(u.label), corpus.name))
    return examples


def cap_examples(examples: list[Example], caps: dict[str, int], seed: int) -> list[Example]:
    """At most caps[corpus] examples of a corpus, drawn stratified by class (rare classes first kept
    whole, the most frequent class filling what is left), so a corpus that is 83 % neutral does not
    teach the encoder that everything is neutral."""
    rng = random.Random(seed)
    kept: list[Example] = []
    for corpus in sorted({e.corpus for e in examples}):
        items = [e for e in examples if e.corpus == corpus]
        cap = caps.get(corpus)
        if cap is None or cap >= len(items):
            kept += items
            continue
        by_class: dict[int, list[Example]] = {}
        for e in items:
            by_class.setdefault(e.label, []).append(e)
        budget = cap
        groups = sorted(by_class.values(), key=len)
        for i, group in enumerate(groups):
            share = budget // (len(groups) - i)
            rng.shuffle(group)
            kept += group[:share]
            budget -= min(share, len(group))
    return kept


class _TopLayers(nn.Module):
    """The trained top of the transformer plus pooling: cached lower states in, sentence vectors out."""

    def __init__(self, transformer: Any, first: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(transformer.encoder.layer[first:])

    def forward(self, hidden: torch.Tensor, mask4d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            out = layer(hidden, attention_mask=mask4d)
            hidden = out[0] if isinstance(out, tuple) else out
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def _lower_states(
    tokenizer: Any, transformer: Any, texts: list[str], first: int, config: TuneConfig
) -> list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Length-sorted batches of (indices, hidden state after layer `first`, 4-d mask, 2-d mask)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = []
    with torch.no_grad():
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            inputs = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=config.max_length,
                return_tensors="pt",
            )
            out = transformer(**inputs, output_hidden_states=True)
            hidden = out.hidden_states[first]
            mask4d, _ = transformer._create_attention_masks(
                attention_mask=inputs["attention_mask"],
                encoder_attention_mask=None,
                embedding_output=hidden,
                encoder_hidden_states=None,
                cache=None,
            )
            batches.append((idx, hidden, mask4d, inputs["attention_mask"]))
    return batches


def tune_text(
    base_dir: str | Path,
    examples: list[Example],
    n_classes: int,
    config: TuneConfig = TuneConfig(),
    *,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Fine-tune the top `config.layers` layers of the model at `base_dir`; returns their new tensors
    (names as in the transformer's state_dict, float32)."""
    from transformers import AutoModel, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    examples = cap_examples(examples, config.corpus_caps, config.seed)
    if not examples:
        raise ValueError("no labelled training utterances with text to tune on")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    transformer = AutoModel.from_pretrained(str(base_dir), local_files_only=True).eval()
    n_layers = transformer.config.num_hidden_layers
    if not 1 <= config.layers <= n_layers:
        raise ValueError(f"layers must be in 1..{n_layers}, got {config.layers}")
    first = n_layers - config.layers
    for p in transformer.parameters():
        p.requires_grad_(False)
    top = _TopLayers(transformer, first)
    for p in top.parameters():
        p.requires_grad_(True)
    head = nn.Linear(transformer.config.hidden_size, n_classes)
    scale = nn.Parameter(torch.tensor(10.0))  # unit vectors need a temperature to reach confident logits
    optimiser = torch.optim.AdamW(
        [
            {"params": list(top.parameters()), "lr": config.lr},
            {"params": [*head.parameters(), scale], "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    batches = _lower_states(tokenizer, transformer, [e.text for e in examples], first, config)
    targets = torch.tensor([e.label for e in examples])
    counts = np.bincount(targets.numpy(), minlength=n_classes).astype(np.float64)
    weight = torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    steps = config.epochs * len(batches)
    warm = max(1, int(config.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / steps)
    )
    logger.info("tuning %d top layers on %d utterances, %d steps", config.layers, len(examples), steps)
    for epoch in range(config.epochs):
        top.train()
        order = list(range(len(batches)))
        rng.shuffle(order)
        total = 0.0
        for b in order:
            idx, hidden, mask4d, mask = batches[b]
            logits = head(top(hidden, mask4d, mask)) * scale
            loss = F.cross_entropy(
                logits, targets[idx], weight=weight, label_smoothing=config.label_smoothing
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        if progress:
            logger.info("tune epoch %d/%d: loss %.4f", epoch + 1, config.epochs, total / len(batches))
    top.eval()
    prefix = "encoder.layer."
    state = transformer.state_dict()
    return {
        name: tensor.detach().clone()
        for name, tensor in state.items()
        if name.startswith(prefix) and int(name[len(prefix) :].split(".")[0]) >= first
    }


def base_fingerprint(base_dir: str | Path) -> str:
    """The content hash of the base model's weights file (what a delta must be applied to)."""
    return _file_hash(Path(base_dir) / "model.safetensors")


def save_delta(
    path: str | Path,
    delta: dict[str, torch.Tensor],
    base_dir: str | Path,
    *,
    config: TuneConfig,
    classes: Sequence[str],
    corpora: Sequence[str],
) -> Path:
    """Write the tuned tensors (float16) with the base fingerprint and the recipe as metadata."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": DELTA_FORMAT,
        "base": base_fingerprint(base_dir),
        "config": json.dumps(asdict(config), sort_keys=True),
        "classes": json.dumps(list(classes)),
        "corpora": json.dumps(list(corpora)),
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    save_file({k: v.to(torch.float16).contiguous() for k, v in delta.items()}, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


def read_delta_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    if metadata.get("format") != DELTA_FORMAT:
        raise ValueError(f"{path}: not a tuned text-encoder delta ({DELTA_FORMAT})")
    return metadata


def materialise(delta_path: str | Path, base_dir: str | Path, root: str | Path | None = None) -> Path:
    """The complete model folder of base + delta, written into `root` (default: the cache) once.

    Raises ValueError when the delta was tuned from other base weights than `base_dir` holds.
    """
    from safetensors.torch import load_file, save_file

    from model.paths import write_once

    delta_path, base = Path(delta_path), Path(base_dir)
    metadata = read_delta_metadata(delta_path)
    if metadata["base"] != base_fingerprint(base):
        raise ValueError(f"{delta_path.name} was tuned from other weights than {base}")
    target = Path(root or cache_root() / "encoders") / f"{delta_path.stem}-{_file_hash(delta_path)}"

    def write(staging: Path) -> None:
        for item in base.iterdir():
            if item.name == "model.safetensors":
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        weights = load_file(str(base / "model.safetensors"))
        tuned = load_file(str(delta_path))
        unknown = sorted(set(tuned) - set(weights))
        if unknown:
            raise ValueError(f"{delta_path.name}: tensors the base does not have: {unknown[:3]}")
        for name, tensor in tuned.items():
            weights[name] = tensor.to(weights[name].dtype)
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})

    return write_once(target, "model.safetensors", write)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


__all__ = [
    "DELTA_FORMAT",
    "Example",
    "TuneConfig",
    "base_fingerprint",
    "cap_examples",
    "materialise",
    "read_delta_metadata",
    "save_delta",
    "tune_text",
    "tuning_examples",
]
