"""Reader of the official `IEMOCAP_full_release` directory layout (text, raw labels, wav paths)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from model.data import Corpus, Dialogue, Utterance, finish, iemocap_split
from model.labels import LabelSet, raw_code_mapping

_EVAL_LINE = re.compile(r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<uid>Ses\S+)\s+(?P<emo>\w+)\s+\[")
_TRANS_LINE = re.compile(r"^(?P<uid>Ses\S+)\s+\[(?P<start>[\d.]+)-(?P<end>[\d.]+)\]:\s*(?P<text>.*)$")


def read_iemocap_release(
    root: str | Path, labels: str | LabelSet | Sequence[str] | None = "iemocap4", labelled_only: bool = False
) -> Corpus:
    """Read `IEMOCAP_full_release`: Session{1..5}/dialog/EmoEvaluation/*.txt (labels and times),
    Session*/dialog/transcriptions/*.txt (text), Session*/sentences/wav/<dialog>/<utt>.wav (audio).

    Every utterance that has an EmoEvaluation line is kept, in order of start time. Audio is the
    wav path when the file exists, else missing; text is missing when no transcription line exists.
    """
    root = Path(root)
    ls = raw_code_mapping(labels)
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
    corpus = Corpus("iemocap_release", dialogues, ls)
    ls.check((u.raw_label for u in corpus.utterances()), root)
    return finish(corpus, labelled_only)


__all__ = ["read_iemocap_release"]
