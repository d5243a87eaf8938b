"""Tiny random text and audio encoders for tests and offline development.

`write_tiny_encoders(out_dir)` writes two directories that load through exactly the production code
paths, with no network:

- `tiny-bert/`: a 2-layer, 32-d `BertModel` (`save_pretrained`) with a WordPiece tokenizer over a small
  vocabulary (letters, digits, punctuation and their `##` continuations, so any English text
  tokenises), max 64 tokens;
- `tiny-emotion2vec/`: FunASR's format (`config.yaml` + `model.pt`), the emotion2vec base config shrunk
  to embed_dim 32, 1 prenet + 1 main block, 2 heads, 32-channel conv feature extractor (same 20 ms
  frame rate as base), no pre-training decoder.

Weights come from fixed seeds, so the specs and versions are the same on every machine and run.
"""

from __future__ import annotations

import copy
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from model.encoders.emotion2vec import quiet_funasr
from model.paths import SHARED_ROOT, write_once

TEXT_DIRNAME = "tiny-bert"
AUDIO_DIRNAME = "tiny-emotion2vec"
SEED = 20240601
TINY_TEXT_MAX_LENGTH = 64

# Where the MIT-licensed FunASR emotion2vec template lives beside the repository.
_SHARED_CONFIG = SHARED_ROOT / "encoders" / "emotion2vec_base_config.yaml"

# The keys of FunASR's emotion2vec template (MIT license) that shape the network at inference, shrunk.
# Used when ../shared/encoders/emotion2vec_base_config.yaml is not there; the shared file wins otherwise.
_FALLBACK_MODEL_CONF: dict[str, Any] = {
    "loss_beta": 0.0,
    "loss_scale": None,
    "depth": 8,
    "start_drop_path_rate": 0.0,
    "end_drop_path_rate": 0.0,
    "num_heads": 12,
    "norm_eps": 1e-05,
    "norm_affine": True,
    "encoder_dropout": 0.1,
    "post_mlp_drop": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
    "layerdrop": 0.05,
    "embed_dim": 768,
    "mlp_ratio": 4.0,
    "layer_norm_first": False,
    "average_top_k_layers": 8,
    "end_of_block_targets": False,
    "clone_batch": 8,
    "supported_modality": "AUDIO",
    "cls_type": "chunk",
    "normalize": True,
    "modalities": {
        "audio": {
            "type": "AUDIO",
            "prenet_depth": 4,
            "prenet_layerdrop": 0.05,
            "prenet_dropout": 0.1,
            "start_drop_path_rate": 0.0,
            "end_drop_path_rate": 0.0,
            "num_extra_tokens": 10,
            "init_extra_token_zero": True,
            "mask_noise_std": 0.01,
            "mask_prob_min": None,
            "mask_prob": 0.5,
            "inverse_mask": False,
            "mask_prob_adjust": 0.05,
            "keep_masked_pct": 0.0,
            "mask_length": 5,
            "add_masks": False,
            "remove_masks": False,
            "mask_dropout": 0.0,
            "encoder_zero_mask": True,
            "mask_channel_prob": 0.0,
            "mask_channel_length": 64,
            "ema_local_encoder": False,
            "local_grad_mult": 1.0,
            "use_alibi_encoder": True,
            "alibi_scale": 1.0,
            "learned_alibi": False,
            "alibi_max_pos": None,
            "learned_alibi_scale": True,
            "learned_alibi_scale_per_head": True,
            "learned_alibi_scale_per_layer": False,
            "num_alibi_heads": 12,
            "model_depth": 8,
            "decoder": None,
            "extractor_mode": "layer_norm",
            "feature_encoder_spec": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
            "conv_pos_width": 95,
            "conv_pos_groups": 16,
            "conv_pos_depth": 5,
            "conv_pos_pre_ln": False,
        }
    },
}
_TINY_MODEL_CONF = {"embed_dim": 32, "depth": 1, "num_heads": 2}
_TINY_AUDIO_CONF = {
    "prenet_depth": 1,
    "model_depth": 1,
    "num_alibi_heads": 2,
    "decoder": None,  # the pre-training decoder plays no part in feature extraction
    "feature_encoder_spec": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] + [(32, 2, 2)]",
}


@dataclass(frozen=True)
class TinyEncoderPaths:
    """The two directories `write_tiny_encoders` fills."""

    text: Path
    audio: Path


def write_tiny_encoders(out_dir: str | Path, *, overwrite: bool = False) -> TinyEncoderPaths:
    """Write the tiny BERT and tiny emotion2vec under `out_dir`; complete existing ones are kept.

    Each directory is written under a temporary name and renamed into place, so concurrent callers
    (parallel test workers, two services) never see a half-written model.
    """
    out = Path(out_dir)
    paths = TinyEncoderPaths(text=out / TEXT_DIRNAME, audio=out / AUDIO_DIRNAME)
    write_once(paths.text, "model.safetensors", write_tiny_bert, overwrite=overwrite)
    write_once(paths.audio, "model.pt", write_tiny_emotion2vec, overwrite=overwrite)
    return paths


def write_tiny_bert(directory: Path) -> None:
    """A 2-layer, 32-d random BERT and its WordPiece tokenizer, saved with `save_pretrained`."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    # vocab.txt + tokenizer_config.json is the one tokenizer layout every transformers version loads.
    (directory / "vocab.txt").write_text("\n".join(_tiny_vocab()) + "\n")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": TINY_TEXT_MAX_LENGTH,
            }
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=TINY_TEXT_MAX_LENGTH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BertModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def write_tiny_emotion2vec(directory: Path) -> None:
    """A random emotion2vec shrunk from the base config, in FunASR's config.yaml + model.pt format."""
    with quiet_funasr():
        from funasr.models.emotion2vec.model import Emotion2vec

    directory.mkdir(parents=True, exist_ok=True)
    config = base_emotion2vec_config()
    config["model_conf"].update(_TINY_MODEL_CONF)
    config["model_conf"]["modalities"]["audio"].update(_TINY_AUDIO_CONF)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Emotion2vec(model_conf=config["model_conf"]).eval()
        # extra tokens start at zero; random ones make the test model exercise them
        torch.nn.init.normal_(model.modality_encoders["AUDIO"].extra_tokens, std=0.5)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(model.state_dict(), directory / "model.pt")


def base_emotion2vec_config() -> dict[str, Any]:
    """FunASR's emotion2vec template: the shared copy when present, else the embedded keys."""
    if _SHARED_CONFIG.is_file():
        config = yaml.safe_load(_SHARED_CONFIG.read_text())
    else:
        config = {"model": "Emotion2vec", "model_conf": copy.deepcopy(_FALLBACK_MODEL_CONF)}
    config["model"] = "Emotion2vec"
    return config


def _tiny_vocab() -> list[str]:
    """BERT special tokens, characters and their continuations, and a few frequent words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = [
        "the",
        "a",
        "and",
        "to",
        "of",
        "i",
        "you",
        "it",
        "is",
        "that",
        "what",
        "no",
        "yes",
        "oh",
        "okay",
        "know",
        "don",
        "'",
        "t",
        "s",
        "just",
        "well",
        "right",
        "so",
        "me",
        "my",
        "not",
    ]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for token in chars + words + [f"##{c}" for c in chars]:
        if token not in vocab:
            vocab.append(token)
    return vocab
