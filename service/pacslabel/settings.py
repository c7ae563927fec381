"""One settings class for every pacslabel process.

Values come, in this order of precedence, from keyword arguments, ``PACSLABEL_*`` environment variables, an
optional YAML file named by ``PACSLABEL_CONFIG_FILE``, and the defaults below, which give a working local run.
Secrets that are not given are generated once into ``var/secrets.json`` for local runs; in production they must
be given explicitly and the process refuses to start otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SECRET_FIELDS = ("session_secret", "pseudonym_key", "orthanc_password")
DEFAULT_VAR_DIR = Path("var")


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message says which and why, in one line."""


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML file named by PACSLABEL_CONFIG_FILE (keys are the field names)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("PACSLABEL_CONFIG_FILE")
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise ConfigurationError(f"PACSLABEL_CONFIG_FILE={path}: no such file")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigurationError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path}: expected a mapping of setting names to values")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PACSLABEL_",
        extra="forbid",
        env_ignore_empty=True,
        validate_default=True,
    )

    env: Literal["development", "test", "production"] = "development"
    var_dir: Path = DEFAULT_VAR_DIR
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Database: SQLite under var/ unless a URL is given (postgresql+psycopg://... for scale).
    database_url: str | None = None

    # Orthanc: by default pacslabel starts its own Orthanc as a child process on loopback.
    orthanc_managed: bool = True
    orthanc_url: str = "http://127.0.0.1:8042"
    orthanc_username: str = "pacslabel"
    orthanc_password: SecretStr | None = None
    orthanc_dicom_port: int = Field(default=4242, ge=1, le=65535)
    orthanc_dicom_aet: str = "ORTHANC"
    orthanc_executable: str = "/usr/sbin/Orthanc"
    orthanc_plugins_dir: str = "/usr/share/orthanc/plugins"
    orthanc_dicomweb_root: str = "/dicom-web/"
    orthanc_timeout_s: float = Field(default=30.0, gt=0)
    orthanc_startup_timeout_s: float = Field(default=60.0, gt=0)

    # Web app (worklist, API, DICOMweb gateway, OHIF).
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = None
    session_secret: SecretStr | None = None
    session_max_age_s: int = Field(default=12 * 3600, gt=0)
    ohif_dist_dir: Path | None = None
    ohif_config_dir: Path | None = None
    stow_max_bytes: int = Field(default=2 * 1024**3, gt=0)

    # Storage SCP.
    scp_host: str = "127.0.0.1"
    scp_port: int = Field(default=11112, ge=1, le=65535)
    scp_ae_title: str = "PACSLABEL"
    scp_allowed_callers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    scp_routes_file: Path | None = None
    scp_min_free_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    scp_max_associations: int = Field(default=16, ge=1)

    # Workers (de-identification + forwarding), processes.
    workers: int = Field(default=2, ge=0, le=64)
    series_stable_s: float = Field(default=30.0, ge=0)

    # De-identification.
    pseudonym_key: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @field_validator("scp_allowed_callers", mode="before")
    @classmethod
    def _split_callers(cls, value: Any) -> Any:
        # PACSLABEL_SCP_ALLOWED_CALLERS=MODALITY1,PACS2 as well as a JSON/YAML list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("scp_ae_title", "orthanc_dicom_aet")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        if not 0 < len(value) <= 16 or "\\" in value or not value.isprintable():
            raise ValueError("an AE title is 1 to 16 printable characters without backslash")
        return value

    @field_validator("orthanc_url", "public_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        if value and value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @model_validator(mode="after")
    def _fill_secrets(self) -> Settings:
        missing = [name for name in SECRET_FIELDS if getattr(self, name) is None]
        if not self.orthanc_managed and "orthanc_password" in missing:
            # An external Orthanc has its own credentials; we cannot invent them.
            missing.remove("orthanc_password")
            if self.env == "production":
                raise ValueError(
                    "PACSLABEL_ORTHANC_PASSWORD must be given for an external Orthanc in production"
                )
            object.__setattr__(self, "orthanc_password", SecretStr(""))
        if not missing:
            return self
        if self.env == "production":
            names = ", ".join(f"PACSLABEL_{name.upper()}" for name in missing)
            raise ValueError(f"production refuses generated secrets; give {names}")
        stored = _load_or_create_local_secrets(self.var_dir)
        for name in missing:
            object.__setattr__(self, name, SecretStr(stored[name]))
        return self

    # Derived values -------------------------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'pacslabel.db').resolve()}"

    @property
    def web_url(self) -> str:
        return self.public_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def spool_dir(self) -> Path:
        return self.var_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.var_dir / "quarantine"

    @property
    def effective_ohif_dist_dir(self) -> Path:
        return self.ohif_dist_dir or self.var_dir / "ohif" / "current" / "dist"

    @property
    def orthanc_dir(self) -> Path:
        return self.var_dir / "orthanc"

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        assert isinstance(value, SecretStr), name
        return value.get_secret_value()

    def public_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        """The effective settings for `pacslabel config`; secrets masked unless asked."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            data[name] = self.secret(name) if show_secrets else "********"
        data["effective_database_url"] = self.effective_database_url
        data["web_url"] = self.web_url
        return data


def _load_or_create_local_secrets(var_dir: Path) -> dict[str, str]:
    """Secrets for local runs: generated once, kept in var/secrets.json (0600), the same on every start."""
    path = var_dir / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON; delete it to generate new local secrets") from exc
    changed = False
    for name in SECRET_FIELDS:
        if not stored.get(name):
            stored[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle, indent=2)
        os.replace(tmp, path)
    return stored


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one readable ConfigurationError line."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings(**overrides)
    except SettingsError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from None
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            env_name = f"PACSLABEL_{field.upper()}" if error["loc"] else field
            parts.append(f"{env_name}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigurationError("invalid configuration: " + "; ".join(parts)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
