"""Short, stable identities for encoder specs: what makes `EncoderSpec.version` change.

A version must change whenever an encoder's outputs would, and stay put otherwise (same weights
loaded from a hub id or from a local copy give the same version). It hashes the architecture and
processing options the caller passes plus a fingerprint of the weights themselves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from model.encoders.base import EncoderSpec, Modality

_SAMPLES_PER_TENSOR = 4096


def short_hash(identity: Any, length: int = 12) -> str:
    """sha1 of a JSON-serialisable value (keys sorted), truncated to `length` hex digits."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


def model_name(source: str | Path) -> str:
    """What a model is called in its spec: a hub id names itself, a local directory its basename
    (so pass the canonical id as the encoder's `name` when loading a local copy of a hub model)."""
    return Path(source).name if Path(source).is_dir() else str(source)


def text_spec_name(name: str | None, source: str | Path, pooling: str) -> str:
    """The spec name of a Hugging Face text encoder: `hf:<name>:<pooling>`, `name` default `model_name`."""
    return f"hf:{name or model_name(source)}:{pooling}"


def emotion2vec_spec_name(name: str | None, source: str | Path) -> str:
    """The spec name of an emotion2vec encoder: `emotion2vec:<name>`, `name` default `model_name`."""
    return f"emotion2vec:{name or model_name(source)}"


def versioned_spec(name: str, identity: Any, *, dim: int, modality: Modality) -> EncoderSpec:
    """The spec of an encoder whose version is the hash of its `identity` (architecture, options,
    `weights_fingerprint`)."""
    return EncoderSpec(name=name, version=short_hash(identity), dim=dim, modality=modality)


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter's name, shape and an evenly strided sample of its float32 values.

    Sampling (at most 4096 values per tensor) keeps this to milliseconds for a 100M-parameter model;
    fine-tuning or swapping weights changes practically every value, so the sample is enough.
    """
    digest = hashlib.sha1()
    for name, param in sorted(module.state_dict().items()):
        flat = param.detach().reshape(-1)
        stride = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::stride][:_SAMPLES_PER_TENSOR].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
