"""Label sets: class names in logit order, and how a corpus's raw labels map onto them.

A corpus carries raw labels; a `LabelSet` maps them to class names (or to None: unlabelled, but still
context). `iemocap4` is the 4-class task of the paper (hap + exc -> happy); `iemocap6` is the paper's
6-class set (Table 7). Raw labels are checked, never silently dropped: one that is neither a class of
the set nor one of the codes the set deliberately leaves unlabelled (IEMOCAP's `fru`, `sur`, ...
under `iemocap4`) is an `UnknownLabelsError` naming every unknown value and its count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class UnknownLabelsError(ValueError):
    """Raw labels that the label set in use neither maps nor knowingly leaves unlabelled."""


@dataclass(frozen=True)
class LabelSet:
    """Class names in logit order, and the raw corpus label each one comes from."""

    name: str
    labels: tuple[str, ...]
    mapping: Mapping[str, str]  # raw label -> class name
    ignored: frozenset[str] = frozenset()  # raw labels known to be outside the task: unlabelled context

    def map(self, raw: str | None) -> str | None:
        return None if raw is None else self.mapping.get(raw)

    def index(self, label: str | None) -> int:
        return -1 if label is None else self.labels.index(label)

    def classes(self) -> LabelSet:
        """The same class names, read as class names (identity mapping), not as raw codes."""
        return identity_label_set(self.labels, self.name)

    def check(self, raw_labels: Iterable[str | None], source: str | Path) -> None:
        """Raise `UnknownLabelsError` naming every raw label (with its count) this set cannot read."""
        unknown = Counter(
            r for r in raw_labels if r is not None and r not in self.mapping and r not in self.ignored
        )
        if unknown:
            listed = ", ".join(f"{value!r} ({n})" for value, n in unknown.most_common())
            raise UnknownLabelsError(
                f"{source}: {sum(unknown.values())} labels are not classes of label set {self.name!r} "
                f"{list(self.labels)}: {listed}. Use class names, null for unlabelled utterances, or "
                f"a named mapping of raw codes ({', '.join(LABEL_SETS)})"
            )


LABEL_SETS: dict[str, LabelSet] = {
    "iemocap4": LabelSet(
        "iemocap4",
        ("neutral", "happy", "sad", "angry"),
        {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
        frozenset({"fru", "sur", "fea", "dis", "oth", "xxx"}),
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
        frozenset({"sur", "fea", "dis", "oth", "xxx"}),
    ),
}


def identity_label_set(labels: Sequence[str], name: str = "corpus") -> LabelSet:
    """A corpus's own label list: each raw label is its own class."""
    return LabelSet(name, tuple(labels), {x: x for x in labels})


def get_label_set(spec: str | LabelSet | Sequence[str]) -> LabelSet:
    """`iemocap4` / `iemocap6` (a raw-code mapping), a comma-separated list of class names, a list, or
    a LabelSet."""
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        if spec in LABEL_SETS:
            return LABEL_SETS[spec]
        return identity_label_set([s.strip() for s in spec.split(",") if s.strip()])
    return identity_label_set(list(spec))


def raw_code_mapping(labels: str | LabelSet | Sequence[str] | None) -> LabelSet:
    """The named raw-code mapping meant by `labels` (IEMOCAP formats carry raw codes).

    A named set ("iemocap6") is its own mapping; class names (e.g. a checkpoint's labels) select the
    named mapping with exactly those classes in that order; None is iemocap4.
    """
    ls = get_label_set(labels or "iemocap4")
    for named in LABEL_SETS.values():
        if named.labels == ls.labels:
            return named
    return ls  # no named mapping has these classes: `check` names every code it cannot read


__all__ = [
    "LABEL_SETS",
    "LabelSet",
    "UnknownLabelsError",
    "get_label_set",
    "identity_label_set",
    "raw_code_mapping",
]
