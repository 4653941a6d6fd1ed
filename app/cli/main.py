"""The ``pursuit`` command line."""

from __future__ import annotations

import asyncio
import uuid

import typer
import uvicorn

from app import __version__
from app.auth import service as key_service
from app.auth.keys import parse_scopes
from app.cli.calibrations import register as register_calibration_commands
from app.cli.kb import register as register_kb_commands
from app.cli.llm import llm_app
from app.cli.twentyq import register as register_twentyq_commands
from app.db.migrate import upgrade_head
from app.logging import configure_logging
from app.settings import get_settings

cli = typer.Typer(help="Pursuit: conformal information pursuit for clinical interviews.")
cli.add_typer(llm_app, name="llm")
keys_app = typer.Typer(help="API keys: create (printed once), list, revoke.", no_args_is_help=True)
cli.add_typer(keys_app, name="keys")
register_calibration_commands(cli)
register_twentyq_commands(cli)
register_kb_commands(cli)


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
        secret = asyncio.run(
            key_service.ensure_dev_key(settings.effective_database_url, settings.data_dir)
        )
        if secret is not None:
            typer.echo(
                "Created a local development API key (every tenant scope, tenant 'local'); it is also in "
                f"{settings.data_dir / key_service.DEV_KEY_FILE}:\n  {secret}",
                err=True,
            )
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


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., help="The tenant whose sessions this key reaches."),
    scopes: str = typer.Option(
        ...,
        help="Comma-separated: sessions:write, sessions:read, calibrations:admin, audit:read "
        "(a tenant's); platform:admin (an operator's: manages the platform's calibrations)",
    ),
    name: str | None = typer.Option(None, help="A label for people."),
    expires_in_days: float | None = typer.Option(
        None, "--expires-in-days", help="Refuse the key this many days from now (default: never)."
    ),
) -> None:
    """Create a key; it is printed once, on the last line, and stored only as a hash."""
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scopes") from None
    settings = get_settings()
    if expires_in_days is not None and expires_in_days <= 0:
        raise typer.BadParameter("must be positive", param_hint="--expires-in-days")
    row, secret = asyncio.run(
        key_service.create_key(
            settings.effective_database_url,
            tenant=tenant,
            scopes=parsed,
            name=name,
            expires_in_days=expires_in_days,
        )
    )
    typer.echo(f"key id {row.id} for tenant {tenant!r}, scopes {', '.join(row.scopes)}")
    typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    for row in asyncio.run(key_service.list_keys(get_settings().effective_database_url)):
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        expires = f"expires {row.expires_at:%Y-%m-%d}" if row.expires_at else "no expiry"
        used = f"used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
        typer.echo(
            f"{row.id}  {row.tenant:<20} {state:<18} {expires:<18} {used:<22} "
            f"{','.join(row.scopes)}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke a key (effective within the auth cache TTL, 10 s by default)."""
    if not asyncio.run(key_service.revoke_key(get_settings().effective_database_url, key_id)):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: uuid.UUID) -> None:
    """Replace a key by a new one (same tenant, scopes, name and expiry) and revoke it; the
    new secret is printed once, on the last line."""
    rotated = asyncio.run(key_service.rotate_key(get_settings().effective_database_url, key_id))
    if rotated is None:
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    row, secret = rotated
    typer.echo(f"key id {row.id} replaces {key_id} (revoked) for tenant {row.tenant!r}")
    typer.echo(secret)


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
