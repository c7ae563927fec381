"""The FastAPI application factory. Engines and clients are built here, per process, never at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pacslabel import __version__
from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.dicomweb.fast_frames import FrameFastPath
from pacslabel.errors import PacslabelError
from pacslabel.orthanc.client import OrthancClient
from pacslabel.settings import Settings, get_settings
from pacslabel.web import auth_routes, health, ohif_hosting, pages

logger = logging.getLogger(__name__)


class PacslabelApp(FastAPI):
    """FastAPI with the gateway's frame hot path in front of every layer (dicomweb/fast_frames.py).

    FastAPI 0.165 wraps each request in five ASGI layers (error, telemetry, body limit, exceptions, routing)
    before any middleware of ours; in front of them a frame request costs a tenth less gateway CPU. Anything
    the fast path does not answer goes through all of them as before."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._frames = FrameFastPath(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what Starlette sets first; the fast path reads settings and clients from it
        await self._frames(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.effective_database_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.orthanc = OrthancClient.from_settings(settings)
        # Everything alive after start-up (modules, routes, DICOM dictionaries) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise paused one STOW in five by ~0.2 s.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.orthanc.close()
            engine.dispose()

    app = PacslabelApp(title="pacslabel", version=__version__, lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.settings = settings

    @app.exception_handler(PacslabelError)
    async def _domain_error(request: Request, exc: PacslabelError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Precise, input-echo-free messages: field path and what is wrong.
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(pages.router)
    app.include_router(ohif_hosting.router)
    for router in _domain_routers():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")
    return app


def _domain_routers() -> list[APIRouter]:
    """Routers of the domain rooms. Each room owns its routes; the app only mounts them."""
    from pacslabel.annotations.routes import router as annotations_router
    from pacslabel.dicomweb.routes import router as dicomweb_router
    from pacslabel.dicomweb.stow import stow_router
    from pacslabel.export.grant_routes import router as test_access_router
    from pacslabel.export.routes import router as snapshots_router
    from pacslabel.ingest.routes import router as ingest_router
    from pacslabel.projects.routes import router as projects_router
    from pacslabel.review.extra_routes import router as review_extras_router
    from pacslabel.review.quality_routes import router as quality_router
    from pacslabel.review.routes import router as review_router
    from pacslabel.tasks.routes import router as tasks_router
    from pacslabel.web.review_pages import router as review_pages_router

    return [review_pages_router, ingest_router, projects_router, tasks_router, annotations_router, stow_router,
            dicomweb_router, review_router, quality_router, test_access_router, review_extras_router,
            snapshots_router]
