"""Server-rendered pages (Jinja2, dark theme)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from pacslabel import __version__
from pacslabel.errors import Unauthorized
from pacslabel.web.deps import DbSession, current_user

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    context = {"version": __version__, "user": getattr(request.state, "user", None), **context}
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/")
def home(request: Request, session: DbSession) -> Response:
    try:
        current_user(request, session)
    except Unauthorized:
        return RedirectResponse("/login", status_code=303)
    return render(request, "home.html", {})
