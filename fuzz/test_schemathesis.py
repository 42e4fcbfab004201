"""schemathesis against a live server (#18): all checks, 25 examples per operation, a test user's token.

Its settings and its only exclusions, each with its reason, are in `fuzz/schemathesis.toml`.
The seed is fixed so that CI is repeatable; `FUZZ_SEED=random` explores anew. No operation
destroys the test user: logout revokes only the refresh token it is given (schemathesis
never holds ours), and account deletion, where it exists, asks for the password.
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from testing.live_server import live_database, live_server

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e]

FUZZ_DIR = Path(__file__).resolve().parent
USERNAME = "fuzzer"
PASSWORD = "Plenty-of-horses-2026!"
SEED = "20261207"
RUN_TIMEOUT_SECONDS = 300


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    with live_database() as database, live_server(database=database) as server:
        registered = httpx.post(f"{server.url}/api/auth/register", json={"username": USERNAME, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        token = httpx.post(f"{server.url}/api/auth/token", json={"username": USERNAME, "password": PASSWORD})
        access = token.json()["access"]

        seed = os.environ.get("FUZZ_SEED", SEED)
        command = [
            str(Path(sys.executable).with_name("st")),
            "--config-file", str(FUZZ_DIR / "schemathesis.toml"),
            "run", f"{server.url}/api/openapi.json",
            "--checks", "all",
            # The one check left out, and why: fuzz/schemathesis.toml, exclusion 2.
            "--exclude-checks", "ensure_resource_availability",
            "--workers", "2",
            "--header", f"Authorization: Bearer {access}",
            "--no-color",
        ]  # fmt: skip
        if seed != "random":
            command += ["--seed", seed]
        result = subprocess.run(  # noqa: S603 - schemathesis with our own arguments
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=tmp_path, check=False
        )
        server_errors = [line for line in server.log_tail(20000).splitlines() if '"level": "ERROR"' in line]

    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert server_errors == []
