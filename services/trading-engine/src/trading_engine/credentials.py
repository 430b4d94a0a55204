"""Venue credentials encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256) keyed by `credentials_key`.

`credentials_key` holds one or more Fernet keys, comma-separated. The first encrypts; every one of them
decrypts (a MultiFernet), so a key is rotated by putting a new key first and keeping the old ones for
the rows they encrypted. With no key configured nothing is encrypted and
nothing is stored: the caller gets a 503 naming the missing setting, never a row in clear.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from aitrading.errors import Unavailable

if TYPE_CHECKING:
    from trading_engine.settings import Settings


class CredentialsKeyMissing(Unavailable):
    def __init__(self) -> None:
        super().__init__("credentials_key is not configured: venue credentials cannot be encrypted, so "
                         "venue accounts cannot be used (set CREDENTIALS_KEY or CREDENTIALS_KEY_FILE)")


class CredentialsUnreadable(Unavailable):
    def __init__(self) -> None:
        super().__init__("stored venue credentials cannot be decrypted with the configured credentials_key "
                         "(was the key replaced instead of rotated?)")


def parse_keys(configured: str) -> list[Fernet]:
    """The Fernet keys of a `credentials_key` value; ValueError naming the bad one's position."""
    keys: list[Fernet] = []
    for position, raw in enumerate(part.strip() for part in configured.split(",")):
        if not raw:
            continue
        try:
            keys.append(Fernet(raw.encode()))
        except (ValueError, TypeError):
            raise ValueError(f"credentials_key: key {position + 1} is not a Fernet key "
                             "(32 bytes, urlsafe base64)") from None
    return keys


class Credentials:
    """Encrypts and decrypts one account's credentials (a JSON object) as a Fernet token."""

    def __init__(self, keys: list[Fernet]) -> None:
        if not keys:
            raise CredentialsKeyMissing()
        self._fernet = MultiFernet(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        """Raises CredentialsKeyMissing (503) when no key is configured."""
        try:
            keys = parse_keys(settings.credentials_key)
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        return cls(keys)

    def encrypt(self, credentials: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(credentials, separators=(",", ":")).encode()).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        try:
            plain = self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise CredentialsUnreadable() from None
        value = json.loads(plain)
        if not isinstance(value, dict):
            raise CredentialsUnreadable()
        return value
