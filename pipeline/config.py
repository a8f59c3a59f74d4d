"""One typed place for configuration.

Values come, highest priority first, from: keyword arguments (the CLI's flags), environment
variables prefixed ``REVSAT_`` (e.g. ``REVSAT_BATCH_SIZE=64``), a ``revsat.toml`` file in the
working directory (or the file named by ``REVSAT_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The folder holding the user dictionary, lexicon and bundled sample."""
    return Path(os.environ.get("REVSAT_DATA_DIR", PROJECT_ROOT / "data"))


def models_dir() -> Path:
    """The folder holding shipped models (``default/`` transformer, ``baseline/``)."""
    return Path(os.environ.get("REVSAT_MODELS_DIR", PROJECT_ROOT / "models"))


class Settings(BaseSettings):
    """Run settings; every field has a default that works on a fresh clone."""

    model_config = SettingsConfigDict(env_prefix="REVSAT_", extra="ignore")

    model: str = Field(
        "default",
        description="'default' (shipped distilled transformer + baseline), 'accurate' (its 6-layer "
        "teacher + baseline, half the speed), 'baseline', or a model folder",
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
    numeric_format: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="numeric format of the ONNX graph: auto (int8 where the CPU has int8 "
        "dot-product instructions, avx512_vnni/amx_int8/avx_vnni, and the model folder lists int8 "
        "among the formats that passed its accuracy check; else fp32), fp32 or int8. Stated in "
        "run.json",
    )
    cache_dir: Path | None = Field(
        None, description="cache of exported ONNX graphs, keyed by the weights' hash "
        "(default: $XDG_CACHE_HOME/revsat or ~/.cache/revsat)",
    )
    local_server: bool = Field(
        True,
        description="without PREFECT_API_URL, the CLI starts one local Prefect server and reuses "
        "it across runs (its URL in PREFECT_HOME/revsat-server.json) instead of a temporary "
        "server per run; false: Prefect's temporary server each run",
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
        "1GB", description="memory cap of DuckDB's merge and roll-up queries (it spills beyond)"
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
    trend_window: int = Field(7, gt=0, description="previous run dates in the trailing window")
    alert_drop: float = Field(
        5.0, ge=0, description="index points a group's index must fall by to raise an alert"
    )
    alert_complaint_rise: float = Field(
        0.03, ge=0, description="absolute rise in complaint rate (0.03 = 3 points) that alerts"
    )
    alert_alpha: float = Field(
        0.01, gt=0, lt=1, description="false-discovery rate (Benjamini-Hochberg) of alert tests"
    )
    alert_groupings: list[str] = Field(
        ["all", "category", "product_id", "lang"],
        description="groupings compared across runs for trends and alerts",
    )
    fail_on_alerts: bool = Field(False, description="CLI exits 3 when the run raised alerts")
    top_terms: int = Field(10, gt=0, description="complaint terms listed per dimension")
    progress: bool = Field(True, description="show progress bars on stderr")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("REVSAT_CONFIG", "revsat.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )
