"""The ``pursuit`` command line."""

from __future__ import annotations

import typer
import uvicorn

from app import __version__
from app.db.migrate import upgrade_head
from app.llm.cli import llm_app
from app.logging import configure_logging
from app.settings import get_settings

cli = typer.Typer(help="Pursuit: conformal information pursuit for clinical interviews.")
cli.add_typer(llm_app, name="llm")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    workers: int = typer.Option(1, help="Worker processes."),
) -> None:
    """Serve the API (migrates the embedded SQLite database first)."""
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    if settings.is_embedded_database:
        upgrade_head(settings.effective_database_url)
    uvicorn.run(
        "app.main:asgi_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


@cli.command()
def migrate() -> None:
    """Upgrade the configured database to the newest schema."""
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    upgrade_head(settings.effective_database_url)
    typer.echo("database at head")


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
