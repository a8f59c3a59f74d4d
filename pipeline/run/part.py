"""Chunk scoring as a pure, restartable unit: one chunk of an input file is validated,
preprocessed and classified independently of every other chunk and written as a *part*
(reviews, rejected and warnings Parquet files, then a ``.done.json`` marker with its counts,
written last). Parts are what make runs

- restartable: a killed run's finished parts are reused by the next run with the same inputs,
  model and options (the *run key*), so finished chunks are not recomputed;
- parallel: a part needs only the chunk, the model folder and the settings (:class:`PartSpec`),
  so Prefect's Dask task runner can score chunks on other processes or machines;
- incremental: reviews whose content hash was already scored by the same model version are
  copied from the score cache (:mod:`pipeline.store.cache`) instead of going through the model.

Duplicate review ids are resolved when the parts are merged
(:func:`pipeline.store.parts.merge_parts`); a row whose id is already taken earlier in its own
chunk is not sent to the model, since the merge will reject it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.catalog import PART_REVIEWS_SCHEMA, PREDICTION_COLUMNS, PREDICTION_FIELDS, TABLES
from pipeline.config import DEFAULT_DUCKDB_MEMORY, Settings
from pipeline.hardware import release_free_heap
from pipeline.ingest.columns import ColumnMap
from pipeline.ingest.readers import Chunk
from pipeline.ingest.validate import validate_chunk
from pipeline.models.heads import Classifier, label_columns
from pipeline.models.load import load, shared_baseline
from pipeline.store.cache import read_cache
from pipeline.store.parts import part_file
from pipeline.store.writers import atomic_write_text, write_frame
from pipeline.text.preprocess import preprocess


@dataclass(frozen=True)
class PartSpec:
    """Everything a worker needs to score one chunk (small and picklable)."""

    parts_dir: str
    model_path: str
    settings: dict  # Settings.model_options(): how the model is loaded and run
    run_id: str
    cache_dir: str | None = None  # score cache of this model version (None: --full)
    duckdb_memory: str = DEFAULT_DUCKDB_MEMORY


@dataclass
class Counts:
    """Row counts and stage seconds: of one part (its ``.done.json`` marker) or, summed, of a
    run (:class:`pipeline.run.steps.RunStats`)."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    warnings: int = 0
    cached: int = 0  # reviews whose predictions came from the score cache
    model_rows: int = 0  # distinct texts the model scored (cached rows and repeats excluded)
    parts_reused: int = 0  # parts finished by an earlier, interrupted run
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def part_name(file_order: int, chunk_index: int) -> str:
    """The name of a chunk's part files."""
    return f"f{file_order:04d}-c{chunk_index:06d}"


@lru_cache(maxsize=2)
def _classifier(model_path: str, settings_json: str) -> Classifier:
    """One classifier per worker process and model (loading is the expensive part).

    ``torch_threads`` in the settings caps torch's CPU threads in this process (a Dask worker
    gets its thread budget, so workers do not oversubscribe the cores)."""
    settings = Settings(**json.loads(settings_json))
    classifier = load(model_path, settings)
    # Only where torch is in use (the transformer): importing it for the baseline costs seconds.
    if settings.torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(settings.torch_threads)
    return classifier


def release_classifiers() -> None:
    """Drop this process's loaded classifiers (the next part loads its model again). The
    transformer holds about half a gigabyte, most of it the multilingual embedding table,
    which a large run's merge and publication can use instead."""
    import gc

    onnx = sys.modules.get("pipeline.models.transformer.onnx")  # never imported for it
    if onnx is not None:  # the sessions' shared arena outlives them: empty it while one lives
        onnx.shrink_arena()
    _classifier.cache_clear()
    shared_baseline.cache_clear()
    gc.collect()
    release_free_heap()  # glibc keeps freed pages: 109 MB more after the default model


def classifier_for(spec: PartSpec) -> Classifier:
    """The (cached) classifier of a part spec."""
    return _classifier(spec.model_path, json.dumps(spec.settings, sort_keys=True))


def score_part(chunk: Chunk, columns: ColumnMap | None, file_order: int, chunk_index: int,
               spec: PartSpec) -> Counts:
    """Score one chunk into its part files; a part already marked done is reused as is.
    ``columns`` is the chunk's column map (None for a chunk without rows)."""
    parts = Path(spec.parts_dir)
    name = part_name(file_order, chunk_index)
    done = parts / f"{name}.done.json"
    if done.is_file():
        counts = Counts(**json.loads(done.read_text(encoding="utf-8")))
        counts.parts_reused = 1
        return counts
    counts = Counts(rows_in=len(chunk.rows) + len(chunk.rejected))
    t0 = time.perf_counter()
    rejected = [dict(r, source_file=chunk.source_file) for r in chunk.rejected]
    warnings: list[dict] = []
    scored = pd.DataFrame()
    if not chunk.rows.empty and columns is not None:
        validated = validate_chunk(chunk, columns)
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
    write_frame(part_file(parts, name, "reviews"), PART_REVIEWS_SCHEMA, scored)
    for table, rows in (("rejected", rejected), ("warnings", warnings)):
        write_frame(part_file(parts, name, table), TABLES[table].schema,
                    pd.DataFrame(rows).assign(run_id=spec.run_id) if rows else pd.DataFrame())
    counts.seconds["write"] = time.perf_counter() - t3
    counts.rows_scored, counts.rows_rejected = len(scored), len(rejected)
    counts.warnings = len(warnings)
    atomic_write_text(done, json.dumps(asdict(counts)))
    return counts


def _classify(
    prepared: pd.DataFrame, spec: PartSpec, seconds: dict[str, float]
) -> tuple[pd.DataFrame, int, int]:
    """Model predictions for rows not in the score cache; cached rows are copied. Returns the
    scored rows, how many came from the cache, and how many texts the model scored.

    Identical texts (same content hash) inside the chunk go through the model once: exports
    repeat short reviews ("好评", "default positive review") often, and the prediction of a
    text does not depend on its row. A row whose review id is taken earlier in the chunk does
    not go through the model (the merge rejects it); it carries its first occurrence's labels.

    Adds ``tokenise`` and ``model`` seconds (or ``classify`` for models that do not split
    their time) to ``seconds``.
    """
    t0 = time.perf_counter()
    classifier = classifier_for(spec)
    before = dict(getattr(classifier, "seconds", {}))
    cache = read_cache(spec.cache_dir, spec.duckdb_memory)
    out = prepared.reset_index(drop=True)
    wanted = ~out["review_id"].duplicated().to_numpy()
    hit = (out["content_hash"].isin(cache.index).to_numpy() if cache is not None
           else pd.Series(False, index=out.index).to_numpy())
    labels = pd.DataFrame(index=out.index, columns=list(PREDICTION_COLUMNS))
    todo = out.index[wanted & ~hit]
    distinct = out.loc[todo].drop_duplicates("content_hash")
    if len(distinct):
        fresh = label_columns(classifier.predict_batch(distinct))
        fresh.index = distinct["content_hash"].to_numpy()
        labels.loc[todo] = fresh.loc[out.loc[todo, "content_hash"]].to_numpy()
    done = out.index[wanted & hit]
    if len(done):
        labels.loc[done] = cache.loc[out.loc[done, "content_hash"], list(PREDICTION_COLUMNS)
                                     ].to_numpy()
    if not wanted.all():  # the merge rejects these rows; copy their first occurrence's labels
        first = pd.Series(out.index[wanted], index=out.loc[wanted, "review_id"])
        repeat = out.index[~wanted]
        labels.loc[repeat] = labels.loc[first[out.loc[repeat, "review_id"]]].to_numpy()
    for col, kind in PREDICTION_FIELDS:
        labels[col] = labels[col].astype("float64" if pa.types.is_floating(kind) else object)
    scored = pd.concat([out, labels], axis=1)
    scored["model_version"] = classifier.version
    after = getattr(classifier, "seconds", {})
    split = {k: after[k] - before.get(k, 0.0) for k in after}
    for stage, value in split.items():
        seconds[stage] = seconds.get(stage, 0.0) + value
    rest = time.perf_counter() - t0 - sum(split.values())
    seconds["classify"] = seconds.get("classify", 0.0) + rest
    return scored, len(done), len(distinct)
