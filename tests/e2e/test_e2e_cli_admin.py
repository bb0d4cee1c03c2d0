"""The admin's way in and the operator's credit commands, against a real server process:
the one-time sign-in link printed at first start, `users signin-link`, `users set-password`
(on a terminal and with --stdin), `credits grant` with its cap and --force, `credits deduct`.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import BIN, base_env, free_port
from tests.integration.web_helpers import csrf_of

pytestmark = pytest.mark.e2e

ADMIN = "admin@localhost"
PASSWORD = "the admin's own passphrase"
LINK = re.compile(r"^(http://\S+/signin/once\?token=\S+)$", re.M)


@dataclass
class Started:
    url: str
    env: dict[str, str]
    output: str  # what `serve` printed before "Serving"
    link: str

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60
        )


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    env = base_env(tmp_path_factory.mktemp("admin-cli"), "http://127.0.0.1:9")
    env["ADMIN_GRANT_MAX_USD"] = "100"
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Serving")):
            line = process.stdout.readline()
            assert line or process.poll() is None, "server exited:\n" + "".join(lines)
            lines.append(line)
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        output = "".join(lines)
        found = LINK.search(output)
        assert found is not None, output
        yield Started(url, env | {"PUBLIC_URL": url}, output, found.group(1))
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stdout.close()


def open_link(client: httpx.Client, link: str, password: str = PASSWORD) -> httpx.Response:
    """The browser `client` follows the link and sends its form."""
    page = client.get(link)
    if page.status_code != 200:
        return page
    token = link.split("token=", 1)[1]
    sent = client.post(
        link.split("?", 1)[0],
        data={
            "csrf_token": csrf_of(page.text),
            "token": token,
            "password": password,
            "password_again": password,
        },
    )
    return sent


def sign_in(url: str, email: str, password: str) -> int:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = csrf_of(client.get("/signin").text)
        return client.post(
            "/signin", data={"csrf_token": token, "email": email, "password": password}
        ).status_code


def test_first_start_prints_a_one_time_link_that_leads_to_the_operator_area(
    started: Started,
) -> None:
    assert "First start: created the admin account admin@localhost" in started.output
    assert "works once, within 60 minutes" in started.output
    with httpx.Client(timeout=30) as client:
        signed = open_link(client, started.link)
        assert signed.status_code == 303 and signed.headers["location"] == "/admin"
        area = client.get(f"{started.url}/admin")
        assert area.status_code == 200 and "Operator" in area.text
    with httpx.Client(timeout=30) as again:
        refused = open_link(again, started.link)
        assert refused.status_code == 400 and "already used or expired" in refused.text
    assert sign_in(started.url, ADMIN, PASSWORD) == 303
    assert "signin_link_issued" in started.cli("audit", "list").stdout


def test_signin_link_prints_a_fresh_link(started: Started) -> None:
    done = started.cli("users", "create", "link@example.com")
    assert done.returncode == 0, done.stderr
    printed = started.cli("users", "signin-link", "link@example.com")
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{started.url}/signin/once?token=")
    with httpx.Client(timeout=30) as client:
        signed = open_link(client, link, "link password 123")
        assert signed.status_code == 303 and signed.headers["location"] == "/account"
    missing = started.cli("users", "signin-link", "nobody@example.com")
    assert missing.returncode == 1 and "no account" in missing.stderr


def test_set_password_from_stdin(started: Started) -> None:
    assert started.cli("users", "create", "stdin@example.com").returncode == 0
    done = started.cli(
        "users", "set-password", "stdin@example.com", "--stdin", stdin="piped pass 1\n"
    )
    assert done.returncode == 0, done.stderr
    assert "password set for stdin@example.com" in done.stdout
    assert sign_in(started.url, "stdin@example.com", "piped pass 1") == 303
    assert "password_set" in started.cli("audit", "list", "--action", "password_set").stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("users", "set-password", "stdin@example.com", "--stdin"), "short\n", "at least 10"),
        (("users", "set-password", "stdin@example.com", "--stdin"), "", "no password"),
        (("users", "set-password", "stdin@example.com"), "not a terminal\n", "--stdin"),
        (
            ("users", "set-password", "nobody@example.com", "--stdin"),
            "long enough pw\n",
            "no account",
        ),
    ],
)
def test_set_password_mistakes_exit_non_zero_with_one_line(
    started: Started, args: tuple[str, ...], stdin: str, message: str
) -> None:
    done = started.cli(*args, stdin=stdin)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def _on_a_terminal(started: Started, email: str, answers: list[str]) -> tuple[int, str]:
    """`users set-password EMAIL` on a pseudo-terminal, typing `answers` at its prompts."""
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [str(BIN), "users", "set-password", email],
        env=started.env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,  # no controlling terminal: getpass uses this one (stdin)
    )
    os.close(secondary)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the process ended and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                # Each prompt ends with ": "; answer each one once it is shown (typed
                # earlier, the answer would be flushed when getpass turns echo off).
                if pending and seen.count(b": ") > len(answers) - len(pending):
                    os.write(primary, pending.pop(0).encode() + b"\n")
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), seen.decode(errors="replace")
    finally:
        os.close(primary)


def test_set_password_on_a_terminal_asks_twice(started: Started) -> None:
    assert started.cli("users", "create", "tty@example.com").returncode == 0
    code, seen = _on_a_terminal(started, "tty@example.com", ["first try pw", "second try pw"])
    assert code == 1 and "the two passwords differ" in seen
    code, seen = _on_a_terminal(started, "tty@example.com", ["typed password", "typed password"])
    assert code == 0, seen
    assert "typed password" not in seen  # not echoed
    assert sign_in(started.url, "tty@example.com", "typed password") == 303


def test_credits_grant_cap_force_and_deduct(started: Started) -> None:
    assert started.cli("users", "create", "money@example.com").returncode == 0
    capped = started.cli("credits", "grant", "money@example.com", "150", "--reason", "big")
    assert capped.returncode == 1
    assert "(ADMIN_GRANT_MAX_USD $100.0000): add --force" in capped.stderr
    forced = started.cli(
        "credits", "grant", "money@example.com", "150", "--reason", "big", "--force"
    )
    assert forced.returncode == 0 and "balance $150.0000" in forced.stdout
    taken = started.cli("credits", "deduct", "money@example.com", "40", "--reason", "fix")
    assert taken.returncode == 0, taken.stderr
    assert "deducted $40.0000 from money@example.com; balance $110.0000" in taken.stdout
    too_much = started.cli("credits", "deduct", "money@example.com", "110.01", "--reason", "x")
    assert too_much.returncode == 1 and "the balance is $110.0000" in too_much.stderr
    assert "balance $110.0000" in started.cli("credits", "show", "money@example.com").stdout
    audit = started.cli("audit", "list").stdout
    assert "credit_grant" in audit and "credit_deduct" in audit
    assert "big (above the grant cap; override confirmed)" in audit
    for args, message in [
        (("credits", "deduct", "money@example.com", "0", "--reason", "x"), "positive"),
        (("credits", "deduct", "money@example.com", "1", "--reason", " "), "--reason"),
        (("credits", "deduct", "nobody@example.com", "1", "--reason", "x"), "no account"),
    ]:
        done = started.cli(*args)
        assert done.returncode == 1 and message in done.stderr, args
