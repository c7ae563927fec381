"""Single uncompressed frames from Orthanc's core REST API instead of its DICOMweb plugin.

Why: DICOMweb 1.7 parses the whole instance again for every frame request, 1.1-1.3 ms of Orthanc CPU per
512x512 CT frame on this hardware, while Orthanc's own ``/instances/{id}/frames/{n}/raw`` costs 0.3 ms (Orthanc
keeps recently parsed files). A viewer load is 300 such requests on two cores shared with the gateway, so this
is the largest saving on the first open of a study (bench/RESULTS.md, "Viewer load").

Used by the frame fast path only after the access policy said yes. It answers only when it can answer exactly
as the plugin would, and returns None otherwise (the caller then asks the plugin):

- one frame, and an Accept the plugin would answer with the stored uncompressed bytes: multipart of
  ``application/octet-stream`` with ``transfer-syntax=*`` (what OHIF sends), or, for an instance stored
  Explicit VR Little Endian, also none, ``*/*``, or that multipart without the parameter or naming it;
- the Orthanc id of the instance is Orthanc's own hash of ``PatientID|Study|Series|SOP`` UIDs, with the
  study's Patient ID learnt from Orthanc once per study; a wrong guess can only miss (404), never hit another
  instance, because the hash covers the requested UIDs;
- the instance is stored Little Endian uncompressed (Orthanc is configured with ``OverwriteInstances: false``, so
  what was stored under a SOP Instance UID stays) (implicit or explicit VR: the same pixel bytes, which
  DICOMweb labels Explicit VR Little Endian) and its SOP class is one whose IOD fixes Bits Allocated at 8
  or more (no bit-packed frames to unpack); both from Orthanc's metadata of the instance, asked once per
  instance, in parallel with its first frame;
- Orthanc answers the raw frame with 200 and ``application/octet-stream``.

The answer is the plugin's multipart framing (the top-level Content-Type and the part's headers as the plugin
writes them), with the part's Content-Location at the gateway rather than at Orthanc.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

from pacslabel.dicomweb.filtering import first_media_range
from pacslabel.orthanc.streaming import OrthancStreamingClient

EXPLICIT_LE = "1.2.840.10008.1.2.1"
_LITTLE_ENDIAN_NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LE})
# SOP classes whose IODs allow only Bits Allocated 8, 16 (or 32 for PET): frames are whole bytes.
_WHOLE_BYTE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",      # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",    # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",      # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",    # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",    # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.130",    # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.1",      # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",    # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2",    # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.20",     # Nuclear Medicine Image
})
_OCTET_TYPE = re.compile(r'^"?application/octet-stream"?$', re.IGNORECASE)
_CACHE_SIZE = 100_000
# Frame requests answered here, per process (tests and benchmarks read it).
STATS = {"answered": 0}


@dataclass(frozen=True)
class RawFrame:
    content_type: str
    body: bytes


def requested_syntax(accept: str | None) -> str | None:
    """The transfer syntax an Accept asks uncompressed frames in: ``*`` (as stored), Explicit VR Little Endian
    (also what no Accept, ``*/*`` or a multipart without the parameter mean), or None for anything else."""
    if not accept:
        return EXPLICIT_LE
    chosen = first_media_range(accept)
    media, *params = (part.strip() for part in chosen.split(";"))
    if media == "*/*" and not params:
        return EXPLICIT_LE
    if media.lower() != "multipart/related":
        return None
    values: dict[str, str] = {}
    for param in params:
        name, sep, value = param.partition("=")
        if not sep:
            return None
        values[name.strip().lower()] = value.strip()
    if set(values) - {"type", "transfer-syntax"} or not _OCTET_TYPE.match(values.get("type", "")):
        return None
    syntax = values.get("transfer-syntax", EXPLICIT_LE).strip('"')
    return syntax if syntax in ("*", EXPLICIT_LE) else None


def orthanc_instance_id(patient_id: str, study: str, series: str, sop: str) -> str:
    """Orthanc's identifier of an instance (its DicomInstanceHasher): SHA-1 of the four keys, in groups of 8."""
    digest = hashlib.sha1(f"{patient_id}|{study}|{series}|{sop}".encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


class _Lru(OrderedDict[str, object]):
    def remember(self, key: str, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)


class RawFrameSource:
    """What Orthanc told us about studies and instances, per process; only facts that cannot change for the
    same UIDs (a study's Patient ID is part of the instance hash; Orthanc does not overwrite a stored instance,
    so its syntax and SOP class stay until it is deleted, and a deleted instance's frame is a 404)."""

    def __init__(self) -> None:
        self._patient_of_study = _Lru()   # study UID -> Patient ID (str), or None when not unique/unknown
        self._syntax = _Lru()             # Orthanc instance id -> its transfer syntax, "" when not answerable here

    def forget_study(self, study: str) -> None:
        """Drop what is known of a study (after deletes or re-stores in it)."""
        self._patient_of_study.pop(study, None)

    def clear(self) -> None:
        self._patient_of_study.clear()
        self._syntax.clear()

    async def fetch(self, client: OrthancStreamingClient, study: str, series: str, sop: str, frame: int,
                    *, accept: str | None, location: str, max_bytes: int) -> RawFrame | None:
        wanted = requested_syntax(accept)
        if wanted is None:
            return None
        patient_id = await self._patient_id(client, study)
        if patient_id is None:
            return None
        instance = orthanc_instance_id(patient_id, study, series, sop)
        syntax = self._syntax.get(instance)
        if syntax == "" or (syntax is not None and wanted not in ("*", syntax)):
            return None
        if syntax is None:
            checked, read = await asyncio.gather(self._check_instance(client, instance),
                                                 _raw(client, instance, frame, max_bytes), return_exceptions=True)
            for outcome in (checked, read):  # both awaited to the end: neither is left running or unreported
                if isinstance(outcome, BaseException):
                    raise outcome
            syntax, pixels = cast(str | None, checked), cast(bytes | None, read)
            if syntax is None:  # no such instance under this Patient ID: learn the study again next time
                self.forget_study(study)
            if not syntax or wanted not in ("*", syntax):
                return None
        else:
            pixels = await _raw(client, instance, frame, max_bytes)
        if pixels is None:
            return None
        part_type = f"application/octet-stream; transfer-syntax={syntax}"
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Location: {location}\r\nContent-Type: {part_type}\r\n"
                f"Content-Length: {len(pixels)}\r\nMIME-Version: 1.0\r\n\r\n").encode("latin-1")
        body = b"".join((head, pixels, f"\r\n--{boundary}--\r\n".encode("ascii")))
        STATS["answered"] += 1
        return RawFrame(f'multipart/related; type="{part_type}"; boundary={boundary}', body)

    async def _patient_id(self, client: OrthancStreamingClient, study: str) -> str | None:
        if study in self._patient_of_study:
            return self._patient_of_study[study]  # type: ignore[return-value]
        found = await _json(client, "POST", "tools/lookup", content=study.encode("ascii"))
        studies = [r for r in found if isinstance(r, dict) and r.get("Type") == "Study"] \
            if isinstance(found, list) else []
        patient_id: str | None = None
        if len(studies) == 1 and isinstance(studies[0].get("ID"), str):
            about = await _json(client, "GET", f"studies/{studies[0]['ID']}")
            tags = about.get("PatientMainDicomTags") if isinstance(about, dict) else None
            value = tags.get("PatientID") if isinstance(tags, dict) else None
            patient_id = value if isinstance(value, str) else None
        if patient_id is not None:  # an unknown study may be stored a moment later: not remembered
            self._patient_of_study.remember(study, patient_id)
        return patient_id

    async def _check_instance(self, client: OrthancStreamingClient, instance: str) -> str | None:
        """The instance's transfer syntax when its frames can be answered here, "" when they cannot, None when
        Orthanc does not know the instance."""
        metadata = await _json(client, "GET", f"instances/{instance}/metadata", params={"expand": ""})
        if not isinstance(metadata, dict):
            return None  # not remembered
        syntax = metadata.get("TransferSyntax")
        answerable = syntax in _LITTLE_ENDIAN_NATIVE and metadata.get("SopClassUid") in _WHOLE_BYTE_SOP_CLASSES
        result = str(syntax) if answerable else ""
        self._syntax.remember(instance, result)
        return result


async def _json(client: OrthancStreamingClient, method: str, path: str, *, content: bytes | None = None,
                params: dict[str, str] | None = None) -> object:
    async with client.stream(method, path, rest=True, content=content, params=params) as response:
        body = await response.aread()
        if response.status_code != 200:
            return None
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _raw(client: OrthancStreamingClient, instance: str, frame: int, max_bytes: int) -> bytes | None:
    async with client.stream("GET", f"instances/{instance}/frames/{frame - 1}/raw", rest=True) as response:
        length = response.content_length
        if length is None or length > max_bytes:
            return None  # not one read: the connection is closed unread, the plugin is asked (it streams)
        body = await response.aread()
        if response.status_code != 200 or response.headers.get("content-type") != "application/octet-stream":
            return None
        return body


# The process-wide source, read by the frame fast path.
RAW_FRAMES = RawFrameSource()
