"""The RAVDESS speech folder as a corpus of conversations, one per actor.

File names are `03-01-EE-II-SS-RR-AA.(wav|flac)`: EE emotion (01 neutral, 02 calm, 03 happy, 04 sad,
05 angry, 06 fearful, 07 disgust, 08 surprised), II intensity, SS statement (01 "Kids are talking by
the door", 02 "Dogs are sitting by the door": the exact, emotionally neutral transcript), RR
repetition, AA actor. Every clip of one actor forms a conversation: one speaker and microphone, fixed
words, varying emotion, so only the voice carries the emotion. Clips are ordered by a fixed hash of
their name (a conversation whose emotions change, not blocks of one emotion), identically every run.

Splits follow the project's fixed rule: actors 01-06 are `valid` (any choice is made on them),
07-12 `test` (reported, never used to choose), others `train`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from model.data import Corpus, Dialogue, Utterance
from model.labels import LabelSet

STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS4 = LabelSet(
    "iemocap4",  # the same classes, in the same order, as the IEMOCAP 4-class checkpoints
    ("neutral", "happy", "sad", "angry"),
    {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"},
    frozenset({"calm", "fearful", "disgust", "surprised"}),
)
VALID_ACTORS = frozenset(range(1, 7))
TEST_ACTORS = frozenset(range(7, 13))


def ravdess_split(actor: int) -> str:
    return "valid" if actor in VALID_ACTORS else "test" if actor in TEST_ACTORS else "train"


def parse_name(path: Path) -> dict[str, str]:
    parts = path.stem.split("-")
    if len(parts) != 7 or parts[:2] != ["03", "01"] or parts[2] not in EMOTIONS or parts[4] not in STATEMENTS:
        raise ValueError(f"{path.name}: not a RAVDESS speech file name (03-01-EE-II-SS-RR-AA)")
    return {"emotion": EMOTIONS[parts[2]], "intensity": parts[3], "statement": parts[4], "actor": parts[6]}


def ravdess_labels(classes: tuple[str, ...] | list[str] | None = None) -> LabelSet:
    """RAVDESS emotions read as the given class names (default the 4 IEMOCAP classes); the emotions
    that are not among them are known and left unlabelled."""
    if classes is None:
        return RAVDESS4
    mapping = {e: e for e in EMOTIONS.values() if e in classes}
    return LabelSet("ravdess", tuple(classes), mapping, frozenset(set(EMOTIONS.values()) - set(mapping)))


def read_ravdess(
    folder: str | Path,
    labels: LabelSet = RAVDESS4,
    *,
    classes_only: bool = True,
    transcripts: bool = True,
) -> Corpus:
    """One dialogue per actor of the clips in `folder` (wav or flac).

    `classes_only`: keep only the clips of the label set's classes (else the other emotions stay as
    unlabelled context); `transcripts`: give each clip its spoken sentence as text.
    """
    folder = Path(folder)
    by_actor: dict[int, list[tuple[str, Path, dict[str, str]]]] = {}
    for path in sorted([*folder.glob("03-01-*.wav"), *folder.glob("03-01-*.flac")]):
        info = parse_name(path)
        if classes_only and labels.map(info["emotion"]) is None:
            continue
        order = hashlib.sha1(path.stem.encode()).hexdigest()
        by_actor.setdefault(int(info["actor"]), []).append((order, path, info))
    if not by_actor:
        raise FileNotFoundError(f"{folder}: no RAVDESS speech files (03-01-*.wav|flac)")
    dialogues = []
    for actor, clips in sorted(by_actor.items()):
        utts = [
            Utterance(
                utterance_id=path.stem,
                text=STATEMENTS[info["statement"]] if transcripts else None,
                audio=path,
                raw_label=info["emotion"],
                label=labels.map(info["emotion"]),
                speaker=f"actor{actor:02d}",
            )
            for _, path, info in sorted(clips)
        ]
        dialogues.append(Dialogue(f"ravdess-actor{actor:02d}", utts, None, ravdess_split(actor)))
    corpus = Corpus("ravdess", dialogues, labels)
    labels.check((u.raw_label for u in corpus.utterances()), folder)
    return corpus


__all__ = [
    "RAVDESS4",
    "TEST_ACTORS",
    "VALID_ACTORS",
    "parse_name",
    "ravdess_labels",
    "ravdess_split",
    "read_ravdess",
]
