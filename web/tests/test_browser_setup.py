"""How the browser tests find Chromium, and what they say when it is missing (no browser needed)."""

from pathlib import Path

import web.browser
from web.browser import CHROMIUM_ARGS, chromium_missing_reason


def test_a_missing_chromium_is_named_with_the_command_that_installs_it(monkeypatch, tmp_path):
    monkeypatch.setattr(web.browser, "CHROMIUM_PATH", tmp_path / "no-chromium")
    monkeypatch.setattr(web.browser.shutil, "which", lambda name: None)

    assert chromium_missing_reason() == (
        f"Chromium is not installed at {tmp_path / 'no-chromium'} (apt-get install -y chromium)"
    )


def test_an_installed_chromium_is_enough(monkeypatch, tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setattr(web.browser, "CHROMIUM_PATH", Path(fake))

    assert chromium_missing_reason() is None


def test_chromium_runs_headless_offline_and_without_a_sandbox():
    assert CHROMIUM_ARGS == [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
