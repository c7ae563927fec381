"""STOW-RS through the gateway: forged or broken requests are refused with a clear 4xx and nothing reaches
Orthanc; the multipart parser takes what real clients send (quoted boundary, leading CRLF, preamble)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacslabel.annotations.part10_splice import read_part10
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.versioning import read_author
from pacslabel.dicomweb.multipart import encode_multipart_related, parse_multipart_related, related_boundary
from pacslabel.errors import BadInput
from tests.annotations.conftest import sparse_labels
from tests.annotations.test_versions_env import (  # noqa: F401  (env is a fixture)
    Env,
    env,
    failures,
    make_seg,
    part10,
    referenced,
    stored_file,
    stow,
)
from tests.fixtures.orthanc import ct_dataset


def _shifted(environment: Env) -> Dataset:
    seg = make_seg(environment.studies["A"])
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        frame.PlanePositionSequence[0].ImagePositionPatient = [position[0], position[1], float(position[2]) + 2.5]
    return seg


def _foreign_frame_of_reference(environment: Env) -> Dataset:
    seg = make_seg(environment.studies["A"])
    seg.FrameOfReferenceUID = "1.2.3.4.5.6.7.8.9"
    return seg


def _disguised(environment: Env) -> Dataset:
    ct = ct_dataset(study_instance_uid=environment.studies["A"].study_uid)
    ct.Modality = "SEG"
    return ct


def _plain_ct(environment: Env) -> Dataset:
    return ct_dataset(study_instance_uid=environment.studies["A"].study_uid)


FORGERIES: dict[str, tuple[Callable[[Env], Dataset | bytes], int, str]] = {
    "another task's study": (lambda e: make_seg(e.studies["B"]), 0x0124, "no open task of yours for this study"),
    "shifted geometry": (_shifted, 0xC000, "Shifted geometry"),
    "foreign frame of reference": (_foreign_frame_of_reference, 0xC000, "FrameOfReferenceUID"),
    "non-SEG disguised as SEG": (_disguised, 0xA900, "disguised as SEG"),
    "not SEG or SR": (_plain_ct, 0x0122, "Only SEG and SR objects can be stored here"),
    "garbage bytes": (lambda e: b"\x00garbage, not DICOM" * 10, 0xC000, "not a DICOM Part-10 instance"),
    "truncated part-10": (lambda e: part10(make_seg(e.studies["A"]))[:700], 0xC000, "Part 1"),
}


@pytest.mark.parametrize("case", list(FORGERIES), ids=list(FORGERIES))
def test_forged_stow_is_refused_with_a_reason_and_stores_nothing(env: Env, case: str) -> None:  # noqa: F811
    make, failure_reason, text = FORGERIES[case]
    before = env.orthanc.count_instances()
    response = stow(env, "reader1", make(env))
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    [(reason, message)] = failures(response)
    assert reason == failure_reason, message
    assert text in message
    assert referenced(response) == []
    assert env.orthanc.count_instances() == before
    listed = env.client.get(f"/api/tasks/{env.studies['A'].task_id}/annotations", headers=env.headers["reader1"])
    assert listed.json()["versions"] == []


def test_study_in_the_path_must_be_the_datasets_study(env: Env) -> None:  # noqa: F811
    before = env.orthanc.count_instances()
    response = stow(env, "reader1", make_seg(env.studies["A"]), study=env.studies["B"].study_uid)
    assert response.status_code == 409
    [(reason, message)] = failures(response)
    assert reason == 0xA900 and "differs from the study in the request URL" in message
    assert env.orthanc.count_instances() == before
    ok = stow(env, "reader1", make_seg(env.studies["A"]), study=env.studies["A"].study_uid)
    assert ok.status_code == 200, ok.text


def test_one_good_and_one_bad_part_answer_202_with_both_sequences(env: Env) -> None:  # noqa: F811
    before = env.orthanc.count_instances()
    response = stow(env, "reader1", make_seg(env.studies["A"]), b"garbage")
    assert response.status_code == 202, response.text
    assert len(referenced(response)) == 1 and len(failures(response)) == 1
    assert env.orthanc.count_instances() == before + 1


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/dicom", 415),
    ("multipart/related; boundary=abc", 415),
    ('multipart/related; type="application/dicom+json"; boundary=abc', 415),
    ("multipart/form-data; boundary=abc", 415),
    ('multipart/related; type="application/dicom"', 400),
])
def test_wrong_content_type_is_refused_before_anything_is_read(env: Env, content_type: str, status: int) -> None:  # noqa: F811
    before = env.orthanc.count_instances()
    response = stow(env, "reader1", make_seg(env.studies["A"]), content_type=content_type)
    assert response.status_code == status
    assert response.json()["detail"]
    assert env.orthanc.count_instances() == before


def test_unquoted_parameters_and_size_limit_and_authentication(env: Env) -> None:  # noqa: F811
    seg = make_seg(env.studies["A"])
    assert stow(env, "reader1", seg, quote=False).status_code == 200
    env.app.state.stow_max_bytes = 1000
    before = env.orthanc.count_instances()
    too_big = stow(env, "reader1", seg)
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    assert env.orthanc.count_instances() == before
    del env.app.state.stow_max_bytes
    body, header = encode_multipart_related([part10(seg)])
    anonymous = env.client.post("/dicomweb/studies", content=body, headers={"Content-Type": header})
    assert anonymous.status_code == 401
    truncated = env.client.post("/dicomweb/studies", content=body[:-30],
                                headers={**env.headers["reader1"], "Content-Type": header})
    assert truncated.status_code == 400 and "closing boundary" in truncated.json()["detail"]
    assert env.orthanc.count_instances() == before


def test_failure_answers_echo_only_what_the_client_sent(env: Env) -> None:  # noqa: F811
    """A reader probing another reader's study learns nothing: the answer has only the UIDs they sent."""
    seg = make_seg(env.studies["B"])
    response = stow(env, "reader1", seg)
    text = response.text
    assert env.studies["B"].series_uid not in text and str(env.studies["B"].task_id) not in text.split('"')
    item = response.json()["00081198"]["Value"][0]
    assert item["00081155"]["Value"] == [seg.SOPInstanceUID]


def _truncated_pixels(environment: Env) -> bytes:
    seg = make_seg(environment.studies["A"])
    seg.PixelData = seg.PixelData[:100]
    return part10(seg)


def test_truncated_pixel_data_are_refused_with_the_lengths(env: Env) -> None:  # noqa: F811
    before = env.orthanc.count_instances()
    response = stow(env, "reader1", _truncated_pixels(env))
    assert response.status_code == 409
    [(reason, message)] = failures(response)
    # highdicom writes one frame per (segment, slice) holding pixels; BINARY frames are 1 bit per pixel.
    frames = make_seg(env.studies["A"]).NumberOfFrames
    assert f"PixelData holds 100 bytes, but NumberOfFrames ({frames}) x Rows (64) x Columns (64) x " \
           f"BitsAllocated (1) needs {frames * 64 * 64 // 8} bytes" in message, message
    assert reason == 0xC000 and env.orthanc.count_instances() == before


def test_the_stored_version_keeps_the_received_frames_and_pixels_byte_for_byte(env: Env,  # noqa: F811
                                                                               tmp_path: Path) -> None:
    """Only the header is encoded again: the per-frame groups and pixel data in Orthanc are the bytes sent."""
    study = env.studies["A"]
    sent = part10(make_seg(study))
    response = stow(env, "reader1", sent)
    assert response.status_code == 200, response.text
    [item] = referenced(response)
    stored = stored_file(env, item["00081155"]["Value"][0])  # type: ignore[index]

    sent_elements, stored_elements = read_part10(sent).elements, read_part10(stored).elements
    for tag in (0x52009230, 0x7FE00010):  # PerFrameFunctionalGroupsSequence, PixelData
        before, after = sent_elements[tag], stored_elements[tag]  # type: ignore[index]
        assert stored[after.start:after.end] == sent[before.start:before.end]
    dataset = dcmread(BytesIO(stored))
    assert read_author(dataset) == "reader1" and dataset.InstanceNumber == 1
    np.testing.assert_array_equal(read_label_array(dataset, study.source), sparse_labels(study.source.shape))
    executable = shutil.which("dciodvfy")
    assert executable, "dciodvfy (Debian package dicom3tools) is required"
    path = tmp_path / "stored.dcm"
    path.write_bytes(stored)
    result = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line] == []


# --- the parser alone -----------------------------------------------------------------------------------

def test_parser_accepts_what_dicomweb_clients_send() -> None:
    parts = [b"\x00" * 5 + b"\r\n--not-the-boundary\r\n", b"second"]
    for quote in (True, False):
        for leading_crlf in (True, False):
            body, header = encode_multipart_related(parts, quote=quote, leading_crlf=leading_crlf)
            parsed = parse_multipart_related(body, related_boundary(header))
            assert [p.content for p in parsed] == parts
            assert all(p.content_type == "application/dicom" for p in parsed)
    # A preamble, transport padding after the delimiter, an epilogue, and an extra transfer-syntax parameter.
    body = (b"preamble text\r\n--b1 \r\nContent-Type: application/dicom\r\n\r\nX\r\n--b1--\r\nepilogue")
    header = 'multipart/related; type="application/dicom"; transfer-syntax=*; boundary=b1'
    assert [p.content for p in parse_multipart_related(body, related_boundary(header))] == [b"X"]


@pytest.mark.parametrize("body", [b"", b"no boundary at all", b"--b1\r\nContent-Type: x\r\n\r\nX", b"--b1\r\nX"])
def test_parser_refuses_broken_bodies(body: bytes) -> None:
    with pytest.raises(BadInput):
        parse_multipart_related(body, "b1")


def test_parser_keeps_bytes_exact() -> None:
    payload = bytes(range(256)) * 100
    body, header = encode_multipart_related([payload, copy.copy(payload)])
    assert [p.content for p in parse_multipart_related(body, related_boundary(header))] == [payload, payload]
