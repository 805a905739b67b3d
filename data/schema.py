"""The label schema: the one place where labels, languages, policies and the
triage priority rules are defined (see ``shared/LABELS.md``).

Training writes these facts into every model bundle; serving reads them back
from the bundle and never re-spells them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The four labels, in the fixed order of every model output.
LABELS: tuple[str, ...] = ("bullying", "threat", "self_harm", "bullying_disclosure")

#: Language codes. ``kk-ru`` is Kazakh–Russian code-switching inside one message.
LANGS: tuple[str, ...] = ("kk", "ru", "en", "kk-ru")

#: Longest message accepted anywhere (characters).
MAX_TEXT_CHARS = 5000

#: Policy names; each is a set of per-label thresholds fitted on the calib split.
POLICIES: tuple[str, ...] = ("moderation", "triage")

#: Triage priority, highest first: the first rule whose labels are flagged wins.
PRIORITY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("urgent", ("self_harm",)),
    ("high", ("threat", "bullying_disclosure")),
    ("normal", ("bullying",)),
)
#: Priority when no label is flagged.
PRIORITY_DEFAULT = "low"
PRIORITY_LEVELS: tuple[str, ...] = (*(level for level, _ in PRIORITY_RULES), PRIORITY_DEFAULT)

#: Tags that mark a clean message as a hard negative (see data/GUIDELINES.md).
HARD_NEGATIVE_PREFIX = "hn:"
#: Tag carried by augmented variants (transliteration, typos, obfuscation).
AUGMENTED_TAG = "augmented"
#: Target value of an unknown label (partial labels): every loss and metric skips it.
UNKNOWN_TARGET = float("nan")


def priority_spec() -> dict[str, Any]:
    """Triage priority rules in the JSON form written into a model bundle."""
    return {
        "levels": list(PRIORITY_LEVELS),
        "rules": [{"level": level, "any_of": list(labels)} for level, labels in PRIORITY_RULES],
        "default": PRIORITY_DEFAULT,
    }


@dataclass(frozen=True)
class Record:
    """One labelled message.

    ``group`` ties together messages that must stay in the same split: an original
    and its augmented variants, or messages from one conversation. ``tags`` carry
    optional annotations such as ``hn:gaming`` (hard negative) or ``translit``.

    ``unknown`` names labels whose value is not known (partial labels): a
    background review is known to carry no ``threat``, ``self_harm`` or
    ``bullying_disclosure``, but may insult its addressee. Unknown labels are
    masked out of the training loss and skipped by every metric; in
    :meth:`label_vector` they are ``nan``.
    """

    id: str
    text: str
    lang: str
    labels: tuple[str, ...] = ()
    source: str = ""
    group: str = ""
    tags: tuple[str, ...] = field(default=())
    unknown: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)
        # Keep label order canonical so equal label sets compare equal.
        object.__setattr__(self, "labels", tuple(lb for lb in LABELS if lb in self.labels))
        object.__setattr__(self, "unknown", tuple(lb for lb in LABELS if lb in self.unknown))
        both = set(self.labels) & set(self.unknown)
        if both:
            raise ValueError(f"record {self.id}: labels {sorted(both)} are both set and unknown")

    @property
    def is_clean(self) -> bool:
        return not self.labels

    @property
    def is_augmented(self) -> bool:
        return AUGMENTED_TAG in self.tags

    @property
    def is_hard_negative(self) -> bool:
        return self.is_clean and any(t.startswith(HARD_NEGATIVE_PREFIX) for t in self.tags)

    def label_vector(self) -> list[float]:
        """Multi-hot target in ``LABELS`` order: 1 positive, 0 negative, ``nan`` unknown."""
        return [1.0 if lb in self.labels else UNKNOWN_TARGET if lb in self.unknown else 0.0 for lb in LABELS]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "lang": self.lang,
            "labels": list(self.labels),
            "source": self.source,
            "group": self.group,
        }
        if self.tags:
            out["tags"] = list(self.tags)
        if self.unknown:
            out["unknown"] = list(self.unknown)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=str(d["id"]),
            text=d["text"],
            lang=d["lang"],
            labels=tuple(d.get("labels") or ()),
            source=d.get("source") or "",
            group=d.get("group") or "",
            tags=tuple(d.get("tags") or ()),
            unknown=tuple(d.get("unknown") or ()),
        )
