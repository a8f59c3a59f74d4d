"""Prefect flow ``nightly-score``: score the export files of a directory that the ledger has
not seen yet (by content hash), then record them. Thin: the ledger is :mod:`pipeline.store.ledger`,
the scoring is the ``score-reviews`` flow (run as a subflow).

Deployed as ``nightly-score`` by ``prefect.yaml`` (cron, default 02:00) or served from one
process by ``revsat serve``.
"""

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger

from pipeline.config import load_settings
from pipeline.errors import AlertsRaised
from pipeline.store import ledger


@flow(name="nightly-score")
def nightly_score(
    input_dir: str,
    out: str,
    model: str | None = None,
    pattern: str = "*",
    run_date: date | None = None,
    rescore: bool = False,
    warehouse: str | None = None,
    task_runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    columns: dict[str, str] | None = None,
    fail_on_alerts: bool | None = None,
    progress: bool = False,
) -> dict:
    """Score the new files of ``input_dir`` (a directory, filtered by ``pattern``, or a glob)
    into ``out``. ``rescore`` scores every matching file even if the ledger has it (re-running
    a date). ``model`` overrides the settings' model. Returns the run record plus
    ``new_files``; ``{"skipped": True}`` when nothing is new.

    ``columns`` names input columns as the settings do (``{"text_column": "初评内容"}``; also
    ``id_column``, ``product_column``, ``rating_column``, ``date_column``,
    ``category_column``, ``order_column``); ``fail_on_alerts`` overrides the setting (the
    flow run then fails with :class:`~pipeline.errors.AlertsRaised` after publishing);
    ``progress`` shows the scoring's progress (off: a scheduled run has no terminal)."""
    logger = get_run_logger()
    extra = {} if fail_on_alerts is None else {"fail_on_alerts": fail_on_alerts}
    if model is not None:  # else REVSAT_MODEL / revsat.toml / default
        extra["model"] = model
    settings = load_settings(progress=progress, **(columns or {}), **extra)
    db = Path(out) / settings.duckdb_name
    paths = ledger.discover(input_dir, pattern)
    files = ([ledger.InputFile(p, ledger.file_digest(p), p.stat().st_size) for p in paths]
             if rescore else ledger.new_files(db, paths))
    logger.info("%d file(s) found in %s, %d to score", len(paths), input_dir, len(files))
    if not files:
        return {"skipped": True, "new_files": [], "found": len(paths)}

    from flows.score import score_reviews  # the scoring stack loads only when files are new

    def remember(record: dict) -> None:
        failed = set(record["failed_files"])
        ledger.record(db, [f for f in files if str(f.path) not in failed], record["run_id"],
                      date.fromisoformat(record["run_date"]))

    try:
        record = score_reviews(
            [str(f.path) for f in files], out, run_date=run_date,
            settings=settings, task_runner=task_runner, dask_address=dask_address,
            workers=workers, warehouse=warehouse,
        )
    except AlertsRaised as exc:  # outputs were published: the files count as scored
        remember(exc.record)
        raise
    remember(record)
    record["new_files"] = [str(f.path) for f in files]
    return record
