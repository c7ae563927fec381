"""The DICOMweb gateway, read side: QIDO-RS and WADO-RS at ``/dicomweb``, filtered by the access policy.

Every request authenticates (session cookie or bearer token) and goes through :class:`AccessPolicy`:

- QIDO results are filtered to what the user may see, and ``limit``/``offset`` apply to the filtered set;
- WADO of anything not visible is 404, with the same message as for something that does not exist;
- study-level WADO and metadata carry only the visible series.

Bytes pass through without buffering whole studies or series (``orthanc/streaming.py``'s keep-alive pool;
an answer of known length up to ``ONE_READ_MAX_BYTES``, such as a frame, is passed on in one piece, anything
else is streamed; the hot path of frame requests is ``fast_frames.py``, in front of the routing):
the client's ``Accept`` goes upstream unchanged (DICOMweb 1.7 refuses multi-type Accepts with a 400 that
the client should see), Orthanc's ``Content-Type`` comes back verbatim (boundary and transfer syntax),
hop-by-hop and other headers are dropped both ways, and upstream always gets ``Accept-Encoding: identity``.
JSON (QIDO, metadata) is parsed or rewritten: Orthanc's absolute URLs (BulkDataURI, RetrieveURL) are made
to point at the gateway, and the answer is gzipped here when the client accepts it (frames never are).

Sync database work runs in the thread pool; the request's DB session is committed and closed before bytes
start to flow, so that a long transfer never holds a connection of the pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from pacslabel.access.policy import AccessPolicy, AccessSnapshot, StudyGrant, take_snapshot
from pacslabel.annotations.repository import versions_in_series
from pacslabel.audit.service import record
from pacslabel.catalog.repository import landed_instances
from pacslabel.db import session_scope
from pacslabel.dicomweb import filtering, release_filters, visible_counts
from pacslabel.dicomweb.metadata_cache import SERIES_METADATA_CACHE, CachedMetadata, compact_json
from pacslabel.errors import BadInput, NotFound, PacslabelError
from pacslabel.orthanc.client import OrthancError
from pacslabel.orthanc.streaming import OrthancStreamingClient
from pacslabel.web.deps import SESSION_COOKIE, CurrentUser, DbSession, bearer_token, current_user

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Orthanc writes absolute URLs from the Forwarded host; a reserved name makes them unambiguous to rewrite
# (no data value can start with it) and independent of Orthanc's own address.
_UPSTREAM_HOST = "orthanc.pacslabel.invalid"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FRAME_LIST = re.compile(r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$")
_BULK_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*$")
# Above this many visible studies, QIDO asks Orthanc without a UID list and filters (URL length).
_UID_LIST_MAX = 100
_JSON = "application/dicom+json"
_PASSED_RESPONSE_HEADERS = ("content-type", "content-length", "content-location", "warning")
_STUDY_VIEW_TTL_S = 12 * 3600.0
# Upstream answers up to this size with a Content-Length are passed on in one piece (see _stream).
ONE_READ_MAX_BYTES = 8 * 1024 * 1024
# How long a credential's access snapshot serves WADO byte requests without a query (see AccessSnapshot).
ACCESS_SNAPSHOT_TTL_S = 10.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.orthanc_streaming = OrthancStreamingClient.from_settings(app.state.settings)
    try:
        yield
    finally:
        await app.state.orthanc_streaming.aclose()


router = APIRouter(prefix="/dicomweb", tags=["dicomweb"], lifespan=_lifespan)


# Dependencies and plumbing -----------------------------------------------------------------------------

def gateway_policy(user: CurrentUser, session: DbSession) -> AccessPolicy:
    """The access policy of the request's user (sync: runs in the thread pool). 403 for the ML role."""
    policy = AccessPolicy(session, user)
    policy.check_may_read_images()
    return policy


Policy = Annotated[AccessPolicy, Depends(gateway_policy)]


class _Snapshots:
    """Access snapshots per credential (hash), for at most ``ACCESS_SNAPSHOT_TTL_S``. Per process."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, AccessSnapshot]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> AccessSnapshot | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, snapshot: AccessSnapshot) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries = {k: e for k, e in self._entries.items() if e[0] >= now}
            self._entries[key] = (now + ACCESS_SNAPSHOT_TTL_S, snapshot)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


ACCESS_SNAPSHOTS = _Snapshots()


def forget_credential(secret: str) -> None:
    """Drop the cached snapshot of one credential at logout, so that the frame fast path, which trusts a
    cached snapshot, stops answering for that cookie at once rather than when the snapshot expires."""
    ACCESS_SNAPSHOTS.forget(hashlib.sha256(secret.encode()).hexdigest()[:16])


def invalidate_access() -> None:
    """Forget every cached access snapshot (after a task is reassigned or a user is deactivated)."""
    ACCESS_SNAPSHOTS.clear()


def _fresh_snapshot(request: Request) -> AccessSnapshot:
    """Authenticate and compute the user's snapshot from the database (sync; a few queries)."""
    with session_scope(request.app.state.sessionmaker) as session:
        policy = AccessPolicy(session, current_user(request, session))
        policy.check_may_read_images()
        snapshot = take_snapshot(policy)
    ACCESS_SNAPSHOTS.put(_credential_key(request), snapshot)
    return snapshot


async def gateway_snapshot(request: Request) -> AccessSnapshot:
    """The hot-path access check of WADO byte routes: a cached snapshot (answered on the event loop, no
    thread hop), or a fresh one computed in the thread pool (authentication + a few queries)."""
    if bearer_token(request) is not None or request.cookies.get(SESSION_COOKIE):
        cached = ACCESS_SNAPSHOTS.get(_credential_key(request))
        if cached is not None:
            return cached
    return await run_in_threadpool(_fresh_snapshot, request)  # raises 401 without a valid credential


Snapshot = Annotated[AccessSnapshot, Depends(gateway_snapshot)]


async def _require_visible(request: Request, snapshot: AccessSnapshot, study: str, series: str,
                           instance: str | None = None) -> AccessSnapshot:
    """404 unless the series (the instance, if given) is visible. A cached "no" is re-checked (it may be a SEG
    saved just now). Returns the snapshot that said yes."""
    if snapshot.can_see_instance(study, series, instance) if instance else snapshot.can_see_series(study, series):
        return snapshot
    fresh = await run_in_threadpool(_fresh_snapshot, request)
    if not (fresh.can_see_instance(study, series, instance) if instance else fresh.can_see_series(study, series)):
        raise _not_found()
    return fresh


async def _db(policy: AccessPolicy, work: Callable[[AccessPolicy], T]) -> T:
    """Run sync policy work in the thread pool, then release the DB connection (commit: authenticating
    a token stamps its last use)."""

    def run() -> T:
        try:
            result = work(policy)
            policy.session.commit()
            return result
        finally:
            policy.session.close()

    return await run_in_threadpool(run)


def _streaming(request: Request) -> OrthancStreamingClient:
    client = getattr(request.app.state, "orthanc_streaming", None)
    if client is None:  # the router's lifespan did not run (router mounted late): build one per app
        client = OrthancStreamingClient.from_settings(request.app.state.settings)
        request.app.state.orthanc_streaming = client
    return client


def _check_uid(*uids: str) -> None:
    for uid in uids:
        if len(uid) > 64 or not _UID.match(uid):
            raise BadInput("not a DICOM UID in the path")


def _not_found() -> NotFound:
    # One message whether the object is hidden or absent: the answer must not reveal existence.
    return NotFound("not found")


def _public_root(request: Request) -> str:
    public = request.app.state.settings.public_url
    base = (public.rstrip("/") + "/") if public else str(request.base_url)
    return base + "dicomweb/"


def _upstream_root(request: Request) -> str:
    return f"http://{_UPSTREAM_HOST}{_streaming(request).dicomweb_root}"


def _rewrite_urls(request: Request, body: bytes) -> bytes:
    return body.replace(b'"' + _upstream_root(request).encode(), b'"' + _public_root(request).encode())


def _upstream_headers(request: Request, *, accept: str | None = None) -> dict[str, str]:
    headers = {"Forwarded": f"host={_UPSTREAM_HOST};proto=http"}
    value = accept if accept is not None else request.headers.get("accept")
    if value:
        headers["Accept"] = value
    return headers


def _json_accepted(request: Request) -> None:
    accept = request.headers.get("accept", "")
    if accept and "json" not in accept and "*/*" not in accept:
        raise PacslabelError("this gateway answers QIDO-RS and metadata as application/dicom+json", 406)


def _error_from_upstream(status: int, body: bytes) -> PacslabelError:
    """Orthanc's 4xx is passed on with Orthanc's own explanation; anything else is a 502."""
    try:
        answer = json.loads(body)
        message = str(answer.get("Details") or answer.get("Message") or "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""
    if status == 404:
        return _not_found()
    if 400 <= status < 500 and status not in (401, 403, 407):
        return PacslabelError(message or f"Orthanc answered {status}", status)
    return OrthancError(f"Orthanc answered {status}" + (f": {message}" if message else ""),
                        upstream_status=status)


class DicomJsonResponse(Response):
    """What QIDO-RS and the metadata resources answer (PS3.18 8.7.3), also as the published OpenAPI says."""

    media_type = _JSON


def _json_response(request: Request, body: bytes, gzipped: bytes | None = None,
                   content_type: str = _JSON) -> Response:
    headers = {"Vary": "Accept-Encoding"}
    if filtering.accepts_gzip(request.headers.get("accept-encoding")):
        packed = gzipped if gzipped is not None else filtering.gzip_body(body)
        if packed is not None:
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type=content_type, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


async def _get_json(request: Request, path: str, params: list[tuple[str, str]] | None = None) -> Any:
    status, _, body = await _streaming(request).get_bytes(path, params=params,
                                                          headers=_upstream_headers(request, accept=_JSON))
    if status >= 300:
        raise _error_from_upstream(status, body)
    return json.loads(_rewrite_urls(request, body)) if body.strip() else []


async def _stream(request: Request, path: str, *, bulk: bool = False) -> Response:
    """Pass one upstream answer through: status, Content-Type verbatim, body streamed.

    An answer of known length up to ``ONE_READ_MAX_BYTES`` (a frame, an instance) is read in one call and
    sent as one body: per-chunk iteration through StreamingResponse cost more than the copy. Anything
    larger or of unknown length (a series, a study) is streamed in large pieces, never held whole."""
    accept = filtering.accept_for_orthanc(request.headers.get("accept"), bulk=bulk)
    stack = AsyncExitStack()
    upstream = await stack.enter_async_context(_streaming(request).stream(
        "GET", path, params=list(request.query_params.multi_items()),
        headers=_upstream_headers(request, accept=accept)))
    if upstream.status_code >= 300:
        try:
            body = await upstream.aread()
        finally:
            await stack.aclose()
        raise _error_from_upstream(upstream.status_code, body)
    length = upstream.content_length
    if length is not None and length <= ONE_READ_MAX_BYTES:
        async with stack:
            body = await upstream.aread()
        return Response(body, status_code=upstream.status_code, headers={
            k: v for k, v in upstream.headers.items() if k in _PASSED_RESPONSE_HEADERS and k != "content-length"})

    async def chunks() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in upstream.aiter_raw():
                yield chunk

    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_RESPONSE_HEADERS}
    return StreamingResponse(chunks(), status_code=upstream.status_code, headers=headers,
                             background=BackgroundTask(stack.aclose))


# Audit ---------------------------------------------------------------------------------------------------

class _StudyViews:
    """Which (credential, user, study) already has its ``study_view`` event, so that one viewing session
    records one event and not one per series or frame. Per process; bounded."""

    def __init__(self, ttl_s: float = _STUDY_VIEW_TTL_S, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: dict[tuple[str, int, str], float] = {}
        self._lock = threading.Lock()

    def first_view(self, credential: str, user_id: int, study: str) -> bool:
        now = time.monotonic()
        key = (credential, user_id, study)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.ttl_s:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.ttl_s}
                if len(self._seen) >= self.max_entries:
                    self._seen.clear()
            self._seen[key] = now
            return True


STUDY_VIEWS = _StudyViews()


def _credential_key(request: Request) -> str:
    secret = bearer_token(request) or request.cookies.get(SESSION_COOKIE) or ""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]  # keep in step with forget_credential


def _note_study_view(request: Request, policy: AccessPolicy, study: str) -> None:
    """Sync (inside :func:`_db`): record ``study_view`` on the first look at a study in a session."""
    if STUDY_VIEWS.first_view(_credential_key(request), policy.user.id, study):
        record(policy.session, policy.user.username, "study_view", "study", study)


# QIDO-RS -------------------------------------------------------------------------------------------------

def _query(request: Request, *, drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k.lower() not in drop]


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BadInput(f"{name} must be a non-negative integer")
    return int(value)


def _restrict_to_studies(params: list[tuple[str, str]], visible: set[str]) -> list[tuple[str, str]] | None:
    """Add a StudyInstanceUID list match to the upstream query (None: nothing can match)."""
    asked = [v for k, v in params if k in ("StudyInstanceUID", "0020000D")]
    params = [(k, v) for k, v in params if k not in ("StudyInstanceUID", "0020000D")]
    wanted = visible
    if asked:
        wanted = {uid for value in asked for uid in re.split(r"[,\\]", value) if uid} & visible
        if not wanted:
            return None
    elif len(visible) > _UID_LIST_MAX:
        return params
    return [*params, ("StudyInstanceUID", ",".join(sorted(wanted)))]


async def _search(request: Request, policy: AccessPolicy, path: str, *, study: str | None = None,
                  level: str) -> Response:
    """QIDO at ``level`` (studies|series|instances), below ``study`` if given: filtered, then paginated."""
    _json_accepted(request)
    limit, offset = _int_param(request, "limit"), _int_param(request, "offset")
    released = release_filters.parse(request.query_params.multi_items())  # ReferencedSeries, ReleasedSince
    if policy.is_admin and released is None:
        results = await _get_json(request, path, _query(request))
        if study is not None:
            await _db(policy, lambda p: _note_study_view(request, p, study))
        return _json_response(request, filtering.dumps(results))

    def access(p: AccessPolicy) -> tuple[set[str], dict[str, StudyGrant], dict[str, filtering.VisibleStudy] | None]:
        studies, grants = release_filters.scope(p, study, level, released)
        if study is not None and studies and level == "series":
            _note_study_view(request, p, study)
        # Orthanc's study results carry counts: when the candidates are few (a viewer asks for one study),
        # they are counted here, in the same trip to the database, rather than after Orthanc answered.
        counts = None
        if level == "studies" and not p.is_admin:
            candidates = _asked_studies(request, studies)
            if len(candidates) <= _UID_LIST_MAX:
                counts = visible_counts.study_counts(p, candidates)
        return studies, grants, counts

    studies, grants, counts = await _db(policy, access)
    if not studies:
        return _json_response(request, b"[]")
    params: list[tuple[str, str]] | None = _query(request, drop=("limit", "offset", *release_filters.PARAMS))
    if study is None:
        params = _restrict_to_studies(params or [], studies)
    if params is None:
        return _json_response(request, b"[]")
    if level != "studies":
        params.append(("includefield", "0020000D,0020000E"))
    results = await _get_json(request, path, params)
    if level == "studies":
        results = filtering.filter_studies(results, studies)
    else:
        results = filtering.filter_instances(
            results, lambda st, se, sop: st in grants and (grants[st].can_see_instance(se, sop) if sop
                                                           else grants[st].can_see_series(se)), study)
    results = filtering.paginate(results, limit, offset)
    if counts is not None:
        results = filtering.set_visible_counts(results, counts, {})
    else:
        results = await _recount(policy, results, study)
    return _json_response(request, filtering.dumps(results))


def _asked_studies(request: Request, visible: set[str]) -> set[str]:
    """The visible studies a QIDO query can match, as far as its StudyInstanceUID match says."""
    asked = [v for k, v in request.query_params.multi_items() if k in ("StudyInstanceUID", "0020000D")]
    if not asked:
        return visible
    return {uid for value in asked for uid in re.split(r"[,\\]", value) if uid} & visible


async def _recount(policy: AccessPolicy, results: list[dict[str, Any]], study: str | None, *,
                   metadata: bool = False) -> list[dict[str, Any]]:
    """Counts and ModalitiesInStudy as the user may see them (``visible_counts.py``); no database work when
    no result carries one (and none for admins, who keep Orthanc's values)."""
    # In QIDO only the ML role has partly visible series; for other roles a series count is Orthanc's, right.
    if policy.is_admin or not (filtering.studies_with_counts(results, study)
                               or ((metadata or policy.is_ml) and filtering.carries_counts(results))):
        return results
    return await _db(policy, lambda p: visible_counts.recount(p, results, study, series_from_database=metadata))


async def _recount_metadata(policy: AccessPolicy, plain: bytes, gzipped: bytes | None, study: str
                            ) -> tuple[bytes, bytes | None]:
    """A metadata body (bytes, with its cached gzip) with counts as the user may see them. Stored files
    seldom carry a count, so the body is parsed only when one of the tags appears in it."""
    if policy.is_admin or not filtering.mentions_counts(plain):
        return plain, gzipped
    return filtering.dumps(await _recount(policy, json.loads(plain), study, metadata=True)), None


@router.get("/studies", response_class=DicomJsonResponse)
async def search_for_studies(request: Request, policy: Policy) -> Response:
    return await _search(request, policy, "studies", level="studies")


@router.get("/series", response_class=DicomJsonResponse)
async def search_for_series(request: Request, policy: Policy) -> Response:
    return await _search(request, policy, "series", level="series")


@router.get("/instances", response_class=DicomJsonResponse)
async def search_for_instances(request: Request, policy: Policy) -> Response:
    return await _search(request, policy, "instances", level="instances")


@router.get("/studies/{study}/series", response_class=DicomJsonResponse)
async def search_for_series_in_study(study: str, request: Request, policy: Policy) -> Response:
    _check_uid(study)
    return await _search(request, policy, f"studies/{study}/series", study=study, level="series")


@router.get("/studies/{study}/instances", response_class=DicomJsonResponse)
async def search_for_instances_in_study(study: str, request: Request, policy: Policy) -> Response:
    _check_uid(study)
    return await _search(request, policy, f"studies/{study}/instances", study=study, level="instances")


@router.get("/studies/{study}/series/{series}/instances", response_class=DicomJsonResponse)
async def search_for_instances_in_series(study: str, series: str, request: Request, policy: Policy) -> Response:
    _check_uid(study, series)
    _json_accepted(request)
    released = release_filters.parse(request.query_params.multi_items())
    visible, only = await _db(policy, lambda p: release_filters.series_access(p, study, series, released))
    if not visible:
        return _json_response(request, b"[]")
    if only is None:  # the series is visible whole: Orthanc's own limit/offset are right
        results = await _get_json(request, f"studies/{study}/series/{series}/instances",
                                  _query(request, drop=release_filters.PARAMS))
        return _json_response(request, filtering.dumps(await _recount(policy, results, study)))
    results = await _get_json(request, f"studies/{study}/series/{series}/instances",
                              _query(request, drop=("limit", "offset", *release_filters.PARAMS)))
    results = [r for r in results if filtering.tag_value(r, filtering.SOP_INSTANCE_UID) in only]
    limit, offset = _int_param(request, "limit"), _int_param(request, "offset")
    results = await _recount(policy, filtering.paginate(results, limit, offset), study)
    return _json_response(request, filtering.dumps(results))


# WADO-RS: metadata ---------------------------------------------------------------------------------------

async def _require_series(policy: AccessPolicy, study: str, series: str, request: Request | None = None,
                          instance: str | None = None) -> set[str] | None:
    """404 unless the series (the instance, if given) is visible; returns the only visible instances of a
    partly visible series (None: all)."""
    only, _ = await _require_series_landed(policy, study, series, request, instance=instance, landed=False)
    return only


async def _require_series_landed(policy: AccessPolicy, study: str, series: str, request: Request | None = None,
                                 *, instance: str | None = None, landed: bool = True
                                 ) -> tuple[set[str] | None, int | None]:
    """:func:`_require_series`, and in the same trip to the database how many instances of the series ingest
    has landed in Orthanc (None: not an ingested series, e.g. an annotation series)."""
    def check(p: AccessPolicy) -> tuple[bool, set[str] | None, int | None]:
        visible = p.can_see_instance(study, series, instance) if instance else p.can_see_series(study, series)
        if visible and request is not None:
            _note_study_view(request, p, study)
        count = _landed_instances(p.session, study, series) if visible and landed else None
        return visible, p.restricted_instances(study).get(series), count

    visible, only, count = await _db(policy, check)
    if not visible:
        raise _not_found()
    return only, count


def _landed_instances(session: Session, study: str, series: str) -> int | None:
    """How many instances of the series are recorded as stored in Orthanc, by ingest (the catalogue) or as
    annotation versions (one instance each), whichever process stored them; None when neither knows the series.
    Both are recorded after Orthanc's store, so never more than Orthanc holds."""
    count = landed_instances(session, series)
    if count is None:
        count = versions_in_series(session, study, series) or None
    return count


async def _series_metadata(request: Request, study: str, series: str) -> CachedMetadata:
    entry = SERIES_METADATA_CACHE.get(study, series)
    return entry if entry is not None else await _fetch_series_metadata(request, study, series)


async def _fetch_series_metadata(request: Request, study: str, series: str) -> CachedMetadata:
    generation = SERIES_METADATA_CACHE.generation(study, series)
    status, _, body = await _streaming(request).get_bytes(
        f"studies/{study}/series/{series}/metadata", headers=_upstream_headers(request, accept=_JSON))
    if status >= 300:
        raise _error_from_upstream(status, body)
    return SERIES_METADATA_CACHE.put(study, series, body, generation)


def _render(request: Request, entry: CachedMetadata, *, packed: bool) -> tuple[bytes, bytes | None]:
    """The entry as served to this public base: URLs rewritten and compact, and gzipped when ``packed``
    (a client that takes gzip); both cached. A client that does not take gzip never pays for it."""
    base = _public_root(request)
    rendering = entry.renderings.get(base)
    plain, gzipped = rendering if rendering is not None else (_rewrite_urls(request, compact_json(entry.body)), None)
    if packed and gzipped is None:
        gzipped = filtering.gzip_body(plain)
    if rendering is None or rendering[1] is not gzipped:
        SERIES_METADATA_CACHE.add_rendering(entry, base, plain, gzipped)
    return plain, gzipped


@router.get("/studies/{study}/series/{series}/metadata", response_class=DicomJsonResponse)
async def retrieve_series_metadata(study: str, series: str, request: Request, policy: Policy) -> Response:
    _check_uid(study, series)
    _json_accepted(request)
    # Orthanc reads every file of the series (tens of ms on a first open): asked while the database says
    # whether the user may see it; the answer is dropped unread when not.
    entry = SERIES_METADATA_CACHE.get(study, series)
    fetch = asyncio.ensure_future(_fetch_series_metadata(request, study, series)) if entry is None else None
    try:
        only, landed = await _require_series_landed(policy, study, series, request)
    except BaseException:
        if fetch is not None:
            _drop(fetch)
        raise
    if fetch is not None:
        entry = await fetch
    elif entry is not None and landed is not None and landed > entry.instances:
        # Instances landed since the entry was fetched (by ingest, or a save in another web process).
        SERIES_METADATA_CACHE.invalidate_series(study, series)
        entry = await _fetch_series_metadata(request, study, series)
    assert entry is not None
    packed = filtering.accepts_gzip(request.headers.get("accept-encoding"))
    plain, gzipped = await run_in_threadpool(_render, request, entry, packed=packed)
    if only is not None:
        plain, gzipped = filtering.keep_instances(plain, only), None
    plain, gzipped = await _recount_metadata(policy, plain, gzipped, study)
    return _json_response(request, plain, gzipped)


def _drop(task: asyncio.Future[Any]) -> None:
    """Cancel a speculative request; an error it already ended with is not reported (nobody asked for it)."""
    task.cancel()
    if task.done() and not task.cancelled():
        task.exception()


async def _visible_study_series(request: Request, policy: AccessPolicy, study: str, *, audit: bool
                                ) -> tuple[list[str], bool, dict[str, set[str]]]:
    """Series of the study that exist and are visible, whether that is all of the study's series, and the
    partly visible ones with their visible instances. 404 when none is visible."""

    def access(p: AccessPolicy) -> tuple[set[str] | None, dict[str, set[str]]]:
        if not p.can_see_study(study):
            return set(), {}
        if audit:
            _note_study_view(request, p, study)
        return p.visible_series(study), p.restricted_instances(study)

    visible, partly = await _db(policy, access)
    if visible is not None and not visible:
        raise _not_found()
    listed = await _get_json(request, f"studies/{study}/series", [("includefield", "0020000E")])
    existing = [uid for r in listed if (uid := filtering.tag_value(r, filtering.SERIES_INSTANCE_UID))]
    shown = existing if visible is None else [uid for uid in existing if uid in visible]
    if not shown:
        raise _not_found()
    return shown, len(shown) == len(existing), partly


@router.get("/studies/{study}/metadata", response_class=DicomJsonResponse)
async def retrieve_study_metadata(study: str, request: Request, policy: Policy) -> Response:
    # Composed from the (cached) series metadata of the visible series: Orthanc's study metadata would
    # carry hidden series, and is as slow as all series together.
    _check_uid(study)
    _json_accepted(request)
    shown, _, partly = await _visible_study_series(request, policy, study, audit=True)
    landed = await _db(policy, lambda p: {series: _landed_instances(p.session, study, series) for series in shown})
    parts = []
    for series in shown:
        entry = await _series_metadata(request, study, series)
        if (count := landed.get(series)) is not None and count > entry.instances:  # see retrieve_series_metadata
            SERIES_METADATA_CACHE.invalidate_series(study, series)
            entry = await _fetch_series_metadata(request, study, series)
        plain, _ = await run_in_threadpool(_render, request, entry, packed=False)
        if series in partly:
            plain = filtering.keep_instances(plain, partly[series])
        inner = plain.strip()[1:-1].strip()
        if inner:
            parts.append(inner)
    body, _ = await _recount_metadata(policy, b"[" + b",".join(parts) + b"]", None, study)
    return _json_response(request, body)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", response_class=DicomJsonResponse)
async def retrieve_instance_metadata(study: str, series: str, instance: str, request: Request,
                                     policy: Policy) -> Response:
    _check_uid(study, series, instance)
    _json_accepted(request)
    await _require_series(policy, study, series, instance=instance)
    results = await _get_json(request, f"studies/{study}/series/{series}/instances/{instance}/metadata")
    return _json_response(request, filtering.dumps(await _recount(policy, results, study, metadata=True)))


# WADO-RS: bytes ------------------------------------------------------------------------------------------

@router.get("/studies/{study}")
async def retrieve_study(study: str, request: Request, policy: Policy) -> Response:
    _check_uid(study)
    shown, complete, partly = await _visible_study_series(request, policy, study, audit=False)
    if complete and not partly:
        return await _stream(request, f"studies/{study}")
    return await _retrieve_together(request, [
        path for series in shown
        for path in ([f"studies/{study}/series/{series}/instances/{sop}" for sop in sorted(partly[series])]
                     if series in partly else [f"studies/{study}/series/{series}"])])


async def _retrieve_together(request: Request, paths: list[str]) -> Response:
    """WADO of a partly visible study (or series): the multipart bodies of the visible series (instances),
    one after the other, re-framed into one multipart body (streamed; each is requested when the previous
    one is done)."""
    client = _streaming(request)
    headers = _upstream_headers(request, accept=filtering.accept_for_orthanc(request.headers.get("accept"),
                                                                             bulk=False))
    # The first series is opened here so that its Content-Type (type, transfer syntax) and any error
    # answer reach the client before the 200 is committed.
    stack = AsyncExitStack()
    first = await stack.enter_async_context(client.stream("GET", paths[0], headers=headers))
    if first.status_code >= 300:
        body = await first.aread()
        await stack.aclose()
        raise _error_from_upstream(first.status_code, body)
    content_type = first.headers.get("content-type", "")
    first_boundary = filtering.multipart_boundary(content_type)
    if first_boundary is None:
        await stack.aclose()
        raise OrthancError("Orthanc answered a study retrieve without a multipart boundary")
    boundary = filtering.new_boundary()

    async def bodies() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield first_boundary, first.aiter_raw()
        for path in paths[1:]:
            async with client.stream("GET", path, headers=headers) as upstream:
                part_boundary = filtering.multipart_boundary(upstream.headers.get("content-type", ""))
                if upstream.status_code >= 300 or part_boundary is None:
                    # Too late for a status: end the body; the client sees fewer parts.
                    logger.warning("study retrieve: Orthanc answered %d for one series", upstream.status_code)
                    continue
                yield part_boundary, upstream.aiter_raw()

    async def chunks() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in filtering.reframe_multipart(bodies(), boundary):
                yield chunk

    return StreamingResponse(chunks(), headers={"Content-Type": filtering.with_boundary(content_type, boundary)},
                             background=BackgroundTask(stack.aclose))


@router.get("/studies/{study}/series/{series}")
async def retrieve_series(study: str, series: str, request: Request, snapshot: Snapshot) -> Response:
    _check_uid(study, series)
    seen = await _require_visible(request, snapshot, study, series)
    only = seen.restricted_instances(study, series)
    if only is not None:  # a label series beside its drafts (ML role): the released instances only
        return await _retrieve_together(request, [f"studies/{study}/series/{series}/instances/{sop}"
                                                  for sop in sorted(only)])
    return await _stream(request, f"studies/{study}/series/{series}")


@router.get("/studies/{study}/series/{series}/rendered")
async def retrieve_series_rendered(study: str, series: str, request: Request, snapshot: Snapshot) -> Response:
    _check_uid(study, series)
    if (await _require_visible(request, snapshot, study, series)).restricted_instances(study, series) is not None:
        raise _not_found()  # a rendering of the whole series would show the hidden instances
    return await _stream(request, f"studies/{study}/series/{series}/rendered")


@router.get("/studies/{study}/series/{series}/instances/{instance}")
async def retrieve_instance(study: str, series: str, instance: str, request: Request, snapshot: Snapshot) -> Response:
    _check_uid(study, series, instance)
    await _require_visible(request, snapshot, study, series, instance)
    return await _stream(request, f"studies/{study}/series/{series}/instances/{instance}")


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
async def retrieve_instance_rendered(study: str, series: str, instance: str, request: Request,
                                     snapshot: Snapshot) -> Response:
    _check_uid(study, series, instance)
    await _require_visible(request, snapshot, study, series, instance)
    return await _stream(request, f"studies/{study}/series/{series}/instances/{instance}/rendered")


def _check_frames(frames: str) -> None:
    if not _FRAME_LIST.match(frames):
        raise BadInput("frame numbers must be a comma-separated list of positive integers")


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
async def retrieve_instance_frames(study: str, series: str, instance: str, frames: str, request: Request,
                                   snapshot: Snapshot) -> Response:
    _check_uid(study, series, instance)
    _check_frames(frames)
    await _require_visible(request, snapshot, study, series, instance)
    return await _stream(request, f"studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
                         bulk=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered")
async def retrieve_instance_frames_rendered(study: str, series: str, instance: str, frames: str,
                                            request: Request, snapshot: Snapshot) -> Response:
    _check_uid(study, series, instance)
    _check_frames(frames)
    await _require_visible(request, snapshot, study, series, instance)
    return await _stream(request,
                         f"studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered")


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag_path:path}")
async def retrieve_bulkdata(study: str, series: str, instance: str, tag_path: str, request: Request,
                            snapshot: Snapshot) -> Response:
    _check_uid(study, series, instance)
    if not _BULK_PATH.match(tag_path):
        raise BadInput("not a bulk data tag path")
    await _require_visible(request, snapshot, study, series, instance)
    return await _stream(request, f"studies/{study}/series/{series}/instances/{instance}/bulk/{tag_path}",
                         bulk=True)
