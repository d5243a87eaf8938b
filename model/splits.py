"""What a training run makes of a corpus's splits: overrides, leave-one-session-out folds, limits.

`model.data` gives every dialogue its corpus's split (IEMOCAP: test = session 5, validation = the 12
COSMIC dialogues of sessions 1-4). A run may then move named dialogues (`data.splits`: RAVDESS actors
as training dialogues, say), hold one IEMOCAP session out as a fold (`data.holdout_session`, for
choosing a recipe without session 5), and keep only the first N training dialogues of a corpus
(`data.train_dialogues`), in that order (`training_corpora`): the limit counts what is training in
this run, and a fold's held-out session is whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from model.data import IEMOCAP_TEST_SESSION, SPLITS, Corpus, Dialogue

if TYPE_CHECKING:
    from model.config import DataConfig

IEMOCAP_FOLD_SESSIONS = (1, 2, 3, 4)  # sessions a held-out fold may take; session 5 never


def override_splits(corpora: Sequence[Corpus], splits: dict[str, str]) -> list[Corpus]:
    """The corpora with the named dialogues moved to the given splits (a validation actor of RAVDESS
    made a training dialogue, say). Every named dialogue must exist and every split be a known one;
    IEMOCAP session 5 stays the test set."""
    bad = {d: s for d, s in splits.items() if s not in SPLITS}
    if bad:
        raise ValueError(f"data.splits: unknown splits {bad} (use {list(SPLITS)})")
    found = {d.dialogue_id for c in corpora for d in c.dialogues} & set(splits)
    missing = sorted(set(splits) - found)
    if missing:
        raise ValueError(f"data.splits: no dialogue {missing} in the corpora")
    test_session = sorted(
        d.dialogue_id
        for c in corpora
        for d in c.dialogues
        if d.dialogue_id in splits and d.session == IEMOCAP_TEST_SESSION and splits[d.dialogue_id] != "test"
    )
    if test_session:
        raise ValueError(
            f"data.splits: {test_session} are IEMOCAP session 5, the test set: never train or choose on it"
        )
    return [
        replace(c, dialogues=[replace(d, split=splits.get(d.dialogue_id, d.split)) for d in c.dialogues])
        for c in corpora
    ]


def holdout_session(corpus: Corpus, session: int) -> Corpus:
    """One fold of leave-one-session-out validation over IEMOCAP sessions 1-4.

    IEMOCAP's session `session` becomes the run's held-out ("test") split, session 5 is dropped (it is
    never seen while choosing), and the COSMIC validation dialogues of the other sessions stay the
    early-stopping set. The sessions are the dialogues' own (the shared table, the release layout, or
    a generic JSONL export with a `session` field); a corpus without sessions (DailyDialog, RAVDESS)
    loses its test split, so that no test figure is printed while a recipe is chosen. Twelve
    validation dialogues cannot separate recipes whose seeds differ by as much as the recipes do;
    four held-out sessions of about a thousand labelled utterances each can.
    """
    if session not in IEMOCAP_FOLD_SESSIONS:
        raise ValueError(f"the held-out session must be one of {IEMOCAP_FOLD_SESSIONS}, got {session}")
    # a dialogue with a session: session 5 goes, session k is held out; one without: its test split goes
    kept = [
        d
        for d in corpus.dialogues
        if (d.split != "test" if d.session is None else d.session != IEMOCAP_TEST_SESSION)
    ]
    return replace(corpus, dialogues=[replace(d, split="test") if d.session == session else d for d in kept])


def first_train_dialogues(corpus: Corpus, n: int) -> Corpus:
    """Keep the first `n` training dialogues (file order, so reruns agree); other splits unchanged."""
    kept, seen = [], 0
    for d in corpus.dialogues:
        if d.split == "train":
            seen += 1
            if seen > n:
                continue
        kept.append(d)
    return replace(corpus, dialogues=kept)


def valid_from_train(corpus: Corpus, n: int) -> Corpus:
    """The corpus's last `n` training dialogues (file order) as its validation split, and its own
    validation dialogues as its test split: choices are then made on a slice of training, and the
    corpus's official validation split is reported as a test set that no choice has seen. Only for a
    corpus without a test split (DailyDialog here: its test split is withheld)."""
    if n <= 0:
        raise ValueError(
            f"data.valid_from_train: {corpus.name} needs a positive number of dialogues, got {n}"
        )
    if corpus.split("test").dialogues:
        raise ValueError(f"data.valid_from_train: {corpus.name} has a test split of its own; use data.splits")
    train_ids = [d.dialogue_id for d in corpus.dialogues if d.split == "train"]
    if n >= len(train_ids):
        raise ValueError(
            f"data.valid_from_train: {corpus.name} has {len(train_ids)} training dialogues, asked {n}"
        )
    carved = set(train_ids[-n:])

    def split(d: Dialogue) -> str | None:
        return "valid" if d.dialogue_id in carved else "test" if d.split == "valid" else d.split

    return replace(corpus, dialogues=[replace(d, split=split(d)) for d in corpus.dialogues])


def training_corpora(corpora: Sequence[Corpus], data: DataConfig) -> list[Corpus]:
    """The corpora as the run trains, chooses and scores on them: overrides, validation carved from
    training, then the fold, then the training limits."""
    out = list(corpora)
    unknown = set(data.valid_from_train) - {c.name for c in out}
    if unknown:
        raise ValueError(f"data.valid_from_train: no corpus {sorted(unknown)} in the data")
    both = sorted(
        d.dialogue_id
        for c in out
        if c.name in data.valid_from_train
        for d in c.dialogues
        if d.dialogue_id in data.splits
    )
    if both:  # the carving would silently move an overridden dialogue again
        raise ValueError(
            f"data.splits and data.valid_from_train both move {both}: use one of them per corpus"
        )
    if data.splits:
        out = override_splits(out, data.splits)
    out = [
        valid_from_train(c, data.valid_from_train[c.name]) if c.name in data.valid_from_train else c
        for c in out
    ]
    if data.holdout_session:
        out = [holdout_session(c, data.holdout_session) for c in out]
    limits = data.train_dialogues
    out = [first_train_dialogues(c, limits[c.name]) if c.name in limits else c for c in out]
    if data.holdout_session and not sum(c.split("test").n_labelled() for c in out):
        raise ValueError(
            f"--holdout-session {data.holdout_session}: no labelled utterance of that session in the "
            "data (the fold needs a corpus with IEMOCAP sessions)"
        )
    return out


def split_rule(data: DataConfig) -> str:
    """How the run's splits were made, in words (recorded with its metrics)."""
    if data.holdout_session:
        return (
            f"leave-one-session-out fold: test = IEMOCAP session {data.holdout_session} (held out), "
            "valid = the COSMIC validation dialogues of the other sessions 1-4, session 5 unseen; "
            "other corpora: no test split"
        )
    return (
        "IEMOCAP: test = session 5, valid = the 12 COSMIC validation dialogues of sessions 1-4; "
        "generic JSONL: its split field, else a hashed 10% of dialogues as validation"
        + "".join(
            f"; {name}: valid = its last {n} training dialogues, test = its own validation split"
            for name, n in sorted(data.valid_from_train.items())
        )
    )


__all__ = [
    "IEMOCAP_FOLD_SESSIONS",
    "first_train_dialogues",
    "holdout_session",
    "override_splits",
    "split_rule",
    "training_corpora",
    "valid_from_train",
]
