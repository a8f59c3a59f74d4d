"""The output contract in one place: label vocabularies, column names and dtypes.

Label definitions follow ``shared/labels/GUIDELINES.md``. Every module (model, lexicon,
roll-up, report, tests) takes its vocabularies from here so that no label is spelled twice.
"""

from __future__ import annotations

import pyarrow as pa

#: The four complaint/satisfaction dimensions, in output order.
DIMENSIONS: tuple[str, ...] = ("logistics", "quality", "service", "privacy")

#: Overall sentiment labels (output order of the ``p_*`` columns).
SENTIMENTS: tuple[str, ...] = ("positive", "negative", "neutral")

#: Per-dimension labels; ``none`` = the dimension is not mentioned.
DIM_LABELS: tuple[str, ...] = ("none", "positive", "negative", "neutral")

#: Language codes written to ``reviews.lang``.
LANGS: tuple[str, ...] = ("zh", "en", "mixed", "other")

#: Optional columns passed through from the input export when present.
PASSTHROUGH: tuple[str, ...] = ("rating", "product_id", "category", "created_at")

#: Schema of ``reviews.parquet`` / the ``reviews`` table.
REVIEWS_SCHEMA = pa.schema(
    [
        ("review_id", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("sentiment", pa.string()),
        ("p_positive", pa.float64()),
        ("p_negative", pa.float64()),
        ("p_neutral", pa.float64()),
        *[
            field
            for dim in DIMENSIONS
            for field in ((dim, pa.string()), (f"{dim}_confidence", pa.float64()))
        ],
        ("rating", pa.float64()),
        ("product_id", pa.string()),
        ("category", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("content_hash", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
    ]
)

#: Schema of ``rejected.parquet`` / the ``rejected`` table.
REJECTED_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("raw", pa.string()),
        ("reason", pa.string()),
        ("run_id", pa.string()),
    ]
)

#: Schema of ``warnings.parquet``: field values that were invalid and set to null.
WARNINGS_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("column", pa.string()),
        ("value", pa.string()),
        ("reason", pa.string()),
        ("run_id", pa.string()),
    ]
)

#: Output file names, in the order they are published.
OUTPUT_FILES = (
    "reviews.parquet",
    "rejected.parquet",
    "warnings.parquet",
    "satisfaction.parquet",
    "drivers.parquet",
    "trends.parquet",
    "alerts.parquet",
    "alert_groups.parquet",
    "complaint_terms.parquet",
    "report.html",
)
