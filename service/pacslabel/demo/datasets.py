"""pydicom Dataset builders for the synthetic CT, MR and Secondary Capture instances.

Each function fills one IOD module. Identifying values go through the :class:`PhiLedger` so that the manifest
lists them; the module split follows PS3.3 so that ``dciodvfy`` finds what each IOD requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from pacslabel.demo.geometry import StackGeometry
from pacslabel.demo.phi import PhiLedger
from pacslabel.demo.plan import SeriesSpec, Site, StudySpec
from pacslabel.demo.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid

SOP_CLASS_BY_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage, "OT": SecondaryCaptureImageStorage}
# Retired "Detached ... Management" SOP classes are what modalities still put in these references.
DETACHED_PATIENT_MANAGEMENT = "1.2.840.10008.3.1.2.1.1"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
PRIVATE_CREATOR = "ACME 1.1"
PRIVATE_GROUP = 0x0009
CT_RESCALE_INTERCEPT = -1024
MR_MAX_VALUE = 4095


@dataclass(frozen=True)
class StudyUids:
    """The UIDs shared by all instances of one study."""

    study: str
    frame_of_reference: str
    referenced_study: str
    referenced_patient: str
    prior_study: str | None  # the StudyInstanceUID of the prior study this one is compared with

    @classmethod
    def derive(cls, seed: int, study: StudySpec) -> StudyUids:
        names = (study.patient.key, study.key)
        return cls(
            study=derive_uid(seed, "study", *names),
            frame_of_reference=derive_uid(seed, "frame-of-reference", *names),
            referenced_study=derive_uid(seed, "referenced-study", *names),
            referenced_patient=derive_uid(seed, "referenced-patient", study.patient.key),
            prior_study=cls.derive(seed, study.prior).study if study.prior else None,
        )


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def new_dataset() -> Dataset:
    ds = Dataset()
    # Set first so that pydicom encodes every text value (here and in sequence items) as Latin-1.
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _procedure_code(study: StudySpec) -> Dataset:
    """The site's local procedure code (a private coding scheme, as most RIS use)."""
    item = Dataset()
    item.CodeValue, item.CodeMeaning = study.procedure_code
    item.CodingSchemeDesignator = "99ACME"
    return item


def age_string(birth_da: str, on_da: str) -> str:
    born, on = date.fromisoformat(birth_da), date.fromisoformat(on_da)
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return f"{years:03d}Y"


def add_patient_module(ds: Dataset, study: StudySpec, uids: StudyUids, ledger: PhiLedger) -> None:
    """Patient and Patient Study modules, including the identifiers a hospital system attaches."""
    patient = study.patient
    ds.PatientName = ledger.person(patient.name, "patient_name")
    ds.PatientID = ledger.value("patient_id", patient.patient_id)
    ds.IssuerOfPatientID = ledger.value("issuer", patient.issuer)
    ds.PatientBirthDate = ledger.date(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = age_string(patient.birth_date, study.date)
    ds.PatientWeight = patient.weight_kg
    ds.PatientSize = patient.size_m
    ds.PatientAddress = ledger.value("address", patient.address)
    ds.PatientTelephoneNumbers = ledger.value("telephone", patient.telephone)
    others = []
    for other_id, issuer in patient.other_ids:
        item = Dataset()
        item.PatientID = ledger.value("patient_id", other_id)
        item.IssuerOfPatientID = ledger.value("issuer", issuer)
        item.TypeOfPatientID = "TEXT"
        others.append(item)
    ds.OtherPatientIDsSequence = others
    referenced_patient = Dataset()
    referenced_patient.ReferencedSOPClassUID = DETACHED_PATIENT_MANAGEMENT
    referenced_patient.ReferencedSOPInstanceUID = ledger.uid(uids.referenced_patient)
    ds.ReferencedPatientSequence = [referenced_patient]
    ds.AdditionalPatientHistory = ledger.text(_history_text(study, ledger))


def _history_text(study: StudySpec, ledger: PhiLedger) -> str:
    patient = study.patient
    text = (
        f"{study.history} Patient {ledger.display_name(patient.name)}, MRN {patient.patient_id}, "
        f"born {ledger.date_text(patient.birth_date, '%d/%m/%Y')}."
    )
    if study.prior is not None:
        text += f" Compared with prior CT of {ledger.date_text(study.prior.date, '%Y-%m-%d')}."
    return text


def add_study_module(ds: Dataset, study: StudySpec, uids: StudyUids, ledger: PhiLedger) -> None:
    """General Study module, with the request references an order system puts there."""
    patient = study.patient
    ds.StudyInstanceUID = ledger.uid(uids.study)
    ds.StudyDate = ledger.date(study.date)
    ds.StudyTime = ledger.time(study.time)
    ds.AccessionNumber = ledger.value("accession_number", study.accession)
    ds.StudyID = ledger.value("study_id", study.study_id)
    ds.ReferringPhysicianName = ledger.person(study.referring_physician)
    ds.PhysiciansOfRecord = ledger.person(study.referring_physician)
    ds.NameOfPhysiciansReadingStudy = ledger.person(study.site.reading_physician)
    family = ledger.display_name(patient.name, "family_given").split(",")[0]
    ds.StudyDescription = ledger.text(f"{study.description} ({family}, {patient.patient_id})")
    ds.ProcedureCodeSequence = [_procedure_code(study)]
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    referenced_study.ReferencedSOPInstanceUID = ledger.uid(uids.referenced_study)
    ds.ReferencedStudySequence = [referenced_study]


def add_series_module(
    ds: Dataset,
    study: StudySpec,
    uids: StudyUids,
    series: SeriesSpec | None,
    series_uid: str,
    ledger: PhiLedger,
) -> None:
    """General Series module (``series=None`` for the Secondary Capture series)."""
    site = study.site
    modality = series.modality if series else "OT"
    number = series.number if series else 99
    ds.Modality = modality
    ds.SeriesInstanceUID = ledger.uid(series_uid)
    ds.SeriesNumber = number
    ds.SeriesDate = ledger.date(study.date)
    ds.SeriesTime = ledger.time(later_time(study.time, series.minutes_after_study if series else 30))
    ds.BodyPartExamined = study.body_part
    description = series.description if series else "Screen capture"
    ds.SeriesDescription = ledger.text(f"{description} {ledger.date_text(study.date, '%d.%m.%Y')}")
    if series is not None:
        family = study.patient.name.split("^")[0]
        ds.ProtocolName = ledger.text(f"{series.protocol}_{ledger.value('patient_name', family)}")
        ds.PatientPosition = "HFS"
    ds.PerformingPhysicianName = ledger.person(site.performing_physician)
    ds.OperatorsName = [ledger.person(name) for name in site.operators]
    ds.PerformedProcedureStepID = ledger.value("procedure_id", f"P{number}-{study.accession[-8:]}")
    ds.PerformedProcedureStepStartDate = ledger.date(study.date)
    ds.PerformedProcedureStepStartTime = ledger.time(study.time)
    ds.PerformedProcedureStepDescription = ledger.text(f"{study.description} {study.accession}")
    ds.RequestAttributesSequence = [_request_attributes(study, uids, ledger)]


def _request_attributes(study: StudySpec, uids: StudyUids, ledger: PhiLedger) -> Dataset:
    """One Request Attributes item, holding a nested reference (an item inside an item)."""
    item = Dataset()
    item.AccessionNumber = ledger.value("accession_number", study.accession)
    item.StudyInstanceUID = ledger.uid(uids.study)
    item.RequestedProcedureID = ledger.value("procedure_id", f"RP{study.accession[-10:]}")
    item.RequestedProcedureDescription = ledger.text(f"{study.description} for {study.patient.patient_id}")
    item.ScheduledProcedureStepID = ledger.value("procedure_id", f"S{study.accession[-10:]}")
    item.ScheduledProcedureStepDescription = ledger.text(
        f"{study.description} {ledger.date_text(study.date, '%Y-%m-%d')}"
    )
    item.RequestedProcedureCodeSequence = [_procedure_code(study)]
    if uids.prior_study is not None:
        prior = Dataset()
        prior.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
        prior.ReferencedSOPInstanceUID = ledger.uid(uids.prior_study)
        item.ReferencedStudySequence = [prior]
    return item


def later_time(hhmmss: str, minutes: int, seconds: float = 0.0) -> str:
    """``hhmmss`` plus an offset, as TM (with a fraction when ``seconds`` has one)."""
    total = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + minutes * 60 + seconds
    whole = int(total)
    text = f"{whole // 3600 % 24:02d}{whole // 60 % 60:02d}{whole % 60:02d}"
    fraction = round(total - whole, 6)
    return f"{text}.{int(round(fraction * 1_000_000)):06d}" if fraction else text


def add_equipment_module(ds: Dataset, site: Site, ledger: PhiLedger) -> None:
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model
    ds.SoftwareVersions = site.software
    ds.StationName = ledger.value("station", site.station)
    ds.DeviceSerialNumber = ledger.value("serial_number", site.serial)
    ds.InstitutionName = ledger.value("institution", site.institution)
    ds.InstitutionAddress = ledger.value("address", site.address)
    ds.InstitutionalDepartmentName = ledger.value("department", site.department)


def add_private_block(ds: Dataset, study: StudySpec, ledger: PhiLedger) -> None:
    """A vendor private group with PHI in plain elements and inside a private sequence."""
    patient = study.patient
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", ledger.display_name(patient.name))
    block.add_new(0x02, "DA", ledger.date(study.date))
    block.add_new(0x03, "LO", ledger.text(f"MRN {patient.patient_id} ACC {study.accession}"))
    item = Dataset()
    item.PatientName = ledger.person(patient.name, "patient_name")
    item.PatientID = ledger.value("patient_id", patient.patient_id)
    item.PatientBirthDate = ledger.date(patient.birth_date)
    nested = item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    nested.add_new(0x01, "LO", ledger.text(f"Tech note for {ledger.display_name(patient.name)}"))
    block.add_new(0x10, "SQ", [item])


def add_image_common(
    ds: Dataset, study: StudySpec, series_minutes: int, ledger: PhiLedger, acquisition_number: int
) -> None:
    """General Image / General Acquisition attributes shared by all slices of a series."""
    acquisition_time = later_time(study.time, series_minutes)
    ds.AcquisitionNumber = acquisition_number
    ds.AcquisitionDate = ledger.date(study.date)
    ds.AcquisitionTime = ledger.time(acquisition_time)
    ds.AcquisitionDateTime = ledger.datetime(f"{study.date}{acquisition_time}")
    ds.ContentDate = ledger.date(study.date)
    ds.InstanceCreationDate = ledger.date(study.date)
    ds.InstanceCreationTime = ledger.time(later_time(study.time, series_minutes + 5))
    patient = study.patient
    ds.ImageComments = ledger.text(
        f"Pt {ledger.display_name(patient.name)}, MRN {patient.patient_id}, DOB "
        f"{ledger.date_text(patient.birth_date, '%Y-%m-%d')}, scanned "
        f"{ledger.date_text(study.date, '%m/%d/%Y')} at {study.site.institution}"
    )


def add_plane_and_pixel_template(ds: Dataset, geometry: StackGeometry) -> None:
    """Frame-independent parts of the Image Plane and Image Pixel modules."""
    ds.ImageOrientationPatient = geometry.orientation
    ds.PixelSpacing = [round(v, 6) for v in geometry.pixel_spacing]
    ds.SliceThickness = geometry.slice_thickness
    ds.SpacingBetweenSlices = round(geometry.slice_spacing, 6)
    ds.Rows = geometry.rows
    ds.Columns = geometry.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16


def add_ct_image_module(ds: Dataset, irradiation_event_uid: str, ledger: PhiLedger) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = CT_RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["ABDOMEN", "LUNG"]
    ds.KVP = 120
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 500
    ds.Exposure = 125
    ds.ConvolutionKernel = "Br40"
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = 400
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 160
    ds.RotationDirection = "CW"
    ds.CTDIvol = 9.8
    # CTDIvol means nothing without the phantom it refers to (dciodvfy warns otherwise).
    phantom = Dataset()
    phantom.CodeValue, phantom.CodingSchemeDesignator = "113691", "DCM"
    phantom.CodeMeaning = "IEC Body Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom]
    ds.IrradiationEventUID = ledger.uid(irradiation_event_uid)
    ds.ContrastBolusAgent = "Iomeprol 350"
    ds.ContrastBolusRoute = "IV"


def add_mr_image_module(ds: Dataset, series: SeriesSpec, site: Site) -> None:
    t2 = series.contrast == "T2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ["PFP"] if t2 else ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "tse2d1_15" if t2 else "se2d1"
    ds.RepetitionTime = 4000 if t2 else 550
    ds.EchoTime = 100 if t2 else 12
    ds.EchoTrainLength = 15 if t2 else 1
    ds.NumberOfAverages = 2
    ds.ImagingFrequency = round(42.577478 * (site.field_strength_t or 1.5), 6)
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = site.field_strength_t or 1.5
    ds.FlipAngle = 90
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.WindowCenter = 1200 if t2 else 800
    ds.WindowWidth = 2400 if t2 else 1600


def ct_pixels(hu: np.ndarray) -> bytes:
    """HU → stored int16 with the fixed intercept (values outside the 12-bit scanner range clipped)."""
    stored = np.clip(np.rint(hu) - CT_RESCALE_INTERCEPT, 0, 4095).astype("<i2")
    return stored.tobytes()


def mr_pixels(signal: np.ndarray) -> bytes:
    stored = np.clip(np.rint(signal), 0, MR_MAX_VALUE).astype("<u2")
    return stored.tobytes()


def add_sop_common(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> None:
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid


def base_dataset(
    study: StudySpec, uids: StudyUids, series: SeriesSpec | None, series_uid: str, ledger: PhiLedger
) -> Dataset:
    """Everything a series' instances share except the image modules."""
    ds = new_dataset()
    add_patient_module(ds, study, uids, ledger)
    add_study_module(ds, study, uids, ledger)
    add_series_module(ds, study, uids, series, series_uid, ledger)
    add_equipment_module(ds, study.site, ledger)
    add_private_block(ds, study, ledger)
    return ds
