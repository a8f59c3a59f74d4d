"""The nightly ledger: new files are picked up, seen ones skipped, changed ones re-scored."""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.store import ledger


def test_ledger_new_seen_and_changed(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    db = tmp_path / "out" / "revsat.duckdb"
    a = inbox / "2026-11-14.csv"
    a.write_text("id,text\n1,好\n", encoding="utf-8")
    (inbox / "notes.md").write_text("not an export")
    (inbox / ".partial.csv").write_text("id,text\n")

    assert ledger.discover(inbox) == [a]
    first = ledger.new_files(db, ledger.discover(inbox))
    assert [f.path for f in first] == [a]
    ledger.record(db, first, "run1", date(2026, 11, 14))

    b = inbox / "2026-11-15.csv"
    b.write_text("id,text\n2,差\n", encoding="utf-8")
    second = ledger.new_files(db, ledger.discover(inbox))
    assert [f.path for f in second] == [b]  # a is skipped: its hash is in the ledger
    ledger.record(db, second, "run2", date(2026, 11, 15))
    assert ledger.new_files(db, ledger.discover(inbox)) == []

    a.write_text("id,text\n1,好\n3,还行\n", encoding="utf-8")  # re-exported with more rows
    changed = ledger.new_files(db, ledger.discover(inbox))
    assert [f.path for f in changed] == [a]

    # A copy of an already scored file under another name is not new.
    (inbox / "copy.csv").write_bytes(b.read_bytes())
    assert [f.path for f in ledger.new_files(db, ledger.discover(inbox))] == [a]

    # Entries removed from the ledger (by hand: `--rescore` is the supported way) are new again.
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM ledger WHERE run_date = ?", [date(2026, 11, 15)])
    con.close()
    assert {f.path.name for f in ledger.new_files(db, ledger.discover(inbox))} == {
        "2026-11-14.csv", "2026-11-15.csv"}  # copy.csv has b's bytes: returned once


def test_nightly_flow_scores_only_new_files(tmp_path, tiny_baseline_dir):
    from conftest import SAMPLE

    from flows.nightly import nightly_score

    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "day1.csv").write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out"
    first = nightly_score(str(inbox), str(out), model=str(tiny_baseline_dir),
                          run_date=date(2026, 11, 14))
    assert first["new_files"] == [str(inbox / "day1.csv")] and first["rows_scored"] > 200
    again = nightly_score(str(inbox), str(out), model=str(tiny_baseline_dir),
                          run_date=date(2026, 11, 15))
    assert again["skipped"] is True
    rerun = nightly_score(str(inbox), str(out), model=str(tiny_baseline_dir),
                          run_date=date(2026, 11, 14), rescore=True)
    assert rerun["rows_scored"] == first["rows_scored"]
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), min(run_id) FROM ledger").fetchone() == (
            1, first["run_id"])
    finally:
        con.close()
