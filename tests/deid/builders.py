"""Small PHI-laden datasets built in code for the de-identification unit tests."""

from __future__ import annotations

import io

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

KEY = b"unit-test-key-0123456789abcdef!!"
ORIGINAL_STUDY_UID = "1.2.826.0.1.3680043.10.1001.1"
ORIGINAL_SERIES_UID = "1.2.826.0.1.3680043.10.1001.1.2"
ORIGINAL_SOP_UID = "1.2.826.0.1.3680043.10.1001.1.2.3"
ORIGINAL_FOR_UID = "1.2.826.0.1.3680043.10.1001.9"
PATIENT_ID = "MRN4471882"
PATIENT_NAME = "Fairweather^Jonathan^Q"
ACCESSION = "ACC20230314"
PRIVATE_CREATOR = "ACME_PRIVATE_1"


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def make_ct(**overrides: object) -> Dataset:
    """A CT header full of PHI, with a private block, an overlay, and a 2x2 image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ORIGINAL_SOP_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ORIGINAL_SOP_UID
    ds.StudyDate = "20230314"
    ds.SeriesDate = "20230314"
    ds.ContentDate = "20230314"
    ds.AcquisitionDateTime = "20230314101500.250000"
    ds.StudyTime = "101500"
    ds.InstanceCreationDate = "20230314"
    ds.AccessionNumber = ACCESSION
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.InstitutionName = "Lakeside General Hospital"
    ds.InstitutionAddress = "12 Harbour Road, Lakeside"
    ds.ReferringPhysicianName = "Okonkwo^Adaeze"
    ds.StationName = "LAKECT01"
    ds.StudyDescription = "CT CHEST for Fairweather MRN4471882 2023-03-14"
    ds.SeriesDescription = "Axial 1mm 14/03/2023"
    ds.OperatorsName = "Tech^Tina"
    ds.ManufacturerModelName = "Scanmaster 9000"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = "LAKESIDE"
    ds.PatientBirthDate = "19760412"
    ds.PatientSex = "M"
    ds.PatientAge = "047Y"
    ds.PatientSize = "1.82"
    ds.PatientWeight = "81.5"
    ds.PatientAddress = "7 Elm Street, Lakeside"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "OLD-99812"
    ds.DeviceSerialNumber = "SN-778812"
    ds.ProtocolName = "Chest_Routine_Fairweather"
    ds.StudyInstanceUID = ORIGINAL_STUDY_UID
    ds.SeriesInstanceUID = ORIGINAL_SERIES_UID
    ds.StudyID = "S4471"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 7
    ds.FrameOfReferenceUID = ORIGINAL_FOR_UID
    ds.ImageComments = "Scanned by Dr Okonkwo on 03/14/2023, call 555-123-4567"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "Fairweather private note")
    block.add_new(0x02, "DA", "20230314")
    # Overlay plane 6000
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 2)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\x0f\x00")
    ds.add_new(0x60004000, "LT", "overlay by Fairweather")
    for keyword, value in overrides.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
