"""The checkpoint: the one contract between training and serving.

One file (torch.save of plain Python containers and tensors) holding everything needed to rebuild
the exact model and feed it exactly the features it was trained on:

    format_version  int
    name, version   model name and a content hash of the weights (what the service reports)
    config          LPGNetConfig as a dict
    state_dict      weights (input normalisation statistics included, as buffers)
    labels          class names in logit order; nothing else in the project lists them
    encoders        {"text": EncoderSpec dict | None, "audio": EncoderSpec dict | None}
    profile         encoder profile name the features came from (e.g. "offline")
    normalization   {"text": {"mean", "std"}, "audio": {...}} (also inside state_dict; here for readers)
    context         "causal" | "bidirectional" (also in config)
    serving         ServingContract: the window K and storage precision the checkpoint was selected
                    and evaluated with (older files: the defaults, K = 64, float16)
    training        free-form: data, split, seed, selected epoch, metrics, the whole TrainConfig
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.encoders.base import EncoderSpec
from model.lpgnet import LPGNet, LPGNetConfig
from model.paths import REPO_ROOT
from model.serving import ServingContract

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: LPGNet
    labels: list[str]
    encoders: dict[str, EncoderSpec]
    profile: str
    name: str = "lpgnet"
    version: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    serving: ServingContract = field(default_factory=ServingContract)

    @property
    def config(self) -> LPGNetConfig:
        return self.model.cfg

    @property
    def context(self) -> str:
        return self.model.cfg.context


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights: changes whenever any value changes."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def contract_payload(
    model: torch.nn.Module,
    config: dict[str, Any],
    *,
    labels: list[str],
    encoders: dict[str, EncoderSpec],
    profile: str,
    name: str,
    context: str,
    training: dict[str, Any],
    serving: ServingContract,
) -> dict[str, Any]:
    """The fields every saved model shares (LPGNet or a baseline); `version` is the weights' digest."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": weights_digest(state),
        "config": config,
        "state_dict": state,
        "labels": list(labels),
        "encoders": {m: (s.to_dict() if s else None) for m, s in encoders.items()},
        "profile": profile,
        "normalization": model.normalization(),  # type: ignore[operator]
        "context": context,
        "serving": serving.to_dict(),
        "training": training,
    }


def write_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file, then rename: a reader never sees half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    if len(ckpt.labels) != ckpt.config.num_classes:
        raise ValueError(f"{len(ckpt.labels)} labels for a model with {ckpt.config.num_classes} classes")
    payload = contract_payload(
        ckpt.model,
        ckpt.config.to_dict(),
        labels=ckpt.labels,
        encoders=ckpt.encoders,
        profile=ckpt.profile,
        name=ckpt.name,
        context=ckpt.config.context,
        training=ckpt.training,
        serving=ckpt.serving,
    )
    ckpt.version = payload["version"]
    return write_payload(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from a checkpoint file and put it in eval mode."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format_version')!r}")
    cfg = LPGNetConfig(**payload["config"])
    model = LPGNet(cfg)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    encoders = {m: EncoderSpec.from_dict(s) for m, s in payload["encoders"].items() if s}
    return Checkpoint(
        model=model,
        labels=list(payload["labels"]),
        encoders=encoders,
        profile=str(payload["profile"]),
        name=str(payload.get("name", "lpgnet")),
        version=str(payload["version"]),
        training=dict(payload.get("training", {})),
        serving=ServingContract.from_dict(payload.get("serving")),
    )


DEFAULT_CHECKPOINT = REPO_ROOT / "weights" / "lpgnet-offline-causal.pt"
