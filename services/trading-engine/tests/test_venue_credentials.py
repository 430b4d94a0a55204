"""Venue credentials at rest: Fernet with rotation, refusal without a key, the launcher's generated key,
and the checks a new venue account passes before anything is stored."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from trading_engine.credentials import Credentials, CredentialsKeyMissing, CredentialsUnreadable
from trading_engine.settings import Settings
from trading_engine.venue_accounts import NewVenueAccount, key_hint, problems

from aitrading.errors import Unavailable
from aitrading.fleet.launcher import Fleet

SECRET = {"apiKey": "AKIA-1234567890-WXYZ", "secret": "s3cr3t-value-never-stored-in-clear"}


def test_credentials_round_trip_and_the_token_does_not_contain_them() -> None:
    cipher = Credentials.from_settings(Settings(credentials_key=Fernet.generate_key().decode()))
    token = cipher.encrypt(SECRET)
    assert SECRET["secret"] not in token and SECRET["apiKey"] not in token
    assert cipher.decrypt(token) == SECRET


def test_rotation_encrypts_with_the_first_key_and_decrypts_with_every_one() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Credentials.from_settings(Settings(credentials_key=old)).encrypt(SECRET)
    rotated = Credentials.from_settings(Settings(credentials_key=f"{new}, {old}"))
    assert rotated.decrypt(before) == SECRET
    after = rotated.encrypt(SECRET)
    assert Credentials.from_settings(Settings(credentials_key=new)).decrypt(after) == SECRET
    with pytest.raises(CredentialsUnreadable):  # the old key alone cannot read what the new one wrote
        Credentials.from_settings(Settings(credentials_key=old)).decrypt(after)


def test_no_key_or_a_bad_key_is_a_503_naming_the_setting() -> None:
    with pytest.raises(CredentialsKeyMissing) as missing:
        Credentials.from_settings(Settings(credentials_key=""))
    assert missing.value.status == 503 and "credentials_key is not configured" in missing.value.detail
    with pytest.raises(Unavailable, match="credentials_key: key 2 is not a Fernet key"):
        Credentials.from_settings(Settings(credentials_key=f"{Fernet.generate_key().decode()},nope"))


def test_the_launcher_makes_one_key_per_data_folder_and_gives_it_to_services(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/x", "NATS_URL": "nats://127.0.0.1:4999"}
    fleet = Fleet(tmp_path, services=[], env=env, echo=lambda _: None)
    key = fleet.service_env("trading-engine")["CREDENTIALS_KEY"]
    assert Fleet(tmp_path, services=[], env=env, echo=lambda _: None).service_env("trading-engine")[
        "CREDENTIALS_KEY"] == key
    assert stat.S_IMODE((tmp_path / "credentials-key").stat().st_mode) == 0o600
    cipher = Credentials.from_settings(Settings(credentials_key=key))
    assert cipher.decrypt(cipher.encrypt(SECRET)) == SECRET
    given = Fleet(tmp_path / "other", services=[], env={**env, "CREDENTIALS_KEY_FILE": "/run/secrets/k"},
                  echo=lambda _: None).service_env("trading-engine")
    assert "CREDENTIALS_KEY" not in given  # a deployment's own secret file wins


def ccxt(**changes: object) -> NewVenueAccount:
    values: dict[str, object] = {"name": "main", "kind": "ccxt", "exchange": "binance",
                                 "credentials": dict(SECRET)}
    values.update(changes)
    return NewVenueAccount(**values)  # type: ignore[arg-type]


def fields(request: NewVenueAccount) -> list[str]:
    return [p["field"] for p in problems(request)]


def test_a_new_ccxt_account_is_checked_field_by_field() -> None:
    assert problems(ccxt()) == []
    assert problems(ccxt(sandbox=True)) == []
    assert fields(ccxt(name="paper")) == ["name"]
    assert fields(ccxt(name="PAPER")) == ["name"]
    assert fields(ccxt(name="has space")) == ["name"]
    assert fields(ccxt(name="x" * 65)) == ["name"]
    assert fields(ccxt(exchange="nasdaq-direct")) == ["exchange"]
    assert fields(ccxt(exchange=None)) == ["exchange"]
    assert fields(ccxt(credentials={"apiKey": "k"})) == ["credentials.secret"]
    assert fields(ccxt(credentials={**SECRET, "secret": ""})) == ["credentials.secret"]
    assert fields(ccxt(credentials={**SECRET, "privateKey": "k"})) == ["credentials.privateKey"]
    assert fields(ccxt(exchange="okx")) == ["credentials.password"]  # okx requires its passphrase
    assert problems(ccxt(exchange="okx", credentials={**SECRET, "password": "phrase"})) == []
    assert fields(ccxt(exchange="bitstamp", sandbox=True)) == ["sandbox"]  # ccxt has no testnet for it
    assert fields(ccxt(symbols={"EUR/USD": "EURUSD"})) == ["symbols"]
    assert fields(ccxt(kind="ftx")) == ["kind"]


def test_a_new_mt5_account_names_its_agent_only() -> None:
    good = NewVenueAccount(name="terminal", kind="mt5", credentials={"agent_id": "desk-1.win"},
                           symbols={"EUR/USD": "EURUSD.m"})
    assert problems(good) == []
    bad = NewVenueAccount(name="terminal", kind="mt5", exchange="binance", sandbox=True,
                          credentials={"agent_id": "no spaces", "apiKey": "k"}, symbols={"EUR/USD": " "})
    assert fields(bad) == ["exchange", "sandbox", "credentials.agent_id", "credentials.apiKey",
                           "symbols.EUR/USD"]


def test_the_key_hint_shows_four_characters_of_a_long_enough_key_only() -> None:
    assert key_hint("ccxt", SECRET) == "WXYZ"
    assert key_hint("ccxt", {"apiKey": "short"}) == ""
    assert key_hint("mt5", {"agent_id": "windows-desk-7"}) == "sk-7"
