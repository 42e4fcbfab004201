"""Each benchmark command starts: its module imports and its `--help` answers, outside Django's setup."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module", ["bench.realtime", "bench.intents", "bench.memory", "bench.reminders", "bench.export"]
)
def test_a_benchmark_command_starts_and_answers_help(module: str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}

    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
