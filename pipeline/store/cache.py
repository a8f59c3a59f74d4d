"""The score cache: predictions already made by one model version, keyed by content hash, in
``OUT/.revsat/cache/<model version>/<run id>.parquet``. Incremental runs copy a cached review's
predictions instead of running the model (``--full`` ignores the cache)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from pipeline.catalog import PREDICTION_COLUMNS
from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.store import duck
from pipeline.store.writers import replacing


def read_cache(cache_dir: str | None,
               memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> pd.DataFrame | None:
    """Predictions already made by this model version, indexed by content hash (None without
    a cache folder or files)."""
    if cache_dir is None:
        return None
    files = tuple(sorted(str(p) for p in Path(cache_dir).glob("*.parquet")))
    return _load(files, memory_limit) if files else None


@lru_cache(maxsize=2)
def _load(files: tuple[str, ...], memory_limit: str) -> pd.DataFrame:
    """Load the cache files once per worker (keyed by the file list, which grows per run)."""
    with duck.connect(memory_limit) as con:
        frame = con.execute("SELECT DISTINCT ON (content_hash) * FROM read_parquet(?)",
                            [list(files)]).df()
    return frame.set_index("content_hash")


def write_cache(reviews: Path, target: Path, model_version: str,
                memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> None:
    """Store the predictions of a published ``reviews.parquet`` for later incremental runs."""
    cols = ", ".join(["content_hash", *PREDICTION_COLUMNS])
    with duck.connect(memory_limit) as con:
        with replacing(target) as tmp:
            con.execute(
                f"""COPY (SELECT DISTINCT ON (content_hash) {cols} FROM read_parquet(?)
                          WHERE model_version = ?)
                    TO ? (FORMAT parquet, COMPRESSION zstd)""",
                [str(reviews), model_version, str(tmp)],
            )
