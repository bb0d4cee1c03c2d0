"""SMTP_URL parsing and the password rules and hashes."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from image_router.account import passwords
from image_router.account.mailer import ConsoleMailer, SmtpMailer, build_mailer
from image_router.account.service import AccountError


def test_smtp_url_forms() -> None:
    plain = SmtpMailer.from_url("smtp://mail.example.com", "a@b")
    assert (plain.host, plain.port, plain.use_tls, plain.username) == (
        "mail.example.com",
        587,
        False,
        None,
    )
    tls = SmtpMailer.from_url("smtps://us%40r:p%3Ass@mail.example.com:2465", "a@b")
    assert (tls.port, tls.use_tls, tls.username, tls.password) == (2465, True, "us@r", "p:ss")
    assert isinstance(build_mailer(None, "a@b"), ConsoleMailer)
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpMailer.from_url("http://mail.example.com", "a@b")


def test_password_rules() -> None:
    with pytest.raises(AccountError, match="at least 10"):
        passwords.check_password_rules("x" * 9)
    with pytest.raises(AccountError, match="at most"):
        passwords.check_password_rules("x" * 257)
    passwords.check_password_rules("x" * 10)


def test_hashes_verify_and_report_outdated_parameters() -> None:
    stored = passwords.hash_password("a fine password")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "a fine password")
    assert not passwords.verify_password(stored, "a fine passworD")
    assert not passwords.verify_password(None, "a fine password")
    assert not passwords.verify_password("not a hash", "a fine password")
    assert not passwords.needs_rehash(stored)
    assert passwords.needs_rehash(PasswordHasher(time_cost=1).hash("a fine password"))
