"""Password policy and argon2id hashing.

Hashing and verifying are CPU- and memory-heavy by design, so they run in worker threads (never on the
event loop) and at most `concurrency` at a time. Verifying against an unknown user still costs one
full verification of a decoy hash, so response time does not tell which emails have accounts.
"""

from __future__ import annotations

import asyncio
import enum

import structlog
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_log = structlog.get_logger("user_service.passwords")

MIN_LENGTH = 10
MAX_LENGTH = 1024

_CLASS_NAMES = ("lowercase letters", "uppercase letters", "digits", "symbols or spaces")


def character_classes(password: str) -> set[str]:
    """Which of lowercase, uppercase, digits and symbols (anything else) the password uses."""
    found: set[str] = set()
    for ch in password:
        if ch.islower():
            found.add(_CLASS_NAMES[0])
        elif ch.isupper():
            found.add(_CLASS_NAMES[1])
        elif ch.isdigit():
            found.add(_CLASS_NAMES[2])
        else:
            found.add(_CLASS_NAMES[3])
    return found


def password_problems(password: str, *, email: str | None = None) -> list[str]:
    """Every reason the password is too weak, in words a person can act on; empty when it is fine."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters long (it has {len(password)})")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters long (it has {len(password)})")
    classes = character_classes(password)
    if len(classes) == 1:
        (only,) = classes
        problems.append(f"must mix at least two kinds of characters (lowercase letters, uppercase letters, "
                        f"digits, symbols); it has only {only}")
    if email and password.strip().lower() == email.strip().lower():
        problems.append("must not be the email address")
    return problems


class Verification(enum.Enum):
    MISMATCH = "mismatch"
    OK = "ok"
    OK_NEEDS_REHASH = "ok-needs-rehash"  # right password, hashed with other parameters than today's

    @property
    def ok(self) -> bool:
        return self is not Verification.MISMATCH


class Passwords:
    """argon2id hashing with the configured parameters, off the event loop."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 64 * 1024, parallelism: int = 4,
                 concurrency: int = 4) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                      type=Type.ID)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._decoy_hash: str | None = None

    async def prepare(self) -> None:
        """Make the decoy hash before the first sign-in, so even that one costs no more than usual."""
        if self._decoy_hash is None:
            await self._make_decoy()

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check `password` against `stored_hash`; None (no such user) costs the same and never matches."""
        if stored_hash is None:
            decoy = self._decoy_hash or await self._make_decoy()
            async with self._slots:
                await asyncio.to_thread(self._verify_sync, decoy, password)
            return Verification.MISMATCH
        async with self._slots:
            return await asyncio.to_thread(self._verify_sync, stored_hash, password)

    async def _make_decoy(self) -> str:
        self._decoy_hash = await self.hash("decoy password that matches no one")
        return self._decoy_hash

    def _verify_sync(self, stored_hash: str, password: str) -> Verification:
        try:
            self._hasher.verify(stored_hash, password)
        except VerifyMismatchError:
            return Verification.MISMATCH
        except (VerificationError, InvalidHashError) as exc:
            _log.warning("stored password hash could not be verified", error=exc.__class__.__name__)
            return Verification.MISMATCH
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification.OK_NEEDS_REHASH
        return Verification.OK
