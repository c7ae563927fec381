"""Pure helpers of the gateway: reading and filtering DICOM JSON results, BulkDataURI rewriting, gzip of
our own JSON answers, and re-framing multipart bodies (study-level WADO of a partly visible study).

No I/O here, so each piece is testable without Orthanc.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
STUDY_COUNT_TAGS = (MODALITIES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES, NUMBER_OF_STUDY_RELATED_INSTANCES)

# Our JSON answers are gzipped from this size on, when the client accepts gzip. Level 5: ~3x smaller
# metadata for a few ms per MB (and the series-metadata variant is cached).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5


def tag_value(result: dict[str, Any], tag: str) -> str | None:
    """The first value of ``tag`` in one DICOM JSON object, as a string (None when absent or empty)."""
    attribute = result.get(tag)
    if not isinstance(attribute, dict):
        return None
    values = attribute.get("Value")
    if not values:
        return None
    return str(values[0])


def filter_studies(results: Iterable[dict[str, Any]], visible: set[str]) -> list[dict[str, Any]]:
    return [r for r in results if tag_value(r, STUDY_INSTANCE_UID) in visible]


def filter_series(results: Iterable[dict[str, Any]], is_visible: Callable[[str, str], bool],
                  study_instance_uid: str | None = None) -> list[dict[str, Any]]:
    """Keep results (series or instances) whose series the user may see. ``study_instance_uid`` fills in
    the study when the results are below a study in the URL and do not repeat it."""
    kept = []
    for result in results:
        study = tag_value(result, STUDY_INSTANCE_UID) or study_instance_uid
        series = tag_value(result, SERIES_INSTANCE_UID)
        if study and series and is_visible(study, series):
            kept.append(result)
    return kept


def filter_instances(results: Iterable[dict[str, Any]], is_visible: Callable[[str, str, str | None], bool],
                     study_instance_uid: str | None = None) -> list[dict[str, Any]]:
    """Like :func:`filter_series`, and an instance result (one with a SOP Instance UID) must be visible
    itself: the ML role sees the released version of a label series, not the drafts beside it."""
    kept = []
    for result in results:
        study = tag_value(result, STUDY_INSTANCE_UID) or study_instance_uid
        series = tag_value(result, SERIES_INSTANCE_UID)
        if study and series and is_visible(study, series, tag_value(result, SOP_INSTANCE_UID)):
            kept.append(result)
    return kept


@dataclass(frozen=True)
class VisibleStudy:
    """What one user may see of one study, counted: visible instances per visible series, and modalities."""

    instances: dict[str, int]  # series -> visible instances (only series that exist)
    modalities: frozenset[str]

    @property
    def series_count(self) -> int:
        return len(self.instances)

    @property
    def instance_count(self) -> int:
        return sum(self.instances.values())


def studies_with_counts(results: Iterable[dict[str, Any]], study_instance_uid: str | None = None) -> set[str]:
    """Studies of the results that carry a study-level count or ModalitiesInStudy (those to recount)."""
    return {study for r in results if any(tag in r for tag in STUDY_COUNT_TAGS)
            and (study := tag_value(r, STUDY_INSTANCE_UID) or study_instance_uid)}


_COUNT_TAG_BYTES = tuple(f'"{tag}"'.encode() for tag in (*STUDY_COUNT_TAGS, NUMBER_OF_SERIES_RELATED_INSTANCES))


def mentions_counts(body: bytes) -> bool:
    """Whether a DICOM JSON body may carry a count attribute (a substring test: metadata bodies are large
    and seldom carry one, so they are parsed only when this says so)."""
    return any(tag in body for tag in _COUNT_TAG_BYTES)


def carries_counts(results: Iterable[dict[str, Any]]) -> bool:
    """Whether any result carries a count attribute or ModalitiesInStudy."""
    return any(tag in r for r in results for tag in (*STUDY_COUNT_TAGS, NUMBER_OF_SERIES_RELATED_INSTANCES))


def set_visible_counts(results: list[dict[str, Any]], studies: dict[str, VisibleStudy],
                       restricted: Mapping[str, Mapping[str, Collection[str]]],
                       study_instance_uid: str | None = None) -> list[dict[str, Any]]:
    """The results with every count attribute and ModalitiesInStudy replaced by what the user may see
    (in place; returned for chaining). ``studies``: the counted studies (see :func:`studies_with_counts`);
    ``restricted``: study -> series -> its only visible instances. A series neither restricted nor in a
    counted study keeps its NumberOfSeriesRelatedInstances (visible whole: Orthanc's count is right)."""
    for result in results:
        study = tag_value(result, STUDY_INSTANCE_UID) or study_instance_uid
        if study is None:
            continue
        seen = studies.get(study)
        if seen is not None:
            _set(result, NUMBER_OF_STUDY_RELATED_SERIES, "IS", [seen.series_count])
            _set(result, NUMBER_OF_STUDY_RELATED_INSTANCES, "IS", [seen.instance_count])
            _set(result, MODALITIES_IN_STUDY, "CS", sorted(seen.modalities))
        series = tag_value(result, SERIES_INSTANCE_UID)
        if series is None:
            continue
        only = restricted.get(study, {}).get(series)
        count = len(only) if only is not None else (seen.instances.get(series) if seen is not None else None)
        if count is not None:
            _set(result, NUMBER_OF_SERIES_RELATED_INSTANCES, "IS", [count])
    return results


def _set(result: dict[str, Any], tag: str, vr: str, values: list[Any]) -> None:
    """Replace the value of ``tag`` if the result carries it (no attribute the client did not get is added)."""
    if tag not in result:
        return
    result[tag] = {"vr": vr, "Value": values} if values else {"vr": vr}


def keep_instances(metadata: bytes, sop_instance_uids: frozenset[str] | set[str]) -> bytes:
    """A DICOM JSON metadata array (bytes) reduced to the given instances (a partly visible series)."""
    return dumps([r for r in json.loads(metadata) if tag_value(r, SOP_INSTANCE_UID) in sop_instance_uids])


def paginate(results: list[dict[str, Any]], limit: int | None, offset: int | None) -> list[dict[str, Any]]:
    start = max(offset or 0, 0)
    return results[start:] if limit is None else results[start:start + max(limit, 0)]


def bulkdata_rewriter(orthanc_root: str, public_root: str) -> Callable[[bytes], bytes]:
    """A function that points every BulkDataURI of a DICOM JSON body at the gateway.

    DICOMweb 1.7 writes absolute URIs ``http://{Host}{DicomWeb.Root}studies/...`` (ohif-integration §7.1);
    only the scheme, host and root are replaced, and only inside ``"BulkDataURI"`` values, so that no data
    value is touched. ``public_root`` ends with a slash (``https://viewer.example.org/dicomweb/``).
    """
    pattern = re.compile(rb'("BulkDataURI"\s*:\s*")https?://[^"/]*' + re.escape(orthanc_root.encode()))
    replacement = rb"\g<1>" + public_root.encode().replace(b"\\", b"\\\\")
    return lambda body: pattern.sub(replacement, body)


def dumps(results: Any) -> bytes:
    return json.dumps(results, separators=(",", ":"), ensure_ascii=False).encode()


def accepts_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return True
    return False


def gzip_body(body: bytes) -> bytes | None:
    """Gzipped ``body``, or None when it is too small to be worth it."""
    if len(body) < GZIP_MIN_BYTES:
        return None
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


# Multipart re-framing -----------------------------------------------------------------------------------

_BOUNDARY_PARAM = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def multipart_boundary(content_type: str) -> str | None:
    match = _BOUNDARY_PARAM.search(content_type)
    return match.group(1) if match else None


def with_boundary(content_type: str, boundary: str) -> str:
    """``content_type`` with its boundary parameter replaced (quoting kept as it was)."""
    return _BOUNDARY_PARAM.sub(lambda m: m.group(0).replace(m.group(1), boundary), content_type, count=1)


def new_boundary() -> str:
    return f"pacslabel-{secrets.token_hex(16)}"


async def reframe_multipart(bodies: AsyncIterator[tuple[str, AsyncIterator[bytes]]], boundary: str
                            ) -> AsyncIterator[bytes]:
    """Concatenate several multipart/related bodies into one with ``boundary``, streaming.

    ``bodies`` yields (upstream boundary, chunk iterator) per body. Each body's delimiters are rewritten to
    the new boundary as the bytes pass; a body's preamble is dropped and its close delimiter is held back,
    so that only one close delimiter ends the whole. At most a few boundary lengths are held at any time.
    """
    new = b"--" + boundary.encode()
    hold = len(new) + 8  # output held back: enough to strip a close delimiter + CRLF at the end of a body
    async for upstream_boundary, chunks in bodies:
        old = b"--" + upstream_boundary.encode()
        raw = b""  # not yet scanned for `old` (shorter than `old`)
        out = b""  # rewritten, not yet sent
        started = False
        async for chunk in chunks:
            data = raw + chunk
            if not started:
                at = data.find(old)
                if at < 0:  # still in the preamble
                    raw = data[-(len(old) - 1):] if len(old) > 1 else b""
                    continue
                data, started = data[at:], True
            # Every occurrence that starts before `safe` lies wholly inside `data`.
            safe = len(data) - (len(old) - 1)
            pos = 0
            pieces = []
            while (at := data.find(old, pos)) >= 0 and at < safe:
                pieces += [data[pos:at], new]
                pos = at + len(old)
            if pos < safe:
                pieces.append(data[pos:safe])
                pos = safe
            raw = data[pos:]
            out += b"".join(pieces)
            if len(out) > hold:
                yield out[:-hold]
                out = out[-hold:]
        if not started:
            continue
        out = (out + raw.replace(old, new)).rstrip(b"\r\n")
        if out.endswith(new + b"--"):
            out = out[: -len(new) - 2]
        if out:
            yield out
    # Each body's tail ends with the CRLF that belongs to the delimiter after it.
    yield new + b"--\r\n"


# Accept normalisation for DICOMweb 1.7 ----------------------------------------------------------------------

_WILDCARD_TYPE = re.compile(r'type\s*=\s*"?\*/\*"?', re.IGNORECASE)


def first_media_range(accept: str) -> str:
    """The first media range of an Accept value (commas inside quotes do not split)."""
    quoted = False
    for index, char in enumerate(accept):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            return accept[:index].strip()
    return accept.strip()


def accept_for_orthanc(accept: str | None, *, bulk: bool) -> str | None:
    """The client's Accept, made answerable by DICOMweb 1.7, which negotiates nothing:

    - a list of media ranges is a 400 there (fixed in 1.14, ohif-integration §7.2): the client's first
      choice is sent, which is what a negotiating server would pick when it supports it;
    - ``multipart/related; type="*/*"`` (dicomweb-client's default for frames and bulk data) is a 400 there
      too: it becomes the uncompressed type with ``transfer-syntax=*`` (no transcoding) for frames and bulk
      data, and ``application/dicom`` with ``transfer-syntax=*`` for instances.
    A single concrete type passes unchanged, byte for byte.
    """
    if not accept:
        return accept
    chosen = first_media_range(accept)
    if chosen.lower().startswith("multipart/related") and _WILDCARD_TYPE.search(chosen):
        concrete = 'type="application/octet-stream"' if bulk else 'type="application/dicom"'
        chosen = _WILDCARD_TYPE.sub(concrete, chosen, count=1)
        if "transfer-syntax" not in chosen.lower():
            chosen += "; transfer-syntax=*"
    return chosen
