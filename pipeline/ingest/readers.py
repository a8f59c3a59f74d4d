"""Read review exports (CSV/TSV, JSON Lines, Parquet, Excel) as chunks of raw string rows.

Every physical data row of an input ends up either in a yielded chunk or in the rejected
rows that come with it, so the flow can check rows in = rows scored + rows rejected.
Values are read as strings; typing and validation happen in :mod:`pipeline.ingest.validate`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from pipeline.errors import InputError
from pipeline.ingest.columns import ColumnMap, find_columns
from pipeline.retry import backoff_delays, retry, retry_iter

log = logging.getLogger("revsat")

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
SUPPORTED = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES | EXCEL_SUFFIXES

# Exports from Chinese platforms are often GB18030/GBK; it is a superset of GBK and GB2312.
_FALLBACK_ENCODINGS = ("utf-8", "gb18030")
_SNIFF_BYTES = 1 << 20
_DELIMITERS = (",", "\t", ";", "|")  # in order of preference when the header has as many

csv.field_size_limit(sys.maxsize)



@dataclass
class Chunk:
    """A batch of raw rows from one file plus the rows of that stretch that were rejected."""

    source_file: str
    rows: pd.DataFrame  # string columns as in the file + ``source_row`` (0-based data row)
    rejected: list[dict] = field(default_factory=list)  # {source_row, raw, reason}
    #: Text encoding the file was decoded with (``utf-8``, ``utf-8-sig``, ``utf-16``,
    #: ``gb18030``, a guessed codec as ``<codec> (guessed)``), or ``binary`` for Parquet/Excel.
    encoding: str | None = None


def detect_encoding(path: Path) -> str:
    """Return the text encoding of ``path``: BOMs first, then strict decoding, then detection.

    UTF-8 is tried on the whole file (incrementally) because a sniffed prefix can be
    pure ASCII while a later row is GBK. Only when neither UTF-8 nor GB18030 decodes the whole
    file is the encoding guessed (charset-normalizer); the guess is logged as a warning and
    reported as ``<codec> (guessed)`` in the run record.
    """
    return _detect(path)[0]


def _detect(path: Path) -> tuple[str, bool]:
    """``(encoding, guessed)`` of a text file."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", False
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", False
    for encoding in _FALLBACK_ENCODINGS:
        if _decodes(path, encoding):
            return encoding, False
    from charset_normalizer import from_path

    best = from_path(path, steps=5, chunk_size=_SNIFF_BYTES // 5).best()
    if best is None:
        raise InputError(
            f"{path}: cannot tell the text encoding (not UTF-8, UTF-16 or GB18030); "
            "re-export the file as UTF-8"
        )
    return best.encoding, True


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


def _text_encoding(path: Path) -> tuple[str, str]:
    """The codec to open ``path`` with and the label reported for it (logged)."""
    encoding, guessed = _detect(path)
    if guessed:
        log.warning("%s: not UTF-8, UTF-16 or GB18030; decoding as %s (a guess: check the "
                    "text in reviews.parquet, or re-export as UTF-8)", path, encoding)
        return encoding, f"{encoding} (guessed)"
    log.info("%s: encoding %s", path, encoding)
    return encoding, encoding


#: Waits between attempts when reading a file fails transiently (see :mod:`pipeline.retry`).
READ_RETRY_DELAYS: list[float] = backoff_delays()
_sleep = time.sleep  # replaced in tests


def iter_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Yield :class:`Chunk` objects of at most ``chunk_rows`` rows from one export file.

    A transient I/O error (network mount, ``EIO``) re-opens the file after a backoff and
    resumes after the last chunk already yielded (reading is deterministic), up to
    ``len(READ_RETRY_DELAYS)`` times; then the error is raised. A file that cannot be read at
    all raises :class:`InputError` with the file, the problem and what to do.
    """
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
    try:
        yield from retry_iter(lambda: _read(path, suffix, chunk_rows), f"reading {path}",
                              attempts=len(READ_RETRY_DELAYS) + 1, sleep=_sleep)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: cannot be decoded as {exc.encoding} at byte {exc.start} ({exc.reason});"
            " re-export the file as UTF-8"
        ) from None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (streamed): identifies an input across re-runs. A transient
    read error (network mount) is retried with backoff; a missing file fails at once.

    Remembered per process for the same file, size and modification time: a nightly run's
    pre-flight, ledger and plan each ask for it, and a large export was read three times."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _digest(path)
    return _remembered_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=4096)
def _remembered_digest(name: str, size: int, mtime_ns: int, inode: int) -> str:
    return _digest(Path(name))


def _digest(path: Path) -> str:
    def digest_once() -> str:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    return retry(digest_once, f"hashing {path}")


def _read(path: Path, suffix: str, chunk_rows: int) -> Iterator[Chunk]:
    if suffix in CSV_SUFFIXES:
        return _csv_chunks(path, chunk_rows)
    if suffix in JSONL_SUFFIXES:
        return _jsonl_chunks(path, chunk_rows)
    if suffix in PARQUET_SUFFIXES:
        return _parquet_chunks(path, chunk_rows)
    return _excel_chunks(path, chunk_rows)


def _frame(records: list[dict], rows: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame["source_row"] = pd.Series(rows, dtype="int64")
    return frame


#: After this many unbalanced quotes in one file, later lines are no longer re-parsed (that
#: would be quadratic); each remaining line of the swallowed stretch is rejected instead.
MAX_QUOTE_RECOVERIES = 100
_RAW_LIMIT = 10_000


def _quote_state(text: str, delimiter: str) -> str:
    """How the quoting of ``text`` (one CSV record) ends: ``"ok"``, ``"unterminated"`` (inside a
    quoted field at the end) or ``"stray"`` (a closing quote followed by something other than a
    delimiter or line end, which the lenient reader keeps as text).

    Mirrors the states of Python's csv reader with ``strict=False``: a quote opens a quoted
    field only at the start of a field, ``""`` inside it is a literal quote.
    """
    start, unquoted, quoted, quote_in_quoted = range(4)
    state, stray = start, False
    for ch in text:
        if state == quoted:
            if ch == '"':
                state = quote_in_quoted
        elif state == quote_in_quoted:
            if ch == '"':
                state = quoted
            elif ch == delimiter or ch in "\r\n":
                state = start
            else:
                state, stray = unquoted, True
        elif ch == delimiter or ch in "\r\n":
            state = start
        elif state == start and ch == '"':
            state = quoted
        else:
            state = unquoted
    if state == quoted:
        return "unterminated"
    return "stray" if stray else "ok"


def _rows_fit(lines: list[str], width: int, delimiter: str) -> bool:
    """True when ``lines`` parse on their own into rows of exactly ``width`` fields: then a
    malformed multi-line record is better read as a stray quote on its first line."""
    try:
        records = [r for r in csv.reader(lines, delimiter=delimiter, strict=False) if r]
    except csv.Error:
        return False
    return bool(records) and all(len(r) == width for r in records)


_HEADER_SEARCH = 10


def title_rows(records: list[list]) -> int:
    """How many leading rows are titles above the header (``商品评价导出 2026-11-20`` in a
    merged first row): rows with at most one non-empty cell before the first row with two or
    more, looked for in the first rows only. 0 when the first row has two cells or more, or
    when no row has (a one-column export)."""
    for i, record in enumerate(records[: _HEADER_SEARCH + 1]):
        if sum(1 for v in record if v is not None and str(v).strip() and str(v) != "nan") >= 2:
            return i
    return 0


def _first_line(text: str) -> str:
    lines = text.splitlines()
    for line in lines:
        if "," in line or "\t" in line or ";" in line or "|" in line:
            return line
    return lines[0] if lines else ""


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """CSV/TSV rows. Every record the csv module returns is a row (blank lines are skipped but
    keep their ``source_row`` number). Records are checked against the header's width.

    Unbalanced quotes: a quoted field that never closes (which would swallow the rest of the
    file into one row), or a multi-line record whose quoting is broken (wrong width, or a
    closing quote followed by text) while the lines after its first are well-formed rows on
    their own, is reported: its first line is rejected with the line number and reading
    resumes on the next line. A stray quote that is closed cleanly by a later quote at a field
    end cannot be told apart from a legitimate multi-line review and is read as one."""
    encoding, label = _text_encoding(path)
    name = str(path)
    with path.open("r", encoding=encoding, newline="") as fh:
        # The delimiter is decided on the header line only: review text may hold many tabs.
        head = fh.read(64 * 1024)
        fh.seek(0)
        # the first 10 non-blank lines: enough for title rows and the header
        head = "\n".join([line for line in head.splitlines() if line.strip()][:_HEADER_SEARCH + 1])
        # Semicolons come from spreadsheet exports in locales with a decimal comma.
        delimiter = "\t" if path.suffix.lower() == ".tsv" else max(
            _DELIMITERS, key=lambda d: (_first_line(head).count(d), -_DELIMITERS.index(d)))
        consumed: list[str] = []  # physical lines of the record being read
        line_no = 0  # physical lines consumed so far (the header is line 1)

        def feed(lines: Iterable[str]) -> Iterator[str]:
            nonlocal line_no
            for line in lines:
                consumed.append(line)
                line_no += 1
                yield line

        def reader_over(lines: Iterable[str]):
            return csv.reader(feed(lines), delimiter=delimiter, strict=False)

        titles = skipped = title_rows(list(csv.reader(io.StringIO(head), delimiter=delimiter)))
        reader = reader_over(fh)
        header: list[str] = []
        try:
            while not any(h.strip() for h in header) or titles:
                if any(h.strip() for h in header):
                    titles -= 1
                header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: the file has no header row") from None
        except csv.Error as exc:
            raise InputError(f"{path}: cannot read the header row ({exc})") from None
        header = [h.strip() for h in header]
        if skipped:
            log.warning("%s: title row(s) above the header on line %d skipped", path, line_no)
        consumed.clear()
        width = len(header)
        records: list[dict] = []
        rows: list[int] = []
        rejected: list[dict] = []
        index = -1
        recoveries = 0
        emitted = False

        def reject(row: int, raw: str, reason: str) -> None:
            rejected.append({"source_row": row, "raw": raw[:_RAW_LIMIT], "reason": reason})

        while True:
            first = line_no + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field over the size limit
                index += 1
                reject(index, "".join(consumed),
                       f"unreadable CSV on line {first}: {exc} (check the export)")
                consumed.clear()
                reader = reader_over(fh)
                continue
            lines, consumed[:] = consumed[:], []
            index += 1
            if not values:  # a blank line is not a row
                continue
            last = first + len(lines) - 1
            quoting = _quote_state("".join(lines), delimiter)
            unterminated = quoting == "unterminated"
            if unterminated or (len(lines) > 1 and (len(values) != width or quoting == "stray")
                                and _rows_fit(lines[1:], width, delimiter)):
                if unterminated:
                    what = ("never closes before the end of the file" if last == first else
                            f"never closes, which would merge lines {first}-{last} into one row")
                else:
                    what = (f"is closed only by a stray quote on line {last}, merging lines "
                            f"{first}-{last} into one row")
                reject(index, lines[0],
                       f"unbalanced quote on line {first}: a quoted field opens there and {what}; "
                       f"this line is rejected and reading resumes on line {first + 1} (fix the "
                       "quoting in the export)")
                rest = lines[1:]
                line_no = first
                recoveries += 1
                if recoveries <= MAX_QUOTE_RECOVERIES:
                    reader = reader_over(itertools.chain(rest, fh))
                    continue
                for offset, line in enumerate(rest, start=1):  # give up re-parsing
                    index += 1
                    reject(index, line, f"line {first + offset} follows the unbalanced quote "
                           f"on line {first} (more than {MAX_QUOTE_RECOVERIES} unbalanced "
                           "quotes in this file: fix the quoting in the export)")
                line_no = last
                reader = reader_over(fh)
                continue
            if len(values) != width:
                span = f"line {first}" if last == first else (
                    f"lines {first}-{last} (a quoted field spans them: check for a stray quote)")
                reject(index, "".join(lines),
                       f"malformed CSV row on {span}: {len(values)} fields, header has {width} "
                       "(check quoting and delimiters in the export)")
                continue
            records.append(dict(zip(header, values, strict=True)))
            rows.append(index)
            if len(records) >= chunk_rows:
                yield Chunk(name, _frame(records, rows), rejected, label)
                records, rows, rejected = [], [], []
                emitted = True
        if records or rejected or not emitted:  # every file yields at least one chunk
            frame = _frame(records, rows) if records else pd.DataFrame(
                columns=[*header, "source_row"]
            )
            yield Chunk(name, frame, rejected, label)


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    encoding, label = _text_encoding(path)
    name = str(path)
    with path.open("r", encoding=encoding) as fh:
        items = _json_document_items(path, fh) if path.suffix.lower() == ".json" else None
        if items is not None:
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
            records.append({k: _as_str(v) for k, v in _flatten(obj).items()})
            rows.append(index)
            if len(records) >= chunk_rows:
                yield Chunk(name, _frame(records, rows), rejected, label)
                records, rows, rejected = [], [], []
        if records or rejected or index < 0:
            yield Chunk(name, _frame(records, rows), rejected, label)


def _json_document_items(path: Path, fh) -> list | None:
    """The records of a ``.json`` file holding one document: an array of records, or an object
    wrapping them (``{"total": 2, "data": [...]}``: its longest list of objects). ``None`` for
    JSON Lines saved as ``.json``. Such exports are small enough to load whole in practice."""
    first = fh.read(4096).lstrip()[:1]
    fh.seek(0)
    if first not in ("[", "{"):
        return None
    try:
        doc = json.load(fh)
    except json.JSONDecodeError as exc:
        fh.seek(0)
        if first == "{" and exc.msg == "Extra data":  # one object per line: JSON Lines
            return None
        raise InputError(f"{path}: invalid JSON ({exc})") from None
    if isinstance(doc, list):
        return doc
    lists = [v for v in doc.values()
             if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    return max(lists, key=len) if lists else [doc]


def _flatten(obj: dict, prefix: str = "") -> dict:
    """Nested objects as dotted names (``{"review": {"text": ..}}`` -> ``review.text``), which
    the column search reads as ``review_text``."""
    out: dict = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


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
    batches = parquet.iter_batches(batch_size=chunk_rows)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except OSError:
            raise  # maybe transient: iter_chunks retries
        except Exception as exc:  # a corrupt page or column chunk after a valid footer
            raise InputError(
                f"{path}: Parquet data after row {start} cannot be read "
                f"({type(exc).__name__}: {exc}); re-export the file"
            ) from None
        frame = _stringify(batch.to_pandas())
        frame["source_row"] = range(start, start + len(frame))
        start += len(frame)
        yield Chunk(str(path), frame.reset_index(drop=True), encoding="binary")
    if start == 0:
        yield Chunk(str(path), pd.DataFrame(columns=[*parquet.schema.names, "source_row"]),
                    encoding="binary")


def _excel_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        sheets = pd.read_excel(path, dtype=object, sheet_name=None)
    except Exception as exc:  # openpyxl/xlrd raise many types for corrupt files
        raise InputError(
            f"{path}: not a readable Excel workbook ({type(exc).__name__}: {exc})"
        ) from None
    frames = {name: _excel_header(path, name, frame) for name, frame in sheets.items()}
    frame = pd.concat(_review_sheets(path, frames), ignore_index=True)
    frame = _stringify(frame)
    frame["source_row"] = range(len(frame))
    if frame.empty:
        yield Chunk(str(path), frame, encoding="binary")
    for start in range(0, len(frame), chunk_rows):
        yield Chunk(str(path), frame.iloc[start : start + chunk_rows].reset_index(drop=True),
                    encoding="binary")


def _excel_header(path: Path, sheet: str, frame: pd.DataFrame) -> pd.DataFrame:
    """One sheet read from its real header: title or blank rows above it are skipped."""
    named = [None if str(c).startswith("Unnamed: ") else c for c in frame.columns]
    titles = title_rows([named, *frame.head(_HEADER_SEARCH).values.tolist()])
    if not titles:
        return frame
    log.warning("%s, sheet %r: %d title or blank row(s) above the header skipped",
                path, sheet, titles)
    return pd.read_excel(path, dtype=object, sheet_name=sheet, header=titles)


def _review_sheets(path: Path, frames: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    """The sheets to read, in workbook order: those whose header names a review text column
    (a workbook of one sheet per month, or a cover sheet before the reviews), else the
    first sheet alone (whose columns ``--text-column`` then names). Rows are numbered across
    the sheets read."""
    if len(frames) == 1:
        return list(frames.values())
    found = []
    for name, frame in frames.items():
        try:
            find_columns([str(c) for c in frame.columns])
        except InputError:
            continue
        found.append(name)
    if not found:
        return [next(iter(frames.values()))]
    skipped = [name for name in frames if name not in found]
    log.info("%s: sheet(s) %s read%s", path, ", ".join(map(repr, found)),
             f"; {', '.join(map(repr, skipped))} skipped: no review text column" if skipped
             else "")
    return [frames[name] for name in found]


def check_input(path: Path, overrides: dict[str, str] | None = None) -> None:
    """Raise :class:`InputError` when ``path`` cannot be scored at all: missing, empty, an
    unsupported type, unreadable, no header, or no text column (cheap: reads the first rows
    only). The CLI runs this before the model loads or a server starts."""
    quiet = log.level
    log.setLevel(max(quiet, logging.WARNING))  # the run logs the encoding; a guess warns twice
    try:
        chunk = next(iter_chunks(path, 200), None)
        if chunk is not None and not chunk.rows.empty:
            find_columns([c for c in chunk.rows.columns if c != "source_row"],
                         overrides=overrides)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}"
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: {exc}") from None
    finally:
        log.setLevel(quiet)


__all__ = [
    "SUPPORTED",
    "Chunk",
    "ColumnMap",
    "InputError",
    "check_input",
    "detect_encoding",
    "expand_inputs",
    "file_digest",
    "find_columns",
    "iter_chunks",
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
