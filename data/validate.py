"""Validation of labelled rows. Every problem is reported with its location and
a code; no message ever quotes the text being validated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from data.adapters import ColumnMap
from data.dedup import normalize_text
from data.formats import RawRow, iter_rows
from data.schema import LABELS, LANGS, MAX_TEXT_CHARS, Record

#: Every validation error code, with what it means.
ERROR_CODES = {
    "invalid_utf8": "the row is not valid UTF-8",
    "bad_json": "the line is not a JSON object",
    "bad_csv": "the CSV row does not match the header",
    "empty_text": "text is missing, empty or whitespace only",
    "bad_text_type": "text is not a string",
    "text_too_long": f"text is longer than {MAX_TEXT_CHARS} characters",
    "bad_lang": f"language code is not one of {', '.join(LANGS)}",
    "unknown_label": f"label is not one of {', '.join(LABELS)}",
    "duplicate_id": "id was already used by an earlier row",
    "label_conflict": "a label is both set and marked unknown",
}


def _safe(value: object, limit: int = 24) -> str:
    """A short, quoted rendering of a non-text field (label, id, language)."""
    s = str(value)
    return repr(s if len(s) <= limit else s[:limit] + "…")


@dataclass(frozen=True)
class Issue:
    """One validation error: where, which code, and a message without the text."""

    where: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.code}: {self.message}"


@dataclass
class ValidationReport:
    """Valid records and the issues found while reading."""

    records: list[Record] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.issues


def validate_fields(fields: dict, where: str) -> list[Issue]:
    """Check one row's fields; returns the issues (empty when valid)."""
    issues = []
    text = fields.get("text")
    # Judge emptiness after normalisation: a text of zero-width characters only
    # would otherwise pass here and reach training as an empty string.
    if text is None or (isinstance(text, str) and not normalize_text(text)):
        issues.append(Issue(where, "empty_text", ERROR_CODES["empty_text"]))
    elif not isinstance(text, str):
        issues.append(Issue(where, "bad_text_type", f"text is a {type(text).__name__}, not a string"))
    elif len(text) > MAX_TEXT_CHARS:
        issues.append(Issue(where, "text_too_long",
                            f"text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}"))
    lang = fields.get("lang")
    if lang not in LANGS:
        issues.append(Issue(where, "bad_lang", f"language {_safe(lang)} is not one of {list(LANGS)}"))
    for label in [*(fields.get("labels") or []), *(fields.get("unknown") or [])]:
        if label not in LABELS:
            issues.append(Issue(where, "unknown_label", f"label {_safe(label)} is not one of {list(LABELS)}"))
    both = set(fields.get("labels") or []) & set(fields.get("unknown") or [])
    if both:
        issues.append(Issue(where, "label_conflict",
                            f"label(s) {', '.join(_safe(lb) for lb in sorted(both))} are both set and marked unknown"))
    return issues


def validate_rows(rows: Iterable[RawRow], columns: ColumnMap | None = None) -> ValidationReport:
    """Turn raw rows into records, collecting every issue instead of stopping at the first."""
    columns = columns or ColumnMap()
    report = ValidationReport()
    first_seen: dict[str, str] = {}
    for index, raw in enumerate(rows, 1):
        report.rows += 1
        if raw.error is not None:
            code, _, message = raw.error.partition(": ")
            report.issues.append(Issue(raw.where, code, message))
            continue
        fields = columns.fields_from(raw.data or {}, index)
        issues = validate_fields(fields, raw.where)
        rid = fields["id"]
        if rid in first_seen:
            issues.append(Issue(raw.where, "duplicate_id",
                                f"id {_safe(rid)} was already used at {first_seen[rid]}"))
        else:
            first_seen[rid] = raw.where
        if issues:
            report.issues.extend(issues)
            continue
        report.records.append(Record.from_dict(fields))
    return report


def validate_path(source: str | Path, columns: ColumnMap | None = None) -> ValidationReport:
    """Read and validate a file, folder or dataset (see :func:`data.formats.iter_rows`)."""
    return validate_rows(iter_rows(source), columns)


def load_records(source: str | Path, columns: ColumnMap | None = None) -> list[Record]:
    """Load valid records, raising ``ValueError`` listing (up to 20) issues if any row is invalid."""
    report = validate_path(source, columns)
    if not report.ok:
        shown = "\n".join(str(i) for i in report.issues[:20])
        more = len(report.issues) - 20
        raise ValueError(f"{len(report.issues)} invalid rows in {source}:\n{shown}"
                         + (f"\n… and {more} more" if more > 0 else ""))
    return report.records
