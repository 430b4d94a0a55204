"""Settings read `*_FILE` secrets; logs are JSON lines with secrets redacted and the request id bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from aitrading.logging import REDACTED, configure_logging
from aitrading.request_context import request_id_var
from aitrading.settings import ServiceSettings


def test_file_secret_fills_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "db_url"
    secret.write_text("postgresql://svc@db:5432/prod\n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain@db:5432/prod")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    assert ServiceSettings().database_url == "postgresql://svc@db:5432/prod"


def test_file_secret_fills_structured_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "urls"
    secret.write_text('{"user-service": "http://users:8009"}')
    monkeypatch.setenv("SERVICE_URLS_FILE", str(secret))
    assert ServiceSettings().service_urls == {"user-service": "http://users:8009"}


def test_explicit_value_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "nats"
    secret.write_text("nats://from-file:4222")
    monkeypatch.setenv("NATS_URL_FILE", str(secret))
    assert ServiceSettings(nats_url="nats://given:4222").nats_url == "nats://given:4222"


def test_port_defaults_to_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings(service_name="user-service").listen_port == 8009
    assert ServiceSettings(service_name="user-service", port=9100).listen_port == 9100


def test_log_lines_are_json_with_request_id_and_redacted_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test-service", "INFO", json=True)
    token = request_id_var.set("req-42")
    try:
        structlog.get_logger("t").info("login", password="hunter2",
                                       headers={"Authorization": "Bearer abc.def"},
                                       note="sent Bearer eyJhbGciOi.payload.sig")
    finally:
        request_id_var.reset(token)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["request_id"] == "req-42"
    assert record["service"] == "test-service"
    assert record["password"] == REDACTED
    assert record["headers"]["Authorization"] == REDACTED
    assert "eyJhbGciOi" not in record["note"]
