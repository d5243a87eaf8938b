"""Utterance features through the `Encoder` interface, with an on-disk cache.

`extract_features(corpus, encoders)` turns every dialogue into unpadded tensors:

    text (U, Dt), audio (U, Da), text_mask (U,), audio_mask (U,) bool, labels (U,) long (-1: unlabelled)

Per utterance and modality, in this order:
1. a precomputed vector stored with the utterance under the encoder's spec name (e.g. the IEMOCAP
   table's `prosody` column as "prosody8") goes through `PrecomputedEncoder` with that same spec, so
   a model trained on the column serves with live features; a stored null means "missing";
2. otherwise the raw input (text string; audio path or waveform) goes through the encoder;
3. otherwise the modality is missing for that utterance (mask False, vector zeros).

The cache (default `~/.cache/lpgnet/features`, `model.paths`) is one SQLite file per encoder spec
(name, version, dim) and precision (bf16 autocast vectors apart from fp32 ones), keyed by a SHA-256
of the input: the text string, the audio file's bytes, or a waveform's samples and rate. A second run
over the same corpus encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.data import Corpus, Utterance
from model.encoders.base import Encoder, EncoderSpec
from model.encoders.precomputed import PrecomputedEncoder
from model.encoders.voiced import VoicedAudioEncoder
from model.paths import cache_root

logger = logging.getLogger(__name__)

MODALITIES = ("text", "audio")
DEFAULT_CACHE_DIR = cache_root() / "features"
MAX_AUDIO_SECONDS = 600.0  # corpus audio, not uploads: generous limits
MAX_AUDIO_BYTES = 1 << 30


class FeatureCache:
    """Vectors of one or more encoders on disk: `<root>/<spec name>-<version>-<dim>.sqlite`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else DEFAULT_CACHE_DIR
        self.hits = 0
        self.misses = 0
        self._conns: dict[tuple[EncoderSpec, str], sqlite3.Connection] = {}

    def _conn(self, spec: EncoderSpec, precision: str = "fp32") -> sqlite3.Connection:
        if (spec, precision) not in self._conns:
            self.root.mkdir(parents=True, exist_ok=True)
            name = f"{spec.name}-{spec.version}-{spec.dim}" + ("" if precision == "fp32" else f"-{precision}")
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
            conn = sqlite3.connect(self.root / f"{safe}.sqlite", timeout=60)
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
            self._conns[(spec, precision)] = conn
        return self._conns[(spec, precision)]

    def get_many(
        self, spec: EncoderSpec, keys: Sequence[str], precision: str = "fp32"
    ) -> dict[str, np.ndarray]:
        conn, found = self._conn(spec, precision), {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[s : s + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, spec: EncoderSpec, items: Mapping[str, np.ndarray], precision: str = "fp32") -> None:
        conn = self._conn(spec, precision)
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def input_key(item: Any) -> str:
    """SHA-256 of an encoder input: a text string, an audio file's bytes, or (waveform, rate)."""
    h = hashlib.sha256()
    if isinstance(item, str):
        h.update(b"text\0" + item.encode("utf-8"))
    elif isinstance(item, Path):
        h.update(b"file\0" + item.read_bytes())
    elif isinstance(item, tuple):
        wave, sr = item
        h.update(f"wave\0{sr}\0".encode() + np.ascontiguousarray(wave, dtype=np.float32).tobytes())
    else:
        raise TypeError(f"cannot key an encoder input of type {type(item).__name__}")
    return h.hexdigest()


def load_waveform(item: Path | tuple[np.ndarray, int], sample_rate: int | None) -> np.ndarray:
    """Decode (file) and resample to the encoder's rate the way the service does."""
    from model.encoders.audio import decode_audio, resample

    if isinstance(item, Path):
        decoded = decode_audio(item.read_bytes(), max_seconds=MAX_AUDIO_SECONDS, max_bytes=MAX_AUDIO_BYTES)
        wave, sr = decoded.waveform, decoded.sample_rate
    else:
        wave, sr = item
    return resample(wave, sr, sample_rate) if sample_rate else np.asarray(wave, dtype=np.float32)


def encode_with_cache(
    encoder: Encoder,
    items: Sequence[Any],
    cache: FeatureCache | None,
    batch_size: int = 32,
    prepare: Callable[[Any], Any] | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Encode `items` (hashable inputs, see `input_key`), reading and filling the cache.

    `prepare` turns a cache-missing item into what `encode_batch` takes (e.g. a path into a waveform).
    """
    keys = [input_key(x) for x in items]
    precision = getattr(encoder, "precision", "fp32")  # bf16 vectors are cached apart from fp32 ones
    found = cache.get_many(encoder.spec, keys, precision) if cache else {}
    todo = list(dict.fromkeys(k for k in keys if k not in found))
    first = {k: x for k, x in zip(keys, items, strict=True)}
    if cache:
        cache.hits += len(keys) - sum(k not in found for k in keys)
        cache.misses += len(todo)
    desc = f"encoding {encoder.spec.modality} ({encoder.spec.name})"
    for s in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not progress or not todo, leave=False):
        chunk = todo[s : s + batch_size]
        inputs = [prepare(first[k]) if prepare else first[k] for k in chunk]
        vectors = encoder.encode_batch(inputs).detach().cpu().numpy().astype(np.float32)
        new = dict(zip(chunk, vectors, strict=True))
        found.update(new)
        if cache:
            cache.put_many(encoder.spec, new, precision)
    return [found[k] for k in keys]


@dataclass
class DialogueFeatures:
    dialogue_id: str
    text: torch.Tensor  # (U, Dt) float32, zeros where missing
    audio: torch.Tensor  # (U, Da)
    text_mask: torch.Tensor  # (U,) bool
    audio_mask: torch.Tensor  # (U,) bool
    labels: torch.Tensor  # (U,) long, -1 = unlabelled
    split: str | None = None
    session: int | None = None
    utterance_ids: list[str] = field(default_factory=list)
    corpus: str = ""  # which corpus the dialogue comes from (multi-corpus training and reports)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FeatureSet:
    """Features of a whole corpus and what produced them."""

    dialogues: list[DialogueFeatures]
    labels: list[str]
    specs: dict[str, EncoderSpec | None]  # modality -> spec (None: modality not used)

    @property
    def text_dim(self) -> int:
        return self.dialogues[0].text.shape[1] if self.dialogues else _dim(self.specs.get("text"))

    @property
    def audio_dim(self) -> int:
        return self.dialogues[0].audio.shape[1] if self.dialogues else _dim(self.specs.get("audio"))

    def split(self, *names: str) -> FeatureSet:
        if "all" in names:
            return self
        return FeatureSet([d for d in self.dialogues if d.split in names], self.labels, self.specs)

    def coverage(self) -> dict[str, float]:
        """Fraction of utterances where each modality is present."""
        n = max(1, sum(len(d) for d in self.dialogues))
        return {
            "text": sum(int(d.text_mask.sum()) for d in self.dialogues) / n,
            "audio": sum(int(d.audio_mask.sum()) for d in self.dialogues) / n,
        }


def _dim(spec: EncoderSpec | None) -> int:
    return spec.dim if spec else 1  # an unused modality still needs a (zero) column


def _raw_input(u: Utterance, modality: str) -> Any:
    if modality == "text":
        return u.text if u.text else None
    if u.audio is None:
        return None
    if isinstance(u.audio, np.ndarray):
        if not u.sample_rate:
            raise ValueError(f"utterance {u.utterance_id}: a waveform needs its sample_rate")
        return (u.audio, int(u.sample_rate))
    return Path(u.audio)


def precomputed_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder for vectors stored with the corpus, carrying `spec`."""
    return PrecomputedEncoder(spec)


def extract_features(
    corpus: Corpus,
    encoders: Mapping[str, Encoder | None],
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> FeatureSet:
    """Encode every utterance of `corpus` with `encoders` ("text"/"audio"); see the module docstring."""
    utts = [u for d in corpus.dialogues for u in d.utterances]
    vectors: dict[str, list[np.ndarray | None]] = {}
    specs: dict[str, EncoderSpec | None] = {}
    for modality in MODALITIES:
        enc = encoders.get(modality)
        specs[modality] = enc.spec if enc else None
        out: list[np.ndarray | None] = [None] * len(utts)
        if enc is None:
            vectors[modality] = out
            continue
        name, dim = enc.spec.name, enc.spec.dim
        # a voiced encoder (`model.encoders.voiced`) reads a corpus that stores its base encoder's vectors
        # and no audio with the voice expert's part zero; where there is audio it hears it, as the service
        base = enc.base.spec if isinstance(enc, VoicedAudioEncoder) else None
        stored_name = name if base is None else base.name
        stored = [
            i
            for i, u in enumerate(utts)
            if stored_name in u.features and (base is None or _raw_input(u, modality) is None)
        ]
        given = [i for i in stored if utts[i].features[stored_name] is not None]
        if given:
            pre = precomputed_encoder(enc.spec if base is None else base).encode_batch(
                [np.asarray(utts[i].features[stored_name]) for i in given]
            )
            for i, v in zip(given, pre.numpy(), strict=True):
                out[i] = v if base is None else np.concatenate([v, np.zeros(dim - base.dim, np.float32)])
        stored_set = set(stored)
        raw = [(i, _raw_input(utts[i], modality)) for i in range(len(utts)) if i not in stored_set]
        raw = [(i, x) for i, x in raw if x is not None]
        if raw:
            prepare = (lambda x, sr=enc.sample_rate: load_waveform(x, sr)) if modality == "audio" else None
            # reduced precision makes a vector depend on its batch's padding (~1e-3): encode one input
            # per forward, as the service does at low load, so evaluation answers what it answers
            size = batch_size if getattr(enc, "precision", "fp32") == "fp32" else 1
            enc_out = encode_with_cache(enc, [x for _, x in raw], cache, size, prepare, progress)
            for (i, _), v in zip(raw, enc_out, strict=True):
                out[i] = v
        for i, v in enumerate(out):
            if v is not None and v.shape != (dim,):
                raise ValueError(
                    f"{utts[i].utterance_id}: {modality} vector of shape {v.shape}, expected ({dim},)"
                )
        vectors[modality] = out

    dialogues, pos = [], 0
    for d in corpus.dialogues:
        n = len(d.utterances)
        per_mod = {}
        for modality in MODALITIES:
            dim = _dim(specs[modality])
            rows = vectors[modality][pos : pos + n]
            mask = torch.tensor([r is not None for r in rows], dtype=torch.bool)
            mat = np.zeros((n, dim), dtype=np.float32)
            for j, r in enumerate(rows):
                if r is not None:
                    mat[j] = r
            per_mod[modality] = (torch.from_numpy(mat), mask)
        labels = torch.tensor([corpus.label_set.index(u.label) for u in d.utterances], dtype=torch.long)
        dialogues.append(
            DialogueFeatures(
                d.dialogue_id,
                per_mod["text"][0],
                per_mod["audio"][0],
                per_mod["text"][1],
                per_mod["audio"][1],
                labels,
                d.split,
                d.session,
                [u.utterance_id for u in d.utterances],
                str(d.metadata.get("corpus") or corpus.name),
            )
        )
        pos += n
    fs = FeatureSet(dialogues, corpus.labels, specs)
    logger.info("features: %d dialogues, coverage %s", len(dialogues), fs.coverage())
    return fs


def normalization_stats(
    features: FeatureSet, read: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-dimension mean and std of each modality over the utterances where it is present, as the
    network reads them (`read`, per modality: e.g. `LPGNet.read_audio`; default as given)."""
    stats = {}
    for modality in MODALITIES:
        rows = [getattr(d, modality)[getattr(d, f"{modality}_mask")] for d in features.dialogues]
        x = torch.cat(rows) if rows else torch.zeros(0, 1)
        if read and modality in read and len(x):
            x = read[modality](x)
        if len(x) < 2:
            dim = x.shape[1]
            stats[modality] = {"mean": torch.zeros(dim), "std": torch.ones(dim)}
        else:
            stats[modality] = {"mean": x.mean(0), "std": x.std(0).clamp(min=1e-6)}
    return stats


__all__ = [
    "DEFAULT_CACHE_DIR",
    "DialogueFeatures",
    "FeatureCache",
    "FeatureSet",
    "encode_with_cache",
    "extract_features",
    "input_key",
    "normalization_stats",
]
