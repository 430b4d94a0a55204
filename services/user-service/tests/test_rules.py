"""Domain rules without I/O: password policy and hashing, refresh-token standing, lockout periods, API key
format, email checks, token claims and keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from user_service import api_keys, lockout, refresh, tokens, users
from user_service.passwords import Passwords, Verification, password_problems

from aitrading.auth import KeySet
from aitrading.errors import Invalid

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def cheap(time_cost: int = 1) -> Passwords:
    return Passwords(time_cost=time_cost, memory_kib=1024, parallelism=1, concurrency=2)


# --- passwords -----------------------------------------------------------------------------------

def test_a_long_mixed_password_is_fine() -> None:
    assert password_problems("correct horse Battery 9") == []
    assert password_problems("abcdefghi1") == []


def test_short_password_says_how_short() -> None:
    assert password_problems("Ab1!") == ["must be at least 10 characters long (it has 4)"]


@pytest.mark.parametrize(("password", "only"), [
    ("abcdefghijkl", "lowercase letters"),
    ("ABCDEFGHIJKL", "uppercase letters"),
    ("123456789012", "digits"),
    ("!!!!!!!!!!!!", "symbols or spaces"),
])
def test_a_single_kind_of_character_is_refused_naming_it(password: str, only: str) -> None:
    [problem] = password_problems(password)
    assert problem.endswith(f"it has only {only}")


def test_password_equal_to_the_email_is_refused() -> None:
    assert "must not be the email address" in password_problems("Me@example.com", email="me@example.com")


def test_registration_names_every_wrong_field() -> None:
    with pytest.raises(Invalid) as caught:
        users.check_registration("nope", "short")
    fields = [e["field"] for e in caught.value.errors or []]
    assert fields == ["email", "password", "password"]


async def test_hash_verifies_only_the_same_password() -> None:
    passwords = cheap()
    stored = await passwords.hash("correct horse Battery 9")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse Battery 9") is Verification.OK
    assert await passwords.verify(stored, "correct horse battery 9") is Verification.MISMATCH


async def test_changed_parameters_ask_for_a_rehash() -> None:
    old = await cheap(time_cost=1).hash("correct horse Battery 9")
    assert await cheap(time_cost=2).verify(old, "correct horse Battery 9") is Verification.OK_NEEDS_REHASH


async def test_no_user_never_matches_and_garbage_hashes_do_not_crash() -> None:
    passwords = cheap()
    assert await passwords.verify(None, "anything at all 1") is Verification.MISMATCH
    assert await passwords.verify("not-a-hash", "anything at all 1") is Verification.MISMATCH


# --- refresh tokens -------------------------------------------------------------------------------

def stored(*, used: bool = False, revoked: bool = False, expires_in_s: int = 60) -> refresh.StoredToken:
    return refresh.StoredToken(id=uuid.uuid4(), family_id=uuid.uuid4(), user_id=uuid.uuid4(),
                               expires_at=NOW + timedelta(seconds=expires_in_s),
                               used_at=NOW if used else None, family_revoked_at=NOW if revoked else None)


def test_refresh_standing_rules() -> None:
    assert refresh.standing(None, NOW) is refresh.Standing.UNKNOWN
    assert refresh.standing(stored(), NOW) is refresh.Standing.VALID
    assert refresh.standing(stored(used=True), NOW) is refresh.Standing.REUSED
    assert refresh.standing(stored(expires_in_s=0), NOW) is refresh.Standing.EXPIRED
    # A revoked family refuses everything, used or not; a used token is reuse even after it expired.
    assert refresh.standing(stored(used=True, revoked=True), NOW) is refresh.Standing.REVOKED
    assert refresh.standing(stored(used=True, expires_in_s=-5), NOW) is refresh.Standing.REUSED


def test_refresh_tokens_are_random_and_stored_as_sha256() -> None:
    a, b = refresh.new_token(), refresh.new_token()
    assert a != b and len(a) >= 43
    assert len(refresh.token_hash(a)) == 32 and refresh.token_hash(a) == refresh.token_hash(a)


# --- lockout ----------------------------------------------------------------------------------------

def test_lock_starts_at_the_threshold_and_doubles_up_to_the_cap() -> None:
    policy = lockout.LockoutPolicy(threshold=5, base_s=30, max_s=3600)
    assert [policy.lock_for_s(n) for n in range(1, 5)] == [None] * 4
    assert [policy.lock_for_s(n) for n in (5, 6, 7, 8)] == [30, 60, 120, 240]
    assert policy.lock_for_s(10_000) == 3600


@given(st.integers(min_value=1, max_value=500))
def test_lock_never_shrinks_with_more_failures(failures: int) -> None:
    policy = lockout.LockoutPolicy()
    assert (policy.lock_for_s(failures + 1) or 0) >= (policy.lock_for_s(failures) or 0)


def test_retry_after_rounds_up_and_ends_with_the_lock() -> None:
    assert lockout.retry_after_s(NOW + timedelta(seconds=2.1), NOW) == 3
    assert lockout.retry_after_s(NOW + timedelta(milliseconds=10), NOW) == 1
    assert lockout.retry_after_s(NOW, NOW) is None
    assert lockout.retry_after_s(None, NOW) is None


# --- API keys ---------------------------------------------------------------------------------------

def test_new_key_parses_back_to_its_parts() -> None:
    prefix, secret, full = api_keys.new_key()
    assert full == f"atp_{prefix}_{secret}"
    assert api_keys.parse_key(full) == (prefix, secret)


@given(st.text(max_size=80))
def test_parse_key_never_raises(text: str) -> None:
    parsed = api_keys.parse_key(text)
    assert parsed is None or text.strip().startswith("atp_")


@pytest.mark.parametrize("key", ["", "atp_", "atp_abc_secret", "xyz_0123456789ab_secret", "atp_0123456789ab_",
                                 "atp_0123456789AB_secret"])
def test_malformed_keys_do_not_parse(key: str) -> None:
    assert api_keys.parse_key(key) is None


def test_key_usable_until_revoked_or_expired() -> None:
    key = api_keys.ApiKey(id=uuid.uuid4(), user_id=uuid.uuid4(), name="k", prefix="0" * 12, created_at=NOW,
                          expires_at=NOW + timedelta(days=1), last_used_at=None, revoked_at=None)
    assert api_keys.usable(key, NOW)
    assert not api_keys.usable(key, NOW + timedelta(days=1))
    assert not api_keys.usable(api_keys.ApiKey(**{**key.__dict__, "revoked_at": NOW}), NOW)


# --- emails -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("email", ["a@example.com", "first.last+tag@sub.example.co.uk", "x_y-z@host-1.io"])
def test_ordinary_emails_pass(email: str) -> None:
    assert users.email_problem(email) is None


@pytest.mark.parametrize("email", ["plain", "@example.com", "a@b", "a@localhost", "a b@example.com",
                                   "a..b@example.com", "a@-bad-.com", "a@1.2.3.4", "a@example..com"])
def test_bad_emails_say_why(email: str) -> None:
    assert users.email_problem(email)


# --- tokens -----------------------------------------------------------------------------------------

def test_signed_claims_verify_with_the_published_jwk() -> None:
    private = Ed25519PrivateKey.generate()
    key = tokens.SigningKey("k1", private, NOW)
    now = datetime.now(UTC)
    claims = tokens.access_claims(issuer="iss", audience="aud", subject=str(uuid.uuid4()),
                                  email="a@example.com", roles=["user"], plan="free", kind="user", now=now,
                                  ttl_s=60)
    token = tokens.sign(claims, key)
    keys = KeySet.from_jwks(tokens.jwks_document([("k1", tokens.raw_public_key(private.public_key()))]))
    principal = keys.decode(token, issuer="iss", audience="aud")
    assert principal.email == "a@example.com" and principal.kind == "user"


@pytest.mark.parametrize("passphrase", [None, "a long passphrase"])
def test_private_keys_round_trip_through_pem(passphrase: str | None) -> None:
    private = Ed25519PrivateKey.generate()
    pem = tokens.private_key_to_pem(private, passphrase)
    assert (b"ENCRYPTED" in pem) is (passphrase is not None)
    loaded = tokens.private_key_from_pem(pem, passphrase)
    assert tokens.raw_public_key(loaded.public_key()) == tokens.raw_public_key(private.public_key())


def test_signing_key_repr_shows_no_key_material() -> None:
    key = tokens.SigningKey("k1", Ed25519PrivateKey.generate(), NOW)
    assert repr(key) == "SigningKey(kid='k1', created_at=2030-01-01T00:00:00+00:00)"
