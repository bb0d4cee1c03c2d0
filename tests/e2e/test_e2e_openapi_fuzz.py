"""A bounded schemathesis run against a real server: no 5xx, no undeclared status.

Only the free test models are enabled (no vendor key is set), generation is deterministic
(fixed examples, no random seed), and the number of examples per operation is capped, so
the run takes seconds and finds the same thing every time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import running_server

pytestmark = pytest.mark.e2e

ST = Path(sys.executable).parent / "st"


def test_every_operation_answers_only_declared_statuses_and_never_5xx(tmp_path: Path) -> None:
    with running_server(
        tmp_path,
        OPENAI_API_KEY="",  # the free models only
        JWT_SECRET="0123456789abcdef0123456789abcdef",  # else /v1/web-token is a 503 by design
    ) as server:
        assert server.bootstrap_key
        done = subprocess.run(
            [
                str(ST),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {server.bootstrap_key}",
                "--checks",
                "not_a_server_error,status_code_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "30",
                "--generation-deterministic",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,  # schemathesis writes its .schemathesis/ state there
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
