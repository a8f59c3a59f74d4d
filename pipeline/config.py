"""One typed place for configuration.

Values come, highest priority first, from: keyword arguments (the CLI's flags), environment
variables prefixed ``REVSAT_`` (e.g. ``REVSAT_BATCH_SIZE=64``), a ``revsat.toml`` file in the
working directory (or the file named by ``REVSAT_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Input column names recognised (case-insensitive), first match wins.
TEXT_COLUMNS = ("text", "review", "content", "comment", "review_text", "sentence", "评论", "内容")
ID_COLUMNS = ("review_id", "id")


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
        description="'default' (best shipped model), 'baseline', 'transformer', or a model folder",
    )
    device: str = Field("cpu", description="torch device for the transformer: cpu, cuda, cuda:1")
    chunk_rows: int = Field(5000, gt=0, description="rows read, scored and written per chunk")
    batch_size: int = Field(64, gt=0, description="reviews per model forward pass")
    max_chars: int = Field(
        2000, gt=0, description="characters of a review the model reads; text is stored whole"
    )
    duckdb_name: str = Field("revsat.duckdb", description="DuckDB file name inside --out")
    prior_strength: float = Field(
        10.0, ge=0, description="pseudo-mentions pulling small groups toward the overall index"
    )
    min_mentions: int = Field(
        30, ge=0, description="groups with fewer mentions are flagged low_confidence"
    )
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
