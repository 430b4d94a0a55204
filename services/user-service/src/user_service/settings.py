"""user-service settings: token lifetimes, password hashing cost, lockout, bootstrap admin.

Service credentials: one shared secret, `SERVICE_CLIENT_SECRET` (the `service_client_secret` every
service already reads to obtain its own tokens), lets any service named in the registry obtain a
service token at `POST /internal/service-token`. Unset, no service token is issued (503).

Signing keys: `SIGNING_KEY_PASSPHRASE` (or `SIGNING_KEY_PASSPHRASE_FILE`) encrypts the Ed25519
private keys at rest in Postgres; unset, they are stored unencrypted (development).
"""

from __future__ import annotations

from pydantic import SecretStr

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "user-service"

    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # How long a rotated-out key stays in the JWKS beyond the last token it could have signed.
    key_retention_margin_s: int = 5 * 60
    # How long a replica signs with the key it loaded before looking for a newer one.
    signing_key_cache_s: float = 30.0
    signing_key_passphrase: SecretStr | None = None

    # argon2id parameters (argon2-cffi defaults, RFC 9106 low-memory profile); raising them makes
    # existing hashes be rehashed at the next successful login.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    # Concurrent hashes (each takes `argon2_memory_kib`); more wait their turn.
    password_hash_concurrency: int = 4

    # Consecutive failures per email before logins are refused; the refusal lasts
    # lockout_base_s * 2^(failures - threshold), at most lockout_max_s.
    lockout_threshold: int = 5
    lockout_base_s: int = 30
    lockout_max_s: int = 3600

    # Created at start (idempotent) when both are set; ADMIN_PASSWORD_FILE works too.
    admin_email: str | None = None
    admin_password: SecretStr | None = None
