"""The web app: JSON API, server-rendered pages, and (later) the DICOMweb gateway and OHIF hosting."""
