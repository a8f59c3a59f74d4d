"""Property-based tests: generated messy exports never crash a run and always conserve rows.

Budget: ``WELL_FORMED_EXAMPLES`` + ``JUNK_EXAMPLES`` generated exports per test session
(deadline off). Each example goes through the run sequence the flow uses
(:func:`pipeline.run.steps.execute`: read, validate, normalise, segment, classify with the
tiny baseline, write parts, merge with the run-wide duplicate rule and the run's own
conservation checks, roll up, report, publish).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.run.steps import RunStats, score_run

WELL_FORMED_EXAMPLES = 120
JUNK_EXAMPLES = 80

FRAGMENTS = ["好评", "質量很差", "物流", "ok", "Broke!", "👍", "🔥🔥", "\u200b", "\ufeff", "\x07",
             "&lt;b&gt;", "<br/>", "<script>alert(1)</script>", "ＡＢＣ１２３", "=1+1", "@x",
             "-", "+", '"', '""', ",", "\t", "\n", "\r\n", "\r", " ", "{", "}", "[", "]", ":",
             "\\", "'", "\x00", "null", "\u2028", "한국", "カナ"]

messy_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
)
row = st.fixed_dictionaries({
    "id": st.one_of(st.sampled_from(["1", "2", "3", "x", "", " "]), st.text(max_size=5)),
    "text": messy_text,
    "rating": st.sampled_from(["5", "4.5", "0", "-1", "6", "abc", "", "nan", "1e309", "５"]),
    "created_at": st.sampled_from(["2026-11-01", "2026-11-01T10:00:00+08:00", "now", "x",
                                   "", "2026-02-30", "0"]),
})


def _run(paths: list[Path], model: Path) -> tuple[RunStats, pd.DataFrame]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as out:
        settings = Settings(model=str(model), chunk_rows=7, progress=False)
        result = score_run(out, settings, paths)
        reviews = pd.read_parquet(Path(out) / "reviews.parquet",
                                  columns=["source_file", "source_row", "text"])
    return result.stats, reviews


def _write(rows: list[dict], fmt: str, encoding: str, directory: Path) -> Path:
    if fmt == "jsonl":
        body = "".join(json.dumps(r, ensure_ascii=encoding == "gb18030") + "\n" for r in rows)
        path = directory / "export.jsonl"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",")
        writer.writerow(["id", "text", "rating", "created_at"])
        writer.writerows([r["id"], r["text"], r["rating"], r["created_at"]] for r in rows)
        body = buf.getvalue()
        path = directory / f"export.{fmt}"
    path.write_bytes(body.encode(encoding))
    return path


@pytest.mark.slow
@settings(max_examples=WELL_FORMED_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=st.lists(row, min_size=1, max_size=25),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030"]))
def test_well_formed_messy_exports_conserve_every_row(tiny_baseline_dir, rows, fmt, encoding):
    with tempfile.TemporaryDirectory() as d:
        path = _write(rows, fmt, encoding, Path(d))
        s, reviews = _run([path], tiny_baseline_dir)
        utf8 = _is_utf8(path)
    assert not s.failed_files, s.failed_files
    assert s.rows_in == len(rows) == s.rows_scored + s.rows_rejected
    for source_row, text in zip(reviews["source_row"], reviews["text"], strict=True):
        assert text == rows[source_row]["text"]  # stored exactly as exported
    # Bytes that are valid UTF-8 (e.g. ASCII-only GB18030) are read as UTF-8, rightly.
    expected = "utf-8" if encoding == "gb18030" and utf8 else encoding
    assert s.encodings[str(path)] == expected


def _is_utf8(path: Path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


junk_line = st.lists(st.sampled_from(FRAGMENTS), max_size=10).map("".join)


@pytest.mark.slow
@settings(max_examples=JUNK_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(junk_line, max_size=30), suffix=st.sampled_from([".csv", ".jsonl"]),
       second=st.lists(row, max_size=5))
def test_junk_never_crashes_and_conserves(tiny_baseline_dir, lines, suffix, second):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"junk{suffix}"
        header = "id,text\n" if suffix == ".csv" else ""
        path.write_text(header + "\n".join(lines), encoding="utf-8")
        good = _write(second, "csv", "utf-8", Path(d)) if second else None
        paths = [path, good] if good else [path]
        try:
            s, _ = _run(paths, tiny_baseline_dir)
        except InputError as exc:  # every file failed: a clear error, nothing published
            assert good is None and "no input file could be read" in str(exc)
            return
    assert s.rows_in == s.rows_scored + s.rows_rejected
    # A junk file may fail as a whole (e.g. empty); a well-formed file beside it never does.
    assert good is None or str(good) not in s.failed_files
    for message in s.failed_files.values():
        assert message.startswith(str(path))
