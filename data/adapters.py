"""Label-mapping adapters: turn someone else's columns into Qorgan records.

Two kinds of source are understood:

* 0/1 (or probability) columns, one per source label, as in the Jigsaw
  toxic-comment data: ``label_map`` maps column names to our labels;
* one list-of-labels column (a JSON/Parquet list, or a string such as
  ``"insult;threat"``): ``label_map`` maps the values to our labels.

Source labels mapped to ``None`` (or ``""``) are dropped on purpose; an
unmapped value is passed through unchanged, so that validation reports it as
an unknown label instead of silently losing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from data.schema import LABELS

#: Jigsaw toxic-comment columns → Qorgan labels. ``severe_toxic`` and
#: ``obscene`` are dropped: untargeted profanity is not bullying (LABELS.md).
JIGSAW_LABEL_MAP: dict[str, str | None] = {
    "threat": "threat",
    "insult": "bullying",
    "identity_hate": "bullying",
    "toxic": "bullying",
    "severe_toxic": None,
    "obscene": None,
}


def parse_label_map(spec: str) -> dict[str, str | None]:
    """Parse ``"insult=bullying,threat=threat,obscene="`` into a mapping.

    An empty right-hand side drops that source label.
    """
    mapping: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"label map entry {part!r} must look like SOURCE=LABEL")
        src, dst = (s.strip() for s in part.split("=", 1))
        if not src:
            raise ValueError(f"label map entry {part!r} has an empty source name")
        if dst and dst not in LABELS:
            raise ValueError(f"label map entry {part!r}: {dst!r} is not one of {list(LABELS)}")
        mapping[src] = dst or None
    return mapping


def _truthy(value: Any, threshold: float) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    try:
        return float(value) >= threshold
    except (TypeError, ValueError):
        return str(value).strip().lower() in {"true", "yes", "y"}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return []
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                parsed = None
            # Not a JSON list: keep it whole so validation reports an unknown label.
            return [str(v) for v in parsed] if isinstance(parsed, list) else [s]
        for sep in (";", "|", ","):
            if sep in s:
                return [v.strip() for v in s.split(sep) if v.strip()]
        return [s]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    # A scalar (number, bool, object) where a list belongs: reported as an unknown label.
    return [str(value)]


@dataclass
class ColumnMap:
    """How the columns of a source table become record fields.

    Missing optional columns get defaults: ``id`` becomes ``<prefix>-<row>``,
    ``lang`` becomes ``default_lang``, ``group`` becomes the id, ``source``
    becomes ``default_source``.
    """

    text_column: str = "text"
    id_column: str = "id"
    lang_column: str = "lang"
    labels_column: str = "labels"
    group_column: str = "group"
    source_column: str = "source"
    tags_column: str = "tags"
    #: Labels whose value is not known for the row (partial labels), e.g. ``["bullying"]``.
    unknown_column: str = "unknown"
    label_map: dict[str, str | None] | None = None
    binary_threshold: float = 0.5
    default_lang: str | None = None
    default_source: str = ""
    id_prefix: str = "row"

    @classmethod
    def jigsaw(cls, label_map: dict[str, str | None] | None = None, **kw: Any) -> ColumnMap:
        """The Jigsaw toxic-comment layout (``comment_text`` + 0/1 label columns, English)."""
        kw.setdefault("text_column", "comment_text")
        kw.setdefault("default_lang", "en")
        kw.setdefault("default_source", "jigsaw")
        return cls(label_map=dict(label_map or JIGSAW_LABEL_MAP), **kw)

    def labels_from(self, row: dict[str, Any]) -> list[str]:
        """The row's labels in Qorgan names (unknown names passed through for validation)."""
        mapping = self.label_map
        if mapping and any(col in row for col in mapping) and self.labels_column not in row:
            out = [dst for col, dst in mapping.items()
                   if dst and col in row and _truthy(row[col], self.binary_threshold)]
        else:
            values = _as_list(row.get(self.labels_column))
            out = []
            for v in values:
                if mapping is not None and v in mapping:
                    if mapping[v]:
                        out.append(mapping[v])
                else:
                    out.append(v)
        return list(dict.fromkeys(out))

    def fields_from(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """Record fields (possibly invalid) for one source row."""
        rid = row.get(self.id_column)
        rid = str(rid) if rid not in (None, "") else f"{self.id_prefix}-{index}"
        return {
            "id": rid,
            "text": row.get(self.text_column),
            "lang": row.get(self.lang_column) or self.default_lang,
            "labels": self.labels_from(row),
            "source": str(row.get(self.source_column) or self.default_source),
            "group": str(row.get(self.group_column) or rid),
            "tags": _as_list(row.get(self.tags_column)),
            "unknown": _as_list(row.get(self.unknown_column)),
        }


#: Named adapters selectable from the command line.
ADAPTERS = {"qorgan": ColumnMap, "jigsaw": ColumnMap.jigsaw}
