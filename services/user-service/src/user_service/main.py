"""The user-service app: the identity provider of the platform."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from aitrading.service import create_service
from user_service import api, users
from user_service.lockout import LockoutPolicy
from user_service.passwords import Passwords
from user_service.self_verification import OwnVerifier
from user_service.settings import Settings
from user_service.sign_in import Authenticator
from user_service.tokens import KeyRing, TokenIssuer

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    secret = settings.signing_key_passphrase
    passphrase = secret.get_secret_value() if secret else None
    keys = KeyRing(passphrase=passphrase, cache_s=settings.signing_key_cache_s,
                   retention_s=settings.access_token_ttl_s + settings.key_retention_margin_s)
    own = OwnVerifier(keys, settings)
    passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                          parallelism=settings.argon2_parallelism,
                          concurrency=settings.password_hash_concurrency)
    issuer = TokenIssuer(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                         ttl_s=settings.access_token_ttl_s)

    async def prepare(app: FastAPI) -> None:
        await passwords.prepare()
        if settings.admin_email and settings.admin_password:
            await users.bootstrap_admin(app.state.db, passwords, email=settings.admin_email,
                                        password=settings.admin_password.get_secret_value())

    # Our own tokens are verified by the library verifier too, with the JWKS read in-process.
    app = create_service(settings, routers=[api.router], migrations=MIGRATIONS, outbox=True,
                         resources=[keys, own], on_startup=[prepare], verifier=own.verifier)
    keys.use(app.state.db)
    app.state.keys = keys
    app.state.tokens = issuer
    app.state.passwords = passwords
    policy = LockoutPolicy(settings.lockout_threshold, settings.lockout_base_s, settings.lockout_max_s)
    app.state.authenticator = Authenticator(passwords, issuer, lockout_policy=policy,
                                            refresh_ttl_s=settings.refresh_token_ttl_s)
    return app
