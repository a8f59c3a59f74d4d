"""One scoring run as plain library code: chunks in, staged tables out, then roll-up, report
and publication. The Prefect flow in ``flows/score.py`` calls these steps as tasks."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from pipeline import __version__
from pipeline.classify import Classifier, label_columns
from pipeline.config import Settings
from pipeline.io.readers import Chunk, InputError, find_columns, iter_chunks
from pipeline.io.writers import Staging, publish_duckdb, write_parquet
from pipeline.preprocess import preprocess
from pipeline.report import render_report
from pipeline.schema import (
    DIMENSIONS,
    REJECTED_SCHEMA,
    REVIEWS_SCHEMA,
    WARNINGS_SCHEMA,
)
from pipeline.scoring import count_mentions, satisfaction_table
from pipeline.validate import IdRegistry, validate_chunk

log = logging.getLogger("revsat")


class ConservationError(RuntimeError):
    """Rows in != rows scored + rows rejected: a bug, never a data problem."""


@dataclass
class RunStats:
    """Counts a user sees at the end of a run and in the ``runs`` table."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    warnings: int = 0
    failed_files: dict[str, str] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class ScoreRun:
    """State of one run: staging folder, table writers, id registry and counts."""

    def __init__(
        self,
        out_dir: Path,
        classifier: Classifier,
        settings: Settings,
        run_date: date | None = None,
        text_column: str | None = None,
        id_column: str | None = None,
    ) -> None:
        self.out_dir = out_dir.resolve()
        self.classifier = classifier
        self.settings = settings
        self.run_id = uuid.uuid4().hex[:12]
        self.run_date = run_date or date.today()
        self.started = datetime.now(UTC)
        self.text_column = text_column
        self.id_column = id_column
        self.stats = RunStats()
        self.inputs: list[str] = []
        self.ids = IdRegistry()
        self.staging = Staging(self.out_dir, self.run_id)
        self.reviews = self.staging.writer("reviews.parquet", REVIEWS_SCHEMA)
        self.rejected = self.staging.writer("rejected.parquet", REJECTED_SCHEMA)
        self.warnings = self.staging.writer("warnings.parquet", WARNINGS_SCHEMA)

    def chunks(self, path: Path):
        """Yield the raw chunks of one input; an unreadable file is recorded, not raised."""
        self.inputs.append(str(path))
        try:
            yield from iter_chunks(path, self.settings.chunk_rows)
        except (InputError, OSError, UnicodeDecodeError) as exc:
            message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
            self.stats.failed_files[str(path)] = message
            log.error("input failed: %s", message)

    def score_chunk(self, chunk: Chunk) -> int:
        """Validate, preprocess, classify and stage one chunk; returns rows scored."""
        self.stats.rows_in += len(chunk.rows) + len(chunk.rejected)
        t0 = time.perf_counter()
        if chunk.rows.empty:
            valid_rows, rejected, warnings = pd.DataFrame(), [
                dict(r, source_file=chunk.source_file) for r in chunk.rejected
            ], []
        else:
            columns = find_columns(
                [c for c in chunk.rows.columns if c != "source_row"],
                self.text_column, self.id_column,
            )
            validated = validate_chunk(chunk, columns, self.ids)
            valid_rows, rejected, warnings = (
                validated.accepted, validated.rejected, validated.warnings,
            )
        t1 = time.perf_counter()
        self.stats.add_time("validate", t1 - t0)
        if not valid_rows.empty:
            prepared = preprocess(valid_rows)
            t2 = time.perf_counter()
            self.stats.add_time("preprocess", t2 - t1)
            labels = label_columns(self.classifier.predict_batch(prepared))
            t3 = time.perf_counter()
            self.stats.add_time("classify", t3 - t2)
            scored = pd.concat([prepared.reset_index(drop=True), labels], axis=1)
            scored["model_version"] = self.classifier.version
            scored["run_id"] = self.run_id
            self.reviews.append(scored)
            self.stats.add_time("write", time.perf_counter() - t3)
        self._stage_rejected(rejected, warnings)
        self.stats.rows_scored += len(valid_rows)
        return len(valid_rows)

    def _stage_rejected(self, rejected: list[dict], warnings: list[dict]) -> None:
        if rejected:
            self.rejected.append(pd.DataFrame(rejected).assign(run_id=self.run_id))
            self.stats.rows_rejected += len(rejected)
        if warnings:
            self.warnings.append(pd.DataFrame(warnings).assign(run_id=self.run_id))
            self.stats.warnings += len(warnings)

    def check_conservation(self) -> None:
        """Raise :class:`ConservationError` unless every row read was scored or rejected."""
        s = self.stats
        if s.rows_in != s.rows_scored + s.rows_rejected:
            raise ConservationError(
                f"rows in {s.rows_in} != scored {s.rows_scored} + rejected {s.rows_rejected}"
            )

    def close_tables(self) -> None:
        for writer in (self.reviews, self.rejected, self.warnings):
            writer.close()
        self.check_conservation()

    def roll_up(self) -> pd.DataFrame:
        """Compute and stage ``satisfaction.parquet`` from the staged reviews."""
        t0 = time.perf_counter()
        sat = satisfaction_table(
            count_mentions(self.staging.path("reviews.parquet")),
            prior_strength=self.settings.prior_strength,
            min_mentions=self.settings.min_mentions,
        )
        sat["run_id"] = self.run_id
        sat["run_date"] = pd.Timestamp(self.run_date)
        write_parquet(sat, self.staging.path("satisfaction.parquet"))
        self.stats.add_time("roll_up", time.perf_counter() - t0)
        return sat

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
            "tool_version": __version__,
            "rows_in": s.rows_in,
            "rows_scored": s.rows_scored,
            "rows_rejected": s.rows_rejected,
            "warnings": s.warnings,
            "failed_files": s.failed_files,
            "seconds": {k: round(v, 3) for k, v in s.seconds.items()},
            "prior_strength": self.settings.prior_strength,
            "min_mentions": self.settings.min_mentions,
        }

    def report(self, sat: pd.DataFrame) -> Path:
        """Render the staged ``report.html``."""
        t0 = time.perf_counter()
        reviews = pd.read_parquet(
            self.staging.path("reviews.parquet"), columns=["text", *DIMENSIONS]
        )
        negative_any = reviews[(reviews[list(DIMENSIONS)] == "negative").any(axis=1)]
        rejected = pd.read_parquet(self.staging.path("rejected.parquet"), columns=["reason"])
        path = render_report(
            self.staging.path("report.html"), self.run_record(), sat, negative_any, rejected
        )
        self.stats.add_time("report", time.perf_counter() - t0)
        return path

    def publish(self) -> dict[str, Path]:
        """Move the staged files into ``--out`` and load them into the DuckDB file."""
        names = ["reviews.parquet", "rejected.parquet", "warnings.parquet",
                 "satisfaction.parquet", "report.html"]
        published = self.staging.publish(names)
        record = self.run_record()
        runs_path = self.staging.path("run.parquet")
        write_parquet(
            pd.DataFrame([{**record, "inputs": json.dumps(record["inputs"]),
                           "failed_files": json.dumps(record["failed_files"]),
                           "seconds": json.dumps(record["seconds"])}]),
            runs_path,
        )
        db = self.out_dir / self.settings.duckdb_name
        publish_duckdb(
            db,
            {name.removesuffix(".parquet"): path for name, path in published.items()
             if name.endswith(".parquet")},
        )
        _append_run(db, runs_path)
        (self.out_dir / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        self.staging.cleanup()
        published[self.settings.duckdb_name] = db
        return published

    def finish(self) -> dict[str, Path]:
        """Close, roll up, report and publish in one call (for callers without Prefect)."""
        self.close_tables()
        self.report(self.roll_up())
        return self.publish()

    def abort(self) -> None:
        """Drop the staging folder; previous outputs stay as they were."""
        for writer in (self.reviews, self.rejected, self.warnings):
            writer.close()
        self.staging.cleanup()


def _append_run(db: Path, run_parquet: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    try:
        src = "read_parquet('" + str(run_parquet).replace("'", "''") + "')"
        con.execute(f"CREATE TABLE IF NOT EXISTS runs AS SELECT * FROM {src} LIMIT 0")
        con.execute(f"INSERT INTO runs BY NAME SELECT * FROM {src}")
    finally:
        con.close()
