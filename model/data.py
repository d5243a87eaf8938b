"""Corpora as dialogues of utterances, and the readers that build them.

Three on-disk formats are read into one representation (`Corpus` of `Dialogue`s of `Utterance`s):

1. The shared IEMOCAP utterance table (`../shared/data/iemocap/utterances.jsonl`, see its README):
   text, raw labels, dialogue order and the 8 precomputed prosodic features (column `prosody`,
   exposed as the precomputed feature "prosody8"); no audio.
2. A generic JSONL, one utterance per line (`read_jsonl` documents the fields).
3. The official `IEMOCAP_full_release` directory layout (`read_iemocap_release`).

Labels: a corpus carries raw labels; a `LabelSet` maps them to class names (or to None: unlabelled,
but still context). `iemocap4` is the 4-class task of the paper (hap + exc -> happy).

Context: by default every utterance of a dialogue is context and only labelled ones count in the
loss and the metrics; `labelled_only=True` keeps only the labelled utterances (the paper's setting).

Splits of IEMOCAP: test = session 5; validation = the 12 whole dialogues of sessions 1-4 that the
COSMIC split marks `valid` (`IEMOCAP_VALID_DIALOGUES`, fixed here so every IEMOCAP reader yields the
same split); train = the rest of sessions 1-4. Nothing is ever selected on session 5.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

Split = str  # "train" | "valid" | "test"
SPLITS = ("train", "valid", "test")

# The COSMIC validation dialogues (sessions 1-4): IEMOCAP's validation set everywhere in this project.
IEMOCAP_VALID_DIALOGUES = frozenset(
    {
        "Ses01M_impro01",
        "Ses01M_script03_1",
        "Ses02F_impro02",
        "Ses02F_impro07",
        "Ses02M_script01_2",
        "Ses03F_impro01",
        "Ses03M_impro02",
        "Ses03M_impro08a",
        "Ses03M_script02_2",
        "Ses03M_script03_2",
        "Ses04F_impro07",
        "Ses04F_script02_1",
    }
)
IEMOCAP_TEST_SESSION = 5
PROSODY_FEATURE = "prosody8"  # name of the IEMOCAP table's `prosody` column as a precomputed feature


@dataclass(frozen=True)
class LabelSet:
    """Class names in logit order, and the raw corpus label each one comes from."""

    name: str
    labels: tuple[str, ...]
    mapping: Mapping[str, str]  # raw label -> class name; raw labels not in it are unlabelled

    def map(self, raw: str | None) -> str | None:
        return None if raw is None else self.mapping.get(raw)

    def index(self, label: str | None) -> int:
        return -1 if label is None else self.labels.index(label)


LABEL_SETS: dict[str, LabelSet] = {
    "iemocap4": LabelSet(
        "iemocap4",
        ("neutral", "happy", "sad", "angry"),
        {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    ),
    "iemocap6": LabelSet(
        "iemocap6",
        ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
        {
            "hap": "happy",
            "sad": "sad",
            "neu": "neutral",
            "ang": "angry",
            "exc": "excited",
            "fru": "frustrated",
        },
    ),
}


def identity_label_set(labels: Sequence[str], name: str = "corpus") -> LabelSet:
    """A corpus's own label list: each raw label is its own class."""
    return LabelSet(name, tuple(labels), {x: x for x in labels})


def get_label_set(spec: str | LabelSet | Sequence[str]) -> LabelSet:
    """`iemocap4` / `iemocap6`, a comma-separated list of labels, a list, or a LabelSet."""
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        if spec in LABEL_SETS:
            return LABEL_SETS[spec]
        return identity_label_set([s.strip() for s in spec.split(",") if s.strip()])
    return identity_label_set(list(spec))


@dataclass
class Utterance:
    """One turn. Any of text / audio may be missing; `label` is None for unlabelled turns."""

    utterance_id: str
    text: str | None = None
    audio: str | Path | np.ndarray | None = None  # a file path or a mono float32 waveform
    sample_rate: int | None = None  # of `audio` when it is a waveform
    raw_label: str | None = None
    label: str | None = None  # class name under the corpus's LabelSet
    speaker: str | None = None  # metadata only: LPGNet never sees it
    features: dict[str, list[float] | None] = field(default_factory=dict)  # precomputed, by extractor name


@dataclass
class Dialogue:
    dialogue_id: str
    utterances: list[Utterance]
    session: int | None = None
    split: Split | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_labelled(self) -> int:
        return sum(u.label is not None for u in self.utterances)


@dataclass
class Corpus:
    name: str
    dialogues: list[Dialogue]
    label_set: LabelSet

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.labels)

    def split(self, *names: Split) -> Corpus:
        """The dialogues of the given splits (all of them when called with "all")."""
        if "all" in names:
            return self
        return replace(self, dialogues=[d for d in self.dialogues if d.split in names])

    def utterances(self) -> Iterable[Utterance]:
        for d in self.dialogues:
            yield from d.utterances

    def n_labelled(self) -> int:
        return sum(d.n_labelled for d in self.dialogues)


def relabel(corpus: Corpus, labels: str | LabelSet | Sequence[str]) -> Corpus:
    """The same dialogues under another label set."""
    ls = get_label_set(labels)
    dialogues = [
        replace(d, utterances=[replace(u, label=ls.map(u.raw_label)) for u in d.utterances])
        for d in corpus.dialogues
    ]
    return Corpus(corpus.name, dialogues, ls)


def labelled_only(corpus: Corpus) -> Corpus:
    """Keep only labelled utterances as context (the paper's setting); empty dialogues are dropped."""
    dialogues = [
        replace(d, utterances=[u for u in d.utterances if u.label is not None]) for d in corpus.dialogues
    ]
    return replace(corpus, dialogues=[d for d in dialogues if d.utterances])


def _finish(corpus: Corpus, only_labelled: bool) -> Corpus:
    return labelled_only(corpus) if only_labelled else corpus


def iemocap_split(dialogue_id: str, session: int) -> Split:
    if session == IEMOCAP_TEST_SESSION:
        return "test"
    return "valid" if dialogue_id in IEMOCAP_VALID_DIALOGUES else "train"


# ---------------------------------------------------------------------------------------------------
# (a) the shared IEMOCAP table


def default_iemocap_table(repo: str | Path | None = None) -> Path:
    """`<repo>/../shared/data/iemocap/utterances.jsonl`."""
    root = Path(repo) if repo else Path(__file__).resolve().parents[1]
    return root.parent / "shared" / "data" / "iemocap" / "utterances.jsonl"


def read_iemocap_table(
    path: str | Path | None = None,
    labels: str | LabelSet | Sequence[str] = "iemocap4",
    labelled_only: bool = False,
) -> Corpus:
    """Read the shared IEMOCAP utterance table (fields in its README) into a Corpus."""
    path = Path(path) if path else default_iemocap_table()
    ls = get_label_set(labels)
    dialogues: dict[str, Dialogue] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            did, session = r["dialogue_id"], int(r["session"])
            if did not in dialogues:
                dialogues[did] = Dialogue(
                    did, [], session, iemocap_split(did, session), {"cosmic_split": r.get("cosmic_split")}
                )
            dialogues[did].utterances.append(
                Utterance(
                    utterance_id=r["utterance_id"],
                    text=r.get("transcript"),
                    raw_label=r.get("emotion"),
                    label=ls.map(r.get("emotion")),
                    speaker=r.get("speaker"),
                    features={PROSODY_FEATURE: r.get("prosody")},
                )
            )
    return _finish(Corpus("iemocap", list(dialogues.values()), ls), labelled_only)


# ---------------------------------------------------------------------------------------------------
# (b) generic JSONL


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def read_jsonl(
    path: str | Path,
    labels: str | LabelSet | Sequence[str] | None = None,
    labelled_only: bool = False,
    valid_fraction: float = 0.1,
) -> Corpus:
    """Read a generic conversation corpus: one JSON object per utterance, one per line.

    Fields:
        dialogue_id  str, required: utterances sharing it form one dialogue
        turn         int, optional: position in the dialogue (default: file order)
        text         str | null: the transcript (null: text modality missing)
        audio        str | null: path to a wav/flac file, relative to the JSONL's folder or absolute
        label        str | null: the class name (null: unlabelled, still context)
        features     {name: [floats] | null}, optional: precomputed vectors keyed by extractor spec name
                     (e.g. "prosody8"); used instead of running that extractor
        split        "train" | "valid" | "test", optional, per dialogue
        session      int, optional, metadata
        utterance_id str, optional (default "<dialogue_id>_<turn>")

    `labels`: a label set name or list; default: the sorted set of labels in the file. Dialogues
    without a `split` get one from a hash of their id: `valid_fraction` of them validation, the rest
    train (deterministic, so reruns agree).
    """
    path = Path(path)
    rows: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if line.strip():
                r = json.loads(line)
                r.setdefault("turn", n)
                rows.setdefault(str(r["dialogue_id"]), []).append(r)
    if labels is None:
        ls = identity_label_set(sorted({r["label"] for rs in rows.values() for r in rs if r.get("label")}))
    else:
        ls = get_label_set(labels)
    dialogues = []
    for did, rs in rows.items():
        rs.sort(key=lambda r: r["turn"])
        split = next((r["split"] for r in rs if r.get("split")), None)
        if split is None:
            split = "valid" if _hash_fraction(did) < valid_fraction else "train"
        if split not in SPLITS:
            raise ValueError(f"{path}: dialogue {did}: unknown split {split!r}")
        utts = []
        for r in rs:
            audio = r.get("audio")
            if audio is not None and not Path(audio).is_absolute():
                audio = path.parent / audio
            utts.append(
                Utterance(
                    utterance_id=str(r.get("utterance_id") or f"{did}_{r['turn']}"),
                    text=r.get("text"),
                    audio=audio,
                    raw_label=r.get("label"),
                    label=ls.map(r.get("label")),
                    speaker=r.get("speaker"),
                    features=dict(r.get("features") or {}),
                )
            )
        session = next((r["session"] for r in rs if r.get("session") is not None), None)
        dialogues.append(Dialogue(did, utts, session, split))
    return _finish(Corpus(path.stem, dialogues, ls), labelled_only)


def write_jsonl(corpus: Corpus, path: str | Path) -> Path:
    """Write a corpus in the generic JSONL format (audio only when it is a path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for d in corpus.dialogues:
            for turn, u in enumerate(d.utterances):
                row: dict[str, Any] = {
                    "dialogue_id": d.dialogue_id,
                    "utterance_id": u.utterance_id,
                    "turn": turn,
                    "text": u.text,
                    "audio": str(u.audio) if isinstance(u.audio, str | Path) else None,
                    "label": u.raw_label,
                    "split": d.split,
                    "session": d.session,
                }
                if u.features:
                    row["features"] = u.features
                f.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------
# (c) the official IEMOCAP_full_release layout

_EVAL_LINE = re.compile(r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<uid>Ses\S+)\s+(?P<emo>\w+)\s+\[")
_TRANS_LINE = re.compile(r"^(?P<uid>Ses\S+)\s+\[(?P<start>[\d.]+)-(?P<end>[\d.]+)\]:\s*(?P<text>.*)$")


def read_iemocap_release(
    root: str | Path, labels: str | LabelSet | Sequence[str] = "iemocap4", labelled_only: bool = False
) -> Corpus:
    """Read `IEMOCAP_full_release`: Session{1..5}/dialog/EmoEvaluation/*.txt (labels and times),
    Session*/dialog/transcriptions/*.txt (text), Session*/sentences/wav/<dialog>/<utt>.wav (audio).

    Every utterance that has an EmoEvaluation line is kept, in order of start time. Audio is the
    wav path when the file exists, else missing; text is missing when no transcription line exists.
    """
    root = Path(root)
    ls = get_label_set(labels)
    dialogues = []
    for session_dir in sorted(root.glob("Session[0-9]*")):
        session = int(session_dir.name.removeprefix("Session"))
        for eval_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            did = eval_file.stem
            texts: dict[str, str] = {}
            trans_file = session_dir / "dialog" / "transcriptions" / f"{did}.txt"
            if trans_file.exists():
                for line in trans_file.read_text(encoding="utf-8", errors="replace").splitlines():
                    m = _TRANS_LINE.match(line.strip())
                    if m:
                        texts[m["uid"]] = m["text"].strip()
            rows = []
            for line in eval_file.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _EVAL_LINE.match(line.strip())
                if m:
                    rows.append((float(m["start"]), m["uid"], m["emo"]))
            rows.sort()
            utts = []
            for _, uid, emo in rows:
                wav = session_dir / "sentences" / "wav" / did / f"{uid}.wav"
                utts.append(
                    Utterance(
                        utterance_id=uid,
                        text=texts.get(uid) or None,
                        audio=wav if wav.exists() else None,
                        raw_label=emo,
                        label=ls.map(emo),
                        speaker=uid.rsplit("_", 1)[-1][:1],
                    )
                )
            if utts:
                dialogues.append(Dialogue(did, utts, session, iemocap_split(did, session)))
    if not dialogues:
        raise FileNotFoundError(f"{root}: no Session*/dialog/EmoEvaluation/*.txt found")
    return _finish(Corpus("iemocap_release", dialogues, ls), labelled_only)


# ---------------------------------------------------------------------------------------------------


def load_corpus(
    path: str | Path, labels: str | LabelSet | Sequence[str] | None = None, labelled_only: bool = False
) -> Corpus:
    """Read any supported corpus, telling the format from the path.

    A directory with Session* folders -> the official IEMOCAP layout; a JSONL whose first row has
    `utterance_id`, `emotion` and `session` -> the shared IEMOCAP table; any other JSONL -> generic.
    `labels` defaults to iemocap4 for IEMOCAP and to the file's own labels for generic JSONL.
    """
    path = Path(path)
    if path.is_dir():
        return read_iemocap_release(path, labels or "iemocap4", labelled_only)
    with path.open(encoding="utf-8") as f:
        first = json.loads(next(line for line in f if line.strip()))
    if {"utterance_id", "emotion", "session"} <= first.keys():
        return read_iemocap_table(path, labels or "iemocap4", labelled_only)
    return read_jsonl(path, labels, labelled_only)


__all__ = [
    "Corpus",
    "Dialogue",
    "IEMOCAP_VALID_DIALOGUES",
    "LABEL_SETS",
    "LabelSet",
    "PROSODY_FEATURE",
    "Utterance",
    "default_iemocap_table",
    "get_label_set",
    "labelled_only",
    "load_corpus",
    "read_iemocap_release",
    "read_iemocap_table",
    "read_jsonl",
    "relabel",
    "write_jsonl",
]
