"""Fault injection: a real scoring process is killed with SIGKILL at several points.

Invariants after every kill:
- before publication starts, the previous outputs are byte-identical (Parquet, report,
  run.json) and the DuckDB tables hold the previous rows;
- output files flip from the previous run to the new one all at once, never a mix, also when
  the kill lands between the DuckDB commit and the flip (the next run completes the flip);
- at any point, every output file is complete and readable (never half-written);
- the next run completes, reuses the finished parts when killed during scoring, and its
  results equal an uninterrupted run's (except run ids and timings).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import ROOT, big_export

from pipeline.catalog import REVIEWS_SCHEMA

pytestmark = pytest.mark.slow

ROWS, CHUNK = 20_000, 1_000
FILES = ("reviews.parquet", "rejected.parquet", "warnings.parquet", "satisfaction.parquet",
         "report.html", "run.json")

# The run sequence the flow uses, as a separate process (no Prefect: start-up would dominate
# the timings).
DRIVER = f"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from pipeline.config import Settings
from pipeline.run.steps import score_run
out, model, export = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
if len(sys.argv) > 5:  # fault injection inside publication: SIGKILL ourselves at that point
    import os, signal
    from pipeline.store import writers
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if sys.argv[5] == "after-db-commit":  # DuckDB committed, files not flipped yet
        writers._flip = die
    elif sys.argv[5] == "after-flip":  # files flipped, journal not yet removed
        writers._fsync_dir = die
result = score_run(out, Settings(model=model, chunk_rows={CHUNK}, progress=False), [export])
print("parts_reused", result.stats.parts_reused, "cached", result.stats.cached)
"""


def start(out: Path, model: Path, export: Path, fault: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(out), str(model), str(export), str(ROOT),
         *([fault] if fault else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def digests(out: Path) -> dict[str, str]:
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in FILES}


def db_tables(out: Path, tmp: Path) -> dict[str, int]:
    """Row counts of the published DuckDB tables, read from a copy (opening may replay the WAL
    of a killed writer; the original is left as the next run finds it)."""
    tmp.mkdir(exist_ok=True)
    for suffix in ("", ".wal"):
        src = out / f"revsat.duckdb{suffix}"
        dst = tmp / f"copy.duckdb{suffix}"
        dst.unlink(missing_ok=True)
        if src.exists():
            dst.write_bytes(src.read_bytes())
    con = duckdb.connect(str(tmp / "copy.duckdb"))
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("reviews", "rejected", "warnings", "satisfaction", "runs")}
    finally:
        con.close()


def readable(out: Path) -> None:
    for name in FILES:
        if name.endswith(".parquet"):
            pd.read_parquet(out / name)
    json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert (out / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")


def comparable(out: Path) -> dict[str, pd.DataFrame]:
    cols = [c for c in REVIEWS_SCHEMA.names if c != "run_id"]
    return {
        "reviews": pd.read_parquet(out / "reviews.parquet")[cols],
        "rejected": pd.read_parquet(out / "rejected.parquet").drop(columns="run_id"),
        "satisfaction": pd.read_parquet(out / "satisfaction.parquet").drop(columns="run_id"),
    }


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_sigkill_at_several_points_then_rerun(tmp_path, tiny_baseline_dir):
    export = tmp_path / "big.csv"
    big_export(export, ROWS)
    # A different first export so that the "previous outputs" differ from the rerun's.
    previous_export = tmp_path / "previous.csv"
    big_export(previous_export, 3_000)
    out = tmp_path / "out"
    finish(start(out, tiny_baseline_dir, previous_export))
    before, before_db = digests(out), db_tables(out, tmp_path / "db0")

    # The uninterrupted reference run of the big export, in its own folder.
    t0 = time.perf_counter()
    finish(start(tmp_path / "clean", tiny_baseline_dir, export))
    clean_seconds = time.perf_counter() - t0
    reference = comparable(tmp_path / "clean")

    parts = out / ".revsat" / "parts"
    results = []
    # 1) Killed once some parts are finished: nothing published, parts reused by the rerun.
    proc = start(out, tiny_baseline_dir, export)
    deadline = time.monotonic() + 300
    while len(list(parts.glob("*/*.done.json"))) < 3:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("*/*.done.json")))
    assert digests(out) == before, "outputs changed by a run killed while scoring"
    assert db_tables(out, tmp_path / "db1") == before_db
    assert not any(p.suffix == ".tmp" for p in out.glob("*")), "temporary file in --out"
    stdout = finish(start(out, tiny_baseline_dir, export))
    reused = int(stdout.split()[1])
    assert reused >= done - 1 >= 2, stdout  # the part being written at the kill may be redone
    assert_same(comparable(out), reference)
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["parts_reused"] == reused and record["rows_in"] == ROWS
    results.append(("after 3 parts", done, reused))

    # 2) Kills after random delays spread over a whole run (scoring, merge, roll-up, report,
    # publish, cache): outputs stay readable, and the next run always converges.
    rng = random.Random(20261123)
    for attempt in range(3):
        base = digests(out)
        delay = rng.uniform(0.3, 1.0) * clean_seconds
        proc = start(out, tiny_baseline_dir, export)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        readable(out)  # whatever the moment of the kill: no half-written output
        now = digests(out)
        # Files change only if the kill came after the flip, and then all together (every
        # file carries the new run id); the rerun converges either way.
        changed = sorted(n for n in FILES if now[n] != base[n])
        assert changed in ([], sorted(FILES)), changed
        db_tables(out, tmp_path / f"db-r{attempt}")  # opens, tables present
        stdout = finish(start(out, tiny_baseline_dir, export))
        assert_same(comparable(out), reference)
        results.append((f"kill after {delay:.1f}s" if killed else "finished first",
                        len(changed), int(stdout.split()[1])))
    print("\nkill-and-rerun:", results, f"(uninterrupted run {clean_seconds:.1f}s)")


@pytest.mark.parametrize("fault", ["after-db-commit", "after-flip"])
def test_sigkill_inside_publication(tmp_path, tiny_baseline_dir, fault):
    """The one window where the DuckDB file and the output files could disagree: a kill
    between the database commit and the file flip (or right after the flip). Files are
    all-old or all-new, never mixed, and the next run completes the publication first."""
    from pipeline.store import history
    from pipeline.store.writers import current_snapshot, recover

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    big_export(first, 1_500)
    big_export(second, 2_500)
    out = tmp_path / "out"
    finish(start(out, tiny_baseline_dir, first))
    before = digests(out)
    before_rows = len(pd.read_parquet(out / "reviews.parquet"))
    old_snapshot = current_snapshot(out)

    proc = start(out, tiny_baseline_dir, second, fault)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    readable(out)
    journal = out / ".revsat" / "publish.json"
    assert journal.is_file()
    db = out / "revsat.duckdb"
    if fault == "after-db-commit":
        assert digests(out) == before, "files changed before the flip"
        assert current_snapshot(out) == old_snapshot
    else:
        assert current_snapshot(out) != old_snapshot
        assert len(pd.read_parquet(out / "reviews.parquet")) != before_rows
    # What the next run does first: complete the publication the database committed.
    new_run = recover(out, lambda run_id: history.run_logged(db, run_id))
    assert new_run is not None and current_snapshot(out) == new_run and not journal.exists()
    con = duckdb.connect(str(db))
    db_rows = con.execute("SELECT count(*) FROM reviews").fetchone()[0]
    logged = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [new_run]).fetchone()[0]
    con.close()
    assert logged == 1
    assert len(pd.read_parquet(out / "reviews.parquet")) == db_rows != before_rows
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["run_id"] == new_run
    assert len(list((out / ".revsat" / "snapshots").iterdir())) == 1

    # and a full rerun on top converges as usual
    finish(start(out, tiny_baseline_dir, second))
    assert len(pd.read_parquet(out / "reviews.parquet")) == db_rows
