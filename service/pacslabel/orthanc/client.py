"""The one door to Orthanc: REST (through pyorthanc's httpx client) and DICOMweb (through dicomweb-client).

Every other pacslabel module talks to Orthanc through :class:`OrthancClient`. It owns the connection pools,
the timeouts and the error mapping:

- connection refused, reset or timed out  -> :class:`OrthancUnavailable` (503, or 504 for a timeout);
- any non-2xx answer                       -> :class:`OrthancError` (502) with Orthanc's status and its own
  error text (``OrthancError``/``Details`` of its JSON), never a dataset value, a query string or the
  credentials.

Both pools send ``Accept-Encoding: identity``: gzip costs ~10x latency on frames and httpx/requests ask for
it by default (shared/notes/performance.md §4-§5). Both ignore proxy environment variables, so that
loopback traffic to Orthanc never goes through a proxy.

Thread-safety: one client may be shared by threads (httpx.Client and a requests.Session with a pooled
adapter are); processes each build their own with :meth:`OrthancClient.from_settings`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from pyorthanc import Orthanc
from requests.adapters import HTTPAdapter

from pacslabel.errors import PacslabelError

if TYPE_CHECKING:
    from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Orthanc identifiers are SHA-1 digests written as five dash-separated groups of 8 hex digits. Checking
# them keeps a caller's string from becoming another REST path ("../tools/...").
_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_STORE_STATUSES = ("Success", "AlreadyStored")
# A connect to loopback either succeeds or is refused at once; the bound matters for a remote Orthanc.
_MAX_CONNECT_TIMEOUT_S = 5.0
_PROBE_TIMEOUT_S = 2.0


class OrthancError(PacslabelError):
    """Orthanc answered, but not with success. ``upstream_status`` is Orthanc's HTTP status."""

    status_code = 502

    def __init__(self, message: str, status_code: int | None = None, *, upstream_status: int | None = None):
        super().__init__(message, status_code)
        self.upstream_status = upstream_status


class OrthancUnavailable(OrthancError):
    """Orthanc could not be reached, or did not answer in time (status 504), or refused our credentials."""

    status_code = 503


@dataclass(frozen=True)
class StoredInstance:
    """Orthanc's answer to ``POST /instances``."""

    orthanc_id: str
    status: Literal["Success", "AlreadyStored"]
    sop_instance_uid: str | None
    series_orthanc_id: str | None
    study_orthanc_id: str | None


class OrthancClient:
    """Typed access to one Orthanc: REST under ``url``, DICOMweb under ``url + dicomweb_root``."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        dicomweb_root: str = "/dicom-web/",
        pool_size: int = 8,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.dicomweb_root = "/" + dicomweb_root.strip("/") + "/"
        self.username = username
        self._display_url = _without_userinfo(self.url)
        connect_timeout = min(timeout, _MAX_CONNECT_TIMEOUT_S)
        headers = {"Accept-Encoding": "identity"}

        # REST: pyorthanc's Orthanc *is* an httpx.Client, with a method per route. Raw responses, because
        # its own error path raises a bare httpx.HTTPError with the whole body in the message.
        self._rest = Orthanc(
            self.url,
            username,
            password,
            return_raw_response=True,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            headers=headers,
            trust_env=False,
        )

        # DICOMweb: dicomweb-client on a pooled requests.Session.
        session = requests.Session()
        session.trust_env = False
        session.headers.update(headers)
        if password:
            session.auth = (username, password)
        adapter = _DicomwebAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._dicomweb = DICOMwebClient(
            url=self.url + self.dicomweb_root.rstrip("/"),
            session=session,
            timeout=(connect_timeout, timeout),
        )
        # Retrying is the caller's decision (the forwarding worker has its own queue and back-off); a
        # hidden 5-attempt exponential retry would turn a down Orthanc into a 30 s hang.
        self._dicomweb.set_http_retry_params(retry=False)
        # dicomweb-client sends `Host: <host>` without the port; Orthanc's DICOMweb plugin builds the
        # BulkDataURIs of /metadata from that header, which would then point at port 80.
        netloc = urlsplit(self.url).netloc.rsplit("@", 1)[-1]
        self._dicomweb.host = netloc

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 8) -> OrthancClient:
        return cls(
            settings.orthanc_url,
            settings.orthanc_username,
            settings.secret("orthanc_password"),
            timeout=settings.orthanc_timeout_s,
            dicomweb_root=settings.orthanc_dicomweb_root,
            pool_size=pool_size,
        )

    def close(self) -> None:
        self._rest.close()
        self._session.close()

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def dicomweb_url(self) -> str:
        """Base URL of Orthanc's DICOMweb API, with a trailing slash (``http://127.0.0.1:8042/dicom-web/``)."""
        return self.url + self.dicomweb_root

    def __repr__(self) -> str:
        return f"OrthancClient({self._display_url!r}, user={self.username!r})"

    # REST ---------------------------------------------------------------------------------------------

    def system(self) -> dict[str, Any]:
        """``GET /system``: name, version, AET, ports."""
        return cast(dict[str, Any], self._json(self._rest_call("GET /system", self._rest.get_system)))

    def is_alive(self) -> bool:
        """True when ``/system`` answers 200 within a couple of seconds (for readiness probes)."""
        try:
            self._rest_call(
                "GET /system",
                lambda: self._rest.get(f"{self.url}/system", timeout=min(self.timeout, _PROBE_TIMEOUT_S)),
            )
        except OrthancError as exc:
            logger.debug("orthanc not alive: %s", exc.message)
            return False
        return True

    def store_instance(self, data: bytes) -> StoredInstance:
        """``POST /instances`` with one Part-10 file.

        Idempotent: when the SOP Instance UID is already stored Orthanc keeps the first copy
        (``OverwriteInstances: false``) and answers ``AlreadyStored`` with the same Orthanc id.
        """
        response = self._rest_call("POST /instances", lambda: self._rest.post_instances(content=data))
        answer = self._json(response)
        if not isinstance(answer, dict) or "ID" not in answer:
            raise OrthancError("Orthanc answered POST /instances without an instance ID",
                               upstream_status=response.status_code)
        status = answer.get("Status")
        if status not in _STORE_STATUSES:
            # e.g. "FilteredOut" (a Lua/plugin filter) or "Failure": nothing was stored.
            raise OrthancError(f"Orthanc did not store the instance (status {status!r})",
                               upstream_status=response.status_code)
        return StoredInstance(
            orthanc_id=str(answer["ID"]),
            status=cast(Literal["Success", "AlreadyStored"], status),
            sop_instance_uid=_read_sop_instance_uid(data),
            series_orthanc_id=answer.get("ParentSeries"),
            study_orthanc_id=answer.get("ParentStudy"),
        )

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """The Orthanc id of the instance with this SOP Instance UID, or None (``POST /tools/lookup``)."""
        # pyorthanc's post_tools_lookup sends form `data=`, which httpx deprecates for a raw body.
        response = self._rest_call(
            "POST /tools/lookup",
            lambda: self._rest.post(f"{self.url}/tools/lookup", content=sop_instance_uid.encode("ascii")),
        )
        for match in self._json(response) or []:
            if match.get("Type") == "Instance":
                return str(match["ID"])
        return None

    def get_instance_file(self, orthanc_id: str) -> bytes:
        """``GET /instances/{id}/file``: the stored Part-10 bytes, unchanged."""
        _check_orthanc_id(orthanc_id)
        response = self._rest_call(
            "GET /instances/{id}/file", lambda: self._rest.get_instances_id_file(orthanc_id)
        )
        return response.content

    def list_instance_ids(self, since: int = 0, limit: int = 0) -> list[str]:
        """Orthanc ids of stored instances in insertion order; ``since``/``limit`` page through them
        (``limit=0``: all from ``since`` on)."""
        if since < 0 or limit < 0:
            raise ValueError("since and limit must not be negative")
        params: dict[str, int] = {}
        if since or limit:
            # Orthanc 1.10 wants both arguments or neither; limit 0 would mean "no results".
            params = {"since": since, "limit": limit or 2**31 - 1}
        response = self._rest_call("GET /instances", lambda: self._rest.get_instances(params=params))
        return [str(item) for item in self._json(response)]

    def count_instances(self) -> int:
        """``CountInstances`` of ``GET /statistics`` (a counter in the index, not a scan)."""
        statistics = self._json(self._rest_call("GET /statistics", self._rest.get_statistics))
        return int(statistics["CountInstances"])

    # DICOMweb -----------------------------------------------------------------------------------------

    def search_for_studies(
        self,
        search_filters: dict[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """QIDO-RS ``GET {root}studies``: DICOM JSON, one object per study."""
        return self._dicomweb_call(
            "QIDO studies",
            lambda: self._dicomweb.search_for_studies(
                search_filters=search_filters, limit=limit, offset=offset, fields=fields
            ),
        )

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: dict[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """QIDO-RS ``GET {root}series`` or ``{root}studies/{uid}/series``."""
        return self._dicomweb_call(
            "QIDO series",
            lambda: self._dicomweb.search_for_series(
                study_instance_uid=study_instance_uid,
                search_filters=search_filters,
                limit=limit,
                offset=offset,
                fields=fields,
            ),
        )

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: dict[str, str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """QIDO-RS ``GET {root}instances`` (optionally below a study and series)."""
        return self._dicomweb_call(
            "QIDO instances",
            lambda: self._dicomweb.search_for_instances(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                search_filters=search_filters,
                limit=limit,
                offset=offset,
                fields=fields,
            ),
        )

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[dict[str, Any]]:
        """WADO-RS ``GET {root}studies/{uid}/series/{uid}/metadata`` (DICOM JSON, "Full" in our config)."""
        return self._dicomweb_call(
            "WADO series metadata",
            lambda: self._dicomweb.retrieve_series_metadata(study_instance_uid, series_instance_uid),
        )

    def retrieve_instance(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> pydicom.Dataset:
        """WADO-RS instance in its stored transfer syntax (``transfer-syntax=*``: no transcoding)."""
        return self._dicomweb_call(
            "WADO instance",
            lambda: self._dicomweb.retrieve_instance(
                study_instance_uid,
                series_instance_uid,
                sop_instance_uid,
                media_types=(("application/dicom", "*"),),
            ),
        )

    def store_instances(self, datasets: list[pydicom.Dataset]) -> pydicom.Dataset:
        """STOW-RS ``POST {root}studies``; returns the STOW response dataset (ReferencedSOPSequence,
        FailedSOPSequence). Datasets without a preamble or complete file meta are wrapped, not changed."""
        if not datasets:
            raise ValueError("store_instances needs at least one dataset")
        part10 = [_as_part10(dataset) for dataset in datasets]
        response = self._dicomweb_call("STOW", lambda: self._dicomweb.store_instances(part10))
        failed = response.get("FailedSOPSequence")
        if failed:
            logger.warning("STOW: Orthanc refused %d of %d instances", len(failed), len(datasets))
        return response

    def check_dicomweb(self) -> None:
        """Raise :class:`OrthancUnavailable` unless ``GET {root}studies?limit=1`` answers 200."""
        what = f"GET {self.dicomweb_root}studies"
        try:
            response = self._rest_call(
                what,
                lambda: self._rest.get(
                    f"{self.url}{self.dicomweb_root}studies",
                    params={"limit": 1},
                    headers={"Accept": "application/dicom+json"},
                ),
            )
        except OrthancUnavailable:
            raise
        except OrthancError as exc:
            raise OrthancUnavailable(
                f"the DICOMweb plugin of Orthanc at {self._display_url} does not answer: {exc.message}",
                upstream_status=exc.upstream_status,
            ) from exc
        if response.status_code != 200:
            raise OrthancUnavailable(
                f"the DICOMweb plugin of Orthanc at {self._display_url} answered {what} with "
                f"{response.status_code}, expected 200",
                upstream_status=response.status_code,
            )

    # Plumbing -----------------------------------------------------------------------------------------

    def _rest_call(self, what: str, call: Callable[[], Any]) -> httpx.Response:
        try:
            response = cast(httpx.Response, call())
        except httpx.TimeoutException as exc:
            raise self._timeout_error(what) from exc
        except httpx.TransportError as exc:
            raise self._unreachable_error(what, exc) from exc
        logger.debug("orthanc %s -> %d", what, response.status_code)
        if not response.is_success:
            raise self._status_error(what, response.status_code, response.content)
        return response

    def _dicomweb_call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except requests.Timeout as exc:
            raise self._timeout_error(what) from exc
        except requests.ConnectionError as exc:
            raise self._unreachable_error(what, exc) from exc
        except requests.HTTPError as exc:
            if exc.response is None:  # pragma: no cover - requests always attaches it for raise_for_status
                raise OrthancError(f"Orthanc failed {what}") from exc
            raise self._status_error(what, exc.response.status_code, exc.response.content) from exc

    def _timeout_error(self, what: str) -> OrthancUnavailable:
        return OrthancUnavailable(
            f"Orthanc at {self._display_url} did not answer {what} within {self.timeout:g} s", 504
        )

    def _unreachable_error(self, what: str, exc: Exception) -> OrthancUnavailable:
        # The exception text of httpx/urllib3 names the host and errno (no credentials: they are never
        # part of the URL we build); keep only its first line, urllib3 nests long reprs.
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return OrthancUnavailable(f"Orthanc at {self._display_url} is unreachable ({what}): {detail}")

    def _status_error(self, what: str, status: int, body: bytes) -> OrthancError:
        if status == 401:
            return OrthancError(
                f"Orthanc at {self._display_url} refused the credentials of user {self.username!r} "
                f"(401 on {what})",
                upstream_status=status,
            )
        return OrthancError(
            f"Orthanc answered {status} to {what}: {_orthanc_error_text(body)}", upstream_status=status
        )

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise OrthancError(
                f"Orthanc answered {response.request.method} {response.request.url.path} with "
                "a body that is not JSON",
                upstream_status=response.status_code,
            ) from exc


class _DicomwebAdapter(HTTPAdapter):
    """A pooled adapter that asks for one media type where dicomweb-client lists two.

    dicomweb-client sends ``Accept: application/dicom+json, application/json`` for QIDO and metadata. The
    DICOMweb plugin 1.7 answers DICOM JSON but logs an error line ("Unsupported return MIME type") for
    every such request, and for instance retrieval a multi-type Accept is a 400 (ohif-integration §7.2).
    """

    _ACCEPT_JSON_ALTERNATIVES = "application/dicom+json, application/json"

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if request.headers.get("Accept") == self._ACCEPT_JSON_ALTERNATIVES:
            request.headers["Accept"] = "application/dicom+json"
        return super().send(request, *args, **kwargs)


def _orthanc_error_text(body: bytes) -> str:
    """Orthanc's own description of an error: ``OrthancError: Details`` from its JSON error answer, which
    describes the failure, not the data. Other bodies are cut short to one line."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and ("OrthancError" in answer or "Message" in answer):
        text = str(answer.get("OrthancError") or answer.get("Message"))
        if answer.get("Details"):
            text += f": {answer['Details']}"
        return text
    text = body.decode("utf-8", "replace").strip().splitlines()
    return text[0][:200] if text else "(empty body)"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _check_orthanc_id(orthanc_id: str) -> None:
    if not _ORTHANC_ID.match(orthanc_id):
        raise ValueError(f"not an Orthanc identifier: {orthanc_id[:64]!r}")


def _read_sop_instance_uid(data: bytes) -> str | None:
    """SOP Instance UID from the header of a Part-10 file Orthanc just accepted (stops before pixels)."""
    try:
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        value = dataset.get("SOPInstanceUID")
    except Exception:  # Orthanc parsed it; a pydicom quirk must not turn a stored instance into an error
        logger.debug("could not read the SOP Instance UID of a stored instance", exc_info=True)
        return None
    return str(value) if value else None


def _as_part10(dataset: Dataset) -> Dataset:
    """A view of ``dataset`` that pydicom writes as a Part-10 file (preamble, DICM, complete group 2).

    dicomweb-client encodes with ``dcmwrite(ds)``, which writes a plain ``Dataset`` without preamble and
    with whatever file meta it has; Orthanc rejects that. The view shares the data elements (no copy of the
    pixel data) and gets its own file meta, so the caller's dataset is not modified.
    """
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0  # recomputed by pydicom on write
    meta.FileMetaInformationVersion = b"\x00\x01"
    for element in getattr(dataset, "file_meta", None) or ():
        meta[element.tag] = element
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return FileDataset("", dataset, preamble=b"\x00" * 128, file_meta=meta)
