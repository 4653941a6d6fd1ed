"""`pursuit llm up|status|down`: the local CPU vLLM server for development and tests."""

from __future__ import annotations

import json

import typer

from app.llm import demo
from app.settings import Settings
from app.tooling import local_llm

llm_app = typer.Typer(
    help="Local vLLM server (CPU) for development and tests.", no_args_is_help=True
)


def _settings(port: int | None) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"llm_port": port}) if port is not None else settings


@llm_app.command()
def up(
    model: str = typer.Option(
        demo.DEFAULT_MODEL, "--model", help=f"One of: {', '.join(demo.MODELS)}."
    ),
    port: int | None = typer.Option(None, "--port", help="Default: PURSUIT_LLM_PORT (8001)."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds to wait for /health."),
) -> None:
    """Install vLLM + the model if needed, start the server, wait until healthy."""
    settings = _settings(port)
    try:
        base_url, served = local_llm.up(settings, model=model, timeout_s=timeout, echo=typer.echo)
    except local_llm.LocalServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("Ready. For the service:")
    local_llm.print_exports(base_url, served, typer.echo)


@llm_app.command()
def status(
    port: int | None = typer.Option(None, "--port"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show install state, pid and health; exit 1 when not healthy."""
    st = local_llm.status(_settings(port))
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=2))
    else:
        state = "healthy" if st.healthy else ("starting/unhealthy" if st.running else "stopped")
        typer.echo(f"vLLM {state} at {st.base_url}")
        typer.echo(
            f"  model: {st.served_name or '-'}  dtype: {st.dtype or '-'}  pid: {st.pid or '-'}"
        )
        typer.echo(f"  installed: {st.installed}  home: {st.home}")
        typer.echo(f"  log: {st.log}")
    if not st.healthy:
        raise typer.Exit(1)


@llm_app.command()
def env(port: int | None = typer.Option(None, "--port")) -> None:
    """Print `export` lines for the running server (for `eval "$(pursuit llm env)"`)."""
    st = local_llm.status(_settings(port))
    if not st.healthy or st.served_name is None:
        typer.echo(f"error: no healthy local vLLM server at {st.base_url}", err=True)
        raise typer.Exit(1)
    local_llm.print_exports(st.base_url, st.served_name, typer.echo)


@llm_app.command()
def stub(
    port: int = typer.Option(18401, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    model: str = typer.Option("pursuit-stub", "--model", help="Served model name."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Added to every request."),
    per_token_ms: float = typer.Option(
        0.0, "--per-token-ms", help="Per generated token of a request's longest choice."
    ),
    max_concurrency: int = typer.Option(
        0, "--max-concurrency", help="Requests served at once (like --max-num-seqs); 0: all."
    ),
) -> None:
    """Run the stub LLM server (vLLM's API, deterministic outputs, no model) for capacity work."""
    from app.tooling.stub_llm import StubConfig, serve

    typer.echo(f"stub LLM server at http://{host}:{port} (model {model}); Ctrl-C stops it")
    typer.echo(f"export PURSUIT_LLM_BASE_URL=http://{host}:{port} PURSUIT_LLM_MODEL={model}")
    config = StubConfig(
        model=model,
        latency_ms=latency_ms,
        per_token_ms=per_token_ms,
        max_concurrency=max_concurrency,
    )
    serve(config, host=host, port=port)


@llm_app.command()
def down(port: int | None = typer.Option(None, "--port")) -> None:
    """Stop the server started by `up`."""
    local_llm.down(_settings(port), echo=typer.echo)


if __name__ == "__main__":
    llm_app()
