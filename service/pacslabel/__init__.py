"""pacslabel: de-identifying ingest, blinded reading and versioned DICOM annotations beside Orthanc."""

__version__ = "0.1.0"
