"""One scoring run as plain library code: chunks in, staged tables out, then roll-up, report
and publication. The Prefect flow in ``flows/score.py`` calls these steps as tasks."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from pipeline import __version__
from pipeline.analytics import trends as history
from pipeline.analytics.drivers import DriverWeights, driver_weights
from pipeline.analytics.evidence import COMPLAINT_TERMS_SCHEMA, complaint_terms
from pipeline.analytics.indices import count_mentions, satisfaction_table, with_composite
from pipeline.catalog import DIMENSIONS, OUTPUT_FILES
from pipeline.config import Settings
from pipeline.errors import ConservationError, InputError
from pipeline.ingest.readers import Chunk, find_columns, iter_chunks
from pipeline.models.load import inference_info, resolve_model
from pipeline.run.part import (
    PartCounts,
    PartSpec,
    _classifier,
    file_digest,
    merge_parts,
    score_part,
    write_cache,
)
from pipeline.store.writers import (
    Staging,
    atomic_write_text,
    inside,
    publish_duckdb,
    write_parquet,
)

log = logging.getLogger("revsat")


def first_complaints(reviews: Path, per_dimension: int = 3) -> pd.DataFrame:
    """The first ``per_dimension`` reviews (file order) that are negative on each dimension,
    read batch by batch: the report quotes a few, so a million-row run never loads every text.
    """
    import pyarrow.parquet as pq

    found: list[pd.DataFrame] = []
    need = dict.fromkeys(DIMENSIONS, per_dimension)
    for batch in pq.ParquetFile(reviews).iter_batches(batch_size=50_000,
                                                      columns=["text", *DIMENSIONS]):
        frame = batch.to_pandas()
        keep = pd.Series(False, index=frame.index)
        for dim in DIMENSIONS:
            if need[dim]:
                hits = frame.index[frame[dim] == "negative"][: need[dim]]
                keep.loc[hits] = True
                need[dim] -= len(hits)
        found.append(frame[keep])
        if not any(need.values()):
            break
    return (pd.concat(found, ignore_index=True) if found
            else pd.DataFrame(columns=["text", *DIMENSIONS]))


def _digest_or_none(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:  # missing or unreadable: the chunk reader reports it properly
        return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)



@dataclass
class RunStats:
    """Counts a user sees at the end of a run and in the ``runs`` table."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    warnings: int = 0
    cached: int = 0  # reviews whose predictions came from the score cache
    model_rows: int = 0  # distinct texts the model scored (see parts._classify)
    parts_reused: int = 0  # chunks finished by an earlier, interrupted run
    failed_files: dict[str, str] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class ScoreRun:
    """State of one run: its inputs, run key, parts folder, staging folder and counts.

    Chunks are scored into *parts* (see :mod:`pipeline.run.part`) under
    ``OUT/.revsat/parts/<run key>/``; the run key covers the inputs' bytes, the model and the
    options that change results, so a run killed part-way is resumed by the next identical run.
    """

    def __init__(
        self,
        out_dir: Path,
        model: str,
        settings: Settings,
        inputs: list[Path],
        run_date: date | None = None,
        text_column: str | None = None,
        id_column: str | None = None,
        full: bool = False,
    ) -> None:
        self.out_dir = out_dir.resolve()
        inside(self.out_dir, settings.duckdb_name)  # a name escaping --out fails before scoring
        self.settings = settings
        self.model_path = str(resolve_model(model))
        model_settings = settings.model_dump(
            include={"device", "batch_size", "max_chars", "torch_threads", "quantize", "backend",
                     "max_windows", "numeric_format", "cache_dir"}, mode="json")
        self.classifier = _classifier(self.model_path, json.dumps(model_settings, sort_keys=True))
        self.inference = inference_info(self.classifier)
        self.numeric_format = self.inference["numeric_format"]
        self.run_id = uuid.uuid4().hex[:12]
        self.run_date = run_date or date.today()
        self.started = datetime.now(UTC)
        self.text_column = text_column
        self.id_column = id_column
        self.stats = RunStats()
        self.input_paths = [Path(p) for p in inputs]
        self.inputs = [str(p) for p in self.input_paths]
        self.digests = {str(p): _digest_or_none(p) for p in self.input_paths}
        key = json.dumps(
            [self.model_path, self.classifier.version, settings.chunk_rows, settings.max_chars,
             settings.quantize, text_column, id_column, sorted(self.digests.items()),
             *([self.numeric_format] if self.numeric_format not in ("fp32", "fp64") else [])]
        )
        self.run_key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.work_dir = self.out_dir / ".revsat"
        self.parts_dir = self.work_dir / "parts" / self.run_key
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.work_dir / "cache" / _safe(
            f"{self.classifier.version}-mc{settings.max_chars}-q{settings.quantize}"
            + ("" if self.numeric_format in ("fp32", "fp64") else f"-{self.numeric_format}")
        )
        self.spec = PartSpec(
            parts_dir=str(self.parts_dir),
            model_path=self.model_path,
            settings=model_settings,
            run_id=self.run_id,
            text_column=text_column,
            id_column=id_column,
            cache_dir=None if full else str(self.cache_dir),
        )
        # A publication interrupted by a crash is completed (or dropped) here, first.
        self.staging = Staging(self.out_dir, self.run_id,
                               committed=lambda run_id: history.run_logged(self.db_path, run_id))

    def chunks(self, path: Path) -> Iterator[tuple[Chunk, int, int]]:
        """Yield ``(chunk, file_order, chunk_index)`` for one input; an unreadable file is
        recorded in ``stats.failed_files``, not raised."""
        order = self.inputs.index(str(path))
        try:
            reader = iter_chunks(path, self.settings.chunk_rows)
            index = 0
            while True:
                t0 = time.perf_counter()
                chunk = next(reader, None)
                self.stats.add_time("read", time.perf_counter() - t0)
                if chunk is None:
                    break
                if chunk.encoding:
                    self.stats.encodings.setdefault(str(path), chunk.encoding)
                if not chunk.rows.empty:  # no text column: this file fails, the others go on
                    find_columns([c for c in chunk.rows.columns if c != "source_row"],
                                 self.text_column, self.id_column)
                yield chunk, order, index
                index += 1
        except (InputError, OSError, UnicodeDecodeError) as exc:
            message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            self.stats.failed_files[str(path)] = message
            log.error("input failed: %s", message)

    def add(self, counts: PartCounts) -> None:
        """Account for one finished part."""
        s = self.stats
        s.rows_in += counts.rows_in
        s.rows_scored += counts.scored
        s.rows_rejected += counts.rejected
        s.warnings += counts.warnings
        s.cached += counts.cached
        s.model_rows += counts.model_rows
        s.parts_reused += int(counts.reused)
        for stage, seconds in counts.seconds.items():
            s.add_time(stage, seconds)

    def score_chunk(self, chunk: Chunk, file_order: int, chunk_index: int) -> int:
        """Score one chunk in this process; returns the rows it accepted for scoring."""
        counts = score_part(chunk, file_order, chunk_index, self.spec)
        self.add(counts)
        return counts.scored

    def check_conservation(self) -> None:
        """Raise :class:`ConservationError` unless every row read was scored or rejected."""
        s = self.stats
        if s.rows_in != s.rows_scored + s.rows_rejected:
            raise ConservationError(
                f"rows in {s.rows_in} != scored {s.rows_scored} + rejected {s.rows_rejected}"
            )

    def close_tables(self) -> None:
        """Merge the parts into the staged tables and check conservation on the result."""
        t0 = time.perf_counter()
        self.check_conservation()
        if not any(self.parts_dir.glob("*.done.json")):  # every input failed
            failed = "; ".join(self.stats.failed_files.values()) or "no input files"
            raise InputError(f"no input file could be read: {failed}")
        counts = merge_parts(self.parts_dir, self.staging.dir, self.inputs, self.run_id)
        self.stats.rows_scored = counts["reviews.parquet"]
        self.stats.rows_rejected = counts["rejected.parquet"]
        self.stats.warnings = counts["warnings.parquet"]
        self.check_conservation()
        self.stats.add_time("merge", time.perf_counter() - t0)

    #: Set by :meth:`roll_up` and :meth:`compare_history` (None before they ran).
    drivers: DriverWeights | None = None
    alerts: pd.DataFrame | None = None

    @property
    def db_path(self) -> Path:
        """The DuckDB file in ``--out`` (holds the history of earlier runs)."""
        return inside(self.out_dir, self.settings.duckdb_name)

    def roll_up(self) -> pd.DataFrame:
        """Stage ``satisfaction.parquet`` (with the ``composite`` rows) and ``drivers.parquet``
        from the staged reviews."""
        t0 = time.perf_counter()
        reviews = self.staging.path("reviews.parquet")
        s = self.settings
        sat = satisfaction_table(
            count_mentions(reviews), prior_strength=s.prior_strength, min_mentions=s.min_mentions
        )
        self.drivers = driver_weights(reviews, s.composite_weights, s.driver_alpha,
                                      s.driver_min_mentions, s.driver_min_reviews)
        sat = with_composite(sat, self.drivers.weights, s.min_mentions)
        sat["run_id"] = self.run_id
        sat["run_date"] = pd.Timestamp(self.run_date)
        write_parquet(sat, self.staging.path("satisfaction.parquet"))
        drivers = self.drivers.table().assign(run_id=self.run_id, run_date=self.run_date)
        write_parquet(drivers, self.staging.path("drivers.parquet"))
        self.stats.add_time("roll_up", time.perf_counter() - t0)
        return sat

    def compare_history(self, sat: pd.DataFrame) -> pd.DataFrame:
        """Stage ``trends.parquet`` and ``alerts.parquet`` against earlier runs in the DuckDB
        file; returns the alerts."""
        t0 = time.perf_counter()
        s = self.settings
        past = history.load_history(self.db_path, self.run_date, groupings=s.alert_groupings,
                                    last_runs=s.trend_window)
        trend = history.trends(sat, past, self.run_date, self.run_id, s.trend_window,
                               s.alert_groupings)
        self.alerts = history.alerts(trend, s.alert_drop, s.alert_complaint_rise, s.alert_alpha)
        write_parquet(history.to_arrow(trend, history.TRENDS_SCHEMA).to_pandas(),
                      self.staging.path("trends.parquet"), history.TRENDS_SCHEMA)
        write_parquet(history.to_arrow(self.alerts, history.ALERTS_SCHEMA).to_pandas(),
                      self.staging.path("alerts.parquet"), history.ALERTS_SCHEMA)
        self.stats.add_time("history", time.perf_counter() - t0)
        return self.alerts

    def find_evidence(self) -> pd.DataFrame:
        """Stage ``complaint_terms.parquet``: top complaint terms per dimension with examples."""
        t0 = time.perf_counter()
        terms = complaint_terms(self.staging.path("reviews.parquet"), self.run_id,
                                self.run_date, top_n=self.settings.top_terms)
        write_parquet(history.to_arrow(terms, COMPLAINT_TERMS_SCHEMA).to_pandas(),
                      self.staging.path("complaint_terms.parquet"), COMPLAINT_TERMS_SCHEMA)
        self.stats.add_time("evidence", time.perf_counter() - t0)
        return terms

    def run_record(self) -> dict:
        """The run's metadata and counts (the ``runs`` table row and the report header)."""
        s = self.stats
        return {
            "run_id": self.run_id,
            "run_date": self.run_date.isoformat(),
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": self.inputs,
            "model_version": self.classifier.version,
            "inference": self.inference,
            "tool_version": __version__,
            "rows_in": s.rows_in,
            "rows_scored": s.rows_scored,
            "rows_rejected": s.rows_rejected,
            "warnings": s.warnings,
            "failed_files": s.failed_files,
            "encodings": s.encodings,
            "cached": s.cached,
            "model_rows": s.model_rows,
            "parts_reused": s.parts_reused,
            "seconds": {k: round(v, 3) for k, v in s.seconds.items()},
            "prior_strength": self.settings.prior_strength,
            "min_mentions": self.settings.min_mentions,
            "composite_weights": self.drivers.weights if self.drivers else None,
            "driver_method": self.drivers.method if self.drivers else None,
            "alerts": 0 if self.alerts is None else len(self.alerts),
            "alert_drop": self.settings.alert_drop,
            "alert_complaint_rise": self.settings.alert_complaint_rise,
            "alert_alpha": self.settings.alert_alpha,
            "trend_window": self.settings.trend_window,
        }

    def report(self, sat: pd.DataFrame) -> Path:
        """Render the staged ``report.html``."""
        from pipeline.report import render_report  # matplotlib: only when a report is drawn

        t0 = time.perf_counter()
        negative_any = first_complaints(self.staging.path("reviews.parquet"))
        rejected = pd.read_parquet(self.staging.path("rejected.parquet"), columns=["reason"])
        staged = {name: pd.read_parquet(self.staging.path(f"{name}.parquet"))
                  for name in ("drivers", "trends", "alerts", "complaint_terms")
                  if self.staging.path(f"{name}.parquet").is_file()}
        # The trend chart shows the overall figures of the last 90 run dates.
        past = history.load_history(self.db_path, self.run_date, groupings=["all"],
                                    last_runs=90)
        path = render_report(
            self.staging.path("report.html"), self.run_record(), sat, negative_any, rejected,
            drivers=staged.get("drivers"), trends=staged.get("trends"),
            alerts=staged.get("alerts"), terms=staged.get("complaint_terms"), history=past,
        )
        self.stats.add_time("report", time.perf_counter() - t0)
        return path

    def publish(self) -> dict[str, Path]:
        """Publish the staged snapshot: DuckDB first (tables, run log and history in one
        transaction), then every output file at once (see :class:`Staging`)."""
        record = self.run_record()
        names = [*OUTPUT_FILES, "run.json"]
        atomic_write_text(self.staging.path("run.json"), json.dumps(record, indent=2))
        runs_path = self.staging.path("run.parquet")
        write_parquet(
            pd.DataFrame([{**record, "inputs": json.dumps(record["inputs"]),
                           "failed_files": json.dumps(record["failed_files"]),
                           "encodings": json.dumps(record["encodings"]),
                           "seconds": json.dumps(record["seconds"]),
                           "inference": json.dumps(record["inference"]),
                           "composite_weights": json.dumps(record["composite_weights"])}]),
            runs_path,
        )
        staged = {name: self.staging.path(name) for name in OUTPUT_FILES}
        history_sources = {
            "history_satisfaction": staged["satisfaction.parquet"],
            "history_drivers": staged["drivers.parquet"],
            "history_alerts": staged["alerts.parquet"],
            "history_complaint_terms": staged["complaint_terms.parquet"],
            "history_runs": history.run_row(record, self._overall_indices()),
        }

        def log_and_history(con) -> None:
            history.write_log(con, "runs", runs_path)
            history.write_history(con, self.run_date, history_sources)

        self.staging.begin(names)
        db = self.db_path
        publish_duckdb(
            db,
            {name.removesuffix(".parquet"): path for name, path in staged.items()
             if name.endswith(".parquet")},
            also=log_and_history,
        )
        published = self.staging.commit(names)
        published[self.settings.duckdb_name] = db
        return published

    def finish(self) -> dict[str, Path]:
        """Close, roll up, report and publish in one call (for callers without Prefect)."""
        self.close_tables()
        sat = self.roll_up()
        self.compare_history(sat)
        self.find_evidence()
        self.report(sat)
        return self.publish()

    def _overall_indices(self) -> dict[str, float]:
        """Index of every dimension over all reviews, from the staged satisfaction table."""
        sat = pd.read_parquet(self.staging.path("satisfaction.parquet"),
                              columns=["grouping", "dimension", "index"])
        return dict(sat[sat["grouping"] == "all"].set_index("dimension")["index"])

    def abort(self) -> None:
        """Drop the staging folder; previous outputs stay as they were and finished parts
        stay for the next run to reuse."""
        self.staging.cleanup()

    def update_cache_and_clean(self) -> None:
        """After a successful publish: remember this run's predictions for incremental runs
        and delete the parts (they are no longer needed to resume)."""
        reviews = self.out_dir / "reviews.parquet"
        if reviews.is_file() and self.stats.rows_scored:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_cache(reviews, self.cache_dir / f"{self.run_id}.parquet",
                        self.classifier.version)
        shutil.rmtree(self.work_dir / "parts", ignore_errors=True)
