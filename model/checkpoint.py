"""The checkpoint: the one contract between training and serving.

One file (torch.save of plain Python containers and tensors) holding everything needed to rebuild
the exact model and feed it exactly the features it was trained on:

    format_version  int
    name, version   model name and a content hash of the weights and of a non-zero audio pool
                    (what the service reports)
    config          LPGNetConfig as a dict
    state_dict      weights (input normalisation statistics included, as buffers)
    labels          class names in logit order; nothing else in the project lists them
    encoders        {"text": EncoderSpec dict | None, "audio": EncoderSpec dict | None}
    profile         encoder profile name the features came from (e.g. "offline")
    normalization   {"text": {"mean", "std"}, "audio": {...}} (also inside state_dict; here for readers)
    context         "causal" | "bidirectional" (also in config)
    serving         ServingContract: the window K, storage precision and audio pool the checkpoint
                    was selected and evaluated with (older files: the defaults, K = 64, float16, 0)
    text_only       optional {"config", "state_dict"}: a text-only LPGNet answering the rows that
                    depend on no audio (`model.serving.text_only_routed`); part of `version`
    chat_text       optional, beside text_only: a chat-trained text LPGNet; rows without audio go to
                    the more confident of the two (`model.serving.confidence_routed`); part of `version`
    voice           optional `VoiceExpert.to_dict()`: a classifier of the clips' eGeMAPS heard beside the
                    networks (`model.voice`, `model.voice.voice_added`); served after the audio
                    encoder's features (`model.encoders.voiced`); part of `version`
    training        free-form: data, split, seed, selected epoch, metrics, the whole TrainConfig
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import torch

from model.encoders.base import EncoderSpec
from model.lpgnet import LPGNet, LPGNetConfig
from model.paths import REPO_ROOT
from model.serving import ServingContract
from model.voice import VoiceExpert

FORMAT_VERSION = 1
# A file carrying a voice expert is format 2: a reader from before voice experts would ignore it and
# answer without it under the file's version, so it must refuse the file instead (it checks the number).
VOICE_FORMAT_VERSION = 2


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

    def digested_weights(self) -> dict[str, torch.Tensor]:
        """What `version` hashes: the model's weights (and those of any network it carries), and an
        audio pool (`ServingContract.audio_weight`) when one is set, since it changes the answers."""
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        if self.serving.audio_weight:  # a checkpoint without one keeps the digest it always had
            weights["serving.audio_weight"] = torch.tensor(self.serving.audio_weight, dtype=torch.float64)
        return weights

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
            "version": weights_digest(self.digested_weights()),
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


# The text networks a checkpoint may carry beside its fused one, as payload keys and attribute names:
# the text-only network, and a chat text network routed against it (in this order)
TEXT_NETWORKS = ("text_only", "chat_text")


@dataclass
class Checkpoint(SavedModel[LPGNet]):
    # Answers the rows that depend on no audio (`model.serving.text_only_routed`): an LPGNet trained on
    # text alone, over the same text features, labels and serving contract (`with_text_only`).
    text_only: LPGNet | None = None
    # Optional beside `text_only`: a text network trained mostly on written chat; each row without audio
    # then goes to whichever of the two is more confident over its window
    # (`model.serving.confidence_routed`; `with_chat_text`).
    chat_text: LPGNet | None = None
    # A classifier of each clip's eGeMAPS, added to the networks' answers where it is heard (`with_voice`).
    voice: VoiceExpert | None = None

    @property
    def config(self) -> LPGNetConfig:
        return self.model.cfg

    def digested_weights(self) -> dict[str, torch.Tensor]:
        weights = super().digested_weights()
        if self.config.audio_mean_prior is not None:  # it changes the answers; unset keeps the digest
            weights["config.audio_mean_prior"] = torch.tensor(
                self.config.audio_mean_prior, dtype=torch.float64
            )
        for name, network in self.text_networks().items():  # none: the digest it always had
            weights.update({f"{name}.{k}": v.detach().cpu() for k, v in network.state_dict().items()})
        if self.voice is not None:
            weights.update(self.voice.digested())
        return weights

    def text_networks(self) -> dict[str, LPGNet]:
        """The text networks it carries beside the fused one, by payload key (`text_only`, `chat_text`)."""
        networks = {name: getattr(self, name) for name in TEXT_NETWORKS}
        return {name: network for name, network in networks.items() if network is not None}

    def write(self, path: str | Path, **marks: Any) -> Path:
        for name, network in self.text_networks().items():
            state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
            marks = {name: {"config": network.cfg.to_dict(), "state_dict": state}, **marks}
        if self.voice is not None:
            marks = {"voice": self.voice.to_dict(), "format_version": VOICE_FORMAT_VERSION, **marks}
        return super().write(path, **marks)


def with_voice(ckpt: Checkpoint, voice: VoiceExpert) -> Checkpoint:
    """`ckpt` hearing `voice` beside its networks (one it carries already is replaced); `ValueError` unless
    its classes are the checkpoint's and the checkpoint reads audio. The recorded test figures are no
    longer the file's."""
    problems = [
        what
        for what, ok in (
            ("the checkpoint reads no audio", "audio" in ckpt.encoders),
            (f"its classes {list(voice.labels)} are not {ckpt.labels}", list(voice.labels) == ckpt.labels),
            ("it is not an audio encoder's", voice.spec.modality == "audio"),
        )
        if not ok
    ]
    if problems:
        raise ValueError(
            f"the voice expert cannot answer for {ckpt.name} {ckpt.version}: {'; '.join(problems)}"
        )
    training = {k: v for k, v in ckpt.training.items() if k != "test"}
    training["voice"] = voice.training
    return replace(ckpt, voice=voice, training=training)


def with_text_only(ckpt: Checkpoint, text: Checkpoint) -> Checkpoint:
    """`ckpt` carrying `text`'s network for the rows that depend on no audio; `ValueError` unless `text`
    was trained on text alone over the same text encoder, labels, context and serving contract."""
    _check_text_network(ckpt, text, ("it carries a text-only network already", ckpt.text_only is None))
    training = {k: v for k, v in ckpt.training.items() if k != "test"}  # the fused network's figures:
    training["test_fused"] = ckpt.training.get("test")  # kept apart (scripts/record_test_metrics.py)
    training["text_only"] = {"version": text.version, "seed": text.training.get("seed")}
    return replace(ckpt, text_only=text.model, training=training)


def with_chat_text(ckpt: Checkpoint, chat: Checkpoint) -> Checkpoint:
    """`ckpt` (carrying a text-only network) with `chat`'s text network beside it: each row without audio
    is then answered by the more confident of the two over its window (`model.serving.confidence_routed`).
    The same conditions as `with_text_only`; the recorded test figures are no longer the file's."""
    mine = {} if ckpt.text_only is None else ckpt.text_only.state_dict()
    theirs = chat.model.state_dict()
    same = mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    _check_text_network(
        ckpt,
        chat,
        ("it carries no text-only network to route against", ckpt.text_only is not None),
        ("it carries a chat text network already", ckpt.chat_text is None),
        ("it is the text-only network itself", not same),
    )
    training = {k: v for k, v in ckpt.training.items() if k != "test"}
    training["chat_text"] = {"version": chat.version, "seed": chat.training.get("seed")}
    return replace(ckpt, chat_text=chat.model, training=training)


def as_text_checkpoint(ckpt: Checkpoint) -> Checkpoint:
    """`ckpt` itself when its network was trained on text alone; else the text-only network it carries, as
    a checkpoint of its own (its recorded version and seed; the serving contract without an audio pool),
    so that a paired file's text network can be paired again (`with_chat_text`)."""
    if ckpt.config.modalities == "text":
        return ckpt
    if ckpt.text_only is None:
        raise ValueError(f"{ckpt.name} {ckpt.version} is not a text-only network and carries none")
    record = ckpt.training.get("text_only") or {}
    text = Checkpoint(
        model=ckpt.text_only,
        labels=list(ckpt.labels),
        encoders={"text": ckpt.encoders["text"]},
        profile=ckpt.profile,
        name=ckpt.name,
        training={"seed": record.get("seed")},
        serving=replace(ckpt.serving, audio_weight=0.0),
    )
    text.version = record.get("version") or weights_digest(text.digested_weights())
    return text


def _check_text_network(ckpt: Checkpoint, text: Checkpoint, *slot: tuple[str, bool]) -> None:
    problems = [
        what
        for what, ok in (
            *slot,
            ("its network is not text-only (model.modalities)", text.config.modalities == "text"),
            (
                "feature sizes differ",
                (text.config.text_dim, text.config.audio_dim)
                == (ckpt.config.text_dim, ckpt.config.audio_dim),
            ),
            ("labels differ", text.labels == ckpt.labels),
            (
                "text encoders differ",
                "text" in ckpt.encoders and text.encoders.get("text") == ckpt.encoders["text"],
            ),
            ("profiles differ", text.profile == ckpt.profile),
            ("contexts differ", text.context == ckpt.context),
            (  # the audio pool leaves a text-only network's rows alone
                "serving contracts differ",
                replace(text.serving, audio_weight=ckpt.serving.audio_weight) == ckpt.serving,
            ),
        )
        if not ok
    ]
    if problems:
        raise ValueError(f"{text.name} {text.version} cannot answer for {ckpt.name}: {'; '.join(problems)}")


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
    if payload.get("format_version") not in (FORMAT_VERSION, VOICE_FORMAT_VERSION):
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format_version')!r}")
    ckpt = Checkpoint.from_payload(LPGNet(LPGNetConfig(**payload["config"])), payload)
    for name in TEXT_NETWORKS:
        if name in payload:
            network = LPGNet(LPGNetConfig(**payload[name]["config"]))
            network.load_state_dict(payload[name]["state_dict"])
            setattr(ckpt, name, network.eval())
    if payload.get("voice") is not None:
        ckpt.voice = VoiceExpert.from_dict(payload["voice"])
    return ckpt


DEFAULT_CHECKPOINT = REPO_ROOT / "weights" / "lpgnet-offline-causal.pt"
