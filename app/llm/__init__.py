"""LLM gateway: vLLM's OpenAI-compatible API as a ``PosteriorProvider`` (no FastAPI here)."""

from __future__ import annotations

from app.llm.cache import (
    LRUPosteriorCache,
    PosteriorCache,
    RedisPosteriorCache,
    make_posterior_cache,
)
from app.llm.client import VLLMClient, llm_ready
from app.llm.gateway import LLMGateway
from app.llm.prompts import PROMPT_VERSION

__all__ = [
    "PROMPT_VERSION",
    "LLMGateway",
    "LRUPosteriorCache",
    "PosteriorCache",
    "RedisPosteriorCache",
    "VLLMClient",
    "llm_ready",
    "make_posterior_cache",
]
