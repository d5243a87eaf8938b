"""Pages for people: /docs (Swagger UI), /redoc and /demo, every asset served by this process.

The Swagger UI and Redoc bundles come from the `fastapi-offline` package (MIT; it ships Swagger UI,
Apache-2.0, and Redoc, MIT, unmodified), so the docs render on a machine without internet access.
The demo's own files live in `app/static/demo` (no third-party code).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.settings import Settings

DOCS_ASSETS = "/static/docs"
DEMO_ASSETS = "/static/demo"
DEMO_DIR = Path(__file__).resolve().parents[2] / "static" / "demo"
# The pages may load nothing from elsewhere: Redoc's footer otherwise fetches its logo from a CDN (it
# hides the image when that fails). Inline scripts and styles: FastAPI's docs pages and Redoc use them.
LOCAL_ONLY = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; worker-src 'self' blob:; media-src 'self' blob:; connect-src 'self'"
    )
}


def docs_asset_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install_pages(app: FastAPI, settings: Settings) -> None:
    """/docs and /redoc with local assets (create the app with docs_url=None, redoc_url=None), and
    /demo unless settings.demo is false."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_asset_dir()), name="docs-assets")
    app.include_router(_docs_router(app))
    if settings.demo:
        app.mount(DEMO_ASSETS, StaticFiles(directory=DEMO_DIR), name="demo-assets")
        app.include_router(_demo_router())


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    openapi_url = app.openapi_url or "/openapi.json"

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        response = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # no badge fetched from the public validator
            swagger_ui_parameters={"validatorUrl": None},
        )
        response.headers.update(LOCAL_ONLY)
        return response

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        response = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        response.headers.update(LOCAL_ONLY)
        return response

    return router


def _demo_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/demo")
    async def demo() -> FileResponse:
        return FileResponse(DEMO_DIR / "index.html", media_type="text/html", headers=LOCAL_ONLY)

    return router
