"""One configuration object per training run: network, loss, optimiser, augmentation, selection.

`TrainConfig` nests the network's own `LPGNetConfig` and the loss's `LossWeights` instead of
repeating their fields; it is stored whole in every checkpoint (`training.train_config`) and read from
a TOML file (`lpgnet train --config weights/<name>.toml`), whose tables mirror the fields:

    kind = "lpgnet"            # or "linear" / "gru" (baselines)
    [data]                     # DataConfig: corpora, labels, encoder profile
    paths = ["../shared/data/iemocap/utterances.jsonl"]
    [model]                    # LPGNetConfig; input dims and classes come from the data
    hidden = 128
    context = "causal"
    [loss]                     # LossWeights
    label_smoothing = 0.1
    [optim]                    # OptimConfig
    epochs = 30
    [augment]                  # AugmentConfig
    modality_dropout = 0.2
    [select]                   # SelectConfig
    metric = "accuracy"

`with_overrides(["model.hidden=256", "optim.lr=5e-4"])` applies the CLI's `--set` overrides.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

from model.losses import LossWeights
from model.lpgnet import LPGNetConfig
from model.serving import DEFAULT_WINDOW, MODALITY_SETTINGS, ServingContract

ModelKind = Literal["lpgnet", "linear", "gru"]


@dataclass(frozen=True)
class DataConfig:
    """What the run trains and selects on; `lpgnet train --data/--labels/--profile/--train-dialogues`
    override it."""

    paths: tuple[
        str, ...
    ] = ()  # corpora (IEMOCAP table/release, generic JSONL, RAVDESS folder); () = IEMOCAP
    labels: str = ""  # class names or a named set ("iemocap4"); "" = each corpus's default
    profile: str = "offline"  # encoder profile of the features
    train_dialogues: dict[str, int] = field(default_factory=dict)  # corpus -> first N training dialogues
    # dialogue id -> split, overriding the corpus's own (e.g. RAVDESS actors 01-03 as training
    # dialogues, "ravdess-actor01" = "train"); model.splits.override_splits
    splits: dict[str, str] = field(default_factory=dict)
    # 1-4: leave-one-session-out fold, IEMOCAP session k held out as the run's "test" split and
    # session 5 unseen (model.splits.holdout_session); 0: the standard split (test = session 5)
    holdout_session: int = 0
    # corpus -> N: its last N training dialogues become the validation split (what the run chooses
    # on) and its own validation split becomes the test split (reported only): for a corpus whose
    # test split is withheld (DailyDialog), so that its validation figures stay out of every choice
    valid_from_train: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 30
    patience: int = 10  # stop after this many epochs without a better validation score
    batch_size: int = 4  # dialogues per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    threads: int = 1  # torch intra-op threads of the training thread (set per thread, not globally)
    # decay of an exponential moving average of the weights (and BatchNorm statistics), updated every
    # step; the average is what is validated, selected and saved. 0 = off
    ema: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """What the network sees in training, so that it works on what the service will receive."""

    modality_dropout: float = 0.2  # fraction of both-modality utterances losing text or audio
    # fraction of training dialogues sent whole with one modality (half text-only, half audio-only),
    # utterances left with none removed: what a text-only chatbot or an audio-only line sends
    dialogue_modality_dropout: float = 0.0
    window: bool = False  # train on random windows of at most K utterances, as the service sees them
    # fraction of training dialogues with audio whose words are all swapped for those of random
    # neutral-labelled training utterances, labels kept: the voice carries the emotion, the words do
    # not (a caller reading a script, acted speech); without it the network learns that neutral words
    # mean neutral, as they nearly always do in IEMOCAP
    neutral_words: float = 0.0
    # how many neutral utterances one swapped dialogue takes its words from: 0 a new one per utterance;
    # 1 or 2 a fixed script read in changing voices (RAVDESS's two sentences, a scripted call), where
    # the words cannot tell one utterance from the next and only the voice can
    neutral_scripts: int = 0
    # G > 0: half the training dialogues with audio get one microphone gain, uniform in [-G, +6] dB, on
    # their prosody-8 vectors (`model.augment.with_gain`): a caller's level is not the corpus's
    audio_gain_db: float = 0.0
    class_weights: bool = False  # inverse-frequency weights in the task loss, per corpus
    corpus_weights: dict[str, float] = field(default_factory=dict)  # corpus -> sampling weight per epoch


@dataclass(frozen=True)
class SelectConfig:
    """How the epoch (and the representative seed) is chosen: on validation, as served."""

    metric: str = "accuracy"
    # the selection score is the mean over these entries of validation as served: a modality setting
    # ("both", "text", "audio"), or "corpus/setting", optionally ":metric" (model.scoring.selection_score)
    modalities: tuple[str, ...] = ("both",)
    # corpora of a multi-corpus validation set weigh equally in the score (else by utterance count)
    per_corpus: bool = False


@dataclass(frozen=True)
class TrainConfig:
    kind: ModelKind = "lpgnet"
    data: DataConfig = field(default_factory=DataConfig)
    model: LPGNetConfig = field(default_factory=lambda: LPGNetConfig(hidden=128, context="causal"))
    loss: LossWeights = field(default_factory=lambda: LossWeights(label_smoothing=0.1))
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    serving: ServingContract = field(default_factory=lambda: ServingContract(DEFAULT_WINDOW))

    def __post_init__(self) -> None:
        if self.kind not in ("lpgnet", "linear", "gru"):
            raise ValueError(f"kind must be lpgnet, linear or gru, got {self.kind!r}")
        if not 0 <= self.optim.ema < 1:
            raise ValueError(f"optim.ema must be in [0, 1), got {self.optim.ema}")
        if self.data.holdout_session not in (0, 1, 2, 3, 4):
            raise ValueError(f"data.holdout_session must be 0 (none) or 1-4, got {self.data.holdout_session}")
        if self.augment.neutral_scripts < 0:
            raise ValueError(
                f"augment.neutral_scripts must be 0 (none) or more, got {self.augment.neutral_scripts}"
            )
        if self.augment.neutral_scripts and not self.augment.neutral_words:
            raise ValueError(
                "augment.neutral_scripts needs augment.neutral_words > 0 (it shapes those dialogues)"
            )
        if self.augment.audio_gain_db < 0:
            raise ValueError(
                f"augment.audio_gain_db must be 0 (none) or more, got {self.augment.audio_gain_db}"
            )
        if self.model.audio_transform != "none" and self.kind != "lpgnet":
            raise ValueError(f"model.audio_transform is LPGNet's (kind = lpgnet), not {self.kind!r}'s")
        if self.serving.audio_weight and (self.kind != "lpgnet" or self.model.modalities != "both"):
            raise ValueError(  # the words-hidden pass of a network without audio sees nothing at all
                "serving.audio_weight needs a fused network (kind = lpgnet, model.modalities = both)"
            )
        settings = [m.partition(":")[0].rpartition("/")[2] for m in self.select.modalities]
        bad = [m for m in settings if m not in MODALITY_SETTINGS]
        if bad:
            raise ValueError(f"select.modalities: unknown settings {bad} (use {list(MODALITY_SETTINGS)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["select"]["modalities"] = list(self.select.modalities)
        d["data"]["paths"] = list(self.data.paths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        parts: dict[str, Any] = {"kind": d.get("kind", "lpgnet")}
        default = cls()
        for f in fields(cls):
            if f.name == "kind" or f.name not in d:
                continue
            base = getattr(default, f.name)
            parts[f.name] = _build(type(base), {**asdict(base), **d[f.name]}, f.name)
        return cls(**parts)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        with Path(path).open("rb") as f:
            return cls.from_dict(tomllib.load(f))

    def to_toml(self) -> str:
        """The config as TOML (every field, so the file alone reproduces the run; TOML has no null,
        so a field left unset, None, is left out and reads back as its default, None)."""
        d = self.to_dict()
        out = [f'kind = "{d.pop("kind")}"']
        for table, values in d.items():
            out.append(f"\n[{table}]")
            for k, v in values.items():
                if v is not None:
                    out.append(f"{k} = {_toml_value(v)}")
        return "\n".join(out) + "\n"

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply `table.field=value` assignments (values parsed as Python/TOML literals)."""
        d = self.to_dict()
        for a in assignments:
            key, sep, raw = a.partition("=")
            path = key.strip().split(".")
            if not sep or len(path) not in (1, 2):
                raise ValueError(f"override {a!r}: use table.field=value, e.g. model.hidden=256")
            target = d if len(path) == 1 else d.get(path[0])
            if not isinstance(target, dict) or path[-1] not in target:
                raise ValueError(f"override {a!r}: no field {key.strip()!r} in the training config")
            value, old = _literal(raw.strip()), target[path[-1]]
            if isinstance(old, dict) and not isinstance(value, dict):
                raise ValueError(f'override {a!r}: a table, e.g. {key.strip()}={{"dailydialog" = 0.25}}')
            if isinstance(old, list | tuple) and not isinstance(value, list | tuple):
                raise ValueError(f"override {a!r}: a list, e.g. {key.strip()}=[...]")
            target[path[-1]] = value
        return TrainConfig.from_dict(d)

    def network_config(self, text_dim: int, audio_dim: int, num_classes: int) -> LPGNetConfig:
        return replace(self.model, text_dim=text_dim, audio_dim=audio_dim, num_classes=num_classes)


def _build(kind: type, values: dict[str, Any], table: str) -> Any:
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"[{table}]: unknown keys {sorted(unknown)}")
    if kind is SelectConfig:
        values = {**values, "modalities": tuple(values["modalities"])}
    if kind is DataConfig:
        values = {**values, "paths": tuple(values["paths"])}
    return kind(**values)


def _literal(raw: str) -> Any:
    """A TOML value (what `to_toml` writes, inline tables included), else a Python literal, else the
    bare word as a string."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word: a string


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + "}"
    if is_dataclass(v):
        return _toml_value(asdict(v))  # type: ignore[arg-type]
    return repr(v)


__all__ = ["AugmentConfig", "DataConfig", "ModelKind", "OptimConfig", "SelectConfig", "TrainConfig"]
