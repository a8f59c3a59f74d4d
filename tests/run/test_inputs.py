"""Issue 14: nothing lost, nothing counted twice, nothing cryptic. What real exports and
nightly folders do to a run: ids, empty runs, column choice, cumulative re-exports,
back-fills, exit codes, marketplace dates, ``revsat serve`` and ``revsat export``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import SAMPLE
from typer.testing import CliRunner

from pipeline.config import Settings
from pipeline.ingest.columns import find_columns
from pipeline.run.steps import RunResult, score_run
from revsat.cli import app


def score_all(out: Path, model: Path, paths: list[Path], run_date: date | None = None,
              **settings) -> RunResult:
    """Score ``paths`` through the library's run sequence (no Prefect) and publish."""
    return score_run(out, Settings(model=str(model), progress=False, **settings), list(paths),
                     run_date=run_date)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def overall_reviews(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT run_date, reviews FROM history_satisfaction WHERE "
                           "grouping = 'all' AND dimension = 'overall' ORDER BY 1").fetchall()
    finally:
        con.close()
    return {d.isoformat(): n for d, n in rows}


# 1. Identical reviews without an id ------------------------------------------------------

def test_repeated_short_reviews_without_ids_all_count(tmp_path, tiny_baseline_dir):
    export = tmp_path / "orders.csv"
    texts = ["好评", "好评", "好评", "不错", "物流太慢了"]
    pd.DataFrame({"订单号": [f"E{i:05d}" for i in range(100)],
                  "评价内容": [texts[i % 5] for i in range(100)]}).to_csv(export, index=False)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export])
    assert run.stats.rows_scored == 100 and run.stats.rows_rejected == 0
    sat = pd.read_parquet(tmp_path / "out" / "satisfaction.parquet")
    overall = sat[(sat["grouping"] == "all") & (sat["dimension"] == "overall")].iloc[0]
    assert overall["reviews"] == 100  # the indices count all 60 好评


# 2. Zero scorable rows --------------------------------------------------------------------

@pytest.mark.parametrize("content,rejected", [
    ("review_id,text,rating\n", 0),  # header only
    ("review_id,text\n1,\n2,  \n3,\n", 3),  # every text blank
])
def test_a_run_without_scorable_rows_is_a_clean_empty_run(tmp_path, tiny_baseline_dir, content,
                                                         rejected):
    export = tmp_path / "export.csv"
    export.write_text(content, encoding="utf-8")
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export])
    assert run.stats.rows_scored == 0 and run.stats.rows_rejected == rejected
    assert len(pd.read_parquet(tmp_path / "out" / "rejected.parquet")) == rejected
    assert (tmp_path / "out" / "report.html").is_file()


def test_cli_empty_run_exits_0_with_one_clear_line(tmp_path, tiny_baseline_dir):
    export = tmp_path / "blank.csv"
    export.write_text("review_id,text\n1,\n2,  \n", encoding="utf-8")
    result = invoke("score", export, "--out", tmp_path / "out", "--model", tiny_baseline_dir,
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "no reviews to score (every row was rejected" in result.output
    assert "Traceback" not in result.output


def test_quiet_night_with_a_header_only_export(tmp_path, tiny_baseline_dir):
    night = tmp_path / "night"
    night.mkdir()
    (night / "2026-11-21.csv").write_text("review_id,text\n", encoding="utf-8")
    result = invoke("nightly", night, "--out", tmp_path / "out", "--model", tiny_baseline_dir)
    assert result.exit_code == 0, result.output
    assert "no reviews to score" in result.output


# 3. Column choice --------------------------------------------------------------------------

QIANNIU = ["订单编号", "宝贝ID", "宝贝标题", "追评内容", "初评内容", "评价时间"]


def test_main_review_column_wins_over_follow_ups_and_replies():
    found = find_columns(QIANNIU)
    assert found.text == "初评内容"
    assert found.extras["product_id"] == "宝贝ID"
    assert found.extras["order_id"] == "订单编号"
    assert find_columns(["商家回复", "追加评论", "评论内容"]).text == "评论内容"
    assert find_columns(["追评内容", "x"]).text == "追评内容"  # the only candidate
    assert find_columns(["商品链接", "评价"]).extras["product_id"] == "商品链接"


def qianniu_export(path: Path) -> Path:
    pd.DataFrame({
        "订单编号": [f"Q{i:04d}" for i in range(40)], "宝贝ID": [f"66{i % 3}" for i in range(40)],
        "宝贝标题": "毛衣", "追评内容": ["追评：还不错" if i == 3 else "" for i in range(40)],
        "初评内容": ["质量很好" if i % 2 else "物流太慢了" for i in range(40)],
        "评价时间": "2026-11-20 10:00:00",
    }).to_csv(path, index=False)
    return path


def test_column_mapping_is_recorded_and_a_mostly_empty_choice_warns(tmp_path,
                                                                   tiny_baseline_dir):
    export = qianniu_export(tmp_path / "qianniu.csv")
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export])
    assert run.stats.rows_scored == 40
    record = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert record["columns"][str(export)]["text"] == "初评内容"
    assert record["columns"][str(export)]["product_id"] == "宝贝ID"
    con = duckdb.connect(str(tmp_path / "out" / "revsat.duckdb"), read_only=True)
    try:
        logged = json.loads(con.execute("SELECT columns FROM runs").fetchone()[0])
    finally:
        con.close()
    assert logged[str(export)]["text"] == "初评内容"
    assert not record["column_warnings"]
    forced = score_all(tmp_path / "out2", tiny_baseline_dir, [export], text_column="追评内容")
    assert forced.stats.rows_scored == 1
    assert "'追评内容' is empty in 98 %" in forced.stats.column_warnings[0]


def test_column_overrides_from_the_config_file_and_nightly(tmp_path, tiny_baseline_dir,
                                                          monkeypatch):
    (tmp_path / "night").mkdir()
    export = qianniu_export(tmp_path / "night" / "q.csv")
    config = tmp_path / "revsat.toml"
    config.write_text('product_column = "宝贝标题"\n', encoding="utf-8")
    monkeypatch.setenv("REVSAT_CONFIG", str(config))
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export])
    assert run.stats.columns[str(export)]["product_id"] == "宝贝标题"
    result = invoke("nightly", tmp_path / "night", "--out", tmp_path / "out-n", "--model",
                    tiny_baseline_dir, "--text-column", "追评内容", "--rescore")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out-n" / "run.json").read_text(encoding="utf-8"))
    assert record["columns"][str(export)]["text"] == "追评内容"
    assert record["columns"][str(export)]["product_id"] == "宝贝标题"
    assert record["rows_scored"] == 1 and record["column_warnings"]


def test_nightly_shows_progress_only_when_asked(tmp_path, tiny_baseline_dir, monkeypatch):
    import flows.nightly as nightly_flow

    seen = []
    real = nightly_flow.load_settings

    def spy(**kwargs):
        seen.append(kwargs["progress"])
        return real(**kwargs)

    monkeypatch.setattr(nightly_flow, "load_settings", spy)
    (tmp_path / "night").mkdir()
    qianniu_export(tmp_path / "night" / "q.csv")
    for flag in ("--progress", "--no-progress", None):
        args = [] if flag is None else [flag]
        result = invoke("nightly", tmp_path / "night", "--out", tmp_path / f"out{flag}",
                        "--model", tiny_baseline_dir, *args)
        assert result.exit_code == 0, result.output
    assert seen == [True, False, False]  # off by default, as in a scheduled run


# 4. Cumulative re-exports ------------------------------------------------------------------

def test_cumulative_re_export_is_not_counted_twice(tmp_path, tiny_baseline_dir):
    rows = pd.DataFrame({"review_id": [f"r{i}" for i in range(60)],
                         "text": [("物流太慢了 " if i % 3 else "质量很好 ") + str(i)
                                  for i in range(60)]})
    day1, day2 = tmp_path / "day1.csv", tmp_path / "last-7-days.csv"
    rows.head(50).to_csv(day1, index=False)
    changed = rows.copy()
    changed.loc[0, "text"] = "客服态度很差，改评"  # the customer edited review r0
    changed.to_csv(day2, index=False)
    out = tmp_path / "out"
    score_all(out, tiny_baseline_dir, [day1], date(2026, 11, 22))
    second = score_all(out, tiny_baseline_dir, [day2], date(2026, 11, 23))
    assert second.stats.rows_scored == 60  # every row is still in reviews.parquet
    assert second.stats.repeats == 49 and second.stats.changed_texts == 1
    assert overall_reviews(out / "revsat.duckdb") == {"2026-11-22": 50, "2026-11-23": 11}
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        where = con.execute("SELECT run_date FROM history_reviews WHERE review_id = 'r0'"
                            ).fetchall()
    finally:
        con.close()
    assert where == [(date(2026, 11, 23),)]  # the edited text replaced the earlier one
    # Re-running the same date replaces it: the counts do not grow.
    score_all(out, tiny_baseline_dir, [day2], date(2026, 11, 23))
    assert overall_reviews(out / "revsat.duckdb") == {"2026-11-22": 50, "2026-11-23": 11}


def test_count_repeats_setting_counts_every_review(tmp_path, tiny_baseline_dir):
    out = tmp_path / "out"
    score_all(out, tiny_baseline_dir, [SAMPLE], date(2026, 11, 22))
    score_all(out, tiny_baseline_dir, [SAMPLE], date(2026, 11, 23), count_repeats=True)
    counts = overall_reviews(out / "revsat.duckdb")
    assert counts["2026-11-22"] == counts["2026-11-23"] > 0


# 5. Back-fills -----------------------------------------------------------------------------

def test_back_fill_updates_its_history_only(tmp_path, tiny_baseline_dir):
    out = tmp_path / "out"
    latest = score_all(out, tiny_baseline_dir, [SAMPLE], date(2026, 11, 25))
    old = tmp_path / "old.csv"
    pd.DataFrame({"text": ["好评"] * 5 + ["物流太慢了"]}).to_csv(old, index=False)
    back = score_all(out, tiny_baseline_dir, [old], date(2026, 11, 23))
    assert back.record["backfill"] == "2026-11-25"
    for table in ("satisfaction", "trends"):
        dates = pd.read_parquet(out / f"{table}.parquet")["run_date"].astype(str).str[:10].unique()
        assert list(dates) == ["2026-11-25"], table
    assert set(pd.read_parquet(out / "reviews.parquet")["run_id"]) == {latest.record["run_id"]}
    assert json.loads((out / "run.json").read_text())["run_date"] == "2026-11-25"
    assert overall_reviews(out / "revsat.duckdb")["2026-11-23"] == 6
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT DISTINCT run_id FROM reviews").fetchall() == [
            (latest.record["run_id"],)]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    finally:
        con.close()
    # The next run's trends follow from the history, back-filled date included.
    new = tmp_path / "new.csv"
    pd.DataFrame({"text": ["质量很好", "物流太慢了", "好评"]}).to_csv(new, index=False)
    score_all(out, tiny_baseline_dir, [new], date(2026, 11, 26))
    trends = pd.read_parquet(out / "trends.parquet")
    assert (trends["window_runs"] >= 1).any()


# 6. Exit codes and noise -------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--batch-size", "-1"), ("--chunk-rows", "0"),
                                        ("--workers", "0")])
def test_bad_numbers_are_one_line_and_exit_2(tmp_path, flag, value):
    result = invoke("score", SAMPLE, "--out", tmp_path / "o", "--model", "baseline", flag,
                    value)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 6  # click's usage box for --workers


def test_user_mistakes_are_caught_before_the_flow_starts(tmp_path, monkeypatch):
    import flows.score

    def never(*args, **kwargs):
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(flows.score, "score_reviews", never)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("a,b\n1,2\n", encoding="utf-8")
    for path, message in ((tmp_path / "missing.csv", "no such file"),
                          (empty, "the file is empty"), (nocol, "no review text column")):
        result = invoke("score", path, "--out", tmp_path / "o", "--model", "baseline")
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_cuda_without_a_gpu_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import torch

    import pipeline.models.load

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline.models.load, "kind", lambda path: "transformer")
    result = invoke("score", SAMPLE, "--out", tmp_path / "o", "--device", "cuda")
    assert result.exit_code == 2, result.output
    assert "no CUDA GPU" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_bug_names_the_log_file_with_its_traceback(tmp_path, monkeypatch):
    import pipeline.ingest.readers

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(pipeline.ingest.readers, "check_input", boom)
    result = invoke("score", SAMPLE, "--out", tmp_path / "o", "--model", "baseline")
    assert result.exit_code == 1
    assert "internal error (RuntimeError: kaboom)" in result.output
    assert "Traceback" not in result.output
    log = Path(result.output.split("the traceback is in ")[1].split()[0])
    assert log.parent == tmp_path / "o" / ".revsat" / "logs"
    assert "Traceback" in log.read_text() and "kaboom" in log.read_text()


def test_nightly_fail_on_alerts_exits_3(two_day_runs, tmp_path, tiny_baseline_dir,
                                       monkeypatch):
    _, _, day2 = two_day_runs
    night = tmp_path / "night"
    night.mkdir()
    shutil.copy(SAMPLE, night / "a-1114.csv")
    base = ["--out", tmp_path / "out", "--model", tiny_baseline_dir]
    assert invoke("nightly", night, *base, "--run-date", "2026-11-14").exit_code == 0
    shutil.copy(day2, night / "b-1115.csv")
    result = invoke("nightly", night, *base, "--run-date", "2026-11-15", "--fail-on-alerts")
    assert result.exit_code == 3, result.output
    assert "internal error" not in result.output  # an expected outcome, not a bug
    # and through the settings tree (REVSAT_FAIL_ON_ALERTS), re-running the date
    monkeypatch.setenv("REVSAT_FAIL_ON_ALERTS", "true")
    result = invoke("nightly", night, *base, "--run-date", "2026-11-15", "--rescore")
    assert result.exit_code == 3, result.output


# 7. Marketplace dates and warnings by reason -----------------------------------------------

@pytest.mark.parametrize("written", [
    "Reviewed in the United States on November 18, 2026",
    "Reviewed in the United Kingdom on 18 November 2026",
    "November 18th, 2026", "Wed, November 18, 2026", "2026.11.18", "2026/11/18",
    "发表于 2026-11-18", "评价时间：2026年11月18日 星期三", "2026年11月18日",
])
def test_marketplace_dates_are_read(written):
    from pipeline.ingest.validate import _parse_date

    assert _parse_date(written).date() == date(2026, 11, 18)


@pytest.mark.parametrize("written", ["昨天 13:45", "3天前", "today"])
def test_relative_marketplace_dates_are_warnings(written):
    from pipeline.ingest.validate import _parse_date

    with pytest.raises(ValueError, match="relative"):
        _parse_date(written)


def test_warnings_are_counted_by_reason_in_the_record_and_report(tmp_path, tiny_baseline_dir):
    export = tmp_path / "dates.csv"
    pd.DataFrame({"text": ["好评", "很好", "物流慢", "不错"],
                  "date": ["soon", "later", "Reviewed in the United States on November 18, 2026",
                           "2026-11-18"],
                  "rating": ["5", "abc", "9", "4"]}).to_csv(export, index=False)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export])
    reasons = run.stats.warning_reasons
    assert reasons == {"invalid created_at (not a date); stored as null, review still scored": 2,
                       "invalid rating (not a number); stored as null, review still scored": 1,
                       "invalid rating (outside 0-5); stored as null, review still scored": 1}
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Field warnings" in html and "invalid created_at (not a date)" in html


# 8. revsat serve ---------------------------------------------------------------------------

def test_serve_without_a_server_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = invoke("serve", tmp_path, "--out", tmp_path / "o", "--model", "baseline")
    assert result.exit_code == 2, result.output
    assert "prefect server start" in result.output and "PREFECT_API_URL" in result.output
    assert "being served" not in result.output


def test_serve_stops_cleanly_on_sigterm(recwarn):
    import signal

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from revsat.cli import _stop_cleanly_on_sigterm

    original = Runner.handle_sigterm
    try:
        _stop_cleanly_on_sigterm()
        with pytest.raises(TerminationSignal) as caught:
            Runner.handle_sigterm(Runner(name="t"), signal.SIGTERM, None)
        assert caught.value.signal == signal.SIGTERM
    finally:
        Runner.handle_sigterm = original
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# 9. Export and CLI polish ------------------------------------------------------------------

def test_export_checks_every_table_first_and_exports_history(sample_run):
    out, _ = sample_run
    for name in ("reviews", "history_satisfaction"):
        (out / f"{name}.csv").unlink(missing_ok=True)
    result = invoke("export", out, "-t", "reviews", "-t", "bogus")
    assert result.exit_code == 2 and "bogus" in result.output
    assert not (out / "reviews.csv").exists()  # nothing written before the check
    result = invoke("export", out, "-t", "reviews", "-t", "history_satisfaction")
    assert result.exit_code == 0, result.output
    history = pd.read_csv(out / "history_satisfaction.csv")
    assert len(history) and "index" in history.columns
    csv_mode = stat.S_IMODE(os.stat(out / "reviews.csv").st_mode)
    parquet_mode = stat.S_IMODE(os.stat((out / "reviews.parquet").resolve()).st_mode)
    assert csv_mode == parquet_mode


def test_verbose_has_help_text():
    for command in ("score", "nightly", "serve"):
        result = invoke(command, "--help")
        assert "debug logging" in result.output, command


def test_prefect_state_lines_say_which_task():
    from revsat.cli import _Console

    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1,
                               "Finished in state Completed()", None, None)
    record.task_name, record.task_run_name = "roll-up", "roll-up-0ab"
    line = _Console("%(asctime)s %(levelname)s %(message)s").format(record)
    assert line.endswith("INFO [task roll-up] Finished in state Completed()")


def test_console_handler_survives_prefects_logging_setup():
    """Prefect's set-up replaces root handlers whose class name starts with ``_``; ours must
    stay, or tracebacks of expected outcomes (AlertsRaised) reach the console again."""
    from prefect.logging.configuration import setup_logging

    from revsat.cli import StderrHandler, _setup_logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        _setup_logging(False)
        setup_logging(incremental=False)
        assert any(isinstance(h, StderrHandler) for h in root.handlers)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_nightly_preflight_reads_only_the_files_the_ledger_has_not_seen(tmp_path, monkeypatch):
    import pipeline.ingest.readers
    from pipeline.store import ledger
    from revsat.cli import _preflight

    night = tmp_path / "night"
    night.mkdir()
    old, new = night / "a-1114.csv", night / "b-1115.csv"
    shutil.copy(SAMPLE, old)
    new.write_text("review_id,text\nn1,物流很快\n", encoding="utf-8")
    db = tmp_path / "out" / "revsat.duckdb"
    ledger.record(db, ledger.new_files(db, [old]), "run-1", date(2026, 11, 14))
    checked: list[Path] = []
    real = pipeline.ingest.readers.check_input
    monkeypatch.setattr(pipeline.ingest.readers, "check_input",
                        lambda path, overrides=None: (checked.append(path), real(path))[1])
    settings = Settings(model="baseline")
    assert _preflight([str(night)], settings, nightly_pattern="*", ledger_db=db) == [new]
    assert checked == [new]  # the scored night is not read again
    checked.clear()  # --rescore (no ledger): every file is checked
    assert sorted(_preflight([str(night)], settings, nightly_pattern="*")) == [old, new]
    assert sorted(checked) == [old, new]


@pytest.mark.parametrize(("args", "says"), [
    (["fit-combiner", "default", "--shared", "{tmp}/no-corpora"], "--shared"),
    (["fit-combiner", "{tmp}/no-model", "--shared", "{tmp}"], "holds no model"),
    (["evaluate", "default", "--shared", "{tmp}/no-corpora"], "--shared"),
])
def test_model_commands_report_a_users_mistake_in_one_line(tmp_path, monkeypatch, args, says):
    """A missing corpora folder or model folder: exit 2 and one line saying what to pass,
    never a traceback."""
    monkeypatch.delenv("REVSAT_SHARED_DIR", raising=False)
    monkeypatch.setattr("pipeline.config.shared_dir", lambda explicit=None: None)
    monkeypatch.setattr("pipeline.training.data.shared_dir", lambda explicit=None: None)
    result = invoke(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error: ")
    assert says in result.output
