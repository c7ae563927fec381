"""Catalog of the de-identified data that landed in Orthanc: patients (pseudonyms), studies, series."""
