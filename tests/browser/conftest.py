"""The browser tests use the real local vLLM server, like tests/llm."""

from tests.llm.conftest import live_server

__all__ = ["live_server"]
