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
from typing import Any, Generic, Protocol, Self, TypeVar

import torch

from model.encoders.base import EncoderSpec
from model.lpgnet import LPGNet, LPGNetConfig
from model.paths import REPO_ROOT
from model.serving import ServingContract

FORMAT_VERSION = 1


class _ModelConfig(Protocol):
    """What the contract reads from a saved model's config (`LPGNetConfig`, `BaselineConfig`)."""

    @property
    def context(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


ModelT = TypeVar("ModelT", bound=torch.nn.Module)


@dataclass
class SavedModel(Generic[ModelT]):
    """The contract fields every saved model carries, LPGNet's `Checkpoint` and the baselines' alike."""

    model: ModelT
    labels: list[str]
    encoders: dict[str, EncoderSpec]
    profile: str
    name: str = "lpgnet"
    version: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    serving: ServingContract = field(default_factory=ServingContract)

    @property
    def config(self) -> _ModelConfig:
        raise NotImplementedError

    @property
    def context(self) -> str:
        return self.config.context

    def write(self, path: str | Path, **marks: Any) -> Path:
        """Save the contract fields (`marks` add or replace top-level ones) to one file, atomically:
        torch.save to a temporary file, then rename, so a reader never sees half a checkpoint.
        `version` becomes the weights' digest."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        payload = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": weights_digest(state),
            "config": self.config.to_dict(),
            "state_dict": state,
            "labels": list(self.labels),
            "encoders": {m: (s.to_dict() if s else None) for m, s in self.encoders.items()},
            "profile": self.profile,
            "normalization": self.model.normalization(),  # type: ignore[operator]
            "context": self.context,
            "serving": self.serving.to_dict(),
            "training": self.training,
            **marks,
        }
        self.version = payload["version"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(payload, buf)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def from_payload(cls, model: ModelT, payload: dict[str, Any]) -> Self:
        """`model`, freshly built from the payload's config, given its weights and put in eval mode,
        with the payload's contract fields."""
        model.load_state_dict(payload["state_dict"])
        model.eval()
        return cls(
            model=model,
            labels=list(payload["labels"]),
            encoders={m: EncoderSpec.from_dict(s) for m, s in payload["encoders"].items() if s},
            profile=str(payload["profile"]),
            name=str(payload.get("name", cls.name)),  # cls.name: the subclass's default name
            version=str(payload["version"]),
            training=dict(payload.get("training", {})),
            serving=ServingContract.from_dict(payload.get("serving")),
        )


@dataclass
class Checkpoint(SavedModel[LPGNet]):
    @property
    def config(self) -> LPGNetConfig:
        return self.model.cfg


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights: changes whenever any value changes."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    if len(ckpt.labels) != ckpt.config.num_classes:
        raise ValueError(f"{len(ckpt.labels)} labels for a model with {ckpt.config.num_classes} classes")
    return ckpt.write(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from a checkpoint file and put it in eval mode."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format_version')!r}")
    return Checkpoint.from_payload(LPGNet(LPGNetConfig(**payload["config"])), payload)


DEFAULT_CHECKPOINT = REPO_ROOT / "weights" / "lpgnet-offline-causal.pt"
