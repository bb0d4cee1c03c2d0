"""Without SMTP_URL the reset e-mail goes to standard error for the operator, not the log."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Gateway
from tests.integration.web_helpers import form_token, sign_up


async def test_reset_mail_is_written_to_stderr_without_smtp(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    await sign_up(gateway.client, "lin@example.com")
    token = await form_token(gateway.client, "/password/forgot")
    with caplog.at_level(logging.INFO):
        response = await gateway.client.post(
            "/password/forgot", data={"csrf_token": token, "email": "lin@example.com"}
        )
    assert response.status_code == 200
    err = capsys.readouterr().err
    assert "To: lin@example.com" in err
    assert "http://gateway.test/password/reset?token=" in err
    link_token = err.split("token=")[1].split()[0]
    assert "SMTP_URL is not set" in caplog.text and link_token not in caplog.text
