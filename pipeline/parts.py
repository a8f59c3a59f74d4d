"""Chunk scoring as a pure, restartable unit, and the merge of chunk parts into tables.

A chunk of an input file is validated, preprocessed and classified independently of every
other chunk and written as a *part* (reviews, rejected and warnings Parquet files, then a
``.done.json`` marker with its counts, written last). Parts are what make runs

- restartable: a killed run's finished parts are reused by the next run with the same inputs,
  model and options (the *run key*), so finished chunks are not recomputed;
- parallel: a part needs only the chunk, the model folder and the settings, so Prefect's Dask
  task runner can score chunks on other processes or machines;
- incremental: reviews whose content hash was already scored by the same model version are
  copied from the score cache instead of going through the model.

Duplicate review ids are resolved when the parts are merged (first occurrence by file order,
then row, wins), so chunk order and parallelism never change the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from pipeline.classify import label_columns, load_classifier
from pipeline.config import Settings
from pipeline.io import duck
from pipeline.io.readers import Chunk, find_columns
from pipeline.io.writers import TableWriter
from pipeline.preprocess import preprocess
from pipeline.retry import retry
from pipeline.schema import DIMENSIONS, REJECTED_SCHEMA, REVIEWS_SCHEMA, WARNINGS_SCHEMA
from pipeline.validate import IdRegistry, validate_chunk

#: Columns copied from the score cache instead of running the model.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "sentiment", "p_positive", "p_negative", "p_neutral",
    *[c for d in DIMENSIONS for c in (d, f"{d}_confidence")],
)


@dataclass(frozen=True)
class PartSpec:
    """Everything a worker needs to score one chunk (small and picklable)."""

    parts_dir: str
    model_path: str
    settings: dict
    run_id: str
    #: Column roles named by the user (role -> input column), see :func:`find_columns`.
    columns: dict = field(default_factory=dict)
    cache_dir: str | None = None  # score cache of this model version (None: --full)


@dataclass
class PartCounts:
    """Counts and timings of one part (also the content of its ``.done.json`` marker)."""

    rows_in: int = 0
    scored: int = 0
    rejected: int = 0
    warnings: int = 0
    cached: int = 0
    model_rows: int = 0  # distinct texts the model scored (cached rows and repeats excluded)
    reused: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (streamed): identifies an input across re-runs. A transient
    read error (network mount) is retried with backoff; a missing file fails at once."""

    def digest_once() -> str:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    return retry(digest_once, f"hashing {path}")


def part_name(file_order: int, chunk_index: int) -> str:
    return f"f{file_order:04d}-c{chunk_index:06d}"


@lru_cache(maxsize=2)
def _classifier(model_path: str, settings_json: str):
    """One classifier per worker process and model (loading is the expensive part).

    ``torch_threads`` in the settings caps torch's CPU threads in this process (a Dask worker
    gets its thread budget, so workers do not oversubscribe the cores)."""
    settings = Settings(**json.loads(settings_json))
    classifier = load_classifier(model_path, settings)
    # Only where torch is in use (the transformer): importing it for the baseline costs seconds.
    if settings.torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(settings.torch_threads)
    return classifier


def _cache(cache_dir: str | None) -> pd.DataFrame | None:
    """Predictions already made by this model version, indexed by content hash."""
    if cache_dir is None:
        return None
    files = tuple(sorted(str(p) for p in Path(cache_dir).glob("*.parquet")))
    return _load_cache(files) if files else None


@lru_cache(maxsize=2)
def _load_cache(files: tuple[str, ...]) -> pd.DataFrame:
    """Load the cache files once per worker (keyed by the file list, which grows per run)."""
    glob = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    con = duck.connect()
    try:
        frame = con.execute(
            f"SELECT DISTINCT ON (content_hash) * FROM read_parquet({glob})"
        ).df()
    finally:
        con.close()
    return frame.set_index("content_hash")


def score_part(chunk: Chunk, file_order: int, chunk_index: int, spec: PartSpec) -> PartCounts:
    """Score one chunk into its part files; a part already marked done is reused as is."""
    parts = Path(spec.parts_dir)
    name = part_name(file_order, chunk_index)
    done = parts / f"{name}.done.json"
    if done.is_file():
        counts = PartCounts(**json.loads(done.read_text(encoding="utf-8")))
        counts.reused = True
        return counts
    counts = PartCounts(rows_in=len(chunk.rows) + len(chunk.rejected))
    t0 = time.perf_counter()
    rejected = [dict(r, source_file=chunk.source_file) for r in chunk.rejected]
    warnings: list[dict] = []
    scored = pd.DataFrame()
    if not chunk.rows.empty:
        columns = find_columns(
            [c for c in chunk.rows.columns if c != "source_row"], overrides=spec.columns
        )
        # Ids are de-duplicated across the run at merge time; within a chunk here too.
        validated = validate_chunk(chunk, columns, IdRegistry())
        rejected = validated.rejected  # already holds the reader's rejected rows
        warnings = validated.warnings
        if not validated.accepted.empty:
            counts.seconds["validate"] = time.perf_counter() - t0
            prepared = preprocess(validated.accepted, counts.seconds,
                                  max_chars=spec.settings.get("max_chars"))
            scored, counts.cached, counts.model_rows = _classify(prepared, spec,
                                                                 counts.seconds)
            scored["run_id"] = spec.run_id
    t3 = time.perf_counter()
    _write(parts / f"{name}.reviews.parquet", REVIEWS_SCHEMA, scored)
    _write(parts / f"{name}.rejected.parquet", REJECTED_SCHEMA,
           pd.DataFrame(rejected).assign(run_id=spec.run_id) if rejected else pd.DataFrame())
    _write(parts / f"{name}.warnings.parquet", WARNINGS_SCHEMA,
           pd.DataFrame(warnings).assign(run_id=spec.run_id) if warnings else pd.DataFrame())
    counts.seconds["write"] = time.perf_counter() - t3
    counts.scored, counts.rejected, counts.warnings = len(scored), len(rejected), len(warnings)
    _atomic_text(done, json.dumps(asdict(counts)))
    return counts


def _classify(
    prepared: pd.DataFrame, spec: PartSpec, seconds: dict[str, float]
) -> tuple[pd.DataFrame, int, int]:
    """Model predictions for rows not in the score cache; cached rows are copied. Returns the
    scored rows, how many came from the cache, and how many texts the model scored.

    Identical texts (same content hash) inside the chunk go through the model once: exports
    repeat short reviews ("好评", "default positive review") often, and the prediction of a
    text does not depend on its row.

    Adds ``tokenise`` and ``model`` seconds (or ``classify`` for models that do not split
    their time) to ``seconds``.
    """
    t0 = time.perf_counter()
    classifier = _classifier(spec.model_path, json.dumps(spec.settings, sort_keys=True))
    before = dict(getattr(classifier, "seconds", {}))
    cache = _cache(spec.cache_dir)
    hit = prepared["content_hash"].isin(cache.index) if cache is not None else None
    out = prepared.reset_index(drop=True)
    labels = pd.DataFrame(index=out.index, columns=list(PREDICTION_COLUMNS))
    todo = out.index if hit is None else out.index[~hit.to_numpy()]
    distinct = out.loc[todo].drop_duplicates("content_hash")
    if len(distinct):
        fresh = label_columns(classifier.predict_batch(distinct))
        fresh.index = distinct["content_hash"].to_numpy()
        labels.loc[todo] = fresh.loc[out.loc[todo, "content_hash"]].to_numpy()
    n_cached = len(out) - len(todo)
    if n_cached:
        done = out.index.difference(todo)
        labels.loc[done] = cache.loc[out.loc[done, "content_hash"], list(PREDICTION_COLUMNS)
                                     ].to_numpy()
    for col in PREDICTION_COLUMNS:
        labels[col] = labels[col].astype("float64" if col.startswith("p_") or
                                         col.endswith("_confidence") else object)
    scored = pd.concat([out, labels], axis=1)
    scored["model_version"] = classifier.version
    after = getattr(classifier, "seconds", {})
    split = {k: after[k] - before.get(k, 0.0) for k in after}
    for stage, value in split.items():
        seconds[stage] = seconds.get(stage, 0.0) + value
    rest = time.perf_counter() - t0 - sum(split.values())
    seconds["classify"] = seconds.get("classify", 0.0) + rest
    return scored, n_cached, len(distinct)


def _write(path: Path, schema, frame: pd.DataFrame) -> None:
    tmp = path.with_suffix(".tmp")
    writer = TableWriter(tmp, schema)
    writer.append(frame)
    writer.close()
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _glob(parts_dir: Path, table: str) -> str:
    return "'" + str(parts_dir / f"*.{table}.parquet").replace("'", "''") + "'"


def write_cache(reviews: Path, target: Path, model_version: str) -> None:
    """Store the predictions of a published ``reviews.parquet`` for later incremental runs."""
    cols = ", ".join(["content_hash", *PREDICTION_COLUMNS])
    con = duck.connect()
    try:
        tmp = target.with_suffix(".tmp")
        con.execute(
            f"""COPY (SELECT DISTINCT ON (content_hash) {cols} FROM read_parquet('{_sql(reviews)}')
                      WHERE model_version = ?)
                TO '{_sql(tmp)}' (FORMAT parquet, COMPRESSION zstd)""",
            [model_version],
        )
        os.replace(tmp, target)
    finally:
        con.close()


def merge_parts(
    parts_dir: Path, staging_dir: Path, sources: list[str], run_id: str
) -> dict[str, int]:
    """Merge part files into staged ``reviews``/``rejected``/``warnings`` Parquet files.

    Duplicate review ids: the first occurrence (input file order, then row) is kept; later
    ones go to ``rejected`` with a reason naming the first. Runs out of core in DuckDB.
    Returns row counts of the three tables.
    """
    con = duck.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        order = pd.DataFrame({"source_file": sources, "file_order": range(len(sources))})
        con.register("file_order", order)
        reviews_cols = ", ".join(f'"{f.name}"' for f in REVIEWS_SCHEMA)
        con.execute(
            f"""CREATE TEMP VIEW ranked AS
            SELECT r.*, row_number() OVER (
                PARTITION BY r.review_id ORDER BY o.file_order, r.source_row) AS rn,
              first_value(r.source_file) OVER w AS first_file,
              first_value(r.source_row) OVER w AS first_row
            FROM read_parquet({_glob(parts_dir, 'reviews')}) r
            JOIN file_order o USING (source_file)
            WINDOW w AS (PARTITION BY r.review_id ORDER BY o.file_order, r.source_row)"""
        )
        reviews = staging_dir / "reviews.parquet"
        con.execute(
            f"""COPY (SELECT * REPLACE ('{run_id}' AS run_id) FROM (
                      SELECT {reviews_cols} FROM ranked WHERE rn = 1)
                      ORDER BY source_file, source_row)
                TO '{_sql(reviews)}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        raw = "json_object(" + ", ".join(
            f"'{c}', \"{c}\"" for c in ("review_id", "text", "rating", "product_id",
                                        "category", "created_at")
        ) + ")::VARCHAR"
        con.execute(
            f"""COPY (
                SELECT source_file, source_row, raw, reason, '{run_id}' AS run_id FROM
                  read_parquet({_glob(parts_dir, 'rejected')})
                UNION ALL
                SELECT source_file, source_row, {raw} AS raw,
                  'duplicate review_id ''' || review_id || ''': first seen in ' || first_file
                  || ' row ' || first_row || ' (first occurrence wins)' AS reason,
                  '{run_id}' AS run_id
                FROM ranked WHERE rn > 1
                ORDER BY source_file, source_row)
              TO '{_sql(staging_dir / 'rejected.parquet')}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        con.execute(
            f"""COPY (SELECT * REPLACE ('{run_id}' AS run_id)
                      FROM read_parquet({_glob(parts_dir, 'warnings')})
                      ORDER BY source_file, source_row)
                TO '{_sql(staging_dir / 'warnings.parquet')}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        return {
            t: con.execute(f"SELECT count(*) FROM read_parquet('{_sql(staging_dir / t)}')"
                           ).fetchone()[0]
            for t in ("reviews.parquet", "rejected.parquet", "warnings.parquet")
        }
    finally:
        con.close()


def _sql(path: Path) -> str:
    return str(path).replace("'", "''")
