"""Service-to-service credentials: a registry service proves itself with the shared service secret.

Every service of the registry may obtain a token for itself (`sub` = `service:<name>`) by presenting
`SERVICE_CLIENT_SECRET`, the same secret each service already reads from its settings. The comparison
takes the same time whatever is wrong, so nothing can be learnt by timing it.
"""

from __future__ import annotations

import hmac

from aitrading.errors import Unauthorized, Unavailable
from aitrading.registry import REGISTRY

_REFUSED = "the service name or secret is not valid"


def check(service: str, secret: str, shared_secret: str | None) -> None:
    if not shared_secret:
        raise Unavailable("service credentials are not configured on user-service (SERVICE_CLIENT_SECRET)")
    secret_ok = hmac.compare_digest(secret.encode(), shared_secret.encode())
    if not (secret_ok and service in REGISTRY):
        raise Unauthorized(_REFUSED)
