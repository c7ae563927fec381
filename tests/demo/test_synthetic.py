"""The synthetic demo studies: deterministic, valid DICOM, consistent geometry, and a complete PHI manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from typer.testing import CliRunner

from pacslabel.demo import DemoSet, generate_demo_studies
from pacslabel.demo.commands import app
from pacslabel.demo.phantoms import NOISE_SIGMA
from pacslabel.demo.plan import STUDY_MUELLER, STUDY_OBRIEN
from pacslabel.demo.synthetic import count_instances, write_studies
from pacslabel.demo.uids import IMPLEMENTATION_CLASS_UID

# Attributes whose string values identify someone (besides every PN, date, time and UID, checked by VR).
PHI_KEYWORDS = {
    "PatientID",
    "IssuerOfPatientID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "AdditionalPatientHistory",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
}
# UIDs that name a class or a syntax rather than an instance: not patient data.
CLASS_UID_KEYWORDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID"}
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "PN"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoSet:
    return generate_demo_studies(tmp_path_factory.mktemp("small"), seed=7, scale="small")


@pytest.fixture(scope="module")
def manifest(small: DemoSet) -> dict[str, Any]:
    return json.loads(small.manifest_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full_subset(tmp_path_factory: pytest.TempPathFactory) -> DemoSet:
    """One full-size CT study (with the SC) and one full-size MR study: enough to check real dimensions."""
    return write_studies(tmp_path_factory.mktemp("full"), [STUDY_MUELLER, STUDY_OBRIEN], seed=7, scale="full")


def _walk(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)
        else:
            yield elem


def _values(elem: DataElement) -> list[str]:
    if elem.value is None or elem.value == "":
        return []
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in values]


def _series_datasets(demo: DemoSet) -> Iterator[tuple[Any, list[Dataset]]]:
    for series in demo.series():
        if series.geometry is not None:
            datasets = sorted((dcmread(path) for path in series.files), key=lambda ds: int(ds.InstanceNumber))
            yield series, datasets


def test_same_seed_writes_identical_bytes(small: DemoSet, tmp_path: Path) -> None:
    again = generate_demo_studies(tmp_path, seed=7, scale="small")

    assert [p.relative_to(again.outdir) for p in again.files] == [p.relative_to(small.outdir) for p in small.files]
    for first, second in zip(small.files, again.files, strict=True):
        assert first.read_bytes() == second.read_bytes(), first
    assert small.manifest_path.read_bytes() == again.manifest_path.read_bytes()


def test_different_seed_changes_every_uid(manifest: dict[str, Any], tmp_path: Path) -> None:
    other = generate_demo_studies(tmp_path, seed=8, scale="small")
    other_uids = set(other.phi["uids"])

    assert len(other_uids) == len(manifest["uids"])
    assert other_uids.isdisjoint(manifest["uids"])
    # The PHI itself is fixed, so leak tests can rely on it whatever the seed.
    assert other.phi["phi_strings"] == manifest["phi_strings"]


def test_files_are_part10_explicit_vr_little_endian_with_latin1_names(small: DemoSet) -> None:
    assert len(small.files) == count_instances("small") == 61
    for path in small.files:
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM", path
        ds = dcmread(path)
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID.startswith("2.25.")
    mueller = dcmread(small.patients[0].studies[0].series[0].files[0])
    assert str(mueller.PatientName) == "Müller^Hans^Peter"
    assert b"M\xfcller^Hans" in small.patients[0].studies[0].series[0].files[0].read_bytes()  # Latin-1 on disk


def test_paths_follow_patient_study_series_layout(small: DemoSet, manifest: dict[str, Any]) -> None:
    entries = {entry["path"]: entry for entry in manifest["files"]}
    assert len(entries) == len(small.files)
    for path in small.files:
        relative = path.relative_to(small.outdir).as_posix()
        patient, study, series, name = relative.split("/")
        ds = dcmread(path)
        entry = entries[relative]
        assert name == f"{int(ds.InstanceNumber):04d}.dcm"
        assert entry["sop_instance_uid"] == ds.SOPInstanceUID
        assert entry["sop_class_uid"] == ds.SOPClassUID
        assert entry["series_instance_uid"] == ds.SeriesInstanceUID
        assert entry["study_instance_uid"] == ds.StudyInstanceUID
        assert entry["patient_id"] == ds.PatientID
        assert entry["modality"] == ds.Modality


def test_slice_positions_step_along_the_normal_by_the_spacing(small: DemoSet) -> None:
    checked = 0
    for series, datasets in _series_datasets(small):
        first = datasets[0]
        orientation = np.array(first.ImageOrientationPatient, dtype=float)
        row, column = orientation[:3], orientation[3:]
        normal = np.cross(row, column)
        assert np.isclose(np.dot(row, column), 0.0) and np.isclose(np.linalg.norm(row), 1.0)
        assert np.isclose(np.linalg.norm(column), 1.0)
        spacing = float(first.SpacingBetweenSlices)
        for ds in datasets:
            assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
            assert list(ds.ImageOrientationPatient) == list(first.ImageOrientationPatient)
            assert list(ds.PixelSpacing) == list(first.PixelSpacing)
            assert ds.SliceThickness == first.SliceThickness and ds.SpacingBetweenSlices == first.SpacingBetweenSlices
            position = np.array(ds.ImagePositionPatient, dtype=float)
            assert np.isclose(float(ds.SliceLocation), np.dot(position, normal), atol=1e-3)
        positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
        assert np.allclose(np.diff(positions, axis=0), normal * spacing, atol=1e-3), series.key
        assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, len(datasets) + 1))
        assert np.allclose(positions[0], series.geometry.position(0), atol=1e-3)
        checked += 1
    assert checked == 6  # 3 CT + 3 MR series, including an oblique and a coronal one


def test_series_of_a_study_share_one_frame_of_reference(small: DemoSet) -> None:
    for patient in small.patients:
        for study in patient.studies:
            image_series = [s for s in study.series if s.geometry is not None]
            frames = {dcmread(s.files[0]).FrameOfReferenceUID for s in image_series}
            assert len(frames) == 1, study.key
    all_frames = {s.frame_of_reference_uid for s in small.series() if s.frame_of_reference_uid}
    assert len(all_frames) == 5  # one per study
    two_series_study = next(
        st for p in small.patients for st in p.studies if len(st.series) == 2 and p.key == "patient03"
    )
    orientations = {tuple(dcmread(s.files[0]).ImageOrientationPatient) for s in two_series_study.series}
    assert len(orientations) == 2  # same frame, different planes (axial and oblique)


def test_full_scale_has_real_dimensions_and_pixel_types(full_subset: DemoSet) -> None:
    ct = next(s for s in full_subset.series() if s.modality == "CT")
    mr = next(s for s in full_subset.series() if s.modality == "MR")
    assert len(ct.files) == 120 and len(mr.files) == 40
    ct_slice = dcmread(ct.files[60])
    assert (ct_slice.Rows, ct_slice.Columns) == (512, 512)
    assert ct_slice.pixel_array.dtype == np.int16 and ct_slice.PixelRepresentation == 1
    hu = ct_slice.pixel_array * float(ct_slice.RescaleSlope) + float(ct_slice.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 500  # air outside the body and a bony ring inside it
    mr_slice = dcmread(mr.files[20])
    assert (mr_slice.Rows, mr_slice.Columns) == (256, 256)
    assert mr_slice.pixel_array.dtype == np.uint16 and mr_slice.pixel_array.max() <= 4095


def test_dciodvfy_reports_no_errors(small: DemoSet, full_subset: DemoSet) -> None:
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy is not None, "dciodvfy (Debian package dicom3tools) must be installed"
    samples = [s.files[0] for s in small.series()] + [small.series()[0].files[-1]]
    for series in full_subset.series():
        samples += [series.files[0], series.files[len(series.files) // 2]]
    problems = {}
    for path in samples:
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
        output = result.stdout + result.stderr
        assert "Image" in output, output  # dciodvfy names the IOD it checked (CTImage, MRImage, SCImage)
        errors = [line for line in output.splitlines() if "Error" in line]
        if errors:
            problems[str(path)] = errors
    assert not problems


def test_manifest_lists_every_phi_value_in_the_files(small: DemoSet, manifest: dict[str, Any]) -> None:
    phi, uids = set(manifest["phi_strings"]), set(manifest["uids"])
    dates, times, datetimes = set(manifest["dates"]), set(manifest["times"]), set(manifest["datetimes"])
    missing: set[tuple[str, str]] = set()
    checked = 0
    for path in small.files:
        ds = dcmread(path)
        for elem in [*_walk(ds), *_walk(ds.file_meta)]:
            keyword = elem.keyword or str(elem.tag)
            private_text = elem.tag.is_private and elem.tag.element >= 0x100 and elem.VR in TEXT_VRS
            for value in _values(elem):
                if elem.VR == "UI" and keyword not in CLASS_UID_KEYWORDS | {"ImplementationClassUID"}:
                    expected: set[str] = uids
                elif elem.VR == "DA":
                    expected = dates
                elif elem.VR == "TM":
                    expected = times
                elif elem.VR == "DT":
                    expected = datetimes
                elif elem.VR == "PN" or keyword in PHI_KEYWORDS or private_text:
                    expected = phi
                else:
                    continue
                checked += 1
                if value not in expected:
                    missing.add((keyword, value))
    assert not missing
    assert checked > 61 * 50
    # The planted PHI reaches nested items and the private group, and the burned-in strings are listed too.
    for text in ("Müller^Hans^Peter", "Hans Müller", "4711081501", "SSN-512-44-8821", "MUELLER, HANS PETER"):
        assert text in phi
    assert "19580412" in dates and "20230314" in dates and "20230902" in dates


def test_nested_sequences_and_private_group_carry_phi(small: DemoSet) -> None:
    ds = dcmread(small.patients[1].studies[1].series[0].files[0])  # the follow-up study
    assert ds.OtherPatientIDsSequence[0].PatientID == "SSN-512-44-8821"
    request = ds.RequestAttributesSequence[0]
    assert request.AccessionNumber == ds.AccessionNumber and request.RequestedProcedureID
    assert request.ScheduledProcedureStepID
    prior_study_uid = dcmread(small.patients[1].studies[0].series[0].files[0]).StudyInstanceUID
    assert request.ReferencedStudySequence[0].ReferencedSOPInstanceUID == prior_study_uid  # item inside an item
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    assert ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID
    assert ds.ProcedureCodeSequence[0].CodeValue == "CTAPW"
    block = ds.private_block(0x0009, "ACME 1.1")
    assert block[0x01].value == "Jane Smith"
    assert block[0x02].value == "20230902"
    private_item = block[0x10].value[0]
    assert private_item.PatientName == "Smith^Jane^Ann" and private_item.PatientID == "RMC00982231"
    assert "Jane Smith" in private_item.private_block(0x0009, "ACME 1.1")[0x01].value
    assert "2023-03-14" in ds.AdditionalPatientHistory  # free text quoting the prior study's date


def test_sites_have_distinct_manufacturers_and_stations(small: DemoSet) -> None:
    firsts = [dcmread(s.files[0]) for s in small.series()]
    assert {ds.Manufacturer for ds in firsts} == {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "CANON_MEC"}
    assert len({ds.StationName for ds in firsts}) == 4
    assert len({ds.InstitutionName for ds in firsts}) == 4


def test_one_patient_has_two_studies_on_different_days(small: DemoSet, manifest: dict[str, Any]) -> None:
    longitudinal = [p for p in manifest["patients"] if len(p["studies"]) == 2]
    assert len(longitudinal) == 1
    patient = longitudinal[0]
    first, second = patient["studies"]
    assert first["study_date"] != second["study_date"]
    assert first["study_instance_uid"] != second["study_instance_uid"]
    datasets = [dcmread(small.outdir / study["series"][0]["files"][0]) for study in patient["studies"]]
    assert datasets[0].PatientID == datasets[1].PatientID == patient["patient_id"]
    assert datasets[0].StudyDate != datasets[1].StudyDate
    assert datasets[0].PatientName == datasets[1].PatientName
    assert [ds.PatientAge for ds in datasets] == [study["patient_age"] for study in patient["studies"]]
    # The lesion is tracked across the two studies: same id, grown at follow-up.
    tracked = [lesion for lesion in manifest["lesions"] if lesion["patient_id"] == patient["patient_id"]]
    l1 = [lesion for lesion in tracked if lesion["lesion_id"] == "L1"]
    assert len(l1) == 2 and l1[1]["radii_mm"][0] > l1[0]["radii_mm"][0]


def test_secondary_capture_has_burned_in_text_inside_its_boxes(small: DemoSet, manifest: dict[str, Any]) -> None:
    boxes = manifest["burned_in_text"]
    assert {box["kind"] for box in boxes} >= {"patient_name", "patient_id", "birth_date", "accession_number"}
    ds = dcmread(small.outdir / boxes[0]["path"])
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.BurnedInAnnotation == "YES" and ds.ConversionType == "WSD"
    assert (ds.Rows, ds.Columns) == (512, 512)
    pixels = ds.pixel_array
    covered = np.zeros(pixels.shape, dtype=bool)
    for box in boxes:
        assert box["sop_instance_uid"] == ds.SOPInstanceUID
        left, top, right, bottom = box["box"]
        inside = pixels[top:bottom, left:right]
        assert inside.size > 0 and (inside > 128).mean() > 0.1, box  # real ink, not an empty rectangle
        covered[top:bottom, left:right] = True
        assert box["text"] in manifest["phi_strings"]
    # Outside the boxes the text bands are background: the boxes cover all of the burned-in text.
    bands = np.zeros(pixels.shape, dtype=bool)
    bands[:64, :] = bands[-64:, :] = True
    assert not pixels[bands & ~covered].any()
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in manifest["uids"]


def test_lesions_appear_where_the_manifest_says(small: DemoSet, manifest: dict[str, Any]) -> None:
    series_by_uid = {series.series_instance_uid: datasets for series, datasets in _series_datasets(small)}
    assert len(manifest["lesions"]) == 8
    for lesion in manifest["lesions"]:
        datasets = series_by_uid[lesion["series_instance_uid"]]
        orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
        row, column = orientation[:3], orientation[3:]
        normal = np.cross(row, column)
        center = np.array(lesion["center_mm"])
        offsets = [abs(np.dot(center - np.array(ds.ImagePositionPatient, dtype=float), normal)) for ds in datasets]
        ds = datasets[int(np.argmin(offsets))]
        assert int(ds.InstanceNumber) in lesion["intersecting_instance_numbers"]
        relative = center - np.array(ds.ImagePositionPatient, dtype=float)
        spacing = [float(v) for v in ds.PixelSpacing]
        i, j = round(np.dot(relative, column) / spacing[0]), round(np.dot(relative, row) / spacing[1])
        value = float(ds.pixel_array[i, j]) * float(getattr(ds, "RescaleSlope", 1))
        value += float(getattr(ds, "RescaleIntercept", 0))
        sigma = NOISE_SIGMA["CT" if ds.Modality == "CT" else "T2"]
        assert abs(value - lesion["expected_value"]) < 5 * sigma, lesion


def test_cli_generate_prints_a_one_line_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", str(tmp_path / "out"), "--seed", "3", "--scale", "small", "--no-progress"]
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Wrote 61 files (4 patients, 5 studies, 7 series")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["seed"] == 3


def test_unknown_scale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale"):
        generate_demo_studies(tmp_path, scale="huge")  # type: ignore[arg-type]
