"""Prefect flow ``score-reviews``: the run sequence of :func:`pipeline.run.steps.execute`
(read -> validate -> normalise -> segment -> classify -> write parts -> merge -> roll up ->
trends and alerts -> complaint terms -> report -> publish), each step a Prefect task and the
chunks scored on the chosen task runner. Thin: every step is a call into ``pipeline``."""

# No `from __future__ import annotations` in flow modules: `revsat serve` ships flow functions
# to its run processes by value, and string annotations (e.g. ``date``) would not resolve there.
from collections.abc import Callable
from datetime import date
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import part_runner, runner_threads, worker_spec
from pipeline.analytics.drivers import DriverWeights
from pipeline.config import Settings
from pipeline.errors import AlertsRaised
from pipeline.ingest.columns import ColumnMap
from pipeline.ingest.readers import Chunk, expand_inputs
from pipeline.run.part import Counts, PartSpec, score_part
from pipeline.run.progress import RowProgress
from pipeline.run.steps import STEP_NAMES, RunPlan, RunStats, execute, plan_run, score_parts

# Tasks receive live objects (plans, chunks): never hash or cache them.
_TASK = {"cache_policy": NO_CACHE}


class _Call:
    """A step and its arguments, opaque to Prefect (which would otherwise walk into the
    arguments looking for futures, and could rebuild the run's counts as a copy)."""

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args


def _invoke(call: _Call) -> Any:
    return call.fn(*call.args)


#: One Prefect task per step of the run sequence, named as the step.
STEP_TASKS = {name: task(_invoke, name=name, **_TASK) for name in STEP_NAMES}


def _step(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return STEP_TASKS[name](_Call(fn, args))


@task(name="plan-run", **_TASK)
def plan_run_task(out: str, settings: Settings, paths: list, run_date: date | None,
                  text_column: str | None, id_column: str | None, full: bool) -> RunPlan:
    return plan_run(out, settings, paths, run_date, text_column, id_column, full)


@task(name="score-part", **_TASK)
def score_part_task(chunk: Chunk, columns: ColumnMap | None, file_order: int,
                    chunk_index: int, spec: PartSpec) -> Counts:
    return score_part(chunk, columns, file_order, chunk_index, spec)


@task(name="warehouse", **_TASK)
def warehouse_task(db: str, url: str) -> dict[str, int]:
    from pathlib import Path

    from pipeline.store.warehouse import export_duckdb

    return export_duckdb(Path(db), url)


def _scorer(task_runner: str, dask_address: str | None,
            workers: int | None) -> Callable[[RunPlan, RunStats], None]:
    """Score a plan's chunks as ``score-part`` tasks: in the flow's process, or submitted to
    the Dask/Ray task runner with at most two parts per worker thread in flight."""

    def score(plan: RunPlan, stats: RunStats) -> None:
        with (RowProgress(plan.settings.progress) as progress,
              part_runner(task_runner, dask_address, workers) as runner):
            if runner is None:
                score_parts(plan, stats, progress, part=score_part_task)
                return

            def submit(chunk, columns, order, index, spec):
                return runner.submit(score_part_task, parameters={
                    "chunk": chunk, "columns": columns, "file_order": order,
                    "chunk_index": index, "spec": worker_spec(spec)})

            score_parts(plan, stats, progress, submit=submit,
                        window=2 * runner_threads(runner, workers))

    return score


@flow(name="score-reviews")
def score_reviews(
    inputs: list[str],
    out: str,
    model: str | None = None,
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

    ``model`` overrides ``settings.model`` (default: ``REVSAT_MODEL``, ``model`` in
    revsat.toml, else ``default``). ``full`` ignores the score cache (every review goes through
    the model again). ``task_runner`` ``dask`` (or ``ray``) scores the chunks in parallel on a
    local cluster of ``workers`` processes or the cluster at ``dask_address``; results are
    identical. ``warehouse`` (an SQLAlchemy URL) also upserts the published tables into that
    database.
    """
    logger = get_run_logger()
    settings = settings or Settings()
    if model is not None:
        settings = settings.model_copy(update={"model": model})
    paths = expand_inputs(inputs)
    plan = plan_run_task(out, settings, paths, run_date, text_column, id_column, full)
    logger.info("run %s (key %s): %d input file(s), model %s", plan.run_id, plan.run_key,
                len(paths), plan.model_version)
    result = execute(plan, score=_scorer(task_runner, dask_address, workers), step=_step)
    record = {**result.record, "files": result.files}
    if warehouse:
        record["warehouse"] = warehouse_task(str(plan.db_path), warehouse)
    _artifacts(record, result.satisfaction, result.alerts, result.terms, result.drivers)
    for path, error in record["failed_files"].items():
        logger.error("failed input %s: %s", path, error)
    for message in result.alerts["message"].head(20):
        logger.warning("alert: %s", message)
    if settings.fail_on_alerts and len(result.alerts):
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
        cols = ["kind", "grouping", "group", "dimension", "previous", "current", "change",
                "q_value", "message"]
        create_table_artifact(
            key="alerts",
            table=alerts[cols].head(200).round({"previous": 4, "current": 4, "change": 4})
            .to_dict("records"),
            description=f"{len(alerts)} alert(s), run {record['run_id']} ({record['run_date']})",
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
