"""multipart/related (RFC 2387 / RFC 2046 §5.1) for STOW-RS: parse what DICOMweb clients send, encode answers.

What real clients send (ohif-integration notes §5): dicomweb-client quotes the boundary and starts the body
with CRLF (an empty preamble); others do not quote it, or send a preamble, or add parameters such as
``transfer-syntax=``. The parser accepts all of these, ignores preamble and epilogue, and refuses a body
without a closing delimiter (a truncated upload must not be half-stored).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message

from pacslabel.errors import BadInput, PacslabelError

CRLF = b"\r\n"
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 §5.1.1
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB per STOW request


class PayloadTooLarge(PacslabelError):
    status_code = 413


class UnsupportedMediaType(PacslabelError):
    status_code = 415


@dataclass(frozen=True)
class MediaType:
    """A parsed Content-Type: ``type/subtype`` (lower case) and its parameters (names lower case, unquoted)."""

    value: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_media_type(header: str | None) -> MediaType:
    """Parse a Content-Type header value; quoted parameter values are unquoted (RFC 9110 §5.6.6)."""
    message = Message()
    message["content-type"] = header or ""
    # Not get_content_type(): it turns an unparsable value into text/plain, which would hide what was sent.
    value = (header or "").split(";", 1)[0].strip()
    params: dict[str, str] = {}
    for name, param in (message.get_params() or [])[1:]:
        params[name.lower()] = str(param)
    return MediaType(value.lower(), params)


@dataclass(frozen=True)
class Part:
    headers: Mapping[str, str]  # names lower case
    content: bytes

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return parse_media_type(value).value if value else None


def related_boundary(content_type: str | None, *, accepted_types: Iterable[str] = ("application/dicom",)) -> str:
    """The boundary of a ``multipart/related`` body whose ``type`` parameter is one of ``accepted_types``.

    Raises
    ------
    UnsupportedMediaType
        (415) for another media type, a missing or other ``type`` parameter (PS3.18 §10.5.1.2).
    BadInput
        (400) for a missing or malformed boundary.
    """
    media = parse_media_type(content_type)
    accepted = tuple(accepted_types)
    if media.value != "multipart/related":
        raise UnsupportedMediaType(
            f"STOW-RS needs Content-Type multipart/related; type=\"{accepted[0]}\", not {media.value or '(none)'}.")
    part_type = media.params.get("type", "").lower()
    if part_type not in accepted:
        raise UnsupportedMediaType(
            f"multipart/related needs the parameter type=\"{accepted[0]}\" (got {part_type or 'none'}); "
            "only DICOM Part-10 instances can be stored here.")
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH or boundary != boundary.rstrip(" "):
        raise BadInput("multipart/related needs a boundary parameter of 1 to 70 characters.")
    return boundary


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadInput("A multipart part header line has no colon.")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


def parse_multipart_related(body: bytes | bytearray | memoryview, boundary: str, *,
                            max_parts: int = 10_000) -> list[Part]:
    """Split a multipart body into parts (headers + content bytes).

    Raises
    ------
    BadInput
        (400) when the first delimiter or the closing delimiter is missing, or a part has no header end.
    """
    data = bytes(body) if not isinstance(body, bytes) else body
    delimiter = b"--" + boundary.encode("latin-1")
    # The first delimiter opens the body or follows a CRLF (after an optional preamble).
    if data.startswith(delimiter):
        position = 0
    else:
        position = data.find(CRLF + delimiter)
        if position < 0:
            raise BadInput("The multipart body does not contain its boundary.")
        position += len(CRLF)
    inner = CRLF + delimiter
    parts: list[Part] = []
    while True:
        position += len(delimiter)
        if data[position:position + 2] == b"--":
            return parts  # close delimiter; anything after it is epilogue
        line_end = data.find(CRLF, position)
        if line_end < 0 or data[position:line_end].strip(b" \t"):
            raise BadInput("A multipart boundary line is malformed or the body is truncated.")
        start = line_end + len(CRLF)
        if data[start:start + 2] == CRLF:
            headers: dict[str, str] = {}
            content_start = start + 2
        else:
            header_end = data.find(CRLF + CRLF, start)
            if header_end < 0:
                raise BadInput("A multipart part has no end of headers (blank line).")
            headers = _parse_headers(data[start:header_end])
            content_start = header_end + 4
        next_delimiter = data.find(inner, content_start)
        if next_delimiter < 0:
            raise BadInput("The multipart body ends without its closing boundary; it may be truncated.")
        parts.append(Part(headers, data[content_start:next_delimiter]))
        if len(parts) > max_parts:
            raise BadInput(f"The multipart body has more than {max_parts} parts.")
        position = next_delimiter + len(CRLF)


def encode_multipart_related(parts: Iterable[bytes], *, content_type: str = "application/dicom",
                             boundary: str | None = None, quote: bool = True,
                             leading_crlf: bool = True) -> tuple[bytes, str]:
    """Encode parts like dicomweb-client does; returns (body, Content-Type header value)."""
    boundary = boundary or secrets.token_hex(16)
    delimiter = b"--" + boundary.encode("ascii")
    chunks = [CRLF] if leading_crlf else []
    first = True
    for part in parts:
        if not first:
            chunks.append(CRLF)
        first = False
        chunks += [delimiter, CRLF, f"Content-Type: {content_type}".encode("ascii"), CRLF, CRLF, part]
    chunks += [CRLF, delimiter, b"--"]
    shown = f'"{boundary}"' if quote else boundary
    type_param = f'"{content_type}"' if quote else content_type
    return b"".join(chunks), f"multipart/related; type={type_param}; boundary={shown}"
