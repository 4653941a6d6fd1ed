"""The clinician page: static files served at ``/`` (no front-end build step)."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.llm.demo import demo_model_note

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Swagger UI from the npm package swagger-ui-dist 5.35.0 (Apache-2.0, LICENSE and NOTICE
# beside it), served from this origin: the docs work on an air-gapped clinic network and run
# no third-party script on the origin where the page keeps an API key.
SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"

router = APIRouter(include_in_schema=False)

# The page keeps an API key in memory: it loads only its own script and style, talks only to
# this origin, and may not be framed (clickjacking). Plots arrive as blob: URLs (fetched with
# the key), the favicon is a data: URL, and bar widths are set through the CSSOM (allowed).
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


BANNER_SLOT = '<p id="model-banner" class="banner" hidden></p>'


@router.get("/")
async def index(request: Request) -> HTMLResponse:
    """The page; with the local demo model configured, its banner is filled in here, so it
    shows before the first request (replies carry the same ``model_note``)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    note = demo_model_note(request.app.state.resources.settings.llm_model)
    if note is not None:
        page = page.replace(
            BANNER_SLOT, f'<p id="model-banner" class="banner">{html.escape(note)}</p>'
        )
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.get("/docs")
async def docs() -> HTMLResponse:
    """The OpenAPI document in Swagger UI, every asset from this origin."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Pursuit API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url="data:,",
    )


def mount_page(app: FastAPI) -> None:
    """The page at ``/``, its static files, and the API docs at ``/docs`` (the app is built
    with FastAPI's CDN-loaded ``/docs`` and ``/redoc`` turned off)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
