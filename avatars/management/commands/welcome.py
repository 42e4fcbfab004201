from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError

from avatars.demo import ADMIN_PASSWORD, ADMIN_USERNAME, DEMO_PASSWORD, DEMO_USERNAME
from llm.errors import NotConfigured

OLLAMA_EXAMPLE = "LLM_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2 make run"


class Command(BaseCommand):
    help = "Print where Companion is served (web chat, admin, API docs), the demo logins and LLM set-up hints."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"]
        display_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        base = f"http://{display_host}:{options['port']}"
        self.stdout.write(self.style.SUCCESS("Companion is starting."))
        self.stdout.write(f"  Web chat:  {base}/")
        self.stdout.write(f"  Admin:     {base}/admin/")
        self.stdout.write(f"  API docs:  {base}/api/docs")
        logins = [
            (DEMO_USERNAME, DEMO_PASSWORD, "the app and the API"),
            (ADMIN_USERNAME, ADMIN_PASSWORD, "the admin"),
        ]
        try:
            existing = set(
                User.objects.filter(username__in=[u for u, _, _ in logins]).values_list("username", flat=True)
            )
        except DatabaseError:
            existing = set()  # not migrated yet: nothing to log in with
        for username, password, where in logins:
            if username in existing:
                self.stdout.write(f"  Login for {where}: {username} / {password}")
        if not settings.LLM_API_KEY and not settings.LLM_BASE_URL:
            self.stdout.write("")
            self.stdout.write(self.style.WARNING(NotConfigured.user_message))
            self.stdout.write(f"  For a local Ollama, for example: {OLLAMA_EXAMPLE}")
