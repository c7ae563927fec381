"""Login and logout: a browser form with a session cookie, and a JSON API for scripts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from pacslabel.audit import service as audit
from pacslabel.dicomweb.routes import forget_credential
from pacslabel.errors import PacslabelError
from pacslabel.users import service as user_service
from pacslabel.web.api_contract import INVALID_REQUEST, Text
from pacslabel.web.deps import SESSION_COOKIE, AppSettings, CurrentUser, DbSession
from pacslabel.web.pages import render

router = APIRouter(tags=["auth"], responses=INVALID_REQUEST)


class LoginRequest(BaseModel):
    username: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    id: int
    username: str
    role: str
    display_name: str | None


def _set_session_cookie(response: Response, token: str, settings: AppSettings) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_max_age_s, httponly=True, samesite="lax",
        secure=settings.web_url.startswith("https://"), path="/",
    )


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", {"error": None})


@router.post("/login", include_in_schema=False)
def login_form(request: Request, session: DbSession, settings: AppSettings,
               username: Annotated[Text, Form(max_length=64)], password: Annotated[Text, Form(max_length=1024)],
               ) -> Response:
    try:
        user = user_service.authenticate_password(session, username, password)
    except PacslabelError as exc:
        audit.record(session, None, "login_failed", "user", None, via="form")
        return render(request, "login.html", {"error": exc.message}, status_code=exc.status_code)
    token = user_service.open_web_session(session, user, settings.session_max_age_s)
    audit.record(session, user.username, "login", "user", user.id, via="form")
    response = RedirectResponse("/", status_code=303)
    _set_session_cookie(response, token, settings)
    return response


@router.post("/logout", include_in_schema=False)
def logout_form(request: Request, session: DbSession) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user_service.close_web_session(session, cookie)
        forget_credential(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/api/auth/login", response_model=UserPublic)
def login_api(body: LoginRequest, session: DbSession, settings: AppSettings, response: Response) -> UserPublic:
    try:
        user = user_service.authenticate_password(session, body.username, body.password)
    except PacslabelError:
        # The request transaction rolls back on errors; the failed attempt must still be on record.
        audit.record(session, None, "login_failed", "user", None, via="api")
        session.commit()
        raise
    token = user_service.open_web_session(session, user, settings.session_max_age_s)
    audit.record(session, user.username, "login", "user", user.id, via="api")
    _set_session_cookie(response, token, settings)
    return UserPublic(id=user.id, username=user.username, role=user.role, display_name=user.display_name)


@router.post("/api/auth/logout", status_code=204)
def logout_api(request: Request, session: DbSession) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user_service.close_web_session(session, cookie)
        forget_credential(cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/api/me", response_model=UserPublic)
def who_am_i(user: CurrentUser) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, role=user.role, display_name=user.display_name)
