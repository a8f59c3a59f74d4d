"""One typed place for configuration: the only reader of the environment and of TOML files.

Values come, highest priority first, from: keyword arguments (the CLI's flags), environment
variables prefixed ``REVSAT_`` (e.g. ``REVSAT_BATCH_SIZE=64``, ``REVSAT_MODEL=baseline``), a
``revsat.toml`` file in the working directory (or the file named by ``REVSAT_CONFIG``, or the
file given to :meth:`Settings.load`), then the defaults below. Branches of the tree are TOML
tables and ``__`` in environment names: ``[terms]`` (:class:`TermSettings`), ``[report]``
(:class:`ReportSettings`) and ``[train]`` (:class:`pipeline.training.arguments.TrainConfig`).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.training.arguments import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: DuckDB's memory cap when no settings are at hand (the default of ``duckdb_memory``).
DEFAULT_DUCKDB_MEMORY = "512MB"
_SIZE = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
#: The TOML file :meth:`Settings.load` reads instead of ``REVSAT_CONFIG``/``revsat.toml``.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("revsat_config_file", default=None)


def data_dir() -> Path:
    """The folder holding the user dictionary, lexicon and bundled sample."""
    return Path(os.environ.get("REVSAT_DATA_DIR", PROJECT_ROOT / "data"))


def default_cache_dir() -> Path:
    """The folder of rebuildable caches (exported ONNX graphs, jieba's prefix dictionary):
    ``$XDG_CACHE_HOME/revsat``, else ``~/.cache/revsat``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "revsat"


def models_dir() -> Path:
    """The folder holding shipped models (``default/`` transformer, ``baseline/``)."""
    return Path(os.environ.get("REVSAT_MODELS_DIR", PROJECT_ROOT / "models"))


class TermSettings(BaseModel):
    """``[terms]``: how complaint terms are ranked and shown (``REVSAT_TERMS__MIN_COUNT=5``)."""

    min_count: int = Field(3, gt=0, description="negative reviews of its dimension a term needs")
    prior_size: float = Field(1000.0, gt=0, description="pseudo-counts of the log-odds prior")
    examples: int = Field(3, ge=0, description="example reviews kept per term")
    example_chars: int = Field(
        160, gt=0, description="characters kept of an example review: a window around the term")


class ReportSettings(BaseModel):
    """``[report]``: what ``report.html`` shows."""

    quotes: int = Field(3, ge=0, description="negative reviews quoted per dimension without terms")
    history_runs: int = Field(90, gt=0, description="run dates in the trend chart")


class Settings(BaseSettings):
    """Run settings; every field has a default that works on a fresh clone."""

    model_config = SettingsConfigDict(env_prefix="REVSAT_", env_nested_delimiter="__",
                                      extra="ignore")

    model: str = Field(
        "default",
        description="'default' (shipped distilled transformer + baseline), 'accurate' (6 layers, "
        "the same recipe + baseline, half the speed), 'baseline', or a model folder",
    )
    device: str = Field("cpu", description="torch device for the transformer: cpu, cuda, cuda:1")
    quantize: bool | None = Field(
        None, description="int8 dynamic quantisation on CPU (ONNX Runtime's with the onnx "
        "backend, torch's with torch); unset: as the model folder says (off for the shipped "
        "models: it costs more than 0.5 point, see README)"
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="transformer inference engine: onnx (ONNX Runtime, faster on CPU), torch, "
        "or auto (onnx on CPU when installed, else torch)",
    )
    numeric_format: Literal["auto", "fp32", "int8", "bf16"] = Field(
        "auto",
        description="numeric format of the transformer: fp32 or int8 (the ONNX graph on ONNX "
        "Runtime), bf16 (the torch module, its encoder in bfloat16), or auto: bf16 where the "
        "CPU has amx_bf16/avx512_bf16, the model folder lists bf16 among the formats that "
        "passed its accuracy check and the input has at least bf16_min_input_mb; else int8 on "
        "the same terms with int8 instructions (avx512_vnni/amx_int8/avx_vnni); else fp32. "
        "Stated with the reason in run.json",
    )
    bf16_min_input_mb: float = Field(
        0.1, ge=0, description="under numeric_format auto, the input size (MB, all files of a "
        "run) from which bf16 is chosen: below it importing torch and loading the module (about "
        "1.5 s) costs more than bf16 saves (break-even near 115 realistic reviews, 33 kB; "
        "bf16 ahead by 0.9 s at 224 reviews, 70 kB)",
    )
    cache_dir: Path | None = Field(
        None, description="cache of exported ONNX graphs, keyed by the weights' hash "
        "(default: $XDG_CACHE_HOME/revsat or ~/.cache/revsat)",
    )
    local_server: bool = Field(
        True,
        description="without PREFECT_API_URL, the CLI starts one local Prefect server and reuses "
        "it across runs (its URL in PREFECT_HOME/revsat-server-<fingerprint>.json) instead "
        "of a temporary server per run; false: Prefect's temporary server each run",
    )
    local_server_idle_minutes: float = Field(
        30.0, gt=0, description="the local Prefect server stops after this long without requests"
    )
    chunk_rows: int = Field(5000, gt=0, description="rows read, scored and written per chunk")
    batch_size: int = Field(64, gt=0, description="reviews per model forward pass")
    torch_threads: int | None = Field(
        None, gt=0,
        description="torch CPU threads where the model is loaded (default: torch's own; "
        "Dask workers get their thread budget, 1)",
    )
    max_chars: int = Field(
        2000, gt=0, description="characters of a review the model reads; text is stored whole"
    )
    max_windows: int = Field(
        4, gt=0,
        description="a review longer than the model's token limit is read as up to this many "
        "overlapping windows (1: its first window only)",
    )
    duckdb_name: str = Field("revsat.duckdb", description="DuckDB file name inside --out")
    duckdb_memory: str = Field(
        DEFAULT_DUCKDB_MEMORY,
        description="memory cap of DuckDB's merge and roll-up queries (it spills beyond)",
    )
    prior_strength: float = Field(
        10.0, ge=0, description="pseudo-mentions pulling small groups toward the overall index"
    )
    min_mentions: int = Field(
        30, ge=0, description="groups with fewer mentions are flagged low_confidence"
    )
    composite_weights: dict[str, float] | None = Field(
        None,
        description="fixed weights of the composite index per dimension (normalised to sum 1); "
        "default: found by driver analysis",
    )
    driver_alpha: float = Field(1.0, ge=0, description="ridge penalty of the driver regression")
    driver_min_mentions: int = Field(
        30, ge=0, description="each dimension needs this many mentions, else equal weights"
    )
    driver_min_reviews: int = Field(
        200, ge=0, description="the driver regression needs this many reviews, else equal weights"
    )
    trend_window: int = Field(
        7, gt=0, description="earlier run dates (or review days/weeks inside a run) in the "
        "trailing baseline of the drop detector and the trend columns",
    )
    alert_drop: float = Field(
        5.0, ge=0, description="index points a group must be below its baseline to alert"
    )
    alert_alpha: float = Field(
        0.01, gt=0, lt=1,
        description="false-discovery rate (Benjamini-Hochberg) of one night's drop tests; also "
        "the bound on the share of stable nights that raise an incident",
    )
    alert_min_mentions: int = Field(
        50, ge=1,
        description="a group needs this many mentions tonight to alert (and a night this many "
        "to count in a baseline): at 50 the prior is at most 1/6 of the index and a 5-point "
        "drop is about one posterior sd",
    )
    alert_groupings: list[str] = Field(
        ["all", "category", "product_id", "lang"],
        description="groupings compared across runs for trends and alerts",
    )
    fail_on_alerts: bool = Field(False, description="CLI exits 3 when the run raised alerts")
    top_terms: int = Field(10, gt=0, description="complaint terms listed per dimension")
    progress: bool = Field(True, description="show progress bars on stderr")
    text_column: str | None = Field(
        None, description="input column holding the review text (default: found by name)")
    id_column: str | None = Field(
        None, description="input column holding the review id (default: found by name)")
    product_column: str | None = Field(
        None, description="input column holding the product id (default: found by name)")
    rating_column: str | None = Field(
        None, description="input column holding the rating (default: found by name)")
    date_column: str | None = Field(
        None, description="input column holding the review date (default: found by name)")
    category_column: str | None = Field(
        None, description="input column holding the category (default: found by name)")
    order_column: str | None = Field(
        None, description="input column holding the order id, which keys the review id of a "
        "row without one (default: found by name)")
    count_repeats: bool = Field(
        False,
        description="count a review id again in a later run date's indices (default: a review "
        "already in the history counts once, at the run date that first saw it)",
    )

    def column_overrides(self) -> dict[str, str]:
        """The column roles named in the settings (role -> input column name)."""
        roles = {"text": self.text_column, "id": self.id_column,
                 "product_id": self.product_column, "rating": self.rating_column,
                 "created_at": self.date_column, "category": self.category_column,
                 "order_id": self.order_column}
        return {role: name for role, name in roles.items() if name}
    shared_dir: Path | None = Field(
        None, description="labelled corpora for training and evaluation (default: ../shared "
        "beside the project); scoring never needs them"
    )
    terms: TermSettings = Field(
        default_factory=lambda: TermSettings(), description="the [terms] table")
    report: ReportSettings = Field(
        default_factory=lambda: ReportSettings(), description="the [report] table")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="the [train] table: a training run's arguments"
    )

    @field_validator("duckdb_memory")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        value = value.strip()
        if not _SIZE.match(value):
            raise ValueError(f"duckdb_memory {value!r}: use a size such as 512MB or 2GB")
        return value

    @classmethod
    def load(cls, config: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings read from ``config`` (a TOML file) instead of ``REVSAT_CONFIG`` /
        ``revsat.toml``, with ``overrides`` on top (environment variables still apply)."""
        token = _CONFIG_FILE.set(Path(config) if config is not None else None)
        try:
            return cls(**overrides)
        finally:
            _CONFIG_FILE.reset(token)

    def model_options(self) -> dict[str, Any]:
        """The settings that change how a model is loaded and run (they key its cache)."""
        return self.model_dump(include={"device", "batch_size", "max_chars", "torch_threads",
                                        "quantize", "backend", "max_windows", "numeric_format",
                                        "cache_dir"}, mode="json")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get() or Path(os.environ.get("REVSAT_CONFIG", "revsat.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(config: str | Path | None = None, **values: Any) -> Settings:
    """:meth:`Settings.load` of ``values`` (the CLI's flags) over the environment and the
    config file; an invalid value raises :class:`~pipeline.errors.SettingsError` naming the
    setting, where it can be set, and what is wrong (one line, no traceback)."""
    from pydantic import ValidationError

    from pipeline.errors import SettingsError

    try:
        return Settings.load(config, **values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            name = field.split(".")[0]
            where = (f"--{name.replace('_', '-')}" if name in values
                     else f"REVSAT_{name.upper()} or {name} in revsat.toml")
            problems.append(f"{where} = {err.get('input')!r}: {err.get('msg', 'invalid')}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None

def shared_dir(explicit: str | Path | None = None) -> Path | None:
    """Return the shared corpora folder, or None when it does not exist.

    The first source that is given wins: ``explicit``, then ``shared_dir`` in the settings
    (``REVSAT_SHARED_DIR`` or ``revsat.toml``), then ``../shared`` next to the project root. A
    given but missing folder yields None rather than silently falling back to another location.
    """
    candidate = explicit if explicit is not None else Settings().shared_dir
    candidate = Path(candidate) if candidate is not None else PROJECT_ROOT.parent / "shared"
    candidate = candidate.expanduser()
    return candidate if candidate.is_dir() else None
