"""The ASGI entry point, loaded in a fresh interpreter as a server process loads it."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROBE = """
import gc
import companion.asgi
print(gc.get_freeze_count())
"""


def test_loading_the_application_moves_the_startup_heap_out_of_the_garbage_collectors_reach() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "companion.settings"}

    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=True
    )

    frozen = int(output.stdout.strip().splitlines()[-1])
    assert frozen > 20_000  # Django, the apps, openai and pydantic (about 86,000 objects today)
