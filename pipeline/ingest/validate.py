"""Turn raw string rows into typed review records, rejecting what cannot be scored.

Policies (also in the README):
- empty or whitespace-only text -> rejected;
- a missing id -> ``h-`` + a hash of the file name and the text (stable across re-runs);
- a review id seen earlier in the same run -> rejected, naming the first occurrence: decided
  once for the whole run when its parts are merged (:func:`pipeline.store.parts.merge_parts`),
  so every accepted row keeps its original values as ``raw`` for that rejection;
- an unparseable or out-of-range rating (not 0-5) or date -> the review is scored, the field is
  set to null and a warning row records the original value (nothing is lost, nothing guessed).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.ingest.readers import Chunk, ColumnMap


def content_hash(text: str) -> str:
    """Hash of a review's text; with the model version it keys incremental scoring."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def fallback_id(source_file: str, text: str) -> str:
    """Stable id for rows without one: the file's base name and the text, hashed."""
    digest = hashlib.sha1(f"{Path(source_file).name}\x1f{text}".encode()).hexdigest()
    return f"h-{digest[:16]}"


@dataclass
class Validated:
    """Accepted rows, rejected rows and field warnings of one chunk."""

    accepted: pd.DataFrame
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)


def raw_values(rows: pd.DataFrame) -> list[str]:
    """Each row's input values (``source_row`` left out) as JSON: the ``raw`` of a rejected
    row."""
    values = rows.drop(columns="source_row", errors="ignore").to_dict("records")
    return [json.dumps(v, ensure_ascii=False, default=str) for v in values]


def validate_chunk(chunk: Chunk, columns: ColumnMap) -> Validated:
    """Validate one raw chunk against ``columns``. Accepted rows carry their ``raw`` values
    (see the module doc: duplicates are rejected at merge time, run-wide)."""
    rows = chunk.rows
    rejected = [dict(r, source_file=chunk.source_file) for r in chunk.rejected]
    warnings: list[dict] = []
    n = len(rows)
    text = rows[columns.text] if n else pd.Series([], dtype=object)
    text = text.map(lambda v: v if isinstance(v, str) else "")
    keep = text.str.strip().str.len() > 0
    raw = pd.Series(raw_values(rows), index=rows.index, dtype=object)
    for idx in rows.index[~keep]:
        rejected.append(
            {
                "source_file": chunk.source_file,
                "source_row": int(rows.at[idx, "source_row"]),
                "raw": raw[idx],
                "reason": f"empty text in column {columns.text!r}",
            }
        )
    rows, text = rows[keep], text[keep]
    if columns.id is not None:
        given = rows[columns.id].map(lambda v: v.strip() if isinstance(v, str) else "")
    else:
        given = pd.Series("", index=rows.index)
    review_ids = [
        g or fallback_id(chunk.source_file, t) for g, t in zip(given, text, strict=True)
    ]
    out = pd.DataFrame(
        {
            "review_id": pd.Series(review_ids, index=rows.index, dtype=object),
            "text": text.astype(object),
        }
    )
    out["rating"] = _typed(rows, columns, "rating", _parse_rating, chunk.source_file, warnings)
    out["product_id"] = _passthrough(rows, columns, "product_id")
    out["category"] = _passthrough(rows, columns, "category")
    out["created_at"] = _typed(
        rows, columns, "created_at", _parse_date, chunk.source_file, warnings
    )
    out["source_file"] = chunk.source_file
    out["source_row"] = rows["source_row"].astype("int64")
    out["content_hash"] = out["text"].map(content_hash)
    out["raw"] = raw[keep]
    return Validated(out.reset_index(drop=True), rejected, warnings)


def _passthrough(rows: pd.DataFrame, columns: ColumnMap, name: str) -> pd.Series:
    col = columns.extras.get(name)
    if col is None:
        return pd.Series(None, index=rows.index, dtype=object)
    return rows[col].map(lambda v: v.strip() or None if isinstance(v, str) else None)


_RATING_TEXT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:out of 5(?: stars?)?|/\s*5|stars?|星|分)?",
                          re.IGNORECASE)
_CHINESE_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}


def _parse_rating(value: str) -> float | None:
    """A number in 0-5, also as exports write it: ``4.0 out of 5 stars``, ``4星``, ``五星``,
    ``★★★★☆``."""
    if value and set(value) <= {"★", "☆"}:
        return float(value.count("★"))
    if len(value) == 2 and value[1] == "星" and value[0] in _CHINESE_DIGITS:
        return float(_CHINESE_DIGITS[value[0]])
    match = _RATING_TEXT.fullmatch(value)
    rating = float(match.group(1) if match else value)
    if not 0 <= rating <= 5:
        raise ValueError("outside 0-5")
    return rating


#: Words pandas would turn into the current time: a re-run must not change the data.
_RELATIVE_DATES = {"now", "today", "tomorrow", "yesterday"}


#: ``2026年11月20日 13时45分`` -> ``2026-11-20 13:45``, as Chinese platforms export dates.
_CJK_DATE = [
    (re.compile(r"(\d)\s*[年月]\s*(?=\d)"), r"\1-"),
    (re.compile(r"(\d)\s*[日号]"), r"\1 "),
    (re.compile(r"(\d)\s*[时点:]\s*(?=\d)"), r"\1:"),
    (re.compile(r"(\d)\s*[分秒]"), r"\1"),
]
_EPOCH = re.compile(r"\d{9,10}(\.\d+)?|\d{12,13}")  # Unix time in seconds or milliseconds


def _parse_date(value: str) -> pd.Timestamp:
    if value.strip().lower() in _RELATIVE_DATES:
        raise ValueError("a relative date, not a date")
    if _EPOCH.fullmatch(value):
        return pd.Timestamp(float(value), unit="s" if len(value.split(".")[0]) <= 10 else "ms")
    for pattern, repl in _CJK_DATE:
        value = pattern.sub(repl, value)
    stamp = pd.Timestamp(value.strip())
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if pd.isna(stamp):
        raise ValueError("not a date")
    return stamp


def _typed(rows, columns, name, parse, source_file, warnings) -> pd.Series:
    col = columns.extras.get(name)
    if col is None:
        return pd.Series(None, index=rows.index, dtype=object)
    values = []
    for idx, raw in rows[col].items():
        if not isinstance(raw, str) or not raw.strip():
            values.append(None)
            continue
        try:
            values.append(parse(raw.strip()))
        except (ValueError, TypeError, OverflowError) as exc:
            values.append(None)
            warnings.append(
                {
                    "source_file": source_file,
                    "source_row": int(rows.at[idx, "source_row"]),
                    "column": col,
                    "value": raw[:200],
                    "reason": f"invalid {name} ({exc}); stored as null, review still scored",
                }
            )
    if name == "created_at":
        return pd.Series(pd.to_datetime(values), index=rows.index, dtype="datetime64[us]")
    return pd.Series(values, index=rows.index, dtype="float64")
