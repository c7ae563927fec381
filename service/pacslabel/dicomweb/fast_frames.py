"""The hot path of a viewer load, WADO-RS frame retrieval, answered in front of FastAPI's routing.

A viewer asks for every frame of a series, one request each (300 for a CT). Measured on the gateway
(bench/RESULTS.md), FastAPI's routing, dependency injection and response wrappers were about a third of the
gateway's CPU per frame. This ASGI layer answers the common case without them, with exactly the route's
rules, and hands everything else to the app unchanged:

- only ``GET /dicomweb/studies/{uid}/series/{uid}/instances/{uid}/frames/{list}`` with valid UIDs and frame
  numbers;
- only when the credential (bearer token or session cookie) has a cached access snapshot, i.e. it was
  authenticated against the database at most ``ACCESS_SNAPSHOT_TTL_S`` ago, and that snapshot says yes
  (the one access policy's answer, ``AccessSnapshot.can_see_instance``); a "no" or a miss goes to the route,
  which re-checks against the database and answers 401/404;
- a single uncompressed frame is read from Orthanc's core REST API when that gives the plugin's answer
  (``raw_frames.py``: a quarter of the plugin's CPU per frame); otherwise the plugin is asked;
- only when Orthanc answers 200 with a known length up to ``ONE_READ_MAX_BYTES``; for any other answer
  the request goes to the route, which asks again and maps errors to DICOMweb statuses, or streams.

Headers are passed as by the route: the client's Accept upstream (mapped like the route), Orthanc's
Content-Type and Content-Location back.

It sits in front of the whole application (``web.app.PacslabelApp``), outside FastAPI's own layers, which cost
a tenth of the gateway's CPU per frame. So no application middleware applies to what it answers: a header that
every answer must carry has to be added here too.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pacslabel.dicomweb import filtering, routes
from pacslabel.dicomweb.raw_frames import RAW_FRAMES
from pacslabel.errors import PacslabelError

_FRAMES = re.compile(r"^/dicomweb/studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances/([0-9.]{1,64})"
                     r"/frames/([1-9][0-9]{0,8}(?:,[1-9][0-9]{0,8})*)$")
# Frame requests answered here, per process (tests and benchmarks read it).
STATS = {"answered": 0}
_PASSED = tuple(name for name in routes._PASSED_RESPONSE_HEADERS if name != "content-length")


class FrameFastPath:
    """ASGI middleware: answers visible frame requests directly, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith("/dicomweb/"):
            await self.app(scope, receive, send)
            return
        match = _FRAMES.match(scope["path"])
        if match is None or not await self._answer(scope, send, *match.groups()):
            await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send, study: str, series: str, instance: str, frames: str) -> bool:
        """True when the request was answered here; False (nothing sent) hands it to the app."""
        request = Request(scope)
        if not (routes.bearer_token(request) or request.cookies.get(routes.SESSION_COOKIE)):
            return False
        snapshot = routes.ACCESS_SNAPSHOTS.get(routes._credential_key(request))
        if snapshot is None:
            return False
        try:
            routes._check_uid(study, series, instance)
        except PacslabelError:
            return False
        if not snapshot.can_see_instance(study, series, instance):
            return False
        path = f"studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
        if frames.isdigit() and not scope.get("query_string"):
            try:
                raw = await RAW_FRAMES.fetch(
                    routes._streaming(request), study, series, instance, int(frames),
                    accept=request.headers.get("accept"), location=routes._public_root(request) + path,
                    max_bytes=routes.ONE_READ_MAX_BYTES)
            except (PacslabelError, ValueError):
                raw = None  # asked again below, through the plugin
            if raw is not None:
                await _send(send, [(b"content-type", raw.content_type.encode("latin-1"))], raw.body)
                return True
        accept = filtering.accept_for_orthanc(request.headers.get("accept"), bulk=True)
        try:
            async with routes._streaming(request).stream(
                    "GET", path, params=list(request.query_params.multi_items()),
                    headers=routes._upstream_headers(request, accept=accept)) as upstream:
                length = upstream.content_length
                if upstream.status_code != 200 or length is None or length > routes.ONE_READ_MAX_BYTES:
                    return False  # the route asks again: error mapping, streaming
                body = await upstream.aread()
                headers = [(name.encode("latin-1"), value.encode("latin-1"))
                           for name, value in upstream.headers.items() if name in _PASSED]
        except (PacslabelError, ValueError):  # Orthanc unreachable or broke off: the route answers 503/504/502
            return False
        await _send(send, headers, body)
        return True


async def _send(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    STATS["answered"] += 1
