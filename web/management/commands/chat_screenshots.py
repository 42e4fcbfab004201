from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.testing import llmock_server
from testing.live_server import PROJECT_DIR, live_database, live_server
from web.browser import chromium_browser, chromium_missing_reason
from web.screenshots import screenshots_take


class Command(BaseCommand):
    help = (
        "Save screenshots of the web chat (desktop and phone) from a live server with llmock as the model. "
        "Needs Chromium (apt-get install -y chromium) and the dev requirements."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, default=PROJECT_DIR / "docs", help="folder for the two PNG files")

    def handle(self, *args: Any, **options: Any) -> None:
        missing = chromium_missing_reason()
        if missing:
            raise CommandError(missing)
        with (
            live_database() as database,
            llmock_server(chunk_delay_ms=30) as llm,
            live_server(database=database, llm_base_url=llm.base_url) as server,
            chromium_browser() as browser,
        ):
            for path in screenshots_take(browser=browser, base_url=server.url, llm=llm, out_dir=options["out"]):
                self.stdout.write(str(path))
