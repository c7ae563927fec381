"""The one door to Orthanc: the client (REST + DICOMweb), its configuration and its process."""

from pacslabel.orthanc.client import OrthancClient, OrthancError, OrthancUnavailable, StoredInstance
from pacslabel.orthanc.config_file import OrthancConfigError, render_orthanc_config, write_orthanc_config
from pacslabel.orthanc.supervisor import OrthancProcess, OrthancStartError, check_external_orthanc

__all__ = [
    "OrthancClient",
    "OrthancConfigError",
    "OrthancError",
    "OrthancProcess",
    "OrthancStartError",
    "OrthancUnavailable",
    "StoredInstance",
    "check_external_orthanc",
    "render_orthanc_config",
    "write_orthanc_config",
]
