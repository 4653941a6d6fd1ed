"""Typed settings, read once from the environment (prefix ``PURSUIT_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="PURSUIT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Where embedded state lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: a SQLite file in data_dir."
    )
    redis_url: str | None = Field(default=None, description="Optional Redis for cache/limits.")
    llm_base_url: str | None = Field(
        default=None, description="vLLM OpenAI-compatible base URL, e.g. http://127.0.0.1:8001"
    )
    llm_model: str | None = Field(default=None, description="Served model name at the LLM server.")
    llm_connect_timeout_s: float = 5.0
    llm_read_timeout_s: float = 120.0
    llm_max_retries: int = 2
    llm_max_concurrency: int = 16
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pursuit.db').resolve()}"

    @property
    def is_embedded_database(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings``)."""
    return Settings()
