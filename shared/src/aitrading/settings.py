"""One settings object per service, built once from the environment and `*_FILE` secrets.

A variable `FOO_FILE=/run/secrets/foo` fills the field `foo` with that file's content (stripped), so
compose and Kubernetes secrets never sit in the environment; the file beats a plain `FOO`. Services
subclass `ServiceSettings` and add only their own fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class SecretFilesSource(PydanticBaseSettingsSource):
    """Reads field `foo` from the file named by the environment variable `FOO_FILE`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        return Path(path).read_text().strip(), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            raw, key, is_complex = self.get_field_value(field, name)
            if raw is not None:
                values[key] = self.prepare_field_value(name, field, raw, is_complex)
        return values


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Set by each service's Settings subclass as a class default.
    service_name: str = "service"
    version: str = "0.1.0"
    environment: str = "development"
    host: str = "127.0.0.1"
    port: int | None = None  # None: the registry port of `service_name`
    log_level: str = "INFO"
    log_json: bool = True

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/aitrading"
    database_pool_size: int = 10
    # The PostgreSQL schema; unset, the service's own (`user_service` for user-service). Tests may give
    # each app one of its own.
    database_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str | None = None
    # The user-service JWKS endpoint; derived from the registry when unset.
    jwks_url: str | None = None
    jwt_issuer: str = "aitrading-user-service"
    jwt_audience: str = "aitrading"
    # Address override per service, e.g. SERVICE_URLS='{"user-service": "http://10.0.0.5:8009"}'.
    service_urls: dict[str, str] = {}
    # The services this deployment runs (the gateway routes to them, central-hub expects them).
    # Unset: the service folders of this checkout; an installed image has none, so compose and
    # Kubernetes set DEPLOYED_SERVICES.
    deployed_services: list[str] | None = None
    # Credentials this service uses to obtain service-to-service tokens from user-service.
    service_client_secret: SecretStr | None = None
    heartbeat_interval_s: float = 5.0
    shutdown_grace_s: float = 10.0
    cors_origins: list[str] = []
    # Where a service keeps local files (an embedded warehouse, say), each under a folder of its name.
    # The launcher points every service at its data folder; containers mount a volume here.
    data_dir: Path = Path(".data")

    @property
    def service_data_dir(self) -> Path:
        return self.data_dir / self.service_name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A `*_FILE` secret beats the plain variable, so an override file can move a credential out
        # of the environment even when a base compose file sets the variable.
        return (init_settings, SecretFilesSource(settings_cls), env_settings, dotenv_settings,
                file_secret_settings)

    @property
    def listen_port(self) -> int:
        if self.port is not None:
            return self.port
        from aitrading.registry import REGISTRY

        return REGISTRY[self.service_name].port

    @property
    def db_schema(self) -> str:
        return self.database_schema or self.service_name.replace("-", "_")
