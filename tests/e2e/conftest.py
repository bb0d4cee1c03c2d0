"""Real server processes on 127.0.0.1, driven by real clients."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

BIN = Path(sys.executable).parent / "image-router"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    bootstrap_key: str | None
    openai: FakeOpenAI

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed: {done.stderr}")
        return done


def base_env(data_dir: Path, openai_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        DATA_DIR=str(data_dir),
        OPENAI_API_KEY=FakeOpenAI().api_key,
        OPENAI_BASE_URL=f"{openai_url}/v1",
        LOG_LEVEL="WARNING",
        RATE_LIMITS_ENABLED="false",  # bursts from one address; the limits tests opt in
        HUMAN_CHECK="off",  # website tokens without the proof of work; the playground opts in
    )
    env.pop("DATABASE_URL", None)
    env.pop("PUBLIC_URL", None)
    return env


def start_server(env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str | None]:
    process = subprocess.Popen(
        [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    key = None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("First start:"):
            key = process.stdout.readline().strip()
        if line.startswith("Serving Image Router"):
            break
        if not line and process.poll() is not None:
            raise AssertionError("server exited:\n" + "".join(lines))
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, key
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not become healthy:\n" + "".join(lines))


@contextlib.contextmanager
def running_server(data_dir: Path, **env_overrides: str) -> Iterator[Server]:
    """A real server process on a free port, its vendor a fake OpenAI in this process."""
    openai = FakeOpenAI()
    with serve_in_thread(openai.app) as openai_url:
        env = base_env(data_dir, openai_url) | env_overrides
        port = free_port()
        process, key = start_server(env, port)
        try:
            yield Server(f"http://127.0.0.1:{port}", env, process, key, openai)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout:
                process.stdout.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server-data")) as started:
        yield started


def fill_and_submit(page: Any, email: str, password: str) -> None:
    """Fill a sign-up or sign-in form in the browser and send it (ticking the terms box)."""
    page.fill('main input[name="email"]', email)
    page.fill('main input[name="password"]', password)
    if page.locator('main input[name="accept_terms"]').count():  # the sign-up form
        page.check('main input[name="accept_terms"]')
    page.click('main button[type="submit"]')


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright: one per test module."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_e2e_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


def signed_up_with_credit(
    server: Server, browser: Any, email: str, password: str, *, reason: str
) -> dict[str, Any]:
    """Sign up in the browser, grant $5 and make an API key: the browser's storage state
    (signed in) and the key."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/signup")
    fill_and_submit(page, email, password)
    page.wait_for_url(f"{server.url}/account")
    server.cli("credits", "grant", email, "5", "--reason", reason)
    key = server.cli("keys", "create", email, "--name", "checks").stdout.split()[-1]
    state = context.storage_state()
    context.close()
    return {"state": state, "key": key}
