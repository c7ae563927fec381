"""The async, streaming half of the one door to Orthanc: DICOMweb requests whose bodies are passed through.

:class:`OrthancClient` (client.py) is synchronous and materialises answers; the gateway needs to pass frames,
instances and whole series through without holding them in memory, from ``async def`` routes. This client
does only that: it opens a streamed request on Orthanc's DICOMweb root and maps transport failures to the
same errors as the sync client (:class:`OrthancUnavailable` 503, timeout 504). Status handling of the
answer is the caller's, because a proxy passes 4xx through.

Upstream headers are a whitelist built by the caller; this client always adds ``Accept-Encoding: identity``
(gzip costs ~10x latency on frames, performance notes §5) and never reads proxy variables.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from pacslabel.orthanc.client import OrthancError, OrthancUnavailable, _without_userinfo

if TYPE_CHECKING:
    from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

_MAX_CONNECT_TIMEOUT_S = 5.0


class OrthancStreamingClient:
    """Streamed DICOMweb requests to one Orthanc (``base_url`` = its DICOMweb root, with trailing slash)."""

    def __init__(self, url: str, username: str, password: str, *, dicomweb_root: str = "/dicom-web/",
                 timeout: float = 30.0, pool_size: int = 32) -> None:
        self.url = url.rstrip("/")
        self.dicomweb_root = "/" + dicomweb_root.strip("/") + "/"
        self.base_url = self.url + self.dicomweb_root
        self.timeout = timeout
        self._display_url = _without_userinfo(self.url)
        # Read timeout applies between chunks, not to the whole body: a 150 MB series may take seconds.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            auth=(username, password) if password else None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, _MAX_CONNECT_TIMEOUT_S)),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            headers={"Accept-Encoding": "identity"},
            trust_env=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 32) -> OrthancStreamingClient:
        return cls(settings.orthanc_url, settings.orthanc_username, settings.secret("orthanc_password"),
                   dicomweb_root=settings.orthanc_dicomweb_root, timeout=settings.orthanc_timeout_s,
                   pool_size=pool_size)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"OrthancStreamingClient({self._display_url!r})"

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, params: Mapping[str, str] | list[tuple[str, str]] | None = None,
                     headers: Mapping[str, str] | None = None, content: AsyncIterator[bytes] | bytes | None = None,
                     ) -> AsyncIterator[httpx.Response]:
        """Open ``method {root}{path}``; the body is read by the caller inside the ``async with``.

        ``path`` is relative to the DICOMweb root (``studies/1.2/series``) and must not start with a slash.
        Raises :class:`OrthancUnavailable` when Orthanc cannot be reached (503) or does not answer in time (504).
        """
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"not a relative DICOMweb path: {path[:80]!r}")
        what = f"{method} {self.dicomweb_root}{path.split('/', 1)[0]}"
        request = self._client.build_request(method, path, params=params, headers=headers, content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise OrthancUnavailable(
                f"Orthanc at {self._display_url} did not answer {what} within {self.timeout:g} s", 504) from exc
        except httpx.TransportError as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise OrthancUnavailable(f"Orthanc at {self._display_url} is unreachable ({what}): {detail}") from exc
        logger.debug("orthanc %s -> %d", what, response.status_code)
        try:
            yield response
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise OrthancError(f"Orthanc broke off {what}: {type(exc).__name__}") from exc
        finally:
            await response.aclose()

    async def get_bytes(self, path: str, *, params: Mapping[str, str] | list[tuple[str, str]] | None = None,
                        headers: Mapping[str, str] | None = None) -> tuple[int, httpx.Headers, bytes]:
        """A whole (small) answer: status, headers and body. For JSON the gateway must filter or rewrite."""
        async with self.stream("GET", path, params=params, headers=headers) as response:
            body = await response.aread()
            return response.status_code, response.headers, body
