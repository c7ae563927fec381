"""The async, streaming half of the one door to Orthanc: DICOMweb requests whose bodies are passed through.

:class:`OrthancClient` (client.py) is synchronous and materialises answers; the gateway needs to pass frames,
instances and whole series through without holding them in memory, from ``async def`` routes. This client
does only that: it opens a request on Orthanc's DICOMweb root and maps transport failures to the same errors
as the sync client (:class:`OrthancUnavailable` 503, timeout 504). Status handling of the answer is the
caller's, because a proxy passes 4xx through.

Why not httpx: a viewer load is hundreds of ~0.5 MB frame requests, and httpx (httpcore + h11 + anyio
streams, 64 KB reads) capped the gateway at 85-190 frames/s on this hardware while Orthanc alone serves more
(bench/RESULTS.md). The upstream is one known HTTP/1.1 server on a trusted hop, so this module keeps a small
pool of keep-alive ``asyncio`` connections per event loop and speaks the little HTTP/1.1 a DICOMweb proxy
needs: a request line with a whitelist of headers, and a response read as status line + headers, then a
body delimited by Content-Length, chunked transfer coding or the end of the connection. A known-length body
can be read in one call (:meth:`UpstreamResponse.aread`); anything else is read in large pieces.

A pooled connection that Orthanc closed meanwhile (keep-alive timeout, restart) fails on first use; a GET is
then retried once on a new connection, which is safe because nothing was received yet.

Upstream headers are a whitelist built by the caller; this client always adds ``Accept-Encoding: identity``
(gzip costs ~10x latency on frames, performance notes §5) and never reads proxy variables.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from pacslabel.orthanc.client import OrthancError, OrthancUnavailable, _without_userinfo

if TYPE_CHECKING:
    from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

_MAX_CONNECT_TIMEOUT_S = 5.0
# Reads of a streamed body: large pieces (a frame is ~0.5 MB) keep the per-piece Python cost negligible.
READ_SIZE = 1024 * 1024
# The StreamReader buffers up to twice this before it pauses the socket (back pressure for slow clients).
_READER_LIMIT = 1024 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "host", "content-length"})


class _StaleConnection(Exception):
    """A reused keep-alive connection was found closed before any byte of the answer arrived."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reused: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = reused

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing() and self.reader.exception() is None

    def close(self) -> None:
        self.writer.close()


class _LoopPool:
    """Idle connections and the concurrency bound of one event loop (asyncio objects belong to one loop)."""

    def __init__(self, size: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(size)


class UpstreamResponse:
    """Status, headers (lower-case names; repeated ones joined with ", ") and the body, read by the caller.

    The connection goes back to the pool only when the body was read to its end; an answer given up half
    way closes its connection (the rest of the body would otherwise be read as the next answer).
    """

    def __init__(self, connection: _Connection, status_code: int, reason: str, headers: dict[str, str],
                 *, head_only: bool, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout  # per read, not for the whole body: a 150 MB series may take seconds
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.keep_alive = headers.get("connection", "").lower() != "close"
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self.content_length: int | None = None
        if head_only or status_code in (204, 304) or 100 <= status_code < 200:
            self.content_length = 0
        elif not self.chunked and length is not None:
            if not length.strip().isdigit():
                raise OrthancError(f"Orthanc answered an invalid Content-Length {length[:40]!r}")
            self.content_length = int(length)
        self._remaining = self.content_length  # None: chunked or until end of connection
        self._done = self.content_length == 0
        self._consumed = False

    @property
    def complete(self) -> bool:
        return self._done

    async def aread(self) -> bytes:
        """The whole body (for known-length answers a single read)."""
        if self._consumed:
            raise RuntimeError("the body was already read")
        if self.content_length is not None:
            self._consumed = True
            body = b""
            if self.content_length:
                async with asyncio.timeout(self._timeout):
                    body = await self._connection.reader.readexactly(self.content_length)
            self._remaining = 0
            self._done = True
            return body
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aiter_raw(self, read_size: int = READ_SIZE) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``read_size`` bytes, as they arrive."""
        if self._consumed:
            raise RuntimeError("the body was already read")
        self._consumed = True
        reader = self._connection.reader
        if self.content_length is not None:
            while self._remaining:
                async with asyncio.timeout(self._timeout):
                    piece = await reader.read(min(self._remaining, read_size))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", self._remaining)
                self._remaining -= len(piece)
                yield piece
        elif self.chunked:
            async for piece in self._chunks(read_size):
                yield piece
        else:  # delimited by the end of the connection
            self.keep_alive = False
            while True:
                async with asyncio.timeout(self._timeout):
                    piece = await reader.read(read_size)
                if not piece:
                    break
                yield piece
        self._done = True

    async def _chunks(self, read_size: int) -> AsyncIterator[bytes]:
        reader = self._connection.reader
        while True:
            async with asyncio.timeout(self._timeout):
                line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise OrthancError("Orthanc answered a malformed chunked body") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, if any
                    pass
                return
            while size:
                async with asyncio.timeout(self._timeout):
                    piece = await reader.read(min(size, read_size))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", size)
                size -= len(piece)
                yield piece
            if await reader.readexactly(2) != b"\r\n":
                raise OrthancError("Orthanc answered a malformed chunked body")


class OrthancStreamingClient:
    """Requests to one Orthanc's DICOMweb root over a pool of keep-alive connections (per event loop)."""

    def __init__(self, url: str, username: str, password: str, *, dicomweb_root: str = "/dicom-web/",
                 timeout: float = 30.0, pool_size: int = 32) -> None:
        self.url = url.rstrip("/")
        self.dicomweb_root = "/" + dicomweb_root.strip("/") + "/"
        self.base_url = self.url + self.dicomweb_root
        self.timeout = timeout
        self.connect_timeout = min(timeout, _MAX_CONNECT_TIMEOUT_S)
        self.pool_size = pool_size
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            # Orthanc is a local hop (the managed Orthanc listens on 127.0.0.1); TLS would be a proxy's job.
            raise ValueError(f"the streaming client speaks plain http to Orthanc, not {self._safe(url)!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._display_url = _without_userinfo(self.url)
        host_header = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        fixed = [f"Host: {host_header}", "Accept-Encoding: identity"]
        if password:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            fixed.append(f"Authorization: Basic {token}")
        self._fixed_headers = "\r\n".join(fixed) + "\r\n"
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
        self.connections_opened = 0  # for tests and benchmarks: how often the pool had to dial

    @staticmethod
    def _safe(url: str) -> str:
        return _without_userinfo(url)

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 32) -> OrthancStreamingClient:
        return cls(settings.orthanc_url, settings.orthanc_username, settings.secret("orthanc_password"),
                   dicomweb_root=settings.orthanc_dicomweb_root, timeout=settings.orthanc_timeout_s,
                   pool_size=pool_size)

    async def aclose(self) -> None:
        """Close the idle connections of the running loop's pool (connections in use close when done)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        while pool is not None and pool.idle:
            pool.idle.popleft().close()

    def __repr__(self) -> str:
        return f"OrthancStreamingClient({self._display_url!r})"

    def idle_connections(self) -> int:
        pool = self._pools.get(asyncio.get_running_loop())
        return len(pool.idle) if pool is not None else 0

    # Requests ---------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, params: Mapping[str, str] | list[tuple[str, str]] | None = None,
                     headers: Mapping[str, str] | None = None, content: bytes | None = None,
                     rest: bool = False) -> AsyncIterator[UpstreamResponse]:
        """Send ``method {root}{path}``; the body is read by the caller inside the ``async with``.

        ``path`` is relative to the DICOMweb root (``studies/1.2/series``), or with ``rest=True`` to Orthanc's
        own REST root (``instances/{id}/frames/0/raw``), and must not start with a slash.
        Raises :class:`OrthancUnavailable` when Orthanc cannot be reached (503) or does not answer in time (504),
        and :class:`OrthancError` (502) when it breaks off an answer.
        """
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"not a relative DICOMweb path: {path[:80]!r}")
        root = "/" if rest else self.dicomweb_root
        what = f"{method} {root}{path.split('/', 1)[0]}"
        head = self._request_head(method, root + path, params, headers, content)
        pool = self._pool()
        async with pool.slots:
            response = await self._send(pool, method, head, content, what)
            try:
                yield response
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                response._connection.close()
                raise OrthancError(f"Orthanc broke off {what}: {type(exc).__name__}") from exc
            except TimeoutError as exc:
                response._connection.close()
                raise OrthancUnavailable(f"Orthanc at {self._display_url} stalled during {what}", 504) from exc
            except BaseException:
                response._connection.close()
                raise
            self._release(pool, response)

    async def get_bytes(self, path: str, *, params: Mapping[str, str] | list[tuple[str, str]] | None = None,
                        headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A whole (small) answer: status, headers and body. For JSON the gateway must filter or rewrite."""
        async with self.stream("GET", path, params=params, headers=headers) as response:
            body = await response.aread()
            return response.status_code, response.headers, body

    # Internals --------------------------------------------------------------------------------------------

    def _pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _LoopPool(self.pool_size)
        return pool

    def _request_head(self, method: str, target: str, params: Mapping[str, str] | list[tuple[str, str]] | None,
                      headers: Mapping[str, str] | None, content: bytes | None) -> bytes:
        if params:
            query = urlencode(list(params.items()) if isinstance(params, Mapping) else params)
            if query:
                target += "?" + query
        lines = [f"{method} {target} HTTP/1.1\r\n", self._fixed_headers]
        for name, value in (headers or {}).items():
            if name.lower() in _HOP_BY_HOP or name.lower() in ("authorization", "accept-encoding"):
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name[:40]!r} contains a line break")
            lines.append(f"{name}: {value}\r\n")
        if content is not None:
            lines.append(f"Content-Length: {len(content)}\r\n")
        lines.append("\r\n")
        # latin-1: what HTTP/1.1 allows in headers; a URL is ASCII once quoted (paths are UIDs, checked by callers).
        return "".join(lines).encode("latin-1")

    async def _send(self, pool: _LoopPool, method: str, head: bytes, content: bytes | None,
                    what: str) -> UpstreamResponse:
        for attempt in (1, 2):
            connection = await self._checkout(pool, what, fresh=attempt == 2)
            try:
                connection.writer.write(head + content if content else head)
                async with asyncio.timeout(self.timeout):
                    return await self._read_head(connection, method)
            except _StaleConnection:
                connection.close()
                if method in _IDEMPOTENT and attempt == 1:
                    logger.debug("orthanc: a pooled connection was closed upstream; retrying %s", what)
                    continue
                raise OrthancUnavailable(f"Orthanc at {self._display_url} closed the connection ({what})") from None
            except TimeoutError:
                connection.close()
                raise OrthancUnavailable(
                    f"Orthanc at {self._display_url} did not answer {what} within {self.timeout:g} s", 504) from None
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
                connection.close()
                if connection.reused and method in _IDEMPOTENT and attempt == 1:
                    continue
                raise OrthancUnavailable(f"Orthanc at {self._display_url} is unreachable ({what}): "
                                         f"{type(exc).__name__}") from exc
            except BaseException:
                connection.close()
                raise
        raise AssertionError("unreachable")

    async def _checkout(self, pool: _LoopPool, what: str, *, fresh: bool) -> _Connection:
        while pool.idle and not fresh:
            connection = pool.idle.pop()  # most recently used: the least likely to have timed out upstream
            if connection.usable():
                connection.reused = True
                return connection
            connection.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=_READER_LIMIT)
        except TimeoutError:
            raise OrthancUnavailable(f"Orthanc at {self._display_url} did not accept a connection ({what}) "
                                     f"within {self.connect_timeout:g} s", 504) from None
        except OSError as exc:
            detail = exc.strerror or type(exc).__name__
            raise OrthancUnavailable(f"Orthanc at {self._display_url} is unreachable ({what}): {detail}") from None
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def _read_head(self, connection: _Connection, method: str) -> UpstreamResponse:
        reader = connection.reader
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and connection.reused:
                    raise _StaleConnection from None
                raise
            except ConnectionResetError:
                if connection.reused:
                    raise _StaleConnection from None
                raise
            if len(raw) > _MAX_HEAD_BYTES:
                raise OrthancError("Orthanc answered with oversized headers")
            status_line, _, header_block = raw.decode("latin-1").partition("\r\n")
            version, _, rest = status_line.partition(" ")
            code_text, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not code_text.isdigit():
                raise OrthancError(f"Orthanc answered something that is not HTTP/1.x: {status_line[:60]!r}")
            status = int(code_text)
            headers: dict[str, str] = {}
            for line in header_block.split("\r\n"):
                if not line:
                    continue
                name, sep, value = line.partition(":")
                if not sep:
                    raise OrthancError(f"Orthanc answered a malformed header line {line[:60]!r}")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            response = UpstreamResponse(connection, status, reason, headers, head_only=method == "HEAD",
                                      timeout=self.timeout)
            if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
                response.keep_alive = False
            return response

    def _release(self, pool: _LoopPool, response: UpstreamResponse) -> None:
        connection = response._connection
        if (response.complete and response.keep_alive and connection.usable()
                and len(pool.idle) < self.pool_size and not connection.reader._buffer):  # type: ignore[attr-defined]
            pool.idle.append(connection)
        else:
            connection.close()
