"""Render ``orthanc/orthanc.json.template`` into the plain-JSON configuration of the managed Orthanc.

The template is Orthanc's JSON with whole-line ``//`` comments and ``${PLACEHOLDER}`` fields
(``string.Template``). Every value is JSON-escaped before substitution, so a password or a path can never
break out of its string, and the result is parsed back with ``json.loads`` before it is written: a template
mistake fails here with a line number rather than as an Orthanc start-up error.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pacslabel.settings import Settings

TEMPLATE_NAME = "orthanc.json.template"
CONFIG_NAME = "orthanc.json"
DICOMWEB_PLUGIN_NAME = "libOrthancDicomWeb.so"
ORTHANC_NAME = "pacslabel"

# C-FIND answer caps (Orthanc 1.10 applies them to its C-FIND SCP only; QIDO-RS pages with limit/offset).
LIMIT_FIND_RESULTS = 1000
LIMIT_FIND_INSTANCES = 10000

_COMMENT_LINE = re.compile(r"^\s*//")


class OrthancConfigError(ValueError):
    """The Orthanc template or the settings it is filled with cannot give a valid configuration."""


def default_template_path() -> Path:
    """``<repo>/orthanc/orthanc.json.template``: the template sits beside the service, not inside the package."""
    return Path(__file__).resolve().parents[3] / "orthanc" / TEMPLATE_NAME


def http_address(settings: Settings) -> tuple[str, int]:
    """Host and port of ``settings.orthanc_url`` (default port from the scheme)."""
    parts = urlsplit(settings.orthanc_url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError as exc:
        raise OrthancConfigError(f"PACSLABEL_ORTHANC_URL={settings.orthanc_url!r}: invalid port") from exc
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host, port


def dicomweb_plugin_path(settings: Settings) -> Path:
    return Path(settings.orthanc_plugins_dir) / DICOMWEB_PLUGIN_NAME


def normalized_dicomweb_root(root: str) -> str:
    """Orthanc wants the DICOMweb root with a leading and a trailing slash (``/dicom-web/``)."""
    return "/" + root.strip("/") + "/" if root.strip("/") else "/"


def template_values(settings: Settings) -> dict[str, str | int | bool]:
    """The placeholder values for ``settings``; paths are absolute because Orthanc resolves relative paths
    against its working directory, which is not ours."""
    _, port = http_address(settings)
    orthanc_dir = settings.orthanc_dir.resolve()
    return {
        "NAME": ORTHANC_NAME,
        "STORAGE_DIRECTORY": str(orthanc_dir / "storage"),
        "INDEX_DIRECTORY": str(orthanc_dir / "index"),
        "DICOMWEB_PLUGIN": str(dicomweb_plugin_path(settings)),
        "DICOMWEB_ROOT": normalized_dicomweb_root(settings.orthanc_dicomweb_root),
        "HTTP_PORT": port,
        "ORTHANC_USERNAME": settings.orthanc_username,
        "ORTHANC_PASSWORD": settings.secret("orthanc_password"),
        "DICOM_AET": settings.orthanc_dicom_aet,
        "DICOM_PORT": settings.orthanc_dicom_port,
        "SCP_AE_TITLE": settings.scp_ae_title,
        "SCP_PORT": settings.scp_port,
        # Orthanc's "stable" flag then agrees with our own series grouping; Orthanc wants whole seconds >= 1.
        "STABLE_AGE": max(1, math.ceil(settings.series_stable_s)),
        "LIMIT_FIND_RESULTS": LIMIT_FIND_RESULTS,
        "LIMIT_FIND_INSTANCES": LIMIT_FIND_INSTANCES,
    }


def render_template(template_text: str, values: dict[str, str | int | bool]) -> dict[str, Any]:
    """Substitute ``values`` into ``template_text`` and return the parsed configuration.

    A placeholder inside quotes receives the JSON-escaped string without its quotes; a bare placeholder
    receives the JSON literal (number, true/false).
    """
    escaped = {
        name: json.dumps(value)[1:-1] if isinstance(value, str) else json.dumps(value)
        for name, value in values.items()
    }
    try:
        text = string.Template(template_text).substitute(escaped)
    except KeyError as exc:
        raise OrthancConfigError(f"Orthanc template placeholder ${{{exc.args[0]}}} has no value") from None
    except ValueError as exc:
        raise OrthancConfigError(f"Orthanc template has an invalid placeholder: {exc}") from None
    # Blank instead of delete, so that json's line numbers are the template's line numbers.
    lines = ["" if _COMMENT_LINE.match(line) else line for line in text.splitlines()]
    try:
        config = json.loads("\n".join(lines))
    except json.JSONDecodeError as exc:
        raise OrthancConfigError(
            f"Orthanc template does not render to JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(config, dict):
        raise OrthancConfigError("Orthanc template must render to a JSON object")
    return config


def render_orthanc_config(settings: Settings, template_path: Path | None = None) -> dict[str, Any]:
    path = template_path or default_template_path()
    values = template_values(settings)
    for name, value in values.items():
        # Orthanc replaces ${VAR} in the raw configuration text with its environment (unset -> ""), so a
        # password like "a${B}c" would silently become "ac".
        if isinstance(value, str) and "${" in value:
            setting = "PACSLABEL_ORTHANC_PASSWORD" if name == "ORTHANC_PASSWORD" else name
            raise OrthancConfigError(f"{setting} must not contain '${{': Orthanc would expand it")
    try:
        template_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OrthancConfigError(f"cannot read the Orthanc template {path}: {exc.strerror}") from None
    return render_template(template_text, values)


def write_orthanc_config(
    settings: Settings,
    path: Path | None = None,
    template_path: Path | None = None,
) -> Path:
    """Render the configuration to ``path`` (default ``var/orthanc/orthanc.json``), atomically and 0600
    because it holds the Orthanc password; create the storage and index directories it names."""
    config = render_orthanc_config(settings, template_path)
    target = path or settings.orthanc_dir / CONFIG_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    for key in ("StorageDirectory", "IndexDirectory"):
        Path(config[key]).mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover .tmp from a crash may have other permissions
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, target)
    return target
