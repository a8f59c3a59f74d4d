"""The output contract in one place: label vocabularies, prediction columns, table schemas,
and the catalog of tables (names, keys, which are published, which accumulate a history).

Label definitions follow ``shared/labels/GUIDELINES.md``. Every module (model, lexicon,
roll-up, report, store, warehouse, tests) takes its vocabularies and table names from here so
that no label or table is spelled twice.
"""

from __future__ import annotations

from dataclasses import dataclass

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

#: Where an input row came from: its file and 0-based data row.
_SOURCE = (("source_file", pa.string()), ("source_row", pa.int64()))

#: The model's columns of ``reviews`` (what the score cache stores), with their types.
PREDICTION_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("sentiment", pa.string()),
    *[(f"p_{s}", pa.float64()) for s in SENTIMENTS],
    *[f for dim in DIMENSIONS for f in ((dim, pa.string()), (f"{dim}_confidence", pa.float64()))],
)
PREDICTION_COLUMNS: tuple[str, ...] = tuple(name for name, _ in PREDICTION_FIELDS)

#: Schema of ``reviews.parquet`` / the ``reviews`` table.
REVIEWS_SCHEMA = pa.schema(
    [
        ("review_id", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("tokens", pa.list_(pa.string())),
        *PREDICTION_FIELDS,
        ("rating", pa.float64()),
        ("product_id", pa.string()),
        ("category", pa.string()),
        ("created_at", pa.timestamp("us")),
        *_SOURCE,
        ("content_hash", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
    ]
)

#: Schema of ``rejected.parquet`` / the ``rejected`` table.
REJECTED_SCHEMA = pa.schema(
    [*_SOURCE, ("raw", pa.string()), ("reason", pa.string()), ("run_id", pa.string())]
)

#: Schema of ``warnings.parquet``: field values that were invalid and set to null.
WARNINGS_SCHEMA = pa.schema([*_SOURCE, ("column", pa.string()), ("value", pa.string()),
                             ("reason", pa.string()), ("run_id", pa.string())])

#: A chunk's part of ``reviews``: the row's input values ride along as ``raw`` until the merge
#: decides duplicates (a rejected duplicate keeps them).
PART_REVIEWS_SCHEMA = REVIEWS_SCHEMA.append(pa.field("raw", pa.string()))

TRENDS_SCHEMA = pa.schema(
    [
        ("grouping", pa.string()), ("group", pa.string()), ("dimension", pa.string()),
        ("reviews", pa.int64()), ("mentions", pa.int64()),
        ("index", pa.float64()), ("index_se", pa.float64()), ("complaint_rate", pa.float64()),
        ("low_confidence", pa.bool_()),
        ("prev_run_date", pa.date32()), ("prev_reviews", pa.int64()),
        ("prev_index", pa.float64()), ("prev_index_se", pa.float64()),
        ("delta_prev", pa.float64()), ("p_prev", pa.float64()),
        ("prev_complaint_rate", pa.float64()), ("complaint_delta_prev", pa.float64()),
        ("p_complaint_prev", pa.float64()),
        ("window_runs", pa.int64()), ("window_index", pa.float64()),
        ("window_index_se", pa.float64()), ("delta_window", pa.float64()),
        ("p_window", pa.float64()),
        ("run_date", pa.date32()), ("run_id", pa.string()),
    ]
)

ALERTS_SCHEMA = pa.schema(
    [
        ("run_date", pa.date32()), ("run_id", pa.string()),
        ("grouping", pa.string()), ("group", pa.string()), ("dimension", pa.string()),
        ("kind", pa.string()), ("prev_run_date", pa.date32()),
        ("previous", pa.float64()), ("current", pa.float64()), ("change", pa.float64()),
        ("p_value", pa.float64()), ("q_value", pa.float64()),
        ("reviews", pa.int64()), ("mentions", pa.int64()), ("message", pa.string()),
    ]
)


COMPLAINT_TERMS_SCHEMA = pa.schema(
    [
        ("dimension", pa.string()), ("rank", pa.int64()), ("term", pa.string()),
        ("z", pa.float64()), ("log_odds", pa.float64()),
        ("target_reviews", pa.int64()), ("background_reviews", pa.int64()),
        ("target_share", pa.float64()), ("background_share", pa.float64()),
        ("example_ids", pa.list_(pa.string())), ("example_texts", pa.list_(pa.string())),
        ("run_id", pa.string()), ("run_date", pa.date32()),
    ]
)


@dataclass(frozen=True)
class Table:
    """One table of the output contract.

    ``output``: written by every run as ``OUT/<name>.parquet`` and replaced in
    ``revsat.duckdb`` (also what ``revsat export`` writes); ``history``: the table in
    ``revsat.duckdb`` that accumulates it per run date; ``key``: the columns that identify a
    row (the warehouse upserts by it; tables without one are not copied there); ``schema``:
    the declared Arrow schema (None: as the step's frame types it).
    """

    name: str
    key: tuple[str, ...] = ()
    output: bool = True
    history: str | None = None
    schema: pa.Schema | None = None

    @property
    def file(self) -> str:
        """The Parquet file name in ``--out``."""
        return f"{self.name}.parquet"


_GROUP_KEY = ("run_date", "grouping", "group", "dimension")

#: Every table, outputs first in the order they are published.
TABLES: dict[str, Table] = {t.name: t for t in (
    Table("reviews", ("review_id",), schema=REVIEWS_SCHEMA),
    Table("rejected", schema=REJECTED_SCHEMA),
    Table("warnings", schema=WARNINGS_SCHEMA),
    Table("satisfaction", _GROUP_KEY, history="history_satisfaction"),
    Table("drivers", ("run_date", "dimension"), history="history_drivers"),
    Table("trends", _GROUP_KEY, schema=TRENDS_SCHEMA),
    Table("alerts", (*_GROUP_KEY, "kind"), history="history_alerts", schema=ALERTS_SCHEMA),
    Table("complaint_terms", ("run_date", "dimension", "term"),
          history="history_complaint_terms", schema=COMPLAINT_TERMS_SCHEMA),
    Table("runs", ("run_id",), output=False, history="history_runs"),
    Table("history_satisfaction", _GROUP_KEY, output=False),
    Table("history_drivers", ("run_date", "dimension"), output=False),
    Table("history_alerts", (*_GROUP_KEY, "kind"), output=False),
    Table("history_complaint_terms", ("run_date", "dimension", "term"), output=False),
    Table("history_runs", ("run_date",), output=False),
    Table("ledger", ("sha256",), output=False),
)}

#: The tables every run publishes, in order.
OUTPUTS: tuple[Table, ...] = tuple(t for t in TABLES.values() if t.output)
#: The other published files of a run.
REPORT_FILE = "report.html"
RUN_FILE = "run.json"
#: Every file a run publishes into ``--out``, in order.
PUBLISHED_FILES: tuple[str, ...] = (*(t.file for t in OUTPUTS), REPORT_FILE, RUN_FILE)
