"""One scoring run, written once: its plan, its steps, and the sequence that runs them.

:func:`plan_run` decides everything a run is (inputs and their digests, model, run id and date,
run key, folders) in a frozen :class:`RunPlan`. The steps are plain functions of the plan, the
staging folder and the run's counts (:class:`RunStats`), each returning what the next needs;
:func:`run_record` is a pure function of its arguments. :func:`execute` is the sequence, with
the abort path and the cache update, used by the Prefect flow (which wraps each step as a task
and scores chunks on its task runner) and by every test.

Chunks are scored into *parts* (see :mod:`pipeline.run.part`) under
``OUT/.revsat/parts/<run key>/``; the run key covers the inputs' bytes, the model and the
options that change results, so a run killed part-way is resumed by the next identical run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd

from pipeline import __version__
from pipeline.analytics import trends
from pipeline.analytics.drivers import DriverWeights, driver_weights
from pipeline.analytics.evidence import complaint_terms, incident_examples
from pipeline.analytics.indices import count_mentions, satisfaction_table, with_composite
from pipeline.catalog import OUTPUTS, PUBLISHED_FILES, REPORT_FILE, RUN_FILE, TABLES
from pipeline.config import Settings
from pipeline.errors import ConservationError, InputError
from pipeline.ingest.columns import ColumnMap, find_columns, text_candidates
from pipeline.ingest.readers import Chunk, file_digest, iter_chunks
from pipeline.models.load import inference_info, resolve, run_format
from pipeline.run.part import Counts, PartSpec, classifier_for, release_classifiers, score_part
from pipeline.run.progress import RowProgress
from pipeline.store import history
from pipeline.store.cache import write_cache
from pipeline.store.duck import file_tables, register_parquet
from pipeline.store.parts import merge_parts
from pipeline.store.writers import (
    Staging,
    atomic_write_text,
    duckdb_transaction,
    inside,
    publish_duckdb,
    write_parquet,
)

log = logging.getLogger("revsat")
T = TypeVar("T")

#: Bumped when the part files or their markers change: older parts are then not reused.
PARTS_FORMAT = "parts/2"


@dataclass
class RunStats(Counts):
    """A run's counts (the sum of its parts', then the merged tables'), failed files and the
    encoding of each input."""

    failed_files: dict[str, str] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)
    #: Per input file: the column each role was read from (None: absent).
    columns: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: Messages about a doubtful column choice (logged as warnings too).
    column_warnings: list[str] = field(default_factory=list)
    #: Field warnings per reason (``invalid created_at (not a date); ...``: 12), most first.
    warning_reasons: dict[str, int] = field(default_factory=dict)
    #: Reviews whose id was already counted at another run date (not counted again) ...
    repeats: int = 0
    #: ... and reviews counted again because their text changed since.
    changed_texts: int = 0

    def add(self, part: Counts) -> None:
        """Account for one finished part."""
        for name in ("rows_in", "rows_scored", "rows_rejected", "warnings", "cached",
                     "model_rows", "parts_reused"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        for stage, seconds in part.seconds.items():
            self.add_time(stage, seconds)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds the block takes to ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(stage, time.perf_counter() - t0)

    def check_conservation(self) -> None:
        """Raise :class:`ConservationError` unless every row read was scored or rejected."""
        if self.rows_in != self.rows_scored + self.rows_rejected:
            raise ConservationError(f"rows in {self.rows_in} != scored {self.rows_scored} + "
                                    f"rejected {self.rows_rejected}")


@dataclass(frozen=True)
class RunPlan:
    """What one run is, decided before anything is scored (picklable, never changed)."""

    out_dir: Path
    settings: Settings
    inputs: tuple[str, ...]
    run_id: str
    run_date: date
    started: datetime
    model_path: str
    model_version: str
    run_key: str
    text_column: str | None = None
    id_column: str | None = None
    full: bool = False
    #: The latest run date in the history when ``run_date`` is earlier (a back-fill: the
    #: history of ``run_date`` is written, the published outputs stay), else None.
    backfill_of: date | None = None

    @property
    def column_overrides(self) -> dict[str, str]:
        """Input columns named by the user, role -> column: the settings' ``*_column`` fields
        (flags, ``REVSAT_*``, ``revsat.toml``), then ``text_column``/``id_column``."""
        named = self.settings.column_overrides()
        if self.text_column is not None:
            named["text"] = self.text_column
        if self.id_column is not None:
            named["id"] = self.id_column
        return named
    #: engine, numeric format (and why) and CPU of the model (see models.load.inference_info)
    inference: dict = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        """``OUT/.revsat``: parts, cache, snapshots."""
        return self.out_dir / ".revsat"

    @property
    def parts_dir(self) -> Path:
        """The parts of this run key."""
        return self.work_dir / "parts" / self.run_key

    @property
    def cache_dir(self) -> Path:
        """The score cache of this model version and the options that change predictions."""
        s = self.settings
        return self.work_dir / "cache" / _safe(
            f"{self.model_version}-mc{s.max_chars}-q{s.quantize}{self._format_suffix}")

    @property
    def _format_suffix(self) -> str:
        fmt = self.inference.get("numeric_format", "fp32")
        return "" if fmt in ("fp32", "fp64") else f"-{fmt}"

    @property
    def db_path(self) -> Path:
        """The DuckDB file in ``--out`` (holds the history of earlier runs)."""
        return inside(self.out_dir, self.settings.duckdb_name)

    @property
    def spec(self) -> PartSpec:
        """What a worker needs to score this run's chunks."""
        return PartSpec(
            parts_dir=str(self.parts_dir), model_path=self.model_path,
            settings=self.settings.model_options(), run_id=self.run_id,
            cache_dir=None if self.full else str(self.cache_dir),
            duckdb_memory=self.settings.duckdb_memory,
        )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _digest_or_none(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:  # missing or unreadable: the chunk reader reports it properly
        return None


def _input_bytes(names: tuple[str, ...]) -> int:
    """The size of a run's input files (unreadable ones count 0: the reader reports them)."""
    total = 0
    for name in names:
        try:
            total += Path(name).stat().st_size
        except OSError:
            pass
    return total


def _distinct_inputs(inputs: list[Path] | list[str]) -> tuple[str, ...]:
    """``inputs`` as given, each file once: a file named twice (``a.csv a.csv``, or a folder
    and a file in it) is read once, with a warning, not scored twice with its second copy
    rejected row by row as duplicates."""
    seen: dict[Path, str] = {}
    for name in map(str, inputs):
        key = Path(name).resolve()
        if key in seen:
            log.warning("%s names the input %s again: it is read once", name, seen[key])
        else:
            seen[key] = name
    return tuple(seen.values())


def plan_run(out_dir: str | Path, settings: Settings, inputs: list[Path] | list[str],
             run_date: date | None = None, text_column: str | None = None,
             id_column: str | None = None, full: bool = False) -> RunPlan:
    """Plan a run of ``settings.model`` over ``inputs`` into ``out_dir``: loads the model (in
    this process, for its version) and hashes the inputs. A DuckDB name escaping ``--out``
    fails here, before any scoring (:class:`~pipeline.errors.UnsafePath`)."""
    out = Path(out_dir).resolve()
    inside(out, settings.duckdb_name)
    model_path = str(resolve(settings.model))
    names = _distinct_inputs(inputs)
    settings, format_reason = run_format(settings, model_path, _input_bytes(names))
    classifier = classifier_for(PartSpec("", model_path, settings.model_options(), ""))
    version, inference = classifier.version, inference_info(classifier)
    fmt = inference["numeric_format"]
    if format_reason and fmt == settings.numeric_format:
        inference["format_reason"] = format_reason  # why auto chose it, not "requested"
    digests = {p: _digest_or_none(Path(p)) for p in names}
    columns = settings.column_overrides()
    columns.update({k: v for k, v in (("text", text_column), ("id", id_column)) if v})
    key = json.dumps([model_path, version, settings.chunk_rows, settings.max_chars,
                      settings.quantize, sorted(columns.items()), sorted(digests.items()),
                      PARTS_FORMAT, *([fmt] if fmt not in ("fp32", "fp64") else [])])
    run_date = run_date or date.today()
    latest = history.latest_run_date(inside(out, settings.duckdb_name))
    return RunPlan(
        out_dir=out, settings=settings, inputs=names, run_id=uuid.uuid4().hex[:12],
        run_date=run_date, started=datetime.now(UTC), model_path=model_path,
        model_version=version, run_key=hashlib.sha256(key.encode()).hexdigest()[:16],
        text_column=text_column, id_column=id_column, full=full, inference=inference,
        backfill_of=latest if latest is not None and run_date < latest else None,
    )


# --------------------------------------------------------------------------- steps


def open_staging(plan: RunPlan) -> Staging:
    """The run's snapshot folder. A publication interrupted by a crash is completed (or
    dropped) here, first."""
    plan.parts_dir.mkdir(parents=True, exist_ok=True)
    return Staging(plan.out_dir, plan.run_id,
                   committed=lambda run_id: history.run_logged(plan.db_path, run_id))


def read_chunks(plan: RunPlan, path: Path, stats: RunStats
                ) -> Iterator[tuple[Chunk, ColumnMap | None, int, int]]:
    """Yield ``(chunk, columns, file_order, chunk_index)`` for one input; an unreadable file
    (or one without a text column) is recorded in ``stats.failed_files``, not raised."""
    order = plan.inputs.index(str(path))
    try:
        reader = iter_chunks(path, plan.settings.chunk_rows)
        index = 0
        while True:
            with stats.timed("read"):
                chunk = next(reader, None)
            if chunk is None:
                break
            if chunk.encoding:
                stats.encodings.setdefault(str(path), chunk.encoding)
            columns = None
            if not chunk.rows.empty:  # no text column: this file fails, the others go on
                columns = find_columns([c for c in chunk.rows.columns if c != "source_row"],
                                       overrides=plan.column_overrides)
                if str(path) not in stats.columns:
                    note_columns(path, chunk, columns, stats)
            yield chunk, columns, order, index
            index += 1
    except (InputError, OSError, UnicodeDecodeError) as exc:
        message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        stats.failed_files[str(path)] = message
        log.error("input failed: %s", message)


def note_columns(path: Path, chunk: Chunk, columns: ColumnMap, stats: RunStats) -> None:
    """Log and record the column mapping of a file (on its first chunk with rows), and warn
    when the text column is mostly empty while another text candidate is filled."""
    roles = columns.roles()
    stats.columns[str(path)] = roles
    log.info("%s: columns %s", path, ", ".join(
        f"{role}={col!r}" for role, col in roles.items() if col is not None))
    rows = chunk.rows

    def filled(col: str) -> float:
        values = rows[col].map(lambda v: isinstance(v, str) and bool(v.strip()))
        return float(values.mean()) if len(values) else 0.0

    chosen = filled(columns.text)
    if chosen >= 0.5:
        return
    for other in text_candidates([c for c in rows.columns if c != "source_row"]):
        share = filled(other)
        if other != columns.text and share >= 0.9:
            message = (f"{path}: text column {columns.text!r} is empty in "
                       f"{100 * (1 - chosen):.0f} % of the first {len(rows)} rows while "
                       f"{other!r} is filled in {100 * share:.0f} %; if {other!r} holds the "
                       f"reviews, pass --text-column {other!r}")
            stats.column_warnings.append(message)
            log.warning("%s", message)
            return


#: ``submit(chunk, columns, file_order, chunk_index, spec)`` -> a future with ``.result()``.
Submit = Callable[[Chunk, ColumnMap | None, int, int, PartSpec], Any]


def score_parts(plan: RunPlan, stats: RunStats, progress: RowProgress,
                part: Callable[..., Counts] = score_part, submit: Submit | None = None,
                window: int = 1) -> None:
    """Score every chunk of every input into parts, accounting each in ``stats`` and the
    progress display. In this process with ``part`` when ``submit`` is None; otherwise chunks
    are submitted (to a task runner) with at most ``window`` in flight, settled in submission
    order (results do not depend on order). Chunks stream: neither the caller nor a worker
    ever holds the whole input."""
    pending: deque = deque()

    def settle(counts: Counts, name: str) -> None:
        stats.add(counts)
        progress.update(counts.rows_in, counts.rows_scored, name)

    for path in map(Path, plan.inputs):
        for chunk, columns, order, index in read_chunks(plan, path, stats):
            if submit is None:
                settle(part(chunk, columns, order, index, plan.spec), path.name)
                continue
            pending.append((submit(chunk, columns, order, index, plan.spec), path.name))
            while len(pending) >= max(1, window):
                future, name = pending.popleft()
                settle(future.result(), name)
    while pending:
        future, name = pending.popleft()
        settle(future.result(), name)


def merge(plan: RunPlan, staging: Staging, stats: RunStats) -> None:
    """Merge the parts into the staged tables and check conservation before and after."""
    with stats.timed("merge"):
        stats.check_conservation()
        if not any(plan.parts_dir.glob("*.done.json")):  # every input failed
            failed = "; ".join(stats.failed_files.values()) or "no input files"
            raise InputError(f"no input file could be read: {failed}")
        counts = merge_parts(plan.parts_dir, staging.dir, list(plan.inputs), plan.run_id,
                             plan.settings.duckdb_memory)
        stats.rows_scored = counts["reviews"]
        stats.rows_rejected = counts["rejected"]
        stats.warnings = counts["warnings"]
        stats.check_conservation()
        stats.warning_reasons = _reason_counts(staging.path(TABLES["warnings"].file))
        if stats.warning_reasons:
            log.warning("field warnings by reason: %s", "; ".join(
                f"{n} {reason}" for reason, n in stats.warning_reasons.items()))
        select_counted(plan, staging, stats)


#: The staged reviews a run's indices count (not published): see :func:`select_counted`.
COUNTED_FILE = "counted.parquet"


def _reason_counts(warnings: Path) -> dict[str, int]:
    """Field warnings of a staged ``warnings`` table counted by reason, most first."""
    import pyarrow.parquet as pq

    reasons = pq.read_table(warnings, columns=["reason"]).column("reason").to_pandas()
    return {str(k): int(v) for k, v in reasons.value_counts().items()}


def select_counted(plan: RunPlan, staging: Staging, stats: RunStats) -> None:
    """Stage ``counted.parquet``: the reviews this run's indices count. A review whose id is
    already in ``history_reviews`` at another run date with the same text was counted there
    and is left out (a cumulative "last 7 days" export is not counted twice); one whose text
    changed counts here, replacing the earlier (logged). ``count_repeats`` counts every
    review of the run."""
    reviews = staging.path(TABLES["reviews"].file)
    counted = staging.path(COUNTED_FILE)
    if plan.settings.count_repeats or "history_reviews" not in file_tables(plan.db_path):
        shutil.copyfile(reviews, counted)
        return
    src = "_reviews"
    seen = "SELECT DISTINCT review_id, content_hash FROM history_reviews WHERE run_date <> ?"
    with duckdb.connect(str(plan.db_path), read_only=True) as con:
        con.execute(f"SET memory_limit = '{plan.settings.duckdb_memory}'")
        register_parquet(con, src, reviews)
        same, changed = con.execute(
            f"""SELECT count(*) FILTER (WHERE h.content_hash = r.content_hash),
                       count(*) FILTER (WHERE h.content_hash <> r.content_hash)
                FROM {src} r JOIN ({seen}) h USING (review_id)""", [plan.run_date]).fetchone()
        target = str(counted).replace("'", "''")
        con.execute(
            f"""COPY (SELECT * FROM {src} r WHERE NOT EXISTS (
                  SELECT 1 FROM ({seen}) h WHERE h.review_id = r.review_id
                    AND h.content_hash = r.content_hash)
                ORDER BY source_file, source_row)
                TO '{target}' (FORMAT parquet, COMPRESSION zstd)""", [plan.run_date])
    stats.repeats, stats.changed_texts = int(same), int(changed)
    if stats.repeats:
        log.info("%d review(s) already counted at an earlier run date: not counted again in "
                 "this run's indices", stats.repeats)
    if stats.changed_texts:
        log.warning("%d review(s) changed their text since the run date that counted them: "
                    "the new text counts in this run, replacing the earlier",
                    stats.changed_texts)

@dataclass
class RollUp:
    """The roll-up step's result: the satisfaction table and the composite weights."""

    satisfaction: pd.DataFrame
    drivers: DriverWeights


def roll_up(plan: RunPlan, staging: Staging, stats: RunStats) -> RollUp:
    """Stage ``satisfaction`` (with the ``composite`` rows) and ``drivers`` from the staged
    reviews."""
    s = plan.settings
    with stats.timed("roll_up"):
        reviews = staging.path(COUNTED_FILE)
        sat = satisfaction_table(count_mentions(reviews, s.duckdb_memory),
                                 prior_strength=s.prior_strength, min_mentions=s.min_mentions)
        drivers = driver_weights(reviews, s.composite_weights, s.driver_alpha,
                                 s.driver_min_mentions, s.driver_min_reviews, s.duckdb_memory)
        sat = with_composite(sat, drivers.weights, s.min_mentions)
        sat["run_id"] = plan.run_id
        sat["run_date"] = pd.Timestamp(plan.run_date)
        write_parquet(sat, staging.path(TABLES["satisfaction"].file))
        write_parquet(drivers.table().assign(run_id=plan.run_id, run_date=plan.run_date),
                      staging.path(TABLES["drivers"].file))
    return RollUp(sat, drivers)


def compare_history(plan: RunPlan, staging: Staging, stats: RunStats,
                    sat: pd.DataFrame) -> pd.DataFrame:
    """Stage ``trends``, ``alerts`` (one row per incident, with example reviews) and
    ``alert_groups`` against earlier runs in the DuckDB file and the run's own review days and
    weeks; returns the alerts."""
    s = plan.settings
    with stats.timed("history"):
        past = history.load_history(plan.db_path, plan.run_date, groupings=s.alert_groupings,
                                    last_runs=trends.LOOKBACK_RUNS,
                                    columns=trends.DETECT_COLUMNS)
        trend = trends.trends(sat, past, plan.run_date, plan.run_id, s.trend_window,
                              s.alert_groupings)
        previous = history.load_history(plan.db_path, plan.run_date,
                                        table=TABLES["alerts"].history, last_runs=1)
        tests, alerts, groups = trends.detect(
            sat, past, previous, plan.run_date, plan.run_id, window=s.trend_window,
            drop=s.alert_drop, alpha=s.alert_alpha, min_mentions=s.alert_min_mentions,
            groupings=s.alert_groupings)
        alerts = incident_examples(alerts, staging.path(TABLES["reviews"].file),
                                   memory_limit=s.duckdb_memory)
        trend = trends.with_detection(trend, tests)
        for name, frame in (("trends", trend), ("alerts", alerts), ("alert_groups", groups)):
            write_parquet(frame, staging.path(TABLES[name].file), TABLES[name].schema)
    return alerts


def find_evidence(plan: RunPlan, staging: Staging, stats: RunStats) -> pd.DataFrame:
    """Stage ``complaint_terms``: top complaint terms per dimension with examples."""
    s = plan.settings
    table = TABLES["complaint_terms"]
    with stats.timed("evidence"):
        terms = complaint_terms(
            staging.path(COUNTED_FILE), plan.run_id, plan.run_date,
            top_n=s.top_terms, min_count=s.terms.min_count, prior_size=s.terms.prior_size,
            per_term=s.terms.examples, max_chars=s.terms.example_chars,
            memory_limit=s.duckdb_memory)
        write_parquet(terms, staging.path(table.file), table.schema)
    return terms


def run_record(plan: RunPlan, stats: RunStats, drivers: DriverWeights | None = None,
               alerts: pd.DataFrame | None = None,
               finished: datetime | None = None) -> dict:
    """The run's metadata and counts (``run.json``, the ``runs`` table row, the report
    header): a function of its arguments only."""
    s = plan.settings
    return {
        "run_id": plan.run_id,
        "run_date": plan.run_date.isoformat(),
        "started_at": plan.started.isoformat(timespec="seconds"),
        "finished_at": (finished or datetime.now(UTC)).isoformat(timespec="seconds"),
        "inputs": list(plan.inputs),
        "model_version": plan.model_version,
        "inference": plan.inference,
        "tool_version": __version__,
        "rows_in": stats.rows_in,
        "rows_scored": stats.rows_scored,
        "rows_rejected": stats.rows_rejected,
        "warnings": stats.warnings,
        "failed_files": dict(stats.failed_files),
        "encodings": dict(stats.encodings),
        "columns": dict(stats.columns),
        "column_warnings": list(stats.column_warnings),
        "warning_reasons": dict(stats.warning_reasons),
        "repeats": stats.repeats,
        "changed_texts": stats.changed_texts,
        "backfill": plan.backfill_of.isoformat() if plan.backfill_of else None,
        "cached": stats.cached,
        "model_rows": stats.model_rows,
        "parts_reused": stats.parts_reused,
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "prior_strength": s.prior_strength,
        "min_mentions": s.min_mentions,
        "composite_weights": drivers.weights if drivers else None,
        "driver_method": drivers.method if drivers else None,
        "alerts": 0 if alerts is None else len(alerts),
        "alert_drop": s.alert_drop,
        "alert_min_mentions": s.alert_min_mentions,
        "alert_alpha": s.alert_alpha,
        "trend_window": s.trend_window,
    }


def report(plan: RunPlan, staging: Staging, stats: RunStats, record: dict,
           sat: pd.DataFrame) -> Path:
    """Render the staged ``report.html`` (``record``: the run record so far)."""
    s = plan.settings
    from pipeline.report.render import render_run_report  # matplotlib: only for a report

    with stats.timed("report"):
        past = history.load_history(plan.db_path, plan.run_date, groupings=["all"],
                                    last_runs=s.report.history_runs)
        return render_run_report(staging.path(REPORT_FILE), record, sat, staging.dir, past,
                                 quotes=s.report.quotes)


def publish(plan: RunPlan, staging: Staging, record: dict) -> dict[str, Path]:
    """Publish the staged snapshot: DuckDB first (tables, run log and history in one
    transaction), then every output file at once (see :class:`Staging`)."""
    names = list(PUBLISHED_FILES)
    atomic_write_text(staging.path(RUN_FILE), json.dumps(record, indent=2))
    runs_path = staging.path("run.parquet")
    write_parquet(pd.DataFrame([{
        **record, **{k: json.dumps(record[k], ensure_ascii=False) for k in (
            "inputs", "failed_files", "encodings", "seconds", "composite_weights", "columns",
            "column_warnings", "warning_reasons", "inference")},
        # a typed empty value: a null-typed first row would not take a date later
        "backfill": record["backfill"] or ""}]),
        runs_path)
    staged = {t.name: staging.path(t.file) for t in OUTPUTS}
    sat = pd.read_parquet(staged["satisfaction"], columns=["grouping", "dimension", "index"])
    overall = dict(sat[sat["grouping"] == "all"].set_index("dimension")["index"])
    sources: dict[str, Any] = {t.history: staged[t.name] for t in OUTPUTS if t.history}
    sources[TABLES["runs"].history] = history.run_row(record, overall)

    counted = staging.path(COUNTED_FILE)

    def log_and_history(con) -> None:
        history.write_log(con, "runs", runs_path)
        history.write_reviews(con, plan.run_date, plan.run_id, counted)
        history.write_history(con, plan.run_date, sources)

    if plan.backfill_of is not None:
        # An earlier date than the published one: its history only (one transaction); the
        # published tables and files stay the latest run date's.
        with duckdb_transaction(plan.db_path, plan.settings.duckdb_memory) as con:
            log_and_history(con)
        log.warning("back-fill of %s: history updated for that date; the published outputs "
                    "stay those of %s (the next run's trends include %s)", plan.run_date,
                    plan.backfill_of, plan.run_date)
        return {plan.settings.duckdb_name: plan.db_path}
    staging.begin(names)
    publish_duckdb(plan.db_path, staged, also=log_and_history,
                   memory_limit=plan.settings.duckdb_memory)
    published = staging.commit(names)
    published[plan.settings.duckdb_name] = plan.db_path
    return published


def remember(plan: RunPlan, stats: RunStats, staging: Staging | None = None) -> None:
    """After a successful publish: keep this run's predictions for incremental runs and
    delete the parts (they are no longer needed to resume). A back-fill's snapshot was never
    published: its reviews are read from ``staging``, which is then dropped."""
    backfill = plan.backfill_of is not None and staging is not None
    reviews = (staging.path(TABLES["reviews"].file) if backfill
               else plan.out_dir / TABLES["reviews"].file)
    if reviews.is_file() and stats.rows_scored:
        plan.cache_dir.mkdir(parents=True, exist_ok=True)
        write_cache(reviews, plan.cache_dir / f"{plan.run_id}.parquet", plan.model_version,
                    plan.settings.duckdb_memory)
    shutil.rmtree(plan.work_dir / "parts", ignore_errors=True)
    if backfill:
        staging.cleanup()


# --------------------------------------------------------------------------- the sequence


@dataclass
class RunResult:
    """What a finished run hands back: its record (as published in ``run.json``), the
    published files and the tables a caller shows."""

    record: dict
    files: dict[str, str]
    stats: RunStats
    satisfaction: pd.DataFrame
    alerts: pd.DataFrame
    terms: pd.DataFrame
    drivers: DriverWeights


#: The steps of :func:`execute`, by name (the flow's task names).
STEP_NAMES = ("prepare-run", "merge", "roll-up", "trends-alerts", "complaint-terms", "report",
              "publish")
#: ``step(name, fn, *args)`` runs one step; the flow makes each a Prefect task.
Step = Callable[..., Any]
#: ``score(plan, stats)`` scores every chunk into parts.
Score = Callable[[RunPlan, RunStats], None]


def call(name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a step in this process (the default :data:`Step`)."""
    return fn(*args)


def score_in_process(plan: RunPlan, stats: RunStats) -> None:
    """Score every chunk in this process, with a progress display (the default
    :data:`Score`)."""
    with RowProgress(plan.settings.progress) as progress:
        score_parts(plan, stats, progress)


def execute(plan: RunPlan, score: Score = score_in_process, step: Step = call) -> RunResult:
    """The run: score the chunks into parts, merge, roll up, compare with history, find
    complaint terms, render the report, publish, then remember the predictions. Any failure
    (or a kill) drops the staged snapshot: the previous outputs stay as they were, and
    finished parts stay for the next identical run to reuse."""
    staging = step("prepare-run", open_staging, plan)
    stats = RunStats()
    try:
        with stats.timed("parts_wall"):  # wall time: the stage seconds are summed over workers
            score(plan, stats)
        if stats.rows_in > plan.settings.chunk_rows:
            # a run of several chunks: the model's memory goes to the merge (a run of one
            # chunk keeps it, so that repeated small runs in one process load it once)
            release_classifiers()
        step("merge", merge, plan, staging, stats)
        rolled = step("roll-up", roll_up, plan, staging, stats)
        alerts = step("trends-alerts", compare_history, plan, staging, stats,
                      rolled.satisfaction)
        terms = step("complaint-terms", find_evidence, plan, staging, stats)
        step("report", report, plan, staging, stats,
             run_record(plan, stats, rolled.drivers, alerts), rolled.satisfaction)
        record = run_record(plan, stats, rolled.drivers, alerts)
        files = step("publish", publish, plan, staging, record)
        remember(plan, stats, staging)
    except BaseException:
        staging.cleanup()
        raise
    return RunResult(record, {k: str(v) for k, v in files.items()}, stats,
                     rolled.satisfaction, alerts, terms, rolled.drivers)


def score_run(out_dir: str | Path, settings: Settings, inputs: list[Path] | list[str],
              **options: Any) -> RunResult:
    """Plan and execute a run in this process (no Prefect): :func:`plan_run` then
    :func:`execute`. ``options``: ``run_date``, ``text_column``, ``id_column``, ``full``."""
    return execute(plan_run(out_dir, settings, inputs, **options))
