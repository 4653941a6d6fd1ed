"""Pydantic models of the vLLM OpenAI-compatible API subset the gateway uses.

Requests are strict (``extra="forbid"``): vLLM silently ignores unknown fields, so a typo
(or a removed field such as ``guided_json``) would otherwise do nothing. Responses ignore
extra fields (vLLM adds some per version) but validate everything we read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """The wire body: aliases, unset optionals left out."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class LenientResponse(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StructuredOutputs(StrictRequest):
    """vLLM >= 0.11 ``structured_outputs`` (the ``guided_*`` fields are gone)."""

    json_schema: dict[str, Any] | None = Field(default=None, alias="json")
    choice: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        if (self.json_schema is None) == (self.choice is None):
            raise ValueError("set exactly one of json, choice")
        return self


class CompletionRequest(StrictRequest):
    """POST /v1/completions."""

    model: str
    prompt: str | list[str]
    max_tokens: int = Field(ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=64)
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=50)
    logprob_token_ids: list[int] | None = Field(default=None, max_length=128)
    return_tokens_as_token_ids: bool | None = None
    # Prompts are rendered through the model's chat template already (BOS included if any).
    add_special_tokens: bool = False
    structured_outputs: StructuredOutputs | None = None

    @model_validator(mode="after")
    def _token_ids_need_logprobs(self) -> CompletionRequest:
        if self.logprob_token_ids and self.logprobs is None:
            raise ValueError("logprob_token_ids requires logprobs")
        return self


class ChatMessage(StrictRequest):
    role: Literal["system", "user", "assistant"]
    content: str


class TokenizeTextRequest(StrictRequest):
    """POST /tokenize with a plain prompt."""

    model: str
    prompt: str
    add_special_tokens: bool = False


class TokenizeChatRequest(StrictRequest):
    """POST /tokenize with messages: applies the server's chat template."""

    model: str
    messages: list[ChatMessage]
    add_generation_prompt: bool = False
    continue_final_message: bool = True
    add_special_tokens: bool = False


class DetokenizeRequest(StrictRequest):
    """POST /detokenize."""

    model: str
    tokens: list[int]


class CompletionLogprobs(LenientResponse):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(LenientResponse):
    index: int = Field(ge=0)
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Usage(LenientResponse):
    prompt_tokens: int = 0
    completion_tokens: int | None = 0
    total_tokens: int = 0


class CompletionResponse(LenientResponse):
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TokenizeResponse(LenientResponse):
    count: int
    tokens: list[int]


class DetokenizeResponse(LenientResponse):
    prompt: str
