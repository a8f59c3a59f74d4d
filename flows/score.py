"""Prefect flow ``score-reviews``: read -> validate -> normalise -> segment -> classify ->
write -> roll up (indices, driver weights) -> trends and alerts -> complaint terms -> report ->
publish. Thin: every step is a call into ``pipeline``."""

# No `from __future__ import annotations` in flow modules: `revsat serve` ships flow functions
# to its run processes by value, and string annotations (e.g. ``date``) would not resolve there.
import time
from datetime import date
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import part_runner, runner_threads, score_parts
from pipeline.analytics.drivers import DriverWeights
from pipeline.config import Settings
from pipeline.errors import AlertsRaised
from pipeline.ingest.readers import Chunk, expand_inputs
from pipeline.run.part import PartCounts, PartSpec, score_part
from pipeline.run.progress import RowProgress
from pipeline.run.steps import ScoreRun

# Tasks receive live objects (runs, chunks): never hash or cache them.
_TASK = {"cache_policy": NO_CACHE}


@task(name="prepare-run", **_TASK)
def prepare_run_task(out: str, model: str, settings: Settings, paths: list[Path],
                     run_date: date | None, text_column: str | None, id_column: str | None,
                     full: bool) -> ScoreRun:
    return ScoreRun(Path(out), model, settings, paths, run_date, text_column, id_column, full)


@task(name="score-part", **_TASK)
def score_part_task(chunk: Chunk, file_order: int, chunk_index: int, spec: PartSpec
                    ) -> PartCounts:
    return score_part(chunk, file_order, chunk_index, spec)


@task(name="roll-up", **_TASK)
def roll_up_task(run: ScoreRun):
    run.close_tables()
    return run.roll_up()


@task(name="trends-alerts", **_TASK)
def history_task(run: ScoreRun, sat) -> pd.DataFrame:
    return run.compare_history(sat)


@task(name="complaint-terms", **_TASK)
def evidence_task(run: ScoreRun) -> pd.DataFrame:
    return run.find_evidence()


@task(name="report", **_TASK)
def report_task(run: ScoreRun, sat) -> str:
    return str(run.report(sat))


@task(name="warehouse", **_TASK)
def warehouse_task(db: str, url: str) -> dict[str, int]:
    from pipeline.store.warehouse import export_duckdb

    return export_duckdb(Path(db), url)


@task(name="publish", **_TASK)
def publish_task(run: ScoreRun) -> dict[str, str]:
    return {k: str(v) for k, v in run.publish().items()}


@flow(name="score-reviews")
def score_reviews(
    inputs: list[str],
    out: str,
    model: str = "default",
    run_date: date | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    settings: Settings | None = None,
    full: bool = False,
    task_runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    warehouse: str | None = None,
) -> dict:
    """Score review exports into ``out``; returns the run record (counts, timings, files).

    ``full`` ignores the score cache (every review goes through the model again).
    ``task_runner`` ``dask`` (or ``ray``) scores the chunks in parallel on a local cluster of
    ``workers`` processes or the cluster at ``dask_address``; results are identical.
    ``warehouse`` (an SQLAlchemy URL) also upserts the published tables into that database.
    """
    logger = get_run_logger()
    settings = settings or Settings(model=model)
    paths = expand_inputs(inputs)
    run = prepare_run_task(out, model, settings, paths, run_date, text_column, id_column, full)
    logger.info("run %s (key %s): %d input file(s), model %s", run.run_id, run.run_key,
                len(paths), run.classifier.version)
    try:
        with (RowProgress(settings.progress) as progress,
              part_runner(task_runner, dask_address, workers) as runner):
            window = 2 * runner_threads(runner, workers) if runner is not None else 1
            started = time.perf_counter()
            score_parts(run, paths, progress, score_part_task, runner, window)
            # Wall time of the chunk phase (the stage seconds above are summed over workers).
            run.stats.add_time("parts_wall", time.perf_counter() - started)
        sat = roll_up_task(run)
        alerts = history_task(run, sat)
        terms = evidence_task(run)
        report_task(run, sat)
        files = publish_task(run)
        run.update_cache_and_clean()
    except BaseException:
        run.abort()
        raise
    record = run.run_record()
    record["files"] = files
    if warehouse:
        record["warehouse"] = warehouse_task(str(run.db_path), warehouse)
    _artifacts(record, sat, alerts, terms, run.drivers)
    for path, error in record["failed_files"].items():
        logger.error("failed input %s: %s", path, error)
    for message in alerts["message"].head(20):
        logger.warning("alert: %s", message)
    if settings.fail_on_alerts and len(alerts):
        # After publishing: the outputs are in place, only the flow run's state is Failed.
        raise AlertsRaised(record)
    return record


def _artifacts(record: dict, sat: pd.DataFrame, alerts: pd.DataFrame, terms: pd.DataFrame,
               drivers: DriverWeights | None) -> None:
    """Prefect artifacts a UI user sees for the run: indices, alerts, driver weights and a
    markdown summary."""
    overall = sat[sat["grouping"] == "all"][
        ["dimension", "index", "index_low", "index_high", "mentions", "complaint_rate"]
    ].round(3)
    create_table_artifact(
        key="satisfaction-indices", table=overall.to_dict("records"),
        description=f"Satisfaction indices, run {record['run_id']} ({record['run_date']})",
    )
    if len(alerts):
        cols = ["dimension", "status", "started", "grouping", "group", "baseline", "current",
                "change", "q_value", "groups", "message"]
        create_table_artifact(
            key="alerts",
            table=alerts[cols].head(200).round({"baseline": 2, "current": 2, "change": 2})
            .to_dict("records"),
            description=f"{len(alerts)} incident(s), run {record['run_id']} "
                        f"({record['run_date']})",
        )
    else:
        create_markdown_artifact(key="alerts", markdown=f"No alerts for {record['run_date']}.")
    if drivers is not None:
        create_table_artifact(
            key="driver-weights",
            table=drivers.table()[["dimension", "weight", "coefficient", "mentions"]]
            .round(4).to_dict("records"),
            description=f"Composite weights ({drivers.method}): {drivers.reason}",
        )
    comp = sat[(sat["grouping"] == "all") & (sat["dimension"] == "composite")]
    lines = [
        f"### Run {record['run_id']} ({record['run_date']})",
        f"- rows read: {record['rows_in']}", f"- scored: {record['rows_scored']}",
        f"- rejected: {record['rows_rejected']}", f"- model: {record['model_version']}",
        f"- failed files: {len(record['failed_files'])}",
    ]
    if len(comp):
        c = comp.iloc[0]
        lines.append(f"- composite index: {c['index']:.1f} "
                     f"({c['index_low']:.1f}-{c['index_high']:.1f})")
    lines.append(f"- alerts: {len(alerts)}")
    lines += [f"  - {m}" for m in alerts["message"].head(10)]
    if len(terms):
        lines.append("\n**Top complaint terms**\n")
        for dim, rows in terms.groupby("dimension", sort=False):
            lines.append(f"- {dim}: " + ", ".join(rows.sort_values("rank")["term"].head(5)))
    create_markdown_artifact(key="run-summary", markdown="\n".join(lines) + "\n")
