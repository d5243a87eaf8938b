"""Corpora as dialogues of utterances, and the readers that build them.

Four on-disk formats are read into one representation (`Corpus` of `Dialogue`s of `Utterance`s):

1. The shared IEMOCAP utterance table (`../shared/data/iemocap/utterances.jsonl`, see its README):
   text, raw labels, dialogue order and the 8 precomputed prosodic features (column `prosody`,
   exposed as the precomputed feature "prosody8"); no audio.
2. A generic JSONL, one utterance per line (`read_jsonl` documents the fields).
3. The official `IEMOCAP_full_release` directory layout (`model.iemocap_release`).
4. A folder of RAVDESS speech clips, one conversation per actor (`model.ravdess`).

Labels: a corpus carries raw labels; a `LabelSet` maps them to class names (or to None: unlabelled,
but still context). `iemocap4` is the 4-class task of the paper (hap + exc -> happy). Raw labels are
checked, never silently dropped: a raw label that is neither a class of the set nor one of the codes the
set deliberately leaves unlabelled (IEMOCAP's `fru`, `sur`, ... under `iemocap4`) is an
`UnknownLabelsError` naming every unknown value and its count. In a generic JSONL, `label` holds class
names; raw corpus codes are read only through an explicit, named mapping (`label_map="iemocap4"`).

Context: by default every utterance of a dialogue is context and only labelled ones count in the
loss and the metrics; `labelled_only=True` keeps only the labelled utterances (the paper's setting).

Splits of IEMOCAP: test = session 5; validation = the 12 whole dialogues of sessions 1-4 that the
COSMIC split marks `valid` (`IEMOCAP_VALID_DIALOGUES`, fixed here so every IEMOCAP reader yields the
same split); train = the rest of sessions 1-4. Nothing is ever selected on session 5. What a training
run makes of these splits (folds, overrides, limits) is `model.splits`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from model.labels import (
    LABEL_SETS,
    LabelSet,
    UnknownLabelsError,
    get_label_set,
    identity_label_set,
    raw_code_mapping,
)
from model.paths import SHARED_ROOT

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


def combine_corpora(corpora: Sequence[Corpus]) -> Corpus:
    """Several corpora with the same class names as one; each dialogue keeps its corpus's name in
    `metadata["corpus"]` (per-corpus sampling, selection and reports)."""
    first = corpora[0]
    for c in corpora[1:]:
        if c.labels != first.labels:
            raise ValueError(f"corpus {c.name} has labels {c.labels}, {first.name} has {first.labels}")
    dialogues = [replace(d, metadata={**d.metadata, "corpus": c.name}) for c in corpora for d in c.dialogues]
    ids = [d.dialogue_id for d in dialogues]
    if len(set(ids)) != len(ids):
        raise ValueError("the corpora share dialogue ids; give each corpus its own ids")
    return Corpus("+".join(c.name for c in corpora), dialogues, first.label_set)


def labelled_only(corpus: Corpus) -> Corpus:
    """Keep only labelled utterances as context (the paper's setting); empty dialogues are dropped."""
    dialogues = [
        replace(d, utterances=[u for u in d.utterances if u.label is not None]) for d in corpus.dialogues
    ]
    return replace(corpus, dialogues=[d for d in dialogues if d.utterances])


def finish(corpus: Corpus, only_labelled: bool) -> Corpus:
    return labelled_only(corpus) if only_labelled else corpus


def iemocap_split(dialogue_id: str, session: int) -> Split:
    if session == IEMOCAP_TEST_SESSION:
        return "test"
    return "valid" if dialogue_id in IEMOCAP_VALID_DIALOGUES else "train"


# ---------------------------------------------------------------------------------------------------
# (a) the shared IEMOCAP table


def default_iemocap_table(repo: str | Path | None = None) -> Path:
    """`<repo>/../shared/data/iemocap/utterances.jsonl` (`repo`: this checkout by default)."""
    shared = Path(repo).parent / "shared" if repo else SHARED_ROOT
    return shared / "data" / "iemocap" / "utterances.jsonl"


def read_iemocap_table(
    path: str | Path | None = None,
    labels: str | LabelSet | Sequence[str] | None = "iemocap4",
    labelled_only: bool = False,
) -> Corpus:
    """Read the shared IEMOCAP utterance table (fields in its README) into a Corpus."""
    path = Path(path) if path else default_iemocap_table()
    ls = raw_code_mapping(labels)
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
    corpus = Corpus("iemocap", list(dialogues.values()), ls)
    ls.check((u.raw_label for u in corpus.utterances()), path)
    return finish(corpus, labelled_only)


# ---------------------------------------------------------------------------------------------------
# (b) generic JSONL


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def read_jsonl(
    path: str | Path,
    labels: str | LabelSet | Sequence[str] | None = None,
    labelled_only: bool = False,
    valid_fraction: float = 0.1,
    label_map: str | LabelSet | None = None,
) -> Corpus:
    """Read a generic conversation corpus: one JSON object per utterance, one per line.

    Fields:
        dialogue_id  str, required: utterances sharing it form one dialogue
        turn         int, optional: position in the dialogue (default: file order)
        text         str | null: the transcript (null: text modality missing)
        audio        str | null: path to a wav/flac file, relative to the JSONL's folder or absolute
        label        str | null: a class name of the label set in use (null: unlabelled, still
                     context); raw corpus codes only with a named `label_map`
        features     {name: [floats] | null}, optional: precomputed vectors keyed by extractor spec name
                     (e.g. "prosody8"); used instead of running that extractor
        split        "train" | "valid" | "test", optional, per dialogue
        session      int, optional, metadata
        utterance_id str, optional (default "<dialogue_id>_<turn>")

    `labels`: the class names in use (a list, a comma-separated string, or a named set whose class
    names are meant, e.g. "iemocap4" = neutral, happy, sad, angry); default: the sorted set of labels
    in the file. `label_map`: a named raw-code mapping (e.g. "iemocap4": `exc` -> happy) for files
    whose `label` holds corpus codes. A label that is none of these is an `UnknownLabelsError`.
    Dialogues without a `split` get one from a hash of their id: `valid_fraction` of them
    validation, the rest train (deterministic, so reruns agree).
    """
    path = Path(path)
    rows: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if line.strip():
                r = json.loads(line)
                r.setdefault("turn", n)
                rows.setdefault(str(r["dialogue_id"]), []).append(r)
    if label_map is not None:
        ls = get_label_set(label_map)
        wanted = None if labels is None else list(get_label_set(labels).labels)
        if wanted is not None and wanted != list(ls.labels):
            raise ValueError(f"label map {ls.name!r} gives {list(ls.labels)}, not {wanted}")
    elif labels is not None:
        ls = get_label_set(labels).classes()
    else:
        ls = identity_label_set(sorted({r["label"] for rs in rows.values() for r in rs if r.get("label")}))
    ls.check((r.get("label") for rs in rows.values() for r in rs), path)
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
    return finish(Corpus(path.stem, dialogues, ls), labelled_only)


def write_jsonl(corpus: Corpus, path: str | Path) -> Path:
    """Write a corpus in the generic JSONL format (audio only when it is a path).

    `label` is the class name under the corpus's label set; the raw code, where it differs, goes to
    `raw_label` (ignored by the reader)."""
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
                    "audio": str(Path(u.audio).resolve()) if isinstance(u.audio, str | Path) else None,
                    "label": u.label,
                    "split": d.split,
                    "session": d.session,
                }
                if u.raw_label is not None and u.raw_label != u.label:
                    row["raw_label"] = u.raw_label  # the corpus's own code, for reference only
                if u.features:
                    row["features"] = u.features
                f.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------


def load_corpus(
    path: str | Path,
    labels: str | LabelSet | Sequence[str] | None = None,
    labelled_only: bool = False,
    label_map: str | LabelSet | None = None,
) -> Corpus:
    """Read any supported corpus, telling the format from the path.

    A directory with Session* folders -> the official IEMOCAP layout; another directory -> RAVDESS
    speech clips (`model.ravdess`, one conversation per actor); a JSONL whose first row has
    `utterance_id`, `emotion` and `session` -> the shared IEMOCAP table; any other JSONL -> generic.
    `labels` are the class names in use (IEMOCAP formats: the named raw-code mapping with those
    classes, iemocap4 by default); generic JSONL holds class names unless `label_map` names a mapping
    of raw codes.
    """
    path = Path(path)
    if path.is_dir() and not any(path.glob("Session[0-9]*")):
        from model.ravdess import ravdess_labels, read_ravdess

        classes = None if labels is None else list(get_label_set(labels).labels)
        return finish(read_ravdess(path, ravdess_labels(classes)), labelled_only)
    if path.is_dir():
        from model.iemocap_release import read_iemocap_release

        return read_iemocap_release(path, label_map or labels, labelled_only)
    with path.open(encoding="utf-8") as f:
        first = json.loads(next(line for line in f if line.strip()))
    if {"utterance_id", "emotion", "session"} <= first.keys():
        return read_iemocap_table(path, label_map or labels, labelled_only)
    return read_jsonl(path, labels, labelled_only, label_map=label_map)


__all__ = [
    "Corpus",
    "Dialogue",
    "IEMOCAP_VALID_DIALOGUES",
    "LABEL_SETS",
    "LabelSet",
    "PROSODY_FEATURE",
    "UnknownLabelsError",
    "Utterance",
    "combine_corpora",
    "default_iemocap_table",
    "get_label_set",
    "labelled_only",
    "load_corpus",
    "read_iemocap_table",
    "raw_code_mapping",
    "read_jsonl",
    "relabel",
    "write_jsonl",
]
