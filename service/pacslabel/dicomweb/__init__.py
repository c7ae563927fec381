"""The DICOMweb gateway: QIDO-RS/WADO-RS read routes (routes.py), filtering and BulkDataURI rewriting
(filtering.py), the series metadata cache (metadata_cache.py). STOW-RS lives next to it (annotations side).

Import the router from ``pacslabel.dicomweb.routes``; this package imports nothing heavy on its own.
"""
