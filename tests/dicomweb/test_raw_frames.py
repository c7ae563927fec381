"""Frames read from Orthanc's core REST API answer exactly what its DICOMweb plugin answers, and anything the
raw path cannot answer that way is left to the plugin (None), against a real Orthanc."""

from __future__ import annotations

import asyncio
from io import BytesIO

import httpx
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage, generate_uid

from pacslabel.dicomweb import raw_frames
from pacslabel.dicomweb.raw_frames import RawFrameSource, orthanc_instance_id, requested_syntax
from pacslabel.orthanc.streaming import OrthancStreamingClient
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.series import ct_slice

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
IMPLICIT_LE, EXPLICIT_LE, BIG_ENDIAN, RLE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                                             "1.2.840.10008.1.2.5")


def _instance(syntax: str, *, rows: int = 5, columns: int = 7, sop_class: str | None = None) -> Dataset:
    pixels = np.arange(rows * columns, dtype=np.int16).reshape(rows, columns) - 300
    ds = ct_slice(study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
                  frame_of_reference_uid=generate_uid(), instance_number=1, pixels=pixels, position=(0, 0, 0))
    if sop_class is not None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if syntax == RLE:
        ds.compress(RLE, encoding_plugin="pydicom")
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _store(orthanc: RunningOrthanc, ds: Dataset) -> None:
    buffer = BytesIO()
    if ds.file_meta.TransferSyntaxUID in (IMPLICIT_LE, EXPLICIT_LE, BIG_ENDIAN):
        syntax = ds.file_meta.TransferSyntaxUID
        ds.save_as(buffer, implicit_vr=syntax == IMPLICIT_LE, little_endian=syntax != BIG_ENDIAN,
                   enforce_file_format=True)
    else:
        ds.save_as(buffer, enforce_file_format=True)
    orthanc.client.store_instance(buffer.getvalue())


def _path(ds: Dataset, frame: int = 1) -> str:
    return (f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
            f"/frames/{frame}")


def _raw(orthanc: RunningOrthanc, ds: Dataset, accept: str | None = OHIF_ACCEPT, frame: int = 1,
         source: RawFrameSource | None = None) -> raw_frames.RawFrame | None:
    client = OrthancStreamingClient.from_settings(orthanc.settings)

    async def fetch() -> raw_frames.RawFrame | None:
        try:
            return await (source or RawFrameSource()).fetch(
                client, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), frame,
                accept=accept, location="http://gateway.example/dicomweb/" + _path(ds, frame), max_bytes=1 << 23)
        finally:
            await client.aclose()

    return asyncio.run(fetch())


def _plugin(orthanc: RunningOrthanc, ds: Dataset, accept: str | None = OHIF_ACCEPT) -> tuple[str, list[bytes], bytes]:
    """The plugin's answer, split as :func:`_split` does."""
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(f"{orthanc.url}/dicom-web/{_path(ds)}", headers=headers, auth=_auth(orthanc))
    assert response.status_code == 200, response.text
    return _split(response.headers["content-type"], response.content)


def _auth(orthanc: RunningOrthanc) -> tuple[str, str]:
    return orthanc.settings.orthanc_username, orthanc.settings.secret("orthanc_password")


def _split(content_type: str, body: bytes) -> tuple[str, list[bytes], bytes]:
    """Content type up to the boundary, the part's headers but the location's host, and the part's body."""
    boundary = content_type.split("boundary=")[1].encode()
    head, _, rest = body.partition(b"\r\n\r\n")
    assert head.startswith(b"--" + boundary + b"\r\n")
    headers = [line if not line.lower().startswith(b"content-location:") else line.split(b"/studies/")[1]
               for line in head.split(b"\r\n")[1:]]
    assert rest.endswith(b"\r\n--" + boundary + b"--\r\n")
    return content_type.split("boundary=")[0], headers, rest[:-len(boundary) - 8]


@pytest.mark.parametrize("syntax", [EXPLICIT_LE, IMPLICIT_LE])
@pytest.mark.parametrize("sop_class", [None, MRImageStorage])
def test_an_uncompressed_little_endian_frame_is_answered_as_the_plugin_answers_it(
        orthanc: RunningOrthanc, syntax: str, sop_class: str | None) -> None:
    ds = _instance(syntax, sop_class=sop_class)
    _store(orthanc, ds)
    answered = raw_frames.STATS["answered"]
    raw = _raw(orthanc, ds)
    assert raw is not None and raw_frames.STATS["answered"] == answered + 1
    assert _split(raw.content_type, raw.body) == _plugin(orthanc, ds)
    assert _split(raw.content_type, raw.body)[2] == ds.PixelData  # 5x7 int16: 70 bytes, odd row length
    assert b"Content-Location: http://gateway.example/dicomweb/" + _path(ds).encode() in raw.body


def test_an_explicit_little_endian_frame_is_answered_for_the_default_accepts_too(orthanc: RunningOrthanc) -> None:
    ds = _instance(EXPLICIT_LE)
    _store(orthanc, ds)
    for accept in (None, "*/*", 'multipart/related; type="application/octet-stream"',
                   f"multipart/related; type=application/octet-stream; transfer-syntax={EXPLICIT_LE}"):
        raw = _raw(orthanc, ds, accept)
        assert raw is not None and _split(raw.content_type, raw.body) == _plugin(orthanc, ds, accept)


@pytest.mark.parametrize("accept", [None, "*/*", f"multipart/related; type=application/octet-stream; "
                                                  f"transfer-syntax={EXPLICIT_LE}"])
def test_an_implicit_little_endian_frame_asked_as_explicit_is_left_to_the_plugin(
        orthanc: RunningOrthanc, accept: str | None) -> None:
    ds = _instance(IMPLICIT_LE)
    _store(orthanc, ds)
    source = RawFrameSource()
    assert _raw(orthanc, ds, accept, source=source) is None
    assert _raw(orthanc, ds, accept, source=source) is None  # also once its syntax is known
    assert _raw(orthanc, ds, OHIF_ACCEPT, source=source) is not None


@pytest.mark.parametrize("syntax, sop_class", [(BIG_ENDIAN, None), (RLE, None),
                                               (EXPLICIT_LE, SecondaryCaptureImageStorage)])
def test_big_endian_compressed_and_possibly_bit_packed_instances_are_left_to_the_plugin(
        orthanc: RunningOrthanc, syntax: str, sop_class: str | None) -> None:
    ds = _instance(syntax, sop_class=sop_class)
    _store(orthanc, ds)
    source = RawFrameSource()
    assert _raw(orthanc, ds, source=source) is None
    assert _raw(orthanc, ds, source=source) is None  # remembered as not answerable: no second metadata trip


def test_unknown_instances_missing_frames_and_other_media_types_are_left_to_the_plugin(
        orthanc: RunningOrthanc) -> None:
    ds = _instance(EXPLICIT_LE)
    _store(orthanc, ds)
    assert _raw(orthanc, ds, frame=2) is None  # Orthanc: parameter out of range
    assert _raw(orthanc, ds, "application/dicom") is None
    assert _raw(orthanc, ds, "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
                ) is None
    stranger = Dataset()
    stranger.StudyInstanceUID, stranger.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    stranger.SOPInstanceUID = generate_uid()
    assert _raw(orthanc, stranger) is None
    unknown_study = Dataset()
    unknown_study.StudyInstanceUID = generate_uid()
    unknown_study.SeriesInstanceUID, unknown_study.SOPInstanceUID = ds.SeriesInstanceUID, ds.SOPInstanceUID
    assert _raw(orthanc, unknown_study) is None


def test_the_instance_id_is_orthancs_own(orthanc: RunningOrthanc) -> None:
    ds = _instance(EXPLICIT_LE)
    _store(orthanc, ds)
    found = httpx.post(f"{orthanc.url}/tools/lookup", content=str(ds.SOPInstanceUID), auth=_auth(orthanc)).json()
    assert [r["ID"] for r in found] == [orthanc_instance_id(str(ds.PatientID), str(ds.StudyInstanceUID),
                                                            str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))]


@pytest.mark.parametrize("accept, syntax", [
    (None, EXPLICIT_LE), ("*/*", EXPLICIT_LE), (OHIF_ACCEPT, "*"),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*, */*', "*"),
    (f'multipart/related; type="application/octet-stream"; transfer-syntax="{EXPLICIT_LE}"', EXPLICIT_LE),
    ("multipart/related; type=application/dicom", None), ("image/jpeg", None), ("*/*; q=0.5", None),
    ("multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90", None),
    ("multipart/related; type=application/octet-stream; boundary=x", None),
])
def test_the_requested_syntax_is_read_from_accept(accept: str | None, syntax: str | None) -> None:
    assert requested_syntax(accept) == syntax


def test_an_unreachable_orthanc_is_an_orthanc_error_for_the_caller_to_map(orthanc: RunningOrthanc) -> None:
    from pacslabel.orthanc.client import OrthancUnavailable
    from tests.fixtures.orthanc import free_port

    ds = _instance(EXPLICIT_LE)
    source = RawFrameSource()
    client = OrthancStreamingClient(f"http://127.0.0.1:{free_port()}", "u", "p")
    with pytest.raises(OrthancUnavailable):
        asyncio.run(source.fetch(client, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                 str(ds.SOPInstanceUID), 1, accept=OHIF_ACCEPT, location="x", max_bytes=1 << 20))
    # With the study's Patient ID known, the metadata and the frame are asked together; both fail the same way.
    source._patient_of_study.remember(str(ds.StudyInstanceUID), str(ds.PatientID))  # noqa: SLF001
    with pytest.raises(OrthancUnavailable):
        asyncio.run(source.fetch(client, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                 str(ds.SOPInstanceUID), 1, accept=OHIF_ACCEPT, location="x", max_bytes=1 << 20))


def test_an_eight_bit_frame_of_odd_length_is_answered_as_the_plugin_answers_it(orthanc: RunningOrthanc) -> None:
    ds = _instance(EXPLICIT_LE, sop_class="1.2.840.10008.5.1.4.1.1.1.1")  # DX for presentation: 8 bits allowed
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(35)) + b"\x00"  # 5 x 7 bytes, padded to an even length as stored
    _store(orthanc, ds)
    raw = _raw(orthanc, ds)
    assert raw is not None and _split(raw.content_type, raw.body) == _plugin(orthanc, ds)


def test_the_second_frame_of_a_multi_frame_image_is_answered_as_the_plugin_answers_it(
        orthanc: RunningOrthanc) -> None:
    ds = _instance(EXPLICIT_LE, sop_class="1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT: frames of 16 bits
    frames = np.arange(2 * 5 * 7, dtype=np.int16).reshape(2, 5, 7) * 3
    ds.NumberOfFrames, ds.PixelData = 2, frames.tobytes()
    _store(orthanc, ds)
    headers = {"Accept": OHIF_ACCEPT}
    second = httpx.get(f"{orthanc.url}/dicom-web/{_path(ds, 2)}", headers=headers, auth=_auth(orthanc))
    raw = _raw(orthanc, ds, frame=2)
    assert raw is not None
    assert _split(raw.content_type, raw.body) == _split(second.headers["content-type"], second.content)
    assert _split(raw.content_type, raw.body)[2] == frames[1].tobytes()
    assert _raw(orthanc, ds, frame=3) is None
