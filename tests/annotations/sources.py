"""A small synthetic CT series with real geometry, built in memory (no downloads, no demo dependency)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# 5 mm slices: a +2.5 mm shift lands exactly half-way between two slices (2.5 mm from the nearest).
SLICE_SPACING = 5.0
PIXEL_SPACING = (0.8, 0.8)
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def make_ct_series(
    *,
    slices: int = 12,
    rows: int = 64,
    columns: int = 64,
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    with_pixels: bool = True,
    shuffle: bool = True,
) -> list[Dataset]:
    """Axial CT slices (Datasets) of one series; returned out of order unless ``shuffle`` is False.

    Out of order on purpose: real series come from Orthanc in instance order, not in position order.
    """
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    rng = np.random.default_rng(7)
    datasets = []
    for index in range(slices):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName = "Pseudo^Anon"
        ds.PatientID = "PSEUDO-0001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.StudyID = "S1"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 2
        ds.InstanceNumber = index + 1
        ds.Manufacturer = "pacslabel-tests"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImageOrientationPatient = ORIENTATION
        ds.ImagePositionPatient = [-25.2, -25.2, -30.0 + index * SLICE_SPACING]
        ds.SliceLocation = -30.0 + index * SLICE_SPACING
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = SLICE_SPACING
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.Rows = rows
        ds.Columns = columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        if with_pixels:
            ds.PixelData = rng.integers(-100, 100, size=(rows, columns), dtype=np.int16).tobytes()
        datasets.append(ds)
    if shuffle:
        order = np.random.default_rng(3).permutation(slices)
        datasets = [datasets[i] for i in order]
    return datasets
