"""Read review exports (CSV/TSV, JSON Lines, Parquet, Excel) as chunks of raw string rows.

Every physical data row of an input ends up either in a yielded chunk or in the rejected
rows that come with it, so the flow can check rows in = rows scored + rows rejected.
Values are read as strings; typing and validation happen in :mod:`pipeline.validate`.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import ID_COLUMNS, TEXT_COLUMNS

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
SUPPORTED = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES | EXCEL_SUFFIXES

# Exports from Chinese platforms are often GB18030/GBK; it is a superset of GBK and GB2312.
_FALLBACK_ENCODINGS = ("utf-8", "gb18030")
_SNIFF_BYTES = 1 << 20

csv.field_size_limit(sys.maxsize)


class InputError(Exception):
    """A whole input file cannot be read; the message says which file and what to do."""


@dataclass
class Chunk:
    """A batch of raw rows from one file plus the rows of that stretch that were rejected."""

    source_file: str
    rows: pd.DataFrame  # string columns as in the file + ``source_row`` (0-based data row)
    rejected: list[dict] = field(default_factory=list)  # {source_row, raw, reason}


@dataclass(frozen=True)
class ColumnMap:
    """Which input columns hold the text, the id and the optional pass-through fields."""

    text: str
    id: str | None
    extras: dict[str, str]  # output name -> input column


def find_columns(
    columns: list[str], text_column: str | None = None, id_column: str | None = None
) -> ColumnMap:
    """Map input column names to the roles the pipeline needs (case-insensitive).

    Raises :class:`InputError` naming the columns that exist when no text column is found.
    """
    by_lower = {str(c).strip().lower(): c for c in columns}

    def pick(override: str | None, candidates: tuple[str, ...], role: str) -> str | None:
        if override is not None:
            if override.lower() not in by_lower:
                raise InputError(
                    f"--{role}-column {override!r} is not a column; columns are {list(columns)}"
                )
            return by_lower[override.lower()]
        return next((by_lower[c] for c in candidates if c in by_lower), None)

    text = pick(text_column, TEXT_COLUMNS, "text")
    if text is None:
        raise InputError(
            f"no review text column: expected one of {', '.join(TEXT_COLUMNS)} (any case), "
            f"found {list(columns)}; name the column with --text-column"
        )
    extras = {
        name: by_lower[name]
        for name in ("rating", "product_id", "category", "created_at")
        if name in by_lower
    }
    return ColumnMap(text=text, id=pick(id_column, ID_COLUMNS, "id"), extras=extras)


def detect_encoding(path: Path) -> str:
    """Return the text encoding of ``path``: BOMs first, then strict decoding, then detection.

    UTF-8 is tried on the whole file (incrementally) because a sniffed prefix can be
    pure ASCII while a later row is GBK.
    """
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in _FALLBACK_ENCODINGS:
        if _decodes(path, encoding):
            return encoding
    from charset_normalizer import from_path

    best = from_path(path, steps=5, chunk_size=_SNIFF_BYTES // 5).best()
    if best is None:
        raise InputError(
            f"{path}: cannot tell the text encoding (not UTF-8, UTF-16 or GB18030); "
            "re-export the file as UTF-8"
        )
    return best.encoding


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        with path.open("rb") as fh:
            while block := fh.read(_SNIFF_BYTES):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def iter_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Yield :class:`Chunk` objects of at most ``chunk_rows`` rows from one export file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the export files inside it")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputError(
            f"{path}: unsupported file type {suffix!r}; use one of {sorted(SUPPORTED)}"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    if suffix in CSV_SUFFIXES:
        yield from _csv_chunks(path, chunk_rows)
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_chunks(path, chunk_rows)
    elif suffix in PARQUET_SUFFIXES:
        yield from _parquet_chunks(path, chunk_rows)
    else:
        yield from _excel_chunks(path, chunk_rows)


def _frame(records: list[dict], rows: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame["source_row"] = pd.Series(rows, dtype="int64")
    return frame


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    encoding = detect_encoding(path)
    name = str(path)
    with path.open("r", encoding=encoding, newline="") as fh:
        sample = fh.read(64 * 1024)
        fh.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" or sample.count("\t") > sample.count(
            ","
        ) else ","
        reader = csv.reader(fh, delimiter=delimiter, strict=False)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: the file has no header row") from None
        header = [h.strip() for h in header]
        width = len(header)
        records: list[dict] = []
        rows: list[int] = []
        rejected: list[dict] = []
        index = -1
        for index, values in enumerate(reader):
            if not values:  # a blank line is not a row
                continue
            if len(values) != width:
                rejected.append(
                    {
                        "source_row": index,
                        "raw": delimiter.join(values)[:10000],
                        "reason": f"malformed CSV row near line {reader.line_num}: "
                        f"{len(values)} fields, header has {width} (check quoting and "
                        "delimiters in the export)",
                    }
                )
                continue
            records.append(dict(zip(header, values, strict=True)))
            rows.append(index)
            if len(records) >= chunk_rows:
                yield Chunk(name, _frame(records, rows), rejected)
                records, rows, rejected = [], [], []
        if records or rejected or index < 0:
            frame = _frame(records, rows) if records else pd.DataFrame(
                columns=[*header, "source_row"]
            )
            yield Chunk(name, frame, rejected)


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    encoding = detect_encoding(path)
    name = str(path)
    with path.open("r", encoding=encoding) as fh:
        first = fh.read(1)
        fh.seek(0)
        if path.suffix.lower() == ".json" and first == "[":
            # A JSON array export: small enough to load whole in practice.
            try:
                items = json.load(fh)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: invalid JSON ({exc})") from None
            lines: Iterator[str] = (json.dumps(item, ensure_ascii=False) for item in items)
        else:
            lines = fh
        records: list[dict] = []
        rows: list[int] = []
        rejected: list[dict] = []
        index = -1
        for line in lines:
            if not line.strip():
                continue
            index += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                rejected.append(
                    {"source_row": index, "raw": line[:10000], "reason": f"invalid JSON: {exc}"}
                )
                continue
            if not isinstance(obj, dict):
                rejected.append(
                    {
                        "source_row": index,
                        "raw": line[:10000],
                        "reason": "JSON line is not an object with named fields",
                    }
                )
                continue
            records.append({k: _as_str(v) for k, v in obj.items()})
            rows.append(index)
            if len(records) >= chunk_rows:
                yield Chunk(name, _frame(records, rows), rejected)
                records, rows, rejected = [], [], []
        if records or rejected or index < 0:
            yield Chunk(name, _frame(records, rows), rejected)


def _as_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _stringify(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        series = frame[col]
        out[str(col)] = series.map(lambda v: None if _missing(v) else _as_str(v)).astype(object)
    return out


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    start = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        frame = _stringify(batch.to_pandas())
        frame["source_row"] = range(start, start + len(frame))
        start += len(frame)
        yield Chunk(str(path), frame.reset_index(drop=True))
    if start == 0:
        yield Chunk(str(path), pd.DataFrame(columns=[*parquet.schema.names, "source_row"]))


def _excel_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        frame = pd.read_excel(path, dtype=object, sheet_name=0)
    except Exception as exc:  # openpyxl/xlrd raise many types for corrupt files
        raise InputError(
            f"{path}: not a readable Excel workbook ({type(exc).__name__}: {exc})"
        ) from None
    frame = _stringify(frame)
    frame["source_row"] = range(len(frame))
    if frame.empty:
        yield Chunk(str(path), frame)
    for start in range(0, len(frame), chunk_rows):
        yield Chunk(str(path), frame.iloc[start : start + chunk_rows].reset_index(drop=True))


def read_all(path: Path, chunk_rows: int = 100_000) -> tuple[pd.DataFrame, list[dict]]:
    """Read a whole (small) export: all rows and all rejected rows. Convenience for tests."""
    frames, rejected = [], []
    for chunk in iter_chunks(path, chunk_rows):
        frames.append(chunk.rows)
        rejected.extend(chunk.rejected)
    return pd.concat(frames, ignore_index=True), rejected


__all__ = [
    "SUPPORTED",
    "Chunk",
    "ColumnMap",
    "InputError",
    "detect_encoding",
    "expand_inputs",
    "find_columns",
    "iter_chunks",
    "read_all",
]



def expand_inputs(specs: list[str]) -> list[Path]:
    """Expand CLI inputs: files as given, directories to their supported files, glob patterns
    to their matches. Raises :class:`InputError` for a spec that matches nothing."""
    import glob

    paths: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED)
            if not found:
                raise InputError(f"{spec}: directory holds no {sorted(SUPPORTED)} files")
            paths.extend(found)
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not found:
                raise InputError(f"{spec}: the pattern matches no files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths
