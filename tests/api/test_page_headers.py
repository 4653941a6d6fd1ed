"""The page and the docs: security headers, and no third-party asset (security probe, low)."""

from __future__ import annotations

import re

from fastapi import FastAPI

from tests.conftest import open_client


async def test_the_page_may_not_be_framed_and_loads_only_its_own_assets(app: FastAPI) -> None:
    async for client in open_client(app):
        response = await client.get("/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # Everything the page references is on this origin (or a data: favicon).
    for url in re.findall(r'(?:src|href)="([^"]+)"', response.text):
        assert url.startswith(("/static/", "data:")), url


async def test_every_reply_says_nosniff(app: FastAPI) -> None:
    async for client in open_client(app):
        for path in ("/healthz", "/v1/sessions", "/static/app.js", "/no-such-route"):
            response = await client.get(path)
            assert response.headers["x-content-type-options"] == "nosniff", path


async def test_the_api_docs_load_swagger_ui_from_this_origin(app: FastAPI) -> None:
    async for client in open_client(app):
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert assets and all(a.startswith(("/static/vendor/", "data:")) for a in assets)
        assert "https://" not in docs.text
        for asset in assets:
            if asset.startswith("/static/"):
                fetched = await client.get(asset)
                assert fetched.status_code == 200 and len(fetched.content) > 10_000, asset
        assert (await client.get("/redoc")).status_code == 404
